"""Processor for SEED-OPT: text with `<image>` placeholders and images (or their SEED codes) -> model inputs."""

import numpy as np
import torch
from transformers import BatchFeature
from transformers.processing_utils import ProcessorMixin

# SEED-OPT is tuned on plain sequences, not dialogues: `<img>...</img> caption` and `caption <img>...</img>`. The chat
# template therefore writes each message's content as it is, an image entry as the `<image>` placeholder, with no role
# markers, and closes each assistant message with `</s>` as the captions end in training. So a user message
# [image, "A photo of"] gives the captioning prompt "<image>A photo of" and [image, "Question: ... Answer:"] the VQA one.
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if message['content'] is string -%}{{- message['content'] -}}"
    "{%- else -%}{%- for item in message['content'] -%}"
    "{%- if item['type'] == 'image' -%}{{- image_token -}}"
    "{%- elif item['type'] == 'text' -%}{{- item['text'] -}}{%- endif -%}"
    "{%- endfor -%}{%- endif -%}"
    "{%- if message['role'] == 'assistant' -%}{{- eos_token -}}{%- endif -%}"
    "{%- endfor -%}"
)


class SeedProcessor(ProcessorMixin):
    r"""
    Turns interleaved text and images into SEED-OPT inputs, following transformers' multimodal convention (Chameleon,
    Emu3): each `<image>` in the text becomes the block `<img>` + `image_seq_length` x `<image>` + `</img>`, and
    `pixel_values` are returned alongside; the model encodes them into SEED codes and writes the code ids into the
    placeholder slots. Images that are already codes are passed as `codes=` instead: the processor then writes the
    code ids into the slots itself and returns no `pixel_values`.

    Args:
        image_processor ([`SeedImageProcessor`]):
            Prepares the images for the SEED vision tokenizer.
        tokenizer ([`SeedOPTTokenizer`]):
            The OPT tokenizer with the SEED image tokens; it defines the block tokens and `image_seq_length`.
        chat_template (`str`, *optional*, defaults to `CHAT_TEMPLATE`):
            A Jinja template for chat prompts. The default writes the messages' text and `<image>` placeholders as
            they are, without role markers (SEED-OPT is not a dialogue model), and ends assistant messages with `</s>`.

    Example:

    ```python
    >>> from transformers import AutoProcessor
    >>> import seed_hf  # registers SeedProcessor
    >>> processor = AutoProcessor.from_pretrained("seed-opt")  # doctest: +SKIP
    >>> inputs = processor(text=["<image>A photo of", "<image>A drawing of"], images=[cat, dog], padding=True,
    ...                    padding_side="left", return_tensors="pt")  # doctest: +SKIP
    >>> sorted(inputs.keys())  # doctest: +SKIP
    ['attention_mask', 'input_ids', 'pixel_values']
    >>> processor.batch_decode(inputs.input_ids, skip_special_tokens=True)  # doctest: +SKIP
    ['A photo of', 'A drawing of']
    ```
    """

    def __init__(self, image_processor, tokenizer, chat_template=None):
        if getattr(tokenizer, "image_token_start_id", None) is None:
            raise ValueError(
                f"SeedProcessor needs a tokenizer with SEED image tokens (a built SeedOPTTokenizer), got "
                f"{type(tokenizer).__name__} without `image_token_start_id`"
            )
        super().__init__(image_processor, tokenizer, chat_template=chat_template or CHAT_TEMPLATE)
        self.image_token = tokenizer.image_token
        self.image_token_id = tokenizer.image_token_id
        self.boi_token = tokenizer.boi_token
        self.eoi_token = tokenizer.eoi_token
        self.image_seq_length = tokenizer.image_seq_length
        start = tokenizer.image_token_start_id
        # Every id of an image block, for `return_mm_token_type_ids`.
        self.image_token_ids = [
            self.image_token_id,
            tokenizer.boi_token_id,
            tokenizer.eoi_token_id,
            *range(start, start + tokenizer.num_image_tokens),
        ]

    def __call__(self, images=None, text=None, codes=None, **kwargs) -> BatchFeature:
        r"""
        Args:
            images (`PIL.Image.Image`, `np.ndarray`, `torch.Tensor` or a list of them, *optional*):
                One image per `<image>` in `text`, in reading order across the batch.
            text (`str` or `list[str]`, *optional*):
                The prompts; `<image>` marks where each image goes.
            codes (`torch.Tensor`, `np.ndarray` or `list[list[int]]` of shape `(num_images, image_seq_length)`, *optional*):
                SEED codes of the images, in place of `images`, one row per `<image>` in reading order.
            kwargs (*optional*):
                Tokenizer and image-processor options, e.g. `padding=True`, `padding_side="left"` (for generation),
                `truncation`, `max_length`, `return_tensors="pt"`.

        Returns:
            [`BatchFeature`]: `input_ids` and `attention_mask` (with `text`), and `pixel_values` (with `images`).

        Raises:
            `ValueError`: when the number of images or code rows differs from the number of `<image>` placeholders,
            when codes are out of range or of the wrong length, or when truncation cuts an image block.
        """
        if codes is None:
            return super().__call__(images=images, text=text, **kwargs)
        if images is not None:
            raise ValueError("Pass either `images` or their `codes`, not both")
        if text is None:
            raise ValueError("`codes` fill the <image> placeholders of `text`: pass `text` too")
        return self._call_with_codes(text, codes, **kwargs)

    def replace_image_token(self, image_inputs: dict, image_idx: int, **kwargs) -> str:
        return self.boi_token + self.image_token * self.image_seq_length + self.eoi_token

    def _call_with_codes(self, text, codes, **kwargs) -> BatchFeature:
        text = [text] if isinstance(text, str) else list(text)
        if not all(isinstance(sample, str) for sample in text):
            raise ValueError("`text` must be a string or a list of strings")
        num_images = sum(sample.count(self.image_token) for sample in text)
        code_ids = torch.as_tensor(self.tokenizer.codes_to_ids(codes)).cpu()
        if code_ids.ndim != 2 or code_ids.shape[1] != self.image_seq_length:
            raise ValueError(
                f"Expected codes of shape (num_images, {self.image_seq_length}), got {tuple(code_ids.shape)}"
            )
        if len(code_ids) != num_images:
            raise ValueError(
                f"The total number of {self.image_token} tokens in the prompts should be the same as the number of "
                f"code rows passed. Found total {num_images} {self.image_token} tokens and {len(code_ids)} code rows."
            )

        merged_kwargs = self._merge_kwargs(tokenizer_init_kwargs=self.tokenizer.init_kwargs, **kwargs)
        text_kwargs = merged_kwargs["text_kwargs"]
        return_tensors = text_kwargs.pop("return_tensors", None)
        return_mm_token_type_ids = text_kwargs.pop(
            "return_mm_token_type_ids", merged_kwargs["return_mm_token_type_ids"]
        )
        if text_kwargs.pop("return_text_replacement_offsets", merged_kwargs["return_text_replacement_offsets"]):
            raise ValueError("`return_text_replacement_offsets` is not supported together with `codes`")

        blocks = [self.replace_image_token({}, index) for index in range(num_images)]
        text, _ = self.get_text_with_replacements(text, images_replacements=blocks)
        text_inputs = self.tokenizer(text, **text_kwargs)
        self._check_special_mm_tokens(text, text_inputs, modalities=["image"])

        # Placeholders appear in reading order, as the code rows do: fill them one sequence at a time.
        flat_code_ids = code_ids.flatten().numpy()
        filled, offset = [], 0
        for ids in text_inputs["input_ids"]:
            ids = np.array(ids, dtype=np.int64)
            slots = ids == self.image_token_id
            count = int(slots.sum())
            ids[slots] = flat_code_ids[offset : offset + count]
            offset += count
            filled.append(ids.tolist())
        text_inputs["input_ids"] = filled
        if return_mm_token_type_ids:
            text_inputs["mm_token_type_ids"] = self.create_mm_token_type_ids(filled)
        return BatchFeature(data=dict(text_inputs), tensor_type=return_tensors)

    def _check_special_mm_tokens(self, text: list[str], text_inputs, modalities: list[str]) -> None:
        """
        Check that every `<image>`, `<img>` and `</img>` of the expanded text survived tokenization: truncation that
        cuts an image block would otherwise hand the model a partial image.
        """
        if "image" not in modalities:
            return
        input_ids = text_inputs["input_ids"]
        input_ids = input_ids.tolist() if hasattr(input_ids, "tolist") else input_ids
        for token in (self.image_token, self.boi_token, self.eoi_token):
            token_id = self.tokenizer.convert_tokens_to_ids(token)
            for index, (sample, ids) in enumerate(zip(text, input_ids)):
                in_text, in_ids = sample.count(token), list(ids).count(token_id)
                if in_text != in_ids:
                    raise ValueError(
                        f"Truncation cut an image block in sample {index}: its text has {in_text} {token} tokens but "
                        f"its input_ids keep {in_ids}. Disable truncation or raise `max_length`."
                    )

    def _image_marker(self, skip_special_tokens: bool, image_marker: str | None) -> str:
        """By default a block disappears with the other special tokens, or is written back as one `<image>`."""
        if image_marker is not None:
            return image_marker
        return "" if skip_special_tokens else self.image_token

    def decode(self, token_ids, skip_special_tokens: bool = False, image_marker: str | None = None, **kwargs):
        """
        Decode with [`SeedOPTTokenizer`]; each image block (`<img>` ... `</img>`) becomes `image_marker`, by default
        nothing when `skip_special_tokens`, else `<image>` (so the text can be processed again with the same images).
        """
        marker = self._image_marker(skip_special_tokens, image_marker)
        return self.tokenizer.decode(token_ids, skip_special_tokens=skip_special_tokens, image_marker=marker, **kwargs)

    def batch_decode(
        self, sequences, skip_special_tokens: bool = False, image_marker: str | None = None, **kwargs
    ) -> list[str]:
        """[`~SeedProcessor.decode`] for a batch of sequences."""
        marker = self._image_marker(skip_special_tokens, image_marker)
        return self.tokenizer.batch_decode(
            sequences, skip_special_tokens=skip_special_tokens, image_marker=marker, **kwargs
        )

    def post_process_image_text_to_text(
        self, generated_outputs, skip_special_tokens: bool = True, image_marker: str | None = None, **kwargs
    ):
        """The text of `generate` outputs (what the "image-text-to-text" pipeline shows), image blocks rendered by
        [`~SeedProcessor.decode`]."""
        return self.decode(
            generated_outputs, skip_special_tokens=skip_special_tokens, image_marker=image_marker, **kwargs
        )

    def post_process_multimodal_output(
        self, generated_outputs, skip_special_tokens: bool = True, generation_mode: str | None = None, **kwargs
    ):
        r"""
        The output of [`SeedOPTForConditionalGeneration.generate`] in its modality, as the "any-to-any" pipeline
        shows it.

        Args:
            generated_outputs (`torch.Tensor` or `np.ndarray`):
                For `"text"`, token ids `(batch_size, sequence_length)` or `(sequence_length,)`; for `"image"`, the
                codes `generate(..., generation_mode="image")` returns, `(num_images, image_seq_length)`.
            skip_special_tokens (`bool`, *optional*, defaults to `True`):
                Passed to [`~SeedProcessor.decode`] for text.
            generation_mode (`str`, *optional*, defaults to `"text"`):
                `"text"` or `"image"`.
            kwargs:
                Passed to [`~SeedProcessor.decode`] for text.

        Returns:
            For `"text"`, the decoded text(s), image blocks rendered by [`~SeedProcessor.decode`]; for `"image"`, one
            `torch.LongTensor` of `image_seq_length` codes per image, which [`SeedDecodePipeline`] draws
            (`decode_pipeline(codes=torch.stack(codes))`).
        """
        if generation_mode in (None, "text"):
            return self.post_process_image_text_to_text(
                generated_outputs, skip_special_tokens=skip_special_tokens, **kwargs
            )
        if generation_mode != "image":
            raise ValueError(f"SeedProcessor outputs text or image, got generation_mode={generation_mode!r}")
        codes = torch.as_tensor(generated_outputs).reshape(-1, generated_outputs.shape[-1])
        num_codes = self.tokenizer.num_image_tokens
        if codes.shape[-1] != self.image_seq_length or codes.is_floating_point() or codes.numel() == 0:
            raise ValueError(
                f"Expected the integer codes of generate(..., generation_mode='image'), shape (num_images, "
                f"{self.image_seq_length}), got {codes.dtype} of shape {tuple(generated_outputs.shape)}"
            )
        if codes.min() < 0 or codes.max() >= num_codes:
            raise ValueError(f"Expected codes in [0, {num_codes}), got values from {codes.min()} to {codes.max()}")
        return list(codes.long())

    def save_pretrained(self, save_directory, push_to_hub: bool = False, **kwargs):
        """
        As `ProcessorMixin.save_pretrained`, leaving the image processor as it was: transformers records the processor's
        remote-code `auto_map` on it while saving, so a later save of the image processor alone would point
        `AutoProcessor` at code its folder lacks.
        """
        image_processor_settings = vars(self.image_processor)
        had_auto_map, auto_map = "auto_map" in image_processor_settings, image_processor_settings.get("auto_map")
        try:
            return super().save_pretrained(save_directory, push_to_hub=push_to_hub, **kwargs)
        finally:
            image_processor_settings.pop("auto_map", None)
            if had_auto_map:
                image_processor_settings["auto_map"] = auto_map

    def to_dict(self) -> dict:
        """
        The processor's settings, identical before and after `save_pretrained` and `from_pretrained`. Saving records the
        remote-code `auto_map` on the saved objects and a reload reads back only the image processor's, so each map is
        written here from the classes' registration (`register_for_auto_class`) instead of the object's history.
        """
        output = super().to_dict()
        for owner, settings in ((self, output), (self.image_processor, output["image_processor"])):
            settings.pop("auto_map", None)
            if owner._auto_class is not None:
                cls = type(owner)
                settings["auto_map"] = {owner._auto_class: f"{cls.__module__.rsplit('.', 1)[-1]}.{cls.__name__}"}
        return output

    def ids_to_codes(self, ids):
        """The codes of each image block in token ids (e.g. generated ones): see [`SeedOPTTokenizer.ids_to_codes`]."""
        return self.tokenizer.ids_to_codes(ids)


__all__ = ["CHAT_TEMPLATE", "SeedProcessor"]
