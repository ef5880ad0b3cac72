"""`seed-hf info`: what a model folder holds: its config, parameter counts per part, dtypes and file sizes."""

import argparse
from collections import Counter, defaultdict
from pathlib import Path

from safetensors import SafetensorError, safe_open
from transformers import AutoConfig, PreTrainedConfig

from . import resolve_pretrained_path


def register(subparsers) -> None:
    parser = subparsers.add_parser("info", description=__doc__)
    parser.add_argument("model", help="a SEED tokenizer or SEED-OPT folder (config.json and *.safetensors)")
    parser.set_defaults(run=run)


def human_size(num_bytes: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if num_bytes < 1024 or unit == "GiB":
            return f"{num_bytes:.0f} {unit}" if unit == "B" else f"{num_bytes:.2f} {unit}"
        num_bytes /= 1024


def config_lines(config: PreTrainedConfig, indent: str = "  ") -> list[str]:
    """The fields a config class declares itself (not the generic ones of `PreTrainedConfig`), sub-configs nested."""
    lines = []
    for name in type(config).__annotations__:
        value = getattr(config, name, None)
        if isinstance(value, PreTrainedConfig):
            lines += [f"{indent}{name}: {type(value).__name__}", *config_lines(value, indent + "  ")]
        elif not name.startswith("_"):
            lines.append(f"{indent}{name}: {value}")
    return lines


def parameter_counts(folder: Path) -> tuple[dict[str, int], dict[str, Counter]]:
    """Parameters per top-level module and their dtypes, read from the safetensors headers (no weights loaded)."""
    counts, dtypes = defaultdict(int), defaultdict(Counter)
    for path in sorted(folder.glob("*.safetensors")):
        try:
            weights = safe_open(path, framework="pt")
        except SafetensorError as error:
            raise ValueError(f"{path} is not a complete safetensors file ({error})") from None
        with weights:
            for key in weights.keys():
                tensor = weights.get_slice(key)
                size = 1
                for dim in tensor.get_shape():
                    size *= dim
                part = key.split(".")[0]
                counts[part] += size
                dtypes[part][tensor.get_dtype()] += size
    return counts, dtypes


def run(args: argparse.Namespace) -> int:
    folder = Path(resolve_pretrained_path(args.model, "seed_vision_tokenizer", "seed_opt", hub=False))
    config = AutoConfig.from_pretrained(folder)
    print(f"{folder}: {config.model_type} ({', '.join(config.architectures or [type(config).__name__])})")
    print("config:")
    print("\n".join(config_lines(config)))
    print(f"  dtype: {config.dtype}")

    counts, dtypes = parameter_counts(folder)
    if counts:
        width = max(map(len, counts))
        print("parameters (from the safetensors headers):")
        for part, count in sorted(counts.items(), key=lambda item: -item[1]):
            stored = ", ".join(str(dtype) for dtype in dtypes[part])
            print(f"  {part:<{width}}  {count:>14,}  {stored}")
        print(f"  {'total':<{width}}  {sum(counts.values()):>14,}")
    else:
        print("parameters: no *.safetensors file")

    files = sorted(path for path in folder.rglob("*") if path.is_file())
    print("files:")
    width = max(len(str(path.relative_to(folder))) for path in files)
    for path in files:
        print(f"  {str(path.relative_to(folder)):<{width}}  {human_size(path.stat().st_size):>11}")
    print(f"  {'total':<{width}}  {human_size(sum(path.stat().st_size for path in files)):>11}")
    return 0
