"""The `seed-hf` command line."""

import argparse
import importlib
import sys

# Each name is a module of seed_hf.commands defining `register(subparsers)`; imported only when the CLI starts.
COMMANDS = ["convert", "reconstruct", "tokenize", "info", "finetune", "demo"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="seed-hf", description="SEED visual tokenizer tools")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for name in COMMANDS:
        importlib.import_module(f"seed_hf.commands.{name}").register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.run(args) or 0


if __name__ == "__main__":
    sys.exit(main())
