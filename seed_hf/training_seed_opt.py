"""Fine-tuning SEED-OPT on image-caption pairs: a two-direction data collator and the LoRA configuration."""

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from peft import LoraConfig
from transformers import BatchEncoding, BatchFeature, DataCollatorForSeq2Seq
from transformers.image_processing_utils import BaseImageProcessor

from .configuration_seed import SeedOPTConfig
from .generation_seed_opt import check_image_vocabulary
from .image_processing_seed import SeedImageProcessor
from .processing_seed import SeedProcessor
from .tokenization_seed_opt import SeedOPTTokenizer

IMAGE_TO_TEXT = "image_to_text"
TEXT_TO_IMAGE = "text_to_image"
DIRECTIONS = (IMAGE_TO_TEXT, TEXT_TO_IMAGE)
IGNORE_INDEX = -100
# The image vocabulary the model config and the tokenizer must agree on.
IMAGE_VOCABULARY = (
    "image_token_start_id",
    "num_image_tokens",
    "image_seq_length",
    "boi_token_id",
    "eoi_token_id",
    "image_token_id",
)


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
    Builds SEED-OPT training batches from (image or codes, caption) examples. **Each example gives two rows**, one per
    direction (with the default `directions`):

    - image to text: `</s> <img> codes </img> caption </s>`, loss on the caption and the final `</s>`;
    - text to image: `</s> caption <img> codes </img>`, loss on the codes and `</img>`.

    An example carries either precomputed codes (`codes_column`, `image_seq_length` integers in
    `[0, num_image_tokens)`), which are written as code ids, or an image (`image_column`), which is prepared by
    `image_processor` and left as `<image>` placeholder slots for the model's vision tokenizer to fill (in
    `input_ids` and `labels`). Both go through [`SeedProcessor`], so the image blocks are built exactly as at
    inference. The rows of a batch are the image-to-text rows of all examples, then the text-to-image rows, padded
    on the tokenizer's padding side (labels with -100); `pixel_values` follow the same order. Use with
    `TrainingArguments(remove_unused_columns=False)`.

    Args:
        tokenizer ([`SeedOPTTokenizer`]):
            The OPT tokenizer with the SEED image tokens; its `bos_token_id`, `eos_token_id` and `pad_token_id` are
            used.
        config ([`SeedOPTConfig`]):
            The model's config, whose image token ids must be the tokenizer's.
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
        pad_to_multiple_of (`int`, *optional*):
            Pad the rows to a multiple of this length (e.g. 8 for tensor cores).
        return_tensors (`str`, *optional*, defaults to `"pt"`):
            `"pt"` for PyTorch tensors, `"np"` for NumPy arrays.

    Example:

    ```python
    >>> collator = SeedOPTDataCollator(processor.tokenizer, model.config)  # doctest: +SKIP
    >>> batch = collator([{"codes": codes[0].tolist(), "caption": "a red circle"}])  # doctest: +SKIP
    >>> batch["input_ids"].shape[0]  # one example, two rows  # doctest: +SKIP
    2
    >>> model(**batch).loss  # doctest: +SKIP
    ```
    """

    tokenizer: SeedOPTTokenizer
    config: SeedOPTConfig
    image_processor: BaseImageProcessor | None = None
    text_column: str = "caption"
    image_column: str = "image"
    codes_column: str = "codes"
    directions: tuple[str, ...] = DIRECTIONS
    max_length: int | None = None
    pad_to_multiple_of: int | None = None
    return_tensors: str = "pt"

    def __post_init__(self):
        check_image_vocabulary(self.config)
        unknown = [direction for direction in self.directions if direction not in DIRECTIONS]
        if unknown or not self.directions:
            raise ValueError(f"directions must be a non-empty subset of {DIRECTIONS}, got {self.directions}")
        for name in ("bos_token_id", "eos_token_id", "pad_token_id"):
            if getattr(self.tokenizer, name) is None:
                raise ValueError(f"The tokenizer needs a {name}")
        for name in IMAGE_VOCABULARY:
            value = getattr(self.config, name)
            if value is not None and value != getattr(self.tokenizer, name, None):
                raise ValueError(
                    f"The model config has {name}={value} but the tokenizer {getattr(self.tokenizer, name, None)}: "
                    "they must come from the same SEED-OPT folder"
                )
        if self.return_tensors not in ("pt", "np"):
            raise ValueError(f"return_tensors must be 'pt' or 'np', got {self.return_tensors!r}")
        # Codes-only training never uses the image processor: the default one only completes the processor.
        self.processor = SeedProcessor(self.image_processor or SeedImageProcessor(), self.tokenizer)
        self.padder = DataCollatorForSeq2Seq(
            self.tokenizer,
            pad_to_multiple_of=self.pad_to_multiple_of,
            label_pad_token_id=IGNORE_INDEX,
            return_tensors=self.return_tensors,
        )

    def _row(self, feature: dict, direction: str) -> tuple[dict[str, list[int]], np.ndarray | None]:
        """One direction of `feature` through the processor: its `input_ids` and `labels`, and its `pixel_values`."""
        caption = feature[self.text_column]
        image_token = self.processor.image_token
        text = image_token + caption if direction == IMAGE_TO_TEXT else caption + image_token
        if feature.get(self.codes_column) is not None:
            try:
                codes = np.asarray(feature[self.codes_column])[None]
                inputs = self.processor(text=text, codes=codes, return_tensors="np")
            except ValueError as error:
                raise ValueError(f"{self.codes_column!r} of an example: {error}") from None
        elif feature.get(self.image_column) is not None:
            if self.image_processor is None or self.config.image_token_id is None:
                raise ValueError(
                    "Examples with images need an image_processor and a model config with image_token_id "
                    f"(or precomputed codes in {self.codes_column!r})"
                )
            inputs = self.processor(text=text, images=[feature[self.image_column]], return_tensors="np")
        else:
            raise ValueError(
                f"Each example needs {self.codes_column!r} or {self.image_column!r}; got columns {sorted(feature)}"
            )
        input_ids = inputs["input_ids"][0].tolist()
        if direction == IMAGE_TO_TEXT:
            input_ids.append(self.tokenizer.eos_token_id)
            learned_from = input_ids.index(self.tokenizer.eoi_token_id) + 1  # the caption and </s>
        else:
            learned_from = input_ids.index(self.tokenizer.boi_token_id) + 1  # the codes and </img>
        if self.max_length is not None and len(input_ids) > self.max_length:
            raise ValueError(
                f"A {direction} sequence has {len(input_ids)} tokens, more than max_length={self.max_length}; "
                "shorten the caption (image blocks are never cut)"
            )
        labels = [IGNORE_INDEX] * learned_from + input_ids[learned_from:]
        return {"input_ids": input_ids, "labels": labels}, inputs.get("pixel_values")

    def __call__(self, features: list[dict]) -> BatchEncoding:
        rows = [self._row(feature, direction) for direction in self.directions for feature in features]
        batch = self.padder([row for row, _ in rows])
        pixel_values = [pixels for _, pixels in rows if pixels is not None]
        if pixel_values:
            batch["pixel_values"] = BatchFeature(
                {"pixel_values": np.concatenate(pixel_values)}, tensor_type=self.return_tensors
            )["pixel_values"]
        return batch


__all__ = ["SeedOPTDataCollator", "new_token_ids", "seed_opt_lora_config"]
