"""
The evaluation sets of `seed-hf evaluate`: rows with an id, an image and the columns a task reads, from a `datasets`
dataset (a `save_to_disk` folder, a data file or a Hub id) or from an image folder with a COCO-format annotation file.
"""

import json
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import PIL.Image
from datasets import Image as ImageFeature

from ..dataset_tokenization import image_source, load_image, load_input_dataset
from ..utils import looks_like_local_path


@dataclass
class EvaluationData:
    """
    Rows to evaluate.

    Args:
        description (`str`): what the data is, recorded in `run.json`.
        ids (`list[str]`): a unique id per row.
        images (`list`): what [`~dataset_tokenization.load_image`] reads for each row (a path, a dataset image cell).
        columns (`dict[str, list]`): the other columns the task reads, one value per row.
        base_dir (`Path`, *optional*): folder that relative image paths are relative to.
    """

    description: str
    ids: list[str]
    images: list
    columns: dict[str, list] = field(default_factory=dict)
    base_dir: Path | None = None

    def image(self, index: int):
        """The decoded image of row `index`; a `ValueError` that names the row when it cannot be read."""
        try:
            image = load_image(self.images[index], self.base_dir)
        except (OSError, ValueError) as error:
            raise ValueError(f"Cannot read the image of item {self.ids[index]}: {error}") from error
        return image.convert("RGB") if isinstance(image, PIL.Image.Image) else image

    def head(self, num_samples: int | None) -> "EvaluationData":
        """The first `num_samples` rows (all when `None`)."""
        if num_samples is None:
            return self
        if num_samples < 1:
            raise ValueError(f"--num-samples must be at least 1, got {num_samples}")
        return EvaluationData(
            f"{self.description} first {num_samples}",
            self.ids[:num_samples],
            self.images[:num_samples],
            {name: values[:num_samples] for name, values in self.columns.items()},
            self.base_dir,
        )


def _read_json(path: str, option: str):
    """The content of a JSON file named by `option`; a `ValueError` naming it when it is not JSON."""
    try:
        return json.loads(Path(path).read_text())
    except ValueError as error:
        raise ValueError(f"{option} {path} is not a JSON file: {error}") from None


def load_coco_annotations(image_dir: str, annotations: str) -> EvaluationData:
    """
    Rows of a COCO-format caption file (`{"images": [{"id", "file_name"}], "annotations": [{"image_id",
    "caption"}]}`, as `captions_val2014.json` or the Karpathy test split in that format): one row per image, in the
    file's order, with the list of its captions as column `captions`; images are read from `image_dir`.
    """
    for path, option in ((image_dir, "--dataset"), (annotations, "--annotations")):
        if not Path(path).exists():
            raise FileNotFoundError(f"No such file or folder: {path} ({option})")
    if not Path(image_dir).is_dir():
        raise ValueError(f"--dataset {image_dir} must be the image folder when --annotations is given")
    try:
        content = _read_json(annotations, "--annotations")
        images = content["images"]
        captions = defaultdict(list)
        for annotation in content.get("annotations", []):
            captions[str(annotation["image_id"])].append(annotation["caption"])
        ids = [str(image["id"]) for image in images]
        files = [image["file_name"] for image in images]
    except (ValueError, KeyError, TypeError) as error:
        raise ValueError(
            f"--annotations {annotations} is not a COCO-format caption file (images with id and file_name, "
            f"annotations with image_id and caption): {type(error).__name__}: {error}"
        ) from None
    if not ids:
        raise ValueError(f"--annotations {annotations} lists no images")
    return EvaluationData(
        f"COCO-format {Path(annotations).resolve()} images {Path(image_dir).resolve()}",
        ids,
        files,
        {"captions": [captions[item_id] for item_id in ids]},
        Path(image_dir),
    )


def _image_files(image_dir: Path) -> dict[str, str]:
    """
    The image files of `image_dir` by stem and, for numbered names such as COCO's `COCO_val2014_000000000042.jpg`, by
    the number that ends the stem (`"42"`), so that question files can name their images by id.
    """
    files = {}
    for path in sorted(image_dir.iterdir()):
        if path.is_file() and not path.name.startswith("."):
            files[path.stem] = path.name
            number = re.search(r"\d+$", path.stem)
            if number:
                files.setdefault(str(int(number[0])), path.name)
    return files


def load_vqa_files(image_dir: str, questions: str, annotations: str | None = None) -> EvaluationData:
    """
    Rows of the official question files, with images from `image_dir`: VQAv2 (`questions` such as
    `v2_OpenEnded_mscoco_val2014_questions.json` and `annotations` such as `v2_mscoco_val2014_annotations.json`, the
    10 annotators' answers of each question) or GQA (`questions` such as `testdev_balanced_questions.json`, which
    holds each answer). One row per question, in the file's order, id = the question id, with columns `question` and
    `answers` (a list for VQAv2, a string for GQA).
    """
    for path, option in ((image_dir, "--dataset"), (questions, "--questions"), (annotations, "--annotations")):
        if path is not None and not Path(path).exists():
            raise FileNotFoundError(f"No such file or folder: {path} ({option})")
    if not Path(image_dir).is_dir():
        raise ValueError(f"--dataset {image_dir} must be the image folder when --questions is given")
    content = _read_json(questions, "--questions")
    try:
        if isinstance(content, dict) and "questions" in content:
            if annotations is None:
                raise ValueError(
                    f"--questions {questions} holds VQAv2 questions: pass their answers with --annotations "
                    "(v2_mscoco_*_annotations.json)"
                )
            answers = {
                entry["question_id"]: [answer["answer"] for answer in entry["answers"]]
                for entry in _read_json(annotations, "--annotations")["annotations"]
            }
            rows = [
                (q["question_id"], q["image_id"], q["question"], answers[q["question_id"]])
                for q in content["questions"]
            ]
        else:
            if annotations is not None:
                raise ValueError(f"--questions {questions} holds GQA questions with their answers: drop --annotations")
            rows = [(key, entry["imageId"], entry["question"], entry["answer"]) for key, entry in content.items()]
    except (KeyError, TypeError, AttributeError) as error:
        raise ValueError(
            f"--questions {questions} is neither a VQAv2 question file (with --annotations, its answers) nor a GQA one "
            f"({type(error).__name__}: {error})"
        ) from None
    if not rows:
        raise ValueError(f"--questions {questions} holds no questions")
    files = _image_files(Path(image_dir))
    missing = sorted({str(image_id) for _, image_id, _, _ in rows if str(image_id) not in files})
    if missing:
        raise FileNotFoundError(f"No image in {image_dir} for image ids {missing[:5]} ({len(missing)} in all)")
    return EvaluationData(
        f"questions {Path(questions).resolve()} answers {annotations and Path(annotations).resolve()} "
        f"images {Path(image_dir).resolve()}",
        [str(question_id) for question_id, _, _, _ in rows],
        [files[str(image_id)] for _, image_id, _, _ in rows],
        {"question": [row[2] for row in rows], "answers": [row[3] for row in rows]},
        Path(image_dir),
    )


def load_evaluation_data(
    dataset: str,
    split: str | None = None,
    image_column: str = "image",
    columns: dict[str, str] | None = None,
    id_column: str | None = None,
    annotations: str | None = None,
) -> EvaluationData:
    """
    Rows of `dataset` with its image column and `columns` (task name -> dataset column), ids from `id_column` or the
    row index. With `annotations`, `dataset` is an image folder and the rows come from that COCO-format caption file
    ([`load_coco_annotations`]). When only images are needed, `dataset` may be anything `seed-hf tokenize` reads (an
    image folder or a file list too, ids then the relative paths).
    """
    columns = columns or {}
    if annotations is not None:
        data = load_coco_annotations(dataset, annotations)
        missing = sorted(set(columns) - set(data.columns))
        if missing:
            raise ValueError(f"A COCO-format caption file gives captions only, not {missing}")
        return data
    if not columns and id_column is None:
        source = image_source(dataset, split, image_column)
        if source.failures:
            index, reason = next(iter(source.failures.items()))
            raise ValueError(f"Cannot read {source.row_ids[index]} of --dataset {dataset}: {reason}")
        return EvaluationData(
            source.description, [str(row) for row in source.row_ids], source.images, {}, source.base_dir
        )
    if looks_like_local_path(dataset) and not Path(dataset).exists():
        raise FileNotFoundError(f"No such file or folder: {dataset} (--dataset)")
    rows, split = load_input_dataset(dataset, split)
    wanted = {"image": image_column, **columns, **({"id": id_column} if id_column else {})}
    missing = sorted({column for column in wanted.values() if column not in rows.column_names})
    if missing:
        raise ValueError(
            f"--dataset {dataset} has no column {missing} (columns: {rows.column_names}); name them with the "
            "--*-column options"
        )
    if len(rows) == 0:
        raise ValueError(f"--dataset {dataset} has no rows")
    if isinstance(rows.features[image_column], ImageFeature):
        rows = rows.cast_column(image_column, ImageFeature(decode=False))  # decoded one batch at a time
    ids = [str(value) for value in rows[id_column]] if id_column else [str(index) for index in range(len(rows))]
    return EvaluationData(
        f"dataset {dataset} split {split} ({rows._fingerprint})",
        ids,
        rows[image_column],
        {name: rows[column] for name, column in columns.items()},
        Path(dataset).parent if Path(dataset).is_file() else None,
    )


__all__ = ["EvaluationData", "load_coco_annotations", "load_evaluation_data", "load_vqa_files"]
