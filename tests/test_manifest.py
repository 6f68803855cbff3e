"""BundleManifest: round trip, and refusal of every kind of tampering, with the file named."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from lugha.config import get_model_config
from lugha.errors import ChecksumError, ConfigError, MissingFileError, SchemaVersionError, UnsafePathError
from lugha.hashing import sha256_file
from lugha.manifest import (MANIFEST_NAME, BundleManifest, FileEntry, GoldenSample, GraphSpec, TensorSpec,
                            Tolerance, add_all_files, list_bundle_files, load_bundle_manifest, write_manifest)
from lugha.tokenizer import spec_for_model

# Every file the test bundle holds; the manifest must list exactly these.
BUNDLE_FILES = [
    "golden/image_encoder.inputs.npz",
    "golden/image_encoder.outputs.npz",
    "golden/text_encoder.int8.outputs.npz",
    "golden/text_encoder.inputs.npz",
    "graphs/image_encoder.fp32.onnx",
    "graphs/text_encoder.int8.onnx",
    "tokenizer.json",
]


def build_manifest() -> BundleManifest:
    cfg = get_model_config("test-tiny")
    s = cfg.preprocess.size
    image = GraphSpec(
        name="image_encoder", format="onnx", precision="fp32", file="graphs/image_encoder.fp32.onnx",
        inputs=[TensorSpec("pixel_values", "float32", ["batch", 3, s, s], "NCHW")],
        outputs=[TensorSpec("image_embeds", "float32", ["batch", cfg.embed_dim])],
        golden=GoldenSample("golden/image_encoder.inputs.npz", "golden/image_encoder.outputs.npz"),
        tolerance=Tolerance(max_abs=1e-5, min_cosine=0.9999))
    text = GraphSpec(
        name="text_encoder", format="onnx", precision="int8", file="graphs/text_encoder.int8.onnx",
        inputs=[TensorSpec("input_ids", "int64", ["batch", "seq"]),
                TensorSpec("attention_mask", "int64", ["batch", "seq"])],
        outputs=[TensorSpec("text_embeds", "float32", ["batch", cfg.embed_dim])],
        quantization={"scheme": "dynamic", "per_channel": True, "calibration": None},
        golden=GoldenSample("golden/text_encoder.inputs.npz", "golden/text_encoder.int8.outputs.npz"),
        tolerance=Tolerance(max_abs=0.05, min_cosine=0.99, int8_steps=2))
    return BundleManifest(
        model=cfg, tokenizer=spec_for_model(cfg), graphs=[image, text],
        languages=["en", "sw", "yo"],
        metrics={"fp32": {"en": {"R@1": 0.5, "R@5": 0.9}}, "int8": {"sw": {"R@1": 0.25}, "yo": {"R@1": 0.2}}})


def build_bundle(root: Path) -> BundleManifest:
    """A small real bundle: fake .onnx bytes, real .npz golden files, a tokenizer.json stand-in."""
    rng = np.random.default_rng(0)
    (root / "graphs").mkdir(parents=True)
    (root / "golden").mkdir()
    (root / "graphs/image_encoder.fp32.onnx").write_bytes(b"\x08\x07fake-onnx" + rng.bytes(3000))
    (root / "graphs/text_encoder.int8.onnx").write_bytes(b"\x08\x07fake-onnx-int8" + rng.bytes(1500))
    np.savez(root / "golden/image_encoder.inputs.npz", pixel_values=rng.normal(size=(2, 3, 32, 32)).astype("f4"))
    np.savez(root / "golden/image_encoder.outputs.npz", image_embeds=rng.normal(size=(2, 16)).astype("f4"))
    np.savez(root / "golden/text_encoder.inputs.npz", input_ids=np.ones((2, 16), "i8"),
             attention_mask=np.ones((2, 16), "i8"))
    np.savez(root / "golden/text_encoder.int8.outputs.npz", text_embeds=rng.normal(size=(2, 16)).astype("f4"))
    (root / "tokenizer.json").write_text(json.dumps({"version": "1.0", "model": {"type": "WordLevel"}}))
    return write_manifest(root, build_manifest())


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("bundle") / "b"
    root.mkdir()
    build_bundle(root)
    return root


@pytest.fixture
def bundle(pristine, tmp_path) -> Path:
    """A fresh copy per test, so tampering never leaks."""
    return Path(shutil.copytree(pristine, tmp_path / "b"))


def edit_json(root: Path, fn) -> None:
    path = root / MANIFEST_NAME
    data = json.loads(path.read_text())
    fn(data)
    path.write_text(json.dumps(data))


def test_round_trip_equal_dataclasses_with_real_sizes_and_hashes(tmp_path):
    bundle = tmp_path / "b"
    written = build_bundle(bundle)
    loaded = load_bundle_manifest(bundle)
    assert loaded == written
    assert sorted(f.path for f in loaded.files) == sorted(BUNDLE_FILES)  # graph, golden, tokenizer listed
    for f in loaded.files:
        data = (bundle / f.path).read_bytes()
        assert f.size == len(data) and f.sha256 == hashlib.sha256(data).hexdigest()
    assert loaded.graph("text_encoder").tolerance.int8_steps == 2
    assert loaded.graph("image_encoder").inputs[0].shape == ("batch", 3, 32, 32)
    assert loaded.metrics["int8"]["yo"]["R@1"] == 0.2
    assert list(json.loads((bundle / MANIFEST_NAME).read_text()))[:2] == ["schema_version", "lugha_version"]
    assert load_bundle_manifest(bundle / MANIFEST_NAME) == loaded  # the manifest path works too


@pytest.mark.parametrize("rel", BUNDLE_FILES)
def test_one_changed_byte_is_refused_naming_the_file(bundle, rel):
    path = bundle / rel
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01  # same size: only the SHA-256 can catch it
    path.write_bytes(bytes(data))
    with pytest.raises(ChecksumError, match=f"^{rel}: SHA-256"):
        load_bundle_manifest(bundle)
    assert load_bundle_manifest(bundle, verify=False).graphs  # structure alone still reads


@pytest.mark.parametrize("rel", BUNDLE_FILES)
def test_truncated_or_grown_file_is_refused_naming_the_file(bundle, rel):
    path = bundle / rel
    data = path.read_bytes()
    path.write_bytes(data[:-1])
    with pytest.raises(ChecksumError, match=f"^{rel}: size {len(data) - 1} bytes, manifest says {len(data)}"):
        load_bundle_manifest(bundle)
    path.write_bytes(data + b"\0")
    with pytest.raises(ChecksumError, match=f"^{rel}: size"):
        load_bundle_manifest(bundle)


@pytest.mark.parametrize("rel", BUNDLE_FILES)
def test_deleted_file_is_refused_naming_the_file(bundle, rel):
    (bundle / rel).unlink()
    with pytest.raises(MissingFileError, match=f"^{rel}: listed in manifest.json but missing"):
        load_bundle_manifest(bundle)


def test_missing_manifest_and_broken_json(bundle, tmp_path):
    with pytest.raises(MissingFileError, match="no manifest.json"):
        load_bundle_manifest(tmp_path)
    (bundle / MANIFEST_NAME).write_text("{not json")
    with pytest.raises(Exception, match="manifest.json: not valid JSON"):
        load_bundle_manifest(bundle)


@pytest.mark.parametrize("version,words", [(2, "newer lugha"), (0, "not a lugha"), ("1", "not a lugha"),
                                           (True, "not a lugha"), (None, "not a lugha")])
def test_unknown_schema_version_is_refused(bundle, version, words):
    edit_json(bundle, lambda d: d.update(schema_version=version) if version is not None else d.pop("schema_version"))
    with pytest.raises(SchemaVersionError, match=words):
        load_bundle_manifest(bundle, verify=False)


@pytest.mark.parametrize("bad", ["../x", "graphs/../../x", "/etc/passwd", "C:/Windows/x", "graphs\\x.onnx", "", "."])
def test_paths_that_leave_the_bundle_are_refused(bundle, bad):
    def escape(d):
        d["files"][0]["path"] = bad

    edit_json(bundle, escape)
    with pytest.raises(UnsafePathError, match=r"manifest\.files\[0\]\.path"):
        load_bundle_manifest(bundle, verify=False)


def test_graph_file_escape_is_refused_before_anything_is_opened(bundle):
    edit_json(bundle, lambda d: d["graphs"][0].update(file="../../etc/passwd"))
    with pytest.raises(UnsafePathError, match=r"manifest\.graphs\[0\]\.file: '../../etc/passwd'"):
        load_bundle_manifest(bundle)


def test_symlink_out_of_the_bundle_is_refused_even_with_matching_hash(bundle, tmp_path):
    rel = "graphs/image_encoder.fp32.onnx"
    outside = tmp_path / "outside.onnx"
    shutil.copy(bundle / rel, outside)  # same bytes: size and SHA-256 would both pass
    (bundle / rel).unlink()
    os.symlink(outside, bundle / rel)
    with pytest.raises(UnsafePathError, match=f"'{rel}' leads outside the bundle folder"):
        load_bundle_manifest(bundle)
    with pytest.raises(UnsafePathError):
        load_bundle_manifest(bundle, verify=False)
    with pytest.raises(UnsafePathError):
        list_bundle_files(bundle)


def test_symlink_inside_the_bundle_is_allowed(bundle):
    rel = "tokenizer.json"
    shutil.move(bundle / rel, bundle / "golden" / "tok.json")
    os.symlink(Path("golden") / "tok.json", bundle / rel)
    assert load_bundle_manifest(bundle).tokenizer.file == rel


@pytest.mark.parametrize("edit,field", [
    (lambda d: d.update(signed_by="me"), "manifest"),
    (lambda d: d["graphs"][1].update(runtime="ort"), "manifest.graphs[1]"),
    (lambda d: d["graphs"][0]["inputs"][0].update(scale=1), "manifest.graphs[0].inputs[0]"),
])
def test_unknown_fields_are_refused_naming_where(bundle, edit, field):
    edit_json(bundle, edit)
    with pytest.raises(ConfigError, match="unknown field") as info:
        load_bundle_manifest(bundle)
    assert info.value.field == field


@pytest.mark.parametrize("edit,field", [
    (lambda d: d["graphs"][0].update(precision="int4"), "manifest.graphs[0].precision"),
    (lambda d: d["graphs"][1].update(format="pt"), "manifest.graphs[1].format"),
    (lambda d: d["graphs"][0]["inputs"][0].update(shape=["batch", 3.5, 32, 32]),
     "manifest.graphs[0].inputs[0].shape[1]"),
    (lambda d: d["graphs"][0]["inputs"][0].update(shape=["batch size", 3, 32, 32]),
     "manifest.graphs[0].inputs[0].shape[0]"),
    (lambda d: d["graphs"][0]["outputs"][0].update(dtype="float64"), "manifest.graphs[0].outputs[0].dtype"),
    (lambda d: d["graphs"][1]["tolerance"].update(min_cosine=2), "manifest.graphs[1].tolerance.min_cosine"),
    (lambda d: d["model"]["text_tower"].update(max_length="64"), "manifest.model.text_tower.max_length"),
    (lambda d: d["tokenizer"].update(max_length=1), "manifest.tokenizer.max_length"),
    (lambda d: d["metrics"]["int8"]["sw"].update({"R@1": "high"}), "manifest.metrics.int8.sw.R@1"),
    (lambda d: d["files"][2].update(size="12"), "manifest.files[2].size"),
    (lambda d: d["files"][2].update(sha256="abc"), "manifest.files[2].sha256"),
    (lambda d: d.update(languages="en"), "manifest.languages"),
])
def test_bad_types_and_values_name_the_field_path(bundle, edit, field):
    edit_json(bundle, edit)
    with pytest.raises(ConfigError) as info:
        load_bundle_manifest(bundle)
    assert info.value.field == field


def test_referential_integrity(bundle):
    def unlist_golden(d):
        d["files"] = [f for f in d["files"] if f["path"] != "golden/text_encoder.inputs.npz"]

    edit_json(bundle, unlist_golden)
    with pytest.raises(ConfigError, match=r"manifest\.graphs\[1\]\.golden\.inputs: .* not listed"):
        load_bundle_manifest(bundle)
    edit_json(bundle, lambda d: d["files"].append(dict(d["files"][0])))
    with pytest.raises(ConfigError, match="listed twice"):
        load_bundle_manifest(bundle)


def test_duplicate_graph_role_format_precision_is_refused(bundle):
    edit_json(bundle, lambda d: d["graphs"].append(dict(d["graphs"][0])))
    with pytest.raises(ConfigError, match=r"manifest\.graphs\[2\]: image_encoder/onnx/fp32 duplicates graphs\[0\]"):
        load_bundle_manifest(bundle)


def test_write_refuses_missing_or_escaping_files_and_add_all_lists_everything(bundle, tmp_path):
    m = build_manifest()
    (bundle / "golden/image_encoder.outputs.npz").unlink()
    with pytest.raises(MissingFileError, match="golden/image_encoder.outputs.npz"):
        write_manifest(bundle, m)
    with pytest.raises(UnsafePathError):
        write_manifest(bundle, m.replace(files=[FileEntry("../secret")]))
    fresh = tmp_path / "fresh"
    build_bundle(fresh)
    (fresh / "labels").mkdir()
    (fresh / "labels/sw.txt").write_text("mbwa\npaka\n", encoding="utf-8")
    full = write_manifest(fresh, add_all_files(fresh, load_bundle_manifest(fresh)))
    assert sorted(f.path for f in full.files) == sorted(BUNDLE_FILES + ["labels/sw.txt"])
    (fresh / "labels/sw.txt").write_text("mbwa\npaka\nkuku\n", encoding="utf-8")
    with pytest.raises(ChecksumError, match="labels/sw.txt"):
        load_bundle_manifest(fresh)


def test_graph_lookup(bundle):
    m = load_bundle_manifest(bundle)
    assert m.graph("image_encoder", format="onnx").precision == "fp32"
    with pytest.raises(Exception, match="no graph matches text_encoder/fp16; bundle has: image_encoder/onnx/fp32"):
        m.graph("text_encoder", precision="fp16")


def test_chunked_hash_matches_hashlib(tmp_path):
    data = np.random.default_rng(1).bytes(2_500_000)
    path = tmp_path / "big.bin"
    path.write_bytes(data)
    expected = hashlib.sha256(data).hexdigest()
    assert sha256_file(path) == expected
    assert sha256_file(path, chunk=4093) == expected  # odd chunk size: the boundaries do not matter


# --- `lugha bundle verify|info` ------------------------------------------------------------------------

def cli(*argv):
    from lugha.cli import main

    return main(["bundle", *map(str, argv)])


def test_cli_verify_ok_and_json(bundle, capsys):
    assert cli("verify", bundle) == 0
    assert f"ok: {len(BUNDLE_FILES)} files" in capsys.readouterr().out
    assert cli("verify", bundle / MANIFEST_NAME, "--json") == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is True and report["files"] == len(BUNDLE_FILES) and report["errors"] == []
    assert report["bytes"] == sum((bundle / p).stat().st_size for p in BUNDLE_FILES)


def test_cli_verify_reports_every_bad_file_one_line_each(bundle, capsys):
    (bundle / "tokenizer.json").write_text("{}")
    (bundle / "golden/text_encoder.inputs.npz").unlink()
    assert cli("verify", bundle) == 1
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("lugha bundle verify: error:")]
    assert len(err) == 2
    assert any("tokenizer.json: size" in line for line in err)
    assert any("golden/text_encoder.inputs.npz: listed in manifest.json but missing" in line for line in err)
    assert cli("verify", bundle, "--json") == 1
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is False and len(report["errors"]) == 2


@pytest.mark.parametrize("json_flag", [[], ["--json"]])
def test_cli_verify_structural_failures_exit_1(bundle, tmp_path, capsys, json_flag):
    edit_json(bundle, lambda d: d.update(schema_version=7))
    assert cli("verify", bundle, *json_flag) == 1
    captured = capsys.readouterr()
    assert captured.err.count("\n") == 1 and "schema_version 7" in captured.err
    assert cli("verify", tmp_path / "nowhere", *json_flag) == 1
    assert "no manifest.json" in capsys.readouterr().err


def test_cli_info_table_and_json(bundle, capsys):
    assert cli("info", bundle) == 0
    out = capsys.readouterr().out
    for text in ("test-tiny", "en, sw, yo", "image_encoder", "text_encoder", "int8", "pixel_values:float32"
                 "[batch,3,32,32]", "R@5", "0.900"):
        assert text in out, text
    assert cli("info", bundle, "--json") == 0
    report = json.loads(capsys.readouterr().out)
    assert BundleManifest.from_dict(report["manifest"]) == load_bundle_manifest(bundle)
    assert report["total_bytes"] == sum((bundle / p).stat().st_size for p in BUNDLE_FILES)


def test_cli_info_refuses_an_unsafe_manifest_and_bare_bundle_prints_help(bundle, capsys):
    edit_json(bundle, lambda d: d["files"][0].update(path="/etc/passwd"))
    assert cli("info", bundle) == 1
    assert "'/etc/passwd' is absolute" in capsys.readouterr().err
    assert cli() == 2
    assert "verify" in capsys.readouterr().out


def test_one_preprocessing_record_and_an_older_second_copy_is_checked(bundle):
    """The manifest holds preprocessing once (model.preprocess); a bundle written with the old top-level
    copy still loads when the copies agree and is refused, naming what differs, when they do not."""
    data = json.loads((bundle / MANIFEST_NAME).read_text())
    assert "preprocess" not in data and "preprocess" in data["model"]
    m = load_bundle_manifest(bundle)
    assert m.preprocess == m.model.preprocess
    edit_json(bundle, lambda d: d.update(preprocess=dict(d["model"]["preprocess"])))
    assert load_bundle_manifest(bundle, verify=False) == m
    edit_json(bundle, lambda d: d["preprocess"].update(size=d["preprocess"]["size"] + 1))
    with pytest.raises(ConfigError, match=r"differs from manifest.model.preprocess.*size 33 vs 32") as info:
        load_bundle_manifest(bundle, verify=False)
    assert info.value.field == "manifest.preprocess"
    edit_json(bundle, lambda d: d["preprocess"].update(resample="nearest"))
    with pytest.raises(ConfigError, match="unknown field") as info:
        load_bundle_manifest(bundle, verify=False)
    assert info.value.field == "manifest.preprocess"
