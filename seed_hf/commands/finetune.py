"""`seed-hf finetune`: LoRA fine-tuning of SEED-OPT on image-caption pairs, both directions, with Trainer.

Every TrainingArguments option is accepted as is (`--output_dir`, `--learning_rate`, `--num_train_epochs`,
`--per_device_train_batch_size`, `--use_cpu`, ...). The dataset is a folder written by `Dataset.save_to_disk`
(e.g. by `seed-hf tokenize`, with a `codes` column) or anything `datasets.load_dataset` reads (an image folder with
captions, parquet, JSON lines). The adapter (LoRA weights and the new token rows) and the processor are saved to
`--output_dir`; load them with `PeftModel.from_pretrained(model, output_dir)`. The model folder and the dataset's
columns are checked before training starts. Training arguments are written as `training_args.json`, not pickled;
checkpoints (`--save_strategy`, `--save_steps`) still hold Trainer's own pickles for `--resume_from_checkpoint`
(`optimizer.pt`, `scheduler.pt`, `rng_state.pth`).
"""

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from peft import get_peft_model
from transformers import AutoConfig, AutoProcessor, TrainingArguments

from ..configuration_seed import SeedOPTConfig, SeedVisionTokenizerConfig
from ..modeling_seed_opt import SeedOPTForConditionalGeneration
from ..processing_seed import SeedProcessor
from ..training_seed_opt import DIRECTIONS, SeedOPTDataCollator, seed_opt_lora_config
from ..utils import looks_like_local_path
from .training import (
    TrainingArgumentsAsJson,
    end_training,
    register_training_command,
    replace_pickled_training_arguments,
)

if TYPE_CHECKING:
    from datasets import Dataset
    from transformers import Trainer


@dataclass
class FinetuneArguments:
    model: str = field(metadata={"help": "SEED-OPT folder (conversion_scripts/build_seed_opt.py)"})
    dataset: str = field(metadata={"help": "dataset folder (save_to_disk) or a datasets.load_dataset path"})
    split: str | None = field(default=None, metadata={"help": "split to train on (needed when there are several)"})
    text_column: str = field(default="caption", metadata={"help": "column of the captions"})
    image_column: str = field(default="image", metadata={"help": "column of the images"})
    codes_column: str = field(default="codes", metadata={"help": "column of precomputed SEED codes"})
    directions: list[str] = field(default_factory=lambda: list(DIRECTIONS), metadata={"help": "directions to train"})
    max_length: int | None = field(default=None, metadata={"help": "longest sequence allowed"})
    lora_r: int = field(default=16, metadata={"help": "LoRA rank"})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA alpha"})
    lora_dropout: float = field(default=0.05, metadata={"help": "LoRA dropout"})
    target_modules: list[str] = field(
        default_factory=lambda: ["q_proj", "v_proj"], metadata={"help": "OPT layers that get LoRA"}
    )


def check_local_path(path: str, option: str) -> None:
    """
    Raise `FileNotFoundError` for a path that looks local (`./x`, `/x`, `~/x`, `a/b/c`) but does not exist, instead
    of letting it be tried as a Hub id.
    """
    if looks_like_local_path(path) and not Path(path).expanduser().exists():
        raise FileNotFoundError(f"{option} {path}: no such file or folder")


def check_seed_opt_config(model: str) -> SeedOPTConfig:
    """The config of `--model`, which must be a SEED-OPT folder (or Hub id), not a SEED tokenizer or a plain OPT."""
    if Path(model).is_dir() and not (Path(model) / "config.json").is_file():
        raise ValueError(
            f"--model {model} has no config.json: expected a SEED-OPT folder (conversion_scripts/build_seed_opt.py)"
        )
    config = AutoConfig.from_pretrained(model)
    if isinstance(config, SeedOPTConfig):
        return config
    if isinstance(config, SeedVisionTokenizerConfig):
        hint = (
            "it is the SEED image tokenizer; build SEED-OPT from it and OPT with conversion_scripts/build_seed_opt.py"
        )
    else:
        hint = "build SEED-OPT from an OPT model and the SEED tokenizer with conversion_scripts/build_seed_opt.py"
    raise ValueError(
        f"--model {model} holds a {config.model_type!r} model, expected a SEED-OPT model ({SeedOPTConfig.model_type!r}): "
        f"{hint}"
    )


def check_columns(dataset: "Dataset", arguments: FinetuneArguments, config: SeedOPTConfig) -> None:
    """The dataset has captions and, per row, codes or images; images need the SEED tokenizer inside the model."""
    columns = dataset.column_names
    if arguments.text_column not in columns:
        raise ValueError(
            f"--dataset {arguments.dataset} has no caption column {arguments.text_column!r} (columns: {columns}); "
            "name it with --text_column"
        )
    if arguments.codes_column in columns:
        return
    if arguments.image_column not in columns:
        raise ValueError(
            f"--dataset {arguments.dataset} needs a {arguments.codes_column!r} column of SEED codes or an "
            f"{arguments.image_column!r} column of images (columns: {columns}); name them with --codes_column or "
            "--image_column"
        )
    if config.vision_config is None:
        raise ValueError(
            f"--dataset {arguments.dataset} holds images but --model {arguments.model} has no SEED tokenizer to read "
            "them: turn the images into codes first with `seed-hf tokenize`"
        )


def finetune(arguments: FinetuneArguments, training_arguments: TrainingArguments) -> "Trainer":
    """
    Train a LoRA adapter (plus the new token rows) and save it with the processor to `output_dir`. The model and the
    dataset are checked first: a missing local path raises `FileNotFoundError`, a model that is not SEED-OPT or a
    dataset without the needed columns raises `ValueError`.
    """
    # Trainer and the dataset loader import datasets: only once training starts, so that --help answers quickly.
    from transformers import Trainer

    from ..dataset_tokenization import load_input_dataset

    check_local_path(arguments.model, "--model")
    check_local_path(arguments.dataset, "--dataset")
    config = check_seed_opt_config(arguments.model)
    dataset = load_input_dataset(arguments.dataset, arguments.split)[0]
    check_columns(dataset, arguments, config)
    processor = AutoProcessor.from_pretrained(arguments.model)
    if not isinstance(processor, SeedProcessor):
        raise ValueError(
            f"--model {arguments.model} has no SEED-OPT processor (processor_config.json); "
            "conversion_scripts/build_seed_opt.py writes one"
        )
    model = SeedOPTForConditionalGeneration.from_pretrained(arguments.model, config=config, use_safetensors=True)
    collator = SeedOPTDataCollator(
        processor.tokenizer,
        model.config,
        image_processor=processor.image_processor,
        text_column=arguments.text_column,
        image_column=arguments.image_column,
        codes_column=arguments.codes_column,
        directions=tuple(arguments.directions),
        max_length=arguments.max_length,
    )
    lora_config = seed_opt_lora_config(
        model.config,
        r=arguments.lora_r,
        lora_alpha=arguments.lora_alpha,
        lora_dropout=arguments.lora_dropout,
        target_modules=arguments.target_modules,
    )
    # The collator reads the raw columns, which Trainer would otherwise drop.
    training_arguments.remove_unused_columns = False
    trainer = Trainer(
        model=get_peft_model(model, lora_config),
        args=training_arguments,
        train_dataset=dataset,
        data_collator=collator,
        processing_class=processor,
        callbacks=[TrainingArgumentsAsJson()],
    )
    trainer.train(resume_from_checkpoint=training_arguments.resume_from_checkpoint)
    trainer.save_model(training_arguments.output_dir)
    if training_arguments.should_save:
        replace_pickled_training_arguments(training_arguments.output_dir, training_arguments)
    end_training(trainer)  # trainer_state.json (the loss history) next to the adapter
    return trainer


def register(subparsers) -> None:
    register_training_command(
        subparsers,
        "finetune",
        __doc__,
        FinetuneArguments,
        finetune,
        "wrote the adapter to {training_arguments.output_dir}",
    )


__all__ = ["FinetuneArguments", "finetune"]
