"""
Speed of one Stage II training step of the SEED tokenizer (`SeedVisionTokenizerForCodebookTraining`: frozen ViT and
causal Q-Former forward, quantizer + decoder + reconstruction branch forward and backward, one AdamW step) at the
released size, batch 8, float32 or bfloat16 (`--dtype`), random weights (nothing to download).

Prints the median step time, images per second, and the step's FLOP rate as a share of this machine's
matrix-multiply throughput measured in the same run on the model's largest GEMM, as `bench_encode.py` does. FLOPs
are counted from the config: the frozen encoder forward once, the trained parts three times (forward, and a backward
that takes gradients of both activations and weights).

    python benchmarks/bench_train_step.py           # released size (several GiB of memory, minutes on a CPU)
    python benchmarks/bench_train_step.py --dtype bfloat16
    python benchmarks/bench_train_step.py --tiny    # a tiny config: a smoke test
    python benchmarks/bench_train_step.py --device cuda --batch-size 32
"""

import argparse
import time

import torch
from bench_encode import (
    embed_codes_flops,
    encode_flops,
    linear_flops,
    machine,
    matmul_flops_per_second,
    random_model,
    seconds_per_call,
    transformer_layer_flops,
    vision_tokens,
)

from seed_hf import SeedVisionTokenizerConfig, SeedVisionTokenizerForCodebookTraining

TINY_CONFIG = dict(
    vision_config=dict(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, image_size=28, patch_size=14
    ),
    qformer_config=dict(hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4),
    decoder_num_blocks=2,
    reverse_qformer_num_hidden_layers=2,
    codebook_size=64,
    codebook_dim=8,
)


def trained_forward_flops(config: SeedVisionTokenizerConfig) -> int:
    """FLOPs of the trained parts' forward for one image: task layer, decoder, reconstruction blocks."""
    width = config.qformer_config.hidden_size
    queries, intermediate = config.num_query_tokens, int(width * config.decoder_mlp_ratio)
    task_layer = linear_flops(queries, width, width) + linear_flops(queries, width, config.codebook_dim)
    reconstruction = config.decoder_num_blocks * transformer_layer_flops(queries, width, intermediate)
    return task_layer + embed_codes_flops(config) + reconstruction


def training_model(config: SeedVisionTokenizerConfig, device: torch.device) -> SeedVisionTokenizerForCodebookTraining:
    """The Stage II head with `bench_encode`'s random tokenizer weights and a freshly initialised training branch."""
    tokenizer = random_model(config, device)
    with torch.device("meta"):
        model = SeedVisionTokenizerForCodebookTraining(config)
    model.load_state_dict(tokenizer.state_dict(), strict=False, assign=True)
    del tokenizer
    model.reconstruction_head.to_empty(device=device)
    model.reconstruction_head.apply(model._init_weights)
    model.freeze()
    return model.train()


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="a tiny config instead of the released size")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3, help="timed steps (median reported)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps first")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"], help="weights and inputs")
    args = parser.parse_args(argv)
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    config = SeedVisionTokenizerConfig(**TINY_CONFIG) if args.tiny else SeedVisionTokenizerConfig()
    vision = config.vision_config

    start = time.perf_counter()
    model = training_model(config, device).to(dtype)
    build_seconds = time.perf_counter() - start
    optimizer = torch.optim.AdamW([parameter for parameter in model.parameters() if parameter.requires_grad], lr=1e-4)
    generator = torch.Generator(device).manual_seed(0)
    pixel_values = torch.randn(
        args.batch_size, 3, vision.image_size, vision.image_size, generator=generator, device=device
    ).to(dtype)
    text_targets = torch.randn(
        args.batch_size, config.num_reverse_tokens, config.generation_embed_dim, generator=generator, device=device
    ).to(dtype)

    def step():
        model(pixel_values, text_targets=text_targets).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    seconds = seconds_per_call(step, args.repeats, args.warmup, device)
    gemm = (args.batch_size * vision_tokens(config), vision.hidden_size, vision.intermediate_size)
    matmul = matmul_flops_per_second(*gemm, dtype, device, max(args.repeats, 3), 1)
    flops = args.batch_size * (encode_flops(config) + 3 * trained_forward_flops(config))
    trainable = sum(parameter.numel() for parameter in model.parameters() if parameter.requires_grad)

    print(f"\nMachine: {machine(device)}. Model built in {build_seconds:.1f} s; {trainable / 1e6:.1f} M trainable.")
    print(f"FLOPs per step, counted from the config: {flops / 1e9:.1f} G.\n")
    print("| measurement | batch | seconds | images/s | GFLOP/s | of matmul |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    print(f"| matmul {' x '.join(map(str, gemm))}, {args.dtype} | | | | {matmul / 1e9:.1f} | 100% |")
    print(
        f"| Stage II step, {args.dtype} | {args.batch_size} | {seconds:.3f} | {args.batch_size / seconds:.2f} | "
        f"{flops / seconds / 1e9:.1f} | {flops / seconds / matmul:.0%} |"
    )


if __name__ == "__main__":
    main()
