"""`seed-hf convert`: the original SEED v1 release -> a transformers folder."""

import argparse
import json
import sys


def register(subparsers) -> None:
    parser = subparsers.add_parser("convert", description=__doc__)
    parser.add_argument(
        "--original-dir", required=True, help="folder with eva_vit_g.pth, causal_qformer.pth, seed_tokenizer.pth"
    )
    parser.add_argument(
        "--output", required=True, help="folder to write (config.json, model.safetensors, preprocessor_config.json)"
    )
    parser.add_argument(
        "--config",
        help="JSON file of SeedVisionTokenizerConfig keyword arguments (sub-configs as objects) for what the weight "
        "shapes cannot tell, e.g. head counts; every size the shapes determine is read from the checkpoint",
    )
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"], help="dtype written")
    parser.add_argument("--vision-from", help="transformers BLIP-2 checkpoint folder to take the vision tower from")
    parser.add_argument(
        "--keep-training-weights",
        action="store_true",
        help="also write the release's Stage I training weights (text embeddings, text-branch FFN, vision_proj, "
        "text_proj, temp) as training_head.safetensors, which SeedCausalQFormerForPreTraining loads",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    parser.set_defaults(run=run)


def _read_config_overrides(path: str) -> object:
    """The JSON value in `path`, with the file named when it is not JSON (the converter checks what it holds)."""
    with open(path) as file:
        try:
            return json.load(file)
        except json.JSONDecodeError as error:
            raise ValueError(f"--config {path} is not valid JSON ({error})") from None


def run(args: argparse.Namespace) -> int:
    # Imported here so that `seed-hf --help` does not pay for torch and the model code.
    import torch

    from ..conversion import convert_original_checkpoint
    from ..utils import bundled_model_card

    result = convert_original_checkpoint(
        args.original_dir,
        args.output,
        config=_read_config_overrides(args.config) if args.config else None,
        overwrite=args.overwrite,
        dtype=getattr(torch, args.dtype),
        vision_from=args.vision_from,
        model_card=bundled_model_card("seed_tokenizer_v1.md"),
        keep_training_weights=args.keep_training_weights,
    )
    if result.skipped:
        print(f"skipped {len(result.skipped)} training-only entries: {', '.join(result.skipped)}")
    if result.kept:
        print(f"kept {len(result.kept)} Stage I training weights in training_head.safetensors")
    if result.absent:
        print(f"not in the release, so fresh in Stage I training: {', '.join(result.absent)}")
    if result.assumed:
        print(f"released values assumed (no shape tells them; set them with --config): {', '.join(result.assumed)}")
    print(f"wrote {args.output}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """The `seed-hf-convert` console command: `seed-hf convert`, with the same error handling."""
    from ..cli import main as cli_main

    return cli_main(["convert", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
