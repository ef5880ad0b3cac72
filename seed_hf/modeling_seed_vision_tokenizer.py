"""SEED visual tokenizer: image -> 32 causal discrete codes -> Stable Diffusion generation embeddings."""

from dataclasses import dataclass

import torch
from torch import nn
from transformers import Blip2QFormerModel, Blip2VisionModel, PreTrainedModel
from transformers.modeling_outputs import BaseModelOutput
from transformers.models.blip_2.modeling_blip_2 import Blip2Encoder
from transformers.utils import ModelOutput, torch_compilable_check

from .configuration_seed import SeedVisionTokenizerConfig

# `SeedImageProcessor` output lies within [-1.8, 2.2] (CLIP mean and std over [0, 1]); anything beyond this bound
# is not a normalized image (0-255 values, a missing normalization, overflow) and would give meaningless codes.
MAX_ABS_PIXEL_VALUE = 10.0


@dataclass
class SeedVisionTokenizerOutput(ModelOutput):
    r"""
    Output of [`SeedVisionTokenizer.forward`].

    Args:
        codes (`torch.LongTensor` of shape `(batch_size, num_query_tokens)`):
            The discrete codes, indices into the codebook, in causal order.
        quantized (`torch.FloatTensor` of shape `(batch_size, num_query_tokens, codebook_dim)`):
            The codebook vectors of `codes`.
        generation_embeds (`torch.FloatTensor` of shape `(batch_size, num_reverse_tokens, generation_embed_dim)`):
            The embeddings that condition the Stable Diffusion UNet in place of CLIP text embeddings.
        image_embeds (`torch.FloatTensor` of shape `(batch_size, num_patches + 1, vision_hidden_size)`):
            The vision encoder output after `ln_vision`.
        causal_query_output (`torch.FloatTensor` of shape `(batch_size, num_query_tokens, qformer_hidden_size)`):
            The last hidden state of the causal Q-Former.
        vision_hidden_states (`tuple(torch.FloatTensor)`, *optional*, returned when `output_hidden_states=True`):
            The vision encoder's patch embeddings, then the output of each of its layers (before `ln_vision`), each
            of shape `(batch_size, num_patches + 1, vision_hidden_size)`.
        vision_attentions (`tuple(torch.FloatTensor)`, *optional*, returned when `output_attentions=True`):
            The attention weights of each vision layer, of shape `(batch_size, num_heads, num_patches + 1,
            num_patches + 1)`; empty under attention implementations that do not compute them (sdpa).
        qformer_hidden_states (`tuple(torch.FloatTensor)`, *optional*, returned when `output_hidden_states=True`):
            The causal Q-Former's normalized queries, then the output of each of its layers, each of shape
            `(batch_size, num_query_tokens, qformer_hidden_size)`.
        qformer_attentions (`tuple(torch.FloatTensor)`, *optional*, returned when `output_attentions=True`):
            The causal Q-Former's attention weights (self- and cross-attention, in the order they run).
        qformer_cross_attentions (`tuple(torch.FloatTensor)`, *optional*, returned when `output_attentions=True`):
            The causal Q-Former's cross-attention weights over `image_embeds`.
        decoder_hidden_states (`tuple(torch.FloatTensor)`, *optional*, returned when `output_hidden_states=True`):
            The decode layer's output plus position embeddings, then the output of each decoder block, each of shape
            `(batch_size, num_query_tokens, qformer_hidden_size)`. The blocks' attention weights are not returned.
        reverse_qformer_hidden_states (`tuple(torch.FloatTensor)`, *optional*, returned when `output_hidden_states=True`):
            The reverse Q-Former's normalized queries, then the output of each of its layers, each of shape
            `(batch_size, num_reverse_tokens, qformer_hidden_size)`.
        reverse_qformer_attentions (`tuple(torch.FloatTensor)`, *optional*, returned when `output_attentions=True`):
            The reverse Q-Former's attention weights (self- and cross-attention, in the order they run).
        reverse_qformer_cross_attentions (`tuple(torch.FloatTensor)`, *optional*, returned when `output_attentions=True`):
            The reverse Q-Former's cross-attention weights over the decoder blocks' output.
    """

    codes: torch.LongTensor | None = None
    quantized: torch.FloatTensor | None = None
    generation_embeds: torch.FloatTensor | None = None
    image_embeds: torch.FloatTensor | None = None
    causal_query_output: torch.FloatTensor | None = None
    vision_hidden_states: tuple[torch.FloatTensor, ...] | None = None
    vision_attentions: tuple[torch.FloatTensor, ...] | None = None
    qformer_hidden_states: tuple[torch.FloatTensor, ...] | None = None
    qformer_attentions: tuple[torch.FloatTensor, ...] | None = None
    qformer_cross_attentions: tuple[torch.FloatTensor, ...] | None = None
    decoder_hidden_states: tuple[torch.FloatTensor, ...] | None = None
    reverse_qformer_hidden_states: tuple[torch.FloatTensor, ...] | None = None
    reverse_qformer_attentions: tuple[torch.FloatTensor, ...] | None = None
    reverse_qformer_cross_attentions: tuple[torch.FloatTensor, ...] | None = None


class SeedPreTrainedModel(PreTrainedModel):
    config: SeedVisionTokenizerConfig
    config_class = SeedVisionTokenizerConfig
    base_model_prefix = "seed"
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _supports_attention_backend = True
    _can_compile_fullgraph = True
    _no_split_modules = [
        "Blip2EncoderLayer",
        "Blip2QFormerLayer",
        "Blip2VisionEmbeddings",
        "SeedVectorQuantizer",
        "SeedCodeDecoder",
    ]

    def _init_weights(self, module):
        super()._init_weights(module)
        std = self.config.initializer_range
        if isinstance(module, SeedVisionTokenizer):
            nn.init.normal_(module.query_tokens, std=std)
        elif isinstance(module, SeedCodeDecoder):
            nn.init.normal_(module.position_embeddings, std=std)
            nn.init.normal_(module.reverse_tokens, std=std)
        elif isinstance(module, SeedVectorQuantizer):
            nn.init.uniform_(
                module.codebook.weight,
                -1.0 / module.codebook.num_embeddings,
                1.0 / module.codebook.num_embeddings,
            )


class SeedVectorQuantizer(nn.Module):
    """Projects causal query outputs to the codebook width and picks the nearest codebook entry (squared L2)."""

    def __init__(self, config: SeedVisionTokenizerConfig):
        super().__init__()
        width = config.qformer_config.hidden_size
        self.encode_task_layer = nn.Sequential(
            nn.Linear(width, width), nn.Tanh(), nn.Linear(width, config.codebook_dim)
        )
        self.codebook = nn.Embedding(config.codebook_size, config.codebook_dim)

    def forward(self, query_output: torch.Tensor) -> torch.LongTensor:
        # Distances in float32 whatever the model dtype, so low-precision models pick the same entries.
        projected = self.encode_task_layer(query_output).float()
        codebook = self.codebook.weight.float()
        distances = projected.pow(2).sum(-1, keepdim=True) + codebook.pow(2).sum(-1) - 2 * projected @ codebook.t()
        return distances.argmin(-1)


class SeedDecoderBlocks(Blip2Encoder):
    """The pre-norm blocks that decode codes (`blocks_text` in the original), returning every block's input too."""

    def forward(self, inputs_embeds: torch.Tensor) -> BaseModelOutput:
        hidden_states = (inputs_embeds,)
        for layer in self.layers:
            hidden_states += (layer(hidden_states[-1]),)
        return BaseModelOutput(last_hidden_state=hidden_states[-1], hidden_states=hidden_states)


class SeedCodeDecoder(nn.Module):
    """Codes -> generation embeddings: codebook rows, decode layer, pre-norm blocks, reverse Q-Former, projection."""

    def __init__(self, config: SeedVisionTokenizerConfig):
        super().__init__()
        width = config.qformer_config.hidden_size
        self.decode_task_layer = nn.Sequential(
            nn.Linear(config.codebook_dim, config.codebook_dim),
            nn.Tanh(),
            nn.Linear(config.codebook_dim, width),
        )
        self.position_embeddings = nn.Parameter(torch.zeros(1, config.num_query_tokens, width))
        self.blocks = SeedDecoderBlocks(config.decoder_blocks_config())
        self.reverse_tokens = nn.Parameter(torch.zeros(1, config.num_reverse_tokens, width))
        self.reverse_qformer = Blip2QFormerModel(config.reverse_qformer_config())
        self.projection = nn.Linear(width, config.generation_embed_dim)

    def forward(
        self, quantized: torch.Tensor, output_hidden_states: bool = False, output_attentions: bool = False
    ) -> tuple[torch.Tensor, BaseModelOutput, ModelOutput]:
        """`(generation_embeds, the decoder blocks' output, the reverse Q-Former's output)`."""
        return self.forward_decoded(self.decode_task_layer(quantized), output_hidden_states, output_attentions)

    def forward_decoded(
        self, decoded: torch.Tensor, output_hidden_states: bool = False, output_attentions: bool = False
    ) -> tuple[torch.Tensor, BaseModelOutput, ModelOutput]:
        """`forward` from the output of `decode_task_layer`, which Stage II training also reconstructs from."""
        blocks_output = self.blocks(decoded + self.position_embeddings)
        hidden_states = blocks_output.last_hidden_state
        reverse_queries = self.reverse_tokens.expand(hidden_states.shape[0], -1, -1)
        reverse_output = self.reverse_qformer(
            query_embeds=reverse_queries,
            encoder_hidden_states=hidden_states,
            output_hidden_states=output_hidden_states,
            output_attentions=output_attentions,
        )
        return self.projection(reverse_output.last_hidden_state), blocks_output, reverse_output


class SeedVisionTokenizer(SeedPreTrainedModel):
    r"""
    The SEED v1 visual tokenizer. `encode` turns images into `num_query_tokens` discrete codes with 1-D causal
    dependency (EVA ViT-g -> causal Q-Former -> vector quantizer); `embed_codes` turns codes into the generation
    embeddings that condition a Stable Diffusion v1.4 UNet in place of CLIP text embeddings.

    Example:

    ```python
    >>> import torch
    >>> from seed_hf import SeedVisionTokenizer, SeedVisionTokenizerConfig
    >>> config = SeedVisionTokenizerConfig(
    ...     vision_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2},
    ...     qformer_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2},
    ...     decoder_num_blocks=1, reverse_qformer_num_hidden_layers=1, codebook_size=64, codebook_dim=8,
    ... )
    >>> model = SeedVisionTokenizer(config).eval()
    >>> codes = model.encode(torch.randn(2, 3, 224, 224))
    >>> codes.shape, model.embed_codes(codes).shape
    (torch.Size([2, 32]), torch.Size([2, 77, 768]))
    ```
    """

    def __init__(self, config: SeedVisionTokenizerConfig):
        super().__init__(config)
        self.vision_model = Blip2VisionModel(config.vision_config)
        self.vision_model.post_layernorm.eps = config.vision_ln_eps
        self.query_tokens = nn.Parameter(torch.zeros(1, config.num_query_tokens, config.qformer_config.hidden_size))
        self.qformer = Blip2QFormerModel(config.qformer_config)
        self.quantizer = SeedVectorQuantizer(config)
        self.decoder = SeedCodeDecoder(config)
        self.post_init()

    def set_attn_implementation(self, attn_implementation, **kwargs):
        super().set_attn_implementation(attn_implementation, **kwargs)
        # The decoder blocks are plain modules built from a derived config: keep it in step.
        for layer in self.decoder.blocks.layers:
            layer.self_attn.config._attn_implementation = self.config._attn_implementation

    def _check_pixel_values(self, pixel_values):
        vision = self.config.vision_config
        expected = f"(batch_size, 3, {vision.image_size}, {vision.image_size})"
        if not isinstance(pixel_values, torch.Tensor):
            raise ValueError(
                f"pixel_values must be a torch.Tensor of shape {expected}, got {type(pixel_values).__name__}"
            )
        if not pixel_values.is_floating_point():
            raise ValueError(f"pixel_values must be a floating-point tensor, got dtype {pixel_values.dtype}")
        if pixel_values.ndim != 4 or tuple(pixel_values.shape[1:]) != (
            3,
            vision.image_size,
            vision.image_size,
        ):
            raise ValueError(
                f"pixel_values must have shape {expected} (use SeedImageProcessor), got {tuple(pixel_values.shape)}"
            )
        # A value check, not a branch: `torch.compile(fullgraph=True)` and `torch.export` keep it as an assertion.
        torch_compilable_check(
            (pixel_values.abs() <= MAX_ABS_PIXEL_VALUE).all(),
            lambda: (
                f"pixel_values must be finite (no NaN or infinite values) and within [-{MAX_ABS_PIXEL_VALUE:g}, "
                f"{MAX_ABS_PIXEL_VALUE:g}], as normalized images are (SeedImageProcessor's output lies in "
                f"[-1.8, 2.2]); got values from {pixel_values.min().item()} to {pixel_values.max().item()}"
            ),
        )

    def _check_codes(self, codes) -> torch.LongTensor:
        """`codes` as a `torch.long` tensor on the model's device, after checking type, shape and range."""
        expected = f"(batch_size, {self.config.num_query_tokens}) with values in [0, {self.config.codebook_size})"
        if not isinstance(codes, torch.Tensor):
            raise ValueError(f"codes must be a torch.LongTensor of shape {expected}, got {type(codes).__name__}")
        if codes.dtype.is_floating_point or codes.dtype.is_complex or codes.dtype == torch.bool:
            raise ValueError(f"codes must be an integer tensor of shape {expected}, got dtype {codes.dtype}")
        if codes.ndim != 2 or codes.shape[1] != self.config.num_query_tokens:
            raise ValueError(f"codes must have shape {expected}, got {tuple(codes.shape)}")
        # Compare in int64: a narrow dtype would wrap `codebook_size` (uint8 8192 is 0) and fail every code.
        codes = codes.to(device=self.device, dtype=torch.long)
        torch_compilable_check(
            ((codes >= 0) & (codes < self.config.codebook_size)).all(),
            lambda: (
                f"codes must be in [0, {self.config.codebook_size}), got values from {codes.min().item()} "
                f"to {codes.max().item()}"
            ),
        )
        return codes

    def _causal_query_mask(self, batch_size: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        """Additive mask letting query i attend to queries 0..i (0 = attend, dtype min = blocked)."""
        num_queries = self.config.num_query_tokens
        blocked = torch.ones(num_queries, num_queries, dtype=torch.bool, device=device).triu(1)
        mask = torch.zeros(num_queries, num_queries, dtype=dtype, device=device)
        mask = mask.masked_fill(blocked, torch.finfo(dtype).min)
        return mask.expand(batch_size, 1, num_queries, num_queries)

    def _encode(
        self, pixel_values: torch.Tensor, output_hidden_states: bool = False, output_attentions: bool = False
    ) -> tuple[ModelOutput, ModelOutput, torch.LongTensor]:
        """`(vision output, causal Q-Former output, codes)` of images already checked by `_check_pixel_values`."""
        pixel_values = pixel_values.to(device=self.device, dtype=self.dtype)
        vision_output = self.vision_model(
            pixel_values=pixel_values, output_hidden_states=output_hidden_states, output_attentions=output_attentions
        )
        image_embeds = vision_output.last_hidden_state
        batch_size = image_embeds.shape[0]
        query_output = self.qformer(
            query_embeds=self.query_tokens.expand(batch_size, -1, -1),
            attention_mask=self._causal_query_mask(batch_size, image_embeds.dtype, image_embeds.device),
            encoder_hidden_states=image_embeds,
            output_hidden_states=output_hidden_states,
            output_attentions=output_attentions,
        )
        return vision_output, query_output, self.quantizer(query_output.last_hidden_state)

    def _empty_outputs(self) -> SeedVisionTokenizerOutput:
        """The outputs of a batch of no images (the attention layers cannot run on zero rows)."""
        config, vision = self.config, self.config.vision_config
        width = config.qformer_config.hidden_size
        num_patches = (vision.image_size // vision.patch_size) ** 2
        return SeedVisionTokenizerOutput(
            codes=torch.zeros(0, config.num_query_tokens, dtype=torch.long, device=self.device),
            quantized=self.quantizer.codebook.weight.new_zeros(0, config.num_query_tokens, config.codebook_dim),
            generation_embeds=self.decoder.projection.weight.new_zeros(
                0, config.num_reverse_tokens, config.generation_embed_dim
            ),
            image_embeds=self.vision_model.post_layernorm.weight.new_zeros(0, num_patches + 1, vision.hidden_size),
            causal_query_output=self.query_tokens.new_zeros(0, config.num_query_tokens, width),
        )

    def encode(self, pixel_values: torch.FloatTensor) -> torch.LongTensor:
        r"""
        Tokenize images; runs only the encoder side.

        Args:
            pixel_values (`torch.FloatTensor` of shape `(batch_size, 3, image_size, image_size)`):
                Images prepared by [`SeedImageProcessor`], of any floating dtype, finite and within
                `[-MAX_ABS_PIXEL_VALUE, MAX_ABS_PIXEL_VALUE]` = [-10, 10].

        Returns:
            `torch.LongTensor` of shape `(batch_size, num_query_tokens)`: the codes.
        """
        # Checks before `no_grad`: a compiled or exported check that fails inside it would leave gradients off.
        self._check_pixel_values(pixel_values)
        if pixel_values.shape[0] == 0:
            return self._empty_outputs().codes
        with torch.no_grad():
            return self._encode(pixel_values)[2]

    def lookup_codes(self, codes: torch.LongTensor) -> torch.FloatTensor:
        """Codebook vectors of `codes`, shape `(batch_size, num_query_tokens, codebook_dim)`."""
        return self.quantizer.codebook(self._check_codes(codes))

    def embed_codes(self, codes: torch.LongTensor) -> torch.FloatTensor:
        r"""
        Turn codes into generation embeddings, without any image.

        Args:
            codes (`torch.LongTensor` of shape `(batch_size, num_query_tokens)`):
                Codes in `[0, codebook_size)`, of any integer dtype.

        Returns:
            `torch.FloatTensor` of shape `(batch_size, num_reverse_tokens, generation_embed_dim)`.
        """
        codes = self._check_codes(codes)  # before `no_grad`, as in `encode`
        if codes.shape[0] == 0:
            return self._empty_outputs().generation_embeds
        with torch.no_grad():
            return self.decoder(self.quantizer.codebook(codes))[0]

    def forward(
        self,
        pixel_values: torch.FloatTensor,
        output_hidden_states: bool | None = None,
        output_attentions: bool | None = None,
        return_dict: bool | None = None,
        **kwargs,
    ) -> SeedVisionTokenizerOutput | tuple:
        r"""
        Tokenize images and decode their codes into generation embeddings.

        Args:
            pixel_values (`torch.FloatTensor` of shape `(batch_size, 3, image_size, image_size)`):
                Images prepared by [`SeedImageProcessor`].
            output_hidden_states (`bool`, *optional*, defaults to `config.output_hidden_states`):
                Whether to return the hidden states of every part (see [`SeedVisionTokenizerOutput`]).
            output_attentions (`bool`, *optional*, defaults to `config.output_attentions`):
                Whether to return the attention weights of the vision encoder and both Q-Formers.
            return_dict (`bool`, *optional*, defaults to `config.return_dict`):
                Whether to return a [`SeedVisionTokenizerOutput`] or a plain tuple of its non-`None` fields.
        """
        config = self.config
        output_hidden_states = config.output_hidden_states if output_hidden_states is None else output_hidden_states
        output_attentions = config.output_attentions if output_attentions is None else output_attentions
        return_dict = config.return_dict if return_dict is None else return_dict
        self._check_pixel_values(pixel_values)
        if pixel_values.shape[0] == 0:
            outputs = self._empty_outputs()
        else:
            vision_output, query_output, codes = self._encode(pixel_values, output_hidden_states, output_attentions)
            quantized = self.quantizer.codebook(codes)
            generation_embeds, blocks_output, reverse_output = self.decoder(
                quantized, output_hidden_states, output_attentions
            )
            outputs = SeedVisionTokenizerOutput(
                codes=codes,
                quantized=quantized,
                generation_embeds=generation_embeds,
                image_embeds=vision_output.last_hidden_state,
                causal_query_output=query_output.last_hidden_state,
                vision_hidden_states=vision_output.hidden_states,
                vision_attentions=vision_output.attentions,
                qformer_hidden_states=query_output.hidden_states,
                qformer_attentions=query_output.attentions,
                qformer_cross_attentions=query_output.cross_attentions,
                decoder_hidden_states=blocks_output.hidden_states if output_hidden_states else None,
                reverse_qformer_hidden_states=reverse_output.hidden_states,
                reverse_qformer_attentions=reverse_output.attentions,
                reverse_qformer_cross_attentions=reverse_output.cross_attentions,
            )
        return outputs if return_dict else outputs.to_tuple()


__all__ = ["SeedPreTrainedModel", "SeedVisionTokenizer", "SeedVisionTokenizerOutput"]
