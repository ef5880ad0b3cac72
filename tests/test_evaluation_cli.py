"""`seed-hf evaluate` end to end on tiny stand-ins: each task runs, resumes after a kill, and runs on 2 processes."""

import functools
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch
from datasets import Dataset
from peft import get_peft_model
from transformers import CLIPImageProcessor

from seed_hf.cli import main as cli_main
from seed_hf.modeling_seed_opt import SeedOPTForConditionalGeneration
from seed_hf.training_seed_opt import seed_opt_lora_config

from conftest import REPO_ROOT, assert_fails
from seed_opt_helpers import tiny_processor, tiny_seed_opt
from test_evaluation_metrics import tiny_clip
from test_pipeline_seed_decode import tiny_pipeline

needs_java = pytest.mark.skipif(shutil.which("java") is None, reason="the COCO caption metrics run on Java")
ANSWERS = [["red"] * 10, ["2"] * 6 + ["two"] * 4, ["yes"] * 5 + ["no"] * 5, ["star"] * 10]
CAPTIONS = [["a red square", "a red box"], ["a blue circle"], ["a green ring", "a ring"], ["a black star"]]


def image(seed: int, size: int = 28) -> PIL.Image.Image:
    return PIL.Image.fromarray(np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8))


@pytest.fixture(scope="module")
def folders(tokenizer, tmp_path_factory):
    """A tiny SEED-OPT, decode pipeline and CLIP, and tiny caption, VQA, GQA and image sets."""
    root = tmp_path_factory.mktemp("evaluate")
    tiny_seed_opt(tokenizer).save_pretrained(root / "seed-opt")
    tiny_processor(tokenizer).save_pretrained(root / "seed-opt")
    tiny_pipeline().save_pretrained(root / "decode")
    tiny_clip()[0].save_pretrained(root / "clip")
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(
        root / "clip"
    )
    images = [image(seed) for seed in range(4)]
    Dataset.from_dict({"image": images, "captions": CAPTIONS}).save_to_disk(str(root / "captions"))
    questions = ["what color is it?", "how many?", "is it round?", "what shape?"]
    answers = ANSWERS
    Dataset.from_dict({"image": images, "question": questions, "answers": answers}).save_to_disk(str(root / "vqav2"))
    gqa = {"image": images, "question": questions, "answer": ["red", "2", "yes", "star"], "qid": list("abcd")}
    Dataset.from_dict(gqa).save_to_disk(str(root / "gqa"))
    (root / "images").mkdir()
    for index, picture in enumerate(images):
        picture.save(root / "images" / f"{index}.png")
    coco = {
        "images": [{"id": 10 + index, "file_name": f"{index}.png"} for index in range(4)],
        "annotations": [
            {"image_id": 10 + index, "caption": caption} for index, row in enumerate(CAPTIONS) for caption in row
        ],
    }
    (root / "coco.json").write_text(json.dumps(coco))
    # The official VQAv2 and GQA files, with COCO- and GQA-named images.
    (root / "val2014").mkdir()
    for index, picture in enumerate(images):
        picture.save(root / "val2014" / f"COCO_val2014_{10 + index:012d}.png")
        picture.save(root / "val2014" / f"n{index}.png")
    vqa_questions = [{"question_id": 100 + i, "image_id": 10 + i, "question": q} for i, q in enumerate(questions)]
    (root / "vqav2_questions.json").write_text(json.dumps({"data_subtype": "val2014", "questions": vqa_questions}))
    vqa_answers = [
        {"question_id": 100 + i, "answers": [{"answer": answer, "answer_id": j} for j, answer in enumerate(row)]}
        for i, row in enumerate(answers)
    ]
    (root / "vqav2_answers.json").write_text(json.dumps({"annotations": vqa_answers}))
    gqa_questions = {f"q{i}": {"imageId": f"n{i}", "question": q, "answer": "red"} for i, q in enumerate(questions)}
    (root / "gqa_questions.json").write_text(json.dumps(gqa_questions))
    hub_answers = [[{"answer": answer, "answer_id": j} for j, answer in enumerate(row)] for row in answers]
    Dataset.from_dict({"image": images, "question": questions, "answers": hub_answers}).save_to_disk(
        str(root / "vqav2-hub")
    )
    return root


def caption(root: Path, output: str, *extra: str) -> int:
    arguments = ["evaluate", "caption", "--model", str(root / "seed-opt"), "--dataset", str(root / "captions")]
    return cli_main([*arguments, "-o", str(root / output), "--batch-size", "2", "--max-new-tokens", "4", *extra])


def vqa(root: Path, output: str, *extra: str) -> list[str]:
    arguments = ["evaluate", "vqa", "--model", str(root / "seed-opt"), "--dataset", str(root / "vqav2")]
    return [*arguments, "-o", str(root / output), "--batch-size", "2", "--max-new-tokens", "3", *extra]


def reconstruction(root: Path, output: str, *extra: str) -> int:
    arguments = ["evaluate", "reconstruction", "--pipeline", str(root / "decode"), "--clip", str(root / "clip")]
    arguments += ["--dataset", str(root / "images"), "--steps", "2", "--batch-size", "3"]
    return cli_main([*arguments, "-o", str(root / output), *extra])


def read(folder: Path) -> tuple[list[dict], dict]:
    lines = (folder / "predictions.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines], json.loads((folder / "metrics.json").read_text())


def cut_short(folder: Path, keep: int) -> None:
    """What a kill leaves: the first `keep` records, half of the next one, no metrics."""
    lines = (folder / "predictions.jsonl").read_text().splitlines(keepends=True)
    (folder / "predictions.jsonl").write_text("".join(lines[:keep]) + lines[keep][:10])
    (folder / "metrics.json").unlink()


@pytest.fixture
def count_generated(monkeypatch):
    """Counts the sequences SEED-OPT generates."""
    counts = []
    generate = SeedOPTForConditionalGeneration.generate

    def counting(self, *args, **kwargs):
        counts.append(len(kwargs["input_ids"]))
        return generate(self, *args, **kwargs)

    monkeypatch.setattr(SeedOPTForConditionalGeneration, "generate", counting)
    return counts


@needs_java
def test_caption_runs_and_resumes_with_equal_metrics(folders, count_generated, capsys):
    assert caption(folders, "caption") == 0
    records, metrics = read(folders / "caption")
    assert [record["id"] for record in records] == ["0", "1", "2", "3"]
    assert [record["references"] for record in records] == CAPTIONS
    assert set(metrics["metrics"]) == {"BLEU-4", "METEOR", "ROUGE-L", "CIDEr"}
    assert metrics["paper"] == {"CIDEr": 119.0} and "SPICE" in metrics["skipped"]
    table = (folders / "caption" / "metrics.md").read_text()
    assert "| CIDEr |" in table and "119.00" in table
    assert "| CIDEr |" in capsys.readouterr().out
    assert json.loads((folders / "caption" / "run.json").read_text())["num_beams"] == 5  # the paper's beam search

    cut_short(folders / "caption", keep=2)
    count_generated.clear()
    assert caption(folders, "caption") == 0
    assert count_generated == [2]  # only the last batch again
    assert read(folders / "caption") == (records, metrics)


@needs_java
def test_caption_reads_an_image_folder_with_coco_annotations(folders):
    arguments = ["--dataset", str(folders / "images"), "--annotations", str(folders / "coco.json")]
    assert caption(folders, "caption-coco", *arguments, "--num-samples", "3") == 0
    records, metrics = read(folders / "caption-coco")
    assert [record["id"] for record in records] == ["10", "11", "12"]
    assert [record["references"] for record in records] == CAPTIONS[:3]
    assert metrics["items"] == 3


def test_vqa_runs_and_resumes_with_equal_metrics(folders, count_generated):
    assert cli_main(vqa(folders, "vqa")) == 0
    records, metrics = read(folders / "vqa")
    assert len(records) == 4 and all(isinstance(record["answer"], str) for record in records)
    assert metrics["paper"] == {"accuracy": 42.8} and 0 <= metrics["metrics"]["accuracy"] <= 100
    prompt = json.loads((folders / "vqa" / "run.json").read_text())["prompt"]
    assert prompt == "<image>Question: {question} Answer:"

    cut_short(folders / "vqa", keep=3)
    count_generated.clear()
    assert cli_main(vqa(folders, "vqa")) == 0
    assert count_generated == [1]  # the one item of the last batch not written
    assert read(folders / "vqa") == (records, metrics)


def test_gqa_exact_match_with_an_id_column(folders):
    extra = ["--dataset", str(folders / "gqa"), "--benchmark", "gqa", "--id-column", "qid"]
    assert cli_main(vqa(folders, "gqa-out", *extra)) == 0
    records, metrics = read(folders / "gqa-out")
    assert [record["id"] for record in records] == list("abcd")
    assert metrics["paper"] == {"accuracy": 28.8}


def test_vqa_reads_the_official_question_files(folders, capsys):
    vqav2 = ["--dataset", str(folders / "val2014"), "--questions", str(folders / "vqav2_questions.json")]
    assert cli_main(vqa(folders, "vqa-files", *vqav2, "--annotations", str(folders / "vqav2_answers.json"))) == 0
    records, _ = read(folders / "vqa-files")
    assert [record["id"] for record in records] == ["100", "101", "102", "103"]
    assert [record["references"] for record in records] == ANSWERS
    gqa = ["--dataset", str(folders / "val2014"), "--questions", str(folders / "gqa_questions.json")]
    assert cli_main(vqa(folders, "gqa-files", *gqa, "--benchmark", "gqa")) == 0
    records, _ = read(folders / "gqa-files")
    assert [(record["id"], record["references"]) for record in records] == [(f"q{i}", "red") for i in range(4)]
    assert_fails(
        capsys, "pass their answers with --annotations", lambda: cli_main(vqa(folders, "vqa-files-2", *vqav2))
    )


def test_vqa_reads_hub_style_answer_dicts(folders):
    assert cli_main(vqa(folders, "vqa-hub", "--dataset", str(folders / "vqav2-hub"))) == 0
    assert [record["references"] for record in read(folders / "vqa-hub")[0]] == ANSWERS


def test_vqa_merges_an_adapter(folders, tokenizer, capsys):
    base = tiny_seed_opt(tokenizer)
    model = get_peft_model(base, seed_opt_lora_config(base.config))
    model.save_pretrained(folders / "adapter-at-init")
    for name, parameter in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(parameter, std=1.0, generator=torch.Generator().manual_seed(0))
    model.save_pretrained(folders / "adapter-trained")
    assert cli_main(vqa(folders, "vqa-base")) == 0
    assert cli_main(vqa(folders, "vqa-at-init", "--adapter", str(folders / "adapter-at-init"))) == 0
    assert cli_main(vqa(folders, "vqa-trained", "--adapter", str(folders / "adapter-trained"))) == 0
    base, at_init, trained = (read(folders / name)[0] for name in ("vqa-base", "vqa-at-init", "vqa-trained"))
    assert at_init == base  # LoRA starts as a no-op
    assert trained != base
    missing = vqa(folders, "vqa-missing", "--adapter", str(folders / "no-adapter"))
    assert_fails(capsys, "--adapter", lambda: cli_main(missing))


def test_reconstruction_runs_and_resumes_with_equal_metrics(folders):
    assert reconstruction(folders, "reconstruction") == 0
    records, metrics = read(folders / "reconstruction")
    assert [record["id"] for record in records] == ["0.png", "1.png", "2.png", "3.png"]
    assert all(len(record["codes"]) == 32 for record in records)
    measured = metrics["metrics"]
    assert -100 <= measured["CLIP similarity"] <= 100
    assert 1 <= measured["distinct_codes"] <= 64 and 1 <= measured["perplexity"] <= measured["distinct_codes"]
    assert metrics["paper"] == {"CLIP similarity": 68.23}

    cut_short(folders / "reconstruction", keep=1)
    assert reconstruction(folders, "reconstruction") == 0
    resumed_records, resumed_metrics = read(folders / "reconstruction")
    assert [record["codes"] for record in resumed_records] == [record["codes"] for record in records]
    assert resumed_metrics["metrics"] == pytest.approx(measured)


def test_two_processes_equal_one(folders):
    """torchrun with 2 CPU processes (gloo) writes the same predictions and metrics as one process."""
    assert cli_main(vqa(folders, "vqa-one")) == 0
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "-m", "seed_hf.cli"]
    environment = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    subprocess.run([*command, *vqa(folders, "vqa-two")], check=True, env=environment, capture_output=True, timeout=300)
    one, two = read(folders / "vqa-one"), read(folders / "vqa-two")
    assert two[0] == one[0]
    assert two[1]["metrics"] == one[1]["metrics"]
    assert not list((folders / "vqa-two").glob("predictions.process-*"))


def test_refuses_other_folders_and_other_settings(folders, tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("keep me")
    assert_fails(capsys, "holds no run.json", lambda: cli_main(vqa(folders, "unused", "-o", str(tmp_path))))
    assert (tmp_path / "notes.txt").read_text() == "keep me"
    assert cli_main(vqa(folders, "settings")) == 0
    other_settings = vqa(folders, "settings", "--max-new-tokens", "2")
    assert_fails(capsys, "other settings \\(max_new_tokens\\).*--overwrite", lambda: cli_main(other_settings))
    assert cli_main(vqa(folders, "settings", "--max-new-tokens", "2", "--overwrite")) == 0


def test_caption_needs_java_before_it_starts(folders, monkeypatch, capsys):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    assert_fails(capsys, "need a Java runtime", lambda: caption(folders, "caption-no-java"))
    assert not (folders / "caption-no-java").exists()


def test_bad_inputs_raise_clear_errors(folders, capsys):
    for pattern, extra in (
        ("missing", ["--dataset", str(folders / "missing")]),
        ("no column \\['answers'\\]", ["--dataset", str(folders / "gqa")]),
        ("needs one answer string per row", ["--benchmark", "gqa", "--answers-column", "answers"]),
        ("must hold \\{question\\}", ["--prompt", "<image>Answer:"]),
        ("/clip is a model folder of another kind .*, not a SEED-OPT folder", ["--model", str(folders / "clip")]),
        ("no such file or folder: \\./seed-opt-2\\.7b", ["--model", "./seed-opt-2.7b"]),
        ("--batch-size must be at least 1", ["--batch-size", "0"]),
    ):
        assert_fails(capsys, pattern, functools.partial(cli_main, vqa(folders, "errors", *extra)))


def test_reconstruction_checks_its_model_folders(folders, tmp_path, capsys):
    """--pipeline and --clip get the shared folder checks before loading, and a clear error when loading fails."""
    pattern = "/seed-opt is a SEED-OPT folder, not a SeedDecodePipeline folder"
    assert_fails(capsys, pattern, lambda: reconstruction(folders, "errors", "--pipeline", str(folders / "seed-opt")))
    assert_fails(
        capsys,
        "no such file or folder: .*/no-clip",
        lambda: reconstruction(folders, "errors", "--clip", str(folders / "no-clip")),
    )
    clip = shutil.copytree(folders / "clip", tmp_path / "clip")
    config = json.loads((clip / "config.json").read_text())
    (clip / "config.json").write_text(json.dumps({**config, "projection_dim": 6}))
    pattern = f"cannot load {re.escape(str(clip))}: its weights do not fit its config"
    assert_fails(capsys, pattern, lambda: reconstruction(folders, "errors", "--clip", str(clip)))
