"""
`seed-hf tokenize`: turn every image of a folder, file list, dataset, webdataset tar shards, parquet shards or
streaming dataset into SEED codes, saved as a `datasets` dataset or as parquet shards.

Data-parallel under a distributed launcher, one model per process, on one node or many, e.g.
`torchrun --nproc-per-node 2 -m seed_hf.cli tokenize ...` on CPUs or
`accelerate launch --multi_gpu --num_processes 8 -m seed_hf.cli tokenize ...` on GPUs.
"""

import argparse
from datetime import timedelta
from pathlib import Path

import torch

from ..image_processing_seed import SeedImageProcessor
from ..modeling_seed_vision_tokenizer import SeedVisionTokenizer
from ..utils import OUTPUT_FORMATS
from . import loading, resolve_pretrained_path

# Processes wait for the slowest one before the merge: allow a long wait rather than torch's 30 minutes.
BARRIER_TIMEOUT = timedelta(days=1)


def register(subparsers) -> None:
    parser = subparsers.add_parser("tokenize", description=__doc__)
    parser.add_argument(
        "input",
        help="an image folder, a .txt file list (one path per line), a dataset folder from save_to_disk, "
        "a .parquet/.csv/.json/.jsonl/.arrow file, a Hub dataset id, or shard files: a brace pattern of "
        ".tar/.parquet/.arrow files, local or fsspec URLs (shards/{00000..00127}.tar)",
    )
    parser.add_argument("--model", required=True, help="folder of the SEED tokenizer (config, weights, processor)")
    parser.add_argument(
        "-o", "--output", required=True, help="folder to write (load_from_disk, or load_dataset for parquet)"
    )
    parser.add_argument("--split", help="split of a dataset input with several")
    parser.add_argument("--image-column", default="image", help="image column of a dataset input (default: image)")
    parser.add_argument(
        "--text-column",
        action="append",
        default=[],
        dest="text_columns",
        help="column of a dataset or parquet input to copy to the output (repeat for several)",
    )
    parser.add_argument(
        "--metadata-columns",
        nargs="+",
        action="extend",
        dest="text_columns",
        metavar="COLUMN",
        help="several columns to copy at once; for tar shards, fields of each sample's .json (stored as strings). "
        "The captions of tar samples (.txt) always go to a caption column",
    )
    parser.add_argument(
        "--id-column", help="row id column of parquet shards or a streaming dataset (default: __key__ or key if any)"
    )
    parser.add_argument(
        "--streaming",
        action="store_true",
        help="read INPUT with load_dataset(INPUT, streaming=True) (a Hub id or local data folder), shard by shard",
    )
    parser.add_argument(
        "--output-format",
        default="dataset",
        choices=OUTPUT_FORMATS,
        help="dataset: one dataset from save_to_disk (small sets); parquet: one data/train-*.parquet per shard "
        "(default: dataset)",
    )
    parser.add_argument(
        "--push-to-hub",
        metavar="REPO",
        help="upload each parquet shard to this Hub dataset repository as it is written (needs --output-format "
        "parquet)",
    )
    parser.add_argument("--batch-size", type=int, default=8, help="images per forward pass (default: 8)")
    parser.add_argument(
        "--dtype",
        choices=["auto", "float32", "bfloat16", "float16"],
        help="model dtype; auto keeps the checkpoint's (default: bfloat16 on CUDA, float32 elsewhere)",
    )
    parser.add_argument("--attn-implementation", default="sdpa", choices=["sdpa", "eager"], help="(default: sdpa)")
    parser.add_argument(
        "--device", help="device of the model (default: this process's GPU when there is one, else cpu)"
    )
    parser.add_argument(
        "--shard-size",
        type=int,
        default=1024,
        help="rows per shard, the unit of resumption, for inputs without shards of their own (default: 1024)",
    )
    parser.add_argument(
        "--num-workers",
        type=int,
        default=0,
        help="processes reading and decoding whole shards ahead of the model (default: 0)",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an existing output (only one seed-hf wrote) and discard a partial run",
    )
    parser.set_defaults(run=run)


def default_dtype(device: torch.device) -> str:
    """
    The model dtype when `--dtype` is not given: bfloat16 on CUDA, for tensor-core throughput (its codes agree with
    float32's in 127 of 128 positions on the parity fixture); float32 elsewhere, as CPUs without bfloat16
    instructions run bfloat16 about 6x slower.
    """
    return "bfloat16" if device.type == "cuda" else "float32"


def run(args: argparse.Namespace) -> int:
    # datasets, fsspec and accelerate: imported here so that the command line starts without them.
    from ..dataset_tokenization import ERRORS_FILE, distributed_state, tokenize_to_disk
    from ..webdataset_input import input_source

    for name in ("batch_size", "shard_size"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be at least 1")
    state = distributed_state(args.device, timeout=BARRIER_TIMEOUT)
    output = Path(args.output).resolve()
    try:
        if Path(args.input).is_dir() and output.is_relative_to(Path(args.input).resolve()):
            raise ValueError(f"the output {args.output} must not be inside the input folder {args.input}")
        model_path = resolve_pretrained_path(args.model, "seed_vision_tokenizer")
        source = input_source(
            args.input, args.split, args.image_column, args.id_column, args.text_columns, args.streaming
        )
        device = torch.device(args.device) if args.device else state.device
        with loading(model_path):
            model = SeedVisionTokenizer.from_pretrained(
                model_path,
                dtype=args.dtype or default_dtype(device),
                attn_implementation=args.attn_implementation,
                use_safetensors=True,
            )
        image_processor = SeedImageProcessor.from_pretrained(model_path)
        model.to(device)
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
            output_format=args.output_format,
            push_to_hub=args.push_to_hub,
        )
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
