"""Conversion of the original release, and parity with the original SEED v1 code."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import PIL
import pytest
import torch
from packaging.version import Version
from PIL import Image
from safetensors.torch import load_file, save_file
from transformers import AutoImageProcessor, AutoModel

from seed_hf import SeedCausalQFormerForPreTraining, SeedVisionTokenizerConfig
from seed_hf.cli import main as cli_main
from seed_hf.conversion import (
    ConversionError,
    check_against_model,
    convert_original_checkpoint,
    convert_state_dict,
    convert_training_head,
    infer_config,
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
# The config values that no weight shape determines.
NOT_IN_SHAPES = [
    ("vision_config", "num_attention_heads"),
    ("vision_config", "layer_norm_eps"),
    ("qformer_config", "num_attention_heads"),
    ("qformer_config", "layer_norm_eps"),
    (None, "decoder_num_attention_heads"),
    (None, "decoder_layer_norm_eps"),
    (None, "vision_ln_eps"),
]


def beyond_shapes(fixture: Path) -> dict:
    """The `--config` a fixture needs: only its values that no shape determines and that differ from the release."""
    fixture_config, released = parity_config(fixture), SeedVisionTokenizerConfig()
    overrides = {}
    for sub_config, field in NOT_IN_SHAPES:
        value = getattr(getattr(fixture_config, sub_config) if sub_config else fixture_config, field)
        if value != getattr(getattr(released, sub_config) if sub_config else released, field):
            (overrides.setdefault(sub_config, {}) if sub_config else overrides)[field] = value
    return overrides


@pytest.fixture(scope="module", params=FIXTURES, ids=lambda p: p.name)
def converted(request, tmp_path_factory):
    """A parity fixture converted once per module, its sizes read from the shapes: (fixture, output, expected)."""
    fixture = request.param
    output = tmp_path_factory.mktemp("converted") / fixture.name
    convert_original_checkpoint(fixture, output, beyond_shapes(fixture))
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
    difference = (pixel_values - expected["pixel_values"]).abs()
    if Version(PIL.__version__) >= Version("13"):
        assert difference.max() <= 1e-5
    else:
        # Pillow 12 and older round bicubic upscaling differently from the Pillow the original ran on: one 8-bit
        # level at a few pixels, nothing else (.ci/run repeats this test under Pillow 13, where it is exact).
        one_level = 1 / 255 / min(processor.image_std)
        assert difference.max() <= one_level + 1e-5
        assert (difference > 1e-5).float().mean() < 0.01


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


def flatten(values: dict) -> dict:
    """`{"vision_config": {"hidden_size": 8}}` -> `{"vision_config.hidden_size": 8}`."""
    flat = {}
    for key, value in values.items():
        items = value.items() if isinstance(value, dict) else [(None, value)]
        flat.update({f"{key}.{name}" if name else key: item for name, item in items})
    return flat


def config_sizes(config: SeedVisionTokenizerConfig) -> dict:
    """Every value of a config but its bookkeeping (name, dtype, auto_map, ...), sub-configs flattened."""
    bookkeeping = {"_name_or_path", "architectures", "auto_map", "dtype", "transformers_version"}
    return {key: value for key, value in flatten(config.to_dict()).items() if not bookkeeping & set(key.split("."))}


@needs_parity
def test_sizes_are_read_from_the_checkpoint(converted, tmp_path):
    """With no config at all every size comes from the shapes; only head counts and epsilons are the released ones."""
    fixture, output, _ = converted
    expected = config_sizes(parity_config(fixture))
    assert config_sizes(AutoModel.from_pretrained(output).config) == expected

    result = convert_original_checkpoint(fixture, tmp_path / "out")
    differing = {key for key, value in config_sizes(result.config).items() if expected[key] != value}
    assert differing == set(flatten(beyond_shapes(fixture)))
    released = SeedVisionTokenizerConfig()
    assert f"vision_config.num_attention_heads={released.vision_config.num_attention_heads}" in result.assumed
    assert len(result.assumed) == len(NOT_IN_SHAPES)


def released_keys() -> dict[str, torch.Tensor]:
    """Every key of the real release (the three files merged) as a meta tensor of its shape."""
    keys_file = (PARITY_ROOT or Path()) / "original_full_size_keys.json"
    if not keys_file.is_file():
        pytest.skip("original_full_size_keys.json is absent")
    return {
        key: torch.empty(shape, device="meta")
        for per_file in json.loads(keys_file.read_text()).values()
        for key, shape in per_file.items()
    }


@needs_parity
def test_released_size_keys_map_onto_default_config():
    """Every key and shape of the real release fits the default config, proven without allocating memory."""
    original = released_keys()
    config = SeedVisionTokenizerConfig()
    converted_state, skipped = convert_state_dict(original, config)
    with torch.device("meta"):
        model = SeedVisionTokenizer(config)
    check_against_model(converted_state, model)  # raises on any missing, unexpected or mis-shaped weight
    assert set(converted_state) == set(model.state_dict())
    assert all(key.endswith("position_ids") for key in skipped)
    parameter_count = sum(t.numel() for t in converted_state.values())
    assert 1.0e9 < parameter_count < 1.3e9

    # The shapes alone give the released sizes, also from an EVA-CLIP file with its 40th block and head.
    assert config_sizes(infer_config(original)[0]) == config_sizes(config)
    eva_clip = {**original, "norm.weight": torch.empty(1408, device="meta")}
    eva_clip.update(
        {key.replace("blocks.0.", "blocks.39."): t for key, t in original.items() if key.startswith("blocks.0.")}
    )
    assert infer_config(eva_clip)[0].vision_config.num_hidden_layers == 39


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
    skipped = convert_original_checkpoint(copy, output, config).skipped

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
    with pytest.raises(ConversionError, match=r"1 missing: decoder\.projection\.bias \(768,\)\. Hint"):
        convert_original_checkpoint(copy, tmp_path / "out", parity_config(source))


def test_mismatch_is_summarised(original_copy, tmp_path):
    """A config of the released sizes against the small fixture: counts, a few names and a hint, not 800 lines."""
    _, copy = original_copy
    with pytest.raises(ConversionError) as error:
        convert_original_checkpoint(copy, tmp_path / "out", SeedVisionTokenizerConfig())
    message = str(error.value)
    assert "\n" not in message and len(message) < 1200
    assert re.search(r"\d+ missing: .* and \d+ more\. \d+ mis-shaped: .* and \d+ more\. Hint: ", message)


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


def test_existing_output_needs_overwrite(converted, tmp_path, capsys):
    """Through the CLI, with only what the shapes cannot tell in --config."""
    fixture, earlier, expected = converted
    output = tmp_path / "out"
    shutil.copytree(earlier, output)  # a folder this project wrote
    earlier_config = (output / "config.json").stat().st_ino
    with pytest.raises(FileExistsError, match="--overwrite"):
        convert_original_checkpoint(fixture, output, beyond_shapes(fixture))
    assert (output / "config.json").stat().st_ino == earlier_config

    config_file = tmp_path / "beyond_shapes.json"
    config_file.write_text(json.dumps(beyond_shapes(fixture)))
    args = ["convert", "--original-dir", str(fixture), "--output", str(output), "--config", str(config_file)]
    assert cli_main([*args, "--overwrite"]) == 0
    assert (output / "config.json").stat().st_ino != earlier_config
    printed = capsys.readouterr().out
    assert "released values assumed" in printed and "qformer_config.num_attention_heads=12" in printed
    model = AutoModel.from_pretrained(output)
    with torch.no_grad():
        assert torch.equal(model.encode(expected["pixel_values"]), expected["codes"])
    # the conversion copies the model card into the folder it writes
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
    blip2_config = {"model_type": "blip-2", "vision_config": reference.config.vision_config.to_dict()}
    (blip2 / "config.json").write_text(json.dumps(blip2_config))
    original = tmp_path / "original"
    original.mkdir()
    for name in ("causal_qformer.pth", "seed_tokenizer.pth"):
        shutil.copyfile(fixture / name, original / name)

    # no config: the vision sizes (heads too) come from the BLIP-2 config, the rest from the SEED files' shapes
    result = convert_original_checkpoint(original, tmp_path / "out", vision_from=blip2)
    assert not any(name.startswith("vision_config.") for name in result.assumed)
    model = AutoModel.from_pretrained(tmp_path / "out")
    with torch.no_grad():
        assert torch.equal(model.encode(expected["pixel_values"]), expected["codes"])


# The converter's input (I10.7): legacy files, empty files, keys in two files, unusable values.


def test_legacy_format_files_load(original_copy, tmp_path):
    """Files written before torch 1.6's zip format load (still weights_only) and convert to the same codes."""
    source, copy = original_copy
    for path in copy.iterdir():
        checkpoint = torch.load(path, weights_only=True)
        torch.save(checkpoint, path, _use_new_zipfile_serialization=False)
    convert_original_checkpoint(copy, tmp_path / "out", beyond_shapes(source))
    expected = load_file(source / "expected.safetensors")
    with torch.no_grad():
        codes = AutoModel.from_pretrained(tmp_path / "out").encode(expected["pixel_values"])
    assert torch.equal(codes, expected["codes"])


def test_empty_file_says_so(original_copy, tmp_path):
    _, copy = original_copy
    (copy / "seed_tokenizer.pth").write_bytes(b"")
    with pytest.raises(ConversionError, match=r"seed_tokenizer\.pth is empty \(0 bytes\)"):
        convert_original_checkpoint(copy, tmp_path / "out")


def test_key_in_two_files_is_an_error(original_copy, tmp_path):
    """The same weight in two files is ambiguous: no file silently wins."""
    _, copy = original_copy
    query_tokens = torch.load(copy / "causal_qformer.pth", weights_only=True)["model"]["query_tokens"]
    _edit(copy / "seed_tokenizer.pth", lambda state, _: state.update({"query_tokens": torch.zeros_like(query_tokens)}))
    with pytest.raises(ConversionError, match=r"query_tokens \(causal_qformer\.pth and seed_tokenizer\.pth\)"):
        convert_original_checkpoint(copy, tmp_path / "out")


@pytest.mark.parametrize(
    "value, message",
    [
        (float("nan"), "NaN or inf"),
        (float("inf"), "NaN or inf"),
        (None, r"not floating point: pos_embed_text \(torch.int64\)"),
    ],
)
def test_unusable_weight_values_are_refused(original_copy, tmp_path, value, message):
    _, copy = original_copy

    def spoil(state, _):
        if value is None:
            state["pos_embed_text"] = state["pos_embed_text"].long()
        else:
            state["pos_embed_text"][0, 0, 0] = value

    _edit(copy / "seed_tokenizer.pth", spoil)
    with pytest.raises(ConversionError, match=f"{message}.*pos_embed_text" if value is not None else message):
        convert_original_checkpoint(copy, tmp_path / "out")
    assert not (tmp_path / "out").exists()


# --config (I10.6): checked before anything is loaded, each problem in one line.


@needs_parity
@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"codebok_size": 8}, r"Unknown config keys: codebok_size \(did you mean codebook_size\?\)"),
        (
            {"vision_config": {"hiden_size": 8}},
            r"vision_config\.hiden_size \(did you mean vision_config\.hidden_size\?\)",
        ),
        ([{"codebook_size": 8}], "JSON object of SeedVisionTokenizerConfig keyword arguments, not a list"),
        ({"vision_config": 8}, "vision_config must be an object of Blip2VisionConfig keyword arguments, not a int"),
        ({"codebook_size": "big"}, "Invalid config value: .*codebook_size.* expected int, got str"),
        ({"qformer_config": {"num_attention_heads": 1.5}}, "Invalid config value: .*num_attention_heads"),
    ],
)
def test_bad_config_is_one_clear_error(overrides, message, tmp_path):
    with pytest.raises(ConversionError, match=message) as error:
        convert_original_checkpoint(FIXTURES[0], tmp_path / "out", overrides)
    assert "\n" not in str(error.value)


# Where the converter reads and writes (I10.8): one clear exception each, before the slow part.


def _blip2_folder(tmp_path: Path, config: dict | None) -> Path:
    folder = tmp_path / "blip2"
    folder.mkdir()
    save_file({"vision_model.embeddings.class_embedding": torch.zeros(1, 1, 8)}, folder / "model.safetensors")
    if config is not None:
        (folder / "config.json").write_text(json.dumps(config))
    return folder


@needs_parity
@pytest.mark.parametrize(
    "case, error_type, message",
    [
        ("no original dir", FileNotFoundError, r"No such folder: .*missing \(the original release: eva_vit_g\.pth"),
        ("original dir is a file", NotADirectoryError, "is not a folder"),
        ("a file missing", FileNotFoundError, r"lacks seed_tokenizer\.pth"),
        ("output parent is a file", NotADirectoryError, r"Cannot write .*: .*a_file is not a folder"),
        ("output parent read-only", PermissionError, r"Cannot write .*: permission denied in .*read_only"),
        ("no vision-from folder", FileNotFoundError, "No such BLIP-2 checkpoint folder"),
        (
            "vision-from without config",
            FileNotFoundError,
            "not a transformers BLIP-2 checkpoint: it has no config.json",
        ),
        ("vision-from not BLIP-2", ConversionError, "model_type 'opt', expected 'blip-2'"),
    ],
)
def test_input_and_output_problems_are_named(original_copy, tmp_path, monkeypatch, case, error_type, message):
    _, copy = original_copy
    original_dir, output, vision_from = copy, tmp_path / "out", None
    if case == "no original dir":
        original_dir = tmp_path / "missing"
    elif case == "original dir is a file":
        original_dir = copy / "eva_vit_g.pth"
    elif case == "a file missing":
        (copy / "seed_tokenizer.pth").unlink()
    elif case == "output parent is a file":
        (tmp_path / "a_file").write_text("")
        output = tmp_path / "a_file" / "deeper" / "out"
    elif case == "output parent read-only":
        read_only = tmp_path / "read_only"
        read_only.mkdir(mode=0o555)
        output = read_only / "out"
        if os.geteuid() == 0:  # root ignores permission bits: report the folder as a read-only mount would
            access = os.access
            monkeypatch.setattr(os, "access", lambda path, mode: Path(path) != read_only and access(path, mode))
    elif case == "no vision-from folder":
        vision_from = tmp_path / "blip2"
    elif case == "vision-from without config":
        vision_from = _blip2_folder(tmp_path, None)
    else:
        vision_from = _blip2_folder(tmp_path, {"model_type": "opt"})
    with pytest.raises(error_type, match=message) as error:
        convert_original_checkpoint(original_dir, output, vision_from=vision_from)
    assert "\n" not in str(error.value)
    assert not output.exists()


def test_command_line_error_is_one_message(tmp_path):
    """The conversion script goes through the `seed-hf` top level: the message and a non-zero exit status."""
    script = REPO_ROOT / "conversion_scripts" / "convert_seed_original_to_hf.py"
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    arguments = ["--original-dir", str(tmp_path / "missing"), "--output", str(tmp_path / "out")]
    result = subprocess.run(
        [sys.executable, str(script), *arguments], env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode != 0
    assert f"No such folder: {tmp_path / 'missing'}" in result.stderr


# --keep-training-weights (I12.3): the release's Stage I training weights, written as the training head's files.


def training_weight_shapes(qformer_config, vocab_size: int, positions: int) -> dict[str, tuple[str, tuple]]:
    """The Stage I training weights as BLIP-2's stage 1 (LAVIS `Blip2Qformer`) names them: {original key: (name in
    `SeedCausalQFormerForPreTraining`, shape)}."""
    width, inner = qformer_config.hidden_size, qformer_config.intermediate_size
    shapes = {
        "Qformer.bert.embeddings.word_embeddings.weight": (
            "contrastive_head.text_embeddings.word_embeddings.weight",
            (vocab_size, width),
        ),
        "Qformer.bert.embeddings.position_embeddings.weight": (
            "contrastive_head.text_embeddings.position_embeddings.weight",
            (positions, width),
        ),
        "vision_proj.weight": ("contrastive_head.vision_projection.weight", (256, width)),
        "vision_proj.bias": ("contrastive_head.vision_projection.bias", (256,)),
        "text_proj.weight": ("contrastive_head.text_projection.weight", (256, width)),
        "text_proj.bias": ("contrastive_head.text_projection.bias", (256,)),
        "temp": ("contrastive_head.temperature", ()),
    }
    for layer in range(qformer_config.num_hidden_layers):
        for name, shape in (
            ("intermediate.dense.weight", (inner, width)),
            ("intermediate.dense.bias", (inner,)),
            ("output.dense.weight", (width, inner)),
            ("output.dense.bias", (width,)),
            ("output.LayerNorm.weight", (width,)),
            ("output.LayerNorm.bias", (width,)),
        ):
            shapes[f"Qformer.bert.encoder.layer.{layer}.{name}"] = (f"qformer.encoder.layer.{layer}.{name}", shape)
    return shapes


@needs_parity
def test_training_weights_at_the_released_sizes():
    """The real `causal_qformer.pth` holds none of the Stage I training families (only `position_ids`); a release
    that holds them at the released sizes maps onto the head, its vocabulary size read from the shapes."""
    original = released_keys()
    config = SeedVisionTokenizerConfig()
    with pytest.raises(ConversionError, match="holds none of the Stage I training weights"):
        convert_training_head(original, config)
    positions = original["Qformer.bert.embeddings.position_ids"].shape[-1]
    shapes = training_weight_shapes(config.qformer_config, vocab_size=30523, positions=positions)
    original.update({key: torch.empty(shape, device="meta") for key, (_, shape) in shapes.items()})
    config = infer_config(original, training_head=True)[0]
    assert config.qformer_config.vocab_size == 30523  # BERT's 30522 and BLIP-2's [DEC] token
    weights, kept, absent = convert_training_head(original, config)
    assert set(kept) == set(shapes) and absent == []
    assert {name: tuple(tensor.shape) for name, tensor in weights.items()} == dict(shapes.values())


@pytest.fixture
def release_with_training_weights(original_copy):
    """A fixture copy whose `causal_qformer.pth` also holds seeded Stage I training weights of consistent shapes, as
    a training checkpoint would: (source, copy, {original key: (name in the Stage I head, tensor)})."""
    source, copy = original_copy
    qformer_config = parity_config(source).qformer_config
    generator = torch.Generator().manual_seed(12)
    training_weights = {}

    def add_training_weights(state, _):
        positions = state["Qformer.bert.embeddings.position_ids"].shape[-1]  # as many positions as the buffer
        for key, (ours, shape) in training_weight_shapes(qformer_config, vocab_size=101, positions=positions).items():
            training_weights[key] = (ours, torch.randn(shape, generator=generator))
        state.update({key: tensor for key, (_, tensor) in training_weights.items()})
        state["Qformer.cls.predictions.bias"] = torch.zeros(101)
        state["itm_head.weight"] = torch.zeros(2, qformer_config.hidden_size)

    _edit(copy / "causal_qformer.pth", add_training_weights)
    return source, copy, training_weights


def test_training_weights_are_kept_when_asked(release_with_training_weights, tmp_path, capsys):
    """`--keep-training-weights` writes them as the Stage I head reads them; the tokenizer folder is unchanged."""
    source, copy, training_weights = release_with_training_weights
    output, config_file = tmp_path / "out", tmp_path / "beyond_shapes.json"
    config_file.write_text(json.dumps(beyond_shapes(source)))
    args = ["convert", "--original-dir", str(copy), "--output", str(output), "--config", str(config_file)]
    assert cli_main([*args, "--keep-training-weights"]) == 0
    printed = capsys.readouterr().out
    assert f"kept {len(training_weights)} Stage I training weights in training_head.safetensors" in printed
    skipped = set(next(line for line in printed.splitlines() if line.startswith("skipped")).split(": ")[1].split(", "))
    assert {"Qformer.cls.predictions.bias", "itm_head.weight"} <= skipped  # the head has no use for them
    assert skipped.isdisjoint(training_weights)

    head = SeedCausalQFormerForPreTraining.from_pretrained(output)
    state = head.state_dict()
    for key, (ours, tensor) in training_weights.items():
        assert torch.equal(state[ours], tensor), key
    assert json.loads((output / "training_head.json").read_text()) == {
        "head_class": "SeedCausalQFormerForPreTraining",
        "weights": sorted(ours for ours, _ in training_weights.values()),
    }
    expected = load_file(source / "expected.safetensors")
    with torch.no_grad():
        assert torch.equal(AutoModel.from_pretrained(output).encode(expected["pixel_values"]), expected["codes"])
        assert torch.equal(head.encode(expected["pixel_values"]), expected["codes"])


def test_training_weights_are_skipped_without_the_flag(converted, release_with_training_weights, tmp_path):
    fixture, before, _ = converted
    source, copy, training_weights = release_with_training_weights
    if fixture != source:
        pytest.skip("compares with the conversion of the fixture the copy comes from")
    result = convert_original_checkpoint(copy, tmp_path / "out", beyond_shapes(source))
    assert result.kept == [] and set(training_weights) <= set(result.skipped)
    names = sorted(path.name for path in before.iterdir())
    assert sorted(path.name for path in (tmp_path / "out").iterdir()) == names
    for name in names:
        assert (tmp_path / "out" / name).read_bytes() == (before / name).read_bytes(), name


def test_training_families_the_release_lacks_start_fresh(release_with_training_weights, tmp_path):
    source, copy, training_weights = release_with_training_weights
    _edit(copy / "causal_qformer.pth", lambda state, _: [state.pop(key) for key in ("temp", "text_proj.bias")])
    with pytest.raises(ConversionError, match=r"1 missing: contrastive_head\.text_projection\.bias \(256,\)"):
        convert_original_checkpoint(copy, tmp_path / "out", beyond_shapes(source), keep_training_weights=True)
    _edit(copy / "causal_qformer.pth", lambda state, _: state.pop("text_proj.weight"))
    result = convert_original_checkpoint(
        copy, tmp_path / "out", beyond_shapes(source), keep_training_weights=True, dtype=torch.bfloat16
    )
    assert result.absent == ["text_proj", "temp"]
    head = SeedCausalQFormerForPreTraining.from_pretrained(tmp_path / "out")
    assert head.contrastive_head.temperature.item() == pytest.approx(head.initial_temperature, rel=1e-2)
    vision_projection, tensor = training_weights["vision_proj.weight"]
    assert torch.equal(head.state_dict()[vision_projection], tensor.to(torch.bfloat16))


@pytest.mark.parametrize(
    "spoil, message",
    [
        (None, r"holds none of the Stage I training weights \(Qformer\.bert\.embeddings\.word_embeddings, .*, temp\)"),
        ("mis-shaped", r"1 mis-shaped: contrastive_head\.vision_projection\.weight: checkpoint \(256, 97\)"),
        ("not finite", r"1 weights hold NaN or inf: temp"),
    ],
)
def test_unusable_training_weights_are_refused(release_with_training_weights, tmp_path, spoil, message):
    source, copy, _ = release_with_training_weights
    if spoil is None:
        shutil.copyfile(source / "causal_qformer.pth", copy / "causal_qformer.pth")
    elif spoil == "mis-shaped":
        _edit(copy / "causal_qformer.pth", lambda state, _: state.update({"vision_proj.weight": torch.zeros(256, 97)}))
    else:
        _edit(copy / "causal_qformer.pth", lambda state, _: state.update({"temp": torch.tensor(float("nan"))}))
    with pytest.raises(ConversionError, match=message) as error:
        convert_original_checkpoint(copy, tmp_path / "out", beyond_shapes(source), keep_training_weights=True)
    assert "\n" not in str(error.value)
    assert not (tmp_path / "out").exists()
