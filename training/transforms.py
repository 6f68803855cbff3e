"""torchvision image transforms built from the bundle's :class:`~lugha.preprocess.PreprocessSpec`.

``eval_transform(spec)`` is tested to give the same tensor as the kit's numpy ``preprocess_image``
(max abs diff <= 1e-6), so what a phone feeds the exported graph is what evaluation measured. Both
transforms honour the spec's ``layout`` and ``dtype``; the colour-mode step (transparency over ``fill``,
16-bit, CMYK, palette, EXIF rotation) is the kit's own ``to_rgb``, as torchvision has no equivalent.
"""
from __future__ import annotations

from typing import Sequence

from lugha.preprocess import PreprocessSpec, to_rgb


def _interpolation(name: str):
    from torchvision.transforms import InterpolationMode

    return {"bilinear": InterpolationMode.BILINEAR, "bicubic": InterpolationMode.BICUBIC,
            "nearest": InterpolationMode.NEAREST}[name]


class ToRGB:
    """Any Pillow mode to RGB with the spec's fill (a class, not a lambda, so DataLoader workers can
    pickle it)."""

    def __init__(self, fill: Sequence[int]):
        self.fill = tuple(fill)

    def __call__(self, img):
        return to_rgb(img, self.fill)

    def __repr__(self) -> str:
        return f"ToRGB(fill={self.fill})"


class PadToSquare:
    """Centre an image on a ``size`` x ``size`` canvas of ``fill`` (the letterbox's second half)."""

    def __init__(self, size: int, fill: Sequence[int]):
        self.size, self.fill = size, tuple(fill)

    def __call__(self, img):
        from torchvision.transforms import functional as F

        w, h = img.size
        left, top = (self.size - w) // 2, (self.size - h) // 2
        return F.pad(img, [left, top, self.size - w - left, self.size - h - top], fill=self.fill)

    def __repr__(self) -> str:
        return f"PadToSquare(size={self.size}, fill={self.fill})"


class ToLayout:
    """CHW tensor -> HWC when the spec says NHWC (TFLite graphs)."""

    def __call__(self, x):
        return x.permute(1, 2, 0).contiguous()

    def __repr__(self) -> str:
        return "ToLayout(NHWC)"


def _tensor_tail(spec: PreprocessSpec) -> list:
    from torchvision import transforms as T

    if spec.dtype == "uint8":  # graphs that normalise inside take raw pixels
        steps = [T.PILToTensor()]
    else:
        steps = [T.ToTensor(), T.Normalize(spec.mean, spec.std)]
    if spec.layout == "NHWC":
        steps.append(ToLayout())
    return steps


def eval_transform(spec: PreprocessSpec):
    """The deterministic transform: PIL image in, one tensor in the spec's layout and dtype out."""
    from torchvision import transforms as T
    from torchvision.transforms import v2

    s, mode = spec.size, _interpolation(spec.interpolation)
    steps: list = [ToRGB(spec.fill)]
    if spec.resize == "shortest_crop":
        # timm's crop_pct rule: resize the shortest side to floor(size / crop_pct), then centre-crop.
        short = int(s / spec.crop_pct) if spec.crop_pct < 1.0 else s
        steps += [T.Resize(short, interpolation=mode), T.CenterCrop(s)]
    elif spec.resize == "squash":
        steps += [T.Resize((s, s), interpolation=mode)]
    else:  # letterbox: longest side to `size` (v2's size=None rule), then pad with fill
        steps += [v2.Resize(size=None, max_size=s, interpolation=mode), PadToSquare(s, spec.fill)]
    return T.Compose(steps + _tensor_tail(spec))


def train_transform(spec: PreprocessSpec, scale: tuple[float, float] = (0.6, 1.0),
                    ratio: tuple[float, float] = (3 / 4, 4 / 3), hflip: bool = False,
                    color_jitter: float = 0.0):
    """Random-resized-crop augmentation ending in the same tensor format as :func:`eval_transform`.

    ``hflip`` is off by default: many emoji and signs are not mirror-invariant (a flipped "➡️" or a
    flipped script caption means something else). ``scale`` keeps at least 60% of the image by default,
    because small datasets of icons lose their subject under harder crops.
    """
    from torchvision import transforms as T

    steps: list = [ToRGB(spec.fill),
                   T.RandomResizedCrop(spec.size, scale=scale, ratio=ratio,
                                       interpolation=_interpolation(spec.interpolation))]
    if hflip:
        steps.append(T.RandomHorizontalFlip())
    if color_jitter > 0:
        steps.append(T.ColorJitter(color_jitter, color_jitter, color_jitter))
    return T.Compose(steps + _tensor_tail(spec))


__all__ = ["eval_transform", "train_transform", "ToRGB", "PadToSquare"]
