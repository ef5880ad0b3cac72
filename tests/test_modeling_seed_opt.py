"""SEED-OPT: auto classes, image filling, generation in both directions, bad input, and the build script."""

import copy
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file
from transformers import (
    AutoModelForCausalLM,
    AutoModelForImageTextToText,
    AutoModelForMultimodalLM,
    AutoProcessor,
    LogitsProcessor,
    MaxLengthCriteria,
    OPTConfig,
    OPTForCausalLM,
    StoppingCriteriaList,
)

from seed_hf import SeedImageBlockLogitsProcessor, SeedImageProcessor, SeedOPTForConditionalGeneration

from conftest import REPO_ROOT, tiny_tokenizer
from seed_opt_helpers import seed_opt_config, tiny_processor, tiny_seed_opt
from test_hub import HIDE_SEED_HF
from text_helpers import make_seed_opt_tokenizer


def random_images(count: int, seed: int = 0) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 256, (28, 28, 3), dtype=np.uint8)) for _ in range(count)]


def test_auto_classes_tied_head_and_save_load(tokenizer, model, tmp_path):
    config = seed_opt_config(tokenizer)
    for auto_class in (AutoModelForCausalLM, AutoModelForImageTextToText, AutoModelForMultimodalLM):
        assert type(auto_class.from_config(config)) is SeedOPTForConditionalGeneration
    assert model.output_modalities == ("image", "text")
    # What OPT supports, the wrapper declares (flex attention checked by hand: README, "SEED-OPT").
    assert model._supports_flash_attn and model._supports_flex_attn and model._can_compile_fullgraph
    assert model.lm_head.weight is model.get_input_embeddings().weight
    assert model.lm_head.weight.shape[0] == len(tokenizer)
    assert model.generation_config.num_beams == 5

    model.save_pretrained(tmp_path)
    assert sorted(path.name for path in tmp_path.iterdir() if path.suffix != ".py") == [
        "config.json",
        "generation_config.json",
        "model.safetensors",
    ]
    # the code that lets the folder load with trust_remote_code=True where seed_hf is not installed
    assert {"modeling_seed_opt.py", "configuration_seed.py"} <= {path.name for path in tmp_path.glob("*.py")}
    assert "lm_head.weight" not in load_file(tmp_path / "model.safetensors")
    loaded = AutoModelForImageTextToText.from_pretrained(tmp_path).eval()
    assert loaded.lm_head.weight is loaded.get_input_embeddings().weight
    assert loaded.generation_config.num_beams == 5
    input_ids = torch.tensor([[tokenizer.bos_token_id, 5, 6, tokenizer.image_token_start_id + 3]])
    torch.testing.assert_close(loaded(input_ids=input_ids).logits, model(input_ids=input_ids).logits, rtol=0, atol=0)


def test_vision_tokenizer_frozen_and_in_eval_mode_while_training(tokenizer, model):
    trained = copy.deepcopy(model).train()
    assert trained.training and not trained.vision_tokenizer.training
    assert not any(parameter.requires_grad for parameter in trained.vision_tokenizer.parameters())
    inputs = tiny_processor(tokenizer)(text="<image>a red circle", images=random_images(1), return_tensors="pt")
    trained(**inputs, labels=inputs.input_ids).loss.backward()
    assert all(parameter.grad is None for parameter in trained.vision_tokenizer.parameters())
    assert trained.get_input_embeddings().weight.grad is not None


def test_pixel_values_fill_placeholders_like_code_ids(tokenizer, model):
    processor = tiny_processor(tokenizer)
    text = ["<image>a red circle", "a blue <image> and <image>"]
    images = random_images(3)
    with_pixels = processor(text=text, images=images, padding=True, return_tensors="pt")
    codes = model.vision_tokenizer.encode(with_pixels.pixel_values)
    with_codes = processor(text=text, codes=codes, padding=True, return_tensors="pt")

    filled, _, _ = model.fill_image_tokens(with_pixels.input_ids, with_pixels.pixel_values)
    assert torch.equal(filled, with_codes.input_ids)
    # Placeholder positions of the labels take the same code ids as the inputs.
    from_pixels = model(**with_pixels, labels=with_pixels.input_ids)
    from_codes = model(**with_codes, labels=with_codes.input_ids)
    torch.testing.assert_close(from_pixels.logits, from_codes.logits, rtol=0, atol=0)
    torch.testing.assert_close(from_pixels.loss, from_codes.loss, rtol=0, atol=0)
    # No token is masked in forward: image codes keep finite logits everywhere (training needs them).
    assert torch.isfinite(from_codes.logits).all()


def test_generate_fills_pixel_values_before_decoding(tokenizer, model):
    processor = tiny_processor(tokenizer)
    images = random_images(2, seed=1)
    text = ["<image>a", "<image>"]
    with_pixels = processor(text=text, images=images, padding=True, padding_side="left", return_tensors="pt")
    codes = model.vision_tokenizer.encode(with_pixels.pixel_values)
    with_codes = processor(text=text, codes=codes, padding=True, padding_side="left", return_tensors="pt")
    # The returned prompt holds the code ids the model read where the placeholders were.
    assert torch.equal(model.generate(**with_pixels, max_new_tokens=4), model.generate(**with_codes, max_new_tokens=4))


def test_batched_generation_with_left_padding_equals_one_at_a_time(tokenizer, model):
    processor = tiny_processor(tokenizer)
    prompts = ["<image>a", "<image>A photo of a red square. Question: What colour is the"]
    codes = torch.randint(
        0, tokenizer.num_image_tokens, (2, tokenizer.image_seq_length), generator=torch.Generator().manual_seed(0)
    )
    batch = processor(text=prompts, codes=codes, padding=True, padding_side="left", return_tensors="pt")
    captions = model.generate(**batch, max_new_tokens=6)[:, batch.input_ids.shape[1] :]
    text_batch = tokenizer(["a", "A photo of a red square."], padding=True, padding_side="left", return_tensors="pt")
    drawn = model.generate_images(**text_batch)
    for index, prompt in enumerate(prompts):
        single = processor(text=prompt, codes=codes[index : index + 1], return_tensors="pt")
        caption = model.generate(**single, max_new_tokens=6)[0, single.input_ids.shape[1] :]
        assert torch.equal(captions[index][: len(caption)], caption)
        assert torch.equal(
            drawn[index],
            model.generate_images(**tokenizer(["a", "A photo of a red square."][index], return_tensors="pt"))[0],
        )


def test_generate_images_writes_exactly_one_block_of_valid_codes(tokenizer, model):
    prompts = tokenizer(["A photo of a", "a red"], padding=True, padding_side="left", return_tensors="pt")
    for kwargs in ({}, {"do_sample": True, "top_k": 0, "num_return_sequences": 3}, {"num_beams": 3}):
        codes = model.generate_images(**prompts, **kwargs)
        assert codes.shape == (2 * kwargs.get("num_return_sequences", 1), tokenizer.image_seq_length)
        assert codes.min() >= 0 and codes.max() < tokenizer.num_image_tokens
    # The same constraint through plain `generate`: the prompt opens the block, the processor closes it.
    block = SeedImageBlockLogitsProcessor.from_config(model.config)
    opened = torch.cat([prompts.input_ids, torch.full((2, 1), tokenizer.boi_token_id)], dim=1)
    mask = torch.cat([prompts.attention_mask, torch.ones(2, 1, dtype=torch.long)], dim=1)
    sequences = model.generate(
        input_ids=opened, attention_mask=mask, logits_processor=[block], max_new_tokens=33, num_beams=1
    )
    assert (sequences[:, -1] == tokenizer.eoi_token_id).all()
    codes = torch.cat(tokenizer.ids_to_codes(sequences))  # one block per row, checked by the tokenizer
    assert torch.equal(codes, sequences[:, -33:-1] - tokenizer.image_token_start_id)


def test_image_block_logits_processor():
    processor = SeedImageBlockLogitsProcessor(10, 4, 2, boi_token_id=14, eoi_token_id=15)
    scores = torch.randn(5, 16)
    input_ids = torch.tensor(
        [
            [3, 3, 3, 3],  # no block
            [3, 3, 3, 14],  # block opened: codes only
            [3, 3, 14, 12],  # one code written: codes only
            [3, 14, 12, 10],  # two codes written: `</img>` only
            [14, 12, 10, 15],  # block closed
        ]
    )
    allowed = processor(input_ids, scores.clone()).isfinite()
    codes = torch.zeros(16, dtype=torch.bool)
    codes[10:14] = True
    close = torch.zeros(16, dtype=torch.bool)
    close[15] = True
    text = ~(codes | close)  # outside a block: anything but codes and `</img>`
    assert torch.equal(allowed[0], text) and torch.equal(allowed[4], text)
    assert torch.equal(allowed[1], codes) and torch.equal(allowed[2], codes)
    assert torch.equal(allowed[3], close)
    with pytest.raises(ValueError, match="more than 2 tokens"):
        processor(torch.tensor([[14, 10, 11, 12]]), scores[:1])
    # Inside a block, an earlier processor that banned every allowed token is an error, not a token picked at -inf.
    banned = scores[1:2].clone()
    banned[:, 10:14] = -float("inf")
    with pytest.raises(ValueError, match="has a score of -inf"):
        processor(input_ids[1:2], banned)
    processor(input_ids[:1], banned)  # outside a block, text tokens remain

    assert torch.equal(processor.codes_of_generated_block(torch.tensor([[12, 10, 15]])), torch.tensor([[2, 0]]))
    for malformed in ([[12, 15]], [[12, 10, 3]], [[3, 10, 15]], [[12, 10, 11, 15]]):
        with pytest.raises(ValueError, match="must write 2 code ids then `</img>`"):
            processor.codes_of_generated_block(torch.tensor(malformed))


def test_bad_input_raises_clear_errors(tokenizer, model):
    processor = tiny_processor(tokenizer)
    inputs = processor(text="<image>a", images=random_images(1), return_tensors="pt")
    two_images = torch.cat([inputs.pixel_values, inputs.pixel_values])
    with pytest.raises(ValueError, match=r"hold 32 `<image>` placeholder tokens .* 2 images need 32 each, i\.e\. 64"):
        model(input_ids=inputs.input_ids, pixel_values=two_images)
    with pytest.raises(ValueError, match="no pixel_values were given"):
        model(input_ids=inputs.input_ids)
    with pytest.raises(ValueError, match="hold 0 `<image>` placeholder tokens"):
        model(inputs_embeds=torch.zeros(1, 3, 64), pixel_values=inputs.pixel_values)

    text_only = tiny_seed_opt(tokenizer, vision_seed=None)
    with pytest.raises(ValueError, match="no vision tokenizer"):
        text_only(**inputs)

    config = seed_opt_config(tokenizer)
    config.image_token_start_id = config.boi_token_id = config.eoi_token_id = None
    no_image_tokens = SeedOPTForConditionalGeneration(config).eval()
    with pytest.raises(ValueError, match="This model has no image tokens"):
        no_image_tokens.generate_images(torch.tensor([[2, 5]]))
    with pytest.raises(ValueError, match="do not pass max_new_tokens"):
        model.generate_images(torch.tensor([[2, 5]]), max_new_tokens=3)

    vocab_size = len(tokenizer)
    with pytest.raises(ValueError, match=r"must fit in the text vocabulary"):
        seed_opt_config(tokenizer, vocab_size=vocab_size - 1)
    with pytest.raises(ValueError, match=r"boi_token_id .* must not be one of the image code ids"):
        config = seed_opt_config(tokenizer).to_dict()
        type(model.config)(**{**config, "boi_token_id": tokenizer.image_token_start_id})
    with pytest.raises(ValueError, match=r"num_image_tokens \(8192\) must equal the vision tokenizer's codebook_size"):
        type(model.config)(vision_config=tiny_tokenizer().config.to_dict())


def load_build_script():
    spec = importlib.util.spec_from_file_location(
        "build_seed_opt", REPO_ROOT / "conversion_scripts" / "build_seed_opt.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_build_inputs(tmp_path):
    """A tiny OPT, the SEED-OPT tokenizer and a tiny SEED tokenizer in `tmp_path`, and the build script's arguments."""
    tokenizer = make_seed_opt_tokenizer(tmp_path / "tokenizers")
    torch.manual_seed(0)
    opt_config = OPTConfig(
        vocab_size=tokenizer.boi_token_id + 4,  # OPT pads its vocabulary: unused rows the new tokens overwrite
        hidden_size=32,
        num_hidden_layers=1,
        ffn_dim=64,
        num_attention_heads=2,
        word_embed_proj_dim=32,
        max_position_embeddings=96,
    )
    OPTForCausalLM(opt_config).save_pretrained(tmp_path / "opt")
    vision = tiny_tokenizer()
    vision.save_pretrained(tmp_path / "vision")
    SeedImageProcessor(size={"height": 28, "width": 28}).save_pretrained(tmp_path / "vision")
    arguments = [
        "--opt",
        str(tmp_path / "opt"),
        "--tokenizer",
        str(tmp_path / "tokenizers" / "seed-opt"),
        "--vision-tokenizer",
        str(tmp_path / "vision"),
        "--output",
        str(tmp_path / "seed-opt"),
    ]
    return tokenizer, vision, arguments


def test_build_script_resizes_opt_and_writes_a_loadable_folder(tmp_path):
    tokenizer, vision, arguments = write_build_inputs(tmp_path)
    base_vocab = tokenizer.boi_token_id  # the first id the extension added
    script = load_build_script()
    assert script.main(arguments) == 0
    assert not list((tmp_path / "seed-opt").glob("*.bin")) and not list(tmp_path.glob(".seed-opt.*"))
    card = (tmp_path / "seed-opt" / "README.md").read_text()
    assert card == (REPO_ROOT / "model_cards" / "seed_opt.md").read_text()

    model = AutoModelForImageTextToText.from_pretrained(tmp_path / "seed-opt")
    processor = AutoProcessor.from_pretrained(tmp_path / "seed-opt")
    old = OPTForCausalLM.from_pretrained(tmp_path / "opt").get_input_embeddings().weight
    rows = model.get_input_embeddings().weight
    assert rows.shape[0] == len(tokenizer) == len(processor.tokenizer)
    assert torch.equal(rows[:base_vocab], old[:base_vocab])
    assert torch.allclose(rows[base_vocab:], old[:base_vocab].mean(0).expand(len(tokenizer) - base_vocab, -1))
    assert model.generation_config.num_beams == 5
    for name, parameter in vision.state_dict().items():
        assert torch.equal(model.vision_tokenizer.state_dict()[name], parameter), name
    inputs = processor(text="<image>a", images=random_images(1), return_tensors="pt")
    assert model.generate(**inputs, max_new_tokens=2).shape[0] == 1

    config_before = (tmp_path / "seed-opt" / "config.json").read_text()
    assert script.main(arguments) == 1  # no overwrite without the flag
    assert (tmp_path / "seed-opt" / "config.json").read_text() == config_before
    assert script.main([*arguments, "--overwrite"]) == 0


def sample_ids(tokenizer) -> torch.Tensor:
    return torch.tensor([[tokenizer.bos_token_id, 5, 6, tokenizer.image_token_start_id + 3, 8, 9]])


def test_a_plain_opt_folder_is_refused_with_the_way_to_build_seed_opt(tmp_path):
    # transformers only warns and then reinitialises every weight of a model of another type.
    config = OPTConfig(
        vocab_size=64, hidden_size=16, num_hidden_layers=1, ffn_dim=32, num_attention_heads=2, word_embed_proj_dim=16
    )
    OPTForCausalLM(config).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match=r"model_type 'seed_opt'\), got model_type 'opt'.*build_seed_opt\.py"):
        SeedOPTForConditionalGeneration.from_pretrained(tmp_path)


def test_cache_passed_as_past_key_values_continues_the_sequence(tokenizer, model):
    input_ids = sample_ids(tokenizer)
    full = model(input_ids=input_ids).logits
    prefix = model(input_ids=input_ids[:, :4], use_cache=True)
    continued = model(input_ids=input_ids[:, 4:], cache=prefix.cache).logits
    torch.testing.assert_close(continued, full[:, 4:])
    prefix = model(input_ids=input_ids[:, :4], use_cache=True)
    with pytest.warns(FutureWarning, match="`past_key_values` is deprecated"):  # OPT's own deprecation warning
        continued = model(input_ids=input_ids[:, 4:], past_key_values=prefix.cache).logits
    torch.testing.assert_close(continued, full[:, 4:])
    with pytest.raises(ValueError, match="Both `past_key_values` and `cache` are set"):
        model(input_ids=input_ids[:, 4:], cache=prefix.cache, past_key_values=prefix.cache)


def test_return_dict_false_returns_a_tuple(tokenizer, model):
    input_ids = sample_ids(tokenizer)
    as_output = model(input_ids=input_ids, labels=input_ids)
    loss, logits, *_ = model(input_ids=input_ids, labels=input_ids, return_dict=False)
    torch.testing.assert_close(loss, as_output.loss, rtol=0, atol=0)
    torch.testing.assert_close(logits, as_output.logits, rtol=0, atol=0)


def test_inputs_embeds_with_pixel_values_equal_input_ids(tokenizer, model):
    processor = tiny_processor(tokenizer)
    inputs = processor(
        text=["<image>a red", "a <image>"],
        images=random_images(2),
        padding=True,
        padding_side="left",
        return_tensors="pt",
    )
    embeds = model.get_input_embeddings()(inputs.input_ids)
    from_ids = model(**inputs, labels=inputs.input_ids)
    from_embeds = model(
        inputs_embeds=embeds,
        attention_mask=inputs.attention_mask,
        pixel_values=inputs.pixel_values,
        labels=inputs.input_ids,
    )
    torch.testing.assert_close(from_embeds.logits, from_ids.logits, rtol=0, atol=0)
    torch.testing.assert_close(from_embeds.loss, from_ids.loss, rtol=0, atol=0)

    generated = model.generate(**inputs, max_new_tokens=4, num_beams=1)[:, inputs.input_ids.shape[1] :]
    from_embeds = model.generate(
        inputs_embeds=embeds,
        attention_mask=inputs.attention_mask,
        pixel_values=inputs.pixel_values,
        max_new_tokens=4,
        num_beams=1,
    )
    assert torch.equal(from_embeds, generated)


def test_assisted_and_prompt_lookup_decoding_with_images_equal_greedy(tokenizer, model):
    # The prompt repeats "a": prompt lookup proposes what followed it, the image block.
    inputs = tiny_processor(tokenizer)(text="a<image>a", images=random_images(1), return_tensors="pt")
    greedy = model.generate(**inputs, max_new_tokens=6, num_beams=1, do_sample=False)
    # An assistant without a vision tokenizer: it reads the code ids the model wrote into the prompt.
    assistant = tiny_seed_opt(tokenizer, vision_seed=None, seed=1)
    assisted = model.generate(**inputs, max_new_tokens=6, num_beams=1, do_sample=False, assistant_model=assistant)
    lookup = model.generate(**inputs, max_new_tokens=6, num_beams=1, do_sample=False, prompt_lookup_num_tokens=3)
    assert torch.equal(assisted, greedy) and torch.equal(lookup, greedy)


def test_generation_mode_image_writes_one_block_like_generate_images(tokenizer, model):
    prompts = tokenizer(["a", "A photo of a red"], padding=True, padding_side="left", return_tensors="pt")
    codes = model.generate(**prompts, generation_mode="image")
    assert codes.shape == (2, tokenizer.image_seq_length)
    assert torch.equal(codes, model.generate_images(**prompts))
    with_scores = model.generate(**prompts, generation_mode="image", return_dict_in_generate=True, output_scores=True)
    assert torch.equal(with_scores.sequences, codes) and len(with_scores.scores) == tokenizer.image_seq_length + 1
    # An image prompt, read through the vision tokenizer.
    inputs = tiny_processor(tokenizer)(text="<image>a", images=random_images(1), return_tensors="pt")
    assert model.generate(**inputs, generation_mode="image").shape == (1, tokenizer.image_seq_length)
    with pytest.raises(ValueError, match=r"generation_mode must be one of \('image', 'text'\), got 'audio'"):
        model.generate(**prompts, generation_mode="audio")


class BanImageCodes(LogitsProcessor):
    """A user logits processor that rules out every image code."""

    def __init__(self, tokenizer):
        self.codes = slice(tokenizer.image_token_start_id, tokenizer.image_token_start_id + tokenizer.num_image_tokens)

    def __call__(self, input_ids, scores):
        scores[:, self.codes] = -float("inf")
        return scores


def test_generate_images_refuses_what_would_break_the_block(tokenizer, model):
    prompt = tokenizer("a red", return_tensors="pt")
    code = tokenizer.image_token_start_id + 5
    refused = {
        "max_time": 0.001,
        "stop_strings": ["a"],
        "stopping_criteria": StoppingCriteriaList([MaxLengthCriteria(max_length=4)]),
        "suppress_tokens": [code],
        "begin_suppress_tokens": [tokenizer.eoi_token_id],
        "bad_words_ids": [[code]],
    }
    for name, value in refused.items():
        with pytest.raises(
            ValueError, match=rf"do not pass {name}|{name} bans \[{value if name != 'bad_words_ids' else code}"
        ):
            model.generate_images(**prompt, **{name: value})
    for sampling in ({}, {"do_sample": True}):
        with pytest.raises(ValueError, match="has a score of -inf"):
            model.generate_images(**prompt, logits_processor=[BanImageCodes(tokenizer)], **sampling)

    # The prompt, `<img>` and 32 codes must fit in the 96 learned positions.
    assert model.generate_images(torch.full((1, 63), 5)).shape == (1, tokenizer.image_seq_length)
    with pytest.raises(ValueError, match=r"A prompt of 64 tokens .* needs 97 positions but the model has 96"):
        model.generate_images(torch.full((1, 64), 5))


def test_generate_images_infers_the_attention_mask_from_padding(tokenizer, model):
    prompts = tokenizer(["a", "A photo of a red"], padding=True, padding_side="left", return_tensors="pt")
    assert (prompts.attention_mask == 0).any()
    assert torch.equal(model.generate_images(prompts.input_ids), model.generate_images(**prompts))


def test_forward_compiles_with_fullgraph(tokenizer, model):
    input_ids = sample_ids(tokenizer)
    attention_mask = torch.ones_like(input_ids)
    # The "eager" backend still captures one whole graph (fullgraph=True fails on any break) without compiling C++.
    compiled = torch.compile(model.forward, fullgraph=True, backend="eager")
    torch.testing.assert_close(
        compiled(input_ids=input_ids, attention_mask=attention_mask).logits,
        model(input_ids=input_ids, attention_mask=attention_mask).logits,
        rtol=0,
        atol=0,
    )


def test_saved_folder_loads_as_causal_lm_without_seed_hf(tokenizer, model, tmp_path):
    model.save_pretrained(tmp_path)
    auto_map = json.loads((tmp_path / "config.json").read_text())["auto_map"]
    class_path = "modeling_seed_opt.SeedOPTForConditionalGeneration"
    assert auto_map["AutoModelForCausalLM"] == auto_map["AutoModelForImageTextToText"] == class_path
    input_ids = sample_ids(tokenizer)
    script = HIDE_SEED_HF + (
        "import sys, torch\n"
        "from transformers import AutoModelForCausalLM\n"
        "model = AutoModelForCausalLM.from_pretrained(sys.argv[1], trust_remote_code=True)\n"
        f"print(type(model).__module__, model(input_ids=torch.tensor({input_ids.tolist()})).logits[0, -1, :4].tolist())\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf_home")}
    result = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)], env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    module, logits = result.stdout.strip().splitlines()[-1].split(" ", 1)
    assert not module.startswith("seed_hf")
    torch.testing.assert_close(torch.tensor(json.loads(logits)), model(input_ids=input_ids).logits[0, -1, :4])


def test_build_script_refuses_other_checkpoints_and_missing_weights(tmp_path, capsys):
    """A non-OPT `--opt` (the SEED folder, a tokenizer folder), missing OPT weights or a non-SEED `--vision-tokenizer`
    end in one error line, never in a randomly initialised model."""
    _, _, arguments = write_build_inputs(tmp_path)
    shutil.copytree(tmp_path / "opt", tmp_path / "opt-missing")
    weights = load_file(tmp_path / "opt" / "model.safetensors")
    del weights["model.decoder.final_layer_norm.weight"]
    save_file(weights, tmp_path / "opt-missing" / "model.safetensors", metadata={"format": "pt"})
    inputs = dict(zip(arguments[::2], arguments[1::2]))
    cases = [
        ("--opt", tmp_path / "vision", r"--opt: .*vision holds a model of type 'seed_vision_tokenizer' "
         r"\(SeedVisionTokenizer\); expected a model of type 'opt'"),
        ("--opt", tmp_path / "tokenizers" / "seed-opt", r"--opt: .*seed-opt holds no model config \(config.json\)"),
        ("--opt", tmp_path / "opt-missing", r"--opt: the weights in .*opt-missing do not match its opt config: 1 "
         r"missing weights \(e.g. model.decoder.final_layer_norm.weight\)"),
        ("--opt", tmp_path / "typo", r"--opt: no such file or folder: .*typo"),
        ("--vision-tokenizer", tmp_path / "opt", r"--vision-tokenizer: .*opt holds a model of type 'opt'"),
    ]  # fmt: skip
    script = load_build_script()
    capsys.readouterr()
    for flag, source, message in cases:
        given = [item for pair in {**inputs, flag: str(source)}.items() for item in pair]
        assert script.main(given) == 1
        error = capsys.readouterr().err.splitlines()[-1]
        assert re.fullmatch(f"error: {message}.*", error), error
        assert not (tmp_path / "seed-opt").exists()
