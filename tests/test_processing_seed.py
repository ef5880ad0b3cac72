"""Tests of SeedProcessor: interleaved text and images (or codes) -> SEED-OPT inputs, and back to text."""

import json

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoProcessor, pipeline

from seed_hf import SeedImageProcessor, SeedOPTTokenizer, SeedProcessor

from conftest import tiny_config, tiny_tokenizer
from seed_opt_helpers import seed_opt_config
from text_helpers import make_seed_opt_tokenizer

SEQ_LEN = 32
NUM_CODES = tiny_config().codebook_size
TEXTS = ["A photo of a red circle.", "<image>A photo of", "Question: <image> or <image>? Answer: <image>"]
COLOURS = ["red", "green", "blue", "yellow", "white", "black"]


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    return make_seed_opt_tokenizer(tmp_path_factory.mktemp("tokenizer"), num_image_tokens=NUM_CODES)


@pytest.fixture(scope="module")
def processor(tokenizer):
    size = tiny_config().vision_config.image_size
    return SeedProcessor(SeedImageProcessor(size={"height": size, "width": size}), tokenizer)


def images(count: int) -> list[Image.Image]:
    return [Image.new("RGB", (30 + 5 * i, 24), COLOURS[i % len(COLOURS)]) for i in range(count)]


def random_codes(count: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, NUM_CODES, (count, SEQ_LEN), generator=torch.Generator().manual_seed(seed))


def expected_ids(tokenizer, sample: str, image_slots: list[list[int]]) -> list[int]:
    """`sample` tokenized piece by piece around its `<image>`s, each replaced by `<img>` + slots + `</img>`."""
    pieces = sample.split("<image>")
    ids = [tokenizer.bos_token_id]
    for index, piece in enumerate(pieces):
        ids += tokenizer(piece, add_special_tokens=False).input_ids if piece else []
        if index < len(image_slots):
            ids += [tokenizer.boi_token_id, *image_slots[index], tokenizer.eoi_token_id]
    return ids


def test_text_with_zero_one_and_three_images(processor, tokenizer):
    pictures = images(4)
    inputs = processor(text=TEXTS, images=pictures)
    placeholders = [tokenizer.image_token_id] * SEQ_LEN
    for sample, ids, count in zip(TEXTS, inputs["input_ids"], (0, 1, 3)):
        assert ids == expected_ids(tokenizer, sample, [placeholders] * count)
    expected_pixels = processor.image_processor(pictures, return_tensors="pt").pixel_values
    assert torch.equal(torch.as_tensor(np.array(inputs["pixel_values"])), expected_pixels)
    assert processor(text=TEXTS[:1])["input_ids"] == [expected_ids(tokenizer, TEXTS[0], [])]


def test_codes_fill_the_slots_the_model_would_fill(processor, tokenizer):
    pixel_values = processor(text=TEXTS, images=images(4), padding=True, return_tensors="pt")
    vision_tokenizer = tiny_tokenizer()
    with torch.no_grad():
        codes = vision_tokenizer.encode(pixel_values.pixel_values)
    from_codes = processor(text=TEXTS, codes=codes, padding=True, return_tensors="pt")
    assert set(from_codes) == {"input_ids", "attention_mask"}
    # What SEED-OPT does with pixel_values: write the code ids into the placeholder slots, in reading order.
    filled = pixel_values.input_ids.clone()
    filled[filled == tokenizer.image_token_id] = tokenizer.codes_to_ids(codes).flatten()
    assert torch.equal(from_codes.input_ids, filled)
    assert torch.equal(from_codes.attention_mask, pixel_values.attention_mask)
    per_sample = tokenizer.ids_to_codes(from_codes.input_ids)
    assert [rows.tolist() for rows in per_sample] == [codes[:0].tolist(), codes[:1].tolist(), codes[1:].tolist()]


@pytest.mark.parametrize("padding_side", ["left", "right"])
def test_mixed_batch_pads_like_single_samples(processor, tokenizer, padding_side):
    codes = random_codes(4)
    batch = processor(text=TEXTS, codes=codes, padding=True, padding_side=padding_side, return_tensors="pt")
    length = batch.input_ids.shape[1]
    offsets = [0, 0, 1]
    for index, sample in enumerate(TEXTS):
        single = processor(text=sample, codes=codes[offsets[index] : offsets[index] + sample.count("<image>")])
        ids = single["input_ids"][0]
        pad = [tokenizer.pad_token_id] * (length - len(ids))
        mask = [0] * len(pad)
        if padding_side == "left":
            assert batch.input_ids[index].tolist() == pad + ids
            assert batch.attention_mask[index].tolist() == mask + [1] * len(ids)
        else:
            assert batch.input_ids[index].tolist() == ids + pad
            assert batch.attention_mask[index].tolist() == [1] * len(ids) + mask
    per_sample = processor.ids_to_codes(batch.input_ids)
    assert [len(rows) for rows in per_sample] == [0, 1, 3]
    assert torch.equal(torch.cat(per_sample), codes)


def test_mm_token_type_ids_mark_image_blocks(processor, tokenizer):
    from_images = processor(text=TEXTS[1:], images=images(4), padding=True, return_mm_token_type_ids=True)
    from_codes = processor(text=TEXTS[1:], codes=random_codes(4), padding=True, return_mm_token_type_ids=True)
    for inputs in (from_images, from_codes):
        for ids, types in zip(inputs["input_ids"], inputs["mm_token_type_ids"]):
            in_blocks = np.cumsum(np.equal(ids, tokenizer.boi_token_id)) > np.cumsum(
                np.equal(ids, tokenizer.eoi_token_id)
            )
            in_blocks |= np.equal(ids, tokenizer.eoi_token_id)
            assert types == in_blocks.astype(int).tolist()


@pytest.mark.parametrize("kind", ["tensor", "numpy", "list"])
def test_codes_of_any_kind(processor, kind):
    codes = random_codes(1, seed=3)
    given = {"tensor": codes, "numpy": codes.numpy(), "list": codes.tolist()}[kind]
    inputs = processor(text="<image>", codes=given, return_tensors="pt")
    assert torch.equal(processor.ids_to_codes(inputs.input_ids[0]), codes)


def test_decoding_removes_or_marks_image_blocks(processor, tokenizer):
    codes = random_codes(4)
    batch = processor(text=TEXTS, codes=codes, padding=True, padding_side="left", return_tensors="pt")
    without_images = [sample.replace("<image>", "") for sample in TEXTS]
    assert processor.batch_decode(batch.input_ids, skip_special_tokens=True) == without_images
    assert processor.post_process_image_text_to_text(batch.input_ids) == without_images
    assert processor.decode(batch.input_ids[2], skip_special_tokens=True, image_marker="[image]") == (
        "Question: [image] or [image]? Answer: [image]"
    )
    # Without skipping, each block is written back as <image>: the decoded prompt processes to the same ids.
    decoded = processor.batch_decode([ids[mask.bool()] for ids, mask in zip(batch.input_ids, batch.attention_mask)])
    assert decoded == [f"</s>{sample}" for sample in TEXTS]
    again = processor(text=decoded, codes=codes, padding=True, padding_side="left", add_special_tokens=False)
    assert again["input_ids"] == batch.input_ids.tolist()

    # A generated continuation: a caption after the prompt, or an image block (its codes come out with ids_to_codes).
    prompt = batch.input_ids[1].tolist()
    caption = tokenizer(" a red circle", add_special_tokens=False).input_ids
    image = [tokenizer.boi_token_id, *tokenizer.codes_to_ids(codes[3].tolist()), tokenizer.eoi_token_id]
    continuations = [caption + [tokenizer.eos_token_id], image + [tokenizer.eos_token_id]]
    width = max(map(len, continuations))
    generated = torch.tensor([prompt + ids + [tokenizer.pad_token_id] * (width - len(ids)) for ids in continuations])
    assert processor.post_process_image_text_to_text(generated) == ["A photo of a red circle", "A photo of"]
    assert torch.equal(processor.ids_to_codes(generated)[1], codes[[0, 3]])


@pytest.mark.parametrize("with_config", [False, True], ids=["processor-only", "with-config-json"])
def test_save_load_through_auto_processor(processor, tmp_path, with_config):
    processor.save_pretrained(tmp_path)
    if with_config:
        seed_opt_config(processor.tokenizer, vision_config=tiny_config().to_dict()).save_pretrained(tmp_path)
    assert not (tmp_path / "preprocessor_config.json").exists()
    saved = json.loads((tmp_path / "processor_config.json").read_text())
    assert saved["processor_class"] == "SeedProcessor"
    loaded = AutoProcessor.from_pretrained(tmp_path)
    assert type(loaded) is SeedProcessor
    assert type(loaded.tokenizer) is SeedOPTTokenizer and type(loaded.image_processor) is SeedImageProcessor
    assert loaded.to_dict() == processor.to_dict()
    assert loaded.tokenizer.get_vocab() == processor.tokenizer.get_vocab()
    assert loaded.image_seq_length == SEQ_LEN
    kwargs = dict(text=TEXTS, padding=True, padding_side="left", return_tensors="pt")
    expected, got = processor(images=images(4), **kwargs), loaded(images=images(4), **kwargs)
    assert set(got) == set(expected) and all(torch.equal(got[key], expected[key]) for key in expected)
    assert torch.equal(
        loaded(codes=random_codes(4), **kwargs).input_ids, processor(codes=random_codes(4), **kwargs).input_ids
    )


def test_to_dict_is_stable_across_save_and_load(tokenizer, tmp_path):
    """Saving does not change `to_dict()`, a reload gives it back, and saving the reload writes the same file."""
    processor = SeedProcessor(SeedImageProcessor(size={"height": 28, "width": 28}), tokenizer)
    before = processor.to_dict()
    assert before["auto_map"] == {"AutoProcessor": "processing_seed.SeedProcessor"}
    assert before["image_processor"]["auto_map"] == {"AutoImageProcessor": "image_processing_seed.SeedImageProcessor"}
    processor.save_pretrained(tmp_path / "saved")
    loaded = AutoProcessor.from_pretrained(tmp_path / "saved")
    loaded.save_pretrained(tmp_path / "again")
    assert processor.to_dict() == loaded.to_dict() == AutoProcessor.from_pretrained(tmp_path / "again").to_dict()
    assert loaded.to_dict() == before
    config_file = "processor_config.json"
    assert (tmp_path / "saved" / config_file).read_text() == (tmp_path / "again" / config_file).read_text()


def test_saving_leaves_the_image_processor_as_it_was(tokenizer, tmp_path):
    processor = SeedProcessor(SeedImageProcessor(size={"height": 28, "width": 28}), tokenizer)
    processor.save_pretrained(tmp_path / "processor")
    assert not hasattr(processor.image_processor, "auto_map")
    # Saved alone, the image processor points AutoImageProcessor at its own code only.
    processor.image_processor.save_pretrained(tmp_path / "image-processor")
    saved = json.loads((tmp_path / "image-processor" / "preprocessor_config.json").read_text())
    assert saved["auto_map"] == {"AutoImageProcessor": "image_processing_seed.SeedImageProcessor"}


def chat(*content, role="user") -> dict:
    """One chat message: a string is a text entry, a dict the source of an image entry (`image`, `path`, `url`)."""
    entries = [
        {"type": "text", "text": item} if isinstance(item, str) else {"type": "image", **item} for item in content
    ]
    return {"role": role, "content": entries}


def test_chat_template_writes_the_prompts_as_trained(processor, tmp_path):
    """Messages render without role markers: the captioning and VQA prompts come out as written."""
    picture = images(1)[0]
    picture.save(tmp_path / "picture.png")
    caption = [chat({"image": picture}, "A photo of")]
    assert processor.apply_chat_template(caption, add_generation_prompt=True) == "<image>A photo of"
    question = [chat({"image": picture}, "Question: What colour is it? Answer:"), chat(" red", role="assistant")]
    assert processor.apply_chat_template(question) == "<image>Question: What colour is it? Answer: red</s>"

    expected = processor(text="<image>A photo of", images=[picture], return_tensors="pt")
    for image_entry in ({"image": picture}, {"path": str(tmp_path / "picture.png")}):
        inputs = processor.apply_chat_template(
            [chat(image_entry, "A photo of")], tokenize=True, return_dict=True, return_tensors="pt"
        )
        assert set(inputs) == set(expected) and all(torch.equal(inputs[key], expected[key]) for key in expected)

    processor.save_pretrained(tmp_path / "saved")
    assert (tmp_path / "saved" / "chat_template.jinja").read_text() == processor.chat_template
    assert AutoProcessor.from_pretrained(tmp_path / "saved").chat_template == processor.chat_template


def test_image_text_to_text_pipeline_takes_chat_messages(processor, model):
    picture = images(1)[0]
    chatbot = pipeline("image-text-to-text", model=model, processor=processor)
    messages = [chat({"image": picture}, "A photo of")]
    (output,) = chatbot(text=messages, max_new_tokens=3)
    inputs = processor(text="<image>A photo of", images=[picture], return_tensors="pt")
    with torch.no_grad():
        generated = model.generate(**inputs, max_new_tokens=3)[:, inputs.input_ids.shape[1] :]
    reply = {"role": "assistant", "content": processor.decode(generated[0], skip_special_tokens=True)}
    assert output["generated_text"] == [*messages, reply]


def bad_calls():
    """(name, processor keyword arguments, expected error) for inputs the processor must refuse."""
    codes = random_codes(2)
    return [
        ("more images", dict(text="<image>", images=images(2)), "Found total 1 <image> tokens and 2 images"),
        (
            "fewer images",
            dict(text=["<image>", "<image>"], images=images(1)),
            "Found total 2 <image> tokens and 1 images",
        ),
        ("no images", dict(text="<image>"), "Found 1 <image> tokens in the text but no images"),
        ("more codes", dict(text="<image>", codes=codes), "Found total 1 <image> tokens and 2 code rows"),
        ("codes out of range", dict(text="<image>", codes=codes[:1] + NUM_CODES), r"codes in \[0, 64\)"),
        (
            "short codes",
            dict(text="<image>", codes=codes[:1, :-1]),
            r"codes of shape \(num_images, 32\), got \(1, 31\)",
        ),
        ("flat codes", dict(text="<image>", codes=codes[0]), r"codes of shape \(num_images, 32\), got \(32,\)"),
        ("images and codes", dict(text="<image>", images=images(1), codes=codes[:1]), "either `images` or their"),
        ("codes without text", dict(codes=codes[:1]), "pass `text` too"),
        ("non-string text", dict(text=[["<image>"]], codes=codes[:1]), "`text` must be a string or a list of strings"),
        (
            "truncation cuts the block end",
            dict(text="A photo <image>", images=images(1), truncation=True, max_length=20),
            r"Truncation cut an image block in sample 0: its text has 32 <image> tokens but its input_ids keep \d+",
        ),
        (
            "truncation cuts only </img>",
            dict(text="<image>", codes=codes[:1], truncation=True, max_length=SEQ_LEN + 2),
            "its text has 1 </img> tokens but its input_ids keep 0",
        ),
    ]


@pytest.mark.parametrize("case", range(12))
def test_bad_inputs(processor, case):
    name, kwargs, message = bad_calls()[case]
    with pytest.raises(ValueError, match=message):
        processor(**kwargs)


def test_left_truncation_that_cuts_a_block(processor):
    left = SeedOPTTokenizer.from_pretrained(processor.tokenizer.name_or_path, truncation_side="left")
    left_processor = SeedProcessor(processor.image_processor, left)
    with pytest.raises(ValueError, match="its text has 1 <img> tokens but its input_ids keep 0"):
        left_processor(text="<image>", images=images(1), truncation=True, max_length=SEQ_LEN + 2)


def test_truncation_that_keeps_whole_blocks_is_fine(processor):
    inputs = processor(text="<image> red circle", codes=random_codes(1), truncation=True, max_length=SEQ_LEN + 3)
    assert len(inputs["input_ids"][0]) == SEQ_LEN + 3


def test_processor_needs_image_tokens(processor, tmp_path):
    processor.tokenizer.save_pretrained(tmp_path)
    config_file = tmp_path / "tokenizer_config.json"
    config = json.loads(config_file.read_text())
    config["image_token_start_id"] = None
    config_file.write_text(json.dumps(config))
    with pytest.raises(ValueError, match="needs a tokenizer with SEED image tokens"):
        SeedProcessor(processor.image_processor, SeedOPTTokenizer.from_pretrained(tmp_path))
