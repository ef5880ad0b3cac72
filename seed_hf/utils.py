"""Helpers shared by the writers of seed_hf: nothing is half-written, nothing is replaced without being asked."""

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


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


__all__ = ["atomic_output_dir", "check_output_dir"]
