"""Image pre-processing: the one spec and the one numpy + Pillow implementation.

The spec travels inside every bundle (like open_clip's preprocess config beside the weights), the
runtimes call :func:`preprocess_image` and the training eval transform is built from the same spec and
tested to give the same tensor (max abs diff <= 1e-6), so a phone sees exactly what training saw.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Sequence

import numpy as np

from lugha.errors import ConfigError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# EfficientNet-Lite was trained on inputs scaled to [-1, 1] (TF-Lite friendly: no per-channel std).
HALF_MEAN = (0.5, 0.5, 0.5)
HALF_STD = (0.5, 0.5, 0.5)

_EXIF_ORIENTATION = 0x0112

Resize = Literal["shortest_crop", "squash", "letterbox"]
Interpolation = Literal["bilinear", "bicubic", "nearest"]


@dataclass(frozen=True)
class PreprocessSpec:
    """How an image becomes a model input tensor.

    ``resize``: ``shortest_crop`` scales the shortest side to ``size / crop_pct`` then centre-crops
    ``size``; ``squash`` resizes to ``size`` x ``size`` ignoring aspect; ``letterbox`` fits inside and pads
    with ``fill``. Transparent pixels are composited over ``fill`` before anything else.
    """

    size: int = 224
    resize: Resize = "shortest_crop"
    crop_pct: float = 1.0
    interpolation: Interpolation = "bilinear"
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    layout: Literal["NCHW", "NHWC"] = "NCHW"
    dtype: Literal["float32", "uint8"] = "float32"
    fill: tuple[int, int, int] = (255, 255, 255)

    def __post_init__(self) -> None:
        if self.size < 8:
            raise ConfigError("size", f"must be >= 8, got {self.size}")
        if not 0.0 < self.crop_pct <= 1.0:
            raise ConfigError("crop_pct", f"must be in (0, 1], got {self.crop_pct}")
        if len(self.mean) != 3 or len(self.std) != 3:
            raise ConfigError("mean/std", "need exactly 3 channel values")
        if any(s <= 0 for s in self.std):
            raise ConfigError("std", f"must be positive, got {self.std}")

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """Per-image shape without the batch axis."""
        s = self.size
        return (3, s, s) if self.layout == "NCHW" else (s, s, 3)


def _pil_resample(name: str) -> int:
    from PIL import Image

    return {"bilinear": Image.BILINEAR, "bicubic": Image.BICUBIC, "nearest": Image.NEAREST}[name]


def to_rgb(img, fill: Sequence[int] = (255, 255, 255)):
    """Any Pillow mode (P, LA, RGBA, CMYK, I;16, L) to RGB, compositing transparency over ``fill``."""
    from PIL import Image, ImageOps

    # Phone cameras store portrait photos sideways plus an EXIF Orientation tag; honour it (1 = upright).
    if img.getexif().get(_EXIF_ORIENTATION, 1) != 1:
        img = ImageOps.exif_transpose(img)
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA"):
        img = img.convert("RGBA")
        bg = Image.new("RGB", img.size, tuple(fill))
        bg.paste(img, mask=img.getchannel("A"))
        return bg
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        img = _sixteen_bit_to_l(img)
    return img if img.mode == "RGB" else img.convert("RGB")


def _sixteen_bit_to_l(img, rows: int = 64):
    """16-bit greyscale (PNG loads as I;16, or I in older Pillow) to 8-bit L: the full 0..65535 range,
    never guessed from the pixel values, or a dark 16-bit image would be mistaken for an 8-bit one.

    Integer arithmetic on ``rows``-high strips: a whole-image float64 copy cost ~24 bytes per pixel
    (~224 MB for a 24 KB 9-megapixel PNG, sent by anyone on the hotspot); the strips cost a few MB."""
    from PIL import Image

    w, h = img.size
    out = Image.new("L", (w, h))
    for top in range(0, h, rows):
        strip = np.asarray(img.crop((0, top, w, min(top + rows, h))), dtype=np.int64)
        # round(v * 255 / 65535) in integers, clipped as the float version was (mode I may exceed 65535)
        scaled = (np.clip(strip, 0, 65535) * 255 + 32767) // 65535
        out.paste(Image.fromarray(scaled.astype(np.uint8), "L"), (0, top))
    return out


def shortest_side_size(w: int, h: int, target: int) -> tuple[int, int]:
    """(w, h) after scaling the shortest side to ``target`` (torchvision's rounding, so both agree)."""
    if w <= h:
        return target, int(target * h / w)
    return int(target * w / h), target


def longest_side_size(w: int, h: int, target: int) -> tuple[int, int]:
    """(w, h) after scaling the longest side to ``target`` (torchvision v2 ``Resize(None, max_size)``'s
    floor rounding, written the same way so the float arithmetic agrees too)."""
    if w <= h:
        return max(1, int(target * w / h)), target
    return target, max(1, int(target * h / w))


def resize_pil(img, spec: PreprocessSpec):
    """The geometric part: RGB Pillow image in, ``spec.size`` square RGB Pillow image out."""
    from PIL import Image

    img = to_rgb(img, spec.fill)
    s, resample = spec.size, _pil_resample(spec.interpolation)
    if spec.resize == "squash":
        return img.resize((s, s), resample)
    if spec.resize == "letterbox":
        w, h = longest_side_size(img.width, img.height, s)
        canvas = Image.new("RGB", (s, s), tuple(spec.fill))
        canvas.paste(img.resize((w, h), resample), ((s - w) // 2, (s - h) // 2))
        return canvas
    short = int(s / spec.crop_pct) if spec.crop_pct < 1.0 else s
    img = img.resize(shortest_side_size(img.width, img.height, short), resample)
    left = int(round((img.width - s) / 2.0))
    top = int(round((img.height - s) / 2.0))
    return img.crop((left, top, left + s, top + s))


def normalize(pixels: np.ndarray, spec: PreprocessSpec) -> np.ndarray:
    """HWC uint8 -> the spec's dtype and layout (no batch axis)."""
    if spec.dtype == "uint8":
        out = pixels
    else:
        x = pixels.astype(np.float32) / np.float32(255.0)
        out = (x - np.asarray(spec.mean, np.float32)) / np.asarray(spec.std, np.float32)
    if spec.layout == "NCHW":
        out = out.transpose(2, 0, 1)
    return np.ascontiguousarray(out)


def preprocess_image(image, spec: PreprocessSpec) -> np.ndarray:
    """A path, Pillow image or HWC uint8 array -> one model input (no batch axis)."""
    from PIL import Image

    if isinstance(image, np.ndarray):
        image = Image.fromarray(image)
    elif not isinstance(image, Image.Image):
        from lugha.image_io import open_image  # regular files only, capped, allowlisted decoders (#17)

        with open_image(image) as im:
            im.load()
            image = im.copy()
    return normalize(np.asarray(resize_pil(image, spec), dtype=np.uint8), spec)


def preprocess_batch(images: Sequence, spec: PreprocessSpec) -> np.ndarray:
    return np.stack([preprocess_image(im, spec) for im in images])
