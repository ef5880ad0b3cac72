"""
Speed of the input pipeline of `seed-hf tokenize` alone, no model: JPEG samples read from webdataset tar shards,
decoded and preprocessed by [`SeedImageProcessor`] (224 x 224), then batched, with 0 (in the main process) or N
`DataLoader` workers, as `tokenize_to_disk` runs them. Divide a GPU's images/s by the images/s per worker to size
`--num-workers`.

    python benchmarks/bench_input_pipeline.py                      # 512 images of 256 x 256, workers 0 and 2
    python benchmarks/bench_input_pipeline.py --images 4096 --workers 0 8 16 --image-size 512
"""

import argparse
import io
import os
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np
import PIL.Image
import torch

from seed_hf import SeedImageProcessor
from seed_hf.dataset_tokenization import _PreparedBatches
from seed_hf.webdataset_input import shard_files_source


def write_jpeg_shards(folder: Path, images: int, shards: int, image_size: int) -> str:
    """`shards` tar files of smooth random JPEGs (quality 95, as img2dataset writes), with captions; their pattern."""
    generator = np.random.default_rng(0)
    for shard in range(shards):
        with tarfile.open(folder / f"{shard:05d}.tar", "w") as archive:
            for sample in range(shard, images, shards):
                small = PIL.Image.fromarray(generator.integers(0, 256, (16, 16, 3), dtype=np.uint8))
                buffer = io.BytesIO()
                small.resize((image_size, image_size), PIL.Image.BICUBIC).save(buffer, format="JPEG", quality=95)
                for extension, data in (("jpg", buffer.getvalue()), ("txt", b"a caption")):
                    info = tarfile.TarInfo(f"{sample:09d}.{extension}")
                    info.size = len(data)
                    archive.addfile(info, io.BytesIO(data))
    return str(folder / f"{{00000..{shards - 1:05d}}}.tar")


def images_per_second(pattern: str, workers: int, batch_size: int) -> tuple[int, float]:
    source = shard_files_source(pattern)
    batches = _PreparedBatches(source, dict(enumerate(source.shards())), SeedImageProcessor(), batch_size)
    loader = torch.utils.data.DataLoader(batches, batch_size=None, num_workers=workers)
    start, count = time.perf_counter(), 0
    for batch in loader:
        count += len(batch.get("row_ids", []))
    return count, count / (time.perf_counter() - start)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--shards", type=int, default=8, help="tar shards (each worker reads whole shards)")
    parser.add_argument("--image-size", type=int, default=256, help="side of the stored JPEGs (img2dataset: 256)")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # one core per worker, as in a DataLoader worker
    with tempfile.TemporaryDirectory() as folder:
        pattern = write_jpeg_shards(Path(folder), args.images, args.shards, args.image_size)
        print(
            f"{os.cpu_count()} cores; {args.images} JPEGs of {args.image_size} x {args.image_size} in {args.shards} shards"
        )
        print("| workers | images | images/s | images/s per worker |")
        print("| ---: | ---: | ---: | ---: |")
        for workers in args.workers:
            count, rate = images_per_second(pattern, workers, args.batch_size)
            print(f"| {workers} | {count} | {rate:.0f} | {rate / max(workers, 1):.0f} |")


if __name__ == "__main__":
    main()
