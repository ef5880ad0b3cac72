"""`seed-hf finetune`: LoRA fine-tuning of SEED-OPT on image-caption pairs, both directions, with Trainer.

Every TrainingArguments option is accepted as is (`--output_dir`, `--learning_rate`, `--num_train_epochs`,
`--per_device_train_batch_size`, `--use_cpu`, ...). The dataset is a folder written by `Dataset.save_to_disk`
(e.g. by `seed-hf tokenize`, with a `codes` column) or anything `datasets.load_dataset` reads (an image folder with
captions, parquet, JSON lines). The adapter (LoRA weights and the new token rows) and the processor are saved to
`--output_dir`; load them with `PeftModel.from_pretrained(model, output_dir)`.
"""

import argparse
import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from peft import get_peft_model
from transformers import AutoProcessor, HfArgumentParser, TrainingArguments

from ..modeling_seed_opt import SeedOPTForConditionalGeneration
from ..training_seed_opt import DIRECTIONS, SeedOPTDataCollator, seed_opt_lora_config

if TYPE_CHECKING:
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


def argument_parser(**kwargs) -> HfArgumentParser:
    return HfArgumentParser((FinetuneArguments, TrainingArguments), **kwargs)


def finetune(arguments: FinetuneArguments, training_arguments: TrainingArguments) -> "Trainer":
    """Train a LoRA adapter (plus the new token rows) and save it with the processor to `output_dir`."""
    # Trainer and the dataset loader import datasets: only once training starts, so that --help answers quickly.
    from transformers import Trainer

    from ..dataset_tokenization import load_input_dataset

    processor = AutoProcessor.from_pretrained(arguments.model)
    model = SeedOPTForConditionalGeneration.from_pretrained(arguments.model, use_safetensors=True)
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
        train_dataset=load_input_dataset(arguments.dataset, arguments.split)[0],
        data_collator=collator,
        processing_class=processor,
    )
    trainer.train()
    trainer.save_model(training_arguments.output_dir)
    trainer.save_state()  # trainer_state.json: the loss history, next to the adapter
    # Under a multi-process launch, leave together and close the process group: a rank that exits while another
    # still holds the connection aborts the whole launch.
    trainer.accelerator.wait_for_everyone()
    trainer.accelerator.end_training()
    return trainer


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "finetune",
        description=__doc__,
        parents=[argument_parser(add_help=False)],
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    values = {key: value for key, value in vars(args).items() if key not in ("command", "run")}
    arguments, training_arguments = argument_parser().parse_dict(values)
    try:
        finetune(arguments, training_arguments)
    except (ValueError, FileNotFoundError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"wrote the adapter to {training_arguments.output_dir}")
    return 0


__all__ = ["FinetuneArguments", "finetune"]
