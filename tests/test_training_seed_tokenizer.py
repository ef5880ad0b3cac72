"""Training the SEED tokenizer: both stages' heads learning for real on a tiny task, the CLI, saving and resuming."""

import json
import random
import subprocess
import sys

import pytest
import torch
from datasets import Dataset, DatasetDict, Features, Image, Value, load_from_disk
from safetensors.torch import load_file
from tokenizers import Tokenizer, models, pre_tokenizers, processors
from transformers import (
    AutoModel,
    Blip2Config,
    Blip2ForImageTextRetrieval,
    CLIPTextConfig,
    CLIPTextModel,
    PreTrainedTokenizerFast,
    Trainer,
    TrainingArguments,
    set_seed,
)

from seed_hf import SeedImageProcessor, SeedVisionTokenizer
from seed_hf.build_decode_pipeline import build_seed_decode_pipeline
from seed_hf.cli import main as cli_main
from seed_hf.commands.train_tokenizer import TrainTokenizerArguments, train_tokenizer
from seed_hf.modeling_seed_training import (
    TRAINING_HEAD_WEIGHTS,
    SeedCausalQFormerForPreTraining,
    SeedVisionTokenizerForCodebookTraining,
)
from seed_hf.training_seed_tokenizer import CodebookMonitor, SeedTokenizerDataCollator, retrieval_metrics

from conftest import REPO_ROOT, tiny_config, tiny_tokenizer
from test_build_decode_pipeline import stable_diffusion_dir, tokenizer_dir  # noqa: F401 (the decode builder's fixtures)
from test_training_seed_opt import draw

CLASSES = (("red", "circle"), ("green", "square"), ("blue", "triangle"), ("green", "circle"))
WORDS = ("a", "red", "green", "blue", "circle", "square", "triangle")
SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]")
TRAIN_PER_CLASS, TEST_PER_CLASS = 16, 8
GENERATION_WIDTH = 16
ACCEPTANCE = 0.9


# `tiny_config` with a Q-Former vocabulary for the word tokenizer and narrow generation embeddings.
TRAINING_OVERRIDES = dict(
    qformer_config=dict(
        hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4, vocab_size=16
    ),
    generation_embed_dim=GENERATION_WIDTH,
)


def tiny_training_config():
    return tiny_config(**TRAINING_OVERRIDES)


def word_tokenizer() -> PreTrainedTokenizerFast:
    """A BERT-like word-level tokenizer over the captions' words: `[CLS] words [SEP]`."""
    vocab = {token: index for index, token in enumerate(SPECIAL_TOKENS + WORDS)}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]", sep_token="[SEP]"
    )


def rows(per_class: int, rng: random.Random) -> dict[str, list]:
    pairs = [(draw(shape, colour, rng), f"a {colour} {shape}") for colour, shape in CLASSES for _ in range(per_class)]
    return {"image": [image for image, _ in pairs], "caption": [caption for _, caption in pairs]}


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A captioned shapes dataset, a tiny SEED folder, its text tokenizer and a tiny Stable Diffusion text encoder."""
    root = tmp_path_factory.mktemp("train-tokenizer")
    rng = random.Random(0)
    features = Features({"image": Image(), "caption": Value("string")})
    DatasetDict(
        {
            "train": Dataset.from_dict(rows(TRAIN_PER_CLASS, rng), features=features),
            "test": Dataset.from_dict(rows(TEST_PER_CLASS, rng), features=features),
        }
    ).save_to_disk(root / "shapes")

    # Random weights at a scale where images differ; the quantizer starts as a fresh model's, as Stage II would
    # (drawn from a fixed seed, so the workspace does not depend on the tests that ran before).
    torch.manual_seed(0)
    model = tiny_tokenizer(**TRAINING_OVERRIDES)
    model.quantizer.load_state_dict(SeedVisionTokenizer(tiny_training_config()).quantizer.state_dict())
    model.save_pretrained(root / "seed")
    SeedImageProcessor(size={"height": 28, "width": 28}).save_pretrained(root / "seed")
    word_tokenizer().save_pretrained(root / "bert")

    torch.manual_seed(0)
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(SPECIAL_TOKENS + WORDS),
            hidden_size=GENERATION_WIDTH,
            intermediate_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            max_position_embeddings=77,
            pad_token_id=0,
            bos_token_id=2,
            eos_token_id=3,
        )
    )
    text_encoder.save_pretrained(root / "sd" / "text_encoder")
    word_tokenizer().save_pretrained(root / "sd" / "tokenizer")
    return root


def training_arguments(output_dir, **overrides) -> TrainingArguments:
    kwargs = dict(
        output_dir=str(output_dir),
        use_cpu=True,
        per_device_train_batch_size=16,
        per_device_eval_batch_size=32,
        learning_rate=3e-3,
        lr_scheduler_type="constant",
        max_steps=60,
        logging_steps=10,
        save_strategy="no",
        seed=0,
        disable_tqdm=True,
        report_to="none",
        dataloader_num_workers=0,
    )
    kwargs.update(overrides)
    return TrainingArguments(**kwargs)


def stage_arguments(workspace, stage: int, model, **overrides) -> TrainTokenizerArguments:
    kwargs = dict(
        stage=stage,
        model=str(model),
        dataset=str(workspace / "shapes"),
        split="train",
        eval_split="test",
        text_tokenizer=str(workspace / "bert"),
        text_encoder=str(workspace / "sd"),
    )
    kwargs.update(overrides)
    return TrainTokenizerArguments(**kwargs)


def held_out(workspace):
    test = load_from_disk(str(workspace / "shapes"))["test"]
    pixel_values = SeedImageProcessor(size={"height": 28, "width": 28})(list(test["image"]), return_tensors="pt")
    return pixel_values.pixel_values, list(test["caption"])


@torch.no_grad()
def stage1_accuracy(model: SeedCausalQFormerForPreTraining, workspace) -> float:
    """Held-out image-to-text retrieval with the final causal embedding, among the class captions."""
    pixel_values, captions = held_out(workspace)
    classes = sorted(set(captions))
    text = word_tokenizer()(classes, padding=True, return_tensors="pt")
    model.eval()
    images = model(pixel_values, input_ids=text.input_ids[:1].expand(len(pixel_values), -1)).image_embeds
    texts = model(pixel_values[: len(classes)], **text).text_embeds
    predicted = (images @ texts.t()).argmax(1)
    return (predicted == torch.tensor([classes.index(caption) for caption in captions])).float().mean().item()


@pytest.fixture(scope="module")
def stage1(workspace):
    """Stage I trained on the shapes (about 5 s): the trainer, and the accuracy before training."""
    set_seed(0)  # the seed training draws the fresh head with
    before = stage1_accuracy(SeedCausalQFormerForPreTraining.from_pretrained(workspace / "seed"), workspace)
    trainer = train_tokenizer(
        stage_arguments(workspace, 1, workspace / "seed"),
        training_arguments(workspace / "stage1", eval_strategy="steps", eval_steps=60),
    )
    return trainer, before


def test_stage1_learns_image_text_retrieval(stage1, workspace):
    trainer, before = stage1
    after = stage1_accuracy(SeedCausalQFormerForPreTraining.from_pretrained(workspace / "stage1"), workspace)
    assert before <= 0.5 < ACCEPTANCE <= after
    history = trainer.state.log_history
    evaluation = next(entry for entry in history if "eval_loss" in entry)
    assert evaluation["eval_image_to_text_recall@1"] >= ACCEPTANCE
    assert evaluation["eval_loss_contrastive"] == pytest.approx(evaluation["eval_loss"])
    losses = [entry["loss_contrastive"] for entry in history if "loss_contrastive" in entry]
    assert losses[-1] < losses[0]


def test_stage1_keeps_queries_causal_and_frozen_parts_unchanged(stage1, workspace):
    initial = SeedVisionTokenizer.from_pretrained(workspace / "seed")
    trained = SeedVisionTokenizer.from_pretrained(workspace / "stage1")
    for name in ("vision_model", "quantizer", "decoder"):
        before, after = getattr(initial, name).state_dict(), getattr(trained, name).state_dict()
        assert all(torch.equal(before[key], after[key]) for key in before), name
    assert not torch.equal(initial.query_tokens, trained.query_tokens)

    pixel_values = held_out(workspace)[0][:4]
    with torch.no_grad():
        reference = trained(pixel_values).causal_query_output
        for query in (5, 20, 31):
            original = trained.query_tokens[:, query].clone()
            trained.query_tokens[:, query] = torch.randn_like(original)
            changed = trained(pixel_values).causal_query_output
            trained.query_tokens[:, query] = original
            assert torch.equal(changed[:, :query], reference[:, :query])
            assert not torch.allclose(changed[:, query], reference[:, query])


def test_trained_folder_is_a_normal_tokenizer_folder(stage1, workspace, tmp_path):
    folder = workspace / "stage1"
    model, info = AutoModel.from_pretrained(folder, output_loading_info=True)
    assert type(model) is SeedVisionTokenizer
    assert not info["missing_keys"] and not info["unexpected_keys"]
    head = load_file(folder / TRAINING_HEAD_WEIGHTS)
    assert "contrastive_head.temperature" in head and "qformer.encoder.layer.0.intermediate.dense.weight" in head
    assert json.loads((folder / "training_head.json").read_text())["head_class"] == "SeedCausalQFormerForPreTraining"

    output = tmp_path / "codes"
    subprocess.run(
        [sys.executable, "-m", "seed_hf.cli", "tokenize", str(workspace / "shapes"), "--model", str(folder)]
        + ["--split", "test", "-o", str(output)],
        check=True,
        cwd=REPO_ROOT,
        capture_output=True,
    )
    codes = torch.tensor(load_from_disk(str(output))["codes"])
    assert codes.shape == (len(CLASSES) * TEST_PER_CLASS, 32)
    assert torch.equal(codes, model.encode(held_out(workspace)[0]))


def test_trained_folder_builds_a_decode_pipeline(workspace, tokenizer_dir, stable_diffusion_dir, tmp_path):  # noqa: F811
    """A folder trained from a 768-wide tokenizer goes into the decode pipeline builder as is."""
    trained = tmp_path / "trained"
    train_tokenizer(
        stage_arguments(workspace, 1, tokenizer_dir, eval_split=None), training_arguments(trained, max_steps=1)
    )
    pipe = build_seed_decode_pipeline(trained, stable_diffusion_dir, tmp_path / "decode")
    assert torch.equal(pipe.vision_tokenizer.query_tokens, SeedVisionTokenizer.from_pretrained(trained).query_tokens)
    assert not torch.equal(
        pipe.vision_tokenizer.query_tokens, SeedVisionTokenizer.from_pretrained(tokenizer_dir).query_tokens
    )


@torch.no_grad()
def stage2_scores(model: SeedVisionTokenizerForCodebookTraining, workspace) -> tuple[float, float]:
    """Held-out retrieval of each image's own caption target by its generation embeddings, and the cosine
    between reconstructed and causal query features."""
    pixel_values, captions = held_out(workspace)
    root = workspace / "sd"
    tokens = PreTrainedTokenizerFast.from_pretrained(root / "tokenizer")(
        captions, padding="max_length", max_length=77, return_tensors="pt"
    )
    targets = CLIPTextModel.from_pretrained(root / "text_encoder")(tokens.input_ids).last_hidden_state
    model.eval()
    output = model(pixel_values, text_targets=targets)
    caption_ids = torch.tensor([sorted(set(captions)).index(caption) for caption in captions])
    recall = retrieval_metrics(output.generation_embeds, targets, caption_ids)["image_to_text_recall@1"]
    return recall, 1 - output.loss_reconstruction.item()


@pytest.fixture(scope="module")
def stage2(stage1, workspace):
    """Stage II from Stage I's output (about 10 s), reviving dead codes: the trainer and the scores before."""
    set_seed(0)
    before = stage2_scores(SeedVisionTokenizerForCodebookTraining.from_pretrained(workspace / "stage1"), workspace)
    trainer = train_tokenizer(
        stage_arguments(workspace, 2, workspace / "stage1", revive_dead_codes=True, codebook_window=20),
        training_arguments(workspace / "stage2", max_steps=120, eval_strategy="steps", eval_steps=120),
    )
    return trainer, before


def test_stage2_learns_generation_embeddings_and_codes(stage2, workspace):
    trainer, (recall_before, cosine_before) = stage2
    recall_after, cosine_after = stage2_scores(
        SeedVisionTokenizerForCodebookTraining.from_pretrained(workspace / "stage2"), workspace
    )
    assert recall_before <= 0.5 < ACCEPTANCE <= recall_after
    assert cosine_after > cosine_before + 0.2
    history = trainer.state.log_history
    logs = [entry for entry in history if "loss" in entry]
    parts = {"loss_embedding", "loss_reconstruction", "loss_generation", "codebook_perplexity", "codebook_dead"}
    assert all(parts <= set(entry) for entry in logs)
    assert logs[-1]["codebook_used"] > logs[0]["codebook_used"]
    evaluation = next(entry for entry in history if "eval_loss" in entry)
    assert evaluation["eval_image_to_text_recall@1"] >= ACCEPTANCE


def test_stage2_keeps_the_encoder_side_bit_identical(stage2, workspace):
    before = SeedVisionTokenizer.from_pretrained(workspace / "stage1").state_dict()
    after = SeedVisionTokenizer.from_pretrained(workspace / "stage2").state_dict()
    frozen = [key for key in before if key.startswith(("vision_model.", "qformer.", "query_tokens"))]
    assert frozen and all(torch.equal(before[key], after[key]) for key in frozen)
    assert not torch.equal(before["quantizer.codebook.weight"], after["quantizer.codebook.weight"])
    assert not torch.equal(before["decoder.projection.weight"], after["decoder.projection.weight"])
    head = load_file(workspace / "stage2" / TRAINING_HEAD_WEIGHTS)
    assert head and all(key.startswith("reconstruction_head.") for key in head)


def test_resumed_run_matches_an_uninterrupted_one(stage1, workspace, tmp_path):
    def run(output_dir, **overrides):
        train_tokenizer(
            stage_arguments(workspace, 2, workspace / "stage1", eval_split=None),
            training_arguments(output_dir, max_steps=6, save_strategy="steps", save_steps=3, **overrides),
        )
        return load_file(output_dir / "model.safetensors"), load_file(output_dir / TRAINING_HEAD_WEIGHTS)

    uninterrupted = run(tmp_path / "straight")
    run(tmp_path / "interrupted")
    for name in ("model.safetensors", "model.safetensors.index.json", TRAINING_HEAD_WEIGHTS):
        (tmp_path / "interrupted" / name).unlink(missing_ok=True)
    checkpoint = tmp_path / "interrupted" / "checkpoint-3"
    assert (checkpoint / "model.safetensors").is_file() and not (checkpoint / "pytorch_model.bin").exists()
    for path in (tmp_path / "interrupted" / "checkpoint-6").iterdir():
        path.unlink()
    (tmp_path / "interrupted" / "checkpoint-6").rmdir()
    resumed = run(tmp_path / "interrupted", resume_from_checkpoint=str(checkpoint))
    for expected, actual in zip(uninterrupted, resumed):
        assert expected.keys() == actual.keys()
        assert all(torch.equal(expected[key], actual[key]) for key in expected)


def test_cli_trains_a_stage(stage1, workspace, tmp_path, capsys):
    output = tmp_path / "cli"
    status = cli_main(
        ["train-tokenizer", "--stage", "2", "--model", str(workspace / "stage1")]
        + ["--dataset", str(workspace / "shapes"), "--split", "train", "--eval_size", "8"]
        + ["--text_encoder", str(workspace / "sd"), "--output_dir", str(output)]
        + ["--max_steps", "2", "--per_device_train_batch_size", "4", "--use_cpu", "--report_to", "none"]
    )
    assert status == 0 and "stage 2" in capsys.readouterr().out
    assert (output / "preprocessor_config.json").is_file()
    assert type(AutoModel.from_pretrained(output)) is SeedVisionTokenizer


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(stage=3, dataset="./no-such-data"), "--stage must be one of"),  # checked before the dataset is read
        (dict(model="./no-such-model", dataset="./no-such-data"), "no such file or folder: ./no-such-model"),
        (dict(stage=2, text_encoder=None), "needs --text_encoder"),
        (dict(stage=1, text_tokenizer=None), "--text_tokenizer"),
        (dict(stage=1, text_column="text"), "no column 'text'"),
        (dict(stage=1, eval_size=4), "not both"),
    ],
)
def test_cli_refuses_bad_arguments(workspace, tmp_path, overrides, message):
    arguments = stage_arguments(workspace, 1, workspace / "seed")
    for name, value in overrides.items():
        setattr(arguments, name, value)
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        train_tokenizer(arguments, training_arguments(tmp_path / "out"))


def test_heads_train_with_gradient_checkpointing():
    torch.manual_seed(0)
    pixel_values = torch.randn(3, 3, 28, 28)
    text = word_tokenizer()(["a red circle", "a blue square", "a green triangle"], padding=True, return_tensors="pt")
    targets = torch.randn(3, 77, GENERATION_WIDTH)
    for head, inputs in (
        (SeedCausalQFormerForPreTraining, dict(input_ids=text.input_ids, attention_mask=text.attention_mask)),
        (SeedVisionTokenizerForCodebookTraining, dict(text_targets=targets)),
    ):
        model = head(tiny_training_config()).train()
        plain = model(pixel_values, **inputs).loss
        plain.backward()
        gradients = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
        model.zero_grad()
        model.gradient_checkpointing_enable()
        assert all(layer.gradient_checkpointing for layer in model.qformer.encoder.layer)
        checkpointed = model(pixel_values, **inputs).loss
        checkpointed.backward()
        assert torch.allclose(plain, checkpointed)
        assert gradients and all(
            torch.allclose(parameter.grad, gradients[name], atol=1e-6)
            for name, parameter in model.named_parameters()
            if name in gradients
        )


def contrastive_batch():
    """A seeded Stage I model and a batch of 8 pairs."""
    torch.manual_seed(0)
    model = SeedCausalQFormerForPreTraining(tiny_training_config())
    captions = [f"a {colour} {shape}" for colour in ("red", "green", "blue", "red") for shape in ("circle", "square")]
    text = word_tokenizer()(captions, padding=True, return_tensors="pt")
    return model, torch.randn(8, 3, 28, 28), text.input_ids, text.attention_mask


def all_gradients(model) -> torch.Tensor:
    return torch.cat([parameter.grad.flatten() for parameter in model.parameters() if parameter.grad is not None])


def contrastive_step_on_half(rank: int, store: str, output: str) -> None:
    """One of two processes: the loss on its half of the batch, and the gradients averaged as DDP averages them."""
    torch.distributed.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    try:
        model, pixel_values, input_ids, attention_mask = contrastive_batch()
        half = slice(4 * rank, 4 * rank + 4)
        loss = model(pixel_values[half], input_ids=input_ids[half], attention_mask=attention_mask[half]).loss
        loss.backward()
        gradients = all_gradients(model)
        for tensor in (loss, gradients):
            torch.distributed.all_reduce(tensor.detach_())
        if rank == 0:
            torch.save({"loss": loss / 2, "gradients": gradients / 2}, output)
    finally:
        torch.distributed.destroy_process_group()


def test_stage1_contrasts_against_every_process_of_a_distributed_run(tmp_path):
    output = tmp_path / "result.pt"
    # Forked, the two processes start with everything imported (spawned ones take longer than the test).
    torch.multiprocessing.start_processes(
        contrastive_step_on_half, args=(str(tmp_path / "store"), str(output)), nprocs=2, start_method="fork"
    )
    model, pixel_values, input_ids, attention_mask = contrastive_batch()
    loss = model(pixel_values, input_ids=input_ids, attention_mask=attention_mask).loss
    loss.backward()
    gradients = all_gradients(model)
    distributed = torch.load(output, weights_only=True)
    assert torch.allclose(distributed["loss"], loss, atol=1e-6)
    assert torch.allclose(distributed["gradients"], gradients, atol=1e-6)


def test_heads_train_with_a_plain_trainer(workspace, tmp_path):
    dataset = load_from_disk(str(workspace / "shapes"))["train"].select(range(8))
    collator = SeedTokenizerDataCollator(SeedImageProcessor(size={"height": 28, "width": 28}), word_tokenizer())
    trainer = Trainer(
        model=SeedCausalQFormerForPreTraining(tiny_training_config()),
        args=training_arguments(tmp_path, max_steps=2, per_device_train_batch_size=4, remove_unused_columns=False),
        train_dataset=dataset,
        data_collator=collator,
    )
    assert trainer.train().training_loss > 0


def test_stage2_checks_text_targets():
    model = SeedVisionTokenizerForCodebookTraining(tiny_training_config())
    with pytest.raises(ValueError, match=r"text_targets must have shape \(batch_size, 77, 16\)"):
        model(torch.randn(2, 3, 28, 28), text_targets=torch.randn(2, 77, 768))


def test_stage1_starts_from_a_blip2_retrieval_checkpoint(workspace, tmp_path):
    config = Blip2Config(
        vision_config=dict(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=2,
            image_size=28,
            patch_size=14,
        ),
        qformer_config=dict(
            hidden_size=32,
            intermediate_size=48,
            num_hidden_layers=2,
            num_attention_heads=4,
            vocab_size=16,
            use_qformer_text_input=True,
        ),
        num_query_tokens=32,
        image_text_hidden_size=256,
    )
    torch.manual_seed(0)
    Blip2ForImageTextRetrieval(config).save_pretrained(tmp_path / "blip2")
    blip2 = Blip2ForImageTextRetrieval.from_pretrained(tmp_path / "blip2").state_dict()
    model = SeedCausalQFormerForPreTraining.from_blip2(tmp_path / "blip2")
    weights = model.state_dict()
    assert torch.equal(
        weights["contrastive_head.text_embeddings.word_embeddings.weight"], blip2["embeddings.word_embeddings.weight"]
    )
    assert torch.equal(weights["contrastive_head.text_projection.weight"], blip2["text_projection.weight"])
    for key in (
        "qformer.encoder.layer.1.intermediate.dense.weight",
        "query_tokens",
        "vision_model.post_layernorm.weight",
    ):
        assert torch.equal(weights[key], blip2[key])
    assert model.contrastive_head.temperature.item() == pytest.approx(0.07)
    assert not model.config.qformer_config.use_qformer_text_input
    assert model.config.qformer_config.hidden_dropout_prob == 0 < config.qformer_config.hidden_dropout_prob

    # The command takes the BLIP-2 folder for stage 1 (only) and writes a complete SEED folder.
    train_tokenizer(
        stage_arguments(workspace, 1, tmp_path / "blip2", eval_split=None),
        training_arguments(tmp_path / "stage1", max_steps=2),
    )
    assert type(AutoModel.from_pretrained(tmp_path / "stage1")) is SeedVisionTokenizer
    assert SeedImageProcessor.from_pretrained(tmp_path / "stage1").size == {"height": 28, "width": 28}
    with pytest.raises(ValueError, match="train stage 1 from it"):
        train_tokenizer(
            stage_arguments(workspace, 2, tmp_path / "blip2"), training_arguments(tmp_path / "stage2", max_steps=2)
        )


def test_codebook_monitor_counts_and_revives_dead_codes():
    monitor = CodebookMonitor(codebook_size=8, window=2, revive_dead_codes=True)
    codebook = torch.zeros(8, 3)
    model = type("Model", (), {"quantizer": torch.nn.Module()})()
    model.quantizer.codebook = torch.nn.Embedding.from_pretrained(codebook)
    state = type("State", (), {"global_step": 1})()
    monitor.record(torch.tensor([[0, 0, 1, 1]]), torch.ones(1, 4, 3))
    monitor.on_step_end(None, state, None, model=model)
    assert monitor.stats()["codebook_used"] == 2
    assert monitor.stats()["codebook_perplexity"] == pytest.approx(2.0)
    state.global_step = 2
    monitor.on_step_end(None, state, None, model=model)
    weight = model.quantizer.codebook.weight
    assert torch.equal(weight[:2], torch.zeros(2, 3)) and torch.equal(weight[2:], torch.ones(6, 3))
    assert monitor.revived == 6 and monitor.stats()["codebook_dead"] == 6  # unused over the window, until used


def test_collator_refuses_missing_columns():
    collator = SeedTokenizerDataCollator(SeedImageProcessor(), text_tokenizer=word_tokenizer())
    with pytest.raises(ValueError, match="'caption'"):
        collator([{"image": draw("circle", "red", random.Random(0))}])
