"""The unconditional embedding of the SEED decode pipeline, as a diffusers model so that the pipeline saves it."""

import torch
from diffusers import ModelMixin
from diffusers.configuration_utils import ConfigMixin, register_to_config


class SeedNullEmbedding(ModelMixin, ConfigMixin):
    r"""
    The unconditional branch of classifier-free guidance: the CLIP text embedding of the empty prompt `""` of the
    Stable Diffusion model the UNet comes from, kept as a persistent buffer so that decoding needs no text encoder.

    This module imports nothing of seed_hf: a saved pipeline carries it as the code of its `null_embedding` component.

    Args:
        sequence_length (`int`, *optional*, defaults to 77):
            Number of tokens of the embedding (CLIP's context length).
        hidden_size (`int`, *optional*, defaults to 768):
            Width of the embedding (the UNet's cross-attention dimension).
    """

    @register_to_config
    def __init__(self, sequence_length: int = 77, hidden_size: int = 768):
        super().__init__()
        self.register_buffer("embedding", torch.zeros(1, sequence_length, hidden_size), persistent=True)

    @classmethod
    def from_embedding(cls, embedding: torch.Tensor) -> "SeedNullEmbedding":
        """Wrap a `(1, sequence_length, hidden_size)` embedding, e.g. `text_encoder(tokenizer("", ...))[0]`."""
        if not isinstance(embedding, torch.Tensor) or embedding.ndim != 3 or embedding.shape[0] != 1:
            shape = tuple(embedding.shape) if isinstance(embedding, torch.Tensor) else type(embedding).__name__
            raise ValueError(f"Expected a tensor of shape (1, sequence_length, hidden_size), got {shape}")
        null_embedding = cls(sequence_length=embedding.shape[1], hidden_size=embedding.shape[2])
        null_embedding.embedding.copy_(embedding.detach())
        return null_embedding

    def forward(self) -> torch.Tensor:
        """The embedding, shape `(1, sequence_length, hidden_size)`."""
        return self.embedding


__all__ = ["SeedNullEmbedding"]
