"""
Tokenize whole datasets with the SEED visual tokenizer.

- [`tokenize_dataset`] adds a `codes` column to a 🤗 `Dataset` with `Dataset.map(batched=True)`, so the result is
  fingerprinted and cached like any other map.
- [`tokenize_to_disk`] is the engine of `seed-hf tokenize`: it cuts the input into fixed shards, lets every process of
  a distributed launch (accelerate, torchrun) tokenize its own shards, writes each shard under a temporary name and
  renames it, records it in a manifest so that a restart skips it, and finally merges the shards in order into a
  dataset saved with `save_to_disk`. An image that cannot be read is skipped, listed with the reason and counted;
  it never stops the run. One run at a time writes an output: a second one refuses at once.
"""

import io
import itertools
import json
import os
import shutil
import stat
import time
from collections.abc import Iterator, Sequence
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import PIL.Image
import pyarrow as pa
import pyarrow.parquet as pq
import torch
import xxhash
from accelerate import PartialState
from accelerate.utils import broadcast_object_list
from datasets import (
    Dataset,
    DatasetDict,
    Features,
    List,
    Value,
    concatenate_datasets,
    load_dataset,
    load_from_disk,
)
from datasets import Image as ImageFeature
from datasets.fingerprint import Hasher
from datasets.utils import tqdm
from huggingface_hub import HfApi
from huggingface_hub.utils import are_progress_bars_disabled

from .utils import (
    OUTPUT_FORMATS,
    TOKENIZE_SUMMARY_FILE,
    atomic_output_dir,
    check_output_dir,
    folder_lock,
    looks_like_local_path,
    write_atomic,
)

ROW_ID_COLUMN = "row_id"
CODES_COLUMN = "codes"
ERRORS_FILE = "errors.jsonl"
# Files `load_dataset` reads by extension when INPUT is a single local file.
DATA_FILE_BUILDERS = {".parquet": "parquet", ".csv": "csv", ".json": "json", ".jsonl": "json", ".arrow": "arrow"}
# Bump when the output layout changes, so that old partial runs and cached maps are not reused.
FORMAT_VERSION = 2


def codes_feature(config) -> List:
    """The `codes` feature: `num_query_tokens` integers of the smallest type that holds every codebook index."""
    dtype = "int16" if config.codebook_size <= np.iinfo(np.int16).max + 1 else "int32"
    return List(Value(dtype), length=config.num_query_tokens)


def model_fingerprint(model) -> str:
    """A digest of all that decides the codes: config, dtype, attention implementation, device and weights."""
    digest = xxhash.xxh3_128()  # hashes the 4 GiB of released float32 weights in well under a second
    for setting in (model.config.to_json_string(), model.dtype, model.config._attn_implementation, model.device.type):
        digest.update(str(setting).encode())
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().reshape(-1).cpu().view(torch.uint8).numpy())
    return digest.hexdigest()


def load_image(value, base_dir: str | os.PathLike | None = None):
    """
    One image cell -> something [`SeedImageProcessor`] accepts, fully decoded so that a truncated file fails here.

    Args:
        value: a PIL image; a path (`str` or `PathLike`, relative ones resolved against `base_dir`); encoded bytes;
            the `{"bytes", "path"}` dict of an undecoded `datasets.Image` column; or a NumPy array / torch tensor.
        base_dir (`str` or `PathLike`, *optional*):
            Folder that relative paths are relative to; the current directory when `None`.
    """
    if isinstance(value, bytes):
        value = io.BytesIO(value)
    if isinstance(value, dict):
        if value.get("bytes") is not None:
            value = io.BytesIO(value["bytes"])
        elif value.get("path"):
            value = value["path"]
        else:
            raise ValueError("Expected an image cell with bytes or a path, got neither")
    if isinstance(value, (str, os.PathLike)):
        value = Path(base_dir or "", value)
        if value.exists() and not value.is_file():  # a folder, or a FIFO that would block the read
            raise ValueError(f"{value} is not a regular file")
    if isinstance(value, (Path, io.BytesIO)):
        try:
            with PIL.Image.open(value) as image:
                image.load()
                return image
        except PIL.UnidentifiedImageError:
            if isinstance(value, Path):
                raise
            # Pillow's message names the buffer's address, which differs from run to run.
            raise PIL.UnidentifiedImageError("cannot identify image file (in-memory bytes)") from None
    if isinstance(value, (PIL.Image.Image, np.ndarray, torch.Tensor)):
        return value
    raise ValueError(
        f"Expected an image (PIL image, path, datasets image cell, array or tensor), got {type(value).__name__}"
    )


def prepare_image(value, image_processor, base_dir=None) -> tuple[torch.Tensor | None, str | None]:
    """
    `(pixel_values of shape (3, H, W), None)` for a readable image, `(None, reason)` for one that is not (missing,
    truncated, not an image, wrong shape...): a batch job reports a bad item and goes on.
    """
    try:
        return image_processor(load_image(value, base_dir), return_tensors="pt").pixel_values[0], None
    except Exception as error:  # any failure to read one item, whatever the decoder raises, is that item's failure
        return None, f"{type(error).__name__}: {error}"


def encode_prepared(model, prepared: list[tuple[torch.Tensor | None, str | None]], dtype) -> list[np.ndarray | None]:
    """Codes of each prepared item in one `model.encode` call; `None` where the item failed to prepare."""
    readable = [position for position, (pixel_values, _) in enumerate(prepared) if pixel_values is not None]
    codes = [None] * len(prepared)
    if readable:
        encoded = model.encode(torch.stack([prepared[position][0] for position in readable])).cpu().numpy()
        for position, row in zip(readable, encoded.astype(dtype)):
            codes[position] = row
    return codes


def _tokenize_batch(images, indices, model, image_processor, codes_column, error_column, dtype):
    prepared = [prepare_image(value, image_processor) for value in images]
    if error_column is None:
        for index, (_, reason) in zip(indices, prepared):
            if reason is not None:
                raise ValueError(f"Could not read the image of row {index}: {reason} (pass error_column to skip it)")
    batch = {codes_column: encode_prepared(model, prepared, dtype)}
    if error_column is not None:
        batch[error_column] = [reason for _, reason in prepared]
    return batch


def tokenize_dataset(
    dataset: Dataset | DatasetDict,
    model,
    image_processor,
    batch_size: int = 8,
    image_column: str = "image",
    codes_column: str = CODES_COLUMN,
    error_column: str | None = "error",
    **map_kwargs,
) -> Dataset | DatasetDict:
    r"""
    Add the SEED codes of every image to a dataset, with `Dataset.map(batched=True)`.

    The map writes only the new columns (its cache file holds no second copy of the images) and is fingerprinted from
    the dataset's fingerprint, [`model_fingerprint`], the image processor and the arguments, so calling it again on the
    same data with the same model loads the cached result instead of tokenizing again.

    Args:
        dataset (`Dataset` or `DatasetDict`):
            The images; a `DatasetDict` is tokenized split by split.
        model ([`SeedVisionTokenizer`]):
            The tokenizer, already on its device and in its dtype.
        image_processor ([`SeedImageProcessor`]):
            Its image processor.
        batch_size (`int`, *optional*, defaults to 8):
            Images per `model.encode` call.
        image_column (`str`, *optional*, defaults to `"image"`):
            Column of images: a `datasets.Image` feature, paths, or arrays.
        codes_column (`str`, *optional*, defaults to `"codes"`):
            Name of the new column of `num_query_tokens` codes.
        error_column (`str`, *optional*, defaults to `"error"`):
            Name of the new column that says why an image could not be read (its codes are then `None`); `None`
            when the images are already valid, to raise on the first unreadable image instead.
        map_kwargs:
            Passed to `Dataset.map` (`num_proc`, `keep_in_memory`, `cache_file_name`, `load_from_cache_file`...).

    Returns:
        `Dataset` or `DatasetDict`: the input with the new columns added.

    Example:

    ```python
    >>> from datasets import load_dataset
    >>> from transformers import AutoImageProcessor, AutoModel
    >>> from seed_hf.dataset_tokenization import tokenize_dataset
    >>> model = AutoModel.from_pretrained("seed-tokenizer-v1")
    >>> processor = AutoImageProcessor.from_pretrained("seed-tokenizer-v1")
    >>> dataset = tokenize_dataset(load_dataset("imagefolder", data_dir="photos", split="train"), model, processor)
    >>> dataset.filter(lambda error: error is None, input_columns="error")["codes"][0]  # 32 codes
    ```
    """
    if isinstance(dataset, DatasetDict):
        return DatasetDict(
            {
                split: tokenize_dataset(
                    part, model, image_processor, batch_size, image_column, codes_column, error_column, **map_kwargs
                )
                for split, part in dataset.items()
            }
        )
    if not isinstance(dataset, Dataset):
        raise ValueError(f"Expected a datasets.Dataset or DatasetDict, got {type(dataset).__name__}")
    if image_column not in dataset.column_names:
        raise ValueError(f"No image column {image_column!r}: the dataset has {dataset.column_names}")
    for name in (codes_column, error_column):
        if name in dataset.column_names:
            raise ValueError(f"The dataset already has a column {name!r}; choose another name")

    features = Features({codes_column: codes_feature(model.config)})
    if error_column is not None:
        features[error_column] = Value("string")
    inputs = dataset.select_columns([image_column])
    if isinstance(inputs.features[image_column], ImageFeature):
        # Decode in `prepare_image`, where a broken file becomes that row's error instead of stopping the map.
        inputs = inputs.cast_column(image_column, ImageFeature(decode=False))
    fingerprint = Hasher.hash(
        [
            "seed_hf.tokenize_dataset",
            FORMAT_VERSION,
            dataset._fingerprint,
            model_fingerprint(model),
            image_processor.to_json_string(),
            batch_size,
            image_column,
            codes_column,
            error_column,
        ]
    )
    codes = inputs.map(
        _tokenize_batch,
        batched=True,
        batch_size=batch_size,
        with_indices=True,
        input_columns=[image_column],
        remove_columns=[image_column],
        features=features,
        fn_kwargs=dict(
            model=model,
            image_processor=image_processor,
            codes_column=codes_column,
            error_column=error_column,
            dtype=features[codes_column].feature.dtype,
        ),
        new_fingerprint=fingerprint,
        **{"desc": "Tokenizing images", **map_kwargs},
    )
    return concatenate_datasets([dataset, codes], axis=1)


@dataclass
class Row:
    """
    One input row as [`tokenize_to_disk`] reads it.

    Args:
        row_id (`str` or `int`): its stable id (a path, a sample key, a row index).
        image: what [`load_image`] reads (a path, bytes, an undecoded `datasets.Image` cell, an array...).
        columns (`dict`): the values carried over to the output (captions, metadata), by column name.
        failure (`str`, *optional*): why the row cannot be read, known before any decoding; it is then never opened.
    """

    row_id: str | int
    image: object = None
    columns: dict = field(default_factory=dict)
    failure: str | None = None


@dataclass
class ImageSource:
    """
    What [`tokenize_to_disk`] reads when every row is known up front: one row per image, in a fixed order, cut into
    shards of `shard_size` consecutive rows. Sources of input shards (tar, parquet, a streaming dataset: see
    [`~webdataset_input.ShardFilesSource`]) offer the same methods: `shards`, `shard_length`, `read_shard`,
    `features` and `identity`, plus `base_dir`.

    Args:
        description (`str`):
            What the input is; recorded with a partial run, which refuses to resume on a different input.
        row_ids (`list[str]` or `list[int]`):
            The stable id of each row: the path for files, the row index for datasets.
        images (`Sequence`):
            What [`load_image`] reads for each row (a path, an undecoded `datasets.Image` cell, an array...).
        base_dir (`Path`, *optional*):
            Folder that relative image paths are relative to.
        texts (`Dataset`, *optional*):
            Columns carried over to the output unchanged (captions...), one row per image.
        failures (`dict[int, str]`, *optional*):
            Rows known to be unreadable before any decoding (a broken link, a FIFO, a name that is not UTF-8...), with
            the reason; they are listed in the errors file and never opened.
    """

    description: str
    row_ids: list[str] | list[int]
    images: Sequence
    base_dir: Path | None = None
    texts: Dataset | None = None
    failures: dict[int, str] = field(default_factory=dict)

    def features(self, model_config) -> Features:
        features = Features({ROW_ID_COLUMN: Value("string" if isinstance(self.row_ids[0], str) else "int64")})
        features[CODES_COLUMN] = codes_feature(model_config)
        if self.texts is not None:
            features.update(self.texts.features)
        return features

    def shards(self, shard_size: int) -> list[tuple[int, int]]:
        """The `(start, stop)` rows of each shard."""
        num_rows = len(self.row_ids)
        return [(start, min(start + shard_size, num_rows)) for start in range(0, num_rows, shard_size)]

    def shard_length(self, shard: tuple[int, int]) -> int:
        return shard[1] - shard[0]

    def read_shard(self, shard: tuple[int, int]) -> Iterator[Row]:
        start, stop = shard
        texts = self.texts[start:stop] if self.texts is not None else {}
        for offset, index in enumerate(range(start, stop)):
            columns = {name: values[offset] for name, values in texts.items()}
            yield Row(self.row_ids[index], self.images[index], columns, self.failures.get(index))

    def identity(self) -> dict:
        """What a partial run records of its input, so that it resumes only on the same rows."""
        return {"input": self.description, "rows": len(self.row_ids), "row_ids": digest_row_ids(self.row_ids)}


def is_saved_dataset(path: Path) -> bool:
    """Whether `path` is a folder written by `Dataset.save_to_disk` or `DatasetDict.save_to_disk`."""
    return (path / "state.json").is_file() or (path / "dataset_dict.json").is_file()


def image_source(
    input_path: str,
    split: str | None = None,
    image_column: str = "image",
    text_columns: Sequence[str] = (),
) -> ImageSource:
    """
    The rows of INPUT: an image folder (every file below it except hidden ones, sorted, id = relative path; see
    [`list_image_folder`]), a `.txt` file list (one path per line, relative to the list's folder; id = the line), a
    dataset saved with `save_to_disk`, a `.parquet` / `.csv` / `.json(l)` / `.arrow` file, or a Hub dataset id (id =
    row index). A file name that is not UTF-8 becomes a failed row, its id written with `\\x..` escapes.
    """
    path = Path(input_path)
    if path.is_dir() and not is_saved_dataset(path):
        if text_columns:
            raise ValueError(f"{input_path} is an image folder, which has no text columns to carry over")
        files, failures = list_image_folder(path)
        return _file_source(f"image folder {path.resolve()}", files, path, failures)
    if path.is_file() and path.suffix == ".txt":
        if text_columns:
            raise ValueError(f"{input_path} is a file list, which has no text columns to carry over")
        lines = [line.strip() for line in path.read_text(errors="surrogateescape").splitlines()]
        return _file_source(f"file list {path.resolve()}", [line for line in lines if line], path.parent)

    dataset, split = load_input_dataset(input_path, split)
    missing = [name for name in (image_column, *text_columns) if name not in dataset.column_names]
    if missing:
        raise ValueError(f"{input_path} has no column {missing}; its columns are {dataset.column_names}")
    if len(dataset) == 0:
        raise ValueError(f"{input_path} has no rows")
    images = dataset.select_columns([image_column])
    if isinstance(images.features[image_column], ImageFeature):
        images = images.cast_column(image_column, ImageFeature(decode=False))
    return ImageSource(
        description=f"dataset {input_path} split {split} column {image_column} ({dataset._fingerprint})",
        row_ids=list(range(len(dataset))),
        images=images[image_column],
        base_dir=path.parent if path.is_file() else None,
        texts=dataset.select_columns(list(text_columns)) if text_columns else None,
    )


def load_input_dataset(input_path: str, split: str | None = None) -> tuple[Dataset, str]:
    """
    One split of a dataset named on a command line, and the split's name: a folder written by `save_to_disk`, a local
    `.parquet` / `.csv` / `.json(l)` / `.arrow` file, or a Hub dataset id. `split` may be left out when there is one.
    """
    path = Path(input_path)
    if path.is_dir() and is_saved_dataset(path):
        dataset = load_from_disk(str(path))
    elif path.is_file() and path.suffix in DATA_FILE_BUILDERS:
        dataset = load_dataset(DATA_FILE_BUILDERS[path.suffix], data_files=str(path))
    elif not path.exists() and looks_like_local_path(input_path):
        raise FileNotFoundError(f"No such file or folder: {input_path}")
    elif path.exists():
        raise ValueError(
            f"Cannot read {input_path}: expected a dataset saved with save_to_disk, a {'/'.join(DATA_FILE_BUILDERS)} "
            "file, or a Hub dataset id"
        )
    else:
        dataset = load_dataset(input_path)
    if not isinstance(dataset, DatasetDict):
        return dataset, split
    if split is None and len(dataset) > 1:
        raise ValueError(f"{input_path} has several splits {list(dataset)}: choose one with --split")
    if split is not None and split not in dataset:
        raise ValueError(f"{input_path} has no split {split!r}, only {list(dataset)}")
    split = split or next(iter(dataset))
    return dataset[split], split


def list_image_folder(folder: Path) -> tuple[list[str], dict[str, str]]:
    """
    Every entry below `folder` that is a row (relative POSIX paths, sorted; hidden files and folders left out), and why
    the entries that cannot be images are not read: broken symbolic links, FIFOs and other special files (never
    opened, so a FIFO cannot block the run), links to an enclosing folder (a loop) and unreadable folders. Symbolic
    links to files and to folders are followed.
    """
    entries, failures = [], {}

    def visit(directory: str, prefix: str, ancestors: frozenset) -> None:
        with os.scandir(directory) as children:
            children = [child for child in children if not child.name.startswith(".")]
        for child in children:
            name = prefix + child.name
            try:
                info = child.stat()  # of what a symbolic link points to
            except OSError as error:
                if isinstance(error, FileNotFoundError) and child.is_symlink():
                    failures[name] = f"broken symbolic link to {os.readlink(child.path)}"
                else:  # a link loop, a file that vanished, no permission...
                    failures[name] = f"{type(error).__name__}: {error}"
            else:
                if stat.S_ISDIR(info.st_mode) and (info.st_dev, info.st_ino) in ancestors:
                    failures[name] = "symbolic link to a folder that encloses it (a loop): not followed"
                elif stat.S_ISDIR(info.st_mode):
                    try:
                        visit(child.path, name + "/", ancestors | {(info.st_dev, info.st_ino)})
                        continue  # a folder is a row only when it cannot be listed
                    except OSError as error:
                        failures[name] = f"{type(error).__name__}: {error}"
                elif not stat.S_ISREG(info.st_mode):
                    failures[name] = "not a regular file (a FIFO, socket or device): not read"
            entries.append(name)

    root = os.stat(folder)
    visit(str(folder), "", frozenset({(root.st_dev, root.st_ino)}))
    return sorted(entries), failures


def _file_source(description: str, entries: list[str], base_dir: Path, failures: dict | None = None) -> ImageSource:
    """Rows of files, with the `failures` known so far (entry -> reason) and those whose name is not UTF-8."""
    if not entries:
        raise ValueError(f"No images to tokenize in the {description}")
    failures = dict(failures or {})
    row_ids = []
    for entry in entries:
        # A name read from a file system or a list that is not UTF-8 holds surrogate escapes, which Arrow cannot store.
        row_ids.append(entry.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace"))
        if row_ids[-1] != entry:
            failures.setdefault(entry, "file name is not valid UTF-8, so it cannot be a row id: rename the file")
    return ImageSource(
        description=description,
        row_ids=row_ids,
        images=entries,
        base_dir=base_dir,
        failures={index: failures[entry] for index, entry in enumerate(entries) if entry in failures},
    )


@dataclass
class TokenizeSummary:
    """
    What a [`tokenize_to_disk`] run did.

    Args:
        read (`int`): rows of the input.
        tokenized (`int`): rows written with their codes.
        failed (`int`): rows skipped because their image could not be read (listed in the errors file).
        shards (`int`): shards of the input.
        shards_resumed (`int`): shards already done by an earlier, interrupted run and not redone.
        images_per_second (`float`): rows tokenized by this run per second of this run, all processes together.
        output_dir (`str`): the dataset written.
    """

    read: int
    tokenized: int
    failed: int
    shards: int
    shards_resumed: int
    images_per_second: float
    output_dir: str


def digest_row_ids(row_ids) -> str:
    digest = xxhash.xxh3_128()
    for row_id in row_ids:
        digest.update(f"{row_id}\n".encode())
    return digest.hexdigest()


def _write_arrow(path: Path, table: pa.Table) -> None:
    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    _sync(path)


def _write_parquet(path: Path, table: pa.Table) -> None:
    pq.write_table(table, str(path))
    _sync(path)


def _sync(path: Path) -> None:
    with open(path, "rb+") as file:
        os.fsync(file.fileno())


def parquet_shard_name(shard: int, num_shards: int) -> str:
    """Where a parquet output keeps a shard, named as the Hub names the files of a `train` split."""
    return f"data/train-{shard:05d}-of-{num_shards:05d}.parquet"


class _ShardStore:
    """
    The work folder of a run (`OUT.partial`): `run.json` (the settings, checked on resume), `shards/NNNNN.arrow` or
    `.parquet` (the rows of each finished shard) and `manifest/NNNNN.json` (its counts and errors; a shard is done when
    this record exists). `publish(path, shard)`, when given, is called on each shard file before its record is
    written, so a shard whose upload failed is redone by the next run.
    """

    def __init__(self, work_dir: Path, output_format: str = "dataset", publish=None):
        self.work_dir = work_dir
        self.run_file = work_dir / "run.json"
        self.suffix = ".parquet" if output_format == "parquet" else ".arrow"
        self.publish = publish

    def shard_file(self, shard: int) -> Path:
        return self.work_dir / "shards" / f"{shard:05d}{self.suffix}"

    def record_file(self, shard: int) -> Path:
        return self.work_dir / "manifest" / f"{shard:05d}.json"

    def check_resumable(self, run: dict) -> None:
        """Raise unless the work folder is absent, empty or belongs to a run with these exact settings."""
        if not self.work_dir.exists() or not any(self.work_dir.iterdir()):
            return
        if not self.run_file.is_file():
            raise FileExistsError(f"{self.work_dir} exists but is not a partial seed-hf tokenize run; remove it")
        recorded = json.loads(self.run_file.read_text())
        changed = sorted(key for key in run.keys() | recorded.keys() if run.get(key) != recorded.get(key))
        if changed:
            raise FileExistsError(
                f"{self.work_dir} holds a partial run with other settings ({', '.join(changed)}); "
                "pass --overwrite to start over"
            )

    def clear(self) -> None:
        """Delete what a discarded run wrote, keeping the work folder itself (the run's lock is on it)."""
        for entry in self.work_dir.iterdir():
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()

    def start(self, run: dict) -> None:
        for folder in ("shards", "manifest"):
            (self.work_dir / folder).mkdir(parents=True, exist_ok=True)
        if not self.run_file.is_file():
            write_atomic(self.run_file, lambda path: path.write_text(json.dumps(run, indent=2)))

    def done(self, num_shards: int) -> list[bool]:
        return [self.record_file(shard).is_file() for shard in range(num_shards)]

    def write(self, shard: int, table: pa.Table, record: dict) -> None:
        write_table = _write_parquet if self.suffix == ".parquet" else _write_arrow
        write_atomic(self.shard_file(shard), lambda path: write_table(path, table))
        if self.publish is not None:
            self.publish(self.shard_file(shard), shard)
        write_atomic(self.record_file(shard), lambda path: path.write_text(json.dumps(record)))

    def records(self, num_shards: int) -> list[dict]:
        missing = [shard for shard, done in enumerate(self.done(num_shards)) if not done]
        if missing:
            raise RuntimeError(f"Shards {missing} of {self.work_dir} were not written; did a process fail?")
        return [json.loads(self.record_file(shard).read_text()) for shard in range(num_shards)]


def _shard_table(features: Features, row_ids: list, codes: list[np.ndarray], columns: list[dict]) -> pa.Table:
    """The rows of one shard whose image was read: row id, codes and the carried-over columns, in input order."""
    table = {ROW_ID_COLUMN: row_ids}
    flat = np.stack(codes).reshape(-1) if codes else np.zeros(0, np.int16)
    table[CODES_COLUMN] = pa.FixedSizeListArray.from_arrays(
        pa.array(flat, type=features[CODES_COLUMN].feature.pa_type), features[CODES_COLUMN].length
    )
    for name in features:
        if name not in table:
            table[name] = [row[name] for row in columns]
    return pa.Table.from_pydict(table, schema=features.arrow_schema)


def _write_outputs(staging: Path, records: list[dict], summary: dict) -> None:
    with open(staging / ERRORS_FILE, "w") as errors:
        for record in records:
            errors.writelines(json.dumps(error) + "\n" for error in record["errors"])
    (staging / TOKENIZE_SUMMARY_FILE).write_text(json.dumps(summary, indent=2))


def _merge(store: _ShardStore, output_dir: Path, overwrite: bool, records: list[dict], summary: dict) -> None:
    """
    Put the shards in order into `output_dir` with the errors and summary files: merged into one dataset
    (`save_to_disk` layout), or, for parquet shards, linked as `data/train-NNNNN-of-NNNNN.parquet` (no copy).
    """
    # An earlier output being overwritten is replaced only once the new one is complete.
    with atomic_output_dir(output_dir, overwrite) as staging:
        if store.suffix == ".parquet":
            for shard in range(len(records)):
                target = staging / parquet_shard_name(shard, len(records))
                target.parent.mkdir(exist_ok=True)
                os.link(store.shard_file(shard), target)  # the work folder keeps its copy until the swap is done
        else:
            shards = [Dataset.from_file(str(store.shard_file(shard))) for shard in range(len(records))]
            concatenate_datasets(shards).save_to_disk(str(staging))
        _write_outputs(staging, records, summary)


def raise_on_every_process(state: PartialState, check) -> None:
    """
    Call `check()` on the main process only and raise the `ValueError` or `OSError` it raises on every process, so that
    all processes stop together instead of waiting at the next barrier for one that failed.
    """
    error = None
    if state.is_main_process:
        try:
            check()
        except (ValueError, OSError) as caught:
            error = caught
    [error] = broadcast_object_list([error])
    if error is not None:
        raise error


def distributed_state(device: str | None = None, **kwargs) -> PartialState:
    """
    accelerate's process state, for CPU processes (gloo) when `device` is `"cpu"` or when it is unset and there is no
    GPU: a plain `PartialState()` treats the CPU processes of a `torchrun` launch as unrelated single processes.
    `kwargs` go to `torch.distributed.init_process_group` (e.g. `timeout`).
    """
    return PartialState(cpu=device == "cpu" or (device is None and not torch.cuda.is_available()), **kwargs)


def tokenize_to_disk(
    source: ImageSource,
    output_dir: str | os.PathLike,
    model,
    image_processor,
    batch_size: int = 8,
    shard_size: int = 1024,
    num_workers: int = 0,
    overwrite: bool = False,
    state: PartialState | None = None,
    progress: bool = True,
    output_format: str = "dataset",
    push_to_hub: str | None = None,
) -> TokenizeSummary:
    r"""
    Tokenize every image of `source` into a dataset at `output_dir`; data-parallel and resumable.

    The input is cut into shards: shards of `shard_size` consecutive rows for an [`ImageSource`], the input's own
    shards (tar or parquet files, the shards of a streaming dataset) otherwise. Shards not done yet are dealt
    round-robin to the processes of `state` (each process runs this function with its own model, as under
    `accelerate launch` or `torchrun`, on one node or many). Every shard is written to `OUT.partial` under a temporary
    name, renamed, then recorded in the manifest; a new run with the same settings skips recorded shards. When all are
    done, the main process puts them in order into `output_dir`, adds `errors.jsonl` (row id and reason for each
    unreadable image) and `tokenize_summary.json`, and removes `OUT.partial`. Codes do not depend on the number of
    processes or workers: each shard is cut into the same batches whoever runs it. The main process holds a lock on
    `OUT.partial` for the whole run, so a second run on the same output raises `BlockingIOError` at once.

    Args:
        source ([`ImageSource`] or [`~webdataset_input.ShardFilesSource`] or [`~webdataset_input.StreamingSource`]):
            The rows, e.g. from [`image_source`] or [`~webdataset_input.input_source`].
        output_dir (`str` or `PathLike`):
            The dataset to write; must not exist unless `overwrite`.
        model ([`SeedVisionTokenizer`]):
            This process's tokenizer, on its device and in its dtype.
        image_processor ([`SeedImageProcessor`]):
            Its image processor.
        batch_size (`int`, *optional*, defaults to 8):
            Images per `model.encode` call.
        shard_size (`int`, *optional*, defaults to 1024):
            Rows per shard of an [`ImageSource`]: the unit of work, of resumption and of distribution.
        num_workers (`int`, *optional*, defaults to 0):
            `DataLoader` processes that read, decode and preprocess images ahead of the model, each taking whole
            shards in turn (worth it on GPUs). On CUDA, batches go through pinned memory and `non_blocking` copies.
        overwrite (`bool`, *optional*, defaults to `False`):
            Replace an existing output (only a folder seed_hf wrote: see [`~utils.check_output_dir`]) and discard any
            partial run.
        state (`accelerate.PartialState`, *optional*):
            The distributed state; [`distributed_state`] when `None`.
        progress (`bool`, *optional*, defaults to `True`):
            Show a progress bar (images/s) on the main process, unless `datasets.disable_progress_bars()` or
            `HF_HUB_DISABLE_PROGRESS_BARS` turned progress bars off.
        output_format (`str`, *optional*, defaults to `"dataset"`):
            `"dataset"`: one dataset written with `save_to_disk` (read it with `load_from_disk`), for small sets;
            `"parquet"`: one `data/train-NNNNN-of-NNNNN.parquet` file per shard (read it with `load_dataset(OUT)`).
        push_to_hub (`str`, *optional*):
            A Hub dataset repository that receives each parquet shard as soon as it is written, then the errors and
            summary files; needs `output_format="parquet"`.

    Returns:
        [`TokenizeSummary`]; the same on every process.
    """
    if output_format not in OUTPUT_FORMATS:
        raise ValueError(f"output_format must be one of {OUTPUT_FORMATS}, got {output_format!r}")
    if push_to_hub and output_format != "parquet":
        raise ValueError("push_to_hub uploads parquet shards: use output_format='parquet' (--output-format parquet)")
    state = state or distributed_state()
    output_dir = Path(output_dir)
    shards = source.shards(shard_size)
    hub = HfApi() if push_to_hub else None

    def upload(path: Path, path_in_repo: str) -> None:
        hub.upload_file(
            path_or_fileobj=str(path),
            path_in_repo=path_in_repo,
            repo_id=push_to_hub,
            repo_type="dataset",
            commit_message=f"seed-hf tokenize: {path_in_repo}",
        )

    def publish(path: Path, shard: int) -> None:
        upload(path, parquet_shard_name(shard, len(shards)))

    store = _ShardStore(output_dir.with_name(output_dir.name + ".partial"), output_format, publish if hub else None)
    run = {
        "format": FORMAT_VERSION,
        **source.identity(),
        "shards": len(shards),
        "shard_size": shard_size,
        "batch_size": batch_size,
        "output_format": output_format,
        "model": model_fingerprint(model),
        "image_processor": image_processor.to_json_string(),
    }
    with ExitStack() as run_lock:

        def prepare() -> None:
            check_output_dir(output_dir, overwrite)
            store.work_dir.mkdir(parents=True, exist_ok=True)
            try:
                run_lock.enter_context(folder_lock(store.work_dir))  # held until the run ends
            except BlockingIOError:
                raise BlockingIOError(
                    f"another seed-hf tokenize is writing {output_dir} (it holds the lock of {store.work_dir}): "
                    "wait for it to end, or stop it and run again to resume its work"
                ) from None
            if overwrite:  # a partial run is discarded; the earlier output stays until the new one replaces it
                store.clear()
            else:
                store.check_resumable(run)
            store.start(run)
            if hub:
                hub.create_repo(push_to_hub, repo_type="dataset", exist_ok=True)

        # 1. The main process checks the output, takes the run's lock and clears or prepares the work folder.
        raise_on_every_process(state, prepare)
        # 2. Everyone lists the pending shards before anyone writes one, then tokenizes its round-robin share.
        pending = [shard for shard, done in enumerate(store.done(len(shards))) if not done]
        state.wait_for_everyone()
        started = time.perf_counter()
        mine = {shard: shards[shard] for shard in pending[state.process_index :: state.num_processes]}
        lengths = [source.shard_length(spec) for spec in mine.values()]
        # datasets' tqdm honours `datasets.disable_progress_bars()`; huggingface_hub's switch is honoured as well.
        with tqdm(
            total=None if None in lengths else sum(lengths),
            unit="img",
            desc="tokenizing" + (f" (process 0 of {state.num_processes})" if state.num_processes > 1 else ""),
            disable=not (progress and state.is_main_process) or are_progress_bars_disabled(),
        ) as bar:
            _tokenize_shards(source, store, mine, model, image_processor, batch_size, num_workers, bar)
        # 3. Once every shard is written, the main process puts them in order into the output.
        state.wait_for_everyone()
        records = store.records(len(shards))
        totals = {key: sum(record[key] for record in records) for key in ("read", "tokenized", "failed")}
        summary = TokenizeSummary(
            **totals,
            shards=len(shards),
            shards_resumed=len(shards) - len(pending),
            images_per_second=sum(records[shard]["read"] for shard in pending) / (time.perf_counter() - started),
            output_dir=str(output_dir),
        )

        recorded_summary = {**asdict(summary), "input": source.description, "model": run["model"]}
        state.wait_for_everyone()  # everyone has read the records before the main process removes them

        def finish() -> None:
            _merge(store, output_dir, overwrite, records, recorded_summary)
            if hub:
                for name in (ERRORS_FILE, TOKENIZE_SUMMARY_FILE):
                    upload(output_dir / name, name)
            shutil.rmtree(store.work_dir)

        raise_on_every_process(state, finish)
    return summary


class _PreparedBatches(torch.utils.data.IterableDataset):
    """
    The rows of some shards, read, decoded, preprocessed and batched, for a `DataLoader` whose workers do this ahead of
    the model. Each worker takes whole shards in turn and cuts each into batches of `batch_size` rows, the last one
    shorter, then ends the shard with an empty batch marked `last`; the same batches whoever reads the shard.
    """

    def __init__(self, source, shards: dict, image_processor, batch_size: int):
        self.source = source
        self.shards = list(shards.items())
        self.image_processor = image_processor
        self.batch_size = batch_size

    def __iter__(self) -> Iterator[dict]:
        worker = torch.utils.data.get_worker_info()
        shards = self.shards[worker.id :: worker.num_workers] if worker is not None else self.shards
        for shard, spec in shards:
            rows = self.source.read_shard(spec)
            while batch := list(itertools.islice(rows, self.batch_size)):
                yield self._prepare(shard, batch)
            yield {"shard": shard, "last": True}

    def _prepare(self, shard: int, rows: list[Row]) -> dict:
        prepared = [
            (None, row.failure)
            if row.failure is not None
            else prepare_image(row.image, self.image_processor, self.source.base_dir)
            for row in rows
        ]
        readable = [pixel_values for pixel_values, _ in prepared if pixel_values is not None]
        return {
            "shard": shard,
            "last": False,
            "row_ids": [row.row_id for row in rows],
            "columns": [row.columns for row in rows],
            "failures": [reason for _, reason in prepared],
            "pixel_values": torch.stack(readable) if readable else None,
        }


def _encode_batches(loader, model) -> Iterator[tuple[dict, np.ndarray | None]]:
    """
    `(batch, codes)` for each batch of `loader`. A batch goes to the device with a `non_blocking` copy, and its codes
    are read back only once the next batch has been handed to the model, so that a GPU never waits for the host.
    """
    in_flight = None
    for batch in loader:
        pixel_values = batch.get("pixel_values")
        codes = model.encode(pixel_values.to(model.device, non_blocking=True)) if pixel_values is not None else None
        if in_flight is not None:
            yield in_flight[0], None if in_flight[1] is None else in_flight[1].cpu().numpy()
        in_flight = batch, codes
    if in_flight is not None:
        yield in_flight[0], None if in_flight[1] is None else in_flight[1].cpu().numpy()


def _tokenize_shards(source, store, shards, model, image_processor, batch_size, num_workers, bar) -> None:
    """Tokenize `shards` (shard -> what `source.read_shard` reads), writing each once its last batch is encoded."""
    loader = torch.utils.data.DataLoader(
        _PreparedBatches(source, shards, image_processor, batch_size),
        batch_size=None,
        num_workers=num_workers,
        pin_memory=model.device.type == "cuda",
    )
    features = source.features(model.config)
    dtype = features[CODES_COLUMN].feature.dtype
    open_shards, failed = {}, 0  # with workers, several shards are in progress at once
    for batch, codes in _encode_batches(loader, model):
        shard = open_shards.setdefault(batch["shard"], {"row_ids": [], "codes": [], "columns": [], "errors": []})
        if batch["last"]:
            del open_shards[batch["shard"]]
            record = {
                "shard": batch["shard"],
                "read": len(shard["row_ids"]) + len(shard["errors"]),
                "tokenized": len(shard["row_ids"]),
                "failed": len(shard["errors"]),
                "errors": shard["errors"],
            }
            store.write(
                batch["shard"], _shard_table(features, shard["row_ids"], shard["codes"], shard["columns"]), record
            )
            continue
        readable = iter([] if codes is None else codes.astype(dtype))
        for row_id, columns, reason in zip(batch["row_ids"], batch["columns"], batch["failures"]):
            if reason is not None:
                shard["errors"].append({ROW_ID_COLUMN: row_id, "reason": reason})
                failed += 1
            else:
                shard["row_ids"].append(row_id)
                shard["codes"].append(next(readable))
                shard["columns"].append(columns)
        bar.update(len(batch["row_ids"]))
        bar.set_postfix(failed=failed)
