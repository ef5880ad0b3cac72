"""seed_hf: the SEED visual tokenizer (arXiv 2307.08041) for transformers and diffusers."""

from transformers import AutoConfig, AutoImageProcessor, AutoModel

from .configuration_seed import SeedOPTConfig, SeedVisionTokenizerConfig
from .image_processing_seed import SeedImageProcessor
from .modeling_seed_vision_tokenizer import SeedPreTrainedModel, SeedVisionTokenizer, SeedVisionTokenizerOutput

AutoConfig.register(SeedVisionTokenizerConfig.model_type, SeedVisionTokenizerConfig, exist_ok=True)
AutoConfig.register(SeedOPTConfig.model_type, SeedOPTConfig, exist_ok=True)
AutoModel.register(SeedVisionTokenizerConfig, SeedVisionTokenizer, exist_ok=True)
AutoImageProcessor.register(
    SeedVisionTokenizerConfig, image_processor_classes={"pil": SeedImageProcessor}, exist_ok=True
)

__all__ = [
    "SeedImageProcessor",
    "SeedOPTConfig",
    "SeedPreTrainedModel",
    "SeedVisionTokenizer",
    "SeedVisionTokenizerConfig",
    "SeedVisionTokenizerOutput",
]
