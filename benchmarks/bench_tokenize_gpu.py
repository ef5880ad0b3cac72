"""
The tokenizer on a GPU at the released size, with random weights (nothing to download):

1. `encode` alone on prepared batches of 64-256 images: images/s, TFLOP/s and MFU (model FLOPs, counted from the
   config as in `bench_encode.py`, over the GPU's dense bfloat16 peak), in bfloat16 and float32;
2. the agreement of bfloat16 codes with float32 codes on the same images (share of equal codes);
3. `tokenize_to_disk` end to end from JPEG tar shards (decoding in `--num-workers` DataLoader workers, pinned memory,
   `non_blocking` copies), bfloat16: images/s, to compare with 1. (the input pipeline keeps up when they are close).

    python benchmarks/bench_tokenize_gpu.py                                 # on a CUDA machine
    python benchmarks/bench_tokenize_gpu.py --batch-sizes 128 --images 4096 --num-workers 16 --peak-tflops 989
    python benchmarks/bench_tokenize_gpu.py --smoke --device cpu            # a 2-layer model: checks that it runs
"""

import argparse
import tempfile
import time
from functools import partial
from pathlib import Path

import torch
from accelerate import PartialState
from bench_encode import encode_flops, machine, random_model, seconds_per_call
from bench_input_pipeline import write_jpeg_shards

from seed_hf import SeedImageProcessor, SeedVisionTokenizerConfig
from seed_hf.dataset_tokenization import load_image, tokenize_to_disk
from seed_hf.webdataset_input import shard_files_source

# Dense bfloat16 tensor-core peaks in TFLOP/s (datasheets, SXM parts), matched against the device name.
PEAK_BF16_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "L4": 121.0, "A10": 125.0}


def peak_tflops(device: torch.device, given: float | None) -> float | None:
    if given or device.type != "cuda":
        return given
    name = torch.cuda.get_device_name(device)
    return next((peak for key, peak in PEAK_BF16_TFLOPS.items() if key in name), None)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[64, 128, 256])
    parser.add_argument("--dtypes", nargs="+", default=["bfloat16", "float32"])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--images", type=int, default=2048, help="JPEGs for the end-to-end run")
    parser.add_argument("--num-workers", type=int, default=8)
    parser.add_argument("--peak-tflops", type=float, help="dense bfloat16 peak (default: from the device name)")
    parser.add_argument("--smoke", action="store_true", help="a 2-layer model and tiny batches: checks that it runs")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    overrides = {}
    if args.smoke:
        overrides = dict(vision_config=dict(num_hidden_layers=2), qformer_config=dict(num_hidden_layers=2))
        args.batch_sizes, args.images, args.repeats = [2], 16, 1
    config = SeedVisionTokenizerConfig(**overrides)
    flops = encode_flops(config)
    peak = peak_tflops(device, args.peak_tflops)
    print(f"{machine(device)}; encode {flops / 1e9:.1f} GFLOP per image; bfloat16 peak {peak} TFLOP/s")

    # 1. encode alone
    models = {dtype: random_model(config, device).to(getattr(torch, dtype)) for dtype in args.dtypes}
    print("\n| dtype | batch | images/s | TFLOP/s | MFU (of the bfloat16 peak) |")
    print("| --- | ---: | ---: | ---: | ---: |")
    size = config.vision_config.image_size
    for dtype, model in models.items():
        for batch_size in args.batch_sizes:
            pixel_values = torch.randn(batch_size, 3, size, size, device=device)
            seconds = seconds_per_call(partial(model.encode, pixel_values), args.repeats, 1, device)
            rate = batch_size * flops / seconds / 1e12
            mfu = f"{rate / peak:.0%}" if peak else "n/a"
            print(f"| {dtype} | {batch_size} | {batch_size / seconds:.0f} | {rate:.1f} | {mfu} |")

    with tempfile.TemporaryDirectory() as folder:
        pattern = write_jpeg_shards(Path(folder), args.images, max(args.num_workers, 1) * 2, 256)
        source = shard_files_source(pattern)
        processor = SeedImageProcessor()

        # 2. bfloat16 against float32 codes, on real (JPEG) images
        if {"bfloat16", "float32"} <= models.keys():
            rows = [row for _, row in zip(range(max(args.batch_sizes)), source.read_shard(source.shards()[0]))]
            pixel_values = processor([load_image(row.image) for row in rows], return_tensors="pt").pixel_values
            codes = {dtype: models[dtype].encode(pixel_values.to(device)) for dtype in ("bfloat16", "float32")}
            agreement = (codes["bfloat16"] == codes["float32"]).float().mean().item()
            print(f"\nbfloat16 codes equal to float32 codes: {agreement:.1%} of {codes['float32'].numel()} positions")

        # 3. end to end, bfloat16
        model = models.get("bfloat16") or next(iter(models.values()))
        for batch_size in args.batch_sizes:
            output = Path(folder) / f"codes-{batch_size}"
            start = time.perf_counter()
            summary = tokenize_to_disk(
                source,
                output,
                model,
                processor,
                batch_size=batch_size,
                num_workers=args.num_workers,
                state=PartialState(cpu=device.type == "cpu"),
                progress=False,
                output_format="parquet",
            )
            seconds = time.perf_counter() - start
            print(
                f"end to end, {model.dtype}, batch {batch_size}, {args.num_workers} workers: "
                f"{summary.tokenized / seconds:.0f} images/s ({summary.tokenized} images in {seconds:.1f} s)"
            )


if __name__ == "__main__":
    main()
