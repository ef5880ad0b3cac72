"""SEED-OPT: an OPT causal language model that reads and writes SEED image codes as ordinary tokens."""

import torch
from torch import nn
from transformers import GenerationMixin, LogitsProcessorList, OPTModel, PreTrainedModel
from transformers.cache_utils import Cache
from transformers.modeling_outputs import CausalLMOutputWithPast
from transformers.modeling_utils import slice_logits_to_keep

from .configuration_seed import SeedOPTConfig
from .generation_seed_opt import SeedImageBlockLogitsProcessor
from .modeling_seed_vision_tokenizer import SeedVisionTokenizer

CAPTION_NUM_BEAMS = 5
CAPTION_MAX_NEW_TOKENS = 30


class SeedOPTPreTrainedModel(PreTrainedModel):
    config: SeedOPTConfig
    config_class = SeedOPTConfig
    base_model_prefix = "model"
    input_modalities = ("image", "text")
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _supports_attention_backend = True
    _no_split_modules = ["OPTDecoderLayer", *SeedVisionTokenizer._no_split_modules]


class SeedOPTForConditionalGeneration(SeedOPTPreTrainedModel, GenerationMixin):
    r"""
    SEED-OPT: OPT whose embeddings and tied head cover the vocabulary extended with the SEED codes, so the same
    next-token head writes text and images. An optional frozen [`SeedVisionTokenizer`] turns `pixel_values` into
    code ids and writes them into the `<image>` placeholder slots of `input_ids` (the slots [`SeedProcessor`] makes);
    without it, inputs must already carry code ids.

    The vision tokenizer is frozen (`requires_grad_(False)`) and kept in eval mode even while the model trains, so
    an image always gets the same codes. The default generation config captions with beam search (5 beams);
    [`~SeedOPTForConditionalGeneration.generate_images`] writes images.

    Example:

    ```python
    >>> import torch
    >>> from seed_hf import SeedOPTConfig, SeedOPTForConditionalGeneration
    >>> config = SeedOPTConfig(
    ...     text_config={"vocab_size": 80, "hidden_size": 16, "num_hidden_layers": 1, "ffn_dim": 32,
    ...                  "num_attention_heads": 2, "word_embed_proj_dim": 16, "max_position_embeddings": 64},
    ...     image_token_start_id=10, num_image_tokens=64, image_seq_length=4, boi_token_id=74, eoi_token_id=75,
    ... )
    >>> model = SeedOPTForConditionalGeneration(config).eval()
    >>> model.generate_images(torch.tensor([[2, 5, 6]])).shape  # codes of one image
    torch.Size([1, 4])

    ```
    """

    _tied_weights_keys = {"lm_head.weight": "model.decoder.embed_tokens.weight"}

    def __init__(self, config: SeedOPTConfig):
        super().__init__(config)
        self.model = OPTModel(config.text_config)
        self.lm_head = nn.Linear(config.text_config.word_embed_proj_dim, config.text_config.vocab_size, bias=False)
        self.vision_tokenizer = None
        if config.vision_config is not None:
            self.vision_tokenizer = SeedVisionTokenizer(config.vision_config)
            self.vision_tokenizer.requires_grad_(False)
        self.post_init()
        self.generation_config.num_beams = CAPTION_NUM_BEAMS
        self.generation_config.max_new_tokens = CAPTION_MAX_NEW_TOKENS
        if config.image_token_id is not None:
            # The placeholder is an input slot for the vision tokenizer, never an output.
            self.generation_config.suppress_tokens = [config.image_token_id]

    def train(self, mode: bool = True):
        super().train(mode)
        if self.vision_tokenizer is not None:
            self.vision_tokenizer.eval()
        return self

    def get_input_embeddings(self) -> nn.Embedding:
        return self.model.decoder.embed_tokens

    def set_input_embeddings(self, value: nn.Embedding):
        self.model.decoder.embed_tokens = value

    def get_output_embeddings(self) -> nn.Linear:
        return self.lm_head

    def set_output_embeddings(self, new_embeddings: nn.Linear):
        self.lm_head = new_embeddings

    def get_image_tokens(self, pixel_values: torch.FloatTensor) -> torch.LongTensor:
        r"""
        Tokenize images into the token ids of their codes.

        Args:
            pixel_values (`torch.FloatTensor` of shape `(num_images, 3, image_size, image_size)`):
                Images prepared by [`SeedImageProcessor`].

        Returns:
            `torch.LongTensor` of shape `(num_images, image_seq_length)`: `image_token_start_id + codes`.
        """
        if self.vision_tokenizer is None:
            raise ValueError(
                "This model has no vision tokenizer (config.vision_config is None), so it cannot read pixel_values; "
                "pass code ids instead (SeedProcessor(codes=...))"
            )
        return self.vision_tokenizer.encode(pixel_values) + self.config.image_token_start_id

    def fill_image_tokens(
        self,
        input_ids: torch.LongTensor,
        pixel_values: torch.FloatTensor,
        labels: torch.LongTensor | None = None,
    ) -> tuple[torch.LongTensor, torch.LongTensor | None]:
        r"""
        Write the code ids of `pixel_values` into the `<image>` placeholder slots of `input_ids`, image after image
        in reading order (row by row).

        Args:
            input_ids (`torch.LongTensor` of shape `(batch_size, sequence_length)`):
                Token ids holding `image_seq_length` placeholder slots per image.
            pixel_values (`torch.FloatTensor` of shape `(num_images, 3, image_size, image_size)`):
                The images, in the order of their slots.
            labels (`torch.LongTensor` of shape `(batch_size, sequence_length)`, *optional*):
                Labels aligned with `input_ids`; the positions that hold the placeholder get the same code ids.

        Returns:
            `tuple(torch.LongTensor, torch.LongTensor | None)`: the filled `input_ids` and `labels`.
        """
        image_token_id = self.config.image_token_id
        if image_token_id is None:
            raise ValueError("config.image_token_id is unset, so there are no placeholder slots for pixel_values")
        slots = input_ids == image_token_id
        per_image = self.config.image_seq_length
        num_slots = int(slots.sum())
        if num_slots != pixel_values.shape[0] * per_image or (slots.sum(-1) % per_image).any():
            raise ValueError(
                f"input_ids hold {num_slots} `<image>` placeholder tokens (per row: {slots.sum(-1).tolist()}) but "
                f"{pixel_values.shape[0]} images need {per_image} each, i.e. {pixel_values.shape[0] * per_image}; "
                f"build inputs with SeedProcessor, which expands each `<image>` to `<img>` + {per_image} x "
                "`<image>` + `</img>`"
            )
        image_ids = self.get_image_tokens(pixel_values).to(input_ids.device)
        input_ids = input_ids.masked_scatter(slots, image_ids)
        if labels is not None:
            labels = torch.where(labels == image_token_id, input_ids, labels)
        return input_ids, labels

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        pixel_values: torch.FloatTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        **kwargs,
    ) -> CausalLMOutputWithPast:
        r"""
        Args:
            input_ids (`torch.LongTensor` of shape `(batch_size, sequence_length)`, *optional*):
                Token ids over the extended vocabulary: text, code ids, and `<image>` placeholders when
                `pixel_values` are given.
            pixel_values (`torch.FloatTensor` of shape `(num_images, 3, image_size, image_size)`, *optional*):
                Images whose code ids fill the placeholder slots, `image_seq_length` slots per image.
            attention_mask (`torch.Tensor` of shape `(batch_size, sequence_length)`, *optional*):
                1 for real tokens, 0 for padding.
            position_ids (`torch.LongTensor` of shape `(batch_size, sequence_length)`, *optional*):
                Positions; by default derived from `attention_mask` as OPT does.
            cache (`Cache`, *optional*):
                Key/value cache of the previous steps.
            inputs_embeds (`torch.FloatTensor` of shape `(batch_size, sequence_length, word_embed_proj_dim)`, *optional*):
                Embeddings used instead of `input_ids` (not with `pixel_values`).
            labels (`torch.LongTensor` of shape `(batch_size, sequence_length)`, *optional*):
                Target ids aligned with `input_ids` (shifted inside), -100 where no loss is taken; positions holding
                the `<image>` placeholder get the code ids written into `input_ids`.
            use_cache (`bool`, *optional*):
                Whether to return the key/value cache.
            logits_to_keep (`int` or `torch.Tensor`, *optional*, defaults to 0):
                Compute logits for the last `logits_to_keep` positions only (0: all).
            kwargs (*optional*):
                Passed to the OPT decoder and to the loss (e.g. Trainer's `num_items_in_batch`).

        Returns:
            [`~modeling_outputs.CausalLMOutputWithPast`] with `logits` of shape `(batch_size, sequence_length,
            vocab_size)` over the full extended vocabulary (no token is masked).
        """
        if pixel_values is not None:
            if input_ids is None:
                raise ValueError("pixel_values need input_ids with `<image>` placeholder slots, not inputs_embeds")
            input_ids, labels = self.fill_image_tokens(input_ids, pixel_values, labels)
        elif (
            input_ids is not None
            and self.config.image_token_id is not None
            and (input_ids == self.config.image_token_id).any()
        ):
            raise ValueError(
                "input_ids hold `<image>` placeholder tokens but no pixel_values were given to fill them; pass the "
                "images as pixel_values, or code ids instead of placeholders"
            )
        outputs = self.model.decoder(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            **kwargs,
        )
        hidden_states = slice_logits_to_keep(outputs.last_hidden_state, logits_to_keep)
        logits = self.lm_head(hidden_states)
        loss = None
        if labels is not None:
            loss = self.loss_function(
                logits=logits, labels=labels, vocab_size=self.config.text_config.vocab_size, **kwargs
            )
        return CausalLMOutputWithPast(
            loss=loss,
            logits=logits,
            cache=outputs.cache,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
        )

    def prepare_inputs_for_generation(self, *args, pixel_values=None, is_first_iteration=False, **kwargs):
        model_inputs = super().prepare_inputs_for_generation(*args, is_first_iteration=is_first_iteration, **kwargs)
        # The images are in the cache after the first step; without a cache every step sees the whole sequence.
        if is_first_iteration or not kwargs.get("use_cache", True):
            model_inputs["pixel_values"] = pixel_values
        return model_inputs

    @torch.no_grad()
    def generate_images(
        self,
        input_ids: torch.LongTensor,
        attention_mask: torch.Tensor | None = None,
        logits_processor: LogitsProcessorList | None = None,
        **generate_kwargs,
    ) -> torch.LongTensor:
        r"""
        Text-to-image: append `<img>` to each prompt and generate exactly one image block under
        [`SeedImageBlockLogitsProcessor`] (only code ids, `image_seq_length` of them, then `</img>`).

        Args:
            input_ids (`torch.LongTensor` of shape `(batch_size, sequence_length)`):
                The prompts, left-padded when of different lengths (the tokenizer of a [`SeedProcessor`] built
                for generation pads left).
            attention_mask (`torch.Tensor` of shape `(batch_size, sequence_length)`, *optional*):
                1 for real tokens, 0 for padding.
            logits_processor (`LogitsProcessorList`, *optional*):
                Extra processors, applied before the image-block constraint.
            generate_kwargs:
                Passed to `generate()` (e.g. `do_sample=True`, `top_k`, `num_return_sequences`); decoding is greedy
                unless told otherwise. The number of new tokens is fixed by the block and cannot be set.

        Returns:
            `torch.LongTensor` of shape `(batch_size * num_return_sequences, image_seq_length)`: codes in
            `[0, num_image_tokens)`, ready for [`SeedDecodePipeline`].

        Example:

        ```python
        >>> codes = model.generate_images(**processor(text=["a red circle"], return_tensors="pt"))  # doctest: +SKIP
        >>> images = decode_pipeline(codes=codes).images  # doctest: +SKIP
        ```
        """
        block = SeedImageBlockLogitsProcessor.from_config(self.config)
        for fixed in ("max_new_tokens", "min_new_tokens", "max_length", "min_length"):
            if fixed in generate_kwargs:
                raise ValueError(f"generate_images fixes the image block's length; do not pass {fixed}")
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        boi = torch.full_like(input_ids[:, :1], self.config.boi_token_id)
        input_ids = torch.cat([input_ids, boi], dim=1)
        attention_mask = torch.cat([attention_mask, torch.ones_like(boi)], dim=1)
        block_length = self.config.image_seq_length + 1
        generate_kwargs.setdefault("num_beams", 1)
        generate_kwargs.setdefault("do_sample", False)
        output = self.generate(
            input_ids=input_ids,
            attention_mask=attention_mask,
            logits_processor=LogitsProcessorList([*(logits_processor or []), block]),
            max_new_tokens=block_length,
            min_new_tokens=block_length,
            **generate_kwargs,
        )
        sequences = output if isinstance(output, torch.Tensor) else output.sequences
        return sequences[:, -block_length:-1] - self.config.image_token_start_id


__all__ = ["SeedOPTForConditionalGeneration", "SeedOPTPreTrainedModel"]
