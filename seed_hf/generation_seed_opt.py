"""Generation controls of SEED-OPT: the logits processor that keeps image blocks well formed."""

import torch
from transformers import LogitsProcessor

from .configuration_seed import SeedOPTConfig


def check_image_vocabulary(config: SeedOPTConfig) -> None:
    """Raise a `ValueError` unless `config` describes image tokens that fit in the language model's vocabulary."""
    missing = [
        name for name in ("image_token_start_id", "boi_token_id", "eoi_token_id") if getattr(config, name) is None
    ]
    if missing:
        raise ValueError(
            f"This model has no image tokens ({', '.join(missing)} unset in its config): text-to-image needs a "
            "SEED-OPT model built with the extended tokenizer (conversion_scripts/build_seed_opt.py)"
        )


class SeedImageBlockLogitsProcessor(LogitsProcessor):
    r"""
    Keeps every image block well formed: once a sequence has opened a block with `<img>`, only the
    `num_image_tokens` code ids may follow, exactly `image_seq_length` of them, and then `</img>` is forced. Outside
    a block, code ids and `</img>` are ruled out and every other token keeps its score, so it serves both
    text-to-image (a prompt that ends with `<img>`) and interleaved generation (the model opens a block itself).

    Args:
        image_token_start_id (`int`):
            Id of the first code token; the codes occupy `num_image_tokens` contiguous ids from here.
        num_image_tokens (`int`):
            Number of code tokens.
        image_seq_length (`int`):
            Codes per image block.
        boi_token_id (`int`):
            Id of `<img>`.
        eoi_token_id (`int`):
            Id of `</img>`.

    Example:

    ```python
    >>> import torch
    >>> from seed_hf.generation_seed_opt import SeedImageBlockLogitsProcessor
    >>> processor = SeedImageBlockLogitsProcessor(10, 4, 2, boi_token_id=14, eoi_token_id=15)
    >>> scores = processor(torch.tensor([[3, 14, 11]]), torch.zeros(1, 16))
    >>> scores[0].isfinite().nonzero().flatten().tolist()  # one code written: one more code
    [10, 11, 12, 13]

    ```
    """

    def __init__(
        self,
        image_token_start_id: int,
        num_image_tokens: int,
        image_seq_length: int,
        boi_token_id: int,
        eoi_token_id: int,
    ):
        self.image_token_start_id = image_token_start_id
        self.num_image_tokens = num_image_tokens
        self.image_seq_length = image_seq_length
        self.boi_token_id = boi_token_id
        self.eoi_token_id = eoi_token_id

    @classmethod
    def from_config(cls, config: SeedOPTConfig) -> "SeedImageBlockLogitsProcessor":
        """The processor for the image tokens that `config` (a [`SeedOPTConfig`]) describes."""
        check_image_vocabulary(config)
        return cls(
            config.image_token_start_id,
            config.num_image_tokens,
            config.image_seq_length,
            config.boi_token_id,
            config.eoi_token_id,
        )

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)
        last_boi = torch.where(input_ids == self.boi_token_id, positions, -1).amax(-1)
        last_eoi = torch.where(input_ids == self.eoi_token_id, positions, -1).amax(-1)
        in_block = last_boi > last_eoi
        written = input_ids.shape[1] - 1 - last_boi
        if (in_block & (written > self.image_seq_length)).any():
            raise ValueError(
                f"An image block holds more than {self.image_seq_length} tokens without `</img>`; "
                f"each block is `<img>` + {self.image_seq_length} codes + `</img>`"
            )
        allowed = ~in_block[:, None].expand_as(scores).clone()
        codes = slice(self.image_token_start_id, self.image_token_start_id + self.num_image_tokens)
        allowed[:, codes] = (in_block & (written < self.image_seq_length))[:, None]
        allowed[:, self.eoi_token_id] = in_block & (written == self.image_seq_length)
        return scores.masked_fill(~allowed, -float("inf"))


__all__ = ["SeedImageBlockLogitsProcessor", "check_image_vocabulary"]
