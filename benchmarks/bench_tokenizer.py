"""
Speed of the SEED-OPT tokenizer: building it from an OPT tokenizer (the 8192 code tokens plus `<img>`, `</img>`,
`<image>`), saving and loading it, and the code <-> id helpers.

Without `--base` it runs on a synthetic byte-level BPE of facebook/opt-2.7b's size (50265 tokens, 50000 merges, in
OPT's file format), so nothing is downloaded. Prints a markdown table of median wall-clock and CPU times, with the load time
of the plain OPT tokenizer saved the same way as a baseline.

    python benchmarks/bench_tokenizer.py
    python benchmarks/bench_tokenizer.py --base path/to/opt-2.7b --repeats 10
"""

import argparse
import json
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from tokenizers import pre_tokenizers
from transformers import AutoTokenizer, GPT2Tokenizer

from seed_hf.tokenization_seed_opt import SeedOPTTokenizer

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from text_helpers import OPT_SPECIAL_TOKENS, write_opt_tokenizer_files  # noqa: E402


def synthetic_opt_tokenizer(path: Path, num_merges: int = 50000, seed: int = 0) -> Path:
    """A valid byte-level BPE of OPT's size: each merge joins two existing tokens into a new one of up to 12 chars."""
    rng = random.Random(seed)
    tokens = list(pre_tokenizers.ByteLevel.alphabet())
    known, merges = set(tokens), []
    while len(merges) < num_merges:
        left, right = rng.choice(tokens), rng.choice(tokens)
        if len(left + right) <= 12 and left + right not in known:
            merges.append(f"{left} {right}")
            tokens.append(left + right)
            known.add(left + right)
    vocab = {token: index for index, token in enumerate(OPT_SPECIAL_TOKENS + tokens)}
    return write_opt_tokenizer_files(path, vocab, merges)


def median_seconds(run, repeats: int, setup) -> tuple[float, float]:
    """
    Median wall-clock and CPU time (this process) of `run(setup())` over `repeats` runs after one warm-up; `setup`
    is not timed. CPU time is the steadier figure on a shared machine.
    """
    wall, cpu = [], []
    for _ in range(repeats + 1):
        argument = setup()
        start_wall, start_cpu = time.perf_counter(), time.process_time()
        run(argument)
        wall.append(time.perf_counter() - start_wall)
        cpu.append(time.process_time() - start_cpu)
    return statistics.median(wall[1:]), statistics.median(cpu[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", help="an OPT tokenizer folder (default: a synthetic one of OPT's size)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        base = args.base or synthetic_opt_tokenizer(folder / "opt")
        saved = folder / "seed-opt"

        def load_base(_=None) -> SeedOPTTokenizer:
            return SeedOPTTokenizer.from_pretrained(base)

        def build(_=None) -> SeedOPTTokenizer:
            tokenizer = load_base()
            tokenizer.add_image_tokens()
            return tokenizer

        tokenizer = build()
        tokenizer.save_pretrained(saved)
        GPT2Tokenizer.from_pretrained(base).save_pretrained(folder / "opt-saved")
        codes = torch.randint(0, tokenizer.num_image_tokens, (args.batch_size, tokenizer.image_seq_length))
        text = torch.tensor(tokenizer("A photo of", add_special_tokens=False).input_ids)
        ids = torch.cat(
            [
                text.expand(args.batch_size, -1),
                torch.full((args.batch_size, 1), tokenizer.boi_token_id),
                tokenizer.codes_to_ids(codes),
                torch.full((args.batch_size, 1), tokenizer.eoi_token_id),
            ],
            dim=1,
        )

        no_setup = lambda: None  # noqa: E731
        steps = [
            ("load the OPT tokenizer (adds <img>, </img>, <image>)", load_base, no_setup),
            ("add the 8192 code tokens", lambda fresh: fresh.add_image_tokens(), load_base),
            ("build (load + add)", build, no_setup),
            ("save_pretrained", lambda _: tokenizer.save_pretrained(folder / "again"), no_setup),
            ("AutoTokenizer.from_pretrained(saved)", lambda _: AutoTokenizer.from_pretrained(saved), no_setup),
            (
                "baseline: GPT2Tokenizer.from_pretrained(saved OPT tokenizer, no image tokens)",
                lambda _: GPT2Tokenizer.from_pretrained(folder / "opt-saved"),
                no_setup,
            ),
            (f"codes_to_ids ({args.batch_size} x 32)", lambda _: tokenizer.codes_to_ids(codes), no_setup),
            (f"ids_to_codes ({args.batch_size} sequences)", lambda _: tokenizer.ids_to_codes(ids), no_setup),
        ]
        results = {name: median_seconds(run, args.repeats, setup) for name, run, setup in steps}

    print(
        f"Python {platform.python_version()}, torch {torch.__version__}, {platform.processor() or platform.machine()}"
    )
    print(f"base: {args.base or 'synthetic OPT-size BPE'}; {len(tokenizer)} tokens; median of {args.repeats} runs\n")
    print("| step | wall ms | CPU ms |\n| --- | ---: | ---: |")
    for name, (wall, cpu) in results.items():
        print(f"| {name} | {wall * 1000:.1f} | {cpu * 1000:.1f} |")
    print(f"\nload average: {' '.join(f'{load:.1f}' for load in os.getloadavg())} on {os.cpu_count()} cores")
    print(json.dumps({name: [round(wall, 4), round(cpu, 4)] for name, (wall, cpu) in results.items()}))


if __name__ == "__main__":
    main()
