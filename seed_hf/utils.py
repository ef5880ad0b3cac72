"""Helpers shared by the writers of seed_hf: nothing is half-written, nothing is replaced without being asked."""

import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from huggingface_hub import get_hf_file_metadata, hf_hub_url, is_offline_mode, try_to_load_from_cache
from huggingface_hub.errors import HfHubHTTPError, HFValidationError, RepositoryNotFoundError
from huggingface_hub.utils import httpx, validate_repo_id

logger = logging.getLogger(__name__)

# The model cards live in the source tree beside the package (model_cards/), where the conversion scripts run.
MODEL_CARDS_DIR = Path(__file__).resolve().parent.parent / "model_cards"


def check_output_dir(output_dir: str | os.PathLike, overwrite: bool) -> Path:
    """Raise `FileExistsError` when `output_dir` exists and `overwrite` is off; call before any expensive work."""
    output_dir = Path(output_dir)
    if output_dir.exists() and not overwrite:
        raise FileExistsError(f"{output_dir} exists; pass overwrite=True (--overwrite) to replace it")
    return output_dir


@contextmanager
def atomic_output_dir(output_dir: str | os.PathLike, overwrite: bool = False) -> Iterator[Path]:
    """
    Yield an empty staging folder beside `output_dir`. When the block ends without error the staging folder takes
    the place of `output_dir`; a replaced folder is deleted only once the new one is in place. On error nothing at
    `output_dir` changes and the staging folder is removed.
    """
    output_dir = check_output_dir(output_dir, overwrite)
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.", suffix=".partial", dir=output_dir.parent))
    try:
        yield staging
        if output_dir.exists():
            retired = staging.with_name(staging.name + ".old")
            output_dir.rename(retired)
            staging.rename(output_dir)
            shutil.rmtree(retired)
        else:
            staging.rename(output_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


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
    "atomic_output_dir",
    "bundled_model_card",
    "check_output_dir",
    "check_pretrained_source",
    "write_model_card",
]
