"""`seed-hf convert`: the original SEED v1 release -> a transformers folder."""

import argparse
import json
import sys

import torch

from ..configuration_seed import SeedVisionTokenizerConfig
from ..conversion import ConversionError, convert_original_checkpoint
from ..utils import bundled_model_card


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--original-dir", required=True, help="folder with eva_vit_g.pth, causal_qformer.pth, seed_tokenizer.pth"
    )
    parser.add_argument(
        "--output", required=True, help="folder to write (config.json, model.safetensors, preprocessor_config.json)"
    )
    parser.add_argument(
        "--config", help="JSON file of SeedVisionTokenizerConfig keyword arguments for non-default sizes"
    )
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"], help="dtype written")
    parser.add_argument("--vision-from", help="transformers BLIP-2 checkpoint folder to take the vision tower from")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    parser.set_defaults(run=run)


def register(subparsers) -> None:
    add_arguments(subparsers.add_parser("convert", description=__doc__))


def run(args: argparse.Namespace) -> int:
    try:
        config = SeedVisionTokenizerConfig(**json.loads(open(args.config).read())) if args.config else None
        skipped = convert_original_checkpoint(
            args.original_dir,
            args.output,
            config=config,
            overwrite=args.overwrite,
            dtype=getattr(torch, args.dtype),
            vision_from=args.vision_from,
            model_card=bundled_model_card("seed_tokenizer_v1.md"),
        )
    except (ConversionError, FileExistsError, FileNotFoundError, json.JSONDecodeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    if skipped:
        print(f"skipped {len(skipped)} training-only entries: {', '.join(skipped)}")
    print(f"wrote {args.output}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="seed-hf-convert", description=__doc__)
    add_arguments(parser)
    args = parser.parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
