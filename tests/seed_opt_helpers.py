"""Tiny SEED-OPT models for the tests: a random OPT over the test tokenizer's vocabulary, with a tiny SEED tokenizer."""

import torch

from seed_hf import SeedImageProcessor, SeedOPTConfig, SeedOPTForConditionalGeneration, SeedProcessor
from seed_hf.tokenization_seed_opt import SeedOPTTokenizer

from conftest import tiny_tokenizer


def seed_opt_config(tokenizer: SeedOPTTokenizer, vision_config=None, **text_overrides) -> SeedOPTConfig:
    """A SEED-OPT config over `tokenizer`'s vocabulary with a 2-layer, 64-wide OPT."""
    text_config = dict(
        vocab_size=len(tokenizer),
        hidden_size=64,
        num_hidden_layers=2,
        ffn_dim=128,
        num_attention_heads=4,
        word_embed_proj_dim=64,
        max_position_embeddings=96,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    text_config.update(text_overrides)
    return SeedOPTConfig.from_text_tokenizer(tokenizer, text_config, vision_config)


def tiny_seed_opt(
    tokenizer: SeedOPTTokenizer, vision_seed: int | None = 0, seed: int = 0, **text_overrides
) -> SeedOPTForConditionalGeneration:
    """
    A seeded tiny SEED-OPT in eval mode; with `vision_seed`, its vision tokenizer is `tiny_tokenizer(vision_seed)`,
    without one it has none and reads code ids only.
    """
    vision = tiny_tokenizer(vision_seed) if vision_seed is not None else None
    config = seed_opt_config(tokenizer, vision.config.to_dict() if vision is not None else None, **text_overrides)
    torch.manual_seed(seed)
    model = SeedOPTForConditionalGeneration(config)
    if vision is not None:
        model.vision_tokenizer.load_state_dict(vision.state_dict())
    return model.eval()


def tiny_processor(tokenizer: SeedOPTTokenizer) -> SeedProcessor:
    """A SeedProcessor for the tiny SEED tokenizer's 28x28 images."""
    return SeedProcessor(SeedImageProcessor(size={"height": 28, "width": 28}), tokenizer)
