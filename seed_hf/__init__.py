"""
seed_hf: the SEED visual tokenizer (arXiv 2307.08041) for transformers and diffusers.

Importing it registers the transformers classes with the Auto classes and the "text-to-image" pipeline task; the
classes built on diffusers are imported on first use, so `import seed_hf` (and the `seed-hf` command line) does not
pay for diffusers, datasets or peft.
"""

import importlib
from typing import TYPE_CHECKING

from transformers import (
    AutoConfig,
    AutoImageProcessor,
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForImageTextToText,
    AutoModelForMultimodalLM,
    AutoProcessor,
    AutoTokenizer,
)

from .configuration_seed import SeedOPTConfig, SeedVisionTokenizerConfig
from .generation_seed_opt import SeedImageBlockLogitsProcessor
from .image_processing_seed import SeedImageProcessor
from .modeling_seed_opt import SeedOPTForConditionalGeneration, SeedOPTPreTrainedModel
from .modeling_seed_training import SeedCausalQFormerForPreTraining, SeedVisionTokenizerForCodebookTraining
from .modeling_seed_vision_tokenizer import SeedPreTrainedModel, SeedVisionTokenizer, SeedVisionTokenizerOutput
from .pipelines_seed_opt import SeedTextToImagePipeline
from .processing_seed import SeedProcessor
from .tokenization_seed_opt import SeedOPTTokenizer

AutoConfig.register(SeedVisionTokenizerConfig.model_type, SeedVisionTokenizerConfig, exist_ok=True)
AutoConfig.register(SeedOPTConfig.model_type, SeedOPTConfig, exist_ok=True)
AutoModel.register(SeedVisionTokenizerConfig, SeedVisionTokenizer, exist_ok=True)
AutoTokenizer.register(SeedOPTConfig, tokenizer_class=SeedOPTTokenizer, exist_ok=True)
AutoProcessor.register(SeedOPTConfig, SeedProcessor, exist_ok=True)
AutoModelForCausalLM.register(SeedOPTConfig, SeedOPTForConditionalGeneration, exist_ok=True)
AutoModelForImageTextToText.register(SeedOPTConfig, SeedOPTForConditionalGeneration, exist_ok=True)
AutoModelForMultimodalLM.register(SeedOPTConfig, SeedOPTForConditionalGeneration, exist_ok=True)
AutoImageProcessor.register(
    SeedVisionTokenizerConfig, image_processor_classes={"pil": SeedImageProcessor}, exist_ok=True
)
# Saved folders carry the code and an `auto_map`, so they load with trust_remote_code=True without seed_hf.
SeedVisionTokenizerConfig.register_for_auto_class()
SeedVisionTokenizer.register_for_auto_class("AutoModel")
SeedImageProcessor.register_for_auto_class("AutoImageProcessor")
SeedOPTConfig.register_for_auto_class()
SeedOPTForConditionalGeneration.register_for_auto_class("AutoModelForImageTextToText")
SeedOPTTokenizer.register_for_auto_class("AutoTokenizer")
SeedProcessor.register_for_auto_class("AutoProcessor")

# Submodule -> public names it defines, imported by `__getattr__` when first asked for (as transformers' lazy module).
_LAZY_IMPORT_STRUCTURE = {
    "pipeline_seed_decode": ["SeedDecodePipeline", "SeedDecodePipelineOutput", "SeedNullEmbedding"],
}
_LAZY_NAME_TO_MODULE = {name: module for module, names in _LAZY_IMPORT_STRUCTURE.items() for name in names}

if TYPE_CHECKING:
    from .pipeline_seed_decode import SeedDecodePipeline, SeedDecodePipelineOutput, SeedNullEmbedding


def __getattr__(name: str):
    if name not in _LAZY_NAME_TO_MODULE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_LAZY_NAME_TO_MODULE[name]}", __name__), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY_NAME_TO_MODULE))


__all__ = [
    "SeedCausalQFormerForPreTraining",
    "SeedDecodePipeline",
    "SeedDecodePipelineOutput",
    "SeedImageBlockLogitsProcessor",
    "SeedImageProcessor",
    "SeedNullEmbedding",
    "SeedOPTConfig",
    "SeedOPTTokenizer",
    "SeedProcessor",
    "SeedTextToImagePipeline",
    "SeedOPTForConditionalGeneration",
    "SeedOPTPreTrainedModel",
    "SeedPreTrainedModel",
    "SeedVisionTokenizer",
    "SeedVisionTokenizerConfig",
    "SeedVisionTokenizerForCodebookTraining",
    "SeedVisionTokenizerOutput",
]
