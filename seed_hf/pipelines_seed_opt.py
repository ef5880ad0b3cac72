"""The "text-to-image" pipeline of SEED-OPT: prompt -> SEED codes (SEED-OPT) -> pictures (SeedDecodePipeline)."""

import os
from typing import TYPE_CHECKING

import torch
from transformers import Pipeline
from transformers.pipelines import PIPELINE_REGISTRY

from .modeling_seed_opt import SeedOPTForConditionalGeneration

if TYPE_CHECKING:
    from .pipeline_seed_decode import SeedDecodePipeline

TEXT_TO_IMAGE_TASK = "text-to-image"


class SeedTextToImagePipeline(Pipeline):
    r"""
    Text-to-image with SEED-OPT: the language model writes one image block of SEED codes after each prompt
    ([`SeedOPTForConditionalGeneration.generate_images`]) and a [`SeedDecodePipeline`] draws the codes.

    Args:
        model ([`SeedOPTForConditionalGeneration`]):
            A SEED-OPT model with image tokens.
        tokenizer ([`SeedOPTTokenizer`]):
            Its tokenizer (loaded from the model folder when the model is given by name).
        decode_pipeline ([`SeedDecodePipeline`] or `str` or `os.PathLike`):
            The pipeline that draws codes, or its folder.

    Call arguments: the prompt(s); `generate_kwargs` (a dict for `generate_images`, e.g. `{"do_sample": True}`);
    `num_inference_steps`, `guidance_scale`, `height`, `width`, `generator` for the decode pipeline. Each prompt gives
    a list of `{"image": PIL.Image.Image, "codes": torch.LongTensor}`, one per returned sequence.

    Example:

    ```python
    >>> import seed_hf  # registers the "text-to-image" task
    >>> from transformers import pipeline
    >>> painter = pipeline("text-to-image", model="seed-opt", decode_pipeline="seed-decode")  # doctest: +SKIP
    >>> painter("A photo of a red circle.")[0]["image"].save("circle.png")  # doctest: +SKIP
    ```
    """

    _load_processor = False
    _load_image_processor = False
    _load_feature_extractor = False
    _load_tokenizer = True

    def __init__(self, *args, decode_pipeline: "SeedDecodePipeline | str | os.PathLike | None" = None, **kwargs):
        if decode_pipeline is None:
            raise ValueError(
                "The text-to-image pipeline needs decode_pipeline=: a SeedDecodePipeline or its folder, which draws "
                "the codes SEED-OPT writes"
            )
        if isinstance(decode_pipeline, (str, os.PathLike)):
            # Imported here: registering the task at `import seed_hf` must not import diffusers.
            from .pipeline_seed_decode import SeedDecodePipeline

            decode_pipeline = SeedDecodePipeline.from_pretrained(decode_pipeline, use_safetensors=True)
        self.decode_pipeline = decode_pipeline
        super().__init__(*args, **kwargs)

    def _sanitize_parameters(
        self,
        generate_kwargs=None,
        num_inference_steps=None,
        guidance_scale=None,
        height=None,
        width=None,
        generator=None,
    ):
        decode_kwargs = {
            "num_inference_steps": num_inference_steps,
            "guidance_scale": guidance_scale,
            "height": height,
            "width": width,
            "generator": generator,
        }
        forward_kwargs = {"generate_kwargs": generate_kwargs} if generate_kwargs is not None else {}
        return {}, forward_kwargs, {key: value for key, value in decode_kwargs.items() if value is not None}

    def preprocess(self, prompt: str) -> dict[str, torch.Tensor]:
        if not isinstance(prompt, str):
            raise ValueError(f"text-to-image takes a prompt string or a list of them, got {type(prompt).__name__}")
        return self.tokenizer(prompt, return_tensors="pt")

    def _forward(self, model_inputs: dict[str, torch.Tensor], generate_kwargs: dict | None = None) -> dict:
        return {"codes": self.model.generate_images(**model_inputs, **(generate_kwargs or {}))}

    def postprocess(self, model_outputs: dict, **decode_kwargs) -> list[dict]:
        codes = model_outputs["codes"]
        images = self.decode_pipeline(codes=codes, output_type="pil", **decode_kwargs).images
        return [{"image": image, "codes": row} for image, row in zip(images, codes)]


PIPELINE_REGISTRY.register_pipeline(
    TEXT_TO_IMAGE_TASK, pipeline_class=SeedTextToImagePipeline, pt_model=SeedOPTForConditionalGeneration
)

__all__ = ["SeedTextToImagePipeline"]
