"""
Subcommands of the `seed-hf` command line. Each module defines `register(subparsers)` and imports the heavy
libraries it needs inside `run`, so that `seed-hf --help` answers at once.

Commands taking a model or pipeline argument pass it through `resolve_pretrained_path` first: a local path that
does not exist, or a folder of the wrong kind, then fails with one clear message instead of a Hub error. They load
it inside `loading(name)`, so that weights that do not fit the config are reported as such.
"""

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

from ..utils import looks_like_local_path

# The folders seed_hf writes, by the model_type of their config.json or the class of their model_index.json.
FOLDER_KINDS = {
    "seed_vision_tokenizer": "a SEED tokenizer folder",
    "seed_opt": "a SEED-OPT folder",
    "SeedDecodePipeline": "a SeedDecodePipeline folder",
}


def identify_folder(folder: Path) -> tuple[str | None, str]:
    """
    What `folder` holds: the class name in its model_index.json or the model_type in its config.json (None when it
    has neither), and a description of it for error messages.
    """
    for file_name, key, noun in (
        ("model_index.json", "_class_name", "pipeline"),
        ("config.json", "model_type", "model"),
    ):
        path = folder / file_name
        if not path.is_file():
            continue
        try:
            content = json.loads(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            raise ValueError(f"{path} is not valid JSON ({error})") from None
        kind = content.get(key) if isinstance(content, dict) else None
        if isinstance(kind, list):  # diffusers writes a pipeline class of its own as [module, class]
            kind = kind[-1]
        kind = str(kind) if kind else None
        return kind, FOLDER_KINDS.get(kind, f"a {noun} folder of another kind ({file_name} says {key} {kind!r})")
    if not any(folder.iterdir()):
        return None, "an empty folder"
    return None, "a folder with neither config.json nor model_index.json"


def resolve_pretrained_path(name: str, *kinds: str, hub: bool = True) -> str:
    """
    Check a command's model or pipeline argument before anything loads it, and return it for `from_pretrained`.

    Args:
        name (`str`):
            A local folder or, when `hub` is set, a Hub repository id.
        *kinds (`str`):
            The kinds of folder accepted, keys of `FOLDER_KINDS` (a model_type or a pipeline class name); none: any.
        hub (`bool`, *optional*, defaults to `True`):
            Whether `name` may be a Hub repository id. A name that exists nowhere locally and could not be a repo id
            (`photoz/`, `./model`, `../x`) is always taken for a missing local path.

    Raises `FileNotFoundError` for a missing local path, `NotADirectoryError` for a file and `ValueError` for a folder
    of another kind; a Hub id is returned unchecked (`from_pretrained` reports its own failures).
    """
    expected = " or ".join(FOLDER_KINDS[kind] for kind in kinds) or "a model folder"
    path = Path(name).expanduser()
    if not path.exists():
        if hub and not looks_like_local_path(name):
            return name
        raise FileNotFoundError(f"no such file or folder: {name} (expected {expected})")
    if not path.is_dir():
        raise NotADirectoryError(f"{name} is a file, not {expected}")
    if kinds:
        kind, description = identify_folder(path)
        if kind not in kinds:
            raise ValueError(f"{name} is {description}, not {expected}")
    return str(path)


@contextmanager
def loading(name: str) -> Iterator[None]:
    """
    Wrap a `from_pretrained` call. transformers raises a bare `RuntimeError` when a folder's weights do not fit its
    config (a size mismatch), which the command line would show as a crash: raise a `ValueError` naming the folder
    instead. Running out of memory is left as it is.
    """
    try:
        yield
    except torch.OutOfMemoryError:
        raise
    except RuntimeError as error:
        raise ValueError(f"cannot load {name}: its weights do not fit its config ({error})") from error


__all__ = ["FOLDER_KINDS", "identify_folder", "loading", "resolve_pretrained_path"]
