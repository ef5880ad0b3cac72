"""Convert the original SEED v1 release into a transformers folder (same as `seed-hf convert`).

python conversion_scripts/convert_seed_original_to_hf.py --original-dir SEED_RELEASE --output seed-tokenizer-v1
"""

import sys

from seed_hf.cli import main

if __name__ == "__main__":
    sys.exit(main(["convert", *sys.argv[1:]]))
