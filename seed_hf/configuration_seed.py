"""Configuration of the SEED visual tokenizer."""

from huggingface_hub.dataclasses import strict
from transformers import AutoConfig, Blip2QFormerConfig, Blip2VisionConfig, PreTrainedConfig
from transformers.configuration_utils import SubConfigSpec


def check_model_type(config_class: type[PreTrainedConfig], config_dict: dict, remedy: str) -> None:
    """Refuse a config of another model (e.g. a plain OPT's) before it fills in defaults and loads as a broken model."""
    found = config_dict.get("model_type")
    if found is not None and found != config_class.model_type:
        raise ValueError(
            f"Expected a {config_class.__name__} (model_type {config_class.model_type!r}), got model_type {found!r}. "
            + remedy
        )


@strict
class SeedVisionTokenizerConfig(PreTrainedConfig):
    r"""
    Configuration of [`SeedVisionTokenizer`]. The defaults are the sizes of the released SEED v1 tokenizer.

    Args:
        vision_config (`dict` or `Blip2VisionConfig`, *optional*):
            The EVA ViT-g vision encoder (a BLIP-2 vision tower; its `post_layernorm` is SEED's `ln_vision`).
        qformer_config (`dict` or `Blip2QFormerConfig`, *optional*):
            The causal Q-Former. Its width, heads and FFN size are shared by the code decoder and the reverse
            Q-Former, as in the original.
        num_query_tokens (`int`, *optional*, defaults to 32):
            Number of learned queries, hence of codes per image.
        codebook_size (`int`, *optional*, defaults to 8192):
            Number of codebook entries.
        codebook_dim (`int`, *optional*, defaults to 32):
            Width of a codebook entry.
        decoder_num_blocks (`int`, *optional*, defaults to 4):
            Number of pre-norm transformer blocks that decode the quantized codes.
        decoder_num_attention_heads (`int`, *optional*):
            Heads of those blocks; defaults to the Q-Former's.
        decoder_mlp_ratio (`float`, *optional*, defaults to 4.0):
            MLP width of those blocks as a multiple of the Q-Former width.
        decoder_layer_norm_eps (`float`, *optional*, defaults to 1e-6):
            LayerNorm epsilon of those blocks.
        reverse_qformer_num_hidden_layers (`int`, *optional*, defaults to 4):
            Depth of the bidirectional reverse Q-Former.
        num_reverse_tokens (`int`, *optional*, defaults to 77):
            Number of reverse queries, i.e. of generation-embedding tokens.
        generation_embed_dim (`int`, *optional*, defaults to 768):
            Width of the generation embeddings (the cross-attention width of the Stable Diffusion UNet).
        vision_ln_eps (`float`, *optional*, defaults to 1e-5):
            Epsilon of `ln_vision`, the LayerNorm after the vision encoder (PyTorch's default in the original).

    Example:

    ```python
    >>> from seed_hf import SeedVisionTokenizerConfig
    >>> config = SeedVisionTokenizerConfig()
    >>> config.qformer_config.hidden_size, config.num_query_tokens, config.codebook_size
    (768, 32, 8192)
    ```"""

    model_type = "seed_vision_tokenizer"
    sub_configs_defaults = {
        "vision_config": Blip2VisionConfig,
        "qformer_config": Blip2QFormerConfig,
    }

    vision_config: dict | PreTrainedConfig | None = None
    qformer_config: dict | PreTrainedConfig | None = None
    num_query_tokens: int = 32
    codebook_size: int = 8192
    codebook_dim: int = 32
    decoder_num_blocks: int = 4
    decoder_num_attention_heads: int | None = None
    decoder_mlp_ratio: float | int = 4.0
    decoder_layer_norm_eps: float = 1e-6
    reverse_qformer_num_hidden_layers: int = 4
    num_reverse_tokens: int = 77
    generation_embed_dim: int = 768
    vision_ln_eps: float = 1e-5
    initializer_range: float = 0.02

    def __post_init__(self, **kwargs):
        if isinstance(self.qformer_config, dict) or self.qformer_config is None:
            # The tokenizer is an inference model: no dropout, even inside a model that is being trained.
            qformer_kwargs = {
                "hidden_dropout_prob": 0.0,
                "attention_probs_dropout_prob": 0.0,
            }
            qformer_kwargs.update(self.qformer_config or {})
            self.qformer_config = qformer_kwargs
        super().__post_init__(**kwargs)
        self.qformer_config.encoder_hidden_size = self.vision_config.hidden_size
        if self.decoder_num_attention_heads is None:
            self.decoder_num_attention_heads = self.qformer_config.num_attention_heads

    @classmethod
    def from_dict(cls, config_dict: dict, **kwargs):
        check_model_type(
            cls, config_dict, "Convert the original release with `seed-hf convert`, or load a folder it wrote."
        )
        return super().from_dict(config_dict, **kwargs)

    def to_dict(self) -> dict:
        output = super().to_dict()
        # transformers' remote-code saver takes any class named "*Tokenizer*" for a text tokenizer and records a
        # (slow, fast) pair; for the config and model classes of this *vision* tokenizer the entry is a class path.
        if "auto_map" in output:
            output["auto_map"] = {
                auto_class: reference[0] if isinstance(reference, (list, tuple)) else reference
                for auto_class, reference in output["auto_map"].items()
            }
        return output

    def decoder_blocks_config(self) -> Blip2VisionConfig:
        """Config of the pre-norm blocks that decode codes (`blocks_text` in the original)."""
        width = self.qformer_config.hidden_size
        config = Blip2VisionConfig(
            hidden_size=width,
            intermediate_size=int(width * self.decoder_mlp_ratio),
            num_hidden_layers=self.decoder_num_blocks,
            num_attention_heads=self.decoder_num_attention_heads,
            layer_norm_eps=self.decoder_layer_norm_eps,
            qkv_bias=True,
        )
        config._attn_implementation = self._attn_implementation
        return config

    def reverse_qformer_config(self) -> Blip2QFormerConfig:
        """Config of the bidirectional reverse Q-Former: the Q-Former's sizes, its own depth, over decoded codes."""
        config = Blip2QFormerConfig(
            **{
                **self.qformer_config.to_diff_dict(),
                "num_hidden_layers": self.reverse_qformer_num_hidden_layers,
            }
        )
        config.encoder_hidden_size = self.qformer_config.hidden_size
        config._attn_implementation = self._attn_implementation
        return config


@strict
class SeedOPTConfig(PreTrainedConfig):
    r"""
    Configuration of SEED-OPT: an OPT causal language model whose vocabulary is extended with the SEED image codes,
    so the same next-token head reads and writes images.

    Args:
        text_config (`dict` or `OPTConfig`, *optional*):
            The OPT language model; its `vocab_size` covers the extended vocabulary.
        vision_config (`dict` or `SeedVisionTokenizerConfig`, *optional*):
            The frozen SEED tokenizer that turns `pixel_values` into code ids; `None` when inputs carry code ids.
        image_token_start_id (`int`, *optional*):
            Token id of `<img_00000>`; the codes occupy `num_image_tokens` contiguous ids from here.
        num_image_tokens (`int`, *optional*, defaults to 8192):
            Number of image code tokens (the codebook size).
        image_seq_length (`int`, *optional*, defaults to 32):
            Codes per image.
        boi_token_id (`int`, *optional*):
            Id of `<img>`, which opens an image block.
        eoi_token_id (`int`, *optional*):
            Id of `</img>`, which closes an image block.
        image_token_id (`int`, *optional*):
            Id of the `<image>` placeholder that the processor writes and the model fills with code ids.
    """

    model_type = "seed_opt"
    sub_configs_defaults = {
        "text_config": SubConfigSpec(config_class=AutoConfig, model_type="opt"),
        "vision_config": SubConfigSpec(config_class=SeedVisionTokenizerConfig, optional=True),
    }

    text_config: dict | PreTrainedConfig | None = None
    vision_config: dict | PreTrainedConfig | None = None
    image_token_start_id: int | None = None
    num_image_tokens: int = 8192
    image_seq_length: int = 32
    boi_token_id: int | None = None
    eoi_token_id: int | None = None
    image_token_id: int | None = None
    tie_word_embeddings: bool = True

    @classmethod
    def from_dict(cls, config_dict: dict, **kwargs):
        check_model_type(
            cls,
            config_dict,
            "To make SEED-OPT from an OPT checkpoint, run conversion_scripts/build_seed_opt.py (see the README).",
        )
        return super().from_dict(config_dict, **kwargs)

    @classmethod
    def from_text_tokenizer(cls, tokenizer, text_config: dict, vision_config: dict | None = None) -> "SeedOPTConfig":
        """The config whose image-token fields are those of a `SeedOPTTokenizer` (never parsed from token strings)."""
        return cls(
            text_config=text_config,
            vision_config=vision_config,
            image_token_start_id=tokenizer.image_token_start_id,
            num_image_tokens=tokenizer.num_image_tokens,
            image_seq_length=tokenizer.image_seq_length,
            boi_token_id=tokenizer.boi_token_id,
            eoi_token_id=tokenizer.eoi_token_id,
            image_token_id=tokenizer.image_token_id,
        )

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        if self.vision_config is not None:
            if self.vision_config.codebook_size != self.num_image_tokens:
                raise ValueError(
                    f"num_image_tokens ({self.num_image_tokens}) must equal the vision tokenizer's codebook_size "
                    f"({self.vision_config.codebook_size})"
                )
            if self.vision_config.num_query_tokens != self.image_seq_length:
                raise ValueError(
                    f"image_seq_length ({self.image_seq_length}) must equal the vision tokenizer's num_query_tokens "
                    f"({self.vision_config.num_query_tokens})"
                )
        vocab_size = self.text_config.vocab_size
        if self.image_token_start_id is not None and not (
            0 <= self.image_token_start_id <= vocab_size - self.num_image_tokens
        ):
            raise ValueError(
                f"The {self.num_image_tokens} image tokens from id {self.image_token_start_id} must fit in the text "
                f"vocabulary of {vocab_size} (text_config.vocab_size)"
            )
        for name in ("boi_token_id", "eoi_token_id", "image_token_id"):
            token_id = getattr(self, name)
            if token_id is None:
                continue
            if not 0 <= token_id < vocab_size:
                raise ValueError(f"{name} ({token_id}) must be in [0, {vocab_size}) (text_config.vocab_size)")
            if self.image_token_start_id is not None and 0 <= token_id - self.image_token_start_id < (
                self.num_image_tokens
            ):
                raise ValueError(f"{name} ({token_id}) must not be one of the image code ids")


__all__ = ["SeedOPTConfig", "SeedVisionTokenizerConfig"]
