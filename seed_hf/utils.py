"""Helpers shared by the writers of seed_hf: nothing is half-written, nothing is replaced without being asked."""

import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

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


__all__ = ["atomic_output_dir", "bundled_model_card", "check_output_dir", "write_model_card"]
