"""The field app in a real browser (tests/browser/flows.mjs: playwright-core driving Debian's chromium,
headless, phone viewport): consent, photo -> words, text -> gallery, judgments found in SQLite, on-phone
inference (onnxruntime-web) matching the server and the golden samples, pre-processing ported to JS
matching lugha.preprocess, text search on the phone (tokenizer.js + the int8 text graph) giving the
server's top-k, and a reload with the network off that still classifies a photo and searches by text.

Skips, saying why, when chromium, node, playwright-core or the vendored onnxruntime-web is missing.
``LUGHA_SCREENSHOTS=DIR`` keeps the screenshots there; ``LUGHA_BROWSER_BUNDLE=DIR`` runs the same flows
on an exported bundle (it needs a ``sw`` label pack) instead of the tiny one built here."""
from __future__ import annotations

import base64
import io
import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from test_serve_api import field_bundle, make_gallery, photo, running_server  # noqa: F401 (fixture)

REPO = Path(__file__).resolve().parents[1]
BROWSER = REPO / "tests" / "browser"
CHROMIUM = os.environ.get("LUGHA_CHROMIUM", "/usr/bin/chromium")


def _missing() -> str | None:
    from lugha.runtimes.serve_app import STATIC, VENDOR_FILES

    if not Path(CHROMIUM).exists():
        return f"no chromium at {CHROMIUM} (apt-get install chromium)"
    if shutil.which("node") is None:
        return "node is not installed (apt-get install nodejs npm)"
    if not (BROWSER / "node_modules" / "playwright-core" / "package.json").is_file():
        return "playwright-core is not installed (npm ci --prefix tests/browser)"
    if not all((STATIC / "vendor" / f).is_file() for f in VENDOR_FILES):
        return "onnxruntime-web is not vendored (bash scripts/vendor_web.sh)"
    return None


def _f32(a: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(a, np.float32).tobytes()).decode()


def _rotated_jpeg() -> bytes:
    """A JPEG stored sideways with EXIF Orientation 6, as phone cameras write portrait photos."""
    im = Image.open(io.BytesIO(photo((64, 40), seed=5)))
    exif = Image.Exif()
    exif[0x0112] = 6
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=95, exif=exif.tobytes())
    return buf.getvalue()


# Text queries for the phone-vs-server check: the tiny bundle's words, unknown words, punctuation, case,
# and Swahili captions for a real bundle (LUGHA_BROWSER_BUNDLE).
TEXT_QUERIES = ["paka mdogo", "a photo of a cat", "mbwa na ndege", "fish", "ndege ndege paka", "Paka, mbwa!",
                "  samaki  ", "bird dog cat fish photo of a", "uso wenye tabasamu", "bendera ya Kenya"]


@pytest.mark.slow
@pytest.mark.skipif(_missing() is not None, reason=_missing() or "")
def test_field_app_in_a_real_browser(field_bundle, tmp_path):  # noqa: F811
    from lugha._schema import to_dict
    from lugha.preprocess import PreprocessSpec, preprocess_image

    png, jpg = tmp_path / "photo.png", tmp_path / "photo.jpg"
    png.write_bytes(photo((53, 31), seed=9))
    jpg.write_bytes(_rotated_jpeg())
    shots = Path(os.environ.get("LUGHA_SCREENSHOTS") or tmp_path)
    shots.mkdir(parents=True, exist_ok=True)
    sw = json.loads((REPO / "runtimes" / "static" / "i18n" / "sw.json").read_text(encoding="utf-8"))
    bundle_dir = Path(os.environ.get("LUGHA_BROWSER_BUNDLE") or field_bundle)
    with running_server(bundle_dir, tmp_path, make_gallery(tmp_path / "gallery"), pin="4821") as (base, app):
        bundle = app.engine.bundle
        server_emb = bundle.embed_image([Image.open(png)])[0]
        server_top = [label for label, _ in bundle.classify(image=Image.open(png), lang="sw", k=5)]
        queries = TEXT_QUERIES
        n_gallery = len(app.engine.gallery_index)
        server_scores = {q: {r["id"]: r["score"] for r in app.engine.search_text(q, "sw", n_gallery)} for q in queries}
        server_text = {q: {"ids": [r["id"] for r in app.engine.search_text(q, "sw", 5)],
                           "input_ids": bundle.tokenizer.encode_batch([q])[0][0].tolist(),
                           "embedding": [float(x) for x in bundle.embed_text([q])[0]]} for q in queries}
        specs = {"bundle": bundle.manifest.preprocess,
                 "bilinear224": PreprocessSpec(size=224),
                 "bicubic_crop": PreprocessSpec(size=96, interpolation="bicubic", crop_pct=0.875),
                 "letterbox_nhwc": PreprocessSpec(size=40, resize="letterbox", layout="NHWC"),
                 "squash_up": PreprocessSpec(size=71, resize="squash", mean=(0.5,) * 3, std=(0.5,) * 3)}
        cases = [{"name": name, "image": "png", "spec": to_dict(spec),
                  "expected": _f32(preprocess_image(png, spec))} for name, spec in specs.items()]
        cases.append({"name": "exif_jpeg", "image": "jpg", "spec": to_dict(specs["bilinear224"]),
                      "expected": _f32(preprocess_image(jpg, specs["bilinear224"]))})
        case = {"base": base, "chromium": CHROMIUM, "lang": "sw", "pin": "4821", "expect_tab_photo": sw["tab_photo"],
                "photo_png": str(png), "photo_jpg": str(jpg), "query": "paka mdogo", "better_caption": "paka mweusi",
                "pixel_cases": cases, "server_embedding": [float(x) for x in server_emb], "server_text": server_text,
                "out": str(tmp_path / "flows.out.json"), "screenshot": str(shots / "lugha-serve-main.png"),
                **{f"screenshot_{k}": str(shots / f"lugha-serve-{k}.png") for k in ("consent", "text", "offline", "failure")}}
        (tmp_path / "case.json").write_text(json.dumps(case))
        run = subprocess.run(["node", str(BROWSER / "flows.mjs"), str(tmp_path / "case.json")], cwd=BROWSER,
                             capture_output=True, text=True, timeout=300)
        out = json.loads(Path(case["out"]).read_text()) if Path(case["out"]).is_file() else {}
        assert run.returncode == 0 and out.get("ok"), f"{out.get('error')}\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}"
        rows = {r["id"]: r for r in app.db.feedback_rows()}
        tol = app.engine.phone_graph.tolerance

    # the page showed the server's answer, and the judgments are in the database as given
    assert out["server_labels"] == server_top
    photo_fb, text_fb = out["feedback_ids"]
    assert rows[photo_fb]["mode"] == "image" and rows[photo_fb]["better_caption"] == "paka mweusi"
    assert (rows[photo_fb]["correct"], rows[photo_fb]["appropriate"], rows[photo_fb]["tester_lang"]) == (0, 1, "sw")
    assert rows[photo_fb]["result"] == server_top[0] and rows[photo_fb]["lang"] == "sw"
    assert rows[text_fb]["mode"] == "text" and rows[text_fb]["correct"] == 1 and rows[text_fb]["query_text"] == "paka mdogo"
    # the admin page showed both judgments for review, the photo with its caption, and the approval is stored
    assert out["review_items"] == 2 and out["review_photo_width"] == 53
    assert rows[photo_fb]["review"] == 1 and rows[text_fb]["review"] is None
    # JS pre-processing is lugha.preprocess: identical tensors on lossless input, close on a JPEG
    for name, r in out["pixels"].items():
        if r["image"] == "png":
            assert r["max_abs"] <= 1e-6, (name, r)
        else:  # two JPEG decoders (libjpeg-turbo builds) may differ by a level here and there
            assert r["mean_abs"] < 0.02 and r["cosine"] > 0.999, (name, r)
    # on-phone int8 graph in WebAssembly == the server's, and the golden samples pass
    golden = next(s for s in out["steps"] if s["name"] == "golden")
    assert golden["ok"] and golden["max_abs"] <= tol.max_abs
    pv = out["phone_vs_server"]
    assert pv["max_abs"] <= tol.max_abs and pv["cosine"] >= tol.min_cosine, pv
    assert pv["phone_labels"] == server_top and out["phone_ui_labels"] == server_top
    assert out["phone_ui_where"] == sw["ran_on_phone"]
    # text on the phone: tokenizer.js gives the server's input_ids, the int8 text graph in WebAssembly its
    # embedding (within the graph's tolerance), the gallery search its top-k, in the page too
    tol_text = app.engine.phone_text_graph.tolerance
    assert next(s for s in out["steps"] if s["name"] == "golden")["text"]["ok"]
    agree = 0
    for q, want in server_text.items():
        got = out["phone_text"][q]
        assert got["input_ids"] == want["input_ids"], (q, got["input_ids"], want["input_ids"])
        assert got["max_abs"] <= tol_text.max_abs and got["cosine"] >= tol_text.min_cosine, (q, got)
        agree += got["ids"] == want["ids"]
        # int8 kernels in WebAssembly and natively round differently (embeddings within the tolerance,
        # checked above): two gallery images may swap only where the server itself scores them as a tie
        for rank, (a, b) in enumerate(zip(got["ids"], want["ids"])):
            gap = abs(server_scores[q][a] - server_scores[q][b])
            assert a == b or gap <= 2e-3, (q, rank, got["ids"], want["ids"], gap)
    print(f"phone text search: top-5 identical to the server's for {agree}/{len(server_text)} queries "
          f"(the rest: near-tied neighbours swapped)")
    assert out["phone_ui_text"] == server_text[case["query"]]["ids"] and out["phone_ui_text_where"] == sw["ran_on_phone"]
    # network off: the page came from the service worker's cache, still classified the photo, still searched
    assert out["offline_banner"] and out["offline_labels"] == server_top and not out["offline_feedback_visible"]
    assert out["offline_text_ids"] == server_text[case["query"]]["ids"] and out["offline_text_where"] == sw["ran_on_phone"]
    assert out["offline_text_images_loaded"] >= 1  # thumbnails seen online came from the worker's cache
    noise = ("ERR_INTERNET_DISCONNECTED", "Failed to load resource", "Failed to fetch")
    assert [e for e in out["page_errors"] if not any(n in e for n in noise)] == []
    assert Path(case["screenshot"]).stat().st_size > 10_000
