"""
Training heads of the SEED tokenizer, one per stage of arXiv 2307.08041 §3, trainable with a plain `Trainer`.

Both heads subclass [`SeedVisionTokenizer`], so they load a SEED tokenizer folder key for key; the weights only
training needs (the text branch of Stage I, the query-reconstruction branch of Stage II) live in separate modules,
are saved by [`SeedTrainingHeadMixin.save_tokenizer`] to `training_head.safetensors` beside a normal tokenizer folder,
and are read back from there by `from_pretrained`.
"""

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
from safetensors.torch import load_file, save_file
from torch import nn
from torch.nn import functional as F
from transformers import Blip2ForImageTextRetrieval
from transformers import initialization as init
from transformers.models.blip_2.modeling_blip_2 import (
    Blip2Encoder,
    Blip2QFormerIntermediate,
    Blip2QFormerOutput,
    Blip2TextEmbeddings,
)
from transformers.utils import ModelOutput, cached_file

from .configuration_seed import SeedVisionTokenizerConfig
from .modeling_seed_vision_tokenizer import SeedVisionTokenizer

logger = logging.getLogger(__name__)

TRAINING_HEAD_WEIGHTS = "training_head.safetensors"
TRAINING_HEAD_INFO = "training_head.json"
# Maximum caption length of Stage I, as in the original training code.
MAX_TEXT_LENGTH = 32


@dataclass
class SeedCausalQFormerPreTrainingOutput(ModelOutput):
    r"""
    Output of [`SeedCausalQFormerForPreTraining.forward`].

    Args:
        loss (`torch.FloatTensor` of shape `()`, *optional*):
            The image-text contrastive loss (returned when `return_loss=True`).
        loss_contrastive (`torch.FloatTensor` of shape `()`, *optional*):
            The same loss, under the name of its part.
        image_embeds (`torch.FloatTensor` of shape `(batch_size, image_text_hidden_size)`):
            L2-normalised projection of the last causal query (the "final causal embedding").
        text_embeds (`torch.FloatTensor` of shape `(batch_size, image_text_hidden_size)`):
            L2-normalised projection of the caption's first token through the Q-Former's text branch.
        logits_per_image (`torch.FloatTensor` of shape `(batch_size, num_processes * batch_size)`):
            Image-to-text similarities divided by the temperature, against the captions of all processes of a
            distributed run (the contrastive loss uses them all as negatives, as the original does).
        temperature (`torch.FloatTensor` of shape `()`):
            The learned softmax temperature.
    """

    loss: torch.FloatTensor | None = None
    loss_contrastive: torch.FloatTensor | None = None
    image_embeds: torch.FloatTensor | None = None
    text_embeds: torch.FloatTensor | None = None
    logits_per_image: torch.FloatTensor | None = None
    temperature: torch.FloatTensor | None = None


@dataclass
class SeedCodebookTrainingOutput(ModelOutput):
    r"""
    Output of [`SeedVisionTokenizerForCodebookTraining.forward`].

    Args:
        loss (`torch.FloatTensor` of shape `()`, *optional*):
            `embedding_loss_weight * loss_embedding + reconstruction_loss_weight * loss_reconstruction +
            generation_loss_weight * loss_generation` (the last term only with `text_targets`).
        loss_embedding (`torch.FloatTensor` of shape `()`, *optional*):
            The vector-quantisation loss: commitment term plus `commitment_beta` times the codebook term.
        loss_reconstruction (`torch.FloatTensor` of shape `()`, *optional*):
            Mean `1 - cosine` between the reconstructed and the causal Q-Former's query features.
        loss_generation (`torch.FloatTensor` of shape `()`, *optional*):
            Mean squared error between the generation embeddings and `text_targets`.
        codes (`torch.LongTensor` of shape `(batch_size, num_query_tokens)`):
            The codes chosen for the images.
        latents (`torch.FloatTensor` of shape `(batch_size, num_query_tokens, codebook_dim)`):
            The quantizer's inputs (projected query features), used to revive dead codes.
        generation_embeds (`torch.FloatTensor` of shape `(batch_size, num_reverse_tokens, generation_embed_dim)`):
            The decoder's output from the quantized codes.
    """

    loss: torch.FloatTensor | None = None
    loss_embedding: torch.FloatTensor | None = None
    loss_reconstruction: torch.FloatTensor | None = None
    loss_generation: torch.FloatTensor | None = None
    codes: torch.LongTensor | None = None
    latents: torch.FloatTensor | None = None
    generation_embeds: torch.FloatTensor | None = None


class SeedTrainingHeadMixin:
    """
    What both training heads share: `from_pretrained` that freezes again (each head's `freeze()`) and reads
    `training_head.safetensors`, and saving a normal SEED tokenizer folder plus the head's own weights.
    """

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        """Load a SEED tokenizer folder (or a checkpoint of this head), then its `training_head.safetensors` if any."""
        model = super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)
        model.freeze()  # loading replaces the parameters, and with them their requires_grad
        head_files = [
            cached_file(
                pretrained_model_name_or_path,
                name,
                _raise_exceptions_for_missing_entries=False,
                _raise_exceptions_for_connection_errors=False,
            )
            for name in (TRAINING_HEAD_INFO, TRAINING_HEAD_WEIGHTS)
        ]
        if None in head_files:
            logger.info("%s has no %s: the training head starts fresh", pretrained_model_name_or_path, cls.__name__)
            return model
        head_class = json.loads(Path(head_files[0]).read_text())["head_class"]
        if head_class == cls.__name__:
            model.load_training_head(head_files[1])
        else:
            # A Stage II run starts from Stage I's output, whose text branch it does not use.
            logger.info("Not loading the %s weights of %s into %s", head_class, pretrained_model_name_or_path, cls)
        return model

    def tokenizer_state_dict(self) -> dict[str, torch.Tensor]:
        """The weights a plain [`SeedVisionTokenizer`] holds, under its key names."""
        tokenizer_keys = set(_tokenizer_keys(self.config))
        return {key: value for key, value in self.state_dict().items() if key in tokenizer_keys}

    def training_head_state_dict(self) -> dict[str, torch.Tensor]:
        """The weights only this training head holds."""
        tokenizer_keys = set(_tokenizer_keys(self.config))
        return {key: value for key, value in self.state_dict().items() if key not in tokenizer_keys}

    def load_training_head(self, path: str | Path) -> None:
        """Load the head's extra weights from a `training_head.safetensors` written by `save_tokenizer`."""
        weights = load_file(str(path))
        expected = self.training_head_state_dict()
        unknown = sorted(set(weights) - set(expected))
        if unknown:
            raise ValueError(
                f"{path} holds weights that {type(self).__name__} does not have: {', '.join(unknown[:5])}"
            )
        for key, tensor in weights.items():
            if tensor.shape != expected[key].shape:
                raise ValueError(
                    f"{path}: {key} has shape {tuple(tensor.shape)}, the model expects {tuple(expected[key].shape)}"
                )
        self.load_state_dict(weights, strict=False)

    def save_tokenizer(self, save_directory: str | Path, **kwargs) -> None:
        """
        Write a normal SEED tokenizer folder (loads with `AutoModel` / [`SeedVisionTokenizer`] without warnings)
        plus `training_head.safetensors` and `training_head.json` for the weights only training uses.
        `kwargs` go to `save_pretrained`.
        """
        save_directory = Path(save_directory)
        with torch.device("meta"):
            tokenizer = SeedVisionTokenizer(self.config)
        tokenizer.load_state_dict(self.tokenizer_state_dict(), assign=True)
        tokenizer.save_pretrained(save_directory, **kwargs)
        self.save_training_head(save_directory, self.training_head_state_dict())

    @classmethod
    def save_training_head(cls, save_directory: str | Path, weights: Mapping[str, torch.Tensor]) -> None:
        """
        Write `weights` (named as in [`~training_head_state_dict`], all or some of them) as this head's
        `training_head.safetensors` and `training_head.json`, which `from_pretrained` reads; the converter uses it
        for the training weights of the original release.
        """
        save_directory = Path(save_directory)
        head = {key: tensor.detach().contiguous() for key, tensor in weights.items()}
        save_file(head, str(save_directory / TRAINING_HEAD_WEIGHTS), metadata={"format": "pt"})
        info = {"head_class": cls.__name__, "weights": sorted(head)}
        (save_directory / TRAINING_HEAD_INFO).write_text(json.dumps(info, indent=2) + "\n")


def _tokenizer_keys(config: SeedVisionTokenizerConfig) -> list[str]:
    with torch.device("meta"):
        return list(SeedVisionTokenizer(config).state_dict())


def _gather_across_processes(tensor: torch.Tensor) -> tuple[torch.Tensor, int]:
    """
    The rows of all processes of a distributed run, concatenated by rank, with gradients flowing back to each
    process's own rows; and the index of this process's first row. Single process: `tensor` and 0.
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return tensor, 0
    from torch.distributed.nn.functional import all_gather  # only where torch.distributed is available

    return torch.cat(all_gather(tensor)), dist.get_rank() * len(tensor)


class SeedImageTextContrastiveHead(nn.Module):
    """Stage I's text side: BERT-style text embeddings, the two projections and the learned temperature."""

    def __init__(self, config: SeedVisionTokenizerConfig, image_text_hidden_size: int, temperature: float):
        super().__init__()
        width = config.qformer_config.hidden_size
        self.text_embeddings = Blip2TextEmbeddings(config.qformer_config)
        self.vision_projection = nn.Linear(width, image_text_hidden_size)
        self.text_projection = nn.Linear(width, image_text_hidden_size)
        self.temperature = nn.Parameter(torch.tensor(temperature))


class SeedCausalQFormerForPreTraining(SeedTrainingHeadMixin, SeedVisionTokenizer):
    r"""
    Stage I of SEED: the causal Q-Former learns, with an image-text contrastive loss, to make its *last* query (the
    final causal embedding) match the caption. The vision encoder is frozen (`requires_grad_(False)` here); the
    query tokens, the Q-Former (with its text feed-forward layers, added to each layer as `intermediate` /
    `output`), the text embeddings, both projections and the temperature are trained. The quantizer and the
    decoder are not used and frozen too.

    Start from a SEED tokenizer folder with `from_pretrained` (the text branch then comes from its
    `training_head.safetensors`, else fresh) or from a BLIP-2 retrieval checkpoint with [`~from_blip2`].

    Example:

    ```python
    >>> import torch
    >>> from seed_hf import SeedCausalQFormerForPreTraining, SeedVisionTokenizerConfig
    >>> config = SeedVisionTokenizerConfig(
    ...     vision_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2},
    ...     qformer_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
    ...                     "vocab_size": 100},
    ...     decoder_num_blocks=1, reverse_qformer_num_hidden_layers=1, codebook_size=64, codebook_dim=8,
    ... )
    >>> model = SeedCausalQFormerForPreTraining(config)
    >>> output = model(torch.randn(2, 3, 224, 224), input_ids=torch.tensor([[1, 5, 6], [1, 7, 0]]),
    ...                attention_mask=torch.tensor([[1, 1, 1], [1, 1, 0]]))
    >>> output.loss.backward()
    >>> output.image_embeds.shape, output.text_embeds.shape
    (torch.Size([2, 256]), torch.Size([2, 256]))
    ```
    """

    #: Width of the image and text projections (BLIP-2's `embed_dim`).
    image_text_hidden_size = 256
    #: Initial softmax temperature; clamped to `temperature_range` before each use, as in BLIP-2.
    initial_temperature = 0.07
    temperature_range = (0.001, 0.5)
    #: Label smoothing of both contrastive cross-entropies.
    label_smoothing = 0.1
    # Present only in the training head: a tokenizer folder lacks them, `from_pretrained` reads them from the head file.
    _keys_to_ignore_on_load_missing = [
        r"^contrastive_head\.",
        r"^qformer\.encoder\.layer\.\d+\.(intermediate|output)\.",
    ]

    def __init__(self, config: SeedVisionTokenizerConfig):
        super().__init__(config)
        qformer_config = config.qformer_config
        for layer in self.qformer.encoder.layer:
            layer.intermediate = Blip2QFormerIntermediate(qformer_config)
            layer.output = Blip2QFormerOutput(qformer_config)
        self.contrastive_head = SeedImageTextContrastiveHead(
            config, self.image_text_hidden_size, self.initial_temperature
        )
        self.freeze()
        self.post_init()

    def freeze(self) -> None:
        """Freeze what Stage I does not train: the vision encoder, and the quantizer and decoder it does not use."""
        for module in (self.vision_model, self.quantizer, self.decoder):
            module.requires_grad_(False)

    def _init_weights(self, module):
        super()._init_weights(module)
        if isinstance(module, SeedImageTextContrastiveHead):
            # transformers' init functions leave loaded tensors alone.
            init.constant_(module.temperature, self.initial_temperature)
            position_ids = module.text_embeddings.position_ids  # a buffer no checkpoint holds
            init.copy_(position_ids, torch.arange(position_ids.shape[-1]).expand_as(position_ids))

    @classmethod
    def from_blip2(cls, pretrained_model_name_or_path, **kwargs) -> "SeedCausalQFormerForPreTraining":
        """
        Start Stage I from a BLIP-2 retrieval checkpoint ([`Blip2ForImageTextRetrieval`], e.g.
        `Salesforce/blip2-itm-vit-g`): its vision encoder, query tokens, Q-Former with text branch, text embeddings
        and projections. The temperature starts at `initial_temperature`. `kwargs` go to its `from_pretrained`.
        """
        blip2 = Blip2ForImageTextRetrieval.from_pretrained(pretrained_model_name_or_path, **kwargs)
        blip2_config = blip2.config
        if blip2_config.image_text_hidden_size != cls.image_text_hidden_size:
            raise ValueError(
                f"{pretrained_model_name_or_path} projects to {blip2_config.image_text_hidden_size} dimensions; "
                f"{cls.__name__} expects {cls.image_text_hidden_size}"
            )
        qformer_config = blip2_config.qformer_config.to_dict()
        qformer_config["use_qformer_text_input"] = False
        for dropout in ("hidden_dropout_prob", "attention_probs_dropout_prob"):
            del qformer_config[dropout]  # SEED's default: none, so codes never depend on train/eval mode
        config = SeedVisionTokenizerConfig(
            vision_config=blip2_config.vision_config.to_dict(),
            qformer_config=qformer_config,
            num_query_tokens=blip2_config.num_query_tokens,
            vision_ln_eps=blip2_config.vision_config.layer_norm_eps,
        )
        model = cls(config)  # frozen as Stage I needs it: load_state_dict copies into the parameters
        renamed = {
            "embeddings.": "contrastive_head.text_embeddings.",
            "vision_projection.": "contrastive_head.vision_projection.",
            "text_projection.": "contrastive_head.text_projection.",
        }
        weights = {}
        for key, tensor in blip2.state_dict().items():
            if key.startswith("itm_head."):
                continue
            prefix = next((prefix for prefix in renamed if key.startswith(prefix)), None)
            weights[renamed[prefix] + key[len(prefix) :] if prefix else key] = tensor
        missing, unexpected = model.load_state_dict(weights, strict=False)
        expected_missing = {"contrastive_head.temperature"} | {
            key for key in model.state_dict() if key.startswith(("quantizer.", "decoder."))
        }
        if unexpected or set(missing) - expected_missing:
            raise ValueError(
                f"{pretrained_model_name_or_path} is not a BLIP-2 retrieval checkpoint this head can start from "
                f"(missing {sorted(set(missing) - expected_missing)[:5]}, unexpected {unexpected[:5]})"
            )
        return model

    def causal_query_output(self, pixel_values: torch.FloatTensor) -> torch.FloatTensor:
        """The causal Q-Former's last hidden state, `(batch_size, num_query_tokens, qformer_hidden_size)`."""
        self._check_pixel_values(pixel_values)
        return self._encode(pixel_values)[1].last_hidden_state

    def forward(
        self,
        pixel_values: torch.FloatTensor,
        input_ids: torch.LongTensor,
        attention_mask: torch.LongTensor | None = None,
        return_loss: bool = True,
    ) -> SeedCausalQFormerPreTrainingOutput:
        r"""
        Args:
            pixel_values (`torch.FloatTensor` of shape `(batch_size, 3, image_size, image_size)`):
                Images prepared by [`SeedImageProcessor`].
            input_ids (`torch.LongTensor` of shape `(batch_size, text_length)`):
                The captions, tokenized with the Q-Former's (BERT) tokenizer, first token `[CLS]`.
            attention_mask (`torch.LongTensor` of shape `(batch_size, text_length)`, *optional*):
                1 for caption tokens, 0 for padding.
            return_loss (`bool`, *optional*, defaults to `True`):
                Whether to compute the contrastive loss (row `i` of the images goes with row `i` of the captions).
        """
        if input_ids.ndim != 2 or input_ids.shape[0] != pixel_values.shape[0]:
            raise ValueError(
                f"input_ids must have shape (batch_size, text_length) with the {pixel_values.shape[0]} rows of "
                f"pixel_values, got {tuple(input_ids.shape)}"
            )
        if attention_mask is not None and attention_mask.shape != input_ids.shape:
            raise ValueError(
                f"attention_mask must have the shape of input_ids {tuple(input_ids.shape)}, got "
                f"{tuple(attention_mask.shape)}"
            )
        head = self.contrastive_head
        query_output = self.causal_query_output(pixel_values)
        image_embeds = F.normalize(head.vision_projection(query_output[:, -1]), dim=-1)

        text_input = head.text_embeddings(input_ids=input_ids.to(self.device))
        text_mask = None
        if attention_mask is not None:
            # Blip2QFormerModel uses a prepared 4-D mask as is: additive, 0 = attend, dtype min = padding.
            blocked = attention_mask.to(self.device)[:, None, None, :] == 0
            text_mask = torch.zeros(blocked.shape, dtype=text_input.dtype, device=self.device)
            text_mask = text_mask.masked_fill(blocked, torch.finfo(text_input.dtype).min)
        text_output = self.qformer(query_embeds=text_input, query_length=0, attention_mask=text_mask)
        text_embeds = F.normalize(head.text_projection(text_output.last_hidden_state[:, 0]), dim=-1)

        with torch.no_grad():
            head.temperature.clamp_(*self.temperature_range)
        # Under data parallelism every process's pairs are negatives too, as in the original.
        all_image_embeds, offset = _gather_across_processes(image_embeds)
        all_text_embeds, _ = _gather_across_processes(text_embeds)
        logits_per_image = image_embeds @ all_text_embeds.t() / head.temperature
        loss = None
        if return_loss:
            logits_per_text = text_embeds @ all_image_embeds.t() / head.temperature
            targets = torch.arange(len(image_embeds), device=image_embeds.device) + offset
            loss = (
                F.cross_entropy(logits_per_image, targets, label_smoothing=self.label_smoothing)
                + F.cross_entropy(logits_per_text, targets, label_smoothing=self.label_smoothing)
            ) / 2
        return SeedCausalQFormerPreTrainingOutput(
            loss=loss,
            loss_contrastive=loss,
            image_embeds=image_embeds,
            text_embeds=text_embeds,
            logits_per_image=logits_per_image,
            temperature=head.temperature.detach(),
        )


class SeedQueryReconstructionHead(nn.Module):
    """Stage II's reconstruction branch: decoded codes + positions -> pre-norm blocks, compared with query features."""

    def __init__(self, config: SeedVisionTokenizerConfig):
        super().__init__()
        width = config.qformer_config.hidden_size
        self.position_embeddings = nn.Parameter(torch.zeros(1, config.num_query_tokens, width))
        self.blocks = Blip2Encoder(config.decoder_blocks_config())

    def forward(self, decoded: torch.Tensor) -> torch.Tensor:
        return self.blocks(inputs_embeds=decoded + self.position_embeddings).last_hidden_state


class SeedVisionTokenizerForCodebookTraining(SeedTrainingHeadMixin, SeedVisionTokenizer):
    r"""
    Stage II of SEED: with the vision encoder, query tokens and causal Q-Former frozen (`requires_grad_(False)`
    here), train the quantizer (`encode_task_layer` and codebook, straight-through estimator), the code decoder,
    and a reconstruction branch that exists only in training. Three losses: vector quantisation, reconstruction of
    the causal query features (cosine), and distillation of the decoder's generation embeddings onto the Stable
    Diffusion text encoder's embeddings of the caption (`text_targets`, MSE).

    Example:

    ```python
    >>> import torch
    >>> from seed_hf import SeedVisionTokenizerConfig, SeedVisionTokenizerForCodebookTraining
    >>> config = SeedVisionTokenizerConfig(
    ...     vision_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2},
    ...     qformer_config={"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2},
    ...     decoder_num_blocks=1, reverse_qformer_num_hidden_layers=1, codebook_size=64, codebook_dim=8,
    ...     generation_embed_dim=16,
    ... )
    >>> model = SeedVisionTokenizerForCodebookTraining(config)
    >>> output = model(torch.randn(2, 3, 224, 224), text_targets=torch.randn(2, 77, 16))
    >>> output.loss.backward()
    >>> [name for name in output.keys() if name.startswith("loss_")]
    ['loss_embedding', 'loss_reconstruction', 'loss_generation']
    ```
    """

    #: Weight of the codebook term in the vector-quantisation loss (the commitment term has weight 1).
    commitment_beta = 0.25
    #: Weights of the three losses in the total, as in the original training code.
    embedding_loss_weight = 5.0
    reconstruction_loss_weight = 2.0
    generation_loss_weight = 0.5
    _keys_to_ignore_on_load_missing = [r"^reconstruction_head\."]

    def __init__(self, config: SeedVisionTokenizerConfig):
        super().__init__(config)
        self.reconstruction_head = SeedQueryReconstructionHead(config)
        self.freeze()
        self.post_init()

    def freeze(self) -> None:
        """Freeze the encoder side Stage I trained: vision encoder, query tokens and causal Q-Former."""
        for module in (self.vision_model, self.qformer, self.query_tokens):
            module.requires_grad_(False)

    def _init_weights(self, module):
        super()._init_weights(module)
        if isinstance(module, SeedQueryReconstructionHead):
            init.normal_(module.position_embeddings, std=self.config.initializer_range)

    def forward(
        self, pixel_values: torch.FloatTensor, text_targets: torch.FloatTensor | None = None, return_loss: bool = True
    ) -> SeedCodebookTrainingOutput:
        r"""
        Args:
            pixel_values (`torch.FloatTensor` of shape `(batch_size, 3, image_size, image_size)`):
                Images prepared by [`SeedImageProcessor`].
            text_targets (`torch.FloatTensor` of shape `(batch_size, num_reverse_tokens, generation_embed_dim)`, *optional*):
                The Stable Diffusion text encoder's last hidden state for each caption (padded to
                `num_reverse_tokens`); without it the generation loss is left out.
            return_loss (`bool`, *optional*, defaults to `True`):
                Whether to compute the losses.
        """
        expected = (self.config.num_reverse_tokens, self.config.generation_embed_dim)
        if text_targets is not None and (
            text_targets.ndim != 3
            or text_targets.shape[0] != pixel_values.shape[0]
            or tuple(text_targets.shape[1:]) != expected
        ):
            raise ValueError(
                f"text_targets must have shape (batch_size, {expected[0]}, {expected[1]}) with the "
                f"{pixel_values.shape[0]} rows of pixel_values, got {tuple(text_targets.shape)}"
            )
        # The frozen encoder side builds no graph: none of its parameters requires grad.
        self._check_pixel_values(pixel_values)
        _, query_output, codes = self._encode(pixel_values)
        query_output = query_output.last_hidden_state
        latents = self.quantizer.encode_task_layer(query_output)
        quantized = self.quantizer.codebook(codes)
        # Straight-through: the forward pass uses the codebook rows, the gradient reaches the latents unchanged.
        quantized_straight_through = latents + (quantized - latents).detach()
        decoded = self.decoder.decode_task_layer(quantized_straight_through)
        generation_embeds = self.decoder.forward_decoded(decoded)[0]

        loss = loss_embedding = loss_reconstruction = loss_generation = None
        if return_loss:
            loss_embedding = F.mse_loss(latents, quantized.detach()) + self.commitment_beta * F.mse_loss(
                quantized, latents.detach()
            )
            reconstructed = self.reconstruction_head(decoded)
            loss_reconstruction = (1 - F.cosine_similarity(reconstructed, query_output, dim=-1)).mean()
            loss = self.embedding_loss_weight * loss_embedding + self.reconstruction_loss_weight * loss_reconstruction
            if text_targets is not None:
                loss_generation = F.mse_loss(generation_embeds, text_targets.to(generation_embeds))
                loss = loss + self.generation_loss_weight * loss_generation
        return SeedCodebookTrainingOutput(
            loss=loss,
            loss_embedding=loss_embedding,
            loss_reconstruction=loss_reconstruction,
            loss_generation=loss_generation,
            codes=codes,
            latents=latents.detach(),
            generation_embeds=generation_embeds,
        )


__all__ = [
    "SeedCausalQFormerForPreTraining",
    "SeedCausalQFormerPreTrainingOutput",
    "SeedCodebookTrainingOutput",
    "SeedVisionTokenizerForCodebookTraining",
]
