"""Image processor reproducing the original SEED preprocessing."""

import os

import numpy as np
import PIL.Image
import PIL.ImageOps
import torch
from transformers.feature_extraction_utils import BatchFeature
from transformers.image_processing_backends import PilBackend
from transformers.image_utils import (
    OPENAI_CLIP_MEAN,
    OPENAI_CLIP_STD,
    ChannelDimension,
    PILImageResampling,
)
from transformers.processing_utils import ImagesKwargs

_CHANNEL_COUNTS = (1, 3, 4)


class SeedImageProcessorKwargs(ImagesKwargs, total=False):
    r"""
    do_exif_transpose (`bool`, *optional*, defaults to `self.do_exif_transpose`):
        Whether to turn PIL images (and image files) the way their EXIF orientation tag says before anything else.
    """

    do_exif_transpose: bool | None


class SeedImageProcessor(PilBackend):
    r"""
    Prepares images for [`SeedVisionTokenizer`] as the original SEED code: `PIL.Image.convert("RGB")` (alpha is
    dropped, not composited), a bicubic resize to 224x224 that does not keep the aspect ratio, scaling to [0, 1]
    and normalisation with the CLIP mean and std.

    One difference by default: a photo is first turned upright by its EXIF orientation tag
    (`PIL.ImageOps.exif_transpose`), for every PIL image and image file, so that a path, an opened image, a
    `datasets` image and the `seed-hf` commands all give the same codes. The original's
    `Image.open(path).convert("RGB")` ignores the tag (a phone photo may be read on its side); pass or save
    `do_exif_transpose=False` for exactly that. Images without the tag, such as PNGs, are unaffected either way.
    (URLs are read by transformers' `load_image` and `datasets` decodes its image columns: both always turn
    images upright.)

    Accepts PIL images of any mode, and NumPy arrays or torch tensors of shape `(H, W)`, `(H, W, C)` or
    `(C, H, W)` with 1, 3 or 4 channels: `uint8` on the 0-255 scale, or floating point (any precision) on the 0-1
    scale. The channel axis is inferred; where both the first and the last axis could hold channels (a
    `(4, 4, 3)` array), pass `input_data_format="channels_last"` or `"channels_first"`.

    Example:

    ```python
    >>> import PIL.Image
    >>> from seed_hf import SeedImageProcessor
    >>> processor = SeedImageProcessor()
    >>> processor(PIL.Image.new("RGBA", (300, 200)), return_tensors="pt").pixel_values.shape
    torch.Size([1, 3, 224, 224])
    ```
    """

    model_input_names = ["pixel_values"]
    valid_kwargs = SeedImageProcessorKwargs
    resample = PILImageResampling.BICUBIC
    image_mean = OPENAI_CLIP_MEAN
    image_std = OPENAI_CLIP_STD
    size = {"height": 224, "width": 224}
    do_resize = True
    do_center_crop = False
    do_rescale = True
    rescale_factor = 1 / 255
    do_normalize = True
    do_convert_rgb = True
    do_exif_transpose = True

    def fetch_images(self, image_url_or_urls):
        """Image files are opened as they are (transformers' loader would always apply their EXIF tag)."""
        if isinstance(image_url_or_urls, str) and os.path.isfile(image_url_or_urls):
            with PIL.Image.open(image_url_or_urls) as image:
                image.load()
                return image
        return super().fetch_images(image_url_or_urls)

    def _prepare_image_like_inputs(self, images, *args, input_data_format=None, **kwargs):
        # A 2-D array is one grayscale image: give it a channel axis so it is not read as a batch of rows.
        channel_axis = -1 if input_data_format == ChannelDimension.LAST else 0
        if isinstance(images, (list, tuple)):
            images = [_add_channel_axis(image, channel_axis) for image in images]
        else:
            images = _add_channel_axis(images, channel_axis)
        return super()._prepare_image_like_inputs(images, *args, input_data_format=input_data_format, **kwargs)

    def process_image(self, image, input_data_format=None, do_exif_transpose=None, **kwargs) -> np.ndarray:
        """One image -> channels-first RGB array on the 0-255 scale (`uint8`, or `float32` for float input)."""
        if isinstance(image, PIL.Image.Image):
            if image.width == 0 or image.height == 0:
                raise ValueError(f"Expected an image with a non-empty size, got {image.width}x{image.height}")
            if do_exif_transpose:
                image = PIL.ImageOps.exif_transpose(image)
            return np.moveaxis(np.asarray(image.convert("RGB")), -1, 0)
        if isinstance(image, torch.Tensor):
            image = image.detach().cpu()
            # NumPy has no bfloat16; float32 holds every float16/bfloat16 value exactly.
            image = (image.float() if image.is_floating_point() else image).numpy()
        if not isinstance(image, np.ndarray):
            raise ValueError(f"Expected a PIL image, a numpy array or a torch tensor, got {type(image).__name__}")
        return _array_to_rgb(image, input_data_format)

    def _preprocess(self, images: list[np.ndarray], size, return_tensors=None, **kwargs) -> BatchFeature:
        if not images:  # an empty batch keeps the shape of a batch: (0, 3, height, width)
            empty = np.zeros((0, 3, size.height, size.width), dtype=np.float32)
            return BatchFeature(data={"pixel_values": empty}, tensor_type=return_tensors)
        return super()._preprocess(images, size=size, return_tensors=return_tensors, **kwargs)

    def resize(self, image: np.ndarray, size, resample=None, **kwargs) -> np.ndarray:
        if image.dtype == np.uint8:
            return super().resize(image, size, resample=resample, **kwargs)
        # Float input keeps its precision: PIL's 32-bit float mode, one channel at a time.
        resample = PIL.Image.Resampling(resample if resample is not None else self.resample)
        channels = [
            np.asarray(PIL.Image.fromarray(channel, mode="F").resize((size.width, size.height), resample))
            for channel in image.astype(np.float32)
        ]
        return np.stack(channels)


def _add_channel_axis(image, axis: int):
    if isinstance(image, (np.ndarray, torch.Tensor)) and image.ndim == 2:
        return image.unsqueeze(axis) if isinstance(image, torch.Tensor) else np.expand_dims(image, axis)
    return image


def _channels_first(image: np.ndarray, input_data_format) -> np.ndarray:
    """Array of shape (H, W, C) or (C, H, W) -> (C, H, W), the layout given or, when unambiguous, inferred."""
    if image.ndim != 3:
        raise ValueError(f"Expected an image array of shape (H, W), (H, W, C) or (C, H, W), got shape {image.shape}")
    if input_data_format is None:
        first, last = image.shape[0] in _CHANNEL_COUNTS, image.shape[-1] in _CHANNEL_COUNTS
        if first and last:
            raise ValueError(
                f"Cannot tell whether an image array of shape {image.shape} has its channels first or last: pass "
                "input_data_format='channels_first' or 'channels_last'"
            )
        input_data_format = ChannelDimension.LAST if last else ChannelDimension.FIRST
    if ChannelDimension(input_data_format) == ChannelDimension.LAST:
        image = np.moveaxis(image, -1, 0)
    if image.shape[0] not in _CHANNEL_COUNTS:
        raise ValueError(f"Expected an image array with 1, 3 or 4 channels, got shape {image.shape}")
    return image


def _array_to_rgb(image: np.ndarray, input_data_format=None) -> np.ndarray:
    """Array of shape (H, W, C) or (C, H, W) -> (3, H, W), with the channel rules of `convert("RGB")`."""
    image = _channels_first(image, input_data_format)
    if image.shape[1] == 0 or image.shape[2] == 0:
        raise ValueError(f"Expected an image with a non-empty size, got shape {image.shape}")

    if image.dtype == np.uint8:
        pass
    elif np.issubdtype(image.dtype, np.floating):
        if not np.isfinite(image).all() or image.min() < 0 or image.max() > 1:
            raise ValueError("Expected floating-point image values in [0, 1] (finite); use uint8 for 0-255 data")
        image = image.astype(np.float32) * 255
    else:
        raise ValueError(f"Expected a uint8 (0-255) or floating-point (0-1) image array, got dtype {image.dtype}")

    if image.shape[0] == 1:
        return np.repeat(image, 3, axis=0)
    return image[:3]


__all__ = ["SeedImageProcessor"]
