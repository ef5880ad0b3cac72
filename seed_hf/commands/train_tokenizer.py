"""`seed-hf train-tokenizer`: train the SEED tokenizer on image-caption pairs with Trainer, stage by stage.

Stage 1 trains the causal Q-Former with an image-text contrastive loss on the final causal embedding (from a
BLIP-2 retrieval checkpoint or a SEED folder, with `--text_tokenizer` BERT's tokenizer). Stage 2 freezes it and
trains the quantizer, the code decoder and a reconstruction branch; the generation embeddings are distilled onto
the Stable Diffusion text encoder given by `--text_encoder` (targets computed once and cached under `output_dir`).
Every TrainingArguments option is accepted as is (`--output_dir`, `--max_steps`, `--eval_strategy`,
`--resume_from_checkpoint checkpoint-N`, ...). The dataset is read as by `seed-hf finetune` (image and caption
columns). `--output_dir` ends with a normal SEED tokenizer folder plus `training_head.safetensors`.
"""

from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from transformers import (
    AutoConfig,
    AutoTokenizer,
    CLIPTextModel,
    TrainingArguments,
    set_seed,
)
from transformers.utils import cached_file

from ..image_processing_seed import SeedImageProcessor
from ..modeling_seed_training import (
    MAX_TEXT_LENGTH,
    SeedCausalQFormerForPreTraining,
    SeedVisionTokenizerForCodebookTraining,
)
from . import resolve_pretrained_path
from .training import (
    TrainingArgumentsAsJson,
    end_training,
    register_training_command,
    replace_pickled_training_arguments,
)

if TYPE_CHECKING:
    from ..training_seed_tokenizer import SeedTokenizerTrainer

STAGES = (1, 2)


@dataclass
class TrainTokenizerArguments:
    stage: int = field(metadata={"help": "1: causal Q-Former (contrastive); 2: codebook and decoder"})
    model: str = field(metadata={"help": "SEED tokenizer folder (stage 1 or 2) or BLIP-2 retrieval model (stage 1)"})
    dataset: str = field(metadata={"help": "dataset folder (save_to_disk) or a datasets.load_dataset path"})
    split: str | None = field(default=None, metadata={"help": "split to train on (needed when there are several)"})
    eval_split: str | None = field(default=None, metadata={"help": "split of the dataset to evaluate on"})
    eval_size: int = field(default=0, metadata={"help": "rows held out of the training split for evaluation"})
    image_column: str = field(default="image", metadata={"help": "column of the images"})
    text_column: str = field(default="caption", metadata={"help": "column of the captions"})
    text_tokenizer: str | None = field(
        default=None, metadata={"help": "stage 1: the Q-Former's BERT tokenizer (default: the --model folder's)"}
    )
    max_text_length: int = field(default=MAX_TEXT_LENGTH, metadata={"help": "stage 1: caption tokens kept"})
    text_encoder: str | None = field(
        default=None,
        metadata={"help": "stage 2: Stable Diffusion folder (text_encoder/, tokenizer/) or a CLIP text model"},
    )
    codebook_window: int = field(default=100, metadata={"help": "stage 2: steps over which code use is counted"})
    revive_dead_codes: bool = field(
        default=False, metadata={"help": "stage 2: re-seed unused codebook rows from recent latents every window"}
    )


def _is_blip2(model: str) -> bool:
    return AutoConfig.from_pretrained(model).model_type == "blip-2"


def _load_model(arguments: TrainTokenizerArguments, from_blip2: bool):
    if from_blip2:
        if arguments.stage != 1:
            raise ValueError(f"{arguments.model} is a BLIP-2 model: train stage 1 from it, then stage 2 from that")
        return SeedCausalQFormerForPreTraining.from_blip2(arguments.model)
    head = SeedCausalQFormerForPreTraining if arguments.stage == 1 else SeedVisionTokenizerForCodebookTraining
    return head.from_pretrained(arguments.model, use_safetensors=True)


def _image_processor(arguments: TrainTokenizerArguments, model, from_blip2: bool) -> SeedImageProcessor:
    """
    The SEED folder's image processor, else SEED's preprocessing at the model's image size (BLIP-2's is the same:
    bicubic resize, CLIP mean and std), so that every output folder has one for `seed-hf tokenize`.
    """
    has_processor = not from_blip2 and cached_file(
        arguments.model, "preprocessor_config.json", _raise_exceptions_for_missing_entries=False
    )
    if has_processor:
        return SeedImageProcessor.from_pretrained(arguments.model)
    size = model.config.vision_config.image_size
    return SeedImageProcessor(size={"height": size, "width": size})


def _text_tokenizer(arguments: TrainTokenizerArguments, model):
    source = arguments.text_tokenizer or arguments.model
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
    except (OSError, ValueError) as error:
        raise ValueError(
            f"Stage 1 needs the Q-Former's text tokenizer and {source} has none: pass --text_tokenizer "
            f"(e.g. a bert-base-uncased folder) ({error})"
        ) from error
    vocab_size = model.config.qformer_config.vocab_size
    if len(tokenizer) > vocab_size:
        raise ValueError(
            f"The text tokenizer has {len(tokenizer)} tokens, more than the Q-Former's vocab_size {vocab_size}"
        )
    return tokenizer


def _text_encoder(arguments: TrainTokenizerArguments, model):
    """The Stable Diffusion CLIP text encoder and its tokenizer, checked against the tokenizer's sizes."""
    if arguments.text_encoder is None:
        raise ValueError("Stage 2 needs --text_encoder: a Stable Diffusion folder or a CLIP text model")
    is_pipeline = (
        cached_file(
            arguments.text_encoder,
            "config.json",
            subfolder="text_encoder",
            _raise_exceptions_for_missing_entries=False,
            _raise_exceptions_for_connection_errors=False,
        )
        is not None
    )
    text_encoder = CLIPTextModel.from_pretrained(
        arguments.text_encoder, subfolder="text_encoder" if is_pipeline else "", use_safetensors=True
    )
    clip_tokenizer = AutoTokenizer.from_pretrained(
        arguments.text_encoder, subfolder="tokenizer" if is_pipeline else ""
    )
    config = model.config
    if text_encoder.config.hidden_size != config.generation_embed_dim:
        raise ValueError(
            f"The text encoder's hidden size {text_encoder.config.hidden_size} must equal the tokenizer's "
            f"generation_embed_dim {config.generation_embed_dim}"
        )
    if text_encoder.config.max_position_embeddings < config.num_reverse_tokens:
        raise ValueError(
            f"The text encoder reads {text_encoder.config.max_position_embeddings} tokens, fewer than the "
            f"tokenizer's num_reverse_tokens {config.num_reverse_tokens}"
        )
    return text_encoder, clip_tokenizer


def _datasets(arguments: TrainTokenizerArguments, training_arguments: TrainingArguments):
    """The training split and the evaluation one (a split of its own, `eval_size` rows held out, or none)."""
    from ..dataset_tokenization import load_input_dataset  # imports datasets: not at start-up

    if arguments.eval_split is not None and arguments.eval_size:
        raise ValueError("Pass --eval_split or --eval_size, not both")
    train_dataset = load_input_dataset(arguments.dataset, arguments.split)[0]
    eval_dataset = None
    if arguments.eval_split is not None:
        eval_dataset = load_input_dataset(arguments.dataset, arguments.eval_split)[0]
    elif arguments.eval_size:
        if not 0 < arguments.eval_size < len(train_dataset):
            raise ValueError(f"--eval_size must be in [1, {len(train_dataset) - 1}], got {arguments.eval_size}")
        parts = train_dataset.train_test_split(test_size=arguments.eval_size, seed=training_arguments.seed)
        train_dataset, eval_dataset = parts["train"], parts["test"]
    for dataset in (train_dataset, eval_dataset):
        for column in (arguments.image_column, arguments.text_column):
            if dataset is not None and column not in dataset.column_names:
                raise ValueError(f"{arguments.dataset} has no column {column!r}, only {dataset.column_names}")
    return train_dataset, eval_dataset


def train_tokenizer(
    arguments: TrainTokenizerArguments, training_arguments: TrainingArguments
) -> "SeedTokenizerTrainer":
    """Run one training stage and write the trained tokenizer folder (and its training head) to `output_dir`."""
    # datasets and Trainer: imported once training starts, so that --help answers quickly.
    from ..training_seed_tokenizer import (
        TEXT_TARGETS_COLUMN,
        CodebookMonitor,
        SeedTokenizerDataCollator,
        SeedTokenizerTrainer,
        add_text_targets,
    )

    # The quick checks first: the stage, then the model folder, before any dataset is read.
    if arguments.stage not in STAGES:
        raise ValueError(f"--stage must be one of {STAGES}, got {arguments.stage}")
    resolve_pretrained_path(arguments.model)
    from_blip2 = _is_blip2(arguments.model)
    set_seed(training_arguments.seed)  # the head's fresh weights are drawn while loading, before Trainer seeds
    train_dataset, eval_dataset = _datasets(arguments, training_arguments)
    model = _load_model(arguments, from_blip2)
    image_processor = _image_processor(arguments, model, from_blip2)
    callbacks = []
    if arguments.stage == 1:
        collator = SeedTokenizerDataCollator(
            image_processor,
            text_tokenizer=_text_tokenizer(arguments, model),
            image_column=arguments.image_column,
            text_column=arguments.text_column,
            return_caption_ids=True,
            max_text_length=arguments.max_text_length,
        )
    else:
        text_encoder, clip_tokenizer = _text_encoder(arguments, model)
        text_encoder.to(training_arguments.device)
        with_targets = partial(
            add_text_targets,
            text_encoder=text_encoder,
            clip_tokenizer=clip_tokenizer,
            max_length=model.config.num_reverse_tokens,
            text_column=arguments.text_column,
            cache_dir=Path(training_arguments.output_dir) / "text-targets-cache",
        )
        with training_arguments.main_process_first(desc="text-encoder targets"):
            train_dataset = with_targets(train_dataset)
            eval_dataset = eval_dataset if eval_dataset is None else with_targets(eval_dataset)
        del text_encoder
        collator = SeedTokenizerDataCollator(
            image_processor,
            image_column=arguments.image_column,
            text_column=arguments.text_column,
            return_caption_ids=True,
            text_targets_column=TEXT_TARGETS_COLUMN,
        )
        callbacks.append(
            CodebookMonitor(
                model.config.codebook_size,
                window=arguments.codebook_window,
                revive_dead_codes=arguments.revive_dead_codes,
                seed=training_arguments.seed,
            )
        )
    # The collator reads the raw columns, which Trainer would otherwise drop.
    training_arguments.remove_unused_columns = False
    trainer = SeedTokenizerTrainer(
        model=model,
        args=training_arguments,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
        data_collator=collator,
        callbacks=[TrainingArgumentsAsJson(), *callbacks],
    )
    trainer.train(resume_from_checkpoint=training_arguments.resume_from_checkpoint)
    if trainer.is_world_process_zero():
        model.save_tokenizer(training_arguments.output_dir)
        image_processor.save_pretrained(training_arguments.output_dir)
        replace_pickled_training_arguments(training_arguments.output_dir, training_arguments)
    end_training(trainer)
    return trainer


def register(subparsers) -> None:
    register_training_command(
        subparsers,
        "train-tokenizer",
        __doc__,
        TrainTokenizerArguments,
        train_tokenizer,
        "wrote the stage {arguments.stage} tokenizer to {training_arguments.output_dir}",
    )


__all__ = ["TrainTokenizerArguments", "train_tokenizer"]
