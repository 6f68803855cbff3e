"""Memory a phone on the hotspot can make the Pi spend: a tiny 16-bit PNG that decodes to megapixels,
and many photos decoded at once. Peaks are measured with tracemalloc (numpy reports its buffers to it),
never timed."""
from __future__ import annotations

import io
import json
import tracemalloc

import numpy as np
import pytest
from PIL import Image

from test_serve_api import Client, field_bundle, photo, running_server  # noqa: F401 (fixture)


def _png16(w: int, h: int) -> bytes:
    """A 16-bit greyscale PNG: a horizontal ramp over 0..65535 (compresses to a few KB)."""
    ramp = (np.arange(w, dtype=np.uint32) * 65535 // max(w - 1, 1)).astype(np.uint16)
    buf = io.BytesIO()
    Image.fromarray(np.broadcast_to(ramp, (h, w)).copy()).save(buf, format="PNG")
    return buf.getvalue()


def test_sixteen_bit_png_is_converted_without_a_float_copy():
    from lugha.preprocess import to_rgb

    w, h = 3000, 3000  # the 9-megapixel case
    data = _png16(w, h)
    assert len(data) < 200_000 and data[24] == 16  # a small upload, 16 bits per sample
    with Image.open(io.BytesIO(data)) as im:
        im.load()
        assert im.mode.startswith("I")
        tracemalloc.start()
        try:
            rgb = to_rgb(im)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    # the float64 conversion held ~24 bytes per pixel (216 MB here); strips hold well under 1 byte per pixel
    assert peak < w * h, f"to_rgb peaked at {peak / 1e6:.1f} MB for {w * h / 1e6:.0f} MP"
    row = np.asarray(rgb)[0, :, 0]
    assert rgb.mode == "RGB" and rgb.size == (w, h)
    assert row[0] == 0 and row[-1] == 255 and row[w // 2] in (127, 128) and (np.diff(row.astype(int)) >= 0).all()


def test_sixteen_bit_images_have_a_lower_pixel_cap():
    from lugha.runtimes.serve_security import RequestRejected, UploadPolicy, decode_upload

    policy = UploadPolicy(max_pixels=1000, max_pixels_16bit=500)
    with pytest.raises(RequestRejected, match="16-bit") as e:
        decode_upload(_png16(30, 30), policy)  # 900 pixels: fine at 8 bits, too many at 16
    assert e.value.status == 413
    image, fmt = decode_upload(photo((30, 30)), policy)
    assert fmt == "PNG" and image.size == (30, 30)
    image, _ = decode_upload(_png16(20, 20), policy)
    assert image.mode == "RGB" and image.size == (20, 20)


def test_concurrent_decodes_are_bounded(field_bundle, tmp_path):  # noqa: F811
    with running_server(field_bundle, tmp_path, decode_slots=1, decode_wait_s=0.2) as (base, app):
        c = Client(base)
        c.start()
        with app.decode_slot():  # another photo is being decoded: the only slot is taken
            status, body = c.upload(photo())
            assert status == 503 and "busy" in body["error"]
            status, data, resp = c.request("POST", "/api/image?lang=en", photo(), {"Content-Type": "image/png"})
            assert status == 503 and resp.getheader("Retry-After") == "1" and "error" in json.loads(data)
        status, body = c.upload(photo())  # the slot is free again
        assert status == 200 and body["results"]
