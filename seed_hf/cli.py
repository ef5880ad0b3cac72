"""
The `seed-hf` command line.

A command that fails for a reason the user can fix (a missing or wrong folder, bad input, a full disk, ...) ends
with one `error: ...` line on stderr and exit status 1; argparse's usage errors exit with 2. `--debug` (or the
environment variable `SEED_HF_DEBUG=1`) shows the traceback instead.
"""

import argparse
import importlib
import os
import sys
from collections.abc import Callable

from huggingface_hub.errors import EntryNotFoundError
from safetensors import SafetensorError

# Command -> one-line summary. Each is a module of seed_hf.commands (dashes read as underscores) defining
# `register(subparsers)`; only the module of the command given is imported, so `seed-hf --help` loads none of the
# libraries the commands need.
COMMANDS = {
    "convert": "convert the original SEED v1 release",
    "reconstruct": "tokenize images and draw them back",
    "tokenize": "tokenize a folder, file list or dataset",
    "info": "describe a model folder",
    "finetune": "LoRA fine-tuning of SEED-OPT with Trainer",
    "evaluate": "measure captioning, VQA or reconstruction as the paper does",
    "train-tokenizer": "train a SEED tokenizer (stage 1 or 2 of the paper) with Trainer",
    "demo": "serve the demo page in a browser",
}

# Failures of the input or the environment rather than bugs. OSError covers FileNotFoundError, PermissionError,
# FileExistsError, a full disk and the Hub's connection and offline errors; ValueError covers bad arguments, bad
# JSON and the Hub's repo id validation; ModuleNotFoundError, a missing optional dependency (gradio for `demo`). A
# KeyError or RuntimeError is left alone: it is most often a bug.
ANTICIPATED_ERRORS = (ValueError, OSError, ModuleNotFoundError, SafetensorError, EntryNotFoundError)


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser with `command`'s full arguments and a one-line stand-in for every other command."""
    parser = argparse.ArgumentParser(
        prog="seed-hf",
        description="SEED visual tokenizer tools",
        epilog="SEED_HF_DEBUG=1 is the same as --debug.",
    )
    # Not `dest="debug"`: finetune has TrainingArguments' own --debug.
    parser.add_argument("--debug", dest="show_traceback", action="store_true", help="show the traceback of a failure")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, summary in COMMANDS.items():
        if name == command:
            importlib.import_module(f"seed_hf.commands.{name.replace('-', '_')}").register(subparsers)
        else:
            subparsers.add_parser(name, help=summary)
    return parser


def one_line(error: BaseException) -> str:
    """The error's message on one line (library messages often span several), or its type when it has none."""
    return " ".join(str(error).split()) or type(error).__name__


def report_errors(run: Callable[[], int | None], show_traceback: bool = False) -> int:
    """
    Call `run` and return its exit status (None counts as 0). An anticipated failure prints one `error: ...` line and
    gives 1, an interrupt gives 130; with `show_traceback` (or `SEED_HF_DEBUG=1`) they are raised instead. The
    `seed-hf` commands and the conversion scripts all end this way.
    """
    show_traceback = show_traceback or os.environ.get("SEED_HF_DEBUG", "") not in ("", "0")
    try:
        return run() or 0
    except ANTICIPATED_ERRORS as error:
        if show_traceback:
            raise
        print(f"error: {one_line(error)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        if show_traceback:
            raise
        print("error: interrupted", file=sys.stderr)
        return 130


def main(argv: list[str] | None = None) -> int:
    """Run `seed-hf ARGV` and return its exit status (0, 1 for an anticipated failure, 130 when interrupted)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    # The options before the command take no value, so the first other word is the command.
    command = next((word for word in argv if not word.startswith("-")), None)
    args = build_parser(command if command in COMMANDS else None).parse_args(argv)
    # Taken out of the namespace: the commands see only their own arguments.
    show_traceback = vars(args).pop("show_traceback")
    return report_errors(lambda: args.run(args), show_traceback)


if __name__ == "__main__":
    sys.exit(main())
