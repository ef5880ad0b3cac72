"""Web-scale tokenization: tar/parquet shards, streaming datasets, parquet output, Hub uploads, many nodes."""

import io
import json
import os
import socket
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import PIL.Image
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from datasets import Dataset, Features, Value, load_dataset, load_from_disk
from datasets import Image as ImageFeature
from huggingface_hub import HfApi

from seed_hf import SeedImageProcessor
from seed_hf.commands.tokenize import default_dtype
from seed_hf.dataset_tokenization import ERRORS_FILE, _ShardStore, image_source, tokenize_to_disk
from seed_hf.utils import TOKENIZE_SUMMARY_FILE
from seed_hf.webdataset_input import expand_shard_pattern, input_source, iter_tar_samples, streaming_source

from conftest import REPO_ROOT, tiny_tokenizer
from test_dataset_tokenization import tokenize_cli

SHARDS, SAMPLES_PER_SHARD = 3, 4
# Samples that fail, with what their reason says: a corrupt image, no image at all, a non-image extension.
BAD_SAMPLES = {"00010002": "UnidentifiedImageError", "00020000": "no image member", "00020003": "no image member"}


def image_bytes(seed: int, image_format: str) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (24 + seed, 36, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    PIL.Image.fromarray(pixels).save(buffer, format=image_format)
    return buffer.getvalue()


def add_member(archive: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    archive.addfile(info, io.BytesIO(data))


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    """
    img2dataset-style tar shards `shards/0000N.tar` (KEY.jpg/.png/.webp, KEY.txt, KEY.json) with three bad samples,
    and the same good images as files `folder/KEY.ext`, for the folder path to compare with.
    """
    root = tmp_path_factory.mktemp("web")
    (root / "shards").mkdir()
    (root / "folder").mkdir()
    for shard in range(SHARDS):
        with tarfile.open(root / "shards" / f"{shard:05d}.tar", "w") as archive:
            for sample in range(SAMPLES_PER_SHARD):
                key = f"{shard:04d}{sample:04d}"
                extension = ("jpg", "png", "webp")[sample % 3]
                image = image_bytes(shard * 10 + sample, {"jpg": "JPEG"}.get(extension, extension.upper()))
                if key == "00010002":
                    image = b"\xff\xd8 not really a jpeg"
                if key == "00020003":
                    extension = "pdf"
                if key != "00020000":
                    add_member(archive, f"{key}.{extension}", image)
                    if key not in BAD_SAMPLES:
                        (root / "folder" / f"{key}.{extension}").write_bytes(image)
                add_member(archive, f"{key}.txt", f"caption {key}".encode())
                add_member(archive, f"{key}.json", json.dumps({"url": f"http://x/{key}", "width": 36}).encode())
    return root


def errors(output: Path) -> list[dict]:
    return [json.loads(line) for line in (output / ERRORS_FILE).read_text().splitlines()]


def parquet_rows(output: Path) -> dict:
    return load_dataset(str(output), split="train").to_dict()


def codes_by_id(table: dict) -> dict:
    return dict(zip(table["row_id"], table["codes"]))


def run_library(source, output, model_dir, **kwargs):
    kwargs = {"batch_size": 3, "progress": False, **kwargs}
    return tokenize_to_disk(source, output, tiny_tokenizer(), SeedImageProcessor.from_pretrained(model_dir), **kwargs)


def test_expand_shard_pattern():
    assert expand_shard_pattern("s/{00008..00010}.tar") == ["s/00008.tar", "s/00009.tar", "s/00010.tar"]
    assert expand_shard_pattern("gs://b/{a,b}-{1..2}.tar") == [f"gs://b/{x}-{n}.tar" for x in "ab" for n in (1, 2)]
    assert expand_shard_pattern("one.tar") == ["one.tar"]
    with pytest.raises(ValueError, match="FIRST <= LAST"):
        expand_shard_pattern("s/{9..1}.tar")


def test_tar_samples_are_grouped_by_key(shards):
    with open(shards / "shards" / "00002.tar", "rb") as file:
        samples = list(iter_tar_samples(file))
    assert [key for key, _ in samples] == [f"0002{sample:04d}" for sample in range(SAMPLES_PER_SHARD)]
    assert sorted(samples[0][1]) == ["json", "txt"] and sorted(samples[3][1]) == ["json", "pdf", "txt"]


def test_tar_shards_equal_the_folder_path(model_dir, shards, tmp_path, capsys):
    """Codes equal the folder's for the same images; bad samples are listed; captions and metadata carried over."""
    output, folder_output = tmp_path / "from-tar", tmp_path / "from-folder"
    pattern = shards / "shards" / f"{{00000..{SHARDS - 1:05d}}}.tar"
    flags = ["--model", model_dir, "--batch-size", 3, "--metadata-columns", "url", "width"]
    assert tokenize_cli(pattern, "-o", output, "--output-format", "parquet", *flags) == 0
    assert "read 12, tokenized 9, failed 3" in capsys.readouterr().out
    assert tokenize_cli(shards / "folder", "-o", folder_output, "--model", model_dir) == 0

    names = sorted(path.name for path in (output / "data").iterdir())
    assert names == [f"train-{shard:05d}-of-{SHARDS:05d}.parquet" for shard in range(SHARDS)]
    tokenized = parquet_rows(output)
    good = [f"{s:04d}{i:04d}" for s in range(SHARDS) for i in range(SAMPLES_PER_SHARD)]
    good = [key for key in good if key not in BAD_SAMPLES]
    assert tokenized["row_id"] == good
    assert tokenized["caption"] == [f"caption {key}" for key in good]
    assert tokenized["url"] == [f"http://x/{key}" for key in good] and set(tokenized["width"]) == {"36"}
    from_folder = load_from_disk(str(folder_output))
    assert codes_by_id(tokenized) == {
        Path(name).stem: codes for name, codes in zip(from_folder["row_id"], from_folder["codes"])
    }
    reasons = {error["row_id"]: error["reason"] for error in errors(output)}
    assert reasons.keys() == BAD_SAMPLES.keys()
    for key, expected in BAD_SAMPLES.items():
        assert expected in reasons[key]
    assert "found .pdf, .txt, .json" in reasons["00020003"]
    summary = json.loads((output / TOKENIZE_SUMMARY_FILE).read_text())
    assert (summary["read"], summary["tokenized"], summary["failed"], summary["shards"]) == (12, 9, 3, SHARDS)


def test_kill_and_resume_equals_uninterrupted_and_workers_change_nothing(model_dir, shards, tmp_path, monkeypatch):
    source = input_source(str(shards / "shards" / "{00000..00002}.tar"))
    uninterrupted = tmp_path / "uninterrupted"
    run_library(source, uninterrupted, model_dir, output_format="parquet")

    write = _ShardStore.write

    def write_then_stop(store, shard, table, record):
        if shard == 1:
            raise KeyboardInterrupt  # killed while its second shard was being written
        write(store, shard, table, record)

    output = tmp_path / "resumed"
    monkeypatch.setattr(_ShardStore, "write", write_then_stop)
    with pytest.raises(KeyboardInterrupt):
        run_library(source, output, model_dir, output_format="parquet")
    monkeypatch.undo()
    assert sorted(path.name for path in (tmp_path / "resumed.partial" / "manifest").iterdir()) == ["00000.json"]

    summary = run_library(source, output, model_dir, output_format="parquet", num_workers=2)
    assert (summary.shards, summary.shards_resumed) == (SHARDS, 1)
    assert parquet_rows(output) == parquet_rows(uninterrupted)
    assert errors(output) == errors(uninterrupted)


def test_parquet_shards_with_image_bytes(model_dir, shards, tmp_path):
    """img2dataset's parquet layout: key, caption and the image bytes in a jpg column; one output shard per file."""
    (tmp_path / "parts").mkdir()
    for shard in range(2):
        keys = [f"{shard:04d}{sample:04d}" for sample in range(SAMPLES_PER_SHARD)]
        keys = [key for key in keys if key not in BAD_SAMPLES]
        images = [
            (shards / "folder" / f"{key}.{('jpg', 'png', 'webp')[int(key[-1]) % 3]}").read_bytes() for key in keys
        ]
        table = pa.table({"key": keys, "caption": [f"c{key}" for key in keys], "jpg": images})
        pq.write_table(table, tmp_path / "parts" / f"{shard}.parquet")
    output = tmp_path / "codes"
    source = input_source(str(tmp_path / "parts" / "{0..1}.parquet"), image_column="jpg", metadata_columns=["caption"])
    run_library(source, output, model_dir)
    tokenized = load_from_disk(str(output)).to_dict()
    reference = tmp_path / "reference"
    run_library(image_source(str(shards / "folder")), reference, model_dir)
    expected = {Path(name).stem: codes for name, codes in codes_by_id(load_from_disk(str(reference))).items()}
    assert tokenized["row_id"] == [key for key in expected if key < "0002"]
    assert codes_by_id(tokenized) == {key: expected[key] for key in tokenized["row_id"]}
    assert tokenized["caption"] == [f"c{key}" for key in tokenized["row_id"]]

    with pytest.raises(ValueError, match=r"has no column \['image'\]"):
        input_source(str(tmp_path / "parts" / "{0..1}.parquet"))
    with pytest.raises(FileNotFoundError, match="1 of the 3 shards"):
        input_source(str(tmp_path / "parts" / "{0..2}.parquet"), image_column="jpg")


def test_streaming_dataset_shard_by_shard(model_dir, shards, tmp_path):
    """A local IterableDataset stands for a Hub dataset in streaming mode: its shards become the output shards."""
    files = sorted((shards / "folder").iterdir())
    cells = [{"bytes": path.read_bytes(), "path": None} for path in files]
    cells[1] = {"bytes": b"GIF89a broken", "path": None}
    features = Features({"image": ImageFeature(), "text": Value("string")})
    dataset = Dataset.from_dict({"image": cells, "text": [path.stem for path in files]}, features=features)
    streamed = streaming_source(dataset.to_iterable_dataset(num_shards=3), "test set", metadata_columns=["text"])
    output = tmp_path / "codes"
    summary = run_library(streamed, output, model_dir, output_format="parquet")
    assert (summary.shards, summary.read, summary.failed) == (3, len(files), 1)
    tokenized = parquet_rows(output)
    assert tokenized["row_id"][:2] == ["00000/0", "00000/2"]
    assert errors(output) == [{"row_id": "00000/1", "reason": errors(output)[0]["reason"]}]
    reference = tmp_path / "reference"
    run_library(image_source(str(shards / "folder")), reference, model_dir)
    expected = {Path(name).stem: codes for name, codes in codes_by_id(load_from_disk(str(reference))).items()}
    assert dict(zip(tokenized["text"], tokenized["codes"])) == {key: expected[key] for key in tokenized["text"]}


def test_push_to_hub_uploads_each_shard_as_it_is_written(model_dir, shards, tmp_path, monkeypatch, capsys):
    events = []
    monkeypatch.setattr(HfApi, "create_repo", lambda self, repo_id, **kwargs: events.append(("create", repo_id)))

    def fake_upload_file(self, *, path_or_fileobj, path_in_repo, repo_id, repo_type, **kwargs):
        assert Path(path_or_fileobj).is_file() and repo_type == "dataset"
        events.append(("upload", path_in_repo))

    monkeypatch.setattr(HfApi, "upload_file", fake_upload_file)
    write = _ShardStore.write
    monkeypatch.setattr(
        _ShardStore, "write", lambda store, shard, *args: events.append(("write", shard)) or write(store, shard, *args)
    )
    pattern = shards / "shards" / "{00000..00002}.tar"
    output = tmp_path / "codes"
    arguments = [pattern, "--model", model_dir, "-o", output, "--push-to-hub", "org/codes"]
    assert tokenize_cli(*arguments) == 1
    assert "use output_format='parquet' (--output-format parquet)" in capsys.readouterr().err

    assert tokenize_cli(*arguments, "--output-format", "parquet") == 0
    uploads = [f"train-0000{shard}-of-00003.parquet" for shard in range(SHARDS)]
    assert events == [
        ("create", "org/codes"),
        *[event for shard in range(SHARDS) for event in (("write", shard), ("upload", f"data/{uploads[shard]}"))],
        ("upload", ERRORS_FILE),
        ("upload", TOKENIZE_SUMMARY_FILE),
    ]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_two_nodes_equal_one_process(model_dir, shards, tmp_path, monkeypatch):
    """
    Two torchrun "nodes" (one process each, c10d rendezvous on localhost) write what one process writes, resuming the
    work of an earlier run that died after its first shard.
    """
    pattern = str(shards / "shards" / "{00000..00002}.tar")
    arguments = [pattern, "--model", str(model_dir), "--output-format", "parquet", "--batch-size", "2"]
    single = tmp_path / "single"
    assert tokenize_cli(*arguments, "-o", single) == 0

    write = _ShardStore.write

    def write_then_die(store, shard, *args):
        if shard > 0:
            raise KeyboardInterrupt
        write(store, shard, *args)

    monkeypatch.setattr(_ShardStore, "write", write_then_die)
    assert tokenize_cli(*arguments, "-o", tmp_path / "nodes") == 130  # the command line's exit status when interrupted
    monkeypatch.undo()

    env = {**os.environ, "OMP_NUM_THREADS": "1", "TMPDIR": str(tmp_path), "HF_HOME": str(tmp_path / "hf")}
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1"]
    launcher += ["--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{free_port()}", "--rdzv-id", "tokenize"]
    command = ["-m", "seed_hf.cli", "tokenize", *arguments, "-o", str(tmp_path / "nodes")]
    nodes = [
        subprocess.Popen(
            [*launcher, "--node-rank", str(rank), *command],
            env=env,
            cwd=REPO_ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for rank in range(2)
    ]
    outputs = [node.communicate(timeout=120) for node in nodes]
    assert [node.returncode for node in nodes] == [0, 0], "\n".join(stderr[-3000:] for _, stderr in outputs)
    [printed] = [stdout for stdout, _ in outputs if "on 2 process(es)" in stdout]
    assert "resumed: 1 of 3 shards were done by an earlier run" in printed
    assert parquet_rows(tmp_path / "nodes") == parquet_rows(single)
    assert errors(tmp_path / "nodes") == errors(single)


def test_truncated_shard_keeps_the_rows_read_and_lists_the_rest(model_dir, shards, tmp_path):
    data = (shards / "shards" / "00000.tar").read_bytes()
    (tmp_path / "cut").mkdir()
    (tmp_path / "cut" / "0.tar").write_bytes(data[: len(data) // 2])
    output = tmp_path / "codes"
    summary = run_library(input_source(str(tmp_path / "cut" / "0.tar")), output, model_dir)
    assert summary.tokenized >= 1 and summary.failed == 1
    [error] = errors(output)
    assert error["row_id"] == str(tmp_path / "cut" / "0.tar")
    assert f"shard unreadable after {summary.tokenized} rows" in error["reason"]


def test_clear_errors_for_bad_shard_inputs(model_dir, shards, tmp_path, capsys):
    expected = {
        str(shards / "shards" / "{00000..00009}.tar"): "7 of the 10 shards",
        str(shards / "shards" / "{00002..00001}.tar"): "expected {FIRST..LAST}",
        str(tmp_path / "{a.tar,b.parquet}"): "expected shard files that all end in one of",
        "nosuchprotocol://bucket/{0..1}.tar": "Cannot read nosuchprotocol:// shards",
    }
    for pattern, message in expected.items():
        assert tokenize_cli(pattern, "--model", model_dir, "-o", tmp_path / "codes") == 1
        assert message in capsys.readouterr().err, message
    flags = ["--model", model_dir, "-o", tmp_path / "codes", "--id-column", "key"]
    assert tokenize_cli(shards / "shards" / "00000.tar", *flags) == 1
    assert "does not apply to tar shards" in capsys.readouterr().err
    assert not (tmp_path / "codes").exists()


def test_bfloat16_by_default_on_cuda_only():
    assert default_dtype(torch.device("cuda")) == "bfloat16"
    assert default_dtype(torch.device("cpu")) == "float32"
