"""The shared writer: `check_output_dir` and `atomic_output_dir` (what may be replaced, atomic swaps, recovery)."""

import json
import os
from pathlib import Path

import pytest

from seed_hf import SeedOPTConfig, SeedVisionTokenizerConfig, utils
from seed_hf.utils import (
    TOKENIZE_SUMMARY_FILE,
    atomic_output_dir,
    check_output_dir,
    folder_lock,
    is_seed_hf_output,
    looks_like_local_path,
    write_atomic,
)

# One file of each kind of folder seed_hf writes, as the writers write it.
SEED_HF_FOLDERS = {
    "tokenizer": ("config.json", {"model_type": "seed_vision_tokenizer"}),
    "seed-opt": ("config.json", {"model_type": "seed_opt"}),
    "seed-opt-tokenizer": ("tokenizer_config.json", {"tokenizer_class": "SeedOPTTokenizer"}),
    "decode": ("model_index.json", {"_class_name": "SeedDecodePipeline"}),
    "decode-remote-code": ("model_index.json", {"_class_name": ["pipeline_seed_decode", "SeedDecodePipeline"]}),
    "tokenized": (TOKENIZE_SUMMARY_FILE, {"read": 1}),
}


def write_output(staging: Path, text: str) -> None:
    (staging / "config.json").write_text(json.dumps({"model_type": "seed_vision_tokenizer"}))
    (staging / "weights.txt").write_text(text)


def test_model_types_are_the_configs():
    assert utils.SEED_MODEL_TYPES == (SeedVisionTokenizerConfig.model_type, SeedOPTConfig.model_type)


@pytest.mark.parametrize("kind", sorted(SEED_HF_FOLDERS))
def test_overwrite_replaces_a_folder_seed_hf_wrote(tmp_path, kind):
    output = tmp_path / kind
    output.mkdir()
    name, content = SEED_HF_FOLDERS[kind]
    (output / name).write_text(json.dumps(content))
    assert is_seed_hf_output(output)
    with atomic_output_dir(output, overwrite=True) as staging:
        write_output(staging, "new")
    assert (output / "weights.txt").read_text() == "new"


def test_overwrite_refuses_any_other_folder(tmp_path):
    thesis = tmp_path / "thesis"
    thesis.mkdir()
    (thesis / "thesis.tex").write_text("precious")
    (thesis / "config.json").write_text(json.dumps({"model_type": "opt"}))  # someone else's model
    for overwrite in (False, True):  # said at once, not only after the user adds --overwrite
        with pytest.raises(FileExistsError, match="is not a folder seed_hf wrote.*choose another output or remove it"):
            with atomic_output_dir(thesis, overwrite) as staging:
                write_output(staging, "new")
    assert sorted(path.name for path in thesis.iterdir()) == ["config.json", "thesis.tex"]
    assert sorted(path.name for path in tmp_path.iterdir()) == ["thesis"]  # no staging folder left

    empty = tmp_path / "empty"  # an empty folder holds nothing to lose
    empty.mkdir()
    with atomic_output_dir(empty, overwrite=True) as staging:
        write_output(staging, "new")
    assert (empty / "weights.txt").read_text() == "new"


def test_overwrite_refuses_a_file_or_a_symbolic_link(tmp_path):
    seed_folder = tmp_path / "model"
    with atomic_output_dir(seed_folder) as staging:
        write_output(staging, "old")
    file, link, broken = tmp_path / "file", tmp_path / "link", tmp_path / "broken"
    file.write_text("precious")
    link.symlink_to(seed_folder)
    broken.symlink_to(tmp_path / "missing")
    for path, kind in ((file, "a file"), (link, "a symbolic link"), (broken, "a symbolic link")):
        for overwrite in (False, True):
            with pytest.raises(FileExistsError, match=f"is {kind}, not a folder seed_hf wrote"):
                check_output_dir(path, overwrite)
    assert file.read_text() == "precious" and link.resolve() == seed_folder and broken.is_symlink()
    assert (seed_folder / "weights.txt").read_text() == "old"


def test_replacement_swaps_in_one_step(tmp_path, monkeypatch):
    """The earlier output is not renamed away first (which leaves a moment with no output): the two are swapped."""
    output = tmp_path / "model"
    with atomic_output_dir(output) as staging:
        write_output(staging, "old")
    rename = Path.rename

    def rename_no_output_away(path, target):
        assert Path(path) != output, "the output was moved away before the new one was in place"
        return rename(path, target)

    monkeypatch.setattr(Path, "rename", rename_no_output_away)
    with atomic_output_dir(output, overwrite=True) as staging:
        write_output(staging, "new")
    assert (output / "weights.txt").read_text() == "new"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["model"]


def test_later_run_restores_an_output_left_missing_by_a_kill(tmp_path, monkeypatch):
    """Without a one-step swap (older kernels), a kill between the two renames is put right by the next run."""
    output = tmp_path / "model"
    with atomic_output_dir(output) as staging:
        write_output(staging, "old")
    monkeypatch.setattr(utils, "_exchange", lambda first, second: False)
    rename = Path.rename

    def killed_before_second_rename(path, target):
        if Path(target) == output:
            raise KeyboardInterrupt
        return rename(path, target)

    monkeypatch.setattr(Path, "rename", killed_before_second_rename)
    with pytest.raises(KeyboardInterrupt):
        with atomic_output_dir(output, overwrite=True) as staging:
            write_output(staging, "new")
    monkeypatch.undo()
    assert not output.exists()
    [retired] = tmp_path.iterdir()
    assert retired.name.startswith(".model.") and retired.name.endswith(".partial.old")

    # Staging folders of killed runs pile up no more; a live writer's (locked) is left alone.
    dead, live = tmp_path / ".model.0123456789abcdef.partial", tmp_path / ".model.fedcba9876543210.partial"
    dead.mkdir()
    live.mkdir()
    unrelated = tmp_path / ".model.backup.partial"
    unrelated.mkdir()
    with folder_lock(live), pytest.raises(FileExistsError, match="exists; pass overwrite=True"):
        check_output_dir(output, overwrite=False)
    assert (output / "weights.txt").read_text() == "old"
    assert sorted(path.name for path in tmp_path.iterdir()) == sorted([live.name, unrelated.name, "model"])

    # Uninterrupted, the fallback too leaves the new output and nothing beside it.
    live.rmdir()
    monkeypatch.setattr(utils, "_exchange", lambda first, second: False)
    with atomic_output_dir(output, overwrite=True) as staging:
        write_output(staging, "new")
    assert (output / "weights.txt").read_text() == "new"
    assert sorted(path.name for path in tmp_path.iterdir()) == [unrelated.name, "model"]


def test_output_appearing_during_the_work_is_not_replaced(tmp_path):
    output = tmp_path / "model"
    with pytest.raises(FileExistsError, match="is not a folder seed_hf wrote"):
        with atomic_output_dir(output) as staging:
            write_output(staging, "new")
            output.mkdir()
            (output / "notes.txt").write_text("precious")
    assert sorted(path.name for path in tmp_path.iterdir()) == ["model"]
    assert (output / "notes.txt").read_text() == "precious"


def test_outputs_honour_the_umask(tmp_path):
    previous = os.umask(0o022)
    try:
        with atomic_output_dir(tmp_path / "model") as staging:
            write_output(staging, "new")
    finally:
        os.umask(previous)
    assert (tmp_path / "model").stat().st_mode & 0o777 == 0o755
    assert (tmp_path / "model" / "weights.txt").stat().st_mode & 0o777 == 0o644


def test_write_atomic_honours_the_umask_and_leaves_nothing_when_it_fails(tmp_path):
    """The one file writer (tokenize's records, evaluate's files, reconstruct's PNGs)."""
    previous = os.umask(0o022)
    try:
        write_atomic(tmp_path / "picture.png", lambda temporary: temporary.write_bytes(b"new"))
    finally:
        os.umask(previous)
    assert (tmp_path / "picture.png").stat().st_mode & 0o777 == 0o644

    def write_then_fail(temporary):
        temporary.write_bytes(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_atomic(tmp_path / "picture.png", write_then_fail)
    assert (tmp_path / "picture.png").read_bytes() == b"new"
    assert [path.name for path in tmp_path.iterdir()] == ["picture.png"]


def test_folder_lock_is_exclusive(tmp_path):
    with folder_lock(tmp_path):
        with pytest.raises(BlockingIOError):
            with folder_lock(tmp_path):
                pass
    with folder_lock(tmp_path):  # released at the end of the block
        pass


@pytest.mark.parametrize("name", ["photoz/", "./data", "../data", "/data", "~/data", "a/b/c"])
def test_local_looking_paths(name):
    assert looks_like_local_path(name)


@pytest.mark.parametrize("name", ["photoz", "org/dataset"])
def test_hub_ids_do_not_look_local(name):
    assert not looks_like_local_path(name)
