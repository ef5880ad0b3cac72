"""Shared test helpers: tiny seeded SEED tokenizers, the parity fixtures and the check of a failed command."""

import json
import re
from pathlib import Path

import pytest
import torch

from seed_hf import SeedVisionTokenizer, SeedVisionTokenizerConfig

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED_PARITY = REPO_ROOT.parent / "shared" / "parity"
BUNDLED_PARITY = Path(__file__).resolve().parent / "fixtures" / "parity"


def assert_fails(capsys, pattern: str, command) -> None:
    """`command()` (a `seed-hf` run) returns exit status 1 and prints one `error:` line matching `pattern`."""
    capsys.readouterr()
    assert command() == 1
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and re.search(pattern, errors[0]), errors


def parity_root() -> Path | None:
    """The parity data: `../shared/parity` when present (CI), else the copy bundled with the tests."""
    for root in (SHARED_PARITY, BUNDLED_PARITY):
        if root.is_dir():
            return root
    return None


def tiny_config(**overrides) -> SeedVisionTokenizerConfig:
    """A SEED tokenizer config small enough for CPU tests (32 codes, 77 x 768 outputs as the real one)."""
    kwargs = dict(
        vision_config=dict(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            image_size=28,
            patch_size=14,
        ),
        qformer_config=dict(hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4),
        decoder_num_blocks=2,
        reverse_qformer_num_hidden_layers=2,
        codebook_size=64,
        codebook_dim=8,
    )
    kwargs.update(overrides)
    return SeedVisionTokenizerConfig(**kwargs)


@torch.no_grad()
def randomize_(model: SeedVisionTokenizer, seed: int = 0) -> SeedVisionTokenizer:
    """
    Redraw every parameter (so no module is close to an identity) and draw the codebook at the scale of the
    projected queries, so that different images get different codes.
    """
    generator = torch.Generator().manual_seed(seed)
    for name, parameter in model.named_parameters():
        noise = torch.randn(parameter.shape, generator=generator)
        if parameter.ndim >= 2:
            parameter.copy_(noise / parameter.shape[-1] ** 0.5)
        elif "norm" in name.lower():
            parameter.copy_(("weight" in name) + 0.1 * noise)
        else:
            parameter.copy_(0.1 * noise)
    pixel_values = torch.randn(8, 3, *(2 * [model.config.vision_config.image_size]), generator=generator)
    query_output = model(pixel_values).causal_query_output
    projected = model.quantizer.encode_task_layer(query_output).flatten(0, 1)
    codebook = model.quantizer.codebook.weight
    codebook.copy_(projected.mean(0) + projected.std(0) * torch.randn(codebook.shape, generator=generator))
    return model


def tiny_tokenizer(seed: int = 0, **overrides) -> SeedVisionTokenizer:
    """A tiny SEED tokenizer with seeded random weights, in eval mode."""
    return randomize_(SeedVisionTokenizer(tiny_config(**overrides)).eval(), seed)


@pytest.fixture(scope="session", autouse=True)
def one_thread():
    """The tiny models' ops are so small that thread synchronisation dominates them, by far on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def tokenizer_model():
    return tiny_tokenizer()


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A folder holding the tiny SEED tokenizer and its image processor, as `seed-hf convert` writes one."""
    from seed_hf import SeedImageProcessor

    folder = tmp_path_factory.mktemp("model")
    tiny_tokenizer().save_pretrained(folder)
    SeedImageProcessor(size={"height": 28, "width": 28}).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    """The SEED-OPT test tokenizer: a small OPT-format BPE plus 64 image codes (as `tiny_config`'s codebook)."""
    from text_helpers import make_seed_opt_tokenizer

    return make_seed_opt_tokenizer(tmp_path_factory.mktemp("tokenizer"))


@pytest.fixture(scope="module")
def model(tokenizer):
    """A tiny SEED-OPT over `tokenizer`, with a tiny vision tokenizer inside."""
    from seed_opt_helpers import tiny_seed_opt

    return tiny_seed_opt(tokenizer)


def parity_config(fixture_dir: Path) -> SeedVisionTokenizerConfig:
    """Our config from a parity fixture's `config.json` (the original's sizes, flat keys)."""
    sizes = json.loads((fixture_dir / "config.json").read_text())
    # The original ties these to the Q-Former; a fixture that does not is not one our architecture describes.
    for tied in ("decoder_hidden_size", "reverse_qformer_hidden_size"):
        assert sizes.get(tied, sizes["qformer_hidden_size"]) == sizes["qformer_hidden_size"], tied
    assert (
        sizes.get("reverse_qformer_num_attention_heads", sizes["qformer_num_attention_heads"])
        == sizes["qformer_num_attention_heads"]
    )
    assert (
        sizes.get("reverse_qformer_intermediate_size", sizes["qformer_intermediate_size"])
        == sizes["qformer_intermediate_size"]
    )
    return SeedVisionTokenizerConfig(
        vision_config=dict(
            hidden_size=sizes["vision_hidden_size"],
            intermediate_size=sizes["vision_intermediate_size"],
            num_hidden_layers=sizes["vision_num_hidden_layers"],
            num_attention_heads=sizes["vision_num_attention_heads"],
            layer_norm_eps=sizes["vision_layer_norm_eps"],
            image_size=sizes["image_size"],
            patch_size=sizes["patch_size"],
        ),
        qformer_config=dict(
            hidden_size=sizes["qformer_hidden_size"],
            intermediate_size=sizes["qformer_intermediate_size"],
            num_hidden_layers=sizes["qformer_num_hidden_layers"],
            num_attention_heads=sizes["qformer_num_attention_heads"],
            layer_norm_eps=sizes["qformer_layer_norm_eps"],
            cross_attention_frequency=sizes["cross_attention_frequency"],
        ),
        num_query_tokens=sizes["num_query_tokens"],
        codebook_size=sizes["codebook_size"],
        codebook_dim=sizes["codebook_dim"],
        decoder_num_blocks=sizes["decoder_num_blocks"],
        decoder_num_attention_heads=sizes.get("decoder_num_heads"),
        decoder_mlp_ratio=sizes.get("decoder_mlp_ratio", 4.0),
        decoder_layer_norm_eps=sizes.get("decoder_block_layer_norm_eps", 1e-6),
        reverse_qformer_num_hidden_layers=sizes["reverse_qformer_num_hidden_layers"],
        num_reverse_tokens=sizes["num_reverse_tokens"],
        generation_embed_dim=sizes["generation_embed_dim"],
    )
