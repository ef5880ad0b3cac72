"""Image processor reproducing the original SEED preprocessing."""

import numpy as np
import PIL.Image
import torch
from transformers.image_processing_backends import PilBackend
from transformers.image_utils import (
    OPENAI_CLIP_MEAN,
    OPENAI_CLIP_STD,
    PILImageResampling,
)

_CHANNEL_COUNTS = (1, 3, 4)


class SeedImageProcessor(PilBackend):
    r"""
    Prepares images for [`SeedVisionTokenizer`] exactly as the original SEED code: `PIL.Image.convert("RGB")`
    (alpha is dropped, not composited), a bicubic resize to 224x224 that does not keep the aspect ratio, scaling
    to [0, 1] and normalisation with the CLIP mean and std.

    Accepts PIL images of any mode, and NumPy arrays or torch tensors of shape `(H, W)`, `(H, W, C)` or
    `(C, H, W)` with 1, 3 or 4 channels: `uint8` on the 0-255 scale, or floating point on the 0-1 scale.

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

    def _prepare_images_structure(self, images, expected_ndims: int = 3):
        # A 2-D array is one grayscale image: give it a channel axis so it is not read as a batch of rows.
        if isinstance(images, (list, tuple)):
            images = [_add_channel_axis(image) for image in images]
        else:
            images = _add_channel_axis(images)
        return super()._prepare_images_structure(images, expected_ndims=expected_ndims)

    def process_image(self, image, **kwargs) -> np.ndarray:
        """One image -> channels-first RGB array on the 0-255 scale (`uint8`, or `float32` for float input)."""
        if isinstance(image, PIL.Image.Image):
            if image.width == 0 or image.height == 0:
                raise ValueError(f"Expected an image with a non-empty size, got {image.width}x{image.height}")
            return np.moveaxis(np.asarray(image.convert("RGB")), -1, 0)
        if isinstance(image, torch.Tensor):
            image = image.detach().cpu().numpy()
        if not isinstance(image, np.ndarray):
            raise ValueError(f"Expected a PIL image, a numpy array or a torch tensor, got {type(image).__name__}")
        return _array_to_rgb(image)

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


def _add_channel_axis(image):
    if isinstance(image, (np.ndarray, torch.Tensor)) and image.ndim == 2:
        return image[None]
    return image


def _array_to_rgb(image: np.ndarray) -> np.ndarray:
    """Array of shape (H, W), (H, W, C) or (C, H, W) -> (3, H, W), with the channel rules of `convert("RGB")`."""
    if image.ndim == 2:
        image = image[None]
    if image.ndim == 3:
        if image.shape[-1] in _CHANNEL_COUNTS and image.shape[0] not in _CHANNEL_COUNTS:
            image = np.moveaxis(image, -1, 0)
        elif image.shape[0] not in _CHANNEL_COUNTS:
            raise ValueError(
                f"Expected an image array with 1, 3 or 4 channels (first or last axis), got shape {image.shape}"
            )
    else:
        raise ValueError(f"Expected an image array of shape (H, W), (H, W, C) or (C, H, W), got shape {image.shape}")
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
