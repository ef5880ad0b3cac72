"""SeedImageProcessor: the original preprocessing for any input type."""

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from seed_hf import SeedImageProcessor

CLIP_MEAN = np.array([0.48145466, 0.4578275, 0.40821073], dtype=np.float32)[:, None, None]
CLIP_STD = np.array([0.26862954, 0.26130258, 0.27577711], dtype=np.float32)[:, None, None]


def reference(image: Image.Image) -> np.ndarray:
    """The original SEED preprocessing, written out with PIL and numpy."""
    rgb = image.convert("RGB").resize((224, 224), Image.Resampling.BICUBIC)
    return (np.asarray(rgb, dtype=np.float32).transpose(2, 0, 1) / 255 - CLIP_MEAN) / CLIP_STD


def random_image(mode: str, size=(61, 37), seed=0) -> Image.Image:
    rng = np.random.default_rng(seed)
    rgba = Image.fromarray(rng.integers(0, 256, (size[1], size[0], 4), dtype=np.uint8), "RGBA")
    if mode == "I;16":
        return Image.fromarray(rng.integers(0, 65536, (size[1], size[0]), dtype=np.uint16))
    if mode == "P":
        return rgba.convert("RGB").quantize(16)
    return rgba.convert(mode)


@pytest.fixture(scope="module")
def processor():
    return SeedImageProcessor()


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "L", "LA", "P", "CMYK", "I;16", "1"])
def test_every_pil_mode_follows_convert_rgb(processor, mode):
    image = random_image(mode)
    pixel_values = processor(image, return_tensors="pt").pixel_values
    assert pixel_values.shape == (1, 3, 224, 224) and pixel_values.dtype == torch.float32
    np.testing.assert_allclose(pixel_values[0].numpy(), reference(image), atol=1e-5)


def test_alpha_is_dropped_not_composited(processor):
    transparent_red = Image.new("RGBA", (10, 10), (255, 0, 0, 0))
    pixel_values = processor(transparent_red, return_tensors="pt").pixel_values
    np.testing.assert_allclose(pixel_values[0].numpy(), reference(Image.new("RGB", (10, 10), (255, 0, 0))), atol=1e-5)


def test_numpy_and_torch_inputs_match_pil(processor):
    image = random_image("RGB")
    expected = reference(image)
    hwc = np.asarray(image)
    inputs = [
        hwc,
        hwc.transpose(2, 0, 1),
        torch.from_numpy(hwc.copy()),
        torch.from_numpy(hwc.transpose(2, 0, 1).copy()),
    ]
    for array in inputs:
        np.testing.assert_allclose(processor(array, return_tensors="pt").pixel_values[0].numpy(), expected, atol=1e-5)
    gray = random_image("L")
    np.testing.assert_allclose(
        processor(np.asarray(gray), return_tensors="pt").pixel_values[0].numpy(), reference(gray), atol=1e-5
    )


def test_float_input_on_unit_scale(processor):
    """Float arrays in [0, 1] are resized at float precision; smooth images match the uint8 path closely."""
    ramp = np.linspace(0, 1, 50 * 40, dtype=np.float32).reshape(1, 50, 40).repeat(3, 0)
    as_uint8 = Image.fromarray((ramp.transpose(1, 2, 0) * 255).round().astype(np.uint8))
    pixel_values = processor(torch.from_numpy(ramp), return_tensors="pt").pixel_values[0].numpy()
    np.testing.assert_allclose(pixel_values, reference(as_uint8), atol=0.02)


def test_batches_keep_order_and_size(processor):
    images = [random_image("RGB", size=(20 + 7 * i, 50 - 5 * i), seed=i) for i in range(4)]
    pixel_values = processor(images, return_tensors="pt").pixel_values
    assert pixel_values.shape == (4, 3, 224, 224)
    for row, image in enumerate(images):
        np.testing.assert_allclose(pixel_values[row].numpy(), reference(image), atol=1e-5)


def test_size_follows_config(tmp_path):
    processor = SeedImageProcessor(size={"height": 28, "width": 28})
    processor.save_pretrained(tmp_path)
    loaded = SeedImageProcessor.from_pretrained(tmp_path)
    assert loaded(random_image("RGB"), return_tensors="pt").pixel_values.shape == (1, 3, 28, 28)


@pytest.mark.parametrize(
    "image, message",
    [
        (np.zeros((8, 8, 7), dtype=np.uint8), "1, 3 or 4 channels"),
        (np.zeros((8, 8), dtype=np.int32), "uint8"),
        (np.full((8, 8, 3), 2.0, dtype=np.float32), r"\[0, 1\]"),
        (np.full((8, 8, 3), np.nan, dtype=np.float32), r"\[0, 1\]"),
        (np.zeros((0, 8, 3), dtype=np.uint8), "non-empty"),
        (Image.new("RGB", (0, 5)), "non-empty"),
    ],
)
def test_bad_images(processor, image, message):
    with pytest.raises(ValueError, match=message):
        processor(image)


@pytest.fixture
def sideways_photo(tmp_path):
    """A JPEG stored sideways with EXIF orientation 6 (turn 90 degrees clockwise to view), as phones write them."""
    stored = random_image("RGB", size=(40, 24))
    exif = Image.Exif()
    exif[Image.ExifTags.Base.Orientation] = 6
    path = tmp_path / "photo.jpg"
    stored.save(path, exif=exif)
    return path


def test_exif_orientation_is_applied_at_every_entry_point(processor, sideways_photo):
    """A path, an opened image, its copy (`seed-hf reconstruct`) and the `seed-hf tokenize` loaders agree."""
    import datasets

    from seed_hf.dataset_tokenization import load_image, prepare_image

    with Image.open(sideways_photo) as opened:
        upright = ImageOps.exif_transpose(opened)
        assert upright.size == (24, 40)
        expected = reference(upright)
        from_pil = processor(opened, return_tensors="pt").pixel_values[0].numpy()
        from_copy = processor(opened.copy(), return_tensors="pt").pixel_values[0].numpy()
    from_path = processor(str(sideways_photo), return_tensors="pt").pixel_values[0].numpy()
    from_tokenize = prepare_image(sideways_photo.name, processor, base_dir=sideways_photo.parent)[0].numpy()
    cell = {"bytes": sideways_photo.read_bytes(), "path": None}
    from_undecoded_cell = processor(load_image(cell), return_tensors="pt").pixel_values[0].numpy()
    column = datasets.Dataset.from_dict({"image": [str(sideways_photo)]}).cast_column("image", datasets.Image())
    from_decoded_column = processor(column[0]["image"], return_tensors="pt").pixel_values[0].numpy()
    for pixel_values in (from_pil, from_copy, from_path, from_tokenize, from_undecoded_cell, from_decoded_column):
        np.testing.assert_allclose(pixel_values, expected, atol=1e-5)


def test_exif_transpose_can_be_turned_off_for_the_original_behaviour(processor, sideways_photo, tmp_path):
    """`do_exif_transpose=False` is the original `Image.open(path).convert("RGB")`, for paths and PIL images alike."""
    with Image.open(sideways_photo) as opened:
        original = reference(opened)
        from_pil = processor(opened, do_exif_transpose=False, return_tensors="pt").pixel_values[0].numpy()
    np.testing.assert_allclose(from_pil, original, atol=1e-5)
    SeedImageProcessor(do_exif_transpose=False).save_pretrained(tmp_path)
    saved = SeedImageProcessor.from_pretrained(tmp_path)
    np.testing.assert_allclose(
        saved(str(sideways_photo), return_tensors="pt").pixel_values[0].numpy(), original, atol=1e-5
    )


def test_empty_batch_gives_empty_pixel_values(processor):
    assert processor([], return_tensors="pt").pixel_values.shape == (0, 3, 224, 224)
    assert processor(np.zeros((0, 8, 8, 3), dtype=np.uint8), return_tensors="pt").pixel_values.shape == (
        0,
        3,
        224,
        224,
    )


def test_small_channels_last_arrays_need_input_data_format(processor):
    """A (4, 4, 3) array could be 4 channels of 4x3 or 3 channels of 4x4: refused unless the layout is given."""
    image = random_image("RGB", size=(4, 4))
    hwc = np.asarray(image)
    with pytest.raises(ValueError, match="input_data_format='channels_first' or 'channels_last'"):
        processor(hwc)
    for array, layout in ((hwc, "channels_last"), (hwc.transpose(2, 0, 1), "channels_first")):
        pixel_values = processor(array, input_data_format=layout, return_tensors="pt").pixel_values
        np.testing.assert_allclose(pixel_values[0].numpy(), reference(image), atol=1e-5)
    gray = random_image("L", size=(4, 3))
    for layout in ("channels_first", "channels_last"):
        pixel_values = processor(np.asarray(gray), input_data_format=layout, return_tensors="pt").pixel_values
        np.testing.assert_allclose(pixel_values[0].numpy(), reference(gray), atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_float_tensors(processor, dtype):
    """Half-precision tensors are read exactly as the float32 tensor of the same values."""
    image = torch.rand(3, 20, 30, generator=torch.Generator().manual_seed(0)).to(dtype)
    pixel_values = processor(image, return_tensors="pt").pixel_values
    expected = processor(image.float(), return_tensors="pt").pixel_values
    assert pixel_values.dtype == torch.float32
    torch.testing.assert_close(pixel_values, expected, atol=0, rtol=0)
