"""SEED codes (or an image) -> pictures: a diffusers pipeline around a Stable Diffusion v1.x UNet and VAE."""

import inspect
import json
import os
import shutil
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import PIL.Image
import torch
from diffusers import AutoencoderKL, DiffusionPipeline, ModelMixin, PNDMScheduler, UNet2DConditionModel
from diffusers.callbacks import MultiPipelineCallbacks, PipelineCallback
from diffusers.image_processor import VaeImageProcessor
from diffusers.loaders import StableDiffusionLoraLoaderMixin
from diffusers.pipelines.pipeline_utils import StableDiffusionMixin
from diffusers.pipelines.stable_diffusion import StableDiffusionPipeline
from diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion import retrieve_timesteps
from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
from diffusers.schedulers import KarrasDiffusionSchedulers
from diffusers.utils import BaseOutput, logging, replace_example_docstring
from diffusers.utils.accelerate_utils import apply_forward_hook
from diffusers.utils.dynamic_modules_utils import get_relative_import_files
from huggingface_hub import snapshot_download
from transformers import CLIPImageProcessor, PreTrainedModel

# Relative imports only: a saved pipeline carries this module and these files, to load without seed_hf. The null
# embedding is also imported for folders saved before it had its own module, whose index names it from here.
from .image_processing_seed import SeedImageProcessor
from .modeling_seed_null_embedding import SeedNullEmbedding

logger = logging.get_logger(__name__)

EXAMPLE_DOC_STRING = """
    Examples:
        ```py
        >>> import torch
        >>> from PIL import Image
        >>> from seed_hf import SeedDecodePipeline

        >>> pipe = SeedDecodePipeline.from_pretrained("seed-decode-v1", dtype=torch.float16).to("cuda")
        >>> output = pipe(image=Image.open("cat.jpg"), generator=torch.Generator("cuda").manual_seed(0))
        >>> output.codes.shape  # the 32 SEED codes the picture was drawn from
        torch.Size([1, 32])
        >>> output.images[0].save("cat_reconstructed.png")
        ```
"""


def stable_diffusion_v1_4_scheduler() -> PNDMScheduler:
    """
    The scheduler of Stable Diffusion v1.4 (PNDM with PLMS steps only). At 50 steps its timesteps are those of the
    CompVis PLMS sampler the original SEED code decodes with.
    """
    return PNDMScheduler(
        num_train_timesteps=1000,
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        set_alpha_to_one=False,
        skip_prk_steps=True,
        steps_offset=1,
    )


@dataclass
class SeedDecodePipelineOutput(BaseOutput):
    r"""
    Output of [`SeedDecodePipeline`].

    Args:
        images (`list[PIL.Image.Image]`, `np.ndarray` or `torch.Tensor`):
            `batch_size * num_images_per_prompt` pictures (or latents for `output_type="latent"`); the pictures of
            input `i` are `images[i * num_images_per_prompt : (i + 1) * num_images_per_prompt]`.
        codes (`torch.LongTensor` of shape `(batch_size, num_query_tokens)`, *optional*):
            The SEED codes the pictures were drawn from, one row per input: the given codes, or those of the given
            images. `None` when the pipeline was called with `generation_embeds`.
        nsfw_content_detected (`list[bool]`, *optional*):
            Per picture, whether the safety checker flagged it; `None` without a safety checker.
    """

    images: list[PIL.Image.Image] | np.ndarray | torch.Tensor
    codes: torch.LongTensor | None = None
    nsfw_content_detected: list[bool] | None = None


PipelineImage = PIL.Image.Image | np.ndarray | torch.Tensor
OUTPUT_TYPES = ("pil", "np", "pt", "latent")
# Pickled weights are never read: a folder fetched from the Hub skips them.
PICKLE_PATTERNS = ["*.bin", "*.pt", "*.pth", "*.ckpt", "*.pkl"]


def _own_module_name(module: str) -> str | None:
    """The bare name of `module` (e.g. `modeling_seed_null_embedding`) when it belongs to this package, else None."""
    package, _, name = module.rpartition(".")
    return name if package == __package__ else None


def _copy_module_code(defined_class: type, folder: str | os.PathLike) -> None:
    """Copy the file that defines `defined_class`, and the files it imports relatively, into `folder`."""
    module_file = inspect.getfile(defined_class)
    os.makedirs(folder, exist_ok=True)
    for file in [module_file, *get_relative_import_files(module_file)]:
        shutil.copyfile(file, Path(folder) / Path(file).name)


class SeedDecodePipeline(DiffusionPipeline, StableDiffusionMixin, StableDiffusionLoraLoaderMixin):
    r"""
    Draws pictures from SEED codes: the [`SeedVisionTokenizer`] turns 32 codes into 77x768 generation embeddings that
    condition a Stable Diffusion v1.x UNet in place of CLIP text embeddings, with the CLIP embedding of `""` as the
    unconditional branch of classifier-free guidance. Called with images it tokenizes them first (reconstruction).

    The denoising is Stable Diffusion's: the same latent preparation, scheduler calls, guidance and VAE decoding, so
    that for the same UNet, VAE, scheduler and generator it gives exactly what [`StableDiffusionPipeline`] gives with
    `prompt_embeds=vision_tokenizer.embed_codes(codes)` and `negative_prompt_embeds=null_embedding()`.

    Args:
        vae ([`AutoencoderKL`]):
            Variational auto-encoder that decodes latents into pictures.
        unet ([`UNet2DConditionModel`]):
            Stable Diffusion v1.x UNet (cross-attention dimension 768) that denoises the latents.
        null_embedding ([`SeedNullEmbedding`]):
            The unconditional embedding: the CLIP text embedding of `""` of the Stable Diffusion model.
        scheduler ([`SchedulerMixin`], *optional*):
            Any scheduler compatible with the UNet; defaults to [`stable_diffusion_v1_4_scheduler`] (PNDM as in
            Stable Diffusion v1.4, whose 50 steps are the CompVis PLMS steps of the original SEED code).
        vision_tokenizer ([`SeedVisionTokenizer`], *optional*):
            Turns codes into generation embeddings and images into codes (images are prepared by a
            [`SeedImageProcessor`] at the tokenizer's image size). Only calls with `generation_embeds` run without it.
        safety_checker ([`StableDiffusionSafetyChecker`], *optional*):
            Stable Diffusion's safety checker, applied as [`StableDiffusionPipeline`] does when given. None by default.
        feature_extractor ([`~transformers.CLIPImageProcessor`], *optional*):
            Prepares pictures for the safety checker; required with it.
    """

    model_cpu_offload_seq = "vision_tokenizer->unet->vae"
    _optional_components = ["scheduler", "vision_tokenizer", "safety_checker", "feature_extractor"]
    # The null embedding has no parameters for an offload hook to move (and is tiny): it stays on the accelerator.
    _exclude_from_cpu_offload = ["safety_checker", "null_embedding"]
    _callback_tensor_inputs = ["latents", "generation_embeds", "negative_generation_embeds"]

    # Stable Diffusion's own steps, so that the two pipelines cannot drift apart.
    prepare_latents = StableDiffusionPipeline.prepare_latents
    prepare_extra_step_kwargs = StableDiffusionPipeline.prepare_extra_step_kwargs
    run_safety_checker = StableDiffusionPipeline.run_safety_checker

    # The SEED components are annotated with their base classes: this module imports none of the tokenizer's code,
    # and where a folder loads without seed_hf, diffusers imports each component's module again after the pipeline's,
    # so an exact class would be a different object than the component's and draw a type warning.
    def __init__(
        self,
        vae: AutoencoderKL,
        unet: UNet2DConditionModel,
        null_embedding: ModelMixin,
        scheduler: KarrasDiffusionSchedulers | None = None,
        vision_tokenizer: PreTrainedModel | None = None,
        safety_checker: StableDiffusionSafetyChecker | None = None,
        feature_extractor: CLIPImageProcessor | None = None,
    ):
        super().__init__()
        if safety_checker is not None and feature_extractor is None:
            raise ValueError(
                "A `safety_checker` needs a `feature_extractor` (CLIPImageProcessor) to prepare its input"
            )
        self.register_modules(
            vae=vae,
            unet=unet,
            null_embedding=null_embedding,
            scheduler=scheduler if scheduler is not None else stable_diffusion_v1_4_scheduler(),
            vision_tokenizer=vision_tokenizer,
            safety_checker=safety_checker,
            feature_extractor=feature_extractor,
        )
        self.vae_scale_factor = 2 ** (len(self.vae.config.block_out_channels) - 1)
        self.image_processor = VaeImageProcessor(vae_scale_factor=self.vae_scale_factor)

    def save_pretrained(self, save_directory: str | os.PathLike, *args, **kwargs):
        """
        [`~DiffusionPipeline.save_pretrained`], plus the code of the pipeline (at the root) and of each SEED component
        (in its folder), which `model_index.json` names as `[module, class]`: the layout diffusers loads custom code
        from, so that `DiffusionPipeline.from_pretrained(folder, trust_remote_code=True)` needs no seed_hf.
        """
        _copy_module_code(type(self), save_directory)
        for name, component in self.components.items():
            if component is not None and _own_module_name(type(component).__module__):
                _copy_module_code(type(component), Path(save_directory) / name)
        super().save_pretrained(save_directory, *args, **kwargs)

    def to_json_string(self) -> str:
        """`model_index.json`, naming the pipeline and the SEED components by the code files a saved folder carries."""
        index = json.loads(super().to_json_string())
        index["_class_name"] = [type(self).__module__.rpartition(".")[2], type(self).__name__]
        for name, entry in index.items():
            if isinstance(entry, list) and isinstance(entry[0], str) and _own_module_name(entry[0]):
                index[name] = [_own_module_name(entry[0]), entry[1]]
        return json.dumps(index, indent=2, sort_keys=True) + "\n"

    @classmethod
    def load_config(cls, pretrained_model_name_or_path: str | os.PathLike, *args, **kwargs):
        """
        [`~ConfigMixin.load_config`], with the `[module, class]` entries of a saved folder pointed back at this
        package's modules: this class loads a folder with the installed code and never runs the copy the folder
        carries (that copy is for `DiffusionPipeline.from_pretrained(..., trust_remote_code=True)`).
        """
        loaded = super().load_config(pretrained_model_name_or_path, *args, **kwargs)
        config = loaded[0] if isinstance(loaded, tuple) else loaded
        if isinstance(config.get("_class_name"), list):
            config["_class_name"] = config["_class_name"][1]
        for name, entry in config.items():
            if isinstance(entry, list) and isinstance(entry[0], str) and f"{__package__}.{entry[0]}" in sys.modules:
                config[name] = [f"{__package__}.{entry[0]}", entry[1]]
        return loaded

    @classmethod
    def download(cls, pretrained_model_name: str, **kwargs) -> str:
        """
        Fetch a saved pipeline from the Hub or the local cache without running the code it carries (diffusers' own
        `download` imports the pipeline module a folder names, which needs `trust_remote_code=True`).
        """
        hub_options = ("cache_dir", "force_download", "local_files_only", "token", "revision")
        options = {name: kwargs[name] for name in hub_options if kwargs.get(name) is not None}
        return snapshot_download(pretrained_model_name, ignore_patterns=PICKLE_PATTERNS, **options)

    def load_lora_weights(
        self,
        pretrained_model_name_or_path_or_dict: str | os.PathLike | dict[str, torch.Tensor],
        adapter_name: str | None = None,
        hotswap: bool = False,
        **kwargs,
    ):
        """
        Load a Stable Diffusion LoRA into the UNet, as [`StableDiffusionPipeline.load_lora_weights`] does. The pipeline
        has no text encoder (SEED embeddings condition the UNet), so the text-encoder layers of a LoRA are skipped,
        with a warning. Remove it with `unload_lora_weights()`; `fuse_lora`, `set_adapters` and the other methods of
        [`~loaders.StableDiffusionLoraLoaderMixin`] act on the UNet.

        Args:
            pretrained_model_name_or_path_or_dict (`str`, `os.PathLike` or `dict`):
                A Hub repo id, a folder, a `.safetensors` file or a state dict, in any format
                [`~loaders.StableDiffusionLoraLoaderMixin.lora_state_dict`] reads (diffusers, kohya, ...).
            adapter_name (`str`, *optional*):
                Name of the adapter; defaults to `default_{i}`.
            hotswap (`bool`, *optional*, defaults to `False`):
                Replace the weights of the already loaded adapter `adapter_name` in place.
            kwargs:
                Passed to `lora_state_dict` (`weight_name`, `subfolder`, `cache_dir`, ...), and `low_cpu_mem_usage`
                (defaults to `True`: the LoRA layers are created empty, then filled).
        """
        if isinstance(pretrained_model_name_or_path_or_dict, dict):
            pretrained_model_name_or_path_or_dict = pretrained_model_name_or_path_or_dict.copy()
        # diffusers' default with the peft and transformers versions seed_hf requires
        low_cpu_mem_usage = kwargs.pop("low_cpu_mem_usage", True)
        state_dict, network_alphas, metadata = self.lora_state_dict(
            pretrained_model_name_or_path_or_dict, return_lora_metadata=True, **kwargs
        )
        if not state_dict or not all("lora" in key for key in state_dict):
            raise ValueError("Expected LoRA weights: every parameter name of the checkpoint must contain 'lora'")
        text_encoder_keys = [key for key in state_dict if key.startswith(f"{self.text_encoder_name}.")]
        if text_encoder_keys:
            logger.warning(
                f"Skipping the {len(text_encoder_keys)} text-encoder weights of the LoRA: this pipeline has no text "
                "encoder, only its UNet layers are loaded"
            )
        self.load_lora_into_unet(
            state_dict,
            network_alphas=network_alphas,
            unet=self.unet,
            adapter_name=adapter_name,
            metadata=metadata,
            _pipeline=self,
            low_cpu_mem_usage=low_cpu_mem_usage,
            hotswap=hotswap,
        )

    @property
    def default_size(self) -> tuple[int, int]:
        """`(height, width)` the UNet was trained at: its `sample_size` times the VAE scale factor (512 for SD v1)."""
        sample_size = self.unet.config.sample_size
        height, width = (sample_size, sample_size) if isinstance(sample_size, int) else sample_size
        return height * self.vae_scale_factor, width * self.vae_scale_factor

    @property
    def guidance_scale(self) -> float:
        return self._guidance_scale

    @property
    def do_classifier_free_guidance(self) -> bool:
        return self._guidance_scale > 1

    @property
    def num_timesteps(self) -> int:
        return self._num_timesteps

    @staticmethod
    def _as_codes(codes: torch.Tensor | Sequence[Sequence[int]], name: str) -> torch.Tensor:
        """A tensor of `codes` (a list of lists of ints is converted), raising a ValueError naming `name`."""
        if isinstance(codes, torch.Tensor):
            return codes
        try:
            return torch.tensor(codes)
        except (TypeError, ValueError, RuntimeError) as error:
            raise ValueError(
                f"`{name}` must be a LongTensor of shape (batch_size, num_query_tokens) or a list of equally long "
                f"lists of ints, could not convert it: {error}"
            ) from error

    @staticmethod
    def _num_images(image: PipelineImage | list[PipelineImage]) -> int:
        """How many images `image` holds: a list, a 4-D array or tensor (a batch), or a single image."""
        if isinstance(image, (list, tuple)):
            return len(image)
        return image.shape[0] if isinstance(image, (np.ndarray, torch.Tensor)) and image.ndim == 4 else 1

    def check_inputs(
        self,
        codes,
        image,
        generation_embeds,
        negative_codes,
        height,
        width,
        num_inference_steps,
        guidance_scale,
        num_images_per_prompt,
        generator,
        latents,
        output_type,
        callback_on_step_end_tensor_inputs,
    ):
        """Raise a ValueError naming the expectation for any input the pipeline cannot decode as asked."""
        inputs = {"codes": codes, "image": image, "generation_embeds": generation_embeds}
        given = [name for name, value in inputs.items() if value is not None]
        if len(given) != 1:
            raise ValueError(
                "Pass exactly one of `codes`, `image` or `generation_embeds`, got "
                + (", ".join(f"`{name}`" for name in given) if given else "none")
            )
        if self.vision_tokenizer is None and (codes is not None or image is not None or negative_codes is not None):
            raise ValueError(
                "`codes`, `image` and `negative_codes` need a `vision_tokenizer`; without one pass `generation_embeds`"
            )

        if codes is not None:
            self._check_codes(codes, "codes")
            batch_size = len(codes)
        elif image is not None:
            images = image if isinstance(image, (list, tuple)) else [image]
            if not images or not all(isinstance(item, PipelineImage) for item in images):
                got = [type(item).__name__ for item in images] if images is image else type(image).__name__
                raise ValueError(
                    f"`image` must be a PIL image, a numpy array, a torch tensor or a non-empty list of them, got {got}"
                )
            batch_size = self._num_images(image)
        else:
            expected = tuple(self.null_embedding.embedding.shape[1:])
            if (
                not isinstance(generation_embeds, torch.Tensor)
                or not generation_embeds.is_floating_point()
                or generation_embeds.ndim != 3
                or tuple(generation_embeds.shape[1:]) != expected
            ):
                got = (
                    f"{tuple(generation_embeds.shape)} {generation_embeds.dtype}"
                    if isinstance(generation_embeds, torch.Tensor)
                    else type(generation_embeds).__name__
                )
                raise ValueError(
                    f"`generation_embeds` must be a floating-point tensor of shape (batch_size, {expected[0]}, "
                    f"{expected[1]}), got {got}"
                )
            if not torch.isfinite(generation_embeds).all():
                raise ValueError("`generation_embeds` contain NaN or infinite values: they would draw blank pictures")
            batch_size = generation_embeds.shape[0]
        if batch_size == 0:
            raise ValueError(f"`{given[0]}` holds no input: pass at least one")

        if negative_codes is not None:
            if not guidance_scale > 1:
                raise ValueError(
                    f"`negative_codes` only act through classifier-free guidance: use `guidance_scale` > 1, got "
                    f"{guidance_scale}"
                )
            self._check_codes(negative_codes, "negative_codes")
            if len(negative_codes) != batch_size:
                raise ValueError(
                    f"`negative_codes` must have one row per input ({batch_size}), got {len(negative_codes)}"
                )

        if not all(isinstance(size, int) and size > 0 and size % 8 == 0 for size in (height, width)):
            raise ValueError(f"`height` and `width` must be positive multiples of 8, got {height} and {width}")
        if not isinstance(num_inference_steps, int) or num_inference_steps < 1:
            raise ValueError(f"`num_inference_steps` must be a positive int, got {num_inference_steps}")
        if not isinstance(num_images_per_prompt, int) or num_images_per_prompt < 1:
            raise ValueError(f"`num_images_per_prompt` must be a positive int, got {num_images_per_prompt}")
        total = batch_size * num_images_per_prompt
        if isinstance(generator, list) and len(generator) != total:
            raise ValueError(
                f"A list of generators needs one per picture (batch size {batch_size} x num_images_per_prompt "
                f"{num_images_per_prompt} = {total}), got {len(generator)}"
            )
        if latents is not None:
            expected = (
                total,
                self.unet.config.in_channels,
                height // self.vae_scale_factor,
                width // self.vae_scale_factor,
            )
            if not isinstance(latents, torch.Tensor) or tuple(latents.shape) != expected:
                got = tuple(latents.shape) if isinstance(latents, torch.Tensor) else type(latents).__name__
                raise ValueError(f"`latents` must be a tensor of shape {expected}, got {got}")
        if output_type not in OUTPUT_TYPES:
            raise ValueError(f"`output_type` must be one of {OUTPUT_TYPES}, got {output_type!r}")
        unknown = [name for name in callback_on_step_end_tensor_inputs if name not in self._callback_tensor_inputs]
        if unknown:
            raise ValueError(
                f"`callback_on_step_end_tensor_inputs` must be among {self._callback_tensor_inputs}, got {unknown}"
            )

    def _check_codes(self, codes, name: str) -> None:
        codes = self._as_codes(codes, name)
        try:
            self.vision_tokenizer._check_codes(codes)
        except ValueError as error:
            raise ValueError(f"`{name}`: {error}") from error

    def embed_codes(self, codes: torch.LongTensor) -> torch.Tensor:
        """
        `vision_tokenizer.embed_codes(codes)`, run through the tokenizer's offload hook (as diffusers runs
        `vae.decode`), so that model CPU offload moves the tokenizer onto the accelerator for it.
        """
        return apply_forward_hook(type(self.vision_tokenizer).embed_codes)(self.vision_tokenizer, codes)

    def tokenize_image(self, image: PipelineImage | list[PipelineImage]) -> tuple[torch.LongTensor, torch.Tensor]:
        """
        Tokenize images with the vision tokenizer.

        Returns:
            `tuple(torch.LongTensor, torch.FloatTensor)`: the codes, shape `(batch_size, num_query_tokens)`, and their
            generation embeddings, shape `(batch_size, num_reverse_tokens, generation_embed_dim)`.
        """
        image_size = self.vision_tokenizer.config.vision_config.image_size
        processor = SeedImageProcessor(size={"height": image_size, "width": image_size})
        pixel_values = processor(images=image, return_tensors="pt").pixel_values
        # The forward call (not `encode`) lets model CPU offload move the tokenizer onto the accelerator.
        output = self.vision_tokenizer(pixel_values)
        return output.codes, output.generation_embeds

    def prepare_generation_embeds(
        self,
        generation_embeds: torch.Tensor,
        negative_codes: torch.LongTensor | None,
        device: torch.device,
        num_images_per_prompt: int,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """
        Conditional and (under guidance) unconditional embeddings in the UNet's dtype on `device`, each input repeated
        `num_images_per_prompt` times, as `StableDiffusionPipeline.encode_prompt` does with given embeddings.
        """
        dtype = self.unet.dtype
        batch_size = generation_embeds.shape[0]
        generation_embeds = generation_embeds.to(device=device, dtype=dtype).repeat_interleave(
            num_images_per_prompt, dim=0
        )
        if not self.do_classifier_free_guidance:
            return generation_embeds, None
        if negative_codes is not None:
            negative = self.embed_codes(self._as_codes(negative_codes, "negative_codes"))
        else:
            negative = self.null_embedding().expand(batch_size, -1, -1)
        negative = negative.to(device=device, dtype=dtype).repeat_interleave(num_images_per_prompt, dim=0)
        return generation_embeds, negative

    @torch.no_grad()
    @replace_example_docstring(EXAMPLE_DOC_STRING)
    def __call__(
        self,
        codes: torch.LongTensor | list[list[int]] | None = None,
        image: PipelineImage | list[PipelineImage] | None = None,
        generation_embeds: torch.Tensor | None = None,
        negative_codes: torch.LongTensor | list[list[int]] | None = None,
        height: int | None = None,
        width: int | None = None,
        num_inference_steps: int = 50,
        guidance_scale: float = 7.5,
        num_images_per_prompt: int = 1,
        eta: float = 0.0,
        generator: torch.Generator | list[torch.Generator] | None = None,
        latents: torch.Tensor | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
        callback_on_step_end: Callable[[DiffusionPipeline, int, int, dict], dict]
        | PipelineCallback
        | MultiPipelineCallbacks
        | None = None,
        callback_on_step_end_tensor_inputs: Sequence[str] = ("latents",),
    ) -> SeedDecodePipelineOutput | tuple:
        r"""
        Draw pictures from SEED codes, from the codes of images, or from generation embeddings (exactly one of them).

        Args:
            codes (`torch.LongTensor` of shape `(batch_size, num_query_tokens)` or `list[list[int]]`, *optional*):
                SEED codes in `[0, codebook_size)`.
            image (`PIL.Image.Image`, `np.ndarray`, `torch.Tensor` or a list of them, *optional*):
                Images to reconstruct: tokenized by the vision tokenizer, then drawn from their codes. Any input
                [`SeedImageProcessor`] accepts; a 4-D array or tensor is a batch.
            generation_embeds (`torch.FloatTensor` of shape `(batch_size, 77, 768)`, *optional*):
                Generation embeddings, e.g. from `vision_tokenizer.embed_codes` or a model that predicts them.
            negative_codes (`torch.LongTensor` of shape `(batch_size, num_query_tokens)`, *optional*):
                Codes whose embeddings replace the null embedding as the unconditional branch of guidance.
            height (`int`, *optional*, defaults to `unet.config.sample_size * vae_scale_factor` (512 for SD v1)):
                Height of the pictures in pixels, a multiple of 8.
            width (`int`, *optional*, defaults to `unet.config.sample_size * vae_scale_factor` (512 for SD v1)):
                Width of the pictures in pixels, a multiple of 8.
            num_inference_steps (`int`, *optional*, defaults to 50):
                Number of denoising steps.
            guidance_scale (`float`, *optional*, defaults to 7.5):
                Classifier-free guidance weight; guidance is on when it is above 1.
            num_images_per_prompt (`int`, *optional*, defaults to 1):
                Number of pictures per input.
            eta (`float`, *optional*, defaults to 0.0):
                DDIM's eta; only schedulers whose `step` takes `eta` use it.
            generator (`torch.Generator` or `list[torch.Generator]`, *optional*):
                Generator(s) for the initial noise (and stochastic schedulers); a list needs one per picture.
            latents (`torch.Tensor`, *optional*):
                Initial noise of shape `(batch_size * num_images_per_prompt, unet.in_channels, height // 8,
                width // 8)`, used instead of drawing it.
            output_type (`str`, *optional*, defaults to `"pil"`):
                `"pil"`, `"np"`, `"pt"` or `"latent"` (the denoised latents, not decoded).
            return_dict (`bool`, *optional*, defaults to `True`):
                Whether to return a [`SeedDecodePipelineOutput`] rather than a tuple.
            callback_on_step_end (`Callable`, `PipelineCallback` or `MultiPipelineCallbacks`, *optional*):
                Called after each step as `callback_on_step_end(pipe, step, timestep, callback_kwargs)`; the tensors it
                returns replace those of the same name.
            callback_on_step_end_tensor_inputs (`Sequence[str]`, *optional*, defaults to `("latents",)`):
                Tensors passed in `callback_kwargs`, among `_callback_tensor_inputs`.

        Examples:

        Returns:
            [`SeedDecodePipelineOutput`] or `tuple`: with `return_dict=False` the tuple `(images, codes,
            nsfw_content_detected)`.
        """
        if isinstance(callback_on_step_end, (PipelineCallback, MultiPipelineCallbacks)):
            callback_on_step_end_tensor_inputs = callback_on_step_end.tensor_inputs

        # 0. Default height and width to the UNet's
        default_height, default_width = self.default_size
        height = default_height if height is None else height
        width = default_width if width is None else width

        # 1. Check inputs
        self.check_inputs(
            codes,
            image,
            generation_embeds,
            negative_codes,
            height,
            width,
            num_inference_steps,
            guidance_scale,
            num_images_per_prompt,
            generator,
            latents,
            output_type,
            callback_on_step_end_tensor_inputs,
        )
        self._guidance_scale = guidance_scale

        # 2. Define call parameters
        device = self._execution_device

        # 3. Encode the condition
        if image is not None:
            codes, generation_embeds = self.tokenize_image(image)
        elif codes is not None:
            codes = self._as_codes(codes, "codes")
            generation_embeds = self.embed_codes(codes)
        batch_size = generation_embeds.shape[0]
        generation_embeds, negative_generation_embeds = self.prepare_generation_embeds(
            generation_embeds, negative_codes, device, num_images_per_prompt
        )

        # 4. Prepare timesteps
        timesteps, num_inference_steps = retrieve_timesteps(self.scheduler, num_inference_steps, device)

        # 5. Prepare latent variables
        latents = self.prepare_latents(
            batch_size * num_images_per_prompt,
            self.unet.config.in_channels,
            height,
            width,
            generation_embeds.dtype,
            device,
            generator,
            latents,
        )

        # 6. Prepare extra step kwargs
        extra_step_kwargs = self.prepare_extra_step_kwargs(generator, eta)

        # 7. Denoising loop
        num_warmup_steps = len(timesteps) - num_inference_steps * self.scheduler.order
        self._num_timesteps = len(timesteps)
        with self.progress_bar(total=num_inference_steps) as progress_bar:
            for i, t in enumerate(timesteps):
                if self.do_classifier_free_guidance:
                    latent_model_input = torch.cat([latents] * 2)
                    encoder_hidden_states = torch.cat([negative_generation_embeds, generation_embeds])
                else:
                    latent_model_input, encoder_hidden_states = latents, generation_embeds
                latent_model_input = self.scheduler.scale_model_input(latent_model_input, t)

                noise_pred = self.unet(
                    latent_model_input, t, encoder_hidden_states=encoder_hidden_states, return_dict=False
                )[0]
                if self.do_classifier_free_guidance:
                    noise_pred_uncond, noise_pred_cond = noise_pred.chunk(2)
                    noise_pred = noise_pred_uncond + self.guidance_scale * (noise_pred_cond - noise_pred_uncond)

                # compute the previous noisy sample x_t -> x_t-1
                latents = self.scheduler.step(noise_pred, t, latents, **extra_step_kwargs, return_dict=False)[0]

                if callback_on_step_end is not None:
                    step_tensors = {
                        "latents": latents,
                        "generation_embeds": generation_embeds,
                        "negative_generation_embeds": negative_generation_embeds,
                    }
                    callback_outputs = callback_on_step_end(
                        self, i, t, {name: step_tensors[name] for name in callback_on_step_end_tensor_inputs}
                    )
                    latents = callback_outputs.pop("latents", latents)
                    generation_embeds = callback_outputs.pop("generation_embeds", generation_embeds)
                    negative_generation_embeds = callback_outputs.pop(
                        "negative_generation_embeds", negative_generation_embeds
                    )

                if i == len(timesteps) - 1 or ((i + 1) > num_warmup_steps and (i + 1) % self.scheduler.order == 0):
                    progress_bar.update()

        # 8. Decode the latents
        if output_type == "latent":
            images, has_nsfw_concept = latents, None
        else:
            images = self.vae.decode(latents / self.vae.config.scaling_factor, return_dict=False, generator=generator)[
                0
            ]
            images, has_nsfw_concept = self.run_safety_checker(images, device, generation_embeds.dtype)
        do_denormalize = (
            [True] * images.shape[0] if has_nsfw_concept is None else [not nsfw for nsfw in has_nsfw_concept]
        )
        images = self.image_processor.postprocess(images, output_type=output_type, do_denormalize=do_denormalize)

        # Offload all models
        self.maybe_free_model_hooks()

        if not return_dict:
            return images, codes, has_nsfw_concept
        return SeedDecodePipelineOutput(images=images, codes=codes, nsfw_content_detected=has_nsfw_concept)


__all__ = ["SeedDecodePipeline", "SeedDecodePipelineOutput", "SeedNullEmbedding", "stable_diffusion_v1_4_scheduler"]
