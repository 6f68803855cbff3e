"""What text -> image search on the phone fetches: the text graph and tokenizer.json (allowlisted, hashed
as the manifest says), the tokenizer spec, the gallery's embeddings (scored as the server scores them),
thumbnail URLs keyed by the gallery, and the text graph's golden samples."""
from __future__ import annotations

import base64
import hashlib
import json

import numpy as np
import pytest

from test_serve_api import Client, field_bundle, make_gallery, running_server  # noqa: F401 (fixture)


@pytest.fixture(scope="module")
def served(field_bundle, tmp_path_factory):  # noqa: F811
    root = tmp_path_factory.mktemp("phone-text")
    (root / "gallery").mkdir()
    make_gallery(root / "gallery" / "sub", n=5)
    (root / "gallery" / "broken.png").write_bytes(b"not a png")  # skipped: ids then have a gap
    with running_server(field_bundle, root, root / "gallery", rate=1000, burst=1000) as (base, app):
        yield base, app


def _f32(obj) -> np.ndarray:
    return np.frombuffer(base64.b64decode(obj["data"]), np.float32).reshape(obj["shape"])


def test_config_names_what_the_phone_downloads(served):
    base, app = served
    c = Client(base)
    phone = c.start()["phone"]
    text = phone["text"]
    assert text["available"] and text["graph"]["precision"] == "int8" and text["graph"]["inputs"] == ["input_ids", "attention_mask"]
    assert text["spec"] == {"file": "tokenizer.json", "max_length": 8, "padding": "max_length", "truncation": True,
                            "prefix": "", "pad_token": None, "add_special_tokens": True}
    assert text["gallery"] == {"url": "/api/gallery-index", "size": 5, "key": app.engine.gallery_key}
    for f in (phone["graph"], text["graph"], text["tokenizer"]):
        status, body, resp = c.request("GET", f["url"])
        assert status == 200 and len(body) == f["bytes"] and hashlib.sha256(body).hexdigest() == f["sha256"]
        assert resp.getheader("ETag") == f'"{f["sha256"]}"'
    for other in ("/bundle/graphs/text_encoder.fp32.onnx", "/bundle/manifest.json", "/bundle/MODEL_CARD.md"):
        assert c.request("GET", other)[0] == 404, other


def test_gallery_index_scores_as_the_server_searches(served):
    base, app = served
    c = Client(base)
    c.start()
    status, index = c.json("GET", "/api/gallery-index")
    assert status == 200 and index["key"] == app.engine.gallery_key
    assert index["names"] == [f"sub/img{i}.png" for i in range(5)] and index["ids"] == [1, 2, 3, 4, 5]
    vectors = _f32(index["embeds"])
    assert vectors.shape == (5, 4)
    for query in ("paka", "a photo of a dog", "ndege samaki"):
        status, found = c.json("POST", "/api/text", {"text": query, "lang": "sw", "k": 3})
        q = app.engine.bundle.embed_text([query])[0]
        order = np.argsort(-(vectors @ q), kind="stable")[:3]
        assert [index["ids"][i] for i in order] == [r["id"] for r in found["results"]]
        assert [index["urls"][i] for i in order] == [r["url"] for r in found["results"]]
    url = found["results"][0]["url"]
    assert url.endswith(f"?v={app.engine.gallery_key}")
    status, body, resp = c.request("GET", url)
    assert status == 200 and resp.getheader("Content-Type") == "image/jpeg"


def test_text_golden_samples(served):
    base, app = served
    c = Client(base)
    c.start()
    status, g = c.json("GET", "/api/golden?graph=text")
    assert status == 200 and g["graph"] == "text_encoder/onnx/int8"
    ids = np.array(g["inputs"]["input_ids"]["data"]).reshape(g["inputs"]["input_ids"]["shape"])
    mask = np.array(g["inputs"]["attention_mask"]["data"]).reshape(ids.shape)
    ref = _f32(g["outputs"]["text_embeds"])
    got = app.engine.bundle.run_graph("text_encoder", {"input_ids": ids, "attention_mask": mask})["text_embeds"]
    assert np.abs(got - ref).max() <= g["tolerance"]["max_abs"]
    assert c.json("GET", "/api/golden")[1]["graph"] == "image_encoder/onnx/int8"
    status, err = c.json("GET", "/api/golden?graph=../manifest")
    assert status == 400 and "graph" in err["error"]


def test_no_gallery_no_index(field_bundle, tmp_path):  # noqa: F811
    with running_server(field_bundle, tmp_path) as (base, app):
        c = Client(base)
        phone = c.start()["phone"]
        assert phone["text"]["available"] and phone["text"]["gallery"]["size"] == 0
        status, err = c.json("GET", "/api/gallery-index")
        assert status == 400 and "--gallery" in err["error"]
        json.dumps(phone)  # the whole config is plain JSON


def test_phone_tokenizer_files_are_served_and_cached(served):
    """tokenizer.js runs the vendored @huggingface/tokenizers; every file the service worker installs is
    served (one missing file fails its install, and offline mode with it), and the page caches the library
    with onnxruntime-web."""
    import re

    base, app = served
    c = Client(base)
    status, js, _ = c.request("GET", "/static/tokenizer.js")
    assert status == 200 and b"from './vendor/tokenizers.min.mjs'" in js
    sw = c.request("GET", "/sw.js")[1].decode()
    shell = re.findall(r"'(/[^']*)'", re.search(r"SHELL_FILES = \[(.*?)\];", sw, re.S).group(1))
    assert "/static/tokenizer.js" in shell
    for path in shell:
        assert c.request("GET", path)[0] == 200, path
    assert "'/static/vendor/tokenizers.min.mjs'" in c.request("GET", "/static/phone.js")[1].decode()
    if app.vendor_ok:
        status, lib, resp = c.request("GET", "/static/vendor/tokenizers.min.mjs")
        assert status == 200 and resp.getheader("Content-Type").startswith("text/javascript") and b"Tokenizer" in lib
