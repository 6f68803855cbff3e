"""torchvision image transforms built from the bundle's :class:`~lugha.preprocess.PreprocessSpec`.

``eval_transform(spec)`` is tested to give the same tensor as the kit's numpy ``preprocess_image``
(max abs diff <= 1e-6), so what a phone feeds the exported graph is what evaluation measured. Both
transforms honour the spec's ``layout`` and ``dtype``; the colour-mode step (transparency over ``fill``,
16-bit, CMYK, palette, EXIF rotation) is the kit's own ``to_rgb``, as torchvision has no equivalent.

:func:`crop_boxes` + :func:`augment_on_device` are the batch form used by the image-cache loader
(:mod:`lugha.training.image_cache`): random resized crops and flips as torch ops on a whole uint8 batch,
so on a GPU they run on the GPU and no CPU core touches a pixel after the memmap gather.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

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


def crop_boxes(seed: int, epoch: int, n: int, scale: tuple[float, float] = (0.6, 1.0),
               ratio: tuple[float, float] = (3 / 4, 4 / 3), tries: int = 10) -> np.ndarray:
    """One random crop per row for this epoch, ``float32 [n, 4]`` = (left, top, width, height) as fractions
    of the image: seeded by (seed, epoch), so workers, resumes and ranks agree. RandomResizedCrop's rule
    (area share in ``scale``, aspect in ``ratio`` log-uniform, ``tries`` draws) on a square image; a row
    whose draws all fall outside keeps the whole image."""
    rng = np.random.default_rng([seed, epoch, 2])
    area = rng.uniform(scale[0], scale[1], (n, tries))
    aspect = np.exp(rng.uniform(np.log(ratio[0]), np.log(ratio[1]), (n, tries)))
    w, h = np.sqrt(area * aspect), np.sqrt(area / aspect)
    ok = (w <= 1.0) & (h <= 1.0)
    first = np.argmax(ok, axis=1)
    rows = np.arange(n)
    w = np.where(ok.any(axis=1), w[rows, first], 1.0)
    h = np.where(ok.any(axis=1), h[rows, first], 1.0)
    left, top = rng.random(n) * (1.0 - w), rng.random(n) * (1.0 - h)
    return np.stack([left, top, w, h], axis=1).astype(np.float32)


def augment_on_device(pixels, boxes=None, flip=None):
    """``[B, H, W, 3]`` uint8 -> the same, each row cropped to its box (resized back, bilinear) and/or
    mirrored, on ``pixels``' device. ``boxes``: ``[B, 4]`` from :func:`crop_boxes` (None: no crop);
    ``flip``: ``[B]`` bools (None: no flip). Without crops a flip is an exact pixel reversal (the same
    bytes as the worker path's ``hwc[:, ::-1]``); crops sample with ``grid_sample`` and round to uint8."""
    import torch
    import torch.nn.functional as F

    dev = pixels.device
    f = torch.as_tensor(np.asarray(flip, dtype=bool), device=dev) if flip is not None else None
    if boxes is None:
        return pixels if f is None else torch.where(f[:, None, None, None], pixels.flip(2), pixels)
    b = torch.as_tensor(np.asarray(boxes, dtype=np.float32), device=dev)
    # affine_grid maps output [-1, 1] onto the box in input coordinates; a negative x scale mirrors the crop
    sx, sy = b[:, 2], b[:, 3]
    if f is not None:
        sx = torch.where(f, -sx, sx)
    theta = torch.zeros(len(b), 2, 3, device=dev)
    theta[:, 0, 0], theta[:, 0, 2] = sx, 2 * b[:, 0] + b[:, 2] - 1
    theta[:, 1, 1], theta[:, 1, 2] = sy, 2 * b[:, 1] + b[:, 3] - 1
    n, h, w, _ = pixels.shape
    grid = F.affine_grid(theta, [n, 3, h, w], align_corners=False)
    out = F.grid_sample(pixels.permute(0, 3, 1, 2).float(), grid, mode="bilinear", padding_mode="border",
                        align_corners=False)
    # NHWC memory again: to_model_input's permute then yields channels_last input, as for uncropped batches
    return out.round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous()


__all__ = ["eval_transform", "train_transform", "ToRGB", "PadToSquare", "crop_boxes", "augment_on_device"]
