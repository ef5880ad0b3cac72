"""SEED-OPT: an OPT causal language model that reads and writes SEED image codes as ordinary tokens."""

import torch
from torch import nn
from transformers import GenerationMixin, LogitsProcessorList, OPTModel, PreTrainedModel
from transformers.cache_utils import Cache
from transformers.modeling_outputs import CausalLMOutputWithPast
from transformers.modeling_utils import slice_logits_to_keep
from transformers.utils import torch_compilable_check
from transformers.utils.deprecation import deprecate_kwarg

from .configuration_seed import SeedOPTConfig
from .generation_seed_opt import SeedImageBlockLogitsProcessor, check_image_block_arguments
from .modeling_seed_vision_tokenizer import SeedVisionTokenizer

CAPTION_NUM_BEAMS = 5
CAPTION_MAX_NEW_TOKENS = 30


class SeedOPTPreTrainedModel(PreTrainedModel):
    config: SeedOPTConfig
    config_class = SeedOPTConfig
    base_model_prefix = "model"
    input_modalities = ("image", "text")
    output_modalities = ("image", "text")
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_flex_attn = True
    _supports_attention_backend = True
    _can_compile_fullgraph = True
    _no_split_modules = ["OPTDecoderLayer", *SeedVisionTokenizer._no_split_modules]


class SeedOPTForConditionalGeneration(SeedOPTPreTrainedModel, GenerationMixin):
    r"""
    SEED-OPT: OPT whose embeddings and tied head cover the vocabulary extended with the SEED codes, so the same
    next-token head writes text and images. An optional frozen [`SeedVisionTokenizer`] turns `pixel_values` into
    code ids and writes them into the `<image>` placeholder slots of `input_ids` (the slots [`SeedProcessor`] makes);
    without it, inputs must already carry code ids.

    The vision tokenizer is frozen (`requires_grad_(False)`) and kept in eval mode even while the model trains, so
    an image always gets the same codes. The default generation config captions with beam search (5 beams);
    `generate(..., generation_mode="image")` (or [`~SeedOPTForConditionalGeneration.generate_images`]) writes images.

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
    >>> model.generate(torch.tensor([[2, 5, 6]]), generation_mode="image").shape  # codes of one image
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

    def save_pretrained(self, save_directory, *args, **kwargs):
        """
        `PreTrainedModel.save_pretrained`; when the folder carries the code (`register_for_auto_class`), its
        `auto_map` also names this class for `AutoModelForCausalLM`, so the folder loads that way with
        `trust_remote_code=True` too, not only through the registered auto class.
        """
        if self._auto_class is not None:
            class_path = f"{type(self).__module__.split('.')[-1]}.{type(self).__name__}"
            self.config.auto_map = {
                **(getattr(self.config, "auto_map", None) or {}),
                "AutoModelForCausalLM": class_path,
            }
        return super().save_pretrained(save_directory, *args, **kwargs)

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

    def image_placeholder_mask(
        self, input_ids: torch.LongTensor | None, inputs_embeds: torch.FloatTensor | None
    ) -> torch.BoolTensor:
        r"""
        Where the `<image>` placeholder slots are: from `input_ids` when given, else the positions of `inputs_embeds`
        that equal the placeholder's embedding (as when `inputs_embeds` were made from such ids).

        Returns:
            `torch.BoolTensor` of shape `(batch_size, sequence_length)`.
        """
        image_token_id = self.config.image_token_id
        if image_token_id is None:
            raise ValueError("config.image_token_id is unset, so there are no placeholder slots for pixel_values")
        if input_ids is not None:
            return input_ids == image_token_id
        placeholder = self.get_input_embeddings()(torch.tensor(image_token_id, device=inputs_embeds.device))
        return (inputs_embeds == placeholder.to(inputs_embeds.dtype)).all(-1)

    def fill_image_tokens(
        self,
        input_ids: torch.LongTensor | None,
        pixel_values: torch.FloatTensor,
        labels: torch.LongTensor | None = None,
        inputs_embeds: torch.FloatTensor | None = None,
    ) -> tuple[torch.LongTensor | None, torch.LongTensor | None, torch.FloatTensor | None]:
        r"""
        Write the codes of `pixel_values` into the `<image>` placeholder slots, image after image in reading order
        (row by row): as code ids into `input_ids`, and as the embeddings of those ids into `inputs_embeds` (LLaVA
        style), whichever are given.

        Args:
            input_ids (`torch.LongTensor` of shape `(batch_size, sequence_length)`, *optional*):
                Token ids holding `image_seq_length` placeholder slots per image.
            pixel_values (`torch.FloatTensor` of shape `(num_images, 3, image_size, image_size)`):
                The images, in the order of their slots.
            labels (`torch.LongTensor` of shape `(batch_size, sequence_length)`, *optional*):
                Labels aligned with the inputs; the positions that hold the placeholder get the same code ids.
            inputs_embeds (`torch.FloatTensor` of shape `(batch_size, sequence_length, word_embed_proj_dim)`, *optional*):
                Embeddings whose placeholder slots (found from `input_ids`, or else by the placeholder's embedding)
                take the embeddings of the code ids.

        Returns:
            `tuple`: the filled `input_ids`, `labels` and `inputs_embeds` (each `None` when not given).
        """
        if input_ids is None and inputs_embeds is None:
            raise ValueError("pixel_values need input_ids or inputs_embeds holding `<image>` placeholder slots")
        slots = self.image_placeholder_mask(input_ids, inputs_embeds)
        per_image = self.config.image_seq_length
        slots_per_row = slots.sum(-1)
        torch_compilable_check(
            (slots_per_row.sum() == pixel_values.shape[0] * per_image) & (slots_per_row % per_image == 0).all(),
            lambda: (
                f"The inputs hold {int(slots_per_row.sum())} `<image>` placeholder tokens (per row: "
                f"{slots_per_row.tolist()}) but {pixel_values.shape[0]} images need {per_image} each, i.e. "
                f"{pixel_values.shape[0] * per_image}; build inputs with SeedProcessor, which expands each `<image>` "
                f"to `<img>` + {per_image} x `<image>` + `</img>`"
            ),
        )
        image_ids = self.get_image_tokens(pixel_values).to(slots.device)
        slot_ids = torch.zeros(slots.shape, dtype=torch.long, device=slots.device).masked_scatter(slots, image_ids)
        if input_ids is not None:
            input_ids = torch.where(slots, slot_ids, input_ids)
        if inputs_embeds is not None:
            image_embeds = self.get_input_embeddings()(image_ids).to(inputs_embeds.dtype)
            inputs_embeds = inputs_embeds.masked_scatter(slots[..., None], image_embeds)
        if labels is not None:
            labels = torch.where(labels == self.config.image_token_id, slot_ids, labels)
        return input_ids, labels, inputs_embeds

    # `past_key_values` is the older name of `cache`: accepted with OPT's deprecation warning; both at once raise.
    @deprecate_kwarg("past_key_values", "5.40.0", new_name="cache", raise_if_both_names=True)
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
        return_dict: bool | None = None,
        **kwargs,
    ) -> CausalLMOutputWithPast | tuple:
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
                Embeddings used instead of `input_ids`; with `pixel_values`, the slots holding the `<image>`
                placeholder's embedding take the embeddings of the code ids.
            labels (`torch.LongTensor` of shape `(batch_size, sequence_length)`, *optional*):
                Target ids aligned with `input_ids` (shifted inside), -100 where no loss is taken; positions holding
                the `<image>` placeholder get the code ids written into `input_ids`.
            use_cache (`bool`, *optional*):
                Whether to return the key/value cache.
            logits_to_keep (`int` or `torch.Tensor`, *optional*, defaults to 0):
                Compute logits for the last `logits_to_keep` positions only (0: all).
            return_dict (`bool`, *optional*, defaults to `config.return_dict`):
                Whether to return a [`~modeling_outputs.CausalLMOutputWithPast`] or a plain tuple.
            kwargs (*optional*):
                Passed to the OPT decoder and to the loss (e.g. Trainer's `num_items_in_batch`).

        Returns:
            [`~modeling_outputs.CausalLMOutputWithPast`] (or its tuple when `return_dict=False`) with `logits` of shape
            `(batch_size, sequence_length, vocab_size)` over the full extended vocabulary (no token is masked).
        """
        if return_dict is None:
            return_dict = self.config.return_dict
        if pixel_values is not None:
            input_ids, labels, inputs_embeds = self.fill_image_tokens(input_ids, pixel_values, labels, inputs_embeds)
        elif input_ids is not None and self.config.image_token_id is not None:
            torch_compilable_check(
                (input_ids != self.config.image_token_id).all(),
                "input_ids hold `<image>` placeholder tokens but no pixel_values were given to fill them; pass the "
                "images as pixel_values, or code ids instead of placeholders",
            )
        outputs = self.model.decoder(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            return_dict=True,
            **kwargs,
        )
        hidden_states = slice_logits_to_keep(outputs.last_hidden_state, logits_to_keep)
        logits = self.lm_head(hidden_states)
        loss = None
        if labels is not None:
            loss = self.loss_function(
                logits=logits, labels=labels, vocab_size=self.config.text_config.vocab_size, **kwargs
            )
        output = CausalLMOutputWithPast(
            loss=loss,
            logits=logits,
            cache=outputs.cache,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
        )
        return output if return_dict else output.to_tuple()

    @torch.no_grad()
    def generate(
        self,
        inputs: torch.LongTensor | None = None,
        pixel_values: torch.FloatTensor | None = None,
        generation_mode: str = "text",
        **kwargs,
    ):
        r"""
        [`~generation.GenerationMixin.generate`] for both output modalities, as Janus does: text (default) or one
        image block.

        The codes of `pixel_values` are written into the prompt's placeholder slots before decoding starts, so every
        decoding strategy (beam search, assisted and prompt-lookup decoding, with or without a cache) reads the same
        code ids, and the returned sequences hold them where the prompt had `<image>` placeholders.

        Args:
            inputs (`torch.LongTensor` of shape `(batch_size, sequence_length)`, *optional*):
                The prompt ids (or pass them as `input_ids`).
            pixel_values (`torch.FloatTensor` of shape `(num_images, 3, image_size, image_size)`, *optional*):
                Images for the prompt's `<image>` placeholder slots (in `input_ids` or `inputs_embeds`).
            generation_mode (`str`, *optional*, defaults to `"text"`):
                `"text"` generates as any causal LM does (the model's generation config captions with beam search).
                `"image"` appends `<img>` to each prompt and writes exactly one image block under
                [`SeedImageBlockLogitsProcessor`]: greedy unless told otherwise, with a fixed length, so length and
                stopping arguments (`max_new_tokens`, `max_time`, `stopping_criteria`, ...) are refused, and so are
                `suppress_tokens`/`begin_suppress_tokens`/`bad_words_ids` that name code ids or `</img>`.
            kwargs:
                Passed to `GenerationMixin.generate` (`input_ids`, `attention_mask`, `inputs_embeds`, `do_sample`,
                `num_return_sequences`, `logits_processor`, `assistant_model`, ...). Without `attention_mask` it is
                inferred from the padding.

        Returns:
            For `"text"`, what `GenerationMixin.generate` returns. For `"image"`, a `torch.LongTensor` of shape
            `(batch_size * num_return_sequences, image_seq_length)` holding codes in `[0, num_image_tokens)`, ready
            for [`SeedDecodePipeline`] (with `return_dict_in_generate=True`, the generate output whose `sequences`
            are these codes).

        Raises:
            `ValueError`: for an unknown `generation_mode`, a refused argument, a prompt too long for
            `max_position_embeddings`, or an image block that comes out malformed (e.g. a custom logits processor
            banned every code).
        """
        if generation_mode not in self.output_modalities:
            raise ValueError(f"generation_mode must be one of {self.output_modalities}, got {generation_mode!r}")
        if inputs is not None:
            if kwargs.get("input_ids") is not None:
                raise ValueError("Pass the prompt ids as inputs or as input_ids, not both")
            kwargs["input_ids"] = inputs
        if pixel_values is not None:
            input_ids, _, inputs_embeds = self.fill_image_tokens(
                kwargs.pop("input_ids", None), pixel_values, inputs_embeds=kwargs.pop("inputs_embeds", None)
            )
            filled = {"input_ids": input_ids, "inputs_embeds": inputs_embeds}
            kwargs.update({name: value for name, value in filled.items() if value is not None})
        if generation_mode == "image":
            return self._generate_image_block(**kwargs)
        return super().generate(**kwargs)

    def _generate_image_block(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        logits_processor: LogitsProcessorList | None = None,
        **generate_kwargs,
    ):
        """`generate(generation_mode="image")`: one image block per prompt, checked to be well formed."""
        block = SeedImageBlockLogitsProcessor.from_config(self.config)
        if input_ids is None:
            raise ValueError(
                'generation_mode="image" needs the prompts as input_ids (inputs_embeds alone are not read)'
            )
        check_image_block_arguments(
            block, generate_kwargs.get("generation_config", self.generation_config), generate_kwargs
        )
        block_length = self.config.image_seq_length + 1
        # The prompt, `<img>` and every code but the last one generated are fed to the model.
        positions_needed = input_ids.shape[1] + block_length
        max_positions = self.config.text_config.max_position_embeddings
        if positions_needed > max_positions:
            raise ValueError(
                f"A prompt of {input_ids.shape[1]} tokens plus `<img>` and {self.config.image_seq_length} codes needs "
                f"{positions_needed} positions but the model has {max_positions} (max_position_embeddings); shorten "
                f"the prompt to at most {max_positions - block_length} tokens"
            )
        boi = torch.full_like(input_ids[:, :1], self.config.boi_token_id)
        input_ids = torch.cat([input_ids, boi], dim=1)
        if attention_mask is not None:
            attention_mask = torch.cat([attention_mask, torch.ones_like(boi)], dim=1)
        generate_kwargs.setdefault("num_beams", 1)
        generate_kwargs.setdefault("do_sample", False)
        output = super().generate(
            input_ids=input_ids,
            attention_mask=attention_mask,
            logits_processor=LogitsProcessorList([*(logits_processor or []), block]),
            max_new_tokens=block_length,
            min_new_tokens=block_length,
            **generate_kwargs,
        )
        sequences = output if isinstance(output, torch.Tensor) else output.sequences
        codes = block.codes_of_generated_block(sequences[:, input_ids.shape[1] :])
        if isinstance(output, torch.Tensor):
            return codes
        output.sequences = codes
        return output

    def generate_images(
        self, input_ids: torch.LongTensor, attention_mask: torch.Tensor | None = None, **generate_kwargs
    ) -> torch.LongTensor:
        r"""
        Text-to-image: `generate(input_ids, attention_mask, generation_mode="image", **generate_kwargs)`, which
        appends `<img>` to each prompt and generates exactly one image block (only code ids, `image_seq_length` of
        them, then `</img>`).

        Args:
            input_ids (`torch.LongTensor` of shape `(batch_size, sequence_length)`):
                The prompts, left-padded when of different lengths (the tokenizer of a [`SeedProcessor`] built
                for generation pads left).
            attention_mask (`torch.Tensor` of shape `(batch_size, sequence_length)`, *optional*):
                1 for real tokens, 0 for padding; inferred from the padding when not given.
            generate_kwargs:
                Passed to [`~SeedOPTForConditionalGeneration.generate`] (e.g. `do_sample=True`, `top_k`,
                `num_return_sequences`, `logits_processor`); decoding is greedy unless told otherwise.

        Returns:
            `torch.LongTensor` of shape `(batch_size * num_return_sequences, image_seq_length)`: codes in
            `[0, num_image_tokens)`, ready for [`SeedDecodePipeline`].

        Example:

        ```python
        >>> codes = model.generate_images(**processor(text=["a red circle"], return_tensors="pt"))  # doctest: +SKIP
        >>> images = decode_pipeline(codes=codes).images  # doctest: +SKIP
        ```
        """
        return self.generate(input_ids, attention_mask=attention_mask, generation_mode="image", **generate_kwargs)


__all__ = ["SeedOPTForConditionalGeneration", "SeedOPTPreTrainedModel"]
