"""
Speed of the SEED tokenizer at the released size, with random weights (nothing to download).

Prints a markdown table: `encode` throughput for each dtype x attention implementation x batch size, `embed_codes`
throughput, and the load time and peak RSS of `from_pretrained` from a safetensors folder (in a fresh process). Every
throughput is also given as a fraction of this machine's matrix-multiply throughput, measured in the same run on the
model's largest GEMM ((batch * tokens) x vision width by vision width x MLP width, run as `nn.Linear` runs it), with
FLOPs counted from the config.

    python benchmarks/bench_encode.py            # the full table (about 10 minutes on 2 CPU cores)
    python benchmarks/bench_encode.py --quick    # one batch of 1 per setting: a smoke test
    python benchmarks/bench_encode.py --device cuda --batch-sizes 64 --dtypes bfloat16 --attn sdpa --no-load
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import torch

from seed_hf import SeedVisionTokenizer, SeedVisionTokenizerConfig

GIB = 1024**3

# Run in a fresh interpreter, imports done before the clock starts. Safetensors weights are memory-mapped and read
# lazily, so the weights are also touched once, as a first forward would; the time to that point is reported too.
# The peak is VmHWM: getrusage's ru_maxrss would also count the parent's memory at the fork.
LOAD_CHILD = """
import json, sys, time
import torch
from seed_hf import SeedVisionTokenizer
start = time.perf_counter()
model = SeedVisionTokenizer.from_pretrained(sys.argv[1], dtype=getattr(torch, sys.argv[2]))
loaded = time.perf_counter() - start
with torch.no_grad():
    for tensor in model.state_dict().values():
        tensor.sum()
touched = time.perf_counter() - start
peak = next(int(line.split()[1]) * 1024 for line in open("/proc/self/status") if line.startswith("VmHWM"))
print(json.dumps({"seconds": loaded, "touched_seconds": touched, "peak_rss": peak}))
"""


def linear_flops(rows: int, fan_in: int, fan_out: int) -> int:
    return 2 * rows * fan_in * fan_out


def attention_flops(queries: int, keys: int, width: int) -> int:
    """Scores (q @ k^T) and the weighted sum (p @ v)."""
    return 2 * 2 * queries * keys * width


def transformer_layer_flops(tokens: int, width: int, intermediate: int) -> int:
    """A self-attention block with fused QKV, output projection and a 2-layer MLP."""
    return (
        linear_flops(tokens, width, 3 * width)
        + attention_flops(tokens, tokens, width)
        + linear_flops(tokens, width, width)
        + 2 * linear_flops(tokens, width, intermediate)
    )


def qformer_flops(config, num_queries: int, num_layers: int, memory_tokens: int) -> int:
    """A BLIP-2 Q-Former's query branch: self-attention and MLP per layer, cross-attention every few layers."""
    width = config.hidden_size
    flops = 0
    for layer in range(num_layers):
        flops += transformer_layer_flops(num_queries, width, config.intermediate_size)
        if layer % config.cross_attention_frequency == 0:
            flops += (
                linear_flops(num_queries, width, width)
                + 2 * linear_flops(memory_tokens, config.encoder_hidden_size, width)
                + attention_flops(num_queries, memory_tokens, width)
                + linear_flops(num_queries, width, width)
            )
    return flops


def vision_tokens(config: SeedVisionTokenizerConfig) -> int:
    vision = config.vision_config
    return (vision.image_size // vision.patch_size) ** 2 + 1


def encode_flops(config: SeedVisionTokenizerConfig) -> int:
    """Multiply-add FLOPs (x2) of `encode` for one image: ViT, causal Q-Former, quantizer."""
    vision, qformer = config.vision_config, config.qformer_config
    tokens = vision_tokens(config)
    flops = linear_flops(tokens - 1, 3 * vision.patch_size**2, vision.hidden_size)
    flops += vision.num_hidden_layers * transformer_layer_flops(tokens, vision.hidden_size, vision.intermediate_size)
    flops += qformer_flops(qformer, config.num_query_tokens, qformer.num_hidden_layers, tokens)
    queries, width = config.num_query_tokens, qformer.hidden_size
    flops += linear_flops(queries, width, width) + linear_flops(queries, width, config.codebook_dim)
    return flops + linear_flops(queries, config.codebook_dim, config.codebook_size)


def embed_codes_flops(config: SeedVisionTokenizerConfig) -> int:
    """FLOPs of `embed_codes` for one image: decode layer, pre-norm blocks, reverse Q-Former, projection."""
    qformer = config.qformer_config
    queries, width, dim = config.num_query_tokens, qformer.hidden_size, config.codebook_dim
    flops = linear_flops(queries, dim, dim) + linear_flops(queries, dim, width)
    intermediate = int(width * config.decoder_mlp_ratio)
    flops += config.decoder_num_blocks * transformer_layer_flops(queries, width, intermediate)
    reverse = config.reverse_qformer_config()
    flops += qformer_flops(reverse, config.num_reverse_tokens, reverse.num_hidden_layers, queries)
    return flops + linear_flops(config.num_reverse_tokens, width, config.generation_embed_dim)


def random_model(config: SeedVisionTokenizerConfig, device: torch.device) -> SeedVisionTokenizer:
    """The released-size model with random weights, built on the meta device and filled once (no double init)."""
    with torch.device("meta"):
        model = SeedVisionTokenizer(config)
    model.to_empty(device=device)
    generator = torch.Generator(device).manual_seed(0)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if parameter.ndim >= 2:
                parameter.normal_(0, parameter.shape[-1] ** -0.5, generator=generator)
            else:
                parameter.fill_(1.0 if "norm" in name and name.endswith("weight") else 0.0)
    return model.eval()


def seconds_per_call(function, repeats: int, warmup: int, device: torch.device) -> float:
    """Median wall time of `function()` over `repeats` calls after `warmup` calls."""
    times = []
    for index in range(warmup + repeats):
        start = time.perf_counter()
        function()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if index >= warmup:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def matmul_flops_per_second(rows, inner, cols, dtype, device, repeats, warmup) -> float:
    """FLOP/s of `F.linear` on an (rows x inner) input and a (cols x inner) weight: the GEMM as `nn.Linear` runs it.

    The layout matters: on CPUs without native bfloat16, a bfloat16 `a @ b` with a row-major `b` takes a path over
    10x slower than the transposed weight of `nn.Linear`, so a plain `a @ b` would not be the model's limit.
    """
    inputs = torch.randn(rows, inner, dtype=dtype, device=device)
    weight = torch.randn(cols, inner, dtype=dtype, device=device)
    return linear_flops(rows, inner, cols) / seconds_per_call(
        partial(torch.nn.functional.linear, inputs, weight), repeats, warmup, device
    )


def load_stats(folder: Path, dtype: str) -> dict:
    result = subprocess.run(
        [sys.executable, "-c", LOAD_CHILD, str(folder), dtype], capture_output=True, text=True, check=True
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


def machine(device: torch.device) -> str:
    cpuinfo = Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []
    cpu = next(
        (line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")), platform.machine()
    )
    text = f"{cpu}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads"
    if device.type == "cuda":
        text += f", {torch.cuda.get_device_name(device)}"
    return f"{text}; torch {torch.__version__}"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="batch 1 only, one timed call, no warm-up")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"], choices=["float32", "bfloat16"])
    parser.add_argument("--attn", nargs="+", default=["eager", "sdpa"], choices=["eager", "sdpa"])
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per measurement (median reported)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed calls before each measurement")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--no-load", action="store_true", help="skip the load-time and peak-RSS measurement")
    args = parser.parse_args(argv)
    if args.quick:
        args.batch_sizes, args.repeats, args.warmup = [1], 1, 0
    device = torch.device(args.device)

    config = SeedVisionTokenizerConfig()
    vision = config.vision_config
    per_image = {"encode": encode_flops(config), "embed_codes": embed_codes_flops(config)}
    start = time.perf_counter()
    model = random_model(config, device)
    build_seconds = time.perf_counter() - start
    table, loads = [], []
    with tempfile.TemporaryDirectory(prefix="seed-bench-") as work_dir:
        for dtype_name in args.dtypes:
            dtype = getattr(torch, dtype_name)
            model.to(dtype)
            for batch_size in args.batch_sizes:
                gemm = (batch_size * vision_tokens(config), vision.hidden_size, vision.intermediate_size)
                matmul = matmul_flops_per_second(*gemm, dtype, device, max(args.repeats, 3), 1)
                table.append(("matmul " + " x ".join(map(str, gemm)), dtype_name, "", batch_size, "", matmul, matmul))
                pixel_values = torch.randn(batch_size, 3, vision.image_size, vision.image_size, device=device)
                codes = torch.randint(config.codebook_size, (batch_size, config.num_query_tokens), device=device)
                for attn in args.attn:
                    model.set_attn_implementation(attn)
                    for name, function in (
                        ("encode", partial(model.encode, pixel_values)),
                        ("embed_codes", partial(model.embed_codes, codes)),
                    ):
                        seconds = seconds_per_call(function, args.repeats, args.warmup, device)
                        flops = per_image[name] * batch_size / seconds
                        table.append(
                            (name, dtype_name, attn, batch_size, f"{batch_size / seconds:.3f}", flops, matmul)
                        )
            if not args.no_load:
                folder = Path(work_dir) / dtype_name
                model.save_pretrained(folder)
                weight_bytes = sum(tensor.numel() * tensor.element_size() for tensor in model.state_dict().values())
                loads.append((dtype_name, weight_bytes, folder))
        del model
        loads = [(name, weight_bytes, load_stats(folder, name)) for name, weight_bytes, folder in loads]

    print(f"\nMachine: {machine(device)}. Model built in {build_seconds:.1f} s.")
    print(
        f"FLOPs per image, counted from the config: encode {per_image['encode'] / 1e9:.1f} G, "
        f'embed_codes {per_image["embed_codes"] / 1e9:.2f} G. "of matmul": the share of the matmul row above it.\n'
    )
    print("| measurement | dtype | attention | batch | images/s | GFLOP/s | of matmul |")
    print("| --- | --- | --- | ---: | ---: | ---: | ---: |")
    for name, dtype_name, attn, batch_size, images, flops, matmul in table:
        print(
            f"| {name} | {dtype_name} | {attn} | {batch_size} | {images} | {flops / 1e9:.1f} | {flops / matmul:.0%} |"
        )
    if loads:
        print(
            "\n| load (fresh process) | from_pretrained | + first read of the weights | peak RSS | weights | target |"
        )
        print("| --- | ---: | ---: | ---: | ---: | ---: |")
        for name, weight_bytes, stats in loads:
            target = 1.15 * weight_bytes + 0.5 * GIB
            print(
                f"| {name} | {stats['seconds']:.2f} s | {stats['touched_seconds']:.2f} s | "
                f"{stats['peak_rss'] / GIB:.2f} GiB | {weight_bytes / GIB:.2f} GiB | <= {target / GIB:.2f} GiB |"
            )


if __name__ == "__main__":
    main()
