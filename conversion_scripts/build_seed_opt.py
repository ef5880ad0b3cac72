"""Build a SEED-OPT folder from OPT weights, the extended tokenizer and a SEED vision tokenizer.

python conversion_scripts/build_seed_opt.py --opt facebook/opt-2.7b --tokenizer seed-opt-tokenizer \
    --vision-tokenizer seed-tokenizer-v1 --output seed-opt-2.7b

The OPT embeddings (and the head tied to them) are resized to the extended vocabulary; the rows of the added tokens
(`<img>`, `</img>`, `<image>` and the codes) start at the mean of the base vocabulary's rows, so they begin as
"average" tokens that LoRA fine-tuning (`seed-hf finetune`) then moves. The folder holds `config.json`,
`generation_config.json` (captioning: beam search, 5 beams), `model.safetensors`, the tokenizer, the image processor
and `processor_config.json`; it is written under a temporary name and renamed into place.
"""

import argparse
import sys
from pathlib import Path

import torch
from transformers import AutoImageProcessor, OPTForCausalLM, PreTrainedConfig, PreTrainedModel

from seed_hf import SeedOPTConfig, SeedOPTForConditionalGeneration, SeedVisionTokenizer
from seed_hf.cli import report_errors
from seed_hf.processing_seed import SeedProcessor
from seed_hf.tokenization_seed_opt import SeedOPTTokenizer
from seed_hf.utils import (
    atomic_output_dir,
    bundled_model_card,
    check_output_dir,
    check_pretrained_source,
    write_model_card,
)


def load_checked(model_class: type[PreTrainedModel], source: str | Path, what: str, **kwargs) -> PreTrainedModel:
    """
    `model_class.from_pretrained(source, **kwargs)`, refusing a checkpoint of another architecture and any missing,
    unexpected or mismatched weight (which `from_pretrained` would report and fill with a random init).
    """
    config, _ = PreTrainedConfig.get_config_dict(source, local_files_only=kwargs.get("local_files_only", False))
    expected, found = model_class.config_class.model_type, config.get("model_type")
    if found != expected:
        architectures = ", ".join(config.get("architectures") or [])
        holds = f"a model of type {found!r} ({architectures})" if found else "no model config (config.json)"
        raise ValueError(f"{what}: {source} holds {holds}; expected a model of type {expected!r}")
    model, loading_info = model_class.from_pretrained(source, output_loading_info=True, **kwargs)
    problems = [
        f"{len(keys)} {kind.removesuffix('_keys')} weights (e.g. {sorted(keys)[0]})"
        for kind, keys in loading_info.items()
        if kind.endswith("_keys") and keys
    ]
    if problems:
        raise ValueError(
            f"{what}: the weights in {source} do not match its {expected} config: {'; '.join(problems)}. Refusing to "
            "build on randomly initialised weights"
        )
    return model


def first_added_id(tokenizer: SeedOPTTokenizer) -> int:
    """The smallest id the SEED extension added to the base OPT vocabulary."""
    return min(
        tokenizer.image_token_start_id, tokenizer.boi_token_id, tokenizer.eoi_token_id, tokenizer.image_token_id
    )


@torch.no_grad()
def build_seed_opt(
    opt: str | Path,
    tokenizer: str | Path,
    vision_tokenizer: str | Path,
    dtype: torch.dtype = torch.float32,
) -> tuple[SeedOPTForConditionalGeneration, SeedProcessor]:
    r"""
    Assemble SEED-OPT in memory.

    Args:
        opt (`str` or `Path`):
            An OPT causal LM: a folder or a Hub id such as `"facebook/opt-2.7b"`.
        tokenizer (`str` or `Path`):
            A built [`SeedOPTTokenizer`] folder (`conversion_scripts/build_seed_opt_tokenizer.py`).
        vision_tokenizer (`str` or `Path`):
            A [`SeedVisionTokenizer`] folder with its image processor (`seed-hf convert`).
        dtype (`torch.dtype`, *optional*, defaults to `torch.float32`):
            The dtype of the language model.

    Returns:
        `tuple(SeedOPTForConditionalGeneration, SeedProcessor)`.
    """
    # Every source is checked before anything loads: a wrong or unreachable one fails at once.
    local_tokenizer = check_pretrained_source(tokenizer, "--tokenizer", "tokenizer_config.json")
    local_vision = check_pretrained_source(vision_tokenizer, "--vision-tokenizer", "config.json")
    local_opt = check_pretrained_source(opt, "--opt", "config.json")
    text_tokenizer = SeedOPTTokenizer.from_pretrained(tokenizer, local_files_only=local_tokenizer)
    if text_tokenizer.image_token_start_id is None:
        raise ValueError(
            f"{tokenizer} is a tokenizer without SEED image tokens; build it with build_seed_opt_tokenizer"
        )
    vision = load_checked(
        SeedVisionTokenizer,
        vision_tokenizer,
        "--vision-tokenizer",
        use_safetensors=True,
        local_files_only=local_vision,
    )
    image_processor = AutoImageProcessor.from_pretrained(vision_tokenizer, local_files_only=local_vision)
    if (text_tokenizer.num_image_tokens, text_tokenizer.image_seq_length) != (
        vision.config.codebook_size,
        vision.config.num_query_tokens,
    ):
        raise ValueError(
            f"The tokenizer has {text_tokenizer.num_image_tokens} image tokens, {text_tokenizer.image_seq_length} per "
            f"image, but the vision tokenizer has a codebook of {vision.config.codebook_size} and "
            f"{vision.config.num_query_tokens} codes per image"
        )
    language_model = load_checked(OPTForCausalLM, opt, "--opt", dtype=dtype, local_files_only=local_opt)
    old_rows = first_added_id(text_tokenizer)
    if old_rows > language_model.config.vocab_size:
        raise ValueError(
            f"The tokenizer's base vocabulary ({old_rows} tokens) is larger than the OPT embeddings "
            f"({language_model.config.vocab_size} rows): the tokenizer was not built from this model's tokenizer"
        )
    language_model.resize_token_embeddings(len(text_tokenizer), mean_resizing=False)
    embeddings = language_model.get_input_embeddings().weight
    embeddings[old_rows:] = embeddings[:old_rows].mean(0)

    config = SeedOPTConfig.from_text_tokenizer(
        text_tokenizer, language_model.config.to_dict(), vision.config.to_dict()
    )
    model = SeedOPTForConditionalGeneration(config).to(dtype)
    model.model.load_state_dict(language_model.model.state_dict())
    model.vision_tokenizer.load_state_dict(vision.state_dict())
    model.vision_tokenizer.to(vision.dtype)
    return model, SeedProcessor(image_processor, text_tokenizer)


def save_seed_opt(
    model: SeedOPTForConditionalGeneration,
    processor: SeedProcessor,
    output: str | Path,
    overwrite: bool = False,
    model_card: str | Path | None = None,
) -> Path:
    """Write model, processor and model card to `output` (safetensors), under a temporary name renamed into place."""
    with atomic_output_dir(output, overwrite) as staging:
        model.save_pretrained(staging)
        processor.save_pretrained(staging)
        write_model_card(model_card, staging)
    return Path(output)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--opt", required=True, help="OPT causal LM: folder or Hub id (facebook/opt-2.7b)")
    parser.add_argument("--tokenizer", required=True, help="SeedOPTTokenizer folder (build_seed_opt_tokenizer.py)")
    parser.add_argument("--vision-tokenizer", required=True, help="SeedVisionTokenizer folder (seed-hf convert)")
    parser.add_argument("--output", required=True, help="folder to write")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"], help="LM dtype")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    args = parser.parse_args(argv)

    def build() -> None:
        check_output_dir(args.output, args.overwrite)
        model, processor = build_seed_opt(
            args.opt, args.tokenizer, args.vision_tokenizer, dtype=getattr(torch, args.dtype)
        )
        save_seed_opt(
            model, processor, args.output, overwrite=args.overwrite, model_card=bundled_model_card("seed_opt.md")
        )
        print(f"wrote {args.output}")

    return report_errors(build)


if __name__ == "__main__":
    sys.exit(main())
