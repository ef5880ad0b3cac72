"""Subcommands of the `seed-hf` command line; each module defines `register(subparsers)`."""
