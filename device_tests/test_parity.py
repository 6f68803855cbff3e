"""Every graph on every installed backend reproduces the bundle's golden outputs, within the tolerance
the manifest gives that graph (lugha.parity: the one helper the exporter and CI use too)."""
from __future__ import annotations

import numpy as np
import pytest

from lugha.parity import assert_parity


def _golden(bundle_dir, spec):
    with np.load(bundle_dir / spec.golden.inputs) as zi, np.load(bundle_dir / spec.golden.outputs) as zo:
        return {k: zi[k] for k in zi.files}, {k: zo[k] for k in zo.files}


def test_graph_matches_golden(bundle_dir, manifest, backend, graph_key, threads, report):
    from lugha.runtimes.bundle import load_graph_session

    name, fmt, precision = graph_key.split("/")
    spec = manifest.graph(name, fmt, precision)
    if spec.golden is None:
        pytest.skip(f"{graph_key} has no golden samples")
    inputs, reference = _golden(bundle_dir, spec)
    session = load_graph_session(bundle_dir, spec, backend, threads)
    outputs = session.run(inputs)
    entry = {"backend": backend, "graph": graph_key, "tolerance": spec.tolerance.__dict__}
    report["parity"].append(entry)
    results = assert_parity(reference, outputs, spec.tolerance, f"{graph_key} on {backend}")
    entry.update(ok=True, outputs=[r.to_dict() for r in results])


def test_embeddings_end_to_end(bundle_dir, manifest, backend, precision, threads):
    """The host path a device app takes: preprocess + tokenise + graphs + normalise, then label packs."""
    from lugha.runtimes import open_bundle

    b = open_bundle(bundle_dir, backend=backend, precision=precision, threads=threads, verify=False)
    rng = np.random.default_rng(0)
    if "image_encoder" in b.sessions:
        img = b.embed_image([rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)])
        assert np.isfinite(img).all() and np.allclose(np.linalg.norm(img, axis=1), 1.0, atol=1e-4)
    if "text_encoder" in b.sessions and manifest.tokenizer is not None:
        txt = b.embed_text(["a photo of a dog", "mbwa"])
        assert txt.shape[0] == 2 and np.isfinite(txt).all()
        assert np.allclose(np.linalg.norm(txt, axis=1), 1.0, atol=1e-4)
        for lang in b.label_languages()[:3]:
            top = b.classify(text="a photo", lang=lang, k=3)
            labels, _ = b.label_pack(lang)
            assert len(top) == min(3, len(labels)) and all(label in labels for label, _ in top)
