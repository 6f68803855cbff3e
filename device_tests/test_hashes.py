"""The bundle arrived intact: schema, safe paths, every listed file's size and SHA-256, nothing unlisted,
golden samples that fit their graphs, a tokenizer that loads."""
from __future__ import annotations

import numpy as np

from lugha.manifest import list_bundle_files, verify_files
from lugha.parity import check_tensors


def test_every_file_matches_its_hash(bundle_dir, manifest):
    problems = verify_files(bundle_dir, manifest)
    assert not problems, "\n".join(str(p) for p in problems)


# The ed25519 signature of manifest.json (lugha export --sign) cannot be listed in the file it signs.
UNLISTABLE = {"manifest.json.sig"}


def test_no_unlisted_files(bundle_dir, manifest):
    # An unlisted file (an ONNX external-data file, say) would load without its hash ever being checked.
    listed = {f.path for f in manifest.files} | UNLISTABLE
    extra = [p for p in list_bundle_files(bundle_dir) if p not in listed]
    assert not extra, f"files in the bundle folder that manifest.json does not list: {extra}"


def _batch_free(specs, fmt):
    """TFLite graphs are batch 1 and the runtime loops over rows: golden batches may be larger."""
    if fmt != "tflite":
        return specs
    return [s.__class__(s.name, s.dtype, ("batch",) + tuple(s.shape[1:]), s.layout) for s in specs]


def test_golden_samples_fit_their_graphs(bundle_dir, manifest):
    checked = 0
    for g in manifest.graphs:
        if g.golden is None:
            continue
        with np.load(bundle_dir / g.golden.inputs) as zi, np.load(bundle_dir / g.golden.outputs) as zo:
            ins, outs = {k: zi[k] for k in zi.files}, {k: zo[k] for k in zo.files}
        dims = check_tensors(ins, _batch_free(g.inputs, g.format), f"{g.key} golden inputs")
        check_tensors(outs, _batch_free(g.outputs, g.format), f"{g.key} golden outputs", dims)
        checked += 1
    assert checked, f"no graph has golden samples; graphs: {[g.key for g in manifest.graphs]}"


def test_tokenizer_loads_and_encodes(bundle_dir, manifest):
    if manifest.tokenizer is None:
        import pytest

        pytest.skip("bundle has no tokenizer (image-only)")
    from lugha.tokenizer import load_tokenizer

    tok = load_tokenizer(bundle_dir / manifest.tokenizer.file, manifest.tokenizer)
    ids, mask = tok.encode_batch(["a test", "ẹ kú àárọ̀ — habari ya asubuhi"])
    assert ids.shape == mask.shape and ids.shape[0] == 2 and ids.dtype == np.int64
    assert mask[:, 0].all() and ids.shape[1] <= manifest.tokenizer.max_length
