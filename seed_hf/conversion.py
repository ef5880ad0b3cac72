"""Conversion of the original SEED v1 release (`eva_vit_g.pth`, `causal_qformer.pth`, `seed_tokenizer.pth`)."""

import dataclasses
import difflib
import json
import math
import os
import re
import zipfile
from collections.abc import Mapping
from pathlib import Path

import torch
from huggingface_hub.errors import StrictDataclassError
from safetensors.torch import load_file
from transformers import Blip2QFormerConfig, Blip2VisionConfig

from .configuration_seed import SeedVisionTokenizerConfig
from .image_processing_seed import SeedImageProcessor
from .modeling_seed_training import SeedCausalQFormerForPreTraining
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


# The sub-configs of `SeedVisionTokenizerConfig` and the sizes that no weight shape determines, which come from the
# released model (the config's defaults) unless the config overrides name them.
_SUB_CONFIGS = {"vision_config": Blip2VisionConfig, "qformer_config": Blip2QFormerConfig}
_NOT_IN_SHAPES = (
    "vision_config.num_attention_heads",
    "vision_config.layer_norm_eps",
    "qformer_config.num_attention_heads",
    "qformer_config.layer_norm_eps",
    "decoder_num_attention_heads",
    "decoder_layer_norm_eps",
    "vision_ln_eps",
)
# The BLIP-2 vision_config fields that describe the vision tower (`--vision-from`).
_BLIP2_VISION_FIELDS = (
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "image_size",
    "patch_size",
    "hidden_act",
    "layer_norm_eps",
    "qkv_bias",
)


class ConversionError(ValueError):
    """The original checkpoint cannot be read or does not fit the model; the message says which file or weights."""


@dataclasses.dataclass
class ConversionResult:
    """
    What [`convert_original_checkpoint`] did.

    Args:
        config (`SeedVisionTokenizerConfig`):
            The config of the written model.
        skipped (`list[str]`):
            Original entries skipped as training-only (or as vision blocks beyond the model's depth).
        assumed (`list[str]`):
            Sizes no weight shape determines and no override gave, taken from the released model (`name=value`).
        kept (`list[str]`):
            Original training-only entries written to the Stage I training head (`keep_training_weights=True`).
        absent (`list[str]`):
            The Stage I training families the release lacks (`keep_training_weights=True`): they start fresh.
    """

    config: SeedVisionTokenizerConfig
    skipped: list[str]
    assumed: list[str]
    kept: list[str] = dataclasses.field(default_factory=list)
    absent: list[str] = dataclasses.field(default_factory=list)


def _first_few(items: list[str], limit: int = 3) -> str:
    """`items` joined, cut after `limit` with a count of the rest: an error about a 1 B-parameter model stays short."""
    shown = "; ".join(items[:limit])
    return f"{shown} and {len(items) - limit} more" if len(items) > limit else shown


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
    beyond `vision_config.num_hidden_layers`). Raises [`ConversionError`] naming the unknown keys.
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
        raise ConversionError(
            f"{len(unknown)} unknown keys in the original checkpoint: {_first_few(sorted(unknown), limit=5)}"
        )
    return converted, skipped


def check_against_model(converted: Mapping[str, torch.Tensor], model: torch.nn.Module) -> None:
    """Raise [`ConversionError`] with a short summary (counts and first names) of missing, unexpected or mis-shaped
    weights."""
    _check_against(converted, model.state_dict())


def _check_against(converted: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor]) -> None:
    """[`check_against_model`] with the expected weights given by name."""
    missing = [f"{name} {tuple(t.shape)}" for name, t in expected.items() if name not in converted]
    unexpected = [name for name in converted if name not in expected]
    misshaped = [
        f"{name}: checkpoint {tuple(t.shape)}, config expects {tuple(expected[name].shape)}"
        for name, t in converted.items()
        if name in expected and t.shape != expected[name].shape
    ]
    if missing or unexpected or misshaped:
        parts = [
            f"{len(names)} {kind}: {_first_few(names)}"
            for kind, names in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", misshaped))
            if names
        ]
        raise ConversionError(
            f"The checkpoint does not fit the config. {'. '.join(parts)}. Hint: leave the sizes out of the config "
            "(give only head counts and epsilons) so that they are read from the checkpoint, and check that the "
            "files come from one release."
        )


def _training_head_stems(num_qformer_layers: int) -> dict[str, dict[str, str]]:
    """
    The Stage I training weights an original `causal_qformer.pth` may hold, by family: each original stem (a key
    or a module) -> its name in [`SeedCausalQFormerForPreTraining`]. `Qformer.cls.*` and `itm_head.*` have no
    place there.
    """
    text_ffn = {
        f"Qformer.bert.encoder.layer.{layer}.{part}": f"qformer.encoder.layer.{layer}.{part}"
        for layer in range(num_qformer_layers)
        for part in ("intermediate", "output")
    }
    return {
        "Qformer.bert.embeddings.word_embeddings": {
            "Qformer.bert.embeddings.word_embeddings": "contrastive_head.text_embeddings.word_embeddings"
        },
        "Qformer.bert.embeddings.position_embeddings": {
            "Qformer.bert.embeddings.position_embeddings": "contrastive_head.text_embeddings.position_embeddings"
        },
        "Qformer.bert.encoder.layer.N.intermediate/output (the text-branch FFN)": text_ffn,
        "vision_proj": {"vision_proj": "contrastive_head.vision_projection"},
        "text_proj": {"text_proj": "contrastive_head.text_projection"},
        "temp": {"temp": "contrastive_head.temperature"},
    }


def _restem(key: str, stems: Mapping[str, str]) -> str | None:
    """`key` with its stem in `stems` (the whole key or a module above it) replaced by the stem's new name; None
    when it has none."""
    for stem, new_stem in stems.items():
        if key == stem or key.startswith(stem + "."):
            return new_stem + key[len(stem) :]
    return None


def convert_training_head(
    original: Mapping[str, torch.Tensor], config: SeedVisionTokenizerConfig
) -> tuple[dict[str, torch.Tensor], list[str], list[str]]:
    """
    Map the Stage I training weights of an original state dict onto the names of
    [`SeedCausalQFormerForPreTraining`]'s training head: BERT word and position embeddings, the text-branch FFN,
    `vision_proj`, `text_proj` and `temp`, whichever the release holds, each family complete and shape-checked.
    Returns the weights, the original keys used and the families absent (they start fresh in training). Raises
    [`ConversionError`] when the release holds none of them.
    """
    with torch.device("meta"):
        expected = SeedCausalQFormerForPreTraining(config).training_head_state_dict()
    weights, kept, absent = {}, [], []
    for family, stems in _training_head_stems(config.qformer_config.num_hidden_layers).items():
        found = {key: name for key in original if (name := _restem(key, stems))}
        if not found:
            absent.append(family)
            continue
        head_stems = {new_stem: stem for stem, new_stem in stems.items()}
        family_weights = {name: original[key] for key, name in found.items()}
        _check_against(family_weights, {name: t for name, t in expected.items() if _restem(name, head_stems)})
        weights.update(family_weights)
        kept += found
    if not weights:
        raise ConversionError(
            f"Asked to keep the training weights, but the release holds none of the Stage I training weights "
            f"({', '.join(absent)})"
        )
    return weights, kept, absent


def _check_weight_values(original: Mapping[str, torch.Tensor], skipped: list[str]) -> None:
    """Raise [`ConversionError`] naming the used weights that are not floating point or hold NaN/inf."""
    skipped = set(skipped)
    used = {key: tensor for key, tensor in original.items() if key not in skipped}
    integer = [f"{key} ({tensor.dtype})" for key, tensor in used.items() if not tensor.is_floating_point()]
    if integer:
        raise ConversionError(f"{len(integer)} weights are not floating point: {_first_few(integer)}")
    non_finite = [key for key, tensor in used.items() if not torch.isfinite(tensor).all()]
    if non_finite:
        raise ConversionError(f"{len(non_finite)} weights hold NaN or inf: {_first_few(non_finite)}")


def load_original_file(
    path: str | os.PathLike,
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """
    Read one original `.pth` file safely (`weights_only=True`), zip or legacy format. Accepts a bare state dict or
    `{"model": state_dict}` beside training entries (optimizer, epoch, ...), which are returned as skipped.
    """
    path = Path(path)
    if path.stat().st_size == 0:
        raise ConversionError(f"{path} is empty (0 bytes), expected a PyTorch checkpoint: download it again")
    try:
        # Memory-mapping needs the zip format of torch >= 1.6; older (legacy) files are read whole.
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
    except OSError:
        raise
    except Exception as error:  # a truncated file, a text file, a disallowed pickle
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


def _layer_indices(original: Mapping[str, torch.Tensor], pattern: str) -> list[int]:
    """The sorted layer numbers `N` of the keys that `pattern` (a regex whose group 1 is `N`) matches at the start."""
    regex = re.compile(pattern)
    return sorted({int(match[1]) for key in original if (match := regex.match(key))})


def infer_sizes(original: Mapping[str, torch.Tensor], training_head: bool = False) -> dict:
    """
    The `SeedVisionTokenizerConfig` keyword arguments that the shapes of an original state dict (the three files
    merged) determine: widths, depths, FFN sizes, codebook, query and reverse-token counts, image and patch size;
    with `training_head`, also the Q-Former's vocabulary size and text length from its text embeddings, which only
    the Stage I training head uses. Head counts and epsilons are not among them. The vision depth is the number of
    blocks, at most the released 39: EVA-CLIP ViT-g has 40 and SEED, like BLIP-2, uses the first 39.
    """
    shape = {key: tensor.shape for key, tensor in original.items()}
    vision, qformer = {}, {}
    sizes = {"vision_config": vision, "qformer_config": qformer}

    if "cls_token" in shape:
        vision["hidden_size"] = shape["cls_token"][-1]
    if "patch_embed.proj.weight" in shape:
        vision["patch_size"] = shape["patch_embed.proj.weight"][-1]
        if "pos_embed" in shape:
            num_patches = shape["pos_embed"][1] - 1
            side = math.isqrt(num_patches)
            if side * side != num_patches:
                raise ConversionError(f"pos_embed has {num_patches + 1} positions, expected 1 + a square number")
            vision["image_size"] = side * vision["patch_size"]
    blocks = _layer_indices(original, r"blocks\.(\d+)\.")
    if blocks:
        vision["num_hidden_layers"] = min(blocks[-1] + 1, Blip2VisionConfig().num_hidden_layers)
        vision["qkv_bias"] = "blocks.0.attn.q_bias" in shape
    if "blocks.0.mlp.fc1.weight" in shape:
        vision["intermediate_size"] = shape["blocks.0.mlp.fc1.weight"][0]

    if "query_tokens" in shape:
        sizes["num_query_tokens"], qformer["hidden_size"] = shape["query_tokens"][1:]
    layers = _layer_indices(original, r"Qformer\.bert\.encoder\.layer\.(\d+)\.")
    if layers:
        qformer["num_hidden_layers"] = layers[-1] + 1
    cross_attention = _layer_indices(original, r"Qformer\.bert\.encoder\.layer\.(\d+)\.crossattention\.")
    if len(cross_attention) > 1:
        qformer["cross_attention_frequency"] = cross_attention[1] - cross_attention[0]
    elif cross_attention == [0]:  # only the first layer cross-attends: any frequency >= the depth says so
        qformer["cross_attention_frequency"] = layers[-1] + 1
    if "Qformer.bert.encoder.layer.0.intermediate_query.dense.weight" in shape:
        qformer["intermediate_size"] = shape["Qformer.bert.encoder.layer.0.intermediate_query.dense.weight"][0]
    for field, key in (("vocab_size", "word_embeddings"), ("max_position_embeddings", "position_embeddings")):
        if training_head and f"Qformer.bert.embeddings.{key}.weight" in shape:
            qformer[field] = shape[f"Qformer.bert.embeddings.{key}.weight"][0]

    if "quantize.embedding.weight" in shape:
        sizes["codebook_size"], sizes["codebook_dim"] = shape["quantize.embedding.weight"]
    decoder_blocks = _layer_indices(original, r"blocks_text\.(\d+)\.")
    if decoder_blocks:
        sizes["decoder_num_blocks"] = decoder_blocks[-1] + 1
    if "blocks_text.0.mlp.fc1.weight" in shape:
        mlp_width, width = shape["blocks_text.0.mlp.fc1.weight"]
        sizes["decoder_mlp_ratio"] = mlp_width / width
    reverse_layers = _layer_indices(original, r"Reverse_Qformer\.bert\.encoder\.layer\.(\d+)\.")
    if reverse_layers:
        sizes["reverse_qformer_num_hidden_layers"] = reverse_layers[-1] + 1
    if "reverse_tokens" in shape:
        sizes["num_reverse_tokens"] = shape["reverse_tokens"][1]
    if "distill_text_proj.weight" in shape:
        sizes["generation_embed_dim"] = shape["distill_text_proj.weight"][0]
    return sizes


def _unknown_keys(arguments: Mapping, config_class: type, prefix: str = "") -> list[str]:
    """The keys of `arguments` that `config_class` does not take, each with the closest known key when there is one."""
    known = {field.name for field in dataclasses.fields(config_class)} | {"model_type"}
    unknown = []
    for key in arguments:
        if key not in known:
            close = difflib.get_close_matches(str(key), known, n=1)
            unknown.append(f"{prefix}{key}" + (f" (did you mean {prefix}{close[0]}?)" if close else ""))
    return unknown


def check_config_overrides(overrides: object) -> None:
    """Raise [`ConversionError`] unless `overrides` is a dict of `SeedVisionTokenizerConfig` keyword arguments (its
    sub-configs as dicts), naming unknown keys with their closest known ones."""
    if not isinstance(overrides, Mapping):
        raise ConversionError(
            f"The config must be a JSON object of SeedVisionTokenizerConfig keyword arguments, not a "
            f"{type(overrides).__name__}"
        )
    unknown = _unknown_keys(overrides, SeedVisionTokenizerConfig)
    for name, config_class in _SUB_CONFIGS.items():
        if name in overrides and not isinstance(overrides[name], Mapping):
            raise ConversionError(
                f"Config key {name} must be an object of {config_class.__name__} keyword arguments, not a "
                f"{type(overrides[name]).__name__}"
            )
        unknown += _unknown_keys(overrides.get(name, {}), config_class, f"{name}.")
    if unknown:
        raise ConversionError(f"Unknown config keys: {', '.join(unknown)}")


def infer_config(
    original: Mapping[str, torch.Tensor],
    overrides: Mapping | None = None,
    vision_config: Mapping | None = None,
    training_head: bool = False,
) -> tuple[SeedVisionTokenizerConfig, list[str]]:
    """
    The config of an original state dict: every size its shapes determine ([`infer_sizes`], with `training_head`
    those of the Stage I training head too), then `vision_config` (the vision tower's sizes when they come from
    elsewhere, e.g. a BLIP-2 config), then `overrides` (`SeedVisionTokenizerConfig` keyword arguments, sub-configs
    as dicts); what none gives is the released value.
    Returns the config and the sizes assumed from the released model (`name=value`).
    """
    overrides = overrides or {}
    check_config_overrides(overrides)
    inferred = infer_sizes(original, training_head)
    given = {**overrides, "vision_config": {**(vision_config or {}), **overrides.get("vision_config", {})}}
    arguments = {**inferred, **given}
    for name in _SUB_CONFIGS:
        arguments[name] = {**inferred[name], **given.get(name, {})}
    try:
        config = SeedVisionTokenizerConfig(**arguments)
    except StrictDataclassError as error:  # a value of the wrong type; its message spans lines
        raise ConversionError(f"Invalid config value: {' '.join(str(error).split())}") from None
    assumed = []
    for name in _NOT_IN_SHAPES:
        sub_config, _, field = name.rpartition(".")
        if field not in (given.get(sub_config, {}) if sub_config else given):
            assumed.append(f"{name}={getattr(getattr(config, sub_config) if sub_config else config, field)}")
    return config, assumed


def _read_blip2_vision_config(folder: Path) -> dict:
    """The vision tower sizes of a transformers BLIP-2 checkpoint folder; raises unless the folder is one."""
    if not folder.is_dir():
        raise FileNotFoundError(f"No such BLIP-2 checkpoint folder: {folder}")
    config_file = folder / "config.json"
    try:
        blip2_config = json.loads(config_file.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{folder} is not a transformers BLIP-2 checkpoint: it has no config.json") from None
    except json.JSONDecodeError as error:
        raise ConversionError(f"{config_file} is not valid JSON ({error})") from None
    model_type = blip2_config.get("model_type") if isinstance(blip2_config, dict) else None
    if model_type != "blip-2":
        raise ConversionError(
            f"{folder} is not a transformers BLIP-2 checkpoint: its config.json has model_type {model_type!r}, "
            "expected 'blip-2'"
        )
    if not any(folder.glob("*.safetensors")):
        raise ConversionError(f"{folder} has no .safetensors file of a transformers BLIP-2 checkpoint")
    vision = blip2_config.get("vision_config") or {}
    return {field: vision[field] for field in _BLIP2_VISION_FIELDS if field in vision}


def _load_blip2_vision(
    folder: Path, blip2_vision: Mapping, config: SeedVisionTokenizerConfig
) -> dict[str, torch.Tensor]:
    """Vision tower weights from a transformers BLIP-2 checkpoint folder (safetensors), `ln_vision` excluded;
    `blip2_vision` holds the sizes of its config, which must be those of `config`."""
    for field, value in blip2_vision.items():
        if value != getattr(config.vision_config, field):
            raise ConversionError(
                f"BLIP-2 vision_config.{field} is {value}, the SEED config has {getattr(config.vision_config, field)}"
            )
    weights = {}
    for file in sorted(folder.glob("*.safetensors")):
        for key, tensor in load_file(file).items():
            layer = re.match(r"vision_model\.encoder\.layers\.(\d+)\.", key)
            if not key.startswith("vision_model.") or key.startswith("vision_model.post_layernorm."):
                continue
            if layer and int(layer[1]) >= config.vision_config.num_hidden_layers:
                continue
            weights[key] = tensor
    if not weights:
        raise ConversionError(f"{folder} holds no vision_model.* weights of a BLIP-2 vision tower")
    return weights


def _check_original_dir(original_dir: Path, names: list[str]) -> None:
    """Raise a clear `FileNotFoundError`/`NotADirectoryError` unless `original_dir` holds the files `names`."""
    if not original_dir.exists():
        raise FileNotFoundError(f"No such folder: {original_dir} (the original release: {', '.join(names)})")
    if not original_dir.is_dir():
        raise NotADirectoryError(f"{original_dir} is not a folder (the original release: {', '.join(names)})")
    missing = [name for name in names if not (original_dir / name).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{original_dir} lacks {', '.join(missing)} (the original release: {', '.join(names)})"
        )


def _check_output_parent(output_dir: Path) -> None:
    """Fail before the slow part when `output_dir` cannot be created: its nearest existing parent must be a
    writable folder (missing parents are created)."""
    parent = output_dir.absolute().parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise NotADirectoryError(f"Cannot write {output_dir}: {parent} is not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise PermissionError(f"Cannot write {output_dir}: permission denied in {parent} (read-only?)")


def _load_original_files(original_dir: Path, names: list[str]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """The state dicts of the original files merged, and their skipped training entries; a key in two files is an
    error."""
    original, origin, skipped, duplicates = {}, {}, [], []
    for name in names:
        state_dict, skipped_entries = load_original_file(original_dir / name)
        duplicates += [f"{key} ({origin[key]} and {name})" for key in state_dict if key in origin]
        origin.update(dict.fromkeys(state_dict, name))
        original.update(state_dict)
        skipped += skipped_entries
    if duplicates:
        raise ConversionError(f"{len(duplicates)} keys appear in two files: {_first_few(duplicates)}")
    return original, skipped


def convert_original_checkpoint(
    original_dir: str | os.PathLike,
    output_dir: str | os.PathLike,
    config: SeedVisionTokenizerConfig | Mapping | None = None,
    overwrite: bool = False,
    dtype: torch.dtype = torch.float32,
    vision_from: str | os.PathLike | None = None,
    model_card: str | os.PathLike | None = None,
    keep_training_weights: bool = False,
) -> ConversionResult:
    """
    Convert the original release in `original_dir` into a transformers folder at `output_dir` (`config.json`,
    `model.safetensors`, `preprocessor_config.json`, the model code for `trust_remote_code`, and `model_card` as
    README.md). The folder is written under a temporary name and renamed into place only when complete.

    `config` is either the complete [`SeedVisionTokenizerConfig`], or a dict of its keyword arguments for what the
    weight shapes cannot tell (head counts, epsilons) on top of the sizes inferred from the checkpoint
    ([`infer_config`]); `None` infers every size and takes the rest from the released model. `vision_from` is a
    transformers BLIP-2 folder whose vision tower replaces `eva_vit_g.pth`. `keep_training_weights` also writes the
    release's Stage I training weights ([`convert_training_head`]) as `training_head.safetensors` and
    `training_head.json`, which [`SeedCausalQFormerForPreTraining`] `from_pretrained` reads.
    """
    original_dir, output_dir = Path(original_dir), check_output_dir(output_dir, overwrite)
    vision_from = Path(vision_from) if vision_from else None
    names = [name for name in ORIGINAL_FILES if not (vision_from and name == "eva_vit_g.pth")]
    _check_original_dir(original_dir, names)
    _check_output_parent(output_dir)
    infer = not isinstance(config, SeedVisionTokenizerConfig)
    if infer:  # before the slow loading
        check_config_overrides(config or {})
    blip2_vision = _read_blip2_vision_config(vision_from) if vision_from else None

    original, skipped = _load_original_files(original_dir, names)
    assumed = []
    if infer:
        config, assumed = infer_config(original, config, blip2_vision, keep_training_weights)
    converted, skipped_keys = convert_state_dict(original, config)
    head_weights, kept, absent = {}, [], []
    if keep_training_weights:
        head_weights, kept, absent = convert_training_head(original, config)
        kept_keys = set(kept)
        skipped_keys = [key for key in skipped_keys if key not in kept_keys]
    _check_weight_values(original, skipped_keys)
    skipped += skipped_keys
    if vision_from:
        converted.update(_load_blip2_vision(vision_from, blip2_vision, config))

    with torch.device("meta"):
        model = SeedVisionTokenizer(config)
    check_against_model(converted, model)
    model.load_state_dict({name: t.to(dtype) for name, t in converted.items()}, assign=True)

    with atomic_output_dir(output_dir, overwrite) as staging:
        model.save_pretrained(staging)
        size = config.vision_config.image_size
        SeedImageProcessor(size={"height": size, "width": size}).save_pretrained(staging)
        write_model_card(model_card, staging)
        if head_weights:
            head_weights = {name: t.to(dtype) for name, t in head_weights.items()}
            SeedCausalQFormerForPreTraining.save_training_head(staging, head_weights)
    return ConversionResult(config=config, skipped=skipped, assumed=assumed, kept=kept, absent=absent)


__all__ = [
    "ConversionError",
    "ConversionResult",
    "check_against_model",
    "check_config_overrides",
    "convert_original_checkpoint",
    "convert_state_dict",
    "convert_training_head",
    "infer_config",
    "infer_sizes",
    "load_original_file",
]
