"""Pre-processing parity: the kit's numpy ``preprocess_image`` (what devices run) and the torchvision
``eval_transform`` (what training evaluates) give the same tensor on real image files of every kind."""
from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lugha.errors import ConfigError
from lugha.preprocess import HALF_MEAN, HALF_STD, PreprocessSpec, preprocess_batch, preprocess_image, to_rgb

torch = pytest.importorskip("torch")
pytest.importorskip("torchvision")
from lugha.training.transforms import eval_transform, train_transform  # noqa: E402


def _pattern(h: int, w: int, seed: int) -> np.ndarray:
    """Smooth gradients plus noise and a hard edge, so every interpolation kernel has work to do."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([x * 255 / max(w - 1, 1), y * 255 / max(h - 1, 1), (x + y) % 64 * 4], -1)
    base[h // 3:h // 2, :] = 255 - base[h // 3:h // 2, :]
    return np.clip(base + rng.normal(0, 20, base.shape), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def image_files(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("images")
    out = {}

    def save(name, img, **kw):
        out[name] = d / name
        img.save(out[name], **kw)

    save("landscape_odd.png", Image.fromarray(_pattern(37, 91, 0)))
    save("portrait_odd.jpg", Image.fromarray(_pattern(103, 45, 1)), quality=90)
    save("square_small.png", Image.fromarray(_pattern(20, 20, 2)))  # upsampled to every size
    rgba = _pattern(50, 70, 3)
    alpha = np.zeros((50, 70), np.uint8)
    alpha[:, 20:] = 128
    alpha[:, 45:] = 255
    save("rgba.png", Image.fromarray(np.dstack([rgba, alpha]), "RGBA"))
    save("palette.png", Image.fromarray(_pattern(41, 60, 4)).quantize(16))
    pal_t = Image.fromarray(_pattern(30, 44, 5)).quantize(8)
    save("palette_transparent.png", pal_t, transparency=0)
    save("gray.png", Image.fromarray(_pattern(64, 33, 6)[..., 0], "L"))
    save("gray16.png", Image.fromarray((_pattern(29, 57, 7)[..., 1].astype(np.uint16) * 257)))
    cmyk = Image.fromarray(_pattern(40, 52, 8)).convert("CMYK")
    save("cmyk.jpg", cmyk, quality=92)
    return out


SPECS = [
    PreprocessSpec(size=32, resize=resize, interpolation=interp, crop_pct=crop)
    for resize, interp, crop in itertools.product(
        ["shortest_crop", "squash", "letterbox"], ["bilinear", "bicubic", "nearest"], [1.0, 0.875])
    if resize == "shortest_crop" or crop == 1.0
] + [
    PreprocessSpec(size=24, layout="NHWC", mean=HALF_MEAN, std=HALF_STD),
    PreprocessSpec(size=24, dtype="uint8", resize="letterbox", fill=(0, 10, 200)),
    PreprocessSpec(size=24, dtype="uint8", layout="NHWC", interpolation="bicubic", crop_pct=0.9),
]


def _spec_id(s: PreprocessSpec) -> str:
    return f"{s.resize}-{s.interpolation}-crop{s.crop_pct}-{s.layout}-{s.dtype}"


@pytest.mark.parametrize("spec", SPECS, ids=_spec_id)
def test_kit_and_torchvision_give_the_same_tensor(image_files, spec):
    transform = eval_transform(spec)
    assert len(image_files) == 9
    for name, path in image_files.items():
        kit = preprocess_image(path, spec)  # the device path: a file name
        with Image.open(path) as im:
            tv = transform(im).numpy()  # the training path: a PIL image
        assert kit.shape == tv.shape == spec.input_shape, name
        assert kit.dtype == tv.dtype == np.dtype(spec.dtype), name
        diff = np.abs(kit.astype(np.float64) - tv.astype(np.float64)).max()
        assert diff <= 1e-6, f"{name}: max abs diff {diff}"


def test_normalisation_values_are_the_formula(tmp_path):
    color = (10, 128, 250)
    path = tmp_path / "solid.png"
    Image.new("RGB", (40, 30), color).save(path)
    spec = PreprocessSpec(size=16)
    x = preprocess_image(path, spec)
    expected = [(c / 255 - m) / s for c, m, s in zip(color, spec.mean, spec.std)]
    assert np.allclose(x[:, 5, 5], expected, atol=1e-6)
    u = preprocess_image(path, PreprocessSpec(size=16, dtype="uint8", layout="NHWC"))
    assert u.dtype == np.uint8 and u.shape == (16, 16, 3) and (u == np.array(color, np.uint8)).all()


def test_transparency_is_composited_over_fill_and_letterbox_pads_with_fill():
    rgba = np.zeros((10, 40, 4), np.uint8)
    rgba[..., :3] = 90
    rgba[:, 20:, 3] = 255  # left half fully transparent
    spec = PreprocessSpec(size=40, resize="letterbox", dtype="uint8", layout="NHWC", fill=(255, 0, 255),
                          interpolation="nearest")
    x = preprocess_image(Image.fromarray(rgba, "RGBA"), spec)
    assert (x[:15] == (255, 0, 255)).all() and (x[25:] == (255, 0, 255)).all()  # padding rows
    assert (x[15:25, :20] == (255, 0, 255)).all()  # transparent pixels became fill
    assert (x[15:25, 20:] == 90).all()  # opaque pixels kept


def test_sixteen_bit_uses_the_full_range_even_when_dark():
    dark = np.full((8, 8), 200, np.uint16)  # nearly black in 16 bits; must not read as 8-bit 200
    bright = np.full((8, 8), 65535, np.uint16)
    assert np.asarray(to_rgb(Image.fromarray(dark))).max() == 1
    assert (np.asarray(to_rgb(Image.fromarray(bright))) == 255).all()


def test_exif_orientation_is_applied(tmp_path):
    img = Image.fromarray(_pattern(20, 60, 9))  # stored landscape
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to view": the phone held upright
    path = tmp_path / "phone.jpg"
    img.save(path, exif=exif.tobytes())
    with Image.open(path) as im:
        assert to_rgb(im).size == (20, 60)
    spec = PreprocessSpec(size=16, resize="squash", dtype="uint8", layout="NHWC")
    with Image.open(path) as im:
        assert np.array_equal(preprocess_image(path, spec), eval_transform(spec)(im).numpy())


def test_array_input_and_batch():
    arr = _pattern(33, 47, 10)
    spec = PreprocessSpec(size=16)
    batch = preprocess_batch([arr, Image.fromarray(arr)], spec)
    assert batch.shape == (2, 3, 16, 16) and batch.dtype == np.float32
    assert np.array_equal(batch[0], batch[1])


@pytest.mark.parametrize("kwargs,field", [({"size": 4}, "size"), ({"crop_pct": 0.0}, "crop_pct"),
                                          ({"std": (0.5, 0.0, 0.5)}, "std")])
def test_spec_validation(kwargs, field):
    with pytest.raises(ConfigError) as info:
        PreprocessSpec(**kwargs)
    assert info.value.field == field


def test_train_transform_matches_eval_format_and_does_not_flip_by_default():
    arr = _pattern(32, 32, 11)  # asymmetric left/right
    img = Image.fromarray(arr)
    spec = PreprocessSpec(size=16, resize="squash")
    reference = eval_transform(spec)(img)
    full = dict(scale=(1.0, 1.0), ratio=(1.0, 1.0))  # the whole (square) image: only a resize remains
    plain = train_transform(spec, **full)
    flipping = train_transform(spec, hflip=True, **full)
    flips = 0
    for seed in range(12):
        torch.manual_seed(seed)
        assert torch.equal(plain(img), reference)
        torch.manual_seed(seed)
        out = flipping(img)
        flips += torch.equal(out, reference.flip(-1))
    assert 0 < flips < 12
    nhwc = train_transform(PreprocessSpec(size=16, layout="NHWC", dtype="uint8"))(img)
    assert nhwc.shape == (16, 16, 3) and nhwc.dtype == torch.uint8
