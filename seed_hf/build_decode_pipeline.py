"""Assemble a [`SeedDecodePipeline`] folder from a SEED tokenizer folder and a Stable Diffusion v1.x checkpoint."""

import os
from pathlib import Path

import torch
from diffusers import AutoencoderKL, StableDiffusionPipeline, UNet2DConditionModel
from transformers import CLIPTextModel, CLIPTokenizer

from .modeling_seed_null_embedding import SeedNullEmbedding
from .modeling_seed_vision_tokenizer import SeedVisionTokenizer
from .pipeline_seed_decode import SeedDecodePipeline, stable_diffusion_v1_4_scheduler
from .utils import atomic_output_dir, check_output_dir, write_model_card

SINGLE_FILE_SUFFIXES = (".ckpt", ".safetensors")


def load_stable_diffusion(
    source: str | os.PathLike, config: str | os.PathLike | None = None
) -> tuple[UNet2DConditionModel, AutoencoderKL, CLIPTextModel, CLIPTokenizer]:
    """
    The UNet, VAE, CLIP text encoder and tokenizer of a local Stable Diffusion v1.x checkpoint, without the Hub.

    Args:
        source (`str` or `os.PathLike`):
            A diffusers-format folder (`unet/`, `vae/`, `text_encoder/`, `tokenizer/`, as CompVis/stable-diffusion-v1-4)
            or an original single-file checkpoint (`sd-v1-4.ckpt` or `.safetensors`). `.ckpt` files are read with
            `torch.load(weights_only=True)`; a checkpoint that pickles other objects is refused: use its
            `.safetensors` release instead.
        config (`str` or `os.PathLike`, *optional*):
            For a single file only, and required there: a diffusers-format Stable Diffusion v1.x folder holding the
            component configs and tokenizer files (weights not needed), which `from_single_file` needs to work offline.
    """
    source = Path(source)
    if source.is_dir():
        if config is not None:
            raise ValueError(f"`config` is for single-file checkpoints only; {source} is a diffusers folder")
        missing = [name for name in ("unet", "vae", "text_encoder", "tokenizer") if not (source / name).is_dir()]
        if missing:
            raise ValueError(
                f"{source} is not a diffusers-format Stable Diffusion folder: it lacks {', '.join(missing)}"
            )
        return (
            UNet2DConditionModel.from_pretrained(source, subfolder="unet"),
            AutoencoderKL.from_pretrained(source, subfolder="vae"),
            CLIPTextModel.from_pretrained(source, subfolder="text_encoder"),
            CLIPTokenizer.from_pretrained(source, subfolder="tokenizer"),
        )
    if not source.is_file() or source.suffix not in SINGLE_FILE_SUFFIXES:
        raise ValueError(
            f"Expected a diffusers-format Stable Diffusion folder or a {' / '.join(SINGLE_FILE_SUFFIXES)} file, got "
            f"{source}"
        )
    if config is None or not Path(config).is_dir():
        raise ValueError(
            f"A single-file checkpoint needs `config`: a diffusers-format Stable Diffusion v1.x folder with the "
            f"component configs and tokenizer files, so that it loads offline; got {config}"
        )
    try:
        pipe = StableDiffusionPipeline.from_single_file(
            str(source), config=str(config), local_files_only=True, safety_checker=None, feature_extractor=None
        )
    except OSError as error:
        # diffusers reports any unreadable file as an OSError, a `.ckpt` that pickles more than tensors included.
        raise ValueError(
            f"Could not read {source} as a weights-only checkpoint ({error}). A .ckpt that pickles objects besides "
            "tensors (e.g. training callbacks) is not unpickled here: use the .safetensors release of the checkpoint "
            "or its diffusers-format folder"
        ) from error
    return pipe.unet, pipe.vae, pipe.text_encoder, pipe.tokenizer


@torch.no_grad()
def null_text_embedding(
    text_encoder: CLIPTextModel, tokenizer: CLIPTokenizer, sequence_length: int
) -> SeedNullEmbedding:
    """
    The CLIP text embedding of `""`, padded to `sequence_length` tokens as Stable Diffusion pads its negative
    prompt: the unconditional branch SEED decodes with.
    """
    input_ids = tokenizer(
        "", padding="max_length", max_length=sequence_length, truncation=True, return_tensors="pt"
    ).input_ids
    return SeedNullEmbedding.from_embedding(text_encoder(input_ids.to(text_encoder.device))[0].float())


def build_seed_decode_pipeline(
    tokenizer_dir: str | os.PathLike,
    stable_diffusion: str | os.PathLike,
    output_dir: str | os.PathLike,
    config: str | os.PathLike | None = None,
    overwrite: bool = False,
    dtype: torch.dtype = torch.float32,
    model_card: str | os.PathLike | None = None,
) -> SeedDecodePipeline:
    """
    Write a [`SeedDecodePipeline`] folder (safetensors, JSON and code) with the SEED tokenizer of `tokenizer_dir`, the
    UNet and VAE of `stable_diffusion`, Stable Diffusion v1.4's PNDM scheduler and the null embedding computed once
    from the checkpoint's own CLIP text encoder and tokenizer, which are then dropped. The folder is written under a
    temporary name and renamed into place only when complete; an existing `output_dir` is refused unless `overwrite`.

    Args:
        tokenizer_dir (`str` or `os.PathLike`): A [`SeedVisionTokenizer`] folder (e.g. from `seed-hf convert`).
        stable_diffusion (`str` or `os.PathLike`): See [`load_stable_diffusion`].
        output_dir (`str` or `os.PathLike`): The folder to write.
        config (`str` or `os.PathLike`, *optional*): See [`load_stable_diffusion`].
        overwrite (`bool`, *optional*, defaults to `False`): Replace an existing `output_dir`.
        dtype (`torch.dtype`, *optional*, defaults to `torch.float32`): The dtype the weights are stored in.
        model_card (`str` or `os.PathLike`, *optional*): A model card copied into the folder as README.md.

    Returns:
        [`SeedDecodePipeline`]: the pipeline that was written.
    """
    check_output_dir(output_dir, overwrite)
    vision_tokenizer = SeedVisionTokenizer.from_pretrained(tokenizer_dir, dtype=torch.float32, use_safetensors=True)
    unet, vae, text_encoder, tokenizer = load_stable_diffusion(stable_diffusion, config)

    width = vision_tokenizer.config.generation_embed_dim
    if unet.config.cross_attention_dim != width or text_encoder.config.hidden_size != width:
        raise ValueError(
            f"The SEED tokenizer makes {width}-wide embeddings, but the UNet attends to "
            f"{unet.config.cross_attention_dim} and the text encoder makes {text_encoder.config.hidden_size}: "
            "use a Stable Diffusion v1.x checkpoint"
        )
    null_embedding = null_text_embedding(text_encoder, tokenizer, vision_tokenizer.config.num_reverse_tokens)
    pipe = SeedDecodePipeline(
        vae=vae,
        unet=unet,
        null_embedding=null_embedding,
        scheduler=stable_diffusion_v1_4_scheduler(),
        vision_tokenizer=vision_tokenizer,
    ).to(dtype=dtype)

    with atomic_output_dir(output_dir, overwrite) as staging:
        pipe.save_pretrained(staging, safe_serialization=True)
        write_model_card(model_card, staging)
    return pipe


__all__ = ["build_seed_decode_pipeline", "load_stable_diffusion", "null_text_embedding"]
