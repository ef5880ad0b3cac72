"""
Peak memory of `tokenize_to_disk` on streamed tar shards as the input grows: the same shard size (1000 tiny PNGs),
1k then 20k images, each run in a fresh process with the tiny model of the test suite, parquet output. Shards are
read one at a time, so the peak RSS should not grow with the number of images.

    python benchmarks/bench_tokenize_memory.py                  # 1000 and 20000 images (about a minute on 2 cores)
    python benchmarks/bench_tokenize_memory.py --images 1000 5000 --num-workers 2
"""

import argparse
import io
import json
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np
import PIL.Image

REPO_ROOT = Path(__file__).resolve().parent.parent
RUN_CHILD = """
import json, sys
sys.path.insert(0, sys.argv[4])
import torch
torch.set_num_threads(1)
from accelerate import PartialState
from conftest import tiny_tokenizer
from seed_hf import SeedImageProcessor
from seed_hf.dataset_tokenization import tokenize_to_disk
from seed_hf.webdataset_input import shard_files_source

summary = tokenize_to_disk(
    shard_files_source(sys.argv[1]), sys.argv[2], tiny_tokenizer(), SeedImageProcessor(size={"height": 28, "width": 28}),
    batch_size=64, num_workers=int(sys.argv[3]), state=PartialState(cpu=True), progress=False, output_format="parquet",
)
status = dict(line.split(":", 1) for line in open("/proc/self/status") if ":" in line)
print(json.dumps({"tokenized": summary.tokenized, "peak_rss_mib": int(status["VmHWM"].split()[0]) / 1024}))
"""


def write_png_shards(folder: Path, images: int, per_shard: int) -> str:
    png = io.BytesIO()
    PIL.Image.fromarray(np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(png, "PNG")
    shards = (images + per_shard - 1) // per_shard
    for shard in range(shards):
        with tarfile.open(folder / f"{shard:05d}.tar", "w") as archive:
            for sample in range(shard * per_shard, min(images, (shard + 1) * per_shard)):
                for extension, data in (("png", png.getvalue()), ("txt", f"caption {sample}".encode())):
                    info = tarfile.TarInfo(f"{sample:09d}.{extension}")
                    info.size = len(data)
                    archive.addfile(info, io.BytesIO(data))
    return str(folder / f"{{00000..{shards - 1:05d}}}.tar")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, nargs="+", default=[1000, 20000])
    parser.add_argument("--per-shard", type=int, default=1000)
    parser.add_argument("--num-workers", type=int, default=0)
    args = parser.parse_args(argv)
    print("| images | shards | tokenized | seconds | peak RSS (MiB) |")
    print("| ---: | ---: | ---: | ---: | ---: |")
    for images in args.images:
        with tempfile.TemporaryDirectory() as folder:
            pattern = write_png_shards(Path(folder), images, args.per_shard)
            start = time.perf_counter()
            command = [sys.executable, "-c", RUN_CHILD, pattern, f"{folder}/codes", str(args.num_workers)]
            result = subprocess.run(
                [*command, str(REPO_ROOT / "tests")], capture_output=True, text=True, check=True, cwd=REPO_ROOT
            )
            measured = json.loads(result.stdout.strip().splitlines()[-1])
            shards = (images + args.per_shard - 1) // args.per_shard
            print(
                f"| {images} | {shards} | {measured['tokenized']} | {time.perf_counter() - start:.1f} | "
                f"{measured['peak_rss_mib']:.0f} |"
            )


if __name__ == "__main__":
    main()
