"""
The resumable, data-parallel prediction loop of `seed-hf evaluate`, and the files every run writes.

An output folder holds `run.json` (the settings; a restart with other settings is refused), `predictions.jsonl` (one
JSON record per item, in dataset order, each with its `id`), `metrics.json` and `metrics.md` (the measured numbers
beside the paper's). While a run goes on, each process appends the records of every finished batch to its own
`predictions.process-K.jsonl`; a restart reads every record already written (from those files and from a
`predictions.jsonl`, even one cut short) and predicts only the items that have none. Batches are fixed slices of the
dataset dealt round-robin to the processes, so one process and several make the same batches.
"""

import json
import os
from collections import Counter
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from pathlib import Path

from accelerate import PartialState
from datasets.utils import tqdm
from huggingface_hub.utils import are_progress_bars_disabled

from ..dataset_tokenization import digest_row_ids, distributed_state, raise_on_every_process
from ..utils import folder_lock, write_atomic

RUN_FILE = "run.json"
PREDICTIONS_FILE = "predictions.jsonl"
METRICS_FILE = "metrics.json"
METRICS_TABLE_FILE = "metrics.md"
PART_PATTERN = "predictions.process-*.jsonl"


def read_records(path: Path) -> list[dict]:
    """
    The records of a JSON-lines file; a last line without its newline (a write cut short by a kill) is ignored, any
    other line that is not a JSON object raises `ValueError`.
    """
    text = path.read_text()
    lines = text.split("\n")
    complete = lines[:-1]  # the text after the last newline is empty or unfinished
    records = []
    for number, line in enumerate(complete, start=1):
        try:
            record = json.loads(line)
        except ValueError:
            record = None
        if not isinstance(record, dict) or "id" not in record:
            raise ValueError(f"{path} line {number} is not a prediction record (a JSON object with an id): remove it")
        records.append(record)
    return records


def write_json(path: Path, content) -> None:
    """Write `content` as indented JSON under a temporary name, then rename it into place."""
    write_text(path, json.dumps(content, indent=2) + "\n")


def write_text(path: Path, text: str) -> None:
    """Write `text` under a temporary name, then rename it into place."""
    write_atomic(path, lambda temporary: temporary.write_text(text))


def _prediction_files(output_dir: Path) -> list[Path]:
    return [path for path in [output_dir / PREDICTIONS_FILE, *sorted(output_dir.glob(PART_PATTERN))] if path.is_file()]


def _prepare_output(output_dir: Path, settings: dict, overwrite: bool) -> None:
    """
    Make `output_dir` ready: new, empty, or holding a run with the same settings (resumed). With `overwrite`, an
    earlier run's files are deleted first. A folder that is not an evaluation output is never touched.
    """
    run_file = output_dir / RUN_FILE
    if output_dir.is_dir() and any(output_dir.iterdir()) and not run_file.is_file():
        raise FileExistsError(
            f"{output_dir} is not empty and holds no {RUN_FILE} of seed-hf evaluate: choose another output"
        )
    if run_file.is_file():
        recorded = json.loads(run_file.read_text())
        changed = sorted(key for key in settings.keys() | recorded.keys() if settings.get(key) != recorded.get(key))
        if overwrite:
            for path in [*_prediction_files(output_dir), output_dir / METRICS_FILE, output_dir / METRICS_TABLE_FILE]:
                path.unlink(missing_ok=True)
        elif changed:
            raise FileExistsError(
                f"{output_dir} holds an evaluation with other settings ({', '.join(changed)}): pass --overwrite to "
                "replace it, or choose another output"
            )
    write_json(run_file, settings)


def _drop_unfinished_line(path: Path) -> None:
    """Cut a file back to its last newline, so that appended records do not join a line a kill left unfinished."""
    if not path.is_file():
        return
    content = path.read_bytes()
    if content and not content.endswith(b"\n"):
        with open(path, "r+b") as file:
            file.truncate(content.rfind(b"\n") + 1)


def predict_resumable(
    ids: Sequence[str],
    predict: Callable[[list[int]], list[dict]],
    output_dir: str | os.PathLike,
    settings: dict,
    batch_size: int = 8,
    overwrite: bool = False,
    state: PartialState | None = None,
    description: str = "predicting",
) -> list[dict] | None:
    """
    Predict every item once, resuming an interrupted run, and write `predictions.jsonl` in the order of `ids`.

    Args:
        ids (`Sequence[str]`):
            A unique id per item, in dataset order.
        predict (`Callable[[list[int]], list[dict]]`):
            Takes item positions and returns one JSON-serialisable record per position (its `id` is added).
        output_dir (`str` or `PathLike`):
            The evaluation folder.
        settings (`dict`):
            What decides the predictions (model, data, decoding...), stored in `run.json` and compared on restart.
        batch_size (`int`, *optional*, defaults to 8):
            Items per `predict` call; the batches are fixed slices of `ids`.
        overwrite (`bool`, *optional*, defaults to `False`):
            Start over, deleting an earlier run's predictions and metrics.
        state (`accelerate.PartialState`, *optional*):
            The distributed state; [`~dataset_tokenization.distributed_state`] when `None`.
        description (`str`, *optional*):
            Label of the progress bar.

    Returns:
        `list[dict]` of the records in `ids` order on the main process, `None` on the others.
    """
    state = state or distributed_state()
    output_dir = Path(output_dir)
    if len(set(ids)) != len(ids):
        duplicates = sorted(item_id for item_id, count in Counter(ids).items() if count > 1)[:5]
        raise ValueError(f"Item ids must be unique; repeated: {duplicates}")
    settings = {**settings, "items": len(ids), "ids": digest_row_ids(ids)}
    with ExitStack() as run_lock:

        def prepare() -> None:
            if output_dir.exists() and not output_dir.is_dir():
                raise FileExistsError(f"{output_dir} exists and is not a folder: choose another output")
            output_dir.mkdir(parents=True, exist_ok=True)
            try:
                run_lock.enter_context(folder_lock(output_dir))  # held by the main process until the run ends
            except BlockingIOError:
                raise BlockingIOError(
                    f"another seed-hf evaluate is writing {output_dir}: wait for it to end, or stop it and run again "
                    "to resume its work"
                ) from None
            _prepare_output(output_dir, settings, overwrite)

        # 1. The main process locks and checks the folder and records the settings; everyone reads what is done.
        raise_on_every_process(state, prepare)
        done = {record["id"] for path in _prediction_files(output_dir) for record in read_records(path)}
        state.wait_for_everyone()
        part = output_dir / f"predictions.process-{state.process_index}.jsonl"
        _drop_unfinished_line(part)
        # 2. Fixed batches of the items not done, dealt round-robin.
        batches = [range(start, min(start + batch_size, len(ids))) for start in range(0, len(ids), batch_size)]
        pending = [[index for index in batch if ids[index] not in done] for batch in batches]
        mine = [batch for batch in pending if batch][state.process_index :: state.num_processes]
        with (
            tqdm(
                total=sum(map(len, mine)),
                desc=description + (f" (process 0 of {state.num_processes})" if state.num_processes > 1 else ""),
                disable=not state.is_main_process or are_progress_bars_disabled(),
            ) as bar,
            open(part, "a") as out,
        ):
            for batch in mine:
                records = predict(batch)
                if len(records) != len(batch):
                    raise RuntimeError(f"predict returned {len(records)} records for {len(batch)} items")
                out.write(
                    "".join(json.dumps({"id": ids[index], **record}) + "\n" for index, record in zip(batch, records))
                )
                out.flush()
                os.fsync(out.fileno())
                bar.update(len(batch))
        # 3. The main process gathers every record in dataset order into predictions.jsonl.
        state.wait_for_everyone()
        if not state.is_main_process:
            return None
        by_id = {}
        for path in _prediction_files(output_dir):
            for record in read_records(path):
                by_id.setdefault(record["id"], record)
        missing = [item_id for item_id in ids if item_id not in by_id]
        if missing:
            raise RuntimeError(f"No prediction for {len(missing)} items (first: {missing[:5]}); did a process fail?")
        records = [by_id[item_id] for item_id in ids]
        write_text(output_dir / PREDICTIONS_FILE, "".join(json.dumps(record) + "\n" for record in records))
        for path in output_dir.glob(PART_PATTERN):
            path.unlink()
        return records


def markdown_table(metrics: dict[str, float], anchors: dict[str, float]) -> str:
    """A markdown table of each metric measured, beside the paper's number where it gives one."""
    lines = ["| metric | measured | paper |", "| --- | ---: | ---: |"]
    for name, value in metrics.items():
        anchor = anchors.get(name)
        lines.append(f"| {name} | {value:.2f} | {'' if anchor is None else f'{anchor:.2f}'} |")
    return "\n".join(lines) + "\n"


def write_metrics(output_dir: str | os.PathLike, report: dict, anchors: dict[str, float], note: str = "") -> None:
    """Write `metrics.json` (`report` plus the anchors) and `metrics.md` (the table, then `note`)."""
    output_dir = Path(output_dir)
    write_json(output_dir / METRICS_FILE, {**report, "paper": anchors})
    title = f"# {report['task']} on {report['dataset']} ({report['items']} items)\n\n"
    write_text(output_dir / METRICS_TABLE_FILE, title + markdown_table(report["metrics"], anchors) + note)


__all__ = ["markdown_table", "predict_resumable", "read_records", "write_metrics"]
