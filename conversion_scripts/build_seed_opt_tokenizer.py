"""Extend an OPT tokenizer with the SEED image tokens and save it as a SeedOPTTokenizer folder.

python conversion_scripts/build_seed_opt_tokenizer.py --base facebook/opt-2.7b --output seed-opt-tokenizer
"""

import argparse
import sys

from seed_hf.cli import report_errors
from seed_hf.tokenization_seed_opt import save_seed_opt_tokenizer


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", required=True, help="OPT tokenizer: a folder or a Hub id (e.g. facebook/opt-2.7b)")
    parser.add_argument("--output", required=True, help="folder to write (tokenizer.json, tokenizer_config.json)")
    parser.add_argument("--num-image-tokens", type=int, default=8192, help="number of code tokens (codebook size)")
    parser.add_argument("--image-seq-length", type=int, default=32, help="codes per image")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    args = parser.parse_args(argv)

    def build() -> None:
        tokenizer = save_seed_opt_tokenizer(
            args.base,
            args.output,
            overwrite=args.overwrite,
            num_image_tokens=args.num_image_tokens,
            image_seq_length=args.image_seq_length,
        )
        start, end = tokenizer.image_token_start_id, tokenizer.image_token_start_id + tokenizer.num_image_tokens - 1
        print(
            f"wrote {args.output}: {len(tokenizer)} tokens, image codes at ids {start}..{end}, "
            f"<img>={tokenizer.boi_token_id} </img>={tokenizer.eoi_token_id} <image>={tokenizer.image_token_id}"
        )

    return report_errors(build)


if __name__ == "__main__":
    sys.exit(main())
