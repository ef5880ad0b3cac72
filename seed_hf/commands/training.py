"""
What the Trainer-based commands (`finetune`, `train-tokenizer`) share: a subcommand whose options are the command's
own dataclass plus every `TrainingArguments` option, training arguments kept as JSON instead of Trainer's pickle, and
the end of a (possibly multi-process) run.
"""

import argparse
from collections.abc import Callable
from pathlib import Path

from transformers import HfArgumentParser, TrainerCallback, TrainingArguments
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR


def register_training_command(
    subparsers, name: str, description: str, arguments_class: type, train: Callable, done: str
) -> None:
    """
    Add the subcommand `name`: its options are `arguments_class`'s fields and `TrainingArguments`'; running it calls
    `train(arguments, training_arguments)` and prints `done` (formatted with both).
    """

    def run(args: argparse.Namespace) -> int:
        values = {key: value for key, value in vars(args).items() if key not in ("command", "run")}
        arguments, training_arguments = training_argument_parser(arguments_class).parse_dict(values)
        train(arguments, training_arguments)
        print(done.format(arguments=arguments, training_arguments=training_arguments))
        return 0

    parser = subparsers.add_parser(
        name, description=description, parents=[training_argument_parser(arguments_class, add_help=False)]
    )
    parser.set_defaults(run=run)


def training_argument_parser(arguments_class: type, **kwargs) -> HfArgumentParser:
    return HfArgumentParser((arguments_class, TrainingArguments), **kwargs)


def replace_pickled_training_arguments(folder: str | Path, training_arguments: TrainingArguments) -> None:
    """Trainer pickles its arguments into `training_args.bin`; keep them as `training_args.json` instead."""
    from transformers.trainer import TRAINING_ARGS_NAME  # transformers.trainer imports datasets: not at start-up

    folder = Path(folder)
    (folder / "training_args.json").write_text(training_arguments.to_json_string())
    (folder / TRAINING_ARGS_NAME).unlink(missing_ok=True)


class TrainingArgumentsAsJson(TrainerCallback):
    """Applies [`replace_pickled_training_arguments`] to each checkpoint Trainer writes."""

    def on_save(self, args: TrainingArguments, state, control, **kwargs):
        if args.should_save:
            checkpoint = Path(args.output_dir) / f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}"
            replace_pickled_training_arguments(checkpoint, args)


def end_training(trainer) -> None:
    """
    Save the loss history (`trainer_state.json`), then, under a multi-process launch, leave together and close the
    process group: a rank that exits while another still holds the connection aborts the whole launch.
    """
    trainer.save_state()
    trainer.accelerator.wait_for_everyone()
    trainer.accelerator.end_training()


__all__ = [
    "TrainingArgumentsAsJson",
    "end_training",
    "register_training_command",
    "replace_pickled_training_arguments",
    "training_argument_parser",
]
