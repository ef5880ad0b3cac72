"""seed_hf: the SEED visual tokenizer (arXiv 2307.08041) for transformers and diffusers."""

from transformers import (
    AutoConfig,
    AutoImageProcessor,
    AutoModel,
    AutoModelForCausalLM,
    AutoModelForImageTextToText,
    AutoProcessor,
    AutoTokenizer,
)

from .configuration_seed import SeedOPTConfig, SeedVisionTokenizerConfig
from .generation_seed_opt import SeedImageBlockLogitsProcessor
from .image_processing_seed import SeedImageProcessor
from .modeling_seed_opt import SeedOPTForConditionalGeneration, SeedOPTPreTrainedModel
from .modeling_seed_training import SeedCausalQFormerForPreTraining, SeedVisionTokenizerForCodebookTraining
from .modeling_seed_vision_tokenizer import SeedPreTrainedModel, SeedVisionTokenizer, SeedVisionTokenizerOutput
from .pipeline_seed_decode import SeedDecodePipeline, SeedDecodePipelineOutput, SeedNullEmbedding
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
