"""Fine-tuning SEED-OPT on image-caption pairs: a two-direction data collator and the LoRA configuration."""

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from peft import LoraConfig
from transformers import PreTrainedTokenizerBase
from transformers.image_processing_utils import BaseImageProcessor

from .configuration_seed import SeedOPTConfig
from .generation_seed_opt import check_image_vocabulary

IMAGE_TO_TEXT = "image_to_text"
TEXT_TO_IMAGE = "text_to_image"
DIRECTIONS = (IMAGE_TO_TEXT, TEXT_TO_IMAGE)
IGNORE_INDEX = -100


def new_token_ids(config: SeedOPTConfig) -> list[int]:
    """Ids of the tokens SEED-OPT adds to OPT and learns: the image codes, `<img>` and `</img>`."""
    check_image_vocabulary(config)
    start = config.image_token_start_id
    return [*range(start, start + config.num_image_tokens), config.boi_token_id, config.eoi_token_id]


def seed_opt_lora_config(
    config: SeedOPTConfig,
    r: int = 16,
    lora_alpha: int = 32,
    lora_dropout: float = 0.05,
    target_modules: Sequence[str] = ("q_proj", "v_proj"),
) -> LoraConfig:
    r"""
    The peft configuration of SEED-OPT fine-tuning: LoRA on `target_modules` of the language model, plus training of
    only the new rows of the (tied) embeddings and head (`trainable_token_indices`); everything else stays frozen.

    Args:
        config ([`SeedOPTConfig`]):
            The model's config, which holds the new token ids.
        r (`int`, *optional*, defaults to 16):
            LoRA rank.
        lora_alpha (`int`, *optional*, defaults to 32):
            LoRA scaling numerator.
        lora_dropout (`float`, *optional*, defaults to 0.05):
            Dropout on the LoRA branch.
        target_modules (`Sequence[str]`, *optional*, defaults to `("q_proj", "v_proj")`):
            Linear layers of OPT that get LoRA adapters.

    Example:

    ```python
    >>> from peft import get_peft_model
    >>> peft_model = get_peft_model(model, seed_opt_lora_config(model.config))  # doctest: +SKIP
    ```
    """
    return LoraConfig(
        r=r,
        lora_alpha=lora_alpha,
        lora_dropout=lora_dropout,
        target_modules=list(target_modules),
        trainable_token_indices={"embed_tokens": new_token_ids(config)},
        task_type="CAUSAL_LM",
    )


@dataclass
class SeedOPTDataCollator:
    r"""
    Builds SEED-OPT training batches from (image or codes, caption) examples, each in both directions:

    - image to text: `</s> <img> codes </img> caption </s>`, loss on the caption and the final `</s>`;
    - text to image: `</s> caption <img> codes </img>`, loss on the codes and `</img>`.

    An example carries either precomputed codes (`codes_column`, `image_seq_length` integers in
    `[0, num_image_tokens)`), which are written as code ids, or an image (`image_column`), which is prepared by
    `image_processor` and left as `<image>` placeholder slots for the model's vision tokenizer to fill (in
    `input_ids` and `labels`). The rows of a batch are the image-to-text rows of all examples, then the text-to-image
    rows, right-padded; `pixel_values` follow the same order. Use with `TrainingArguments(remove_unused_columns=False)`.

    Args:
        tokenizer ([`PreTrainedTokenizerBase`]):
            The text tokenizer (OPT's byte-level BPE); its `bos_token_id`, `eos_token_id` and `pad_token_id` are used.
        config ([`SeedOPTConfig`]):
            The model's config, which holds the image token ids.
        image_processor ([`BaseImageProcessor`], *optional*):
            Prepares images; required for examples with an image instead of codes.
        text_column (`str`, *optional*, defaults to `"caption"`):
            Column of the captions.
        image_column (`str`, *optional*, defaults to `"image"`):
            Column of the images.
        codes_column (`str`, *optional*, defaults to `"codes"`):
            Column of precomputed codes; used when an example has it.
        directions (`tuple[str, ...]`, *optional*, defaults to `("image_to_text", "text_to_image")`):
            The directions to build, in row order.
        max_length (`int`, *optional*):
            Longest sequence allowed; a longer one raises rather than cutting an image block.

    Example:

    ```python
    >>> collator = SeedOPTDataCollator(processor.tokenizer, model.config)  # doctest: +SKIP
    >>> batch = collator([{"codes": codes[0].tolist(), "caption": "a red circle"}])  # doctest: +SKIP
    >>> model(**batch).loss  # doctest: +SKIP
    ```
    """

    tokenizer: PreTrainedTokenizerBase
    config: SeedOPTConfig
    image_processor: BaseImageProcessor | None = None
    text_column: str = "caption"
    image_column: str = "image"
    codes_column: str = "codes"
    directions: tuple[str, ...] = DIRECTIONS
    max_length: int | None = None

    def __post_init__(self):
        check_image_vocabulary(self.config)
        unknown = [direction for direction in self.directions if direction not in DIRECTIONS]
        if unknown or not self.directions:
            raise ValueError(f"directions must be a non-empty subset of {DIRECTIONS}, got {self.directions}")
        for name in ("bos_token_id", "eos_token_id", "pad_token_id"):
            if getattr(self.tokenizer, name) is None:
                raise ValueError(f"The tokenizer needs a {name}")

    def _image_block(self, feature: dict) -> tuple[list[int], object | None]:
        """`<img>` + code ids (or placeholders) + `</img>`, and the image to tokenize if any."""
        config = self.config
        length = config.image_seq_length
        if feature.get(self.codes_column) is not None:
            codes = torch.as_tensor(feature[self.codes_column])
            if codes.is_floating_point() or codes.shape != (length,):
                raise ValueError(
                    f"{self.codes_column!r} must hold {length} integer codes, got shape {tuple(codes.shape)} "
                    f"and dtype {codes.dtype}"
                )
            if codes.min() < 0 or codes.max() >= config.num_image_tokens:
                raise ValueError(
                    f"{self.codes_column!r} must be in [0, {config.num_image_tokens}), got values from "
                    f"{codes.min().item()} to {codes.max().item()}"
                )
            slots, image = (codes + config.image_token_start_id).tolist(), None
        elif feature.get(self.image_column) is not None:
            if self.image_processor is None or config.image_token_id is None:
                raise ValueError(
                    "Examples with images need an image_processor and a model config with image_token_id "
                    f"(or precomputed codes in {self.codes_column!r})"
                )
            slots, image = [config.image_token_id] * length, feature[self.image_column]
        else:
            raise ValueError(
                f"Each example needs {self.codes_column!r} or {self.image_column!r}; got columns {sorted(feature)}"
            )
        return [config.boi_token_id, *slots, config.eoi_token_id], image

    def _rows(self, feature: dict, direction: str) -> tuple[list[int], list[int], object | None]:
        block, image = self._image_block(feature)
        caption = self.tokenizer(feature[self.text_column], add_special_tokens=False).input_ids
        bos, eos = self.tokenizer.bos_token_id, self.tokenizer.eos_token_id
        if direction == IMAGE_TO_TEXT:
            input_ids = [bos, *block, *caption, eos]
            labels = [IGNORE_INDEX] * (1 + len(block)) + [*caption, eos]
        else:
            input_ids = [bos, *caption, *block]
            labels = [IGNORE_INDEX] * (2 + len(caption)) + block[1:]
        if self.max_length is not None and len(input_ids) > self.max_length:
            raise ValueError(
                f"A {direction} sequence has {len(input_ids)} tokens, more than max_length={self.max_length}; "
                "shorten the caption (image blocks are never cut)"
            )
        return input_ids, labels, image

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor]:
        rows = [self._rows(feature, direction) for direction in self.directions for feature in features]
        length = max(len(input_ids) for input_ids, _, _ in rows)
        input_ids = torch.full((len(rows), length), self.tokenizer.pad_token_id, dtype=torch.long)
        labels = torch.full((len(rows), length), IGNORE_INDEX, dtype=torch.long)
        attention_mask = torch.zeros((len(rows), length), dtype=torch.long)
        for row, (row_ids, row_labels, _) in enumerate(rows):
            input_ids[row, : len(row_ids)] = torch.tensor(row_ids)
            labels[row, : len(row_labels)] = torch.tensor(row_labels)
            attention_mask[row, : len(row_ids)] = 1
        batch = {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}
        images = [image for _, _, image in rows if image is not None]
        if images:
            batch["pixel_values"] = self.image_processor(images, return_tensors="pt").pixel_values
        return batch


__all__ = ["SeedOPTDataCollator", "new_token_ids", "seed_opt_lora_config"]
