"""Conversion of the original SEED v1 release (`eva_vit_g.pth`, `causal_qformer.pth`, `seed_tokenizer.pth`)."""

import json
import os
import re
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors.torch import load_file

from .configuration_seed import SeedVisionTokenizerConfig
from .image_processing_seed import SeedImageProcessor
from .modeling_seed_vision_tokenizer import SeedVisionTokenizer
from .utils import atomic_output_dir, check_output_dir, write_model_card

ORIGINAL_FILES = ("eva_vit_g.pth", "causal_qformer.pth", "seed_tokenizer.pth")

# Top-level entries of a training checkpoint beside "model".
_TRAINING_ENTRIES = {
    "optimizer",
    "epoch",
    "config",
    "scaler",
    "lr_scheduler",
    "iters",
    "step",
}

# Families the original checkpoints may carry that the inference model does not use.
_TRAINING_ONLY_KEYS = re.compile(
    r"^(Qformer|Reverse_Qformer)\.bert\.embeddings\.(word_embeddings|position_embeddings)\.|"
    r"^(Qformer|Reverse_Qformer)\.bert\.embeddings\.position_ids$|"
    r"^(Qformer|Reverse_Qformer)\.bert\.encoder\.layer\.\d+\.(intermediate|output)\.|"
    r"^(Qformer|Reverse_Qformer)\.cls\.|"
    r"^(vision_proj|text_proj|itm_head)\.|"
    r"^temp$|"
    r"^(norm|fc_norm|head)\."
)

_BERT_RULES = [
    (r"embeddings\.LayerNorm\.", "layernorm."),
    (
        r"encoder\.layer\.(\d+)\.(attention|crossattention)\.self\.",
        r"encoder.layer.\1.\2.attention.",
    ),
    (
        r"encoder\.layer\.(\d+)\.(attention|crossattention)\.output\.",
        r"encoder.layer.\1.\2.output.",
    ),
    (
        r"encoder\.layer\.(\d+)\.(intermediate_query|output_query)\.",
        r"encoder.layer.\1.\2.",
    ),
]
_BLOCK_RULES = [
    (r"norm1\.", "layer_norm1."),
    (r"norm2\.", "layer_norm2."),
    (r"attn\.qkv\.", "self_attn.qkv."),
    (r"attn\.proj\.", "self_attn.projection."),
    (r"mlp\.(fc1|fc2)\.", r"mlp.\1."),
]
_RENAMES = [
    (r"cls_token", "vision_model.embeddings.class_embedding"),
    (r"pos_embed", "vision_model.embeddings.position_embedding"),
    (
        r"patch_embed\.proj\.(weight|bias)",
        r"vision_model.embeddings.patch_embedding.\1",
    ),
    (r"ln_vision\.(weight|bias)", r"vision_model.post_layernorm.\1"),
    (r"query_tokens", "query_tokens"),
    (r"quantize\.embedding\.weight", "quantizer.codebook.weight"),
    (r"encode_task_layer\.([02])\.(weight|bias)", r"quantizer.encode_task_layer.\1.\2"),
    (r"decode_task_layer\.([02])\.(weight|bias)", r"decoder.decode_task_layer.\1.\2"),
    (r"pos_embed_text", "decoder.position_embeddings"),
    (r"reverse_tokens", "decoder.reverse_tokens"),
    (r"distill_text_proj\.(weight|bias)", r"decoder.projection.\1"),
]


class ConversionError(ValueError):
    """The original checkpoint does not fit the model: names every missing, unknown or mis-shaped weight."""


def _rename(key: str) -> str | None:
    """Our name for an original key, or None when the key is unknown."""
    for pattern, target in _RENAMES:
        if re.fullmatch(pattern, key):
            return re.sub(pattern, target, key)
    for prefix, ours in (
        ("blocks.", "vision_model.encoder.layers."),
        ("blocks_text.", "decoder.blocks.layers."),
    ):
        match = re.fullmatch(re.escape(prefix) + r"(\d+)\.(.+)\.(weight|bias)", key)
        if match:
            for pattern, target in _BLOCK_RULES:
                if re.fullmatch(pattern, match[2] + "."):
                    return f"{ours}{match[1]}.{re.sub(pattern, target, match[2] + '.')}{match[3]}"
            return None
    for prefix, ours in (
        ("Qformer.bert.", "qformer."),
        ("Reverse_Qformer.bert.", "decoder.reverse_qformer."),
    ):
        if key.startswith(prefix):
            rest = key[len(prefix) :]
            for pattern, target in _BERT_RULES:
                if re.match(pattern, rest) and re.fullmatch(r".+\.(weight|bias)", rest):
                    return ours + re.sub(pattern, target, rest, count=1)
            return None
    return None


def convert_state_dict(
    original: Mapping[str, torch.Tensor], config: SeedVisionTokenizerConfig
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """
    Map an original state dict (the three files merged) onto [`SeedVisionTokenizer`] names.

    Returns the converted state dict and the original keys that were skipped as training-only (or as vision blocks
    beyond `vision_config.num_hidden_layers`). Raises [`ConversionError`] naming each unknown key.
    """
    converted, skipped, unknown = {}, [], []
    num_vision_layers = config.vision_config.num_hidden_layers
    q_biases, v_biases = {}, {}
    for key, tensor in original.items():
        block = re.match(r"blocks\.(\d+)\.", key)
        if block and int(block[1]) >= num_vision_layers or _TRAINING_ONLY_KEYS.search(key):
            skipped.append(key)
            continue
        bias = re.fullmatch(r"blocks\.(\d+)\.attn\.(q|v)_bias", key)
        if bias:
            (q_biases if bias[2] == "q" else v_biases)[int(bias[1])] = tensor
            continue
        name = _rename(key)
        if name is None:
            unknown.append(key)
        else:
            converted[name] = tensor
    # EVA keeps q and v biases (k has none); transformers' fused qkv bias is cat(q, 0, v).
    for layer in sorted(q_biases.keys() | v_biases.keys()):
        if layer not in q_biases or layer not in v_biases:
            unknown.append(f"blocks.{layer}.attn.{'v' if layer in q_biases else 'q'}_bias (its pair is missing)")
            continue
        q_bias, v_bias = q_biases[layer], v_biases[layer]
        converted[f"vision_model.encoder.layers.{layer}.self_attn.qkv.bias"] = torch.cat(
            [q_bias, torch.zeros_like(v_bias), v_bias]
        )
    if unknown:
        raise ConversionError("Unknown keys in the original checkpoint: " + ", ".join(sorted(unknown)))
    return converted, skipped


def check_against_model(converted: Mapping[str, torch.Tensor], model: torch.nn.Module) -> None:
    """Raise [`ConversionError`] naming each missing, unexpected or mis-shaped weight."""
    expected = model.state_dict()
    problems = [f"missing weight {name} {tuple(t.shape)}" for name, t in expected.items() if name not in converted]
    problems += [f"unexpected weight {name}" for name in converted if name not in expected]
    problems += [
        f"shape of {name}: checkpoint {tuple(t.shape)}, config expects {tuple(expected[name].shape)}"
        for name, t in converted.items()
        if name in expected and t.shape != expected[name].shape
    ]
    if problems:
        raise ConversionError("The checkpoint does not fit the config:\n  " + "\n  ".join(problems))


def load_original_file(
    path: str | os.PathLike,
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """
    Read one original `.pth` file safely (`weights_only=True`). Accepts a bare state dict or `{"model": state_dict}`
    beside training entries (optimizer, epoch, ...), which are returned as skipped.
    """
    path = Path(path)
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except FileNotFoundError:
        raise
    except Exception as error:  # a truncated file, a non-zip file, a disallowed pickle
        raise ConversionError(
            f"{path} is not a readable PyTorch checkpoint ({type(error).__name__}: {error})"
        ) from None
    if not isinstance(checkpoint, dict):
        raise ConversionError(f"{path} holds a {type(checkpoint).__name__}, expected a state dict")
    skipped = []
    if "model" in checkpoint:
        skipped = [f"{path.name}:{key}" for key in checkpoint if key != "model"]
        unknown = [key for key in checkpoint if key != "model" and key not in _TRAINING_ENTRIES]
        if unknown:
            raise ConversionError(f"{path} has unknown top-level entries: {', '.join(unknown)}")
        checkpoint = checkpoint["model"]
    if not checkpoint or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in checkpoint.items()):
        raise ConversionError(f"{path} is not a state dict of named tensors")
    return checkpoint, skipped


def _load_blip2_vision(folder: str | os.PathLike, config: SeedVisionTokenizerConfig) -> dict[str, torch.Tensor]:
    """Vision tower weights from a transformers BLIP-2 checkpoint folder (safetensors), `ln_vision` excluded."""
    folder = Path(folder)
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise ConversionError(f"{folder} has no .safetensors file of a transformers BLIP-2 checkpoint")
    blip2_config = json.loads((folder / "config.json").read_text()).get("vision_config", {})
    for field in (
        "hidden_size",
        "intermediate_size",
        "num_attention_heads",
        "patch_size",
        "image_size",
    ):
        if field in blip2_config and blip2_config[field] != getattr(config.vision_config, field):
            raise ConversionError(
                f"BLIP-2 vision_config.{field} is {blip2_config[field]}, the SEED config has "
                f"{getattr(config.vision_config, field)}"
            )
    weights = {}
    for file in files:
        for key, tensor in load_file(file).items():
            layer = re.match(r"vision_model\.encoder\.layers\.(\d+)\.", key)
            if not key.startswith("vision_model.") or key.startswith("vision_model.post_layernorm."):
                continue
            if layer and int(layer[1]) >= config.vision_config.num_hidden_layers:
                continue
            weights[key] = tensor
    return weights


def convert_original_checkpoint(
    original_dir: str | os.PathLike,
    output_dir: str | os.PathLike,
    config: SeedVisionTokenizerConfig | None = None,
    overwrite: bool = False,
    dtype: torch.dtype = torch.float32,
    vision_from: str | os.PathLike | None = None,
    model_card: str | os.PathLike | None = None,
) -> list[str]:
    """
    Convert the original release in `original_dir` into a transformers folder at `output_dir` (`config.json`,
    `model.safetensors`, `preprocessor_config.json`, the model code for `trust_remote_code`, and `model_card` as
    README.md). The folder is written under a temporary name and renamed into place only when complete. Returns the
    skipped (training-only) keys.
    """
    original_dir, output_dir = Path(original_dir), check_output_dir(output_dir, overwrite)
    config = config or SeedVisionTokenizerConfig()

    names = [name for name in ORIGINAL_FILES if not (vision_from and name == "eva_vit_g.pth")]
    missing_files = [name for name in names if not (original_dir / name).is_file()]
    if missing_files:
        raise FileNotFoundError(f"{original_dir} lacks {', '.join(missing_files)}")
    original, skipped = {}, []
    for name in names:
        state_dict, skipped_entries = load_original_file(original_dir / name)
        original.update(state_dict)
        skipped += skipped_entries
    converted, skipped_keys = convert_state_dict(original, config)
    skipped += skipped_keys
    if vision_from:
        converted.update(_load_blip2_vision(vision_from, config))

    with torch.device("meta"):
        model = SeedVisionTokenizer(config)
    check_against_model(converted, model)
    model.load_state_dict({name: t.to(dtype) for name, t in converted.items()}, assign=True)

    with atomic_output_dir(output_dir, overwrite) as staging:
        model.save_pretrained(staging)
        size = config.vision_config.image_size
        SeedImageProcessor(size={"height": size, "width": size}).save_pretrained(staging)
        write_model_card(model_card, staging)
    return skipped


__all__ = [
    "ConversionError",
    "check_against_model",
    "convert_original_checkpoint",
    "convert_state_dict",
    "load_original_file",
]
