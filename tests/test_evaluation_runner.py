"""The resumable prediction loop of `seed-hf evaluate` and the files it writes, on a stand-in predictor."""

import json

import pytest

from seed_hf.evaluation.runner import markdown_table, predict_resumable, read_records, write_metrics
from seed_hf.utils import folder_lock

IDS = [f"item-{index}" for index in range(5)]


def predictor(calls: list):
    def predict(indices: list[int]) -> list[dict]:
        calls.append(indices)
        return [{"value": index * index} for index in indices]

    return predict


def test_predictions_in_dataset_order_and_no_partial_files(tmp_path):
    calls = []
    records = predict_resumable(IDS, predictor(calls), tmp_path / "out", {"model": "m"}, batch_size=2)
    assert calls == [[0, 1], [2, 3], [4]]
    assert records == [{"id": item_id, "value": index * index} for index, item_id in enumerate(IDS)]
    assert read_records(tmp_path / "out" / "predictions.jsonl") == records
    assert sorted(path.name for path in (tmp_path / "out").iterdir()) == ["predictions.jsonl", "run.json"]
    assert json.loads((tmp_path / "out" / "run.json").read_text())["items"] == 5


def test_a_restart_predicts_only_what_is_missing(tmp_path):
    output = tmp_path / "out"
    predict_resumable(IDS, predictor([]), output, {"model": "m"}, batch_size=2)
    lines = (output / "predictions.jsonl").read_text().splitlines(keepends=True)
    # A kill: records 0, 1 and 3 were written to a process's file, the last one only in part.
    (output / "predictions.jsonl").unlink()
    (output / "predictions.process-1.jsonl").write_text(lines[0] + lines[1] + lines[3] + lines[4][:7])
    calls = []
    records = predict_resumable(IDS, predictor(calls), output, {"model": "m"}, batch_size=2)
    assert calls == [[2], [4]]
    assert [record["id"] for record in records] == IDS
    assert not list(output.glob("predictions.process-*"))


def test_a_broken_line_that_is_not_the_last_is_an_error(tmp_path):
    path = tmp_path / "predictions.jsonl"
    path.write_text('{"id": "a"}\nnot json\n{"id": "b"}\n')
    with pytest.raises(ValueError, match="line 2 is not a prediction record"):
        read_records(path)
    path.write_text('{"id": "a"}\n{"id": "b", "val')
    assert read_records(path) == [{"id": "a"}]


def test_refuses_other_settings_and_folders_it_did_not_write(tmp_path):
    output = tmp_path / "out"
    predict_resumable(IDS, predictor([]), output, {"model": "m"})
    with pytest.raises(FileExistsError, match="other settings \\(model\\)"):
        predict_resumable(IDS, predictor([]), output, {"model": "other"})
    with pytest.raises(FileExistsError, match="other settings \\(ids, items\\)"):
        predict_resumable(IDS[:3], predictor([]), output, {"model": "m"})
    calls = []
    predict_resumable(IDS, predictor(calls), output, {"model": "other"}, overwrite=True, batch_size=8)
    assert calls == [[0, 1, 2, 3, 4]]
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    for overwrite in (False, True):
        with pytest.raises(FileExistsError, match="holds no run.json"):
            predict_resumable(IDS, predictor([]), tmp_path / "mine", {}, overwrite=overwrite)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep"


def test_one_run_at_a_time(tmp_path):
    (tmp_path / "out").mkdir()
    with folder_lock(tmp_path / "out"), pytest.raises(BlockingIOError, match="another seed-hf evaluate is writing"):
        predict_resumable(IDS, predictor([]), tmp_path / "out", {})
    (tmp_path / "file").write_text("")
    with pytest.raises(FileExistsError, match="not a folder"):
        predict_resumable(IDS, predictor([]), tmp_path / "file", {})


def test_ids_must_be_unique(tmp_path):
    with pytest.raises(ValueError, match="unique.*'a'"):
        predict_resumable(["a", "b", "a"], predictor([]), tmp_path / "out", {})


def test_metrics_files_put_the_paper_beside_the_measure(tmp_path):
    report = {"task": "caption", "dataset": "coco", "items": 2, "metrics": {"CIDEr": 101.234, "BLEU-4": 30.0}}
    write_metrics(tmp_path, report, {"CIDEr": 119.0}, note="\nnote\n")
    assert json.loads((tmp_path / "metrics.json").read_text()) == {**report, "paper": {"CIDEr": 119.0}}
    table = (tmp_path / "metrics.md").read_text()
    assert table.startswith("# caption on coco (2 items)\n")
    assert "| CIDEr | 101.23 | 119.00 |\n| BLEU-4 | 30.00 |  |\n" in table and table.endswith("note\n")
    assert markdown_table({}, {}).count("\n") == 2
