"""SEED-OPT in transformers pipelines: "image-text-to-text" captions, "any-to-any" writes codes, "text-to-image" draws."""

import importlib.util

import numpy as np
import PIL.Image
import pytest
import torch
from transformers import pipeline
from transformers.pipelines import any_to_any

from seed_hf import SeedOPTForConditionalGeneration, SeedTextToImagePipeline

from seed_opt_helpers import seed_opt_config, tiny_processor
from test_pipeline_seed_decode import tiny_pipeline

DECODE_KWARGS = {"num_inference_steps": 2, "height": 64, "width": 64}


def test_image_text_to_text_pipeline_captions(tokenizer, model):
    processor = tiny_processor(tokenizer)
    captioner = pipeline("image-text-to-text", model=model, processor=processor)
    images = [PIL.Image.fromarray(np.full((28, 28, 3), value, dtype=np.uint8)) for value in (30, 220)]
    text = ["<image>a", "<image>"]
    outputs = captioner(images=images, text=text, max_new_tokens=4, return_full_text=False, padding_side="left")

    inputs = processor(images=images, text=text, padding=True, padding_side="left", return_tensors="pt")
    generated = model.generate(**inputs, max_new_tokens=4)[:, inputs.input_ids.shape[1] :]
    expected = processor.batch_decode(generated, skip_special_tokens=True)
    assert [output["generated_text"] for output in outputs] == expected
    assert (
        captioner(images=images[0], text="<image>a", max_new_tokens=4)[0]["generated_text"] == "<image>a" + expected[0]
    )


def test_text_to_image_pipeline_draws_the_generated_codes(tokenizer, model, tmp_path):
    decode = tiny_pipeline()
    painter = pipeline("text-to-image", model=model, tokenizer=tokenizer, decode_pipeline=decode)
    assert isinstance(painter, SeedTextToImagePipeline)
    outputs = painter("a red circle", generator=torch.Generator().manual_seed(0), **DECODE_KWARGS)
    expected_codes = model.generate_images(**tokenizer("a red circle", return_tensors="pt"))
    assert len(outputs) == 1 and torch.equal(outputs[0]["codes"], expected_codes[0])
    expected_image = decode(codes=expected_codes, generator=torch.Generator().manual_seed(0), **DECODE_KWARGS).images[
        0
    ]
    assert outputs[0]["image"].size == (64, 64)
    assert np.array_equal(np.asarray(outputs[0]["image"]), np.asarray(expected_image))

    batch = painter(
        ["a", "a blue square"], generate_kwargs={"do_sample": True, "num_return_sequences": 2}, **DECODE_KWARGS
    )
    assert [len(drawn) for drawn in batch] == [2, 2]

    # Loaded from folders, as from the Hub.
    model.save_pretrained(tmp_path / "seed-opt")
    tokenizer.save_pretrained(tmp_path / "seed-opt")
    decode.save_pretrained(tmp_path / "decode")
    painter = pipeline("text-to-image", model=str(tmp_path / "seed-opt"), decode_pipeline=str(tmp_path / "decode"))
    drawn = painter("a red circle", **DECODE_KWARGS)
    assert torch.equal(drawn[0]["codes"], expected_codes[0])


def test_text_to_image_pipeline_bad_input(tokenizer, model):
    with pytest.raises(ValueError, match="needs decode_pipeline="):
        pipeline("text-to-image", model=model, tokenizer=tokenizer)
    config = seed_opt_config(tokenizer)
    config.image_token_start_id = config.boi_token_id = config.eoi_token_id = None
    painter = pipeline(
        "text-to-image",
        model=SeedOPTForConditionalGeneration(config).eval(),
        tokenizer=tokenizer,
        decode_pipeline=tiny_pipeline(),
    )
    with pytest.raises(ValueError, match="This model has no image tokens"):
        painter("a red circle", **DECODE_KWARGS)
    with pytest.raises(ValueError, match="takes a prompt string"):
        pipeline("text-to-image", model=model, tokenizer=tokenizer, decode_pipeline=tiny_pipeline())(3)


def test_any_to_any_pipeline_writes_image_codes_that_decode_in_one_call(tokenizer, model, monkeypatch):
    if importlib.util.find_spec("torchvision") is None:
        # The pipeline asks for torchvision whenever a model reads images; SeedImageProcessor needs only PIL.
        monkeypatch.setattr(any_to_any, "requires_backends", lambda *args, **kwargs: None)
    processor = tiny_processor(tokenizer)
    generator = pipeline("any-to-any", model=model, processor=processor)
    outputs = generator(text="a red circle", generation_mode="image")
    expected = model.generate(**tokenizer("a red circle", return_tensors="pt"), generation_mode="image")
    assert len(outputs) == 1 and torch.equal(outputs[0]["generated_image"], expected[0])
    decode = tiny_pipeline()
    images = decode(codes=torch.stack([output["generated_image"] for output in outputs]), **DECODE_KWARGS).images
    assert len(images) == 1 and images[0].size == (64, 64)

    sampled = generator(
        text="a", generation_mode="image", generate_kwargs={"do_sample": True, "num_return_sequences": 2}
    )
    assert [output["generated_image"].shape for output in sampled] == [(tokenizer.image_seq_length,)] * 2
    text = generator(text="a red circle", max_new_tokens=3, generate_kwargs={"num_beams": 1})[0]["generated_text"]
    generated = model.generate(**tokenizer("a red circle", return_tensors="pt"), max_new_tokens=3, num_beams=1)
    assert text == processor.post_process_multimodal_output(generated)[0]

    with pytest.raises(ValueError, match=r"shape \(num_images, 32\), got torch.int64 of shape \(1, 5\)"):
        processor.post_process_multimodal_output(torch.zeros(1, 5, dtype=torch.long), generation_mode="image")
    with pytest.raises(ValueError, match=rf"codes in \[0, {tokenizer.num_image_tokens}\), got values from -1"):
        processor.post_process_multimodal_output(torch.full((1, 32), -1), generation_mode="image")
    with pytest.raises(ValueError, match="outputs text or image, got generation_mode='audio'"):
        processor.post_process_multimodal_output(expected, generation_mode="audio")
