"""Tests of the decode-pipeline build script and of `seed-hf reconstruct`, on tiny stand-ins written to tmp_path."""

import argparse
import importlib.util

import numpy as np
import PIL.Image
import pytest
import torch
from diffusers import StableDiffusionPipeline
from tokenizers.pre_tokenizers import ByteLevel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from seed_hf import SeedDecodePipeline, cli
from seed_hf.build_decode_pipeline import build_seed_decode_pipeline
from seed_hf.pipeline_seed_decode import stable_diffusion_v1_4_scheduler

from conftest import REPO_ROOT, tiny_tokenizer
from test_pipeline_seed_decode import tiny_pipeline, tiny_unet, tiny_vae

SCRIPT = REPO_ROOT / "conversion_scripts" / "build_seed_decode_pipeline.py"


def load_script():
    spec = importlib.util.spec_from_file_location("build_seed_decode_pipeline", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def tiny_clip_tokenizer() -> CLIPTokenizer:
    """A CLIP BPE tokenizer built offline: the 256 byte symbols (plain and word-final), no merges, CLIP's specials."""
    symbols = sorted(ByteLevel.alphabet())
    vocab = {symbol: index for index, symbol in enumerate(symbols)}
    vocab.update({f"{symbol}</w>": len(symbols) + index for index, symbol in enumerate(symbols)})
    vocab.update({"<|startoftext|>": len(vocab), "<|endoftext|>": len(vocab) + 1})
    return CLIPTokenizer(vocab=vocab, merges=[], model_max_length=77)


@pytest.fixture(scope="module")
def stable_diffusion_dir(tmp_path_factory):
    """A diffusers-format Stable Diffusion v1 folder with tiny random components (768-wide text embeddings)."""
    tokenizer = tiny_clip_tokenizer()
    torch.manual_seed(0)
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=768,
            intermediate_size=16,
            num_hidden_layers=1,
            num_attention_heads=2,
            max_position_embeddings=77,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    ).eval()
    folder = tmp_path_factory.mktemp("stable-diffusion")
    StableDiffusionPipeline(
        vae=tiny_vae(),
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=tiny_unet(),
        scheduler=stable_diffusion_v1_4_scheduler(),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    ).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("seed-tokenizer")
    tiny_tokenizer().save_pretrained(folder)
    return folder


def test_build_script_writes_a_loadable_pipeline(tmp_path, stable_diffusion_dir, tokenizer_dir, capsys):
    output = tmp_path / "seed-decode"
    arguments = ["--tokenizer", str(tokenizer_dir), "--stable-diffusion", str(stable_diffusion_dir)]
    assert load_script().main([*arguments, "--output", str(output)]) == 0

    assert sorted(path.name for path in tmp_path.iterdir()) == ["seed-decode"]  # no staging folder left behind
    assert sorted(path.name for path in output.iterdir()) == [
        "README.md",
        "image_processing_seed.py",
        "model_index.json",
        "modeling_seed_null_embedding.py",
        "null_embedding",
        "pipeline_seed_decode.py",
        "scheduler",
        "unet",
        "vae",
        "vision_tokenizer",
    ]
    assert not [path for path in output.rglob("*") if path.suffix in (".bin", ".pt", ".pth", ".ckpt")]
    assert (output / "README.md").read_text().startswith("---\nlicense: creativeml-openrail-m")

    pipe = SeedDecodePipeline.from_pretrained(output)
    source = StableDiffusionPipeline.from_pretrained(stable_diffusion_dir)
    input_ids = source.tokenizer("", padding="max_length", max_length=77, return_tensors="pt").input_ids
    with torch.no_grad():
        assert torch.equal(pipe.null_embedding(), source.text_encoder(input_ids)[0])
    assert all(torch.equal(a, b) for a, b in zip(pipe.unet.state_dict().values(), source.unet.state_dict().values()))
    assert pipe.scheduler.config.beta_end == 0.012 and pipe.scheduler.config.skip_prk_steps

    # An existing output is kept unless --overwrite.
    stamp = (output / "model_index.json").stat().st_mtime_ns
    assert load_script().main([*arguments, "--output", str(output)]) == 1
    assert "--overwrite" in capsys.readouterr().err
    assert (output / "model_index.json").stat().st_mtime_ns == stamp
    assert load_script().main([*arguments, "--output", str(output), "--overwrite"]) == 0


def test_build_rejects_bad_sources(tmp_path, stable_diffusion_dir, tokenizer_dir):
    with pytest.raises(ValueError, match="lacks unet, vae, text_encoder, tokenizer"):
        build_seed_decode_pipeline(tokenizer_dir, tmp_path, tmp_path / "out")
    checkpoint = tmp_path / "sd-v1-4.safetensors"
    checkpoint.write_bytes(b"")
    with pytest.raises(ValueError, match="single-file checkpoint needs `config`"):
        build_seed_decode_pipeline(tokenizer_dir, checkpoint, tmp_path / "out")
    with pytest.raises(ValueError, match=r"\.ckpt / \.safetensors file"):
        build_seed_decode_pipeline(tokenizer_dir, tmp_path / "sd.bin", tmp_path / "out")
    with pytest.raises(ValueError, match="Could not read .* as a weights-only checkpoint"):
        build_seed_decode_pipeline(tokenizer_dir, checkpoint, tmp_path / "out", config=stable_diffusion_dir)
    # A training checkpoint that pickles more than tensors is refused, not unpickled.
    pickled = tmp_path / "sd-v1-4.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": argparse.Namespace(learning_rate=1e-4)}, pickled)
    with pytest.raises(ValueError, match="not unpickled here: use the .safetensors release"):
        build_seed_decode_pipeline(tokenizer_dir, pickled, tmp_path / "out", config=stable_diffusion_dir)
    assert not (tmp_path / "out").exists()


def test_build_loads_single_files_offline(tmp_path, stable_diffusion_dir, tokenizer_dir, monkeypatch):
    """Wiring only: a real SD v1 single file is too large for a test, and no tiny one exists in that format."""
    calls = []

    def from_single_file(path, **kwargs):
        calls.append((path, kwargs))
        return StableDiffusionPipeline.from_pretrained(stable_diffusion_dir)

    monkeypatch.setattr(StableDiffusionPipeline, "from_single_file", from_single_file)
    checkpoint = tmp_path / "sd-v1-4.ckpt"
    checkpoint.write_bytes(b"")
    build_seed_decode_pipeline(tokenizer_dir, checkpoint, tmp_path / "out", config=stable_diffusion_dir)
    assert calls == [
        (
            str(checkpoint),
            dict(config=str(stable_diffusion_dir), local_files_only=True, safety_checker=None, feature_extractor=None),
        )
    ]
    assert (tmp_path / "out" / "model_index.json").is_file()


def test_reconstruct_cli(tmp_path, capsys):
    pipeline_dir = tmp_path / "pipeline"
    pipe = tiny_pipeline()
    pipe.save_pretrained(pipeline_dir)
    rng = np.random.default_rng(0)
    inputs = []
    for name in ("a.png", "b.jpg"):
        PIL.Image.fromarray(rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)).save(tmp_path / name)
        inputs.append(str(tmp_path / name))
    (tmp_path / "broken.png").write_text("not an image")
    output_dir = tmp_path / "out"
    command = ["reconstruct", "--pipeline", str(pipeline_dir), "-o", str(output_dir), "--steps", "2"]

    assert cli.main([*command, *inputs, str(tmp_path / "broken.png")]) == 1  # the unreadable input fails the run
    printed = capsys.readouterr()
    assert "cannot reconstruct" in printed.err and "broken.png" in printed.err
    assert sorted(path.name for path in output_dir.iterdir()) == ["a.png", "b.png"]
    assert PIL.Image.open(output_dir / "a.png").size == (64, 64)
    codes = pipe.tokenize_image(PIL.Image.open(inputs[0]))[0][0].tolist()
    assert f"{inputs[0]}: {' '.join(map(str, codes))}" in printed.out.splitlines()

    before = (output_dir / "a.png").read_bytes()
    assert cli.main([*command, inputs[0]]) == 1
    assert "--overwrite" in capsys.readouterr().err
    assert cli.main([*command, inputs[0], "--overwrite", "--seed", "1"]) == 0
    assert (output_dir / "a.png").read_bytes() != before
    assert sorted(path.name for path in output_dir.iterdir()) == ["a.png", "b.png"]
