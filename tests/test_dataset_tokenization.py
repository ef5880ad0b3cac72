"""Dataset tokenization: `tokenize_dataset` (a cached Dataset.map) and `seed-hf tokenize` (sharded, resumable)."""

import io
import json
import os
import subprocess
import sys

import datasets
import huggingface_hub
import numpy as np
import PIL.Image
import pytest
import torch
from datasets import Dataset, Features, Value, load_from_disk
from datasets import Image as ImageFeature

from seed_hf import SeedImageProcessor, dataset_tokenization
from seed_hf.cli import main
from seed_hf.dataset_tokenization import (
    ERRORS_FILE,
    _ShardStore,
    image_source,
    tokenize_dataset,
    tokenize_to_disk,
)
from seed_hf.utils import TOKENIZE_SUMMARY_FILE, folder_lock

from conftest import REPO_ROOT, tiny_tokenizer

NUM_GOOD = 10
BAD_FILES = {
    "notes.txt": "UnidentifiedImageError",
    "empty.jpg": "UnidentifiedImageError",
    "half.png": "truncated",
}


def png_bytes(seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (30 + seed, 40, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    PIL.Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture
def image_folder(tmp_path):
    """NUM_GOOD PNGs (some in a subfolder), a text file, an empty file and a truncated PNG."""
    folder = tmp_path / "images"
    (folder / "sub").mkdir(parents=True)
    for index in range(NUM_GOOD):
        (folder / ("sub" if index % 3 == 0 else "") / f"{index:02d}.png").write_bytes(png_bytes(index))
    (folder / "notes.txt").write_text("not an image")
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "half.png").write_bytes(png_bytes(99)[:200])
    (folder / ".hidden.png").write_bytes(png_bytes(98))  # hidden files are not part of the input
    return folder


def tokenize_cli(*args) -> int:
    return main(["tokenize", *map(str, args)])


def rows(output) -> dict:
    return load_from_disk(str(output)).to_dict()


def errors(output) -> list[dict]:
    return [json.loads(line) for line in (output / ERRORS_FILE).read_text().splitlines()]


def test_folder_with_bad_files_gives_summary_and_errors_file(model_dir, image_folder, tmp_path, capsys):
    output = tmp_path / "codes"
    assert tokenize_cli(image_folder, "--model", model_dir, "-o", output, "--shard-size", 4, "--batch-size", 3) == 0

    printed = capsys.readouterr().out
    assert f"read {NUM_GOOD + len(BAD_FILES)}, tokenized {NUM_GOOD}, failed {len(BAD_FILES)}" in printed
    summary = json.loads((output / TOKENIZE_SUMMARY_FILE).read_text())
    assert (summary["read"], summary["tokenized"], summary["failed"]) == (13, 10, 3)
    reasons = {error["row_id"]: error["reason"] for error in errors(output)}
    assert reasons.keys() == BAD_FILES.keys()
    for name, expected in BAD_FILES.items():
        assert expected in reasons[name]

    dataset = load_from_disk(str(output))
    good = sorted(path.relative_to(image_folder).as_posix() for path in image_folder.rglob("*.png"))
    good = [name for name in good if name not in BAD_FILES and not name.startswith(".")]
    assert dataset["row_id"] == good
    assert dataset.features["codes"].length == 32
    model = tiny_tokenizer()
    processor = SeedImageProcessor.from_pretrained(model_dir)
    images = [PIL.Image.open(image_folder / name) for name in good]
    expected = model.encode(processor(images, return_tensors="pt").pixel_values)
    assert torch.equal(torch.tensor(dataset["codes"]), expected)


def test_two_processes_equal_one_process(model_dir, image_folder, tmp_path):
    single, parallel = tmp_path / "single", tmp_path / "parallel"
    assert tokenize_cli(image_folder, "--model", model_dir, "-o", single, "--shard-size", 2, "--batch-size", 2) == 0

    env = {**os.environ, "OMP_NUM_THREADS": "1", "TMPDIR": str(tmp_path), "HF_HOME": str(tmp_path / "hf")}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    command += ["-m", "seed_hf.cli", "tokenize", str(image_folder), "--model", str(model_dir), "-o", str(parallel)]
    command += ["--shard-size", "2", "--batch-size", "2"]
    result = subprocess.run(command, env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "on 2 process(es)" in result.stdout

    assert rows(parallel) == rows(single)
    assert errors(parallel) == errors(single)


def run_library(source, output, model_dir, **kwargs):
    model = tiny_tokenizer()
    processor = SeedImageProcessor.from_pretrained(model_dir)
    kwargs = {"shard_size": 2, "batch_size": 2, "progress": False, **kwargs}
    return tokenize_to_disk(source, output, model, processor, **kwargs)


def test_resume_after_interruption_equals_uninterrupted(model_dir, image_folder, tmp_path, monkeypatch):
    source = image_source(str(image_folder))
    uninterrupted = tmp_path / "uninterrupted"
    run_library(source, uninterrupted, model_dir)

    # Interrupt the run deterministically after 3 of its 7 shards.
    output = tmp_path / "resumed"
    write = _ShardStore.write
    written = []

    def write_then_stop(store, shard, table, record):
        if len(written) == 3:
            raise KeyboardInterrupt
        write(store, shard, table, record)
        written.append(shard)

    monkeypatch.setattr(_ShardStore, "write", write_then_stop)
    with pytest.raises(KeyboardInterrupt):
        run_library(source, output, model_dir)
    monkeypatch.undo()
    work_dir = tmp_path / "resumed.partial"
    assert not output.exists()
    assert sorted(path.name for path in (work_dir / "manifest").iterdir()) == [
        "00000.json",
        "00001.json",
        "00002.json",
    ]
    (work_dir / "shards" / ".00003.arrow.123.tmp").write_bytes(b"half a shard from a killed process")

    # Other settings refuse to mix with the partial run.
    with pytest.raises(FileExistsError, match="batch_size"):
        run_library(source, output, model_dir, batch_size=1)

    summary = run_library(source, output, model_dir)
    assert (summary.shards, summary.shards_resumed) == (7, 3)
    assert (summary.read, summary.tokenized, summary.failed) == (13, 10, 3)
    assert rows(output) == rows(uninterrupted)
    assert errors(output) == errors(uninterrupted)
    assert not work_dir.exists()


def test_refuses_to_overwrite_without_flag(model_dir, image_folder, tmp_path, capsys, monkeypatch):
    output = tmp_path / "codes"
    arguments = [image_folder, "--model", model_dir, "-o", output]
    assert tokenize_cli(*arguments) == 0
    assert tokenize_cli(*arguments) == 1
    assert "(--overwrite)" in capsys.readouterr().err
    assert tokenize_cli(*arguments, "--overwrite") == 0

    # an overwrite that fails midway keeps the earlier output: it is replaced only by a complete new one
    def disk_full(*args, **kwargs):
        raise OSError("No space left on device")

    monkeypatch.setattr(dataset_tokenization, "_tokenize_shards", disk_full)
    assert tokenize_cli(*arguments, "--overwrite") == 1
    assert load_from_disk(str(output)).num_rows > 0
    monkeypatch.undo()

    unrelated = tmp_path / "unrelated"
    unrelated.mkdir()
    (unrelated / "keep.txt").write_text("precious")
    assert tokenize_cli(image_folder, "--model", model_dir, "-o", unrelated, "--overwrite") == 1
    assert "is not a folder seed_hf wrote" in capsys.readouterr().err
    assert (unrelated / "keep.txt").exists()

    assert tokenize_cli(image_folder, "--model", model_dir, "-o", image_folder / "codes") == 1
    assert "inside the input folder" in capsys.readouterr().err


def test_file_list_input(model_dir, image_folder, tmp_path):
    listing = tmp_path / "list.txt"
    listing.write_text(f"images/01.png\n\n{image_folder / 'sub' / '00.png'}\nimages/missing.png\n")
    output = tmp_path / "codes"
    assert tokenize_cli(listing, "--model", model_dir, "-o", output) == 0
    assert load_from_disk(str(output))["row_id"] == ["images/01.png", str(image_folder / "sub" / "00.png")]
    assert errors(output)[0]["row_id"] == "images/missing.png"
    assert "FileNotFoundError" in errors(output)[0]["reason"]


def image_dataset(tmp_path) -> Dataset:
    """A file-backed dataset (so maps are cached) of 5 images, one of them broken, and captions."""
    cells = [{"bytes": png_bytes(seed), "path": None} for seed in range(5)]
    cells[2] = {"bytes": b"GIF89a broken", "path": None}
    features = Features({"image": ImageFeature(), "caption": Value("string")})
    dataset = Dataset.from_dict({"image": cells, "caption": [f"caption {i}" for i in range(5)]}, features=features)
    dataset.save_to_disk(str(tmp_path / "dataset"))
    return load_from_disk(str(tmp_path / "dataset"))


def test_dataset_input_carries_text_columns(model_dir, tmp_path):
    image_dataset(tmp_path)
    output = tmp_path / "codes"
    assert tokenize_cli(tmp_path / "dataset", "--model", model_dir, "-o", output, "--text-column", "caption") == 0
    dataset = load_from_disk(str(output))
    assert dataset.column_names == ["row_id", "codes", "caption"]
    assert dataset["row_id"] == [0, 1, 3, 4]
    assert dataset["caption"] == ["caption 0", "caption 1", "caption 3", "caption 4"]
    assert errors(output)[0]["row_id"] == 2

    assert tokenize_cli(tmp_path / "dataset", "--model", model_dir, "-o", tmp_path / "x", "--image-column", "img") == 1


def test_tokenize_dataset_adds_codes_and_caches(tmp_path, model_dir):
    dataset = image_dataset(tmp_path)
    model = tiny_tokenizer()
    processor = SeedImageProcessor.from_pretrained(model_dir)
    calls = []
    encode = model.encode
    model.encode = lambda pixel_values: calls.append(len(pixel_values)) or encode(pixel_values)

    tokenized = tokenize_dataset(dataset, model, processor, batch_size=2)
    assert tokenized.column_names == ["image", "caption", "codes", "error"]
    assert sum(calls) == 4
    assert tokenized["codes"][2] is None and "UnidentifiedImageError" in tokenized["error"][2]
    good = [0, 1, 3, 4]
    expected = encode(processor([dataset[i]["image"] for i in good], return_tensors="pt").pixel_values)
    assert torch.equal(torch.tensor([tokenized["codes"][i] for i in good]), expected)

    calls.clear()
    again = tokenize_dataset(dataset, model, processor, batch_size=2)
    assert calls == []
    assert again._fingerprint == tokenized._fingerprint
    assert again.cache_files == tokenized.cache_files
    assert again.to_dict() == tokenized.to_dict()

    # Other weights are another fingerprint: nothing stale is reused.
    other = tokenize_dataset(dataset, tiny_tokenizer(seed=1), processor, batch_size=2)
    assert other._fingerprint != tokenized._fingerprint

    with pytest.raises(ValueError, match="row 2"):
        tokenize_dataset(dataset, model, processor, error_column=None, load_from_cache_file=False)


def test_encode_runs_no_part_of_the_decoder():
    model = tiny_tokenizer()
    called = []
    for name, module in model.decoder.named_modules():
        module.register_forward_hook(lambda module, args, output, name=name: called.append(name))

    codes = model.encode(torch.randn(2, 3, 28, 28))
    assert called == []
    model.embed_codes(codes)
    assert "blocks" in called and "reverse_qformer" in called  # the hooks do see the decoder when it runs


def test_odd_folder_entries_are_listed_and_the_run_goes_on(model_dir, image_folder, tmp_path):
    """Non-UTF-8 names, broken links, FIFOs and link loops go to errors.jsonl; linked folders and files are read."""
    other = tmp_path / "other"
    other.mkdir()
    (other / "x.png").write_bytes(png_bytes(50))
    (image_folder / "linked").symlink_to(other, target_is_directory=True)
    (image_folder / "alias.png").symlink_to(image_folder / "01.png")
    (image_folder / "sub" / "loop").symlink_to(image_folder, target_is_directory=True)
    (image_folder / "gone.png").symlink_to(tmp_path / "nowhere.png")
    os.mkfifo(image_folder / "pipe.png")  # opening it would block the run forever
    (image_folder / os.fsdecode(b"caf\xe9.png")).write_bytes(png_bytes(51))

    output = tmp_path / "codes"
    summary = run_library(image_source(str(image_folder)), output, model_dir)
    reasons = {error["row_id"]: error["reason"] for error in errors(output)}
    assert reasons.keys() == {*BAD_FILES, "sub/loop", "gone.png", "pipe.png", "caf\\xe9.png"}
    assert "loop" in reasons["sub/loop"]
    assert "broken symbolic link" in reasons["gone.png"]
    assert "not a regular file" in reasons["pipe.png"]
    assert "not valid UTF-8" in reasons["caf\\xe9.png"]
    row_ids = rows(output)["row_id"]
    assert {"linked/x.png", "alias.png"} <= set(row_ids)
    assert (summary.read, summary.tokenized) == (NUM_GOOD + len(BAD_FILES) + 6, NUM_GOOD + 2)

    # A FIFO named in a file list is not opened either.
    listing = tmp_path / "list.txt"
    listing.write_text("images/pipe.png\nimages/01.png\n")
    run_library(image_source(str(listing)), tmp_path / "from-list", model_dir)
    assert "not a regular file" in errors(tmp_path / "from-list")[0]["reason"]


def test_second_run_on_the_same_output_refuses_at_once(model_dir, image_folder, tmp_path, capsys):
    output = tmp_path / "codes"
    work_dir = tmp_path / "codes.partial"
    work_dir.mkdir()
    (work_dir / "run.json").write_text("{}")  # the first run's work, which the second must not touch
    with folder_lock(work_dir):  # as the first run's main process holds it
        for flags in ([], ["--overwrite"]):
            assert tokenize_cli(image_folder, "--model", model_dir, "-o", output, *flags) == 1
            assert f"another seed-hf tokenize is writing {output}" in capsys.readouterr().err
    assert [path.name for path in work_dir.iterdir()] == ["run.json"]
    assert not output.exists()


def test_clear_errors_for_wrong_model_and_missing_input(model_dir, image_folder, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    seed_opt, decode = tmp_path / "seed-opt", tmp_path / "decode"
    seed_opt.mkdir()
    (seed_opt / "config.json").write_text(json.dumps({"model_type": "seed_opt"}))
    decode.mkdir()
    (decode / "model_index.json").write_text(json.dumps({"_class_name": "SeedDecodePipeline"}))
    expected = {
        (image_folder, seed_opt): "is a SEED-OPT folder, not a SEED tokenizer folder",
        (image_folder, decode): "is a SeedDecodePipeline folder, not a SEED tokenizer folder",
        (image_folder, "./tokenizer"): "no such file or folder: ./tokenizer (expected a SEED tokenizer folder)",
        ("photoz/", model_dir): "No such file or folder: photoz/",
        ("./data", model_dir): "No such file or folder: ./data",
    }
    for (input_path, model), message in expected.items():
        assert tokenize_cli(input_path, "--model", model, "-o", tmp_path / "codes") == 1
        assert message in capsys.readouterr().err, message

    image_dataset(tmp_path)
    assert tokenize_cli("dataset", "--model", model_dir, "-o", "codes", "--image-column", "img") == 1
    assert "dataset has no column ['img']; its columns are ['image', 'caption']" in capsys.readouterr().err
    assert not (tmp_path / "codes").exists()


def test_progress_bar_honours_the_libraries_switches(model_dir, image_folder, tmp_path, capsys):
    source = image_source(str(image_folder))
    run_library(source, tmp_path / "shown", model_dir, progress=True)
    assert "tokenizing" in capsys.readouterr().err
    for library in (datasets.utils, huggingface_hub.utils):
        library.disable_progress_bars()
        try:
            run_library(source, tmp_path / library.__name__, model_dir, progress=True)
        finally:
            library.enable_progress_bars()
        assert "tokenizing" not in capsys.readouterr().err, library.__name__
