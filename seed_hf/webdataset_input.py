"""
Web-scale inputs of `seed-hf tokenize`, read shard by shard and streamed, never listed row by row up front.

- [`ShardFilesSource`]: webdataset tar shards as img2dataset writes them (`KEY.jpg`/`.png`/`.webp`..., `KEY.txt`
  caption, `KEY.json` metadata) and parquet or Arrow files with image bytes, named by a brace pattern such as
  `shards/{00000..00127}.tar`, local or at any fsspec URL; tar members are read with `tarfile` in stream mode.
- [`StreamingSource`]: a 🤗 `IterableDataset` (a Hub dataset loaded with `streaming=True`), shard by shard.

Each input shard becomes one output shard of [`~dataset_tokenization.tokenize_to_disk`], the unit of work, of
distribution over processes and nodes, and of resumption.
"""

import json
import re
import tarfile
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
import xxhash
from datasets import Features, IterableDataset, IterableDatasetDict, Value, load_dataset
from datasets import Image as ImageFeature

from .dataset_tokenization import CODES_COLUMN, ROW_ID_COLUMN, Row, codes_feature, image_source
from .utils import looks_like_local_path

# Members of a tar sample that hold its image, in order of preference when a sample has several.
IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp", "bmp", "gif", "tif", "tiff")
# Output column of a tar sample's `KEY.txt`.
CAPTION_COLUMN = "caption"
# Columns that name the rows of tabular inputs, when `id_column` is not given: webdataset's and img2dataset's.
KEY_COLUMNS = ("__key__", "key")
SHARD_KINDS = {".tar": "tar", ".tgz": "tar", ".tar.gz": "tar", ".parquet": "parquet", ".arrow": "arrow"}
_BRACES = re.compile(r"\{([^{}]*)\}")


def expand_shard_pattern(pattern: str) -> list[str]:
    """
    The names a brace pattern stands for, in order: `{00000..00127}` is a zero-padded range (the width of the first
    bound), `{a,b}` a list; several braces multiply. A name without braces stands for itself.

    Example:

    ```python
    >>> expand_shard_pattern("s3://bucket/{a,b}-{08..10}.tar")
    ['s3://bucket/a-08.tar', 's3://bucket/a-09.tar', 's3://bucket/a-10.tar', 's3://bucket/b-08.tar', ...]
    ```
    """
    match = _BRACES.search(pattern)
    if match is None:
        return [pattern]
    body = match.group(1)
    if ".." in body:
        first, _, last = body.partition("..")
        if not (first.isdigit() and last.isdigit() and int(first) <= int(last)):
            raise ValueError(
                f"Cannot expand {{{body}}} in {pattern}: expected {{FIRST..LAST}} with integers FIRST <= LAST, "
                "e.g. {00000..00127}"
            )
        choices = [f"{number:0{len(first)}d}" for number in range(int(first), int(last) + 1)]
    else:
        choices = body.split(",")
    head, tails = pattern[: match.start()], expand_shard_pattern(pattern[match.end() :])
    return [head + choice + tail for choice in choices for tail in tails]


def is_shard_input(name: str) -> bool:
    """Whether INPUT names shard files: a brace pattern, an fsspec URL, or a tar file."""
    return "://" in name or _BRACES.search(name) is not None or _shard_kind(name) == "tar"


def _shard_kind(name: str) -> str | None:
    return next((kind for suffix, kind in SHARD_KINDS.items() if name.lower().endswith(suffix)), None)


def _digest(names: Sequence[str]) -> str:
    return xxhash.xxh3_128("\n".join(names).encode()).hexdigest()


def _as_text(value) -> str | None:
    """A JSON metadata value as a string column cell: strings as they are, other values as JSON, `None` kept."""
    return value if value is None or isinstance(value, str) else json.dumps(value)


def iter_tar_samples(fileobj) -> Iterator[tuple[str, dict[str, bytes]]]:
    """
    `(key, {extension: bytes})` for each sample of a webdataset tar stream: consecutive regular-file members that
    share a key (the member's path up to the first dot of its file name); extensions are lowercased.
    """
    key, members = None, {}
    with tarfile.open(fileobj=fileobj, mode="r|*") as archive:
        for member in archive:
            if not member.isfile():
                continue
            folder, _, name = member.name.removeprefix("./").rpartition("/")
            stem, _, extension = name.partition(".")
            member_key = f"{folder}/{stem}" if folder else stem
            if member_key != key and key is not None:
                yield key, members
                members = {}
            key = member_key
            members[extension.lower()] = archive.extractfile(member).read()
    if key is not None:
        yield key, members


def _tar_row(key: str, members: dict[str, bytes], metadata_columns: Sequence[str]) -> Row:
    """The row of one tar sample: its image member, its caption and the chosen fields of its `.json`."""
    columns = {CAPTION_COLUMN: members["txt"].decode("utf-8", "replace") if "txt" in members else None}
    metadata, failure = {}, None
    if metadata_columns and "json" in members:
        try:
            metadata = json.loads(members["json"])
            if not isinstance(metadata, dict):
                raise ValueError(f"expected a JSON object, got {type(metadata).__name__}")
        except ValueError as error:
            metadata, failure = {}, f"unreadable {key}.json: {error}"
    columns.update({name: _as_text(metadata.get(name)) for name in metadata_columns})
    extension = next((extension for extension in IMAGE_EXTENSIONS if extension in members), None)
    if extension is None:
        found = ", ".join(f".{extension}" for extension in members) or "nothing"
        failure = f"no image member (found {found}; expected one of .{', .'.join(IMAGE_EXTENSIONS)})"
    return Row(key, members.get(extension), columns, failure)


def _tabular_row(record: dict, default_id: str, image_column: str, id_column, metadata_columns) -> Row:
    image = record[image_column]
    return Row(
        row_id=default_id if id_column is None else str(record[id_column]),
        image=image,
        columns={name: record[name] for name in metadata_columns},
        failure=None if image is not None else f"no image in column {image_column!r}",
    )


def _carried_features(features: Features, what: str, image_column: str, id_column, metadata_columns) -> Features:
    """The features of the carried columns, after checking that every named column exists."""
    missing = [name for name in (image_column, id_column, *metadata_columns) if name and name not in features]
    if missing:
        raise ValueError(f"{what} has no column {missing}; its columns are {list(features)}")
    clashes = [name for name in metadata_columns if name in (ROW_ID_COLUMN, CODES_COLUMN)]
    if clashes:
        raise ValueError(f"Cannot carry over {clashes}: the output writes these columns itself")
    return Features({name: features[name] for name in metadata_columns})


def _output_features(model_config, carried: Features) -> Features:
    return Features({ROW_ID_COLUMN: Value("string"), CODES_COLUMN: codes_feature(model_config), **carried})


def _default_id_column(features: Features, id_column: str | None) -> str | None:
    return id_column or next((name for name in KEY_COLUMNS if name in features), None)


@dataclass
class ShardFilesSource:
    """
    Rows of shard files, one output shard per file, in the order of the pattern. Row id: the sample key for tar
    shards; for parquet/Arrow shards, `id_column` (by default `__key__` or `key` when present), else
    `SHARD/POSITION` (the shard's number in the pattern and the row's position in it).

    Build it with [`shard_files_source`].
    """

    pattern: str
    urls: list[str]
    kind: str
    image_column: str
    id_column: str | None
    metadata_columns: tuple[str, ...]
    carried: Features
    base_dir: None = None

    @property
    def description(self) -> str:
        return f"{self.kind} shards {self.pattern}"

    def features(self, model_config) -> Features:
        return _output_features(model_config, self.carried)

    def shards(self, shard_size: int | None = None) -> list[tuple[int, str]]:
        """One `(number, url)` per file: `shard_size` does not apply, the files are the shards."""
        return list(enumerate(self.urls))

    def shard_length(self, shard) -> None:
        return None  # known only once read

    def identity(self) -> dict:
        return {"input": self.description, "shard_files": _digest(self.urls)}

    def read_shard(self, shard: tuple[int, str]) -> Iterator[Row]:
        number, url = shard
        read = 0
        try:
            with fsspec.open(url, "rb") as file:
                for row in self._rows(file, number):
                    read += 1
                    yield row
        except (tarfile.TarError, EOFError, zlib.error, pa.ArrowInvalid, FileNotFoundError) as error:
            # A truncated, corrupt or missing file: the rows read so far are kept, the rest is listed as one failure.
            # Other errors (a network failure...) stop the run, so that the shard is read again when it resumes.
            yield Row(url, failure=f"shard unreadable after {read} rows: {type(error).__name__}: {error}")

    def _rows(self, file, number: int) -> Iterator[Row]:
        if self.kind == "tar":
            for key, members in iter_tar_samples(file):
                yield _tar_row(key, members, self.metadata_columns)
            return
        columns = [name for name in (self.image_column, self.id_column, *self.metadata_columns) if name]
        if self.kind == "parquet":
            batches = pq.ParquetFile(file).iter_batches(batch_size=256, columns=columns)
        else:
            batches = pa.ipc.open_stream(file)
        position = 0
        for batch in batches:
            for record in batch.select(columns).to_pylist():
                yield _tabular_row(
                    record, f"{number:05d}/{position}", self.image_column, self.id_column, self.metadata_columns
                )
                position += 1


def shard_files_source(
    pattern: str, image_column: str = "image", id_column: str | None = None, metadata_columns: Sequence[str] = ()
) -> ShardFilesSource:
    """
    The [`ShardFilesSource`] of a brace pattern (see [`expand_shard_pattern`]) of `.tar` (also `.tar.gz`, `.tgz`),
    `.parquet` or `.arrow` (Arrow IPC streams, as `datasets` writes them) files, local or fsspec URLs. For tar shards,
    the output has a `caption` column (from `KEY.txt`) and the `metadata_columns` read from `KEY.json`, stored as
    strings (numbers as their JSON text); for parquet/Arrow shards, `image_column` holds the image (bytes or a
    `datasets.Image` cell) and the `metadata_columns` keep their types.
    """
    urls = expand_shard_pattern(pattern)
    kinds = {_shard_kind(url) for url in urls}
    if len(kinds) != 1 or None in kinds:
        raise ValueError(f"{pattern}: expected shard files that all end in one of {', '.join(SHARD_KINDS)}")
    [kind] = kinds
    for protocol in {url.split("://")[0] for url in urls if "://" in url}:
        try:
            fsspec.get_filesystem_class(protocol)
        except (ImportError, ValueError) as error:
            raise ValueError(f"Cannot read {protocol}:// shards: {error}") from None
    local = [Path(url.removeprefix("file://")) for url in urls if "://" not in url or url.startswith("file://")]
    missing = [str(path) for path in local if not path.is_file()]
    if missing:
        raise FileNotFoundError(f"{len(missing)} of the {len(urls)} shards of {pattern} do not exist: {missing[0]}...")
    metadata_columns = tuple(metadata_columns)
    if kind == "tar":
        if id_column:
            raise ValueError("id_column (--id-column) does not apply to tar shards: the row id is the sample key")
        if CAPTION_COLUMN in metadata_columns or len(set(metadata_columns)) < len(metadata_columns):
            raise ValueError(f"metadata columns {list(metadata_columns)} repeat a name or {CAPTION_COLUMN!r}")
        carried = Features({CAPTION_COLUMN: Value("string"), **{name: Value("string") for name in metadata_columns}})
        return ShardFilesSource(pattern, urls, kind, image_column, None, metadata_columns, carried)
    with fsspec.open(urls[0], "rb") as file:
        schema = pq.read_schema(file) if kind == "parquet" else pa.ipc.open_stream(file).schema
    features = Features.from_arrow_schema(schema)
    id_column = _default_id_column(features, id_column)
    carried = _carried_features(features, f"shard {urls[0]}", image_column, id_column, metadata_columns)
    return ShardFilesSource(pattern, urls, kind, image_column, id_column, metadata_columns, carried)


@dataclass
class StreamingSource:
    """
    Rows of a 🤗 `IterableDataset`, one output shard per shard of the dataset (`dataset.num_shards`: its files),
    each read with `dataset.shard`. Row id: `id_column` (by default `__key__` or `key` when present), else
    `SHARD/POSITION`. Build it with [`streaming_source`].
    """

    description: str
    dataset: IterableDataset
    image_column: str
    id_column: str | None
    metadata_columns: tuple[str, ...]
    carried: Features
    base_dir: None = None

    def features(self, model_config) -> Features:
        return _output_features(model_config, self.carried)

    def shards(self, shard_size: int | None = None) -> list[int]:
        """The dataset's own shards: `shard_size` does not apply."""
        return list(range(self.dataset.num_shards))

    def shard_length(self, shard) -> None:
        return None

    def identity(self) -> dict:
        return {"input": self.description}

    def read_shard(self, shard: int) -> Iterator[Row]:
        part = self.dataset.shard(num_shards=self.dataset.num_shards, index=shard)
        for position, record in enumerate(part):
            yield _tabular_row(
                record, f"{shard:05d}/{position}", self.image_column, self.id_column, self.metadata_columns
            )


def streaming_source(
    dataset: IterableDataset,
    description: str,
    image_column: str = "image",
    id_column: str | None = None,
    metadata_columns: Sequence[str] = (),
) -> StreamingSource:
    """
    The [`StreamingSource`] of an `IterableDataset` with known features; `description` names it in the run record (a
    partial run resumes only on the same description and number of shards). Images are decoded by the tokenizer, so
    that a broken one becomes that row's error.
    """
    if not isinstance(dataset, IterableDataset):
        raise ValueError(f"Expected a datasets.IterableDataset, got {type(dataset).__name__}")
    if dataset.features is None:
        raise ValueError(f"{description} does not declare its features; cast it to known features first")
    id_column = _default_id_column(dataset.features, id_column)
    carried = _carried_features(dataset.features, description, image_column, id_column, metadata_columns)
    dataset = dataset.select_columns([name for name in (image_column, id_column, *metadata_columns) if name])
    if isinstance(dataset.features[image_column], ImageFeature):
        dataset = dataset.cast_column(image_column, ImageFeature(decode=False))
    return StreamingSource(description, dataset, image_column, id_column, tuple(metadata_columns), carried)


def input_source(
    input_path: str,
    split: str | None = None,
    image_column: str = "image",
    id_column: str | None = None,
    metadata_columns: Sequence[str] = (),
    streaming: bool = False,
):
    """
    What `seed-hf tokenize` reads from INPUT: with `streaming`, the dataset `load_dataset(INPUT, streaming=True)`
    loads (a Hub id or a local data folder); shard files (see [`is_shard_input`]); otherwise a folder, file list or
    dataset (see [`~dataset_tokenization.image_source`]).
    """
    if streaming:
        if looks_like_local_path(input_path) and not Path(input_path).exists():
            raise FileNotFoundError(f"No such file or folder: {input_path}")
        dataset = load_dataset(input_path, split=split, streaming=True)
        if isinstance(dataset, IterableDatasetDict):
            if len(dataset) > 1:
                raise ValueError(f"{input_path} has several splits {list(dataset)}: choose one with --split")
            [(split, dataset)] = dataset.items()
        description = f"streaming dataset {input_path} split {split} ({dataset.num_shards} shards)"
        return streaming_source(dataset, description, image_column, id_column, metadata_columns)
    if is_shard_input(input_path):
        return shard_files_source(input_path, image_column, id_column, metadata_columns)
    if id_column:
        raise ValueError("--id-column applies to shard files and streaming datasets; other inputs have their own ids")
    return image_source(input_path, split, image_column, metadata_columns)


__all__ = [
    "ShardFilesSource",
    "StreamingSource",
    "expand_shard_pattern",
    "input_source",
    "is_shard_input",
    "iter_tar_samples",
    "shard_files_source",
    "streaming_source",
]
