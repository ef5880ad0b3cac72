"""
`seed-hf tokenize`: turn every image of a folder, file list or dataset into SEED codes, saved as a `datasets` dataset.

Data-parallel under a distributed launcher, one model per process, e.g.
`torchrun --nproc-per-node 2 -m seed_hf.cli tokenize ...` on CPUs or
`accelerate launch --multi_gpu --num_processes 8 -m seed_hf.cli tokenize ...` on GPUs.
"""

import argparse
import sys
from datetime import timedelta
from pathlib import Path

import torch

from ..image_processing_seed import SeedImageProcessor
from ..modeling_seed_vision_tokenizer import SeedVisionTokenizer
from . import loading, resolve_pretrained_path

# Processes wait for the slowest one before the merge: allow a long wait rather than torch's 30 minutes.
BARRIER_TIMEOUT = timedelta(days=1)


def register(subparsers) -> None:
    parser = subparsers.add_parser("tokenize", description=__doc__)
    parser.add_argument(
        "input",
        help="an image folder, a .txt file list (one path per line), a dataset folder from save_to_disk, "
        "a .parquet/.csv/.json/.jsonl/.arrow file, or a Hub dataset id",
    )
    parser.add_argument("--model", required=True, help="folder of the SEED tokenizer (config, weights, processor)")
    parser.add_argument("-o", "--output", required=True, help="dataset folder to write (load it with load_from_disk)")
    parser.add_argument("--split", help="split of a dataset input with several")
    parser.add_argument("--image-column", default="image", help="image column of a dataset input (default: image)")
    parser.add_argument(
        "--text-column",
        action="append",
        default=[],
        dest="text_columns",
        help="column of a dataset input to copy to the output (repeat for several)",
    )
    parser.add_argument("--batch-size", type=int, default=8, help="images per forward pass (default: 8)")
    parser.add_argument(
        "--dtype",
        default="auto",
        choices=["auto", "float32", "bfloat16", "float16"],
        help="model dtype; auto keeps the checkpoint's (default: auto)",
    )
    parser.add_argument("--attn-implementation", default="sdpa", choices=["sdpa", "eager"], help="(default: sdpa)")
    parser.add_argument(
        "--device", help="device of the model (default: this process's GPU when there is one, else cpu)"
    )
    parser.add_argument(
        "--shard-size", type=int, default=1024, help="rows per shard: the unit of resumption (default: 1024)"
    )
    parser.add_argument(
        "--num-workers", type=int, default=0, help="processes decoding images ahead of the model (default: 0)"
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an existing output (only one seed-hf wrote) and discard a partial run",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    # datasets and accelerate: imported here so that the command line starts without them.
    from ..dataset_tokenization import ERRORS_FILE, distributed_state, image_source, tokenize_to_disk

    for name in ("batch_size", "shard_size"):
        if getattr(args, name) < 1:
            print(f"error: --{name.replace('_', '-')} must be at least 1", file=sys.stderr)
            return 1
    state = distributed_state(args.device, timeout=BARRIER_TIMEOUT)
    output = Path(args.output).resolve()
    try:
        if Path(args.input).is_dir() and output.is_relative_to(Path(args.input).resolve()):
            raise ValueError(f"the output {args.output} must not be inside the input folder {args.input}")
        model_path = resolve_pretrained_path(args.model, "seed_vision_tokenizer")
        source = image_source(args.input, args.split, args.image_column, args.text_columns)
        with loading(model_path):
            model = SeedVisionTokenizer.from_pretrained(
                model_path, dtype=args.dtype, attn_implementation=args.attn_implementation, use_safetensors=True
            )
        image_processor = SeedImageProcessor.from_pretrained(model_path)
        model.to(torch.device(args.device) if args.device else state.device)
        summary = tokenize_to_disk(
            source,
            output,
            model,
            image_processor,
            batch_size=args.batch_size,
            shard_size=args.shard_size,
            num_workers=args.num_workers,
            overwrite=args.overwrite,
            state=state,
        )
    except (ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    finally:
        # Close the process group of a multi-process launch before exiting, so no rank aborts the others.
        state.destroy_process_group()
    if state.is_main_process:
        print(
            f"read {summary.read}, tokenized {summary.tokenized}, failed {summary.failed} "
            f"({summary.images_per_second:.2f} images/s on {state.num_processes} process(es))"
        )
        if summary.shards_resumed:
            print(f"resumed: {summary.shards_resumed} of {summary.shards} shards were done by an earlier run")
        if summary.failed:
            print(f"unreadable images and reasons: {output / ERRORS_FILE}")
        print(f"wrote {output}")
    return 0
