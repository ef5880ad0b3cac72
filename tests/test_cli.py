"""
The `seed-hf` top level: anticipated failures end in one `error:` line, the model/pipeline argument check shared by
the commands, `reconstruct`'s argument errors, and a start-up that leaves diffusers, datasets and peft unloaded.
"""

import errno
import json
import os
import shutil
import subprocess
import sys

import pytest
from huggingface_hub.errors import HFValidationError, LocalEntryNotFoundError, OfflineModeIsEnabled
from safetensors import SafetensorError

from seed_hf import cli
from seed_hf.commands import info, resolve_pretrained_path

from conftest import REPO_ROOT
from test_pipeline_seed_decode import tiny_pipeline


def run_python(*arguments: str, timeout: int = 300) -> subprocess.CompletedProcess:
    """`python ARGUMENTS` in a fresh process on this source tree, offline, without SEED_HF_DEBUG."""
    env = {key: value for key, value in os.environ.items() if key != "SEED_HF_DEBUG"}
    env.update(PYTHONPATH=str(REPO_ROOT), HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    return subprocess.run(
        [sys.executable, *arguments], env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout
    )


def error_line(capsys) -> str:
    """The single line the failed command printed on stderr (asserted single), without its `error: ` prefix."""
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), lines
    return lines[0].removeprefix("error: ")


@pytest.fixture(scope="module")
def seed_opt_dir(tmp_path_factory, tokenizer, model):
    folder = tmp_path_factory.mktemp("seed-opt")
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def decode_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("seed-decode")
    tiny_pipeline().save_pretrained(folder)
    return folder


# The top level: every anticipated exception of a command becomes one line and exit status 1.


@pytest.mark.parametrize(
    "error, message",
    [
        (ValueError("the column 'caption' is missing;\n  the dataset has: text, image"), None),
        (FileNotFoundError(errno.ENOENT, "No such file or directory", "photoz"), "photoz"),
        (PermissionError(errno.EACCES, "Permission denied", "/read-only/out"), "Permission denied"),
        (FileExistsError("out exists; pass --overwrite to replace it"), "--overwrite"),
        (OSError(errno.ENOSPC, "No space left on device"), "No space left on device"),
        (SafetensorError("Error while deserializing header: MetadataIncompleteBuffer"), "MetadataIncompleteBuffer"),
        (HFValidationError("Repo id must use alphanumeric chars"), "Repo id"),
        (LocalEntryNotFoundError("not in the local cache"), "local cache"),
        (OfflineModeIsEnabled("offline mode is enabled"), "offline"),
        (ValueError(), "ValueError"),
    ],
)
def test_anticipated_errors_print_one_line(monkeypatch, capsys, error, message):
    def fail(args):
        raise error

    monkeypatch.setattr(info, "run", fail)
    assert cli.main(["info", "folder"]) == 1
    printed = error_line(capsys)
    assert (
        message in printed if message else printed == "the column 'caption' is missing; the dataset has: text, image"
    )


def test_bugs_and_debug_mode_keep_the_traceback(monkeypatch, capsys):
    def fail(args):
        raise ValueError("bad input")

    monkeypatch.setattr(info, "run", fail)
    with pytest.raises(ValueError, match="bad input"):
        cli.main(["--debug", "info", "folder"])
    monkeypatch.setenv("SEED_HF_DEBUG", "1")
    with pytest.raises(ValueError, match="bad input"):
        cli.main(["info", "folder"])
    monkeypatch.setenv("SEED_HF_DEBUG", "0")
    assert cli.main(["info", "folder"]) == 1

    def crash(args):
        raise RuntimeError("a bug")

    monkeypatch.setattr(info, "run", crash)
    with pytest.raises(RuntimeError, match="a bug"):  # not anticipated: the traceback is what a bug report needs
        cli.main(["info", "folder"])


def test_commands_see_only_their_arguments_and_interrupts_exit_130(monkeypatch, capsys):
    seen = []

    def interrupted(args):
        seen.append(vars(args))
        raise KeyboardInterrupt

    monkeypatch.setattr(info, "run", interrupted)
    with pytest.raises(KeyboardInterrupt):
        cli.main(["--debug", "info", "folder"])
    assert cli.main(["info", "folder"]) == 130
    assert error_line(capsys) == "interrupted"
    assert "show_traceback" not in seen[-1] and seen[-1]["model"] == "folder"


def test_error_line_and_exit_status_in_a_fresh_process(tmp_path):
    result = run_python("-m", "seed_hf.cli", "info", str(tmp_path))
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"error: {tmp_path} is an empty folder, not a SEED tokenizer folder or a SEED-OPT folder"
    ]
    assert result.stdout == ""


# resolve_pretrained_path: the check every command makes on a model or pipeline argument.


@pytest.mark.parametrize("name", ["photoz/", "./model", "../x", "a/b/c", "~/no-such-seed-folder"])
def test_missing_local_paths_are_not_hub_ids(tmp_path, monkeypatch, name):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match=f"no such file or folder: {name}"):
        resolve_pretrained_path(name, "seed_vision_tokenizer")


def test_resolve_pretrained_path(tmp_path, model_dir, seed_opt_dir, decode_dir):
    assert resolve_pretrained_path("AILab-CVC/seed-tokenizer", "seed_vision_tokenizer") == "AILab-CVC/seed-tokenizer"
    with pytest.raises(FileNotFoundError, match="no such file or folder: model"):
        resolve_pretrained_path("model", hub=False)
    assert resolve_pretrained_path(str(model_dir), "seed_vision_tokenizer", "seed_opt") == str(model_dir)
    assert resolve_pretrained_path(str(decode_dir), "SeedDecodePipeline") == str(decode_dir)
    assert resolve_pretrained_path(str(tmp_path)) == str(tmp_path)  # no kinds given: any folder

    with pytest.raises(ValueError, match="is a SEED-OPT folder, not a SEED tokenizer folder$"):
        resolve_pretrained_path(str(seed_opt_dir), "seed_vision_tokenizer")
    with pytest.raises(ValueError, match="is a SeedDecodePipeline folder, not a SEED-OPT folder$"):
        resolve_pretrained_path(str(decode_dir), "seed_opt")
    (tmp_path / "weights.safetensors").write_bytes(b"")
    with pytest.raises(NotADirectoryError, match="is a file, not a SEED tokenizer folder"):
        resolve_pretrained_path(str(tmp_path / "weights.safetensors"), "seed_vision_tokenizer")
    with pytest.raises(ValueError, match="neither config.json nor model_index.json"):
        resolve_pretrained_path(str(tmp_path), "seed_vision_tokenizer")

    # A pipeline whose class diffusers stores as [module, class] (remote code), and a config of another model.
    (tmp_path / "model_index.json").write_text(
        json.dumps({"_class_name": ["pipeline_seed_decode", "SeedDecodePipeline"]})
    )
    assert resolve_pretrained_path(str(tmp_path), "SeedDecodePipeline") == str(tmp_path)
    (tmp_path / "model_index.json").unlink()
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(ValueError, match="another kind \\(config.json says model_type 'bert'\\)"):
        resolve_pretrained_path(str(tmp_path), "seed_vision_tokenizer")
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="config.json is not valid JSON"):
        resolve_pretrained_path(str(tmp_path), "seed_vision_tokenizer")


# reconstruct: a wrong --pipeline is one clear line, before diffusers is asked to load anything.


@pytest.mark.parametrize(
    "pipeline, expected",
    [
        ("model_dir", "is a SEED tokenizer folder, not a SeedDecodePipeline folder"),
        ("seed_opt_dir", "is a SEED-OPT folder, not a SeedDecodePipeline folder"),
        ("empty", "is an empty folder, not a SeedDecodePipeline folder"),
        ("photoz/", "no such file or folder: photoz/"),
    ],
)
def test_reconstruct_refuses_a_wrong_pipeline_folder(request, tmp_path, monkeypatch, capsys, pipeline, expected):
    monkeypatch.chdir(tmp_path)
    if pipeline.endswith("_dir"):
        pipeline = str(request.getfixturevalue(pipeline))
    elif pipeline == "empty":
        (tmp_path / "empty").mkdir()
    assert cli.main(["reconstruct", "cat.png", "--pipeline", pipeline, "-o", "out"]) == 1
    assert expected in error_line(capsys)
    assert not (tmp_path / "out").exists()


def test_reconstruct_refuses_clashing_and_existing_outputs(tmp_path, decode_dir, capsys):
    command = ["reconstruct", "--pipeline", str(decode_dir), "-o", str(tmp_path)]
    assert cli.main([*command, "a/cat.png", "b/cat.jpg"]) == 1
    assert error_line(capsys) == f"several inputs would write {tmp_path / 'cat.png'}"
    (tmp_path / "cat.png").write_bytes(b"earlier")
    assert cli.main([*command, "cat.png"]) == 1
    assert error_line(capsys) == f"{tmp_path / 'cat.png'} exist; pass --overwrite to replace them"
    assert (tmp_path / "cat.png").read_bytes() == b"earlier"


# Start-up: the command line and `import seed_hf` load neither diffusers, datasets nor peft.

STARTUP_PROBE = """
import contextlib, io, json, sys
import seed_hf
from transformers import AutoConfig, AutoImageProcessor, AutoModel, AutoModelForCausalLM, AutoProcessor, AutoTokenizer
from transformers.models.auto.configuration_auto import CONFIG_MAPPING
from transformers.models.auto.image_processing_auto import IMAGE_PROCESSOR_MAPPING
from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING, MODEL_MAPPING
from transformers.models.auto.processing_auto import PROCESSOR_MAPPING
from transformers.models.auto.tokenization_auto import TOKENIZER_MAPPING
from transformers.pipelines import PIPELINE_REGISTRY
from seed_hf.cli import COMMANDS, main

def heavy():
    return sorted(name for name in ("diffusers", "datasets", "peft") if name in sys.modules)

report = {"import": heavy()}
report["registered"] = [
    CONFIG_MAPPING["seed_vision_tokenizer"] is seed_hf.SeedVisionTokenizerConfig,
    MODEL_MAPPING[seed_hf.SeedVisionTokenizerConfig] is seed_hf.SeedVisionTokenizer,
    MODEL_FOR_CAUSAL_LM_MAPPING[seed_hf.SeedOPTConfig] is seed_hf.SeedOPTForConditionalGeneration,
    seed_hf.SeedImageProcessor in IMAGE_PROCESSOR_MAPPING[seed_hf.SeedVisionTokenizerConfig].values(),
    PROCESSOR_MAPPING[seed_hf.SeedOPTConfig] is seed_hf.SeedProcessor,
    seed_hf.SeedOPTConfig in TOKENIZER_MAPPING,
    "text-to-image" in PIPELINE_REGISTRY.get_supported_tasks(),
]
# finetune and train-tokenizer last: their options come from TrainingArguments, which imports peft.
TRAINERS = ("finetune", "train-tokenizer")
for command in ([], *([name] for name in COMMANDS if name not in TRAINERS), *([name] for name in TRAINERS)):
    with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):
        main([*command, "--help"])
    report[" ".join(command) or "--help"] = heavy()
print("-- first use of a diffusers class --", file=sys.stderr, flush=True)
report["lazy"] = [seed_hf.SeedDecodePipeline.__module__, "SeedNullEmbedding" in dir(seed_hf), "diffusers" in sys.modules]
print(json.dumps(report))
"""


def test_import_and_help_leave_heavy_libraries_unloaded():
    result = run_python("-c", STARTUP_PROBE)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report.pop("registered") == 7 * [True]
    assert report.pop("lazy") == ["seed_hf.pipeline_seed_decode", True, True]
    assert report.pop("finetune") == report.pop("train-tokenizer") == ["peft"]
    others = [name for name in cli.COMMANDS if name not in ("finetune", "train-tokenizer")]
    assert report == {name: [] for name in ("import", "--help", *others)}
    # transformers warns about torchvision when diffusers' Stable Diffusion module loads, which must come later.
    assert "torchvision" not in result.stderr.split("-- first use of a diffusers class --")[0]


def test_text_to_image_task_works_after_a_bare_import(tmp_path, tokenizer, model, decode_dir):
    """The task is registered at `import seed_hf`; its decode pipeline (diffusers) loads only when it is built."""
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    expected = model.generate_images(**tokenizer("a red circle", return_tensors="pt"))[0].tolist()
    code = f"""
import sys, seed_hf
from transformers import pipeline
assert "diffusers" not in sys.modules
painter = pipeline("text-to-image", model={str(tmp_path)!r}, decode_pipeline={str(decode_dir)!r})
drawn = painter("a red circle", num_inference_steps=2, height=64, width=64)[0]
print(drawn["image"].size, drawn["codes"].tolist())
"""
    result = run_python("-c", code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"(64, 64) {expected}"


@pytest.mark.parametrize("damage", ["config", "truncated"])
def test_reconstruct_reports_a_damaged_pipeline_in_one_line(tmp_path, decode_dir, capsys, damage):
    damaged = tmp_path / "decode"
    shutil.copytree(decode_dir, damaged)
    if damage == "config":  # weights that do not fit the config: transformers raises a RuntimeError
        config = json.loads((damaged / "vision_tokenizer" / "config.json").read_text())
        (damaged / "vision_tokenizer" / "config.json").write_text(json.dumps({**config, "codebook_size": 128}))
        expected = f"cannot load {damaged}: its weights do not fit its config"
    else:
        weights = next((damaged / "unet").glob("*.safetensors"))
        weights.write_bytes(weights.read_bytes()[:1000])
        expected = ""
    capsys.readouterr()
    assert cli.main(["reconstruct", "cat.png", "--pipeline", str(damaged), "-o", str(tmp_path / "out")]) == 1
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and expected in errors[0], errors
