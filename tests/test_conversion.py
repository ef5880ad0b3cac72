"""Conversion of the original release, and parity with the original SEED v1 code."""

import json
import shutil
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file
from transformers import AutoImageProcessor, AutoModel

from seed_hf import SeedVisionTokenizerConfig
from seed_hf.commands.convert import main as convert_main
from seed_hf.conversion import (
    ConversionError,
    check_against_model,
    convert_original_checkpoint,
    convert_state_dict,
    load_original_file,
)
from seed_hf.modeling_seed_vision_tokenizer import SeedVisionTokenizer

from conftest import REPO_ROOT, parity_config, parity_root

PARITY_ROOT = parity_root()
FIXTURES = sorted(p.parent for p in PARITY_ROOT.glob("*/expected.safetensors")) if PARITY_ROOT else []
needs_parity = pytest.mark.skipif(
    not FIXTURES, reason="no parity data: ../shared/parity and tests/fixtures/parity are absent"
)
COMPARED = ("image_embeds", "causal_query_output", "quantized", "generation_embeds")


@pytest.fixture(scope="module", params=FIXTURES, ids=lambda p: p.name)
def converted(request, tmp_path_factory):
    """A parity fixture converted once per module: (fixture dir, output dir, expected tensors)."""
    fixture = request.param
    output = tmp_path_factory.mktemp("converted") / fixture.name
    convert_original_checkpoint(fixture, output, parity_config(fixture))
    return fixture, output, load_file(fixture / "expected.safetensors")


def assert_matches_original(outputs, expected, rows=slice(None)):
    assert torch.equal(outputs.codes, expected["codes"][rows]), "codes differ from the original"
    for name in COMPARED:
        difference = (getattr(outputs, name) - expected[name][rows]).abs().max().item()
        assert difference <= 1e-4, f"{name} differs from the original by {difference}"


@needs_parity
@pytest.mark.parametrize("attn_implementation", ["eager", "sdpa"])
def test_parity_with_original(converted, attn_implementation):
    _, output, expected = converted
    model = AutoModel.from_pretrained(output, attn_implementation=attn_implementation, dtype=torch.float32)
    assert isinstance(model, SeedVisionTokenizer)
    with torch.no_grad():
        assert_matches_original(model(expected["pixel_values"]), expected)
        for row in range(expected["codes"].shape[0]):
            assert_matches_original(model(expected["pixel_values"][row : row + 1]), expected, slice(row, row + 1))
        assert torch.equal(model.encode(expected["pixel_values"]), expected["codes"])
        from_codes = model.embed_codes(expected["codes"])
    assert (from_codes - expected["generation_embeds"]).abs().max() <= 1e-4


@needs_parity
def test_image_processor_matches_original_preprocessing(converted):
    fixture, output, expected = converted
    processor = AutoImageProcessor.from_pretrained(output)
    names = json.loads((fixture / "config.json").read_text()).get("images") or sorted(
        p.name for p in (fixture / "images").glob("*.png")
    )
    images = [Image.open(fixture / "images" / name) for name in names]
    pixel_values = processor(images, return_tensors="pt").pixel_values
    assert pixel_values.shape == expected["pixel_values"].shape
    assert (pixel_values - expected["pixel_values"]).abs().max() <= 1e-5


@needs_parity
def test_converted_folder_holds_only_safetensors_json_and_code(converted):
    _, output, _ = converted
    files = sorted(p.name for p in output.iterdir())
    assert [name for name in files if not name.endswith(".py")] == [
        "config.json",
        "model.safetensors",
        "preprocessor_config.json",
    ]
    # the code that lets the folder load with trust_remote_code=True where seed_hf is not installed
    assert {"configuration_seed.py", "modeling_seed_vision_tokenizer.py", "image_processing_seed.py"} <= set(files)
    assert json.loads((output / "config.json").read_text())["auto_map"]["AutoModel"] == (
        "modeling_seed_vision_tokenizer.SeedVisionTokenizer"
    )


@needs_parity
def test_released_size_keys_map_onto_default_config():
    """Every key and shape of the real release fits the default config, proven without allocating memory."""
    keys_file = (PARITY_ROOT or Path()) / "original_full_size_keys.json"
    if not keys_file.is_file():
        pytest.skip("original_full_size_keys.json is absent")
    original = {
        key: torch.empty(shape, device="meta")
        for per_file in json.loads(keys_file.read_text()).values()
        for key, shape in per_file.items()
    }
    config = SeedVisionTokenizerConfig()
    converted_state, skipped = convert_state_dict(original, config)
    with torch.device("meta"):
        model = SeedVisionTokenizer(config)
    check_against_model(converted_state, model)  # raises on any missing, unexpected or mis-shaped weight
    assert set(converted_state) == set(model.state_dict())
    assert all(key.endswith("position_ids") for key in skipped)
    parameter_count = sum(t.numel() for t in converted_state.values())
    assert 1.0e9 < parameter_count < 1.3e9


# Original-format files with training-only entries and a few traps; built from a fixture copy.


@pytest.fixture
def original_copy(tmp_path):
    if not FIXTURES:
        pytest.skip("no parity data")
    source = FIXTURES[0]
    copy = tmp_path / "original"
    copy.mkdir()
    for name in ("eva_vit_g.pth", "causal_qformer.pth", "seed_tokenizer.pth"):
        shutil.copyfile(source / name, copy / name)
    return source, copy


def _edit(path: Path, change):
    checkpoint = torch.load(path, weights_only=True)
    change(checkpoint["model"] if "model" in checkpoint else checkpoint, checkpoint)
    torch.save(checkpoint, path)


def test_training_only_entries_are_skipped_and_reported(original_copy, tmp_path):
    source, copy = original_copy
    config = parity_config(source)
    width = config.qformer_config.hidden_size
    extra_block = config.vision_config.num_hidden_layers

    def add_vision_extras(state, _):
        for name, tensor in list(state.items()):
            if name.startswith("blocks.0."):
                state[name.replace("blocks.0.", f"blocks.{extra_block}.")] = tensor.clone()
        state["norm.weight"] = torch.ones(config.vision_config.hidden_size)
        state["head.weight"] = torch.ones(4, config.vision_config.hidden_size)
        for name in list(state):  # the released vision weights are float16
            state[name] = state[name].half()

    def add_qformer_extras(state, checkpoint):
        state["Qformer.bert.embeddings.word_embeddings.weight"] = torch.zeros(10, width)
        state["Qformer.bert.encoder.layer.0.intermediate.dense.weight"] = torch.zeros(4, width)
        state["Qformer.bert.encoder.layer.0.output.dense.bias"] = torch.zeros(width)
        state["Qformer.cls.predictions.bias"] = torch.zeros(10)
        state["vision_proj.weight"] = torch.zeros(4, width)
        state["itm_head.bias"] = torch.zeros(2)
        state["temp"] = torch.tensor(0.07)
        checkpoint["epoch"] = 3
        checkpoint["optimizer"] = {"lr": torch.tensor(1e-4)}

    _edit(copy / "eva_vit_g.pth", add_vision_extras)
    _edit(copy / "causal_qformer.pth", add_qformer_extras)
    output = tmp_path / "converted"
    skipped = convert_original_checkpoint(copy, output, config)

    assert f"blocks.{extra_block}.attn.qkv.weight" in skipped
    for name in ("norm.weight", "head.weight", "Qformer.cls.predictions.bias", "temp", "causal_qformer.pth:optimizer"):
        assert name in skipped
    model = AutoModel.from_pretrained(output)
    assert model.dtype == torch.float32
    expected = load_file(source / "expected.safetensors")
    with torch.no_grad():
        codes = model.encode(expected["pixel_values"])
    # float16 storage rounds the vision weights, so only most codes can be expected to survive
    assert (codes == expected["codes"]).float().mean() > 0.8


def test_unknown_key_is_named(original_copy, tmp_path):
    source, copy = original_copy
    _edit(copy / "seed_tokenizer.pth", lambda state, _: state.update({"mystery.weight": torch.zeros(3)}))
    with pytest.raises(ConversionError, match="mystery.weight"):
        convert_original_checkpoint(copy, tmp_path / "out", parity_config(source))
    assert not (tmp_path / "out").exists()


def test_missing_weight_is_named(original_copy, tmp_path):
    source, copy = original_copy
    _edit(copy / "seed_tokenizer.pth", lambda state, _: state.pop("distill_text_proj.bias"))
    with pytest.raises(ConversionError, match=r"missing weight decoder\.projection\.bias"):
        convert_original_checkpoint(copy, tmp_path / "out", parity_config(source))


def test_wrong_config_names_shapes(original_copy, tmp_path):
    _, copy = original_copy
    with pytest.raises(ConversionError, match="shape of quantizer.encode_task_layer.0.weight"):
        convert_original_checkpoint(copy, tmp_path / "out", SeedVisionTokenizerConfig())


@pytest.mark.parametrize("damage", ["truncate", "text", "not_a_dict"])
def test_unreadable_checkpoint_is_rejected(original_copy, tmp_path, damage):
    source, copy = original_copy
    target = copy / "causal_qformer.pth"
    if damage == "truncate":
        target.write_bytes(target.read_bytes()[: target.stat().st_size // 2])
    elif damage == "text":
        target.write_text("this is not a checkpoint")
    else:
        torch.save([torch.zeros(1)], target)
    with pytest.raises(ConversionError, match="causal_qformer.pth"):
        load_original_file(target)
    with pytest.raises(ConversionError):
        convert_original_checkpoint(copy, tmp_path / "out", parity_config(source))


class Payload:
    """An arbitrary object: unpickling it would run code of the file's choosing."""


def test_pickled_objects_are_never_loaded(tmp_path):
    target = tmp_path / "evil.pth"
    torch.save({"model": {"x": torch.zeros(1)}, "config": Payload()}, target)
    with pytest.raises(ConversionError, match="not a readable PyTorch checkpoint"):
        load_original_file(target)


def test_existing_output_needs_overwrite(original_copy, tmp_path, capsys):
    source, copy = original_copy
    config_file = tmp_path / "sizes.json"
    config_file.write_text(parity_config(source).to_json_string())
    output = tmp_path / "out"
    output.mkdir()
    (output / "keep.txt").write_text("precious")
    (output / "config.json").write_text('{"model_type": "seed_vision_tokenizer"}')  # an earlier conversion
    args = ["--original-dir", str(copy), "--output", str(output), "--config", str(config_file)]
    assert convert_main(args) == 1
    assert "--overwrite" in capsys.readouterr().err
    assert (output / "keep.txt").read_text() == "precious"
    assert convert_main([*args, "--overwrite"]) == 0
    assert not (output / "keep.txt").exists() and (output / "model.safetensors").is_file()
    # the conversion script copies the model card into the folder it writes
    assert (output / "README.md").read_text() == (REPO_ROOT / "model_cards" / "seed_tokenizer_v1.md").read_text()


def test_vision_tower_from_a_blip2_folder(converted, tmp_path):
    """`--vision-from` takes the ViT from a transformers BLIP-2 checkpoint; ln_vision still comes from SEED."""
    fixture, output, expected = converted
    reference = AutoModel.from_pretrained(output)
    blip2 = tmp_path / "blip2"
    blip2.mkdir()
    vision = {
        f"vision_model.{name}": tensor
        for name, tensor in reference.vision_model.state_dict().items()
        if not name.startswith("post_layernorm.")
    }
    vision["vision_model.post_layernorm.weight"] = torch.zeros(reference.config.vision_config.hidden_size)
    vision["language_model.lm_head.weight"] = torch.zeros(2, 2)
    save_file(vision, blip2 / "model.safetensors")
    (blip2 / "config.json").write_text(json.dumps({"vision_config": reference.config.vision_config.to_dict()}))
    original = tmp_path / "original"
    original.mkdir()
    for name in ("causal_qformer.pth", "seed_tokenizer.pth"):
        shutil.copyfile(fixture / name, original / name)

    convert_original_checkpoint(original, tmp_path / "out", reference.config, vision_from=blip2)
    model = AutoModel.from_pretrained(tmp_path / "out")
    with torch.no_grad():
        assert torch.equal(model.encode(expected["pixel_values"]), expected["codes"])
