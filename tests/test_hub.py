"""Sharing: folders load by repo id from an offline Hub cache, and without seed_hf through remote code."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from transformers import (
    AutoImageProcessor,
    AutoModel,
    AutoModelForImageTextToText,
    AutoProcessor,
    AutoTokenizer,
)

from seed_hf import SeedDecodePipeline, SeedImageProcessor

from conftest import tiny_tokenizer
from seed_opt_helpers import tiny_processor, tiny_seed_opt
from test_pipeline_seed_decode import tiny_pipeline
from text_helpers import make_seed_opt_tokenizer

COMMIT = "0123456789abcdef0123456789abcdef01234567"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")

# Run in a fresh interpreter: HF_HUB_OFFLINE and HF_HOME are read when huggingface_hub is imported.
HIDE_SEED_HF = """
import importlib.abc, sys
class HideSeedHF(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "seed_hf" or name.startswith("seed_hf."):
            raise ImportError("seed_hf is hidden in this test")
sys.meta_path.insert(0, HideSeedHF())
"""
LOAD_BY_REPO_ID = """
import json, os, sys, torch
from transformers import AutoImageProcessor, AutoModel, AutoModelForImageTextToText, AutoProcessor, AutoTokenizer
remote = {remote}
if not remote:
    import seed_hf
inputs = json.loads(open(sys.argv[1]).read())
pixel_values = torch.tensor(inputs["pixel_values"])
model = AutoModel.from_pretrained("seed-org/tokenizer", trust_remote_code=remote, use_safetensors=True)
image_processor = AutoImageProcessor.from_pretrained("seed-org/tokenizer", trust_remote_code=remote)
text_tokenizer = AutoTokenizer.from_pretrained("seed-org/seed-opt", trust_remote_code=remote)
processor = AutoProcessor.from_pretrained("seed-org/seed-opt", trust_remote_code=remote)
seed_opt = AutoModelForImageTextToText.from_pretrained("seed-org/seed-opt", trust_remote_code=remote, use_safetensors=True)
batch = processor(text=["<image>a"], images=[torch.rand(3, 28, 28).numpy()], return_tensors="pt")
results = {{
    "classes": [type(x).__name__ for x in (model, image_processor, text_tokenizer, processor, seed_opt)],
    "codes": model.encode(pixel_values).tolist(),
    "image_pixel_values_shape": list(image_processor(torch.rand(3, 40, 30), return_tensors="pt").pixel_values.shape),
    "code_ids": text_tokenizer.codes_to_ids(torch.tensor(inputs["codes"])).tolist(),
    "logits": seed_opt(input_ids=torch.tensor(inputs["input_ids"])).logits[0, -1, :5].tolist(),
    "processor_ids": batch.input_ids.shape[1],
}}
if remote:
    from diffusers import DiffusionPipeline
    sources = {{"decoded": "seed-org/decode", "decoded_from_folder": os.path.abspath("decode")}}
    pipes = {{name: DiffusionPipeline.from_pretrained(source, trust_remote_code=True) for name, source in sources.items()}}
    pipes["decoded"].save_pretrained("decode-resaved")  # saved again without seed_hf, in the same layout
    pipes["decoded_resaved"] = DiffusionPipeline.from_pretrained("decode-resaved", trust_remote_code=True)
else:
    from seed_hf import SeedDecodePipeline
    pipes = {{"decoded": SeedDecodePipeline.from_pretrained("seed-org/decode")}}
torch.set_num_threads(1)  # as the test process decodes, so that the pictures are equal to the last bit
for name, pipe in pipes.items():
    pipe.set_progress_bar_config(disable=True)
    image = pipe(codes=torch.tensor(inputs["codes"]), num_inference_steps=2, output_type="np",
                 generator=torch.Generator().manual_seed(0)).images
    results[name] = image.tolist()
    results[name + "_class"] = type(pipe).__module__ + "." + type(pipe).__name__
results["seed_hf_imported"] = any(name.split(".")[0] == "seed_hf" for name in sys.modules)
print("RESULTS" + json.dumps(results))
"""


def put_in_hub_cache(folder: Path, hf_home: Path, repo_id: str) -> None:
    """Lay `folder` out as huggingface_hub caches a download of `repo_id` at `main`."""
    repo = hf_home / "hub" / f"models--{repo_id.replace('/', '--')}"
    shutil.copytree(folder, repo / "snapshots" / COMMIT)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(COMMIT)


def save_tiny_artifacts(root: Path) -> tuple:
    """Save a tiny artifact of each kind as a user would: `root/tokenizer`, `root/seed-opt`, `root/decode`."""
    vision = tiny_tokenizer()
    vision.save_pretrained(root / "tokenizer")
    SeedImageProcessor(size={"height": 28, "width": 28}).save_pretrained(root / "tokenizer")

    text_tokenizer = make_seed_opt_tokenizer(root / "text")
    seed_opt = tiny_seed_opt(text_tokenizer)
    seed_opt.save_pretrained(root / "seed-opt")
    tiny_processor(text_tokenizer).save_pretrained(root / "seed-opt")

    pipe = tiny_pipeline()
    pipe.save_pretrained(root / "decode")
    return vision, text_tokenizer, seed_opt, pipe


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    """Tiny artifacts saved as a user would, their reference outputs, and an offline Hub cache holding them."""
    root = tmp_path_factory.mktemp("hub")
    vision, text_tokenizer, seed_opt, pipe = save_tiny_artifacts(root)

    pixel_values = torch.randn(2, 3, 28, 28, generator=torch.Generator().manual_seed(3))
    codes = vision.encode(pixel_values)
    input_ids = text_tokenizer("a photo", return_tensors="pt").input_ids
    with torch.no_grad():
        expected = {
            "codes": codes.tolist(),
            "code_ids": text_tokenizer.codes_to_ids(codes).tolist(),
            "logits": seed_opt(input_ids=input_ids).logits[0, -1, :5].tolist(),
            "decoded": pipe(
                codes=codes, num_inference_steps=2, output_type="np", generator=torch.Generator().manual_seed(0)
            ).images.tolist(),
        }
    inputs = root / "inputs.json"
    inputs.write_text(
        json.dumps({"pixel_values": pixel_values.tolist(), "codes": codes.tolist(), "input_ids": input_ids.tolist()})
    )

    hf_home = root / "hf_home"
    for name in ("tokenizer", "seed-opt", "decode"):
        put_in_hub_cache(root / name, hf_home, f"seed-org/{name}")
    return root, hf_home, inputs, expected


def run_loader(shared, remote: bool) -> dict:
    root, hf_home, inputs, _ = shared
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(hf_home), "TOKENIZERS_PARALLELISM": "false"}
    env.pop("HF_HUB_CACHE", None)
    code = (HIDE_SEED_HF if remote else "") + LOAD_BY_REPO_ID.format(remote=remote)
    result = subprocess.run(
        [sys.executable, "-c", code, str(inputs)], env=env, cwd=root, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.split("RESULTS", 1)[1])


def assert_same_results(results, expected):
    assert results["classes"] == [
        "SeedVisionTokenizer",
        "SeedImageProcessor",
        "SeedOPTTokenizer",
        "SeedProcessor",
        "SeedOPTForConditionalGeneration",
    ]
    assert results["codes"] == expected["codes"]
    assert results["code_ids"] == expected["code_ids"]
    assert results["image_pixel_values_shape"] == [1, 3, 28, 28]
    assert results["processor_ids"] == 1 + 1 + 32 + 1 + 1  # </s> <img> 32 x <image> </img> a
    torch.testing.assert_close(torch.tensor(results["logits"]), torch.tensor(expected["logits"]))


def test_every_artifact_loads_by_repo_id_from_the_offline_cache(shared):
    results = run_loader(shared, remote=False)
    assert_same_results(results, shared[3])
    assert results["decoded_class"] == "seed_hf.pipeline_seed_decode.SeedDecodePipeline"
    assert results["decoded"] == shared[3]["decoded"]


def test_artifacts_load_without_seed_hf(shared):
    """Saved folders carry their code (auto_map, `[module, class]` entries): `trust_remote_code=True` loads them."""
    results = run_loader(shared, remote=True)
    assert_same_results(results, shared[3])
    # diffusers' DiffusionPipeline, from the offline Hub cache and from the folder, draws what SeedDecodePipeline draws
    assert not results["seed_hf_imported"]
    assert results["decoded_class"] == "diffusers_modules.local.pipeline_seed_decode.SeedDecodePipeline"
    assert results["decoded"] == shared[3]["decoded"]
    assert results["decoded_from_folder"] == results["decoded_resaved"] == shared[3]["decoded"]


def test_saved_folders_hold_no_pickles(shared):
    root = shared[0]
    for name in ("tokenizer", "seed-opt", "decode"):
        files = [p for p in (root / name).rglob("*") if p.is_file()]
        assert files and not [p for p in files if p.suffix in PICKLE_SUFFIXES], name
        assert any(p.suffix == ".safetensors" for p in files), name


def test_push_to_hub_goes_through_huggingface_hub(shared, monkeypatch):
    """push_to_hub is the libraries' own: it uploads the saved folder through HfApi, which we intercept."""
    from diffusers.utils import hub_utils as diffusers_hub
    from huggingface_hub import HfApi

    uploads = []
    monkeypatch.setattr(HfApi, "create_repo", lambda self, repo_id, **kwargs: SimpleNamespace(repo_id=repo_id))

    def fake_upload_folder(self, *, repo_id, folder_path, **kwargs):
        uploads.append((repo_id, sorted(p.name for p in Path(folder_path).rglob("*") if p.is_file())))

    def fake_create_commit(self, repo_id, operations, **kwargs):
        uploads.append((repo_id, sorted(Path(op.path_in_repo).name for op in operations)))

    monkeypatch.setattr(HfApi, "upload_folder", fake_upload_folder)
    monkeypatch.setattr(HfApi, "create_commit", fake_create_commit)
    # diffusers calls huggingface_hub's module-level functions, bound to a default HfApi at import
    monkeypatch.setattr(diffusers_hub, "create_repo", lambda repo_id, **kwargs: SimpleNamespace(repo_id=repo_id))
    monkeypatch.setattr(diffusers_hub, "upload_folder", lambda **kwargs: fake_upload_folder(None, **kwargs))
    root = shared[0]
    artifacts = {
        "model.safetensors": AutoModel.from_pretrained(root / "tokenizer"),
        "preprocessor_config.json": AutoImageProcessor.from_pretrained(root / "tokenizer"),
        "tokenizer_config.json": AutoTokenizer.from_pretrained(root / "seed-opt"),
        "processor_config.json": AutoProcessor.from_pretrained(root / "seed-opt"),
        "generation_config.json": AutoModelForImageTextToText.from_pretrained(root / "seed-opt"),
        "model_index.json": SeedDecodePipeline.from_pretrained(root / "decode"),
    }
    for expected_file, artifact in artifacts.items():
        artifact.push_to_hub("seed-org/pushed", token="hf_fake")
        repo_id, files = uploads[-1]
        assert repo_id == "seed-org/pushed" and expected_file in files, (type(artifact).__name__, files)
        assert not [name for name in files if name.endswith(PICKLE_SUFFIXES)]
    # the decode pipeline's code travels with it
    assert {"pipeline_seed_decode.py", "modeling_seed_null_embedding.py", "modeling_seed_vision_tokenizer.py"} <= set(
        uploads[-1][1]
    )
