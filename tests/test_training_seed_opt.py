"""SEED-OPT fine-tuning: the collator, LoRA + new token rows with Trainer (a real learning test), adapters, the CLI."""

import copy
import json
import math
import os
import random
import subprocess
import sys
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from datasets import Dataset
from peft import PeftModel, get_peft_model
from PIL import Image, ImageDraw
from transformers import Trainer, TrainingArguments

from seed_hf.cli import main as cli_main
from seed_hf.training_seed_opt import IGNORE_INDEX, SeedOPTDataCollator, new_token_ids, seed_opt_lora_config

from conftest import tiny_tokenizer
from seed_opt_helpers import tiny_processor, tiny_seed_opt

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 220)}
SHAPES = ("circle", "square", "triangle")
TRAIN_PER_CLASS, TEST_PER_CLASS = 32, 4
CANDIDATE_VISION_SEEDS = range(4)
# A random OPT's embeddings at OPT's init scale (0.02) are far smaller than a trained model's; 0.2 stands in for
# a pretrained language model whose frozen text rows are large enough to be predicted.
STAND_IN_INIT_STD = 0.2
ACCEPTANCE = 0.9


def draw(shape: str, colour: str, rng: random.Random) -> Image.Image:
    """A shape on white, 28x28, with a random size (one pixel) and shade (up to 25 per channel)."""
    image = Image.new("RGB", (28, 28), (255, 255, 255))
    half, centre = 10 + rng.randint(0, 1), 14
    fill = tuple(min(255, max(0, value + rng.randint(-25, 25))) for value in COLOURS[colour])
    low, high = centre - half, centre + half
    canvas = ImageDraw.Draw(image)
    if shape == "circle":
        canvas.ellipse([low, low, high, high], fill=fill)
    elif shape == "square":
        canvas.rectangle([low, low, high, high], fill=fill)
    else:
        canvas.polygon([(centre, low), (low, high), (high, high)], fill=fill)
    return image


def draw_split(per_class: int, rng: random.Random) -> tuple[list[Image.Image], list[str], torch.Tensor]:
    classes = [(colour, shape) for shape in SHAPES for colour in COLOURS]
    images, captions, labels = [], [], []
    for label, (colour, shape) in enumerate(classes):
        for _ in range(per_class):
            images.append(draw(shape, colour, rng))
            captions.append(f"a {colour} {shape}")
            labels.append(label)
    return images, captions, torch.tensor(labels)


def prototypes(codes: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per class, the most frequent code at each position."""
    return torch.stack([codes[labels == label].mode(0).values for label in labels.unique()])


def nearest_class(codes: torch.Tensor, class_codes: torch.Tensor) -> torch.Tensor:
    """The class whose prototype is nearest in Hamming distance."""
    return (codes[:, None, :] != class_codes[None]).sum(-1).argmin(-1)


def prototype_accuracy(codes: torch.Tensor, labels: torch.Tensor) -> float:
    """Nearest-prototype accuracy on the odd items, prototypes from the even ones: how well codes separate classes."""
    fit, held = slice(0, None, 2), slice(1, None, 2)
    return (nearest_class(codes[held], prototypes(codes[fit], labels[fit])) == labels[held]).float().mean().item()


@dataclass
class Task:
    """Shapes x colours, tokenized by a tiny SEED tokenizer: training codes and held-out images."""

    vision_seed: int
    processor: object
    train: Dataset
    class_codes: torch.Tensor
    test_images: list
    test_captions: list
    test_labels: torch.Tensor


@pytest.fixture(scope="module")
def task(tokenizer) -> Task:
    rng = random.Random(0)
    train_images, train_captions, train_labels = draw_split(TRAIN_PER_CLASS, rng)
    test_images, test_captions, test_labels = draw_split(TEST_PER_CLASS, rng)
    processor = tiny_processor(tokenizer)
    pixel_values = processor.image_processor(train_images, return_tensors="pt").pixel_values
    # A random tokenizer need not separate these classes: take the candidate whose training codes do best.
    with torch.no_grad():
        candidates = {seed: tiny_tokenizer(seed).encode(pixel_values) for seed in CANDIDATE_VISION_SEEDS}
    vision_seed = max(candidates, key=lambda seed: prototype_accuracy(candidates[seed], train_labels))
    codes = candidates[vision_seed]
    train = Dataset.from_dict({"codes": codes.tolist(), "caption": train_captions})
    return Task(
        vision_seed,
        processor,
        train,
        prototypes(codes, train_labels),
        test_images,
        test_captions,
        test_labels,
    )


def base_model(tokenizer, task: Task):
    return tiny_seed_opt(tokenizer, vision_seed=task.vision_seed, init_std=STAND_IN_INIT_STD)


@torch.no_grad()
def evaluate(model, tokenizer, task: Task) -> dict:
    """Held-out captions from images (beam search) and images from captions (greedy), both scored exactly."""
    processor = task.processor
    prompts = processor(
        text=["<image>"] * len(task.test_images), images=task.test_images, padding=True, return_tensors="pt"
    )
    generated = model.generate(**prompts, max_new_tokens=6)
    captions = tokenizer.batch_decode(generated[:, prompts.input_ids.shape[1] :], skip_special_tokens=True)
    caption_accuracy = sum(
        caption.strip() == expected for caption, expected in zip(captions, task.test_captions)
    ) / len(captions)

    text = tokenizer(task.test_captions, padding=True, padding_side="left", return_tensors="pt")
    codes = model.generate_images(**text)
    assert codes.shape == (len(task.test_captions), tokenizer.image_seq_length)
    assert codes.min() >= 0 and codes.max() < tokenizer.num_image_tokens
    image_accuracy = (nearest_class(codes, task.class_codes) == task.test_labels).float().mean().item()
    return {"caption_accuracy": caption_accuracy, "image_accuracy": image_accuracy}


def meets_acceptance(metrics: dict) -> bool:
    return metrics["caption_accuracy"] >= ACCEPTANCE and metrics["image_accuracy"] >= ACCEPTANCE


@pytest.fixture(scope="module")
def trained(tokenizer, task, tmp_path_factory):
    """The untrained metrics, then LoRA (q_proj, v_proj) + new token rows trained with Trainer on CPU."""
    torch.manual_seed(0)
    model = base_model(tokenizer, task)
    untrained = evaluate(model, tokenizer, task)
    original_rows = model.get_input_embeddings().weight.detach().clone()
    peft_model = get_peft_model(model, seed_opt_lora_config(model.config, lora_dropout=0.0))
    arguments = TrainingArguments(
        output_dir=str(tmp_path_factory.mktemp("trainer")),
        per_device_train_batch_size=8,
        num_train_epochs=18,
        learning_rate=1e-2,
        lr_scheduler_type="constant",
        logging_steps=10,
        save_strategy="no",
        remove_unused_columns=False,
        use_cpu=True,
        seed=0,
        disable_tqdm=True,
    )
    trainer = Trainer(
        model=peft_model,
        args=arguments,
        train_dataset=task.train,
        data_collator=SeedOPTDataCollator(tokenizer, model.config),
    )
    trainer.train()
    peft_model.eval()
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    return peft_model, original_rows, losses, untrained, evaluate(peft_model, tokenizer, task)


def test_collator_builds_both_directions(tokenizer):
    config = tiny_seed_opt(tokenizer, vision_seed=None).config
    codes = list(range(32))
    batch = SeedOPTDataCollator(tokenizer, config)([{"codes": codes, "caption": "a red circle"}])
    caption = tokenizer("a red circle", add_special_tokens=False).input_ids
    code_ids = [code + tokenizer.image_token_start_id for code in codes]
    block = [tokenizer.boi_token_id, *code_ids, tokenizer.eoi_token_id]
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    image_to_text = [bos, *block, *caption, eos]
    text_to_image = [bos, *caption, *block]
    assert batch["input_ids"][0].tolist() == image_to_text
    assert batch["labels"][0].tolist() == [IGNORE_INDEX] * (1 + len(block)) + [*caption, eos]
    padding = len(image_to_text) - len(text_to_image)
    assert batch["input_ids"][1].tolist() == text_to_image + [tokenizer.pad_token_id] * padding
    assert (
        batch["labels"][1].tolist()
        == [IGNORE_INDEX] * (2 + len(caption)) + [*code_ids, tokenizer.eoi_token_id] + [IGNORE_INDEX] * padding
    )
    assert batch["attention_mask"].sum(-1).tolist() == [len(image_to_text), len(text_to_image)]


def test_collator_images_give_the_same_loss_as_their_codes(tokenizer, task):
    model = base_model(tokenizer, task)
    images, captions = task.test_images[:3], task.test_captions[:3]
    codes = model.vision_tokenizer.encode(task.processor.image_processor(images, return_tensors="pt").pixel_values)
    with_images = SeedOPTDataCollator(tokenizer, model.config, image_processor=task.processor.image_processor)(
        [{"image": image, "caption": caption} for image, caption in zip(images, captions)]
    )
    with_codes = SeedOPTDataCollator(tokenizer, model.config)(
        [{"codes": row, "caption": caption} for row, caption in zip(codes.tolist(), captions)]
    )
    assert with_images["pixel_values"].shape[0] == 6  # each image in both directions
    assert (with_images["input_ids"] == tokenizer.image_token_id).any()
    with torch.no_grad():
        torch.testing.assert_close(model(**with_images).loss, model(**with_codes).loss, rtol=0, atol=0)


def test_collator_bad_input(tokenizer):
    config = tiny_seed_opt(tokenizer, vision_seed=None).config
    collator = SeedOPTDataCollator(tokenizer, config)
    with pytest.raises(
        ValueError, match=r"'codes' of an example: Expected codes in \[0, 64\), got values from 0 to 64"
    ):
        collator([{"codes": [0] * 31 + [64], "caption": "a"}])
    with pytest.raises(
        ValueError, match=r"'codes' of an example: Expected codes of shape \(num_images, 32\), got \(1, 31\)"
    ):
        collator([{"codes": [0] * 31, "caption": "a"}])
    with pytest.raises(ValueError, match="needs 'codes' or 'image'; got columns"):
        collator([{"caption": "a"}])
    with pytest.raises(ValueError, match="need an image_processor"):
        collator([{"image": Image.new("RGB", (28, 28)), "caption": "a"}])
    with pytest.raises(ValueError, match="more than max_length=20"):
        SeedOPTDataCollator(tokenizer, config, max_length=20)([{"codes": [0] * 32, "caption": "a"}])
    with pytest.raises(ValueError, match="directions must be a non-empty subset"):
        SeedOPTDataCollator(tokenizer, config, directions=("image_to_image",))
    config.image_token_start_id = None
    with pytest.raises(ValueError, match="This model has no image tokens"):
        SeedOPTDataCollator(tokenizer, config)


def test_collator_pads_to_a_multiple_and_returns_numpy(tokenizer, task):
    config = tiny_seed_opt(tokenizer, vision_seed=None).config
    image_processor = task.processor.image_processor
    features = [
        {"codes": list(range(32)), "caption": "a red circle"},
        {"image": task.test_images[0], "caption": "a blue square with a long caption"},
    ]
    plain = SeedOPTDataCollator(tokenizer, config, image_processor=image_processor)(features)
    padded = SeedOPTDataCollator(
        tokenizer, config, image_processor=image_processor, pad_to_multiple_of=16, return_tensors="np"
    )(features)
    assert all(isinstance(value, np.ndarray) for value in padded.values()) and len(padded["input_ids"]) == 4
    length = plain["input_ids"].shape[1]
    assert padded["input_ids"].shape[1] == -(-length // 16) * 16 > length
    extra = padded["input_ids"].shape[1] - length
    for key, pad in (("input_ids", tokenizer.pad_token_id), ("labels", IGNORE_INDEX), ("attention_mask", 0)):
        assert np.array_equal(padded[key][:, :length], plain[key].numpy()), key
        assert (padded[key][:, length:] == pad).all() and padded[key].shape[1] == length + extra, key
    assert np.array_equal(padded["pixel_values"], plain["pixel_values"].numpy())


def test_collator_refuses_a_config_of_another_tokenizer(tokenizer):
    config = tiny_seed_opt(tokenizer, vision_seed=None).config
    config.boi_token_id = tokenizer.eoi_token_id
    with pytest.raises(
        ValueError, match=r"config has boi_token_id=\d+ but the tokenizer \d+: .* same SEED-OPT folder"
    ):
        SeedOPTDataCollator(tokenizer, config)
    with pytest.raises(ValueError, match="return_tensors must be 'pt' or 'np'"):
        SeedOPTDataCollator(tokenizer, tiny_seed_opt(tokenizer, vision_seed=None).config, return_tensors="tf")


def test_lora_config_trains_lora_and_new_rows_only(tokenizer):
    model = tiny_seed_opt(tokenizer)
    peft_model = get_peft_model(model, seed_opt_lora_config(model.config))
    trainable = [name for name, parameter in peft_model.named_parameters() if parameter.requires_grad]
    assert trainable and all("lora_" in name or "trainable_tokens" in name for name in trainable)
    assert {name.split(".")[-3] for name in trainable if "lora_" in name} == {"lora_A", "lora_B"}
    assert {name.split(".")[-4] for name in trainable if "lora_" in name} == {"q_proj", "v_proj"}
    rows = sum(parameter.shape[0] for name, parameter in peft_model.named_parameters() if "trainable_tokens" in name)
    assert rows == len(new_token_ids(model.config)) == tokenizer.num_image_tokens + 2


def test_learning_both_directions(trained):
    """
    Captions of held-out images and the class of images drawn from held-out captions are right at least 90% of
    the time after LoRA fine-tuning, and not before; the training loss falls.
    """
    _, _, losses, untrained, metrics = trained
    print(f"untrained {untrained}, trained {metrics}, loss {losses[0]:.3f} -> {losses[-1]:.3f}")
    assert meets_acceptance(metrics), metrics
    assert not meets_acceptance(untrained), untrained
    assert losses[-1] < 0.25 * losses[0]


def test_old_rows_unchanged_adapter_round_trip_and_merge(trained, tokenizer, task, tmp_path):
    peft_model, original_rows, _, _, _ = trained
    inputs = task.processor(
        text=["<image>a red", "a blue square<image>"], images=task.test_images[:2], padding=True, return_tensors="pt"
    )
    with torch.no_grad():
        expected = peft_model(**inputs).logits

        peft_model.save_pretrained(tmp_path)
        reloaded = PeftModel.from_pretrained(base_model(tokenizer, task), tmp_path).eval()
        torch.testing.assert_close(reloaded(**inputs).logits, expected, rtol=0, atol=0)

        merged = copy.deepcopy(peft_model).merge_and_unload()
        torch.testing.assert_close(merged(**inputs).logits, expected, rtol=1e-5, atol=1e-5)
    assert merged.lm_head.weight is merged.get_input_embeddings().weight
    rows = merged.get_input_embeddings().weight
    new = torch.zeros(len(rows), dtype=torch.bool)
    new[new_token_ids(merged.config)] = True
    assert torch.equal(rows[~new], original_rows[~new])
    assert not torch.equal(rows[new], original_rows[new])


def test_finetune_command(tokenizer, task, tmp_path):
    model = base_model(tokenizer, task)
    model.save_pretrained(tmp_path / "model")
    task.processor.save_pretrained(tmp_path / "model")
    task.train.select(range(4)).save_to_disk(str(tmp_path / "data"))
    image_data = Dataset.from_dict({"image": task.test_images[:2], "caption": task.test_captions[:2]})
    image_data.save_to_disk(str(tmp_path / "images"))
    for data in ("data", "images"):
        output = tmp_path / f"adapter-{data}"
        arguments = ["finetune", "--model", str(tmp_path / "model"), "--dataset", str(tmp_path / data)]
        arguments += ["--output_dir", str(output), "--max_steps", "2", "--per_device_train_batch_size", "2"]
        assert cli_main([*arguments, "--use_cpu", "--save_strategy", "no", "--report_to", "none"]) == 0
        assert (output / "adapter_model.safetensors").is_file() and (output / "processor_config.json").is_file()
        adapted = PeftModel.from_pretrained(base_model(tokenizer, task), output)
        assert adapted.peft_config["default"].trainable_token_indices == {"embed_tokens": new_token_ids(model.config)}


def test_finetune_runs_data_parallel_on_two_cpu_processes(tokenizer, task, tmp_path):
    """`seed-hf finetune` under a 2-process launch (gloo on CPU): both ranks train, the loss is finite and falls."""
    model = base_model(tokenizer, task)
    model.save_pretrained(tmp_path / "model")
    task.processor.save_pretrained(tmp_path / "model")
    task.train.save_to_disk(str(tmp_path / "data"))
    output = tmp_path / "adapter"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    command += [
        "-m",
        "seed_hf.cli",
        "finetune",
        "--model",
        str(tmp_path / "model"),
        "--dataset",
        str(tmp_path / "data"),
    ]
    command += ["--output_dir", str(output), "--max_steps", "12", "--per_device_train_batch_size", "4"]
    command += ["--learning_rate", "1e-2", "--logging_steps", "1", "--use_cpu", "--save_strategy", "no"]
    command += ["--report_to", "none", "--disable_tqdm", "true", "--seed", "0"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]

    state = json.loads((output / "trainer_state.json").read_text())
    losses = [entry["loss"] for entry in state["log_history"] if "loss" in entry]
    assert len(losses) == 12 and all(math.isfinite(loss) for loss in losses)
    assert sum(losses[-3:]) < 0.8 * sum(losses[:3]), losses
    assert (output / "adapter_model.safetensors").is_file()
    # 12 steps of 4 rows on each of the 2 ranks went through 96 rows: both processes trained
    assert state["epoch"] == pytest.approx(12 * 4 * 2 / len(task.train), rel=1e-3)
