"""Issue 17: what a ``kill -9`` of ``lugha export`` leaves behind (its hidden staging folder beside the
bundle, its scratch folder in the temp folder) is swept by the next export, and only when the process
that made it is gone; signature checking has one home (lugha.runtimes.signature)."""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_the_next_export_sweeps_what_a_killed_export_left_and_keeps_a_live_ones(tmp_path, monkeypatch):
    from lugha.export import pipeline
    from lugha.export.options import ExportOptions

    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    dead, live = _dead_pid(), os.getppid()  # the parent (pytest's shell or runner) is alive throughout
    left = [tmp_path / f".bundle.partial-{dead}-k1ll3d9x", tmp / f"lugha-export-{dead}-k1ll3d9x"]
    kept = [tmp_path / f".bundle.partial-{live}-st1llrun", tmp / f"lugha-export-{live}-st1llrun",
            tmp_path / f".other.partial-{dead}-n0tm1ne0"]  # another bundle's: its own export sweeps it
    for d in left + kept:
        (d / "graphs").mkdir(parents=True)
        (d / "graphs" / "image_encoder.onnx").write_bytes(b"half a graph")
    half_zip = tmp_path / f".bundle.zip.{dead}-0a1b2c3d.tmp"  # killed while zipping (--zip)
    half_zip.write_bytes(b"PK half a zip")
    live_zip = tmp_path / f".bundle.zip.{live}-0a1b2c3d.tmp"
    live_zip.write_bytes(b"PK being written")

    seen = {}

    def build(source, root, scratch, opts, say):  # the real build takes minutes; the folders are what matter
        seen["staging"], seen["scratch"] = root, scratch
        (root / "manifest.json").write_text("{}", encoding="utf-8")
        return {}

    monkeypatch.setattr(pipeline, "_build", build)
    pipeline.export_run(object(), tmp_path / "bundle", ExportOptions(), say=lambda _: None)

    assert not [d for d in left if d.exists()], "a killed export's folders were left for ever"
    assert all(d.is_dir() for d in kept)
    assert not half_zip.exists() and live_zip.is_file()
    assert (tmp_path / "bundle" / "manifest.json").is_file()
    # this export's own folders carry its pid, so that the next one can tell whether it is still running
    assert seen["staging"].name.startswith(f".bundle.partial-{os.getpid()}-")
    assert seen["scratch"].name.startswith(f"lugha-export-{os.getpid()}-") and seen["scratch"].parent == tmp
    assert not seen["scratch"].exists()


def test_signature_checking_has_one_home():
    from lugha.export import signing
    from lugha.runtimes import signature

    assert signing.SignatureError is signature.SignatureError  # export raises what the runtime's callers catch
    assert signing.SIGNATURE_NAME == signature.SIGNATURE_NAME
    assert not hasattr(signing, "verify_bundle_signature"), "a second verifier, unused, drifting from the first"
    assert set(signing.__all__) == {"sign_bundle", "generate_keypair"}


def test_a_signed_export_verifies_with_the_runtime_check(tmp_path):
    from lugha.export.signing import generate_keypair, sign_bundle
    from lugha.runtimes.signature import SignatureError, check_bundle_trust
    from test_runtimes_bundle import make_tiny_bundle

    bundle = make_tiny_bundle(tmp_path / "bundle", int8=False)
    generate_keypair(tmp_path / "k.pem", tmp_path / "k.pub.pem")
    sign_bundle(bundle, tmp_path / "k.pem")
    assert check_bundle_trust(bundle, tmp_path / "k.pub.pem") == tmp_path / "k.pub.pem"
    (tmp_path / "k.pem").write_text("not a key", encoding="utf-8")
    with pytest.raises(SignatureError, match="not a PEM private key"):
        sign_bundle(bundle, tmp_path / "k.pem")
