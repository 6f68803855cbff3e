"""Issue 17, bundles: label packs path-checked and hashed; signatures required by open_bundle, serve,
bench, doctor and verify once a key is given or trusted, for folders and zips; zips judged by their
central directory before extraction, and no extracted copy left behind on any exit path."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import pytest

from lugha.cli import main
from lugha.errors import BundleError, ConfigError, UnsafePathError
from lugha.manifest import read_manifest_json, validate_manifest
from test_runtimes_bundle import make_tiny_bundle


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return make_tiny_bundle(tmp_path_factory.mktemp("sec") / "bundle", int8=False)


@pytest.fixture(scope="module")
def keys(tmp_path_factory) -> tuple[Path, Path, Path]:
    """(private, public, another public key)."""
    from lugha.export.signing import generate_keypair

    d = tmp_path_factory.mktemp("keys")
    generate_keypair(d / "pub.key", d / "pub.pem")
    generate_keypair(d / "other.key", d / "other.pem")
    return d / "pub.key", d / "pub.pem", d / "other.pem"


@pytest.fixture(autouse=True)
def no_trusted_keys(tmp_path, monkeypatch):
    """Each test starts with an empty config folder (no trusted keys), whatever this machine has."""
    monkeypatch.setenv("LUGHA_CONFIG", str(tmp_path / "config"))


def copy_of(tiny: Path, tmp_path: Path, name: str = "copy") -> Path:
    return Path(shutil.copytree(tiny, tmp_path / name))


def zip_of(folder: Path, out: Path, extra: dict[str, bytes] | None = None) -> Path:
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        for p in sorted(folder.rglob("*")):
            if p.is_file():
                z.write(p, "bundle/" + p.relative_to(folder).as_posix())
        for name, data in (extra or {}).items():
            z.writestr(name, data)
    return out


def extraction_dirs() -> set[str]:
    return {p.name for p in Path(tempfile.gettempdir()).glob("lugha-bundle-*")}


# --- label packs -----------------------------------------------------------------------------------------

def test_label_pack_paths_are_checked_and_must_be_hashed(tiny, tmp_path):
    m = read_manifest_json(tiny)
    with pytest.raises(UnsafePathError, match=r"manifest.label_packs.yo: '../../../etc/x.npz' leaves the bundle"):
        validate_manifest(m.replace(label_packs={"yo": "../../../etc/x.npz"}))
    with pytest.raises(ConfigError, match=r"label_packs.yo: 'labels/yo.npz' is not listed in manifest.files"):
        validate_manifest(m.replace(label_packs={"yo": "labels/yo.npz"}))
    validate_manifest(m.replace(label_packs={"sw": "labels/sw.npz"}))  # listed, hashed: fine


def test_a_label_pack_outside_the_bundle_is_refused_by_verify_and_open(tiny, tmp_path, capsys):
    from lugha.runtimes import open_bundle

    copy = copy_of(tiny, tmp_path)
    shutil.copy(copy / "labels" / "sw.npz", tmp_path / "outside.npz")
    data = json.loads((copy / "manifest.json").read_text())
    data["label_packs"] = {"yo": "../outside.npz"}
    (copy / "manifest.json").write_text(json.dumps(data))
    assert main(["bundle", "verify", str(copy)]) == 1
    assert "manifest.label_packs.yo: '../outside.npz' leaves the bundle folder" in capsys.readouterr().err
    with pytest.raises(UnsafePathError):
        open_bundle(copy, precision="fp32")


# --- signatures ------------------------------------------------------------------------------------------

def signed_copy(tiny: Path, tmp_path: Path, private: Path, name: str = "signed") -> Path:
    from lugha.export.signing import sign_bundle

    copy = copy_of(tiny, tmp_path, name)
    sign_bundle(copy, private)
    return copy


def test_open_bundle_requires_a_good_signature_once_a_key_is_given(tiny, tmp_path, keys):
    from lugha.runtimes import open_bundle
    from lugha.runtimes.signature import SignatureError

    private, public, other = keys
    signed = signed_copy(tiny, tmp_path, private)
    with open_bundle(signed, precision="fp32", pubkey=public) as b:
        assert b.embed_text(["cat"]).shape == (1, 4)
    unsigned = copy_of(tiny, tmp_path, "unsigned")
    for verify in (True, False):  # skipping the hashes (bench's workers do) never skips the signature
        with pytest.raises(SignatureError, match="not signed"):
            open_bundle(unsigned, pubkey=public, verify=verify)
    with pytest.raises(SignatureError, match="does not match"):
        open_bundle(signed, pubkey=other)
    data = json.loads((signed / "manifest.json").read_text())
    data["languages"] = ["en", "sw", "yo"]  # a one-word edit, hashes untouched
    (signed / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(SignatureError, match="does not match"):
        open_bundle(signed, pubkey=public)
    assert open_bundle(copy_of(tiny, tmp_path, "plain"), precision="fp32").precision == "fp32"  # no key: as before


def test_trusted_keys_in_the_config_folder_apply_without_flags(tiny, tmp_path, keys, monkeypatch, capsys):
    from lugha.runtimes import open_bundle
    from lugha.runtimes.doctor_probe import bundle_facts
    from lugha.runtimes.signature import SignatureError

    private, public, _ = keys
    trusted = tmp_path / "config" / "trusted_keys"
    trusted.mkdir(parents=True)
    shutil.copy(public, trusted / "publisher.pem")
    unsigned, signed = copy_of(tiny, tmp_path, "unsigned"), signed_copy(tiny, tmp_path, private)
    with pytest.raises(SignatureError, match="not signed"):
        open_bundle(unsigned)
    open_bundle(signed, precision="fp32").close()
    assert "not signed" in bundle_facts(unsigned).error  # doctor
    assert bundle_facts(signed).signed_by.endswith("publisher.pem")
    assert main(["bundle", "verify", str(unsigned)]) == 1
    assert main(["bundle", "verify", str(signed)]) == 0
    assert "signature by" in capsys.readouterr().out


def test_serve_bench_and_doctor_take_pubkey_and_refuse_unsigned_bundles(tiny, tmp_path, keys, capsys):
    from lugha.runtimes.doctor_probe import bundle_facts

    _, public, _ = keys
    unsigned = copy_of(tiny, tmp_path, "unsigned")
    for argv in (["serve", str(unsigned), "--pubkey", str(public), "--db", str(tmp_path / "f.sqlite")],
                 ["bench", str(unsigned), "--pubkey", str(public), "--in-process"]):
        assert main(argv) == 1, argv
        assert "manifest.json.sig: the bundle is not signed" in capsys.readouterr().err
    assert "not signed" in bundle_facts(unsigned, pubkey=public).error
    assert main(["doctor", str(unsigned), "--pubkey", str(public), "--json", "--timeout", "120"]) == 1
    doctor = json.loads(capsys.readouterr().out)
    assert not doctor["ok"] and "not signed" in doctor["facts"]["bundle"]["error"]


def test_verify_reads_signed_and_unsigned_zips(tiny, tmp_path, keys, capsys):
    private, public, other = keys
    signed = zip_of(signed_copy(tiny, tmp_path, private), tmp_path / "signed.zip")
    unsigned = zip_of(tiny, tmp_path / "unsigned.zip")
    assert main(["bundle", "verify", str(signed), "--pubkey", str(public), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] and report["signed_by"] == str(public)
    assert main(["bundle", "verify", str(unsigned), "--pubkey", str(public)]) == 1
    assert main(["bundle", "verify", str(signed), "--pubkey", str(other)]) == 1
    assert main(["bundle", "verify", str(unsigned)]) == 0  # no key: hashes only, zip or not
    from lugha.runtimes import open_bundle
    from lugha.runtimes.signature import SignatureError

    before = extraction_dirs()
    with pytest.raises(SignatureError):
        open_bundle(unsigned, pubkey=public)
    assert extraction_dirs() == before  # refused from the zip's own bytes: nothing was extracted


# --- zips ------------------------------------------------------------------------------------------------

def test_zip_bomb_symlink_and_duplicate_members_are_refused_before_extraction(tiny, tmp_path):
    from lugha.runtimes import open_bundle
    from lugha.runtimes.bundle_zip import ZipBundleError

    before = extraction_dirs()
    bomb = zip_of(tiny, tmp_path / "bomb.zip", {"bundle/padding.bin": bytes(64 << 20)})  # 64 MiB -> ~64 kB
    with pytest.raises(ZipBundleError, match=r"padding.bin.*inflate to 67,108,864.*zip bomb"):
        open_bundle(bomb)
    link = zip_of(tiny, tmp_path / "link.zip")
    with zipfile.ZipFile(link, "a") as z:
        info = zipfile.ZipInfo("bundle/labels/yo.npz")
        info.external_attr = (0o120777 << 16)  # a symlink, pointing out of the folder
        z.writestr(info, "/etc/passwd")
    with pytest.raises(UnsafePathError, match="symbolic link"):
        open_bundle(link)
    dup = zip_of(tiny, tmp_path / "dup.zip")
    with pytest.warns(UserWarning, match="Duplicate name"), zipfile.ZipFile(dup, "a") as z:
        z.writestr("bundle/manifest.json", "{}")
    with pytest.raises(ZipBundleError, match="appears twice"):
        open_bundle(dup)
    assert extraction_dirs() == before


def test_member_count_and_total_size_limits(tiny, tmp_path):
    from lugha.runtimes.bundle_zip import ZipBundleError, ZipLimits, extract_bundle

    archive = zip_of(tiny, tmp_path / "b.zip")
    with pytest.raises(ZipBundleError, match=r"entries > limit 3"):
        extract_bundle(archive, ZipLimits(max_members=3))
    with pytest.raises(ZipBundleError, match=r"more than 1,000 bytes"):
        extract_bundle(archive, ZipLimits(max_total_bytes=1000))


def test_a_failed_open_leaves_no_extracted_copy(tiny, tmp_path):
    from lugha.errors import ChecksumError
    from lugha.runtimes import open_bundle

    copy = copy_of(tiny, tmp_path)
    graph = copy / "graphs" / "text_encoder.fp32.onnx"
    data = bytearray(graph.read_bytes())
    data[-5] ^= 0xFF
    graph.write_bytes(bytes(data))
    before = extraction_dirs()
    with pytest.raises(ChecksumError):
        open_bundle(zip_of(copy, tmp_path / "tampered.zip"))
    assert extraction_dirs() == before


def test_copies_left_by_a_killed_process_are_swept(tiny, tmp_path):
    """kill -9 skips every finally: the next extraction removes folders whose process is gone."""
    from lugha.runtimes import open_bundle

    archive = zip_of(tiny, tmp_path / "b.zip")
    code = (f"import os, sys; from lugha.runtimes import open_bundle; b = open_bundle({str(archive)!r}, "
            "precision='fp32'); print(b.root, flush=True); sys.stdin.read()")
    child = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    left = Path(child.stdout.readline().strip())
    top = left if left.parent == Path(tempfile.gettempdir()) else left.parent
    assert top.name.startswith(f"lugha-bundle-{child.pid}-") and top.is_dir()
    child.kill()
    child.wait()
    assert top.is_dir()  # nothing cleaned it up
    open_bundle(archive, precision="fp32").close()
    assert not top.exists()


def test_a_parser_crashing_manifest_is_a_bundle_error(tmp_path, capsys):
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "manifest.json").write_bytes(b"[" * 100_000)
    assert main(["bundle", "verify", str(tmp_path / "b")]) == 1  # was a RecursionError traceback
    assert "nested too deep" in capsys.readouterr().err
