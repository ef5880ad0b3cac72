"""Generation controls of SEED-OPT: the logits processor that keeps image blocks well formed."""

import torch
from transformers import GenerationConfig, LogitsProcessor

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
        scores = scores.masked_fill(~allowed, -float("inf"))
        if (in_block & scores.isneginf().all(-1)).any():
            raise ValueError(
                "Every token an image block allows here (its code ids, or `</img>` to close it) has a score of -inf: "
                "an earlier logits processor or generation argument (suppress_tokens, bad_words_ids, sequence_bias, "
                "a custom logits_processor) bans them"
            )
        return scores

    def block_token_ids(self) -> set[int]:
        """The ids an image block is made of: the code ids and `</img>`."""
        return {
            *range(self.image_token_start_id, self.image_token_start_id + self.num_image_tokens),
            self.eoi_token_id,
        }

    def codes_of_generated_block(self, generated: torch.LongTensor) -> torch.LongTensor:
        r"""
        The codes of image blocks generated after `<img>`, checked to be well formed.

        Args:
            generated (`torch.LongTensor` of shape `(num_sequences, num_new_tokens)`):
                The tokens generated after a prompt ending with `<img>`.

        Returns:
            `torch.LongTensor` of shape `(num_sequences, image_seq_length)`: codes in `[0, num_image_tokens)`.

        Raises:
            `ValueError`: unless each row is `image_seq_length` code ids then `</img>`.
        """
        codes = generated[:, :-1] - self.image_token_start_id
        if (
            generated.shape[1] != self.image_seq_length + 1
            or (generated[:, -1] != self.eoi_token_id).any()
            or ((codes < 0) | (codes >= self.num_image_tokens)).any()
        ):
            raise ValueError(
                f"Image generation must write {self.image_seq_length} code ids then `</img>` after `<img>`, but wrote "
                f"{generated.shape[1]} tokens {generated[0].tolist()}...; a generation argument stopped or steered it "
                "(e.g. a custom stopping_criteria or logits_processor)"
            )
        return codes


def check_image_block_arguments(
    block: SeedImageBlockLogitsProcessor, generation_config: GenerationConfig, generate_kwargs: dict
) -> None:
    """
    Raise a `ValueError` naming any `generate` argument that would cut an image block short or ban the tokens it is
    made of: the block has a fixed length and every code must stay possible.
    """
    for name in ("max_new_tokens", "min_new_tokens", "max_length", "min_length"):
        if name in generate_kwargs:
            raise ValueError(f'generation_mode="image" fixes the image block\'s length; do not pass {name}')

    def setting(name: str):
        return generate_kwargs.get(name, getattr(generation_config, name, None))

    for name in ("max_time", "stop_strings", "stopping_criteria"):
        if setting(name):
            raise ValueError(f'generation_mode="image" writes a fixed-length image block; do not pass {name}')
    banned = {
        "suppress_tokens": setting("suppress_tokens") or [],
        "begin_suppress_tokens": setting("begin_suppress_tokens") or [],
        "bad_words_ids": [token for word in setting("bad_words_ids") or [] for token in word],
    }
    block_ids = block.block_token_ids()
    for name, token_ids in banned.items():
        if block_ids.intersection(token_ids):
            raise ValueError(
                f'generation_mode="image" needs every code id and `</img>` available, but {name} bans '
                f"{sorted(block_ids.intersection(token_ids))[:5]}..."
            )


__all__ = ["SeedImageBlockLogitsProcessor", "check_image_block_arguments", "check_image_vocabulary"]
