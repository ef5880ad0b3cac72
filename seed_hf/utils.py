"""
Helpers shared by the writers of seed_hf: nothing is half-written, nothing is replaced without being asked, and only
a folder seed_hf wrote is ever replaced.
"""

import ctypes
import errno
import fcntl
import json
import logging
import os
import re
import secrets
import shutil
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from huggingface_hub import get_hf_file_metadata, hf_hub_url, is_offline_mode, try_to_load_from_cache
from huggingface_hub.errors import HfHubHTTPError, HFValidationError, RepositoryNotFoundError
from huggingface_hub.utils import httpx, validate_repo_id

logger = logging.getLogger(__name__)

# The model cards live in the source tree beside the package (model_cards/), where the conversion scripts run.
MODEL_CARDS_DIR = Path(__file__).resolve().parent.parent / "model_cards"
# Written by `seed-hf tokenize` into its output, beside the dataset.
TOKENIZE_SUMMARY_FILE = "tokenize_summary.json"
# `seed-hf tokenize --output-format`: one dataset merged with `save_to_disk`, or the shards kept as parquet files.
OUTPUT_FORMATS = ("dataset", "parquet")
# What names the folders seed_hf writes (see `is_seed_hf_output`). Literals, not imports: this module is copied
# beside the SEED-OPT tokenizer's code into saved folders, which should not need more of seed_hf.
SEED_MODEL_TYPES = ("seed_vision_tokenizer", "seed_opt")
SEED_TOKENIZER_CLASS = "SeedOPTTokenizer"
SEED_PIPELINE_CLASS = "SeedDecodePipeline"
# renameat2(2) arguments: paths relative to the current directory, and swap the two paths.
_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


def _read_json(path: Path) -> dict:
    """The JSON object in `path`; `{}` when the file is missing, unreadable or holds something else."""
    try:
        content = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return content if isinstance(content, dict) else {}


def is_seed_hf_output(folder: str | os.PathLike) -> bool:
    """
    Whether `folder` is one seed_hf writes, recognised by the file that names what it holds: a SEED tokenizer's or
    SEED-OPT's `config.json`, a SEED-OPT `tokenizer_config.json`, a SEED decode pipeline's `model_index.json`, or the
    summary of `seed-hf tokenize`. Only such folders (or empty ones) are replaced by `overwrite`.
    """
    folder = Path(folder)
    pipeline_class = _read_json(folder / "model_index.json").get("_class_name")
    if isinstance(pipeline_class, list):  # [module, class] in a folder that carries its code
        pipeline_class = pipeline_class[-1]
    return (
        (folder / TOKENIZE_SUMMARY_FILE).is_file()
        or _read_json(folder / "config.json").get("model_type") in SEED_MODEL_TYPES
        or _read_json(folder / "tokenizer_config.json").get("tokenizer_class") == SEED_TOKENIZER_CLASS
        or pipeline_class == SEED_PIPELINE_CLASS
    )


def looks_like_local_path(name: str) -> bool:
    """Whether a name given on a command line can only mean a local path, not a Hub id (`org/name`)."""
    return name.startswith((".", "/", "~")) or name.endswith("/") or name.count("/") > 1


@contextmanager
def folder_lock(folder: str | os.PathLike) -> Iterator[None]:
    """
    Hold an exclusive `flock` on `folder` for the block, which tells other processes that a live one is using it (the
    lock ends with the process, however it ends). Raises `BlockingIOError` at once when another process holds it.
    """
    descriptor = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        yield
    finally:
        os.close(descriptor)  # also releases the lock


def _leftover_pattern(output_dir: Path) -> re.Pattern:
    """Names of what a writer of `output_dir` puts beside it: `.NAME.<16 hex>.partial`, and `...partial.old`."""
    return re.compile(rf"\.{re.escape(output_dir.name)}\.[0-9a-f]{{16}}\.partial(\.old)?")


def _recover_interrupted(output_dir: Path) -> None:
    """
    Put back or delete what a killed writer left beside `output_dir`: when `output_dir` is missing, a retired
    `.NAME.*.partial.old` (the earlier output, moved aside just before the kill) becomes `output_dir` again; other
    leftovers (unfinished staging folders, retired outputs already replaced) are deleted. What a live writer holds
    (see [`folder_lock`]) is left alone.
    """
    if not output_dir.parent.is_dir():
        return
    pattern = _leftover_pattern(output_dir)
    leftovers = [
        path
        for path in output_dir.parent.iterdir()
        if pattern.fullmatch(path.name) and path.is_dir() and not path.is_symlink()
    ]
    # The retired outputs first, the newest first: the newest is the one to restore.
    leftovers.sort(key=lambda path: (path.suffix == ".old", path.stat().st_mtime), reverse=True)
    for leftover in leftovers:
        try:
            with folder_lock(leftover):
                if leftover.suffix == ".old" and not (output_dir.exists() or output_dir.is_symlink()):
                    leftover.rename(output_dir)
                    logger.warning("Restored %s, which an interrupted run had left at %s", output_dir, leftover)
                else:
                    shutil.rmtree(leftover)
                    logger.info("Deleted %s, left by an interrupted run", leftover)
        except (BlockingIOError, FileNotFoundError):  # a live writer's, or already handled by another process
            continue


def check_output_dir(output_dir: str | os.PathLike, overwrite: bool) -> Path:
    """
    Raise `FileExistsError` unless `output_dir` may be written: it must not exist, or `overwrite` is on and it is an
    empty folder or one seed_hf wrote ([`is_seed_hf_output`]); never a file or a symbolic link. First restores or
    deletes what an interrupted writer left beside it. Call before any expensive work.
    """
    output_dir = Path(output_dir)
    _recover_interrupted(output_dir)
    if output_dir.is_symlink() or (output_dir.exists() and not output_dir.is_dir()):
        kind = "a symbolic link" if output_dir.is_symlink() else "a file"
        raise FileExistsError(
            f"{output_dir} exists and is {kind}, not a folder seed_hf wrote, so it is never replaced: "
            "choose another output or remove it yourself"
        )
    if not output_dir.exists():
        return output_dir
    if any(output_dir.iterdir()) and not is_seed_hf_output(output_dir):
        raise FileExistsError(
            f"{output_dir} exists and is not a folder seed_hf wrote (it has no SEED config.json, "
            f"tokenizer_config.json, model_index.json or {TOKENIZE_SUMMARY_FILE}), so it is never replaced, not even "
            "with --overwrite: choose another output or remove it yourself"
        )
    if not overwrite:
        raise FileExistsError(f"{output_dir} exists; pass overwrite=True (--overwrite) to replace it")
    return output_dir


def _exchange(first: Path, second: Path) -> bool:
    """Swap two existing paths in one step (Linux `renameat2(RENAME_EXCHANGE)`); `False` where the system cannot."""
    renameat2 = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None) if sys.platform == "linux" else None
    if renameat2 is None:
        return False
    if renameat2(_AT_FDCWD, os.fsencode(first), _AT_FDCWD, os.fsencode(second), _RENAME_EXCHANGE) == 0:
        return True
    error = ctypes.get_errno()
    if error in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):  # an old kernel or a file system without it
        return False
    raise OSError(error, os.strerror(error), str(first), None, str(second))


def _move_into_place(staging: Path, output_dir: Path) -> None:
    """
    Make `staging` the new `output_dir`; an earlier `output_dir` ends at `staging` (swapped in one step) or, where
    the system cannot swap, at `staging.old` (deleted next, or restored by a later run when a kill came between the
    two renames).
    """
    if not output_dir.exists():
        staging.rename(output_dir)
    elif not _exchange(staging, output_dir):
        retired = staging.with_name(staging.name + ".old")
        with folder_lock(output_dir):  # so that no other run restores it while it is moved aside
            output_dir.rename(retired)
            staging.rename(output_dir)
        shutil.rmtree(retired)


@contextmanager
def atomic_output_dir(output_dir: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """
    Yield an empty staging folder beside `output_dir` (`.NAME.<random>.partial`). When the block ends without error,
    the staging folder takes the place of `output_dir` in one step and a replaced folder is deleted afterwards, so
    `output_dir` is at no moment missing. On error nothing at `output_dir` changes and the staging folder is removed;
    what a killed run leaves is put right by the next [`check_output_dir`]. Folders and files honour the umask, as
    `save_pretrained`'s do. Raises `FileExistsError` as [`check_output_dir`], before and again after the block.
    """
    output_dir = check_output_dir(output_dir, overwrite)
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = output_dir.with_name(f".{output_dir.name}.{secrets.token_hex(8)}.partial")
    staging.mkdir()  # mode 0o777 less the umask (`tempfile.mkdtemp` would make it private)
    try:
        with folder_lock(staging):  # so that no other run takes it for a leftover
            yield staging
            check_output_dir(output_dir, overwrite)  # the output may have appeared or changed meanwhile
            _move_into_place(staging, output_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def write_atomic(path: str | os.PathLike, write) -> None:
    """
    Write `path` through `write(temporary_path)` beside it, then rename it into place: a killed run never leaves a
    half-written `path`, a failed write removes the temporary file, and permissions follow the umask.
    """
    path = Path(path)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(temporary)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def bundled_model_card(name: str) -> Path | None:
    """`model_cards/<name>` of this source tree; `None`, with a warning, in an installation that lacks it."""
    card = MODEL_CARDS_DIR / name
    if card.is_file():
        return card
    logger.warning("Model card %s not found (a source checkout has it): the folder gets no README.md", card)
    return None


def write_model_card(card: str | os.PathLike | None, folder: str | os.PathLike) -> None:
    """Copy `card` into `folder` as its README.md (the Hub's model card); nothing when `card` is None."""
    if card is not None:
        shutil.copyfile(card, Path(folder) / "README.md")


def check_pretrained_source(
    source: str | os.PathLike,
    what: str,
    filename: str,
    revision: str | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> bool:
    """
    Check that `source`, a local folder or a Hub repository id, can be loaded now, before a `from_pretrained` that
    would wait minutes on retries against an unreachable Hub; returns whether to load it with `local_files_only=True`
    (a Hub id that is cached while the Hub is offline or out of reach).

    Args:
        source (`str` or `os.PathLike`):
            The folder or Hub id.
        what (`str`):
            What `source` should be, for the error messages (e.g. `"--base (an OPT tokenizer)"`).
        filename (`str`):
            A file every such repository holds (e.g. `"config.json"`), used to probe the Hub and its cache.
        revision (`str`, *optional*):
            The Hub revision to probe.
        cache_dir (`str` or `os.PathLike`, *optional*):
            The Hub cache to look in, if not the default one.

    Raises:
        `FileNotFoundError`: for a path that is not a Hub id and does not exist.
        `NotADirectoryError`: for a file.
        `OSError`: for a Hub id that does not exist, or that is neither reachable nor cached.
    """
    path = Path(source).expanduser()
    if path.is_dir():
        return False
    if path.exists():
        raise NotADirectoryError(f"{what}: {source} is a file, expected a folder or a Hub repository id")
    try:
        validate_repo_id(str(source))
    except HFValidationError:
        raise FileNotFoundError(f"{what}: no such file or folder: {source}") from None
    cached = isinstance(try_to_load_from_cache(str(source), filename, cache_dir=cache_dir, revision=revision), str)
    if is_offline_mode():
        reason = "HF_HUB_OFFLINE is set"
    else:
        try:
            # One request without retries: an unreachable Hub fails here in milliseconds, not minutes.
            get_hf_file_metadata(hf_hub_url(str(source), filename, revision=revision), retry_on_errors=False)
            return False
        except RepositoryNotFoundError:
            raise OSError(
                f"{what}: {source} is neither a local folder nor a Hub repository (or it is private: log in)"
            ) from None
        except HfHubHTTPError:
            return False  # the Hub answered (a gated repository, a missing probe file): from_pretrained reports it
        except httpx.TransportError as error:
            reason = f"the Hub cannot be reached ({error})"
    if cached:
        return True
    raise OSError(
        f"{what}: {source} is not a local folder, and it is not in the Hub cache while {reason}; download it first "
        f"(hf download {source}) or pass a local folder"
    )


__all__ = [
    "OUTPUT_FORMATS",
    "TOKENIZE_SUMMARY_FILE",
    "atomic_output_dir",
    "bundled_model_card",
    "check_output_dir",
    "check_pretrained_source",
    "folder_lock",
    "is_seed_hf_output",
    "looks_like_local_path",
    "write_atomic",
    "write_model_card",
]
