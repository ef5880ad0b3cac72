r"""Build a SeedDecodePipeline folder from a SEED tokenizer folder and a Stable Diffusion v1.x checkpoint.

python conversion_scripts/build_seed_decode_pipeline.py --tokenizer seed-tokenizer-v1 \
    --stable-diffusion stable-diffusion-v1-4 --output seed-decode-v1

--stable-diffusion takes a diffusers-format folder (as CompVis/stable-diffusion-v1-4) or the original single file
(sd-v1-4.ckpt / .safetensors, read weights-only); a single file also needs --config, a diffusers-format folder with
the component configs and tokenizer files, so that nothing is fetched from the Hub. The null embedding (the CLIP text
embedding of "") is computed once from that checkpoint's text encoder, which is then dropped. Weights are written as
safetensors, next to JSON configs and the pipeline's code (so that diffusers loads the folder without seed_hf), to a
temporary folder renamed into place; an existing --output is kept unless --overwrite.
"""

import argparse
import sys

import torch

from seed_hf.build_decode_pipeline import build_seed_decode_pipeline
from seed_hf.cli import report_errors
from seed_hf.utils import bundled_model_card


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokenizer", required=True, help="SEED tokenizer folder (from `seed-hf convert`)")
    parser.add_argument(
        "--stable-diffusion", required=True, help="Stable Diffusion v1.x folder, .ckpt or .safetensors"
    )
    parser.add_argument("--config", help="for a single file: diffusers-format folder with the component configs")
    parser.add_argument("--output", required=True, help="pipeline folder to write")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"], help="dtype written")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    args = parser.parse_args(argv)

    def build() -> None:
        build_seed_decode_pipeline(
            args.tokenizer,
            args.stable_diffusion,
            args.output,
            config=args.config,
            overwrite=args.overwrite,
            dtype=getattr(torch, args.dtype),
            model_card=bundled_model_card("seed_decode_pipeline.md"),
        )
        print(f"wrote {args.output}")

    return report_errors(build)


if __name__ == "__main__":
    sys.exit(main())
