"""Tests of SeedDecodePipeline with tiny random components: 64x64 pictures, 2 denoising steps, on CPU."""

import json
import re
import sys

import numpy as np
import PIL.Image
import pytest
import torch
from diffusers import (
    AutoencoderKL,
    DiffusionPipeline,
    DPMSolverMultistepScheduler,
    PNDMScheduler,
    StableDiffusionPipeline,
    UNet2DConditionModel,
)
from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
from peft import LoraConfig
from peft.utils import get_peft_model_state_dict
from transformers import CLIPConfig, CLIPImageProcessor

from seed_hf import (
    SeedDecodePipeline,
    SeedDecodePipelineOutput,
    SeedImageProcessor,
    SeedNullEmbedding,
    SeedVisionTokenizer,
)

from conftest import tiny_tokenizer

STEPS = 2


CODES = torch.tensor([list(range(32)), [63 - i for i in range(32)]])


def tiny_unet() -> UNet2DConditionModel:
    """A 2-level UNet attending to 768-wide embeddings, as SD v1's; its 16x16 latents make 64x64 pictures."""
    torch.manual_seed(0)
    return UNet2DConditionModel(
        sample_size=16,
        block_out_channels=(4, 8),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=768,
        attention_head_dim=2,
        norm_num_groups=2,
    ).eval()


def tiny_vae() -> AutoencoderKL:
    """A 3-level VAE: a scale factor of 4, as few latent pixels as possible for 64x64 pictures."""
    torch.manual_seed(0)
    return AutoencoderKL(
        sample_size=64,
        block_out_channels=(4, 8, 8),
        down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3,
        latent_channels=4,
        norm_num_groups=2,
    ).eval()


def tiny_null_embedding() -> SeedNullEmbedding:
    return SeedNullEmbedding.from_embedding(torch.randn(1, 77, 768, generator=torch.Generator().manual_seed(1)))


def tiny_pipeline(**overrides) -> SeedDecodePipeline:
    components = dict(
        vae=tiny_vae(), unet=tiny_unet(), null_embedding=tiny_null_embedding(), vision_tokenizer=tiny_tokenizer()
    )
    pipe = SeedDecodePipeline(**{**components, **overrides})
    pipe.set_progress_bar_config(disable=True)
    return pipe


def stable_diffusion_twin(pipe: SeedDecodePipeline) -> StableDiffusionPipeline:
    """A StableDiffusionPipeline sharing `pipe`'s UNet and VAE, with its own copy of the scheduler."""
    sd = StableDiffusionPipeline(
        vae=pipe.vae,
        text_encoder=None,
        tokenizer=None,
        unet=pipe.unet,
        scheduler=type(pipe.scheduler).from_config(pipe.scheduler.config),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    sd.set_progress_bar_config(disable=True)
    return sd


def decode(pipe, seed=0, **kwargs):
    kwargs = {"num_inference_steps": STEPS, "output_type": "np", **kwargs}
    return pipe(generator=torch.Generator().manual_seed(seed), **kwargs)


def test_default_scheduler_reproduces_compvis_plms_timesteps():
    pipe = tiny_pipeline()
    assert isinstance(pipe.scheduler, PNDMScheduler)
    pipe.scheduler.set_timesteps(50)
    # CompVis PLMS at 50 steps: 981, 961, ..., 1 (PNDM repeats one step for its first PLMS update).
    assert sorted(set(pipe.scheduler.timesteps.tolist())) == list(range(1, 1000, 20))


@pytest.mark.parametrize("scheduler_class", [PNDMScheduler, DPMSolverMultistepScheduler])
def test_equals_stable_diffusion_with_generation_embeds(scheduler_class):
    """The pipeline is Stable Diffusion with SEED's embeddings as prompt and the null embedding as negative."""
    pipe = tiny_pipeline()
    pipe.scheduler = scheduler_class.from_config(pipe.scheduler.config)
    sd = stable_diffusion_twin(pipe)

    output = decode(pipe, codes=CODES, num_images_per_prompt=2)
    expected = decode(
        sd,
        prompt_embeds=pipe.vision_tokenizer.embed_codes(CODES),
        negative_prompt_embeds=pipe.null_embedding().expand(2, -1, -1),
        num_images_per_prompt=2,
    ).images

    assert output.images.shape == (4, 64, 64, 3)
    assert np.abs(output.images - expected).max() == 0
    assert torch.equal(output.codes, CODES)


def test_negative_codes_replace_the_null_embedding():
    pipe = tiny_pipeline()
    negative = CODES.flip(0)
    output = decode(pipe, codes=CODES.tolist(), negative_codes=negative.tolist())
    expected = decode(
        stable_diffusion_twin(pipe),
        prompt_embeds=pipe.vision_tokenizer.embed_codes(CODES),
        negative_prompt_embeds=pipe.vision_tokenizer.embed_codes(negative),
    ).images
    assert np.abs(output.images - expected).max() == 0

    # Both branches reach the pictures: other negative codes or other codes, with the same noise, change them.
    plain = decode(pipe, codes=CODES).images
    assert np.abs(output.images - plain).max() > 1e-3
    assert np.abs(decode(pipe, codes=negative).images - plain).max() > 1e-3


def test_generation_embeds_need_no_tokenizer():
    pipe = tiny_pipeline()
    embeds = pipe.vision_tokenizer.embed_codes(CODES)
    without_tokenizer = tiny_pipeline(vision_tokenizer=None)

    output = decode(without_tokenizer, generation_embeds=embeds, guidance_scale=1.0)
    assert output.codes is None
    assert np.abs(output.images - decode(pipe, codes=CODES, guidance_scale=1.0).images).max() == 0
    with pytest.raises(ValueError, match="need a `vision_tokenizer`"):
        without_tokenizer(codes=CODES)


def test_image_to_codes_to_image():
    pipe = tiny_pipeline()
    rng = np.random.default_rng(0)
    images = [PIL.Image.fromarray(rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)) for _ in range(2)]

    output = decode(pipe, image=images, output_type="pil")
    pixel_values = SeedImageProcessor(size={"height": 28, "width": 28})(images, return_tensors="pt").pixel_values
    codes = pipe.vision_tokenizer.encode(pixel_values)

    assert torch.equal(output.codes, codes)
    assert [image.size for image in output.images] == [(64, 64)] * 2
    redrawn = decode(pipe, codes=codes, output_type="pil").images
    assert all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(output.images, redrawn))


def test_output_types_and_tuple():
    pipe = tiny_pipeline()
    latents = decode(pipe, codes=CODES[:1], guidance_scale=1.0, output_type="latent").images
    pictures = decode(pipe, codes=CODES[:1], guidance_scale=1.0, output_type="pt").images
    assert latents.shape == (1, 4, 16, 16)
    assert pictures.shape == (1, 3, 64, 64) and 0 <= pictures.min() and pictures.max() <= 1

    images, codes, nsfw = decode(pipe, codes=CODES[:1], guidance_scale=1.0, return_dict=False)
    assert images.shape == (1, 64, 64, 3) and torch.equal(codes, CODES[:1]) and nsfw is None


def test_callback_on_step_end_sees_and_replaces_tensors():
    pipe = tiny_pipeline()
    seen = []

    def callback(pipeline, step, timestep, tensors):
        seen.append((step, {name: tuple(tensor.shape) for name, tensor in tensors.items()}))
        return {"latents": torch.zeros_like(tensors["latents"])}

    output = decode(
        pipe,
        codes=CODES[:1],
        output_type="latent",
        callback_on_step_end=callback,
        callback_on_step_end_tensor_inputs=["latents", "generation_embeds", "negative_generation_embeds"],
    )
    shapes = {"latents": (1, 4, 16, 16), "generation_embeds": (1, 77, 768), "negative_generation_embeds": (1, 77, 768)}
    assert seen == [(step, shapes) for step in range(pipe.num_timesteps)]
    assert torch.count_nonzero(output.images) == 0


def test_save_pretrained_round_trip(tmp_path):
    pipe = tiny_pipeline()
    pipe.save_pretrained(tmp_path)

    # `[module, class]` entries with the code next to them: the layout diffusers loads custom code from.
    index = json.loads((tmp_path / "model_index.json").read_text())
    assert index["_class_name"] == ["pipeline_seed_decode", "SeedDecodePipeline"]
    assert index["null_embedding"] == ["modeling_seed_null_embedding", "SeedNullEmbedding"]
    assert index["vision_tokenizer"] == ["modeling_seed_vision_tokenizer", "SeedVisionTokenizer"]
    assert sorted(path.relative_to(tmp_path).as_posix() for path in tmp_path.rglob("*.py")) == [
        "image_processing_seed.py",
        "modeling_seed_null_embedding.py",
        "null_embedding/modeling_seed_null_embedding.py",
        "pipeline_seed_decode.py",
        "vision_tokenizer/configuration_seed.py",
        "vision_tokenizer/modeling_seed_vision_tokenizer.py",
    ]
    weights = sorted(path.name for path in tmp_path.rglob("*") if path.suffix in (".safetensors", ".bin", ".pt"))
    assert weights == ["diffusion_pytorch_model.safetensors"] * 3 + ["model.safetensors"]

    assert isinstance(SeedDecodePipeline(**pipe.components), SeedDecodePipeline)
    # The installed classes load the folder: its code is not run, so no `trust_remote_code` is needed.
    loaded = SeedDecodePipeline.from_pretrained(tmp_path)
    loaded.set_progress_bar_config(disable=True)
    assert type(loaded.vision_tokenizer) is SeedVisionTokenizer and type(loaded.null_embedding) is SeedNullEmbedding
    assert torch.equal(loaded.null_embedding(), pipe.null_embedding())
    public = lambda config: {key: value for key, value in config.items() if not key.startswith("_")}  # noqa: E731
    assert public(loaded.scheduler.config) == public(pipe.scheduler.config)
    assert np.abs(decode(loaded, codes=CODES).images - decode(pipe, codes=CODES).images).max() == 0

    half = SeedDecodePipeline.from_pretrained(tmp_path, dtype=torch.bfloat16)
    assert {half.unet.dtype, half.vae.dtype, half.null_embedding.dtype, half.vision_tokenizer.dtype} == {
        torch.bfloat16
    }
    # diffusers' generic loader runs the folder's code only when asked to.
    with pytest.raises(ValueError, match="trust_remote_code=True"):
        DiffusionPipeline.from_pretrained(tmp_path)


def test_loads_folders_that_name_seed_hf_modules(tmp_path):
    """Folders saved before the code travelled with them name seed_hf's modules in `model_index.json`."""
    pipe = tiny_pipeline()
    pipe.save_pretrained(tmp_path)
    index_file = tmp_path / "model_index.json"
    index = json.loads(index_file.read_text())
    index.update(
        _class_name="SeedDecodePipeline",
        null_embedding=["seed_hf.pipeline_seed_decode", "SeedNullEmbedding"],
        vision_tokenizer=["seed_hf.modeling_seed_vision_tokenizer", "SeedVisionTokenizer"],
    )
    index_file.write_text(json.dumps(index))
    for code in tmp_path.rglob("*.py"):
        code.unlink()

    loaded = SeedDecodePipeline.from_pretrained(tmp_path)
    loaded.set_progress_bar_config(disable=True)
    assert np.abs(decode(loaded, codes=CODES).images - decode(pipe, codes=CODES).images).max() == 0


def test_from_pretrained_fetches_a_repo_without_running_its_code(tmp_path, monkeypatch):
    """From the Hub, the folder is fetched as it is (no pickles) and loaded by the installed classes."""
    tiny_pipeline().save_pretrained(tmp_path)
    fetched = []

    def snapshot_download(repo_id, **options):
        fetched.append((repo_id, options))
        return str(tmp_path)

    monkeypatch.setattr("seed_hf.pipeline_seed_decode.snapshot_download", snapshot_download)
    modules_before = set(sys.modules)
    vision_tokenizer = tiny_tokenizer(seed=1)
    loaded = SeedDecodePipeline.from_pretrained("seed-org/decode", revision="v1", vision_tokenizer=vision_tokenizer)

    [(repo_id, options)] = fetched
    assert repo_id == "seed-org/decode" and options["revision"] == "v1"
    assert options["ignore_patterns"] == ["*.bin", "*.pt", "*.pth", "*.ckpt", "*.pkl"]
    assert loaded.vision_tokenizer is vision_tokenizer and type(loaded.null_embedding) is SeedNullEmbedding
    assert not [name for name in set(sys.modules) - modules_before if name.startswith("diffusers_modules")]


def save_tiny_lora(folder, text_encoder_layers=None):
    """A random LoRA of `tiny_unet`'s attention projections, saved in diffusers' LoRA format."""
    unet = tiny_unet()
    torch.manual_seed(1)
    lora = LoraConfig(r=2, lora_alpha=2, target_modules=["to_q", "to_k", "to_v", "to_out.0"], init_lora_weights=False)
    unet.add_adapter(lora)
    SeedDecodePipeline.save_lora_weights(
        folder, unet_lora_layers=get_peft_model_state_dict(unet), text_encoder_lora_layers=text_encoder_layers
    )


def test_lora_weights_load_into_the_unet_and_unload(tmp_path):
    pipe = tiny_pipeline()
    reference = decode(pipe, codes=CODES).images
    save_tiny_lora(tmp_path)

    pipe.load_lora_weights(tmp_path, adapter_name="style")
    assert pipe.get_active_adapters() == ["style"]
    with_lora = decode(pipe, codes=CODES).images
    assert np.abs(with_lora - reference).max() > 1e-3

    pipe.unload_lora_weights()
    assert np.abs(decode(pipe, codes=CODES).images - reference).max() == 0


def test_lora_text_encoder_layers_are_skipped_with_a_warning(tmp_path, caplog):
    text_encoder_layers = {"text_model.encoder.layers.0.self_attn.q_proj.lora_A.weight": torch.zeros(2, 8)}
    save_tiny_lora(tmp_path, text_encoder_layers)
    only_unet = tmp_path / "unet-only"
    save_tiny_lora(only_unet)
    pipe, expected = tiny_pipeline(), tiny_pipeline()
    expected.load_lora_weights(only_unet)

    pipe.load_lora_weights(tmp_path / "pytorch_lora_weights.safetensors")
    assert "Skipping the 1 text-encoder weights" in caplog.text
    assert np.abs(decode(pipe, codes=CODES).images - decode(expected, codes=CODES).images).max() == 0

    with pytest.raises(ValueError, match="must contain 'lora'"):
        pipe.load_lora_weights({"unet.down_blocks.0.weight": torch.zeros(1)})


def test_to_dtype_and_device():
    pipe = tiny_pipeline().to("cpu", torch.bfloat16)
    assert pipe.device == torch.device("cpu")
    assert {pipe.unet.dtype, pipe.vae.dtype, pipe.null_embedding.dtype, pipe.vision_tokenizer.dtype} == {
        torch.bfloat16
    }
    images = decode(pipe, codes=CODES[:1], output_type="pt").images
    assert images.dtype == torch.bfloat16 and torch.isfinite(images).all()


def test_attention_slicing_and_vae_tiling(monkeypatch):
    pipe = tiny_pipeline()
    reference = decode(pipe, codes=CODES[:1]).images

    pipe.enable_attention_slicing(1)
    np.testing.assert_allclose(decode(pipe, codes=CODES[:1]).images, reference, atol=1e-5)

    # Tiles of 32x32 pixels (8x8 latents), so that the 64x64 pictures are decoded in overlapping tiles.
    pipe.vae.enable_tiling()
    pipe.vae.tile_sample_min_size, pipe.vae.tile_latent_min_size = 32, 8
    tiled_calls = []
    tiled_decode = pipe.vae.tiled_decode
    monkeypatch.setattr(
        pipe.vae, "tiled_decode", lambda *args, **kwargs: tiled_calls.append(1) or tiled_decode(*args, **kwargs)
    )
    images = decode(pipe, codes=CODES[:1]).images
    assert tiled_calls and images.shape == (1, 64, 64, 3) and np.isfinite(images).all()


def test_model_cpu_offload(monkeypatch):
    """With the CPU as the offload device: checks the hook chain (not the memory saving) where no accelerator is."""
    reference = decode(tiny_pipeline(), codes=CODES).images
    pipe = tiny_pipeline()
    pipe.enable_model_cpu_offload(device="cpu")
    moved = []

    def spy_on_tokenizer_hook():
        # Each call ends by putting fresh hooks in place (`maybe_free_model_hooks`): spy on the current one.
        hook = pipe.vision_tokenizer._hf_hook
        pre_forward = hook.pre_forward
        monkeypatch.setattr(
            hook, "pre_forward", lambda module, *a, **k: moved.append(1) or pre_forward(module, *a, **k)
        )

    spy_on_tokenizer_hook()
    assert np.abs(decode(pipe, codes=CODES).images - reference).max() == 0
    assert moved == [1]  # `embed_codes` went through the tokenizer's offload hook
    spy_on_tokenizer_hook()
    decode(pipe, image=PIL.Image.new("RGB", (32, 32)), guidance_scale=1.0)
    assert moved == [1, 1]


def test_safety_checker_is_applied_when_given():
    torch.manual_seed(0)
    config = CLIPConfig(
        text_config=dict(hidden_size=16, intermediate_size=16, num_hidden_layers=1, num_attention_heads=2),
        vision_config=dict(
            hidden_size=16, intermediate_size=16, num_hidden_layers=1, num_attention_heads=2, image_size=32
        ),
        projection_dim=16,
    )
    feature_extractor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    pipe = tiny_pipeline(
        safety_checker=StableDiffusionSafetyChecker(config).eval(), feature_extractor=feature_extractor
    )
    output = decode(pipe, codes=CODES, guidance_scale=1.0)
    assert isinstance(output, SeedDecodePipelineOutput)
    assert len(output.nsfw_content_detected) == 2 and all(
        isinstance(flag, bool) for flag in output.nsfw_content_detected
    )

    with pytest.raises(ValueError, match="needs a `feature_extractor`"):
        tiny_pipeline(safety_checker=pipe.safety_checker)


def test_null_embedding_wraps_one_embedding():
    embedding = torch.randn(1, 77, 768)
    null_embedding = SeedNullEmbedding.from_embedding(embedding)
    assert torch.equal(null_embedding(), embedding) and null_embedding.config.sequence_length == 77
    with pytest.raises(ValueError, match=r"shape \(1, sequence_length, hidden_size\), got \(77, 768\)"):
        SeedNullEmbedding.from_embedding(embedding[0])


@pytest.fixture(scope="module")
def checked_pipeline():
    return tiny_pipeline()


BAD_INPUTS = {
    "nothing": ({}, "exactly one of `codes`, `image` or `generation_embeds`, got none"),
    "codes and image": ({"codes": CODES, "image": PIL.Image.new("RGB", (8, 8))}, "got `codes`, `image`"),
    "codes and embeds": ({"codes": CODES, "generation_embeds": torch.zeros(2, 77, 768)}, "exactly one"),
    "codes too short": ({"codes": torch.zeros(2, 31, dtype=torch.long)}, r"`codes`: .*shape \(batch_size, 32\)"),
    "codes 1-D": ({"codes": torch.zeros(32, dtype=torch.long)}, r"`codes`: .*shape \(batch_size, 32\)"),
    "codes too large": ({"codes": torch.full((1, 32), 64)}, re.escape("`codes`: codes must be in [0, 64)")),
    "codes negative": ({"codes": torch.full((1, 32), -1)}, re.escape("in [0, 64)")),
    "codes float": ({"codes": torch.zeros(1, 32)}, "integer tensor"),
    "codes ragged list": ({"codes": [[0] * 32, [0] * 31]}, "list of equally long lists of ints"),
    "embeds wrong length": ({"generation_embeds": torch.zeros(2, 76, 768)}, r"shape \(batch_size, 77, 768\)"),
    "embeds 2-D": ({"generation_embeds": torch.zeros(77, 768)}, r"shape \(batch_size, 77, 768\)"),
    "embeds integer": ({"generation_embeds": torch.zeros(1, 77, 768, dtype=torch.long)}, "floating-point tensor"),
    "embeds with NaN": ({"generation_embeds": torch.full((1, 77, 768), float("nan"))}, "NaN or infinite"),
    "image of strings": ({"image": "cat.png"}, "`image` must be a PIL image"),
    "empty image list": ({"image": []}, r"non-empty list of them, got \[\]"),
    "list with a path": ({"image": [PIL.Image.new("RGB", (8, 8)), "cat.png"]}, r"got \['Image', 'str'\]"),
    "no codes": ({"codes": torch.zeros(0, 32, dtype=torch.long)}, "`codes` holds no input"),
    "height not multiple of 8": ({"codes": CODES, "height": 60}, "positive multiples of 8, got 60 and 64"),
    "width zero": ({"codes": CODES, "width": 0}, "positive multiples of 8"),
    "generators of wrong length": (
        {"codes": CODES, "num_images_per_prompt": 2, "generator": [torch.Generator()] * 3},
        re.escape("one per picture (batch size 2 x num_images_per_prompt 2 = 4), got 3"),
    ),
    "no steps": ({"codes": CODES, "num_inference_steps": 0}, "`num_inference_steps` must be a positive int"),
    "images per prompt zero": ({"codes": CODES, "num_images_per_prompt": 0}, "positive int"),
    "negative codes of other batch": ({"codes": CODES, "negative_codes": CODES[:1]}, r"one row per input \(2\)"),
    "negative codes out of range": ({"codes": CODES, "negative_codes": CODES + 64}, "`negative_codes`: .*in"),
    "negative codes without guidance": (
        {"codes": CODES, "negative_codes": CODES, "guidance_scale": 1.0},
        "use `guidance_scale` > 1",
    ),
    "latents of wrong shape": ({"codes": CODES, "latents": torch.zeros(2, 4, 8, 8)}, r"\(2, 4, 16, 16\)"),
    "unknown output type": ({"codes": CODES, "output_type": "jpg"}, "`output_type` must be one of"),
    "unknown callback tensor": (
        {"codes": CODES, "callback_on_step_end_tensor_inputs": ["noise_pred"]},
        r"must be among \['latents'",
    ),
}


@pytest.mark.parametrize("name", BAD_INPUTS)
def test_bad_inputs_raise_value_error(checked_pipeline, name):
    kwargs, message = BAD_INPUTS[name]
    with pytest.raises(ValueError, match=message):
        checked_pipeline(**{"num_inference_steps": STEPS, **kwargs})
