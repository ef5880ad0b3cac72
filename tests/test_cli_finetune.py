"""`seed-hf finetune`: inputs checked before training, no pickles beyond Trainer's resume state, the README example."""

import json
import re
import shlex
import zipfile
from pathlib import Path

import pytest
from datasets import Dataset
from PIL import Image
from safetensors import safe_open
from transformers import OPTConfig

from seed_hf.cli import main as cli_main

from conftest import REPO_ROOT, assert_fails, tiny_config
from seed_opt_helpers import tiny_processor, tiny_seed_opt

# What Trainer itself pickles (torch.save) into a checkpoint to resume from it, as the README says.
TRAINER_RESUME_PICKLES = {"optimizer.pt", "scheduler.pt", "rng_state.pth"}
FAST = ["--per_device_train_batch_size", "2", "--report_to", "none", "--disable_tqdm", "true", "--use_cpu"]


def is_pickle(path: Path) -> bool:
    """A torch.save archive (a zip holding a .pkl) or a bare pickle (protocol 2+ starts with 0x80)."""
    if path.suffix == ".safetensors":
        safe_open(str(path), "pt").keys()  # raises on anything but safetensors
        return False
    if zipfile.is_zipfile(path):
        return any(name.endswith(".pkl") for name in zipfile.ZipFile(path).namelist())
    return path.read_bytes()[:1] == b"\x80"


@pytest.fixture(scope="module")
def folders(tokenizer, tmp_path_factory):
    """A tiny SEED-OPT, one without a SEED tokenizer inside, a SEED tokenizer, a plain OPT, and datasets."""
    root = tmp_path_factory.mktemp("finetune")
    for name, vision_seed in (("seed-opt", 0), ("seed-opt-codes-only", None)):
        tiny_seed_opt(tokenizer, vision_seed=vision_seed).save_pretrained(root / name)
        tiny_processor(tokenizer).save_pretrained(root / name)
    tiny_config().save_pretrained(root / "seed-tokenizer")
    OPTConfig(hidden_size=16, num_hidden_layers=1, ffn_dim=32, num_attention_heads=2).save_pretrained(root / "opt")
    codes = [[row] * 32 for row in range(4)]
    captions = ["a red circle", "a blue square", "a green ring", "a red star"]
    Dataset.from_dict({"codes": codes, "caption": captions}).save_to_disk(str(root / "codes"))
    Dataset.from_dict({"codes": codes, "text": captions}).save_to_disk(str(root / "no-caption"))
    Dataset.from_dict({"caption": captions}).save_to_disk(str(root / "captions-only"))
    images = [Image.new("RGB", (28, 28), (60 * row, 0, 0)) for row in range(4)]
    Dataset.from_dict({"image": images, "caption": captions}).save_to_disk(str(root / "images"))
    return root


def finetune(root: Path, model: str, dataset: str, output: str = "out", *extra: str) -> int:
    arguments = ["finetune", "--model", str(root / model), "--dataset", str(root / dataset)]
    return cli_main([*arguments, "--output_dir", str(root / output), "--max_steps", "1", *FAST, *extra])


def test_missing_local_paths_are_named(folders, capsys):
    assert_fails(
        capsys,
        r"--model .*does-not-exist: no such file or folder",
        lambda: finetune(folders, "does-not-exist", "codes"),
    )
    assert_fails(
        capsys,
        r"--dataset .*does-not-exist: no such file or folder",
        lambda: finetune(folders, "seed-opt", "does-not-exist"),
    )
    assert_fails(
        capsys,
        r"--model \./seed-opt-2\.7b: no such file or folder",
        lambda: cli_main(
            ["finetune", "--model", "./seed-opt-2.7b", "--dataset", str(folders / "codes"), "--output_dir", "x"]
        ),
    )


def test_model_must_be_seed_opt(folders, capsys):
    assert_fails(
        capsys,
        r"'seed_vision_tokenizer' model, expected a SEED-OPT .*SEED image tokenizer",
        lambda: finetune(folders, "seed-tokenizer", "codes"),
    )
    assert_fails(
        capsys, r"'opt' model, expected a SEED-OPT model \('seed_opt'\)", lambda: finetune(folders, "opt", "codes")
    )
    assert_fails(
        capsys,
        r"--model .*/codes has no config.json: expected a SEED-OPT folder",
        lambda: finetune(folders, "codes", "codes"),
    )


def test_dataset_columns_are_checked_before_training(folders, capsys):
    assert_fails(
        capsys,
        r"has no caption column 'caption' \(columns: \['codes', 'text'\]\)",
        lambda: finetune(folders, "seed-opt", "no-caption"),
    )
    assert finetune(folders, "seed-opt", "no-caption", "out-text", "--text_column", "text") == 0
    assert_fails(
        capsys,
        r"needs a 'codes' column of SEED codes or an 'image' column of images",
        lambda: finetune(folders, "seed-opt", "captions-only"),
    )
    assert_fails(
        capsys,
        r"holds images but --model .* has no SEED tokenizer",
        lambda: finetune(folders, "seed-opt-codes-only", "images"),
    )
    assert not (folders / "out").exists()


def test_nothing_pickled_but_trainers_resume_state(folders):
    """
    The adapter folder holds no pickle (training arguments as JSON); each checkpoint holds exactly Trainer's resume
    pickles, which the README lists, and resuming from one works.
    """
    assert finetune(folders, "seed-opt", "codes", "pickles", "--max_steps", "2", "--save_steps", "1") == 0
    output = folders / "pickles"
    top_level = {path.name for path in output.iterdir() if path.is_file()}
    assert {"adapter_model.safetensors", "training_args.json", "trainer_state.json"} <= top_level
    assert not [path.name for path in output.iterdir() if path.is_file() and is_pickle(path)]
    assert json.loads((output / "training_args.json").read_text())["max_steps"] == 2

    checkpoints = sorted(output.glob("checkpoint-*"))
    assert [path.name for path in checkpoints] == ["checkpoint-1", "checkpoint-2"]
    for checkpoint in checkpoints:
        assert {path.name for path in checkpoint.iterdir() if is_pickle(path)} == TRAINER_RESUME_PICKLES
        assert (checkpoint / "training_args.json").is_file()
    readme = (REPO_ROOT / "README.md").read_text()
    assert all(f"`{name}`" in readme for name in TRAINER_RESUME_PICKLES)

    resumed = ["--max_steps", "2", "--resume_from_checkpoint", str(checkpoints[0])]
    assert finetune(folders, "seed-opt", "codes", "resumed", *resumed) == 0
    state = json.loads((folders / "resumed" / "trainer_state.json").read_text())
    assert state["global_step"] == 2


def test_readme_finetune_example_runs_on_this_machine(folders, tmp_path, monkeypatch):
    """The README's `seed-hf finetune` command, as written, against tiny stand-ins of the folders it names."""
    readme = (REPO_ROOT / "README.md").read_text()
    command = re.search(r"^seed-hf finetune .*?(?<!\\)$", readme, re.DOTALL | re.MULTILINE)[0]
    words = shlex.split(command.split("#")[0].replace("\\\n", " "))
    arguments = dict(zip(words[2::2], words[3::2]))
    (tmp_path / arguments["--model"]).symlink_to(folders / "seed-opt")
    (tmp_path / arguments["--dataset"]).symlink_to(folders / "codes")
    monkeypatch.chdir(tmp_path)
    assert cli_main(words[1:]) == 0
    assert (tmp_path / arguments["--output_dir"] / "adapter_model.safetensors").is_file()
