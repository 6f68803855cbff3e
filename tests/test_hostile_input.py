"""Issue 17, bad input: manifests, caption files and image paths written by someone else become counted,
reported row problems or typed errors, never a crash, a hang, a half-written file or a Ghostscript run."""
from __future__ import annotations

import gzip
import json
import os
import resource
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import pytest

import bad_images as bi
from lugha.cli import main
from lugha.data.check import CheckOptions, check_manifest
from lugha.data.importers import get_importer, read_text_lines
from lugha.errors import DataError
from lugha.records import Record, read_manifest, write_manifest

SURROGATE = b'{"id": "r2", "image": "a.jpg", "text": "Maandishi \\ud800 mabovu", "lang": "sw"}'
DEEP = b"[" * 100_000


def row(i: int, image: str = "a.jpg", **kw) -> bytes:
    return json.dumps({"id": f"r{i}", "image": image, "text": f"picha ya {i}", "lang": "sw", **kw}).encode()


def write(path: Path, lines: list[bytes]) -> Path:
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def test_check_counts_lone_surrogate_and_deep_nesting_and_writes_the_rest(tmp_path, capsys):
    """The issue's two lines: the old code died with UnicodeEncodeError (leaving manifest.clean.jsonl.tmp)
    and RecursionError; now each is one skipped row of its kind and the other rows are written."""
    bi.good_jpeg(tmp_path / "a.jpg")
    m = write(tmp_path / "manifest.jsonl", [row(1), SURROGATE, DEEP, row(4)])
    assert main(["data", "check", str(m), "--workers", "1", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["counts"] == {"malformed_json": 1, "invalid_unicode": 1}
    assert (report["rows"], report["kept"], report["skipped"]) == (4, 2, 2)
    assert [r.id for r in read_manifest(tmp_path / "manifest.clean.jsonl")] == ["r1", "r4"]
    skipped = [json.loads(x) for x in (tmp_path / "manifest.skipped.jsonl").read_text().splitlines()]
    assert [(e["line"], e["kind"], e["id"]) for e in skipped] == [(2, "invalid_unicode", "r2"), (3, "malformed_json", None)]
    assert skipped[0]["raw"].encode() == SURROGATE  # the row as written, to fix and re-add
    assert not [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_over_long_line_is_a_row_and_the_next_lines_keep_their_numbers(tmp_path):
    bi.good_jpeg(tmp_path / "a.jpg")
    long = json.dumps({"id": "r2", "image": "a.jpg", "text": "a" * (1 << 20), "lang": "sw"}).encode()
    rep = check_manifest(write(tmp_path / "m.jsonl", [row(1), long, row(3)]), CheckOptions(workers=1))
    assert rep.counts == {"line_too_long": 1}
    assert [(f.line, f.kind) for f in rep.findings] == [(2, "line_too_long")]
    assert [r.id for r in rep.records] == ["r1", "r3"]


def test_readers_raise_data_errors_naming_the_line(tmp_path):
    with pytest.raises(DataError, match=r"m.jsonl:2: malformed_json"):
        read_manifest(write(tmp_path / "m.jsonl", [row(1), DEEP]))
    with pytest.raises(DataError, match=r"s.jsonl:1: invalid_unicode: text"):
        read_manifest(write(tmp_path / "s.jsonl", [SURROGATE]))


def test_write_manifest_refuses_unencodable_text_and_keeps_the_old_file(tmp_path):
    out = tmp_path / "feedback.jsonl"
    out.write_text("old\n", encoding="utf-8")
    bad = Record(id="fb-7", image="a.jpg", text="Maandishi \ud800", lang="sw")
    with pytest.raises(DataError, match=r"record 'fb-7': text .* lone surrogate"):
        write_manifest(out, [Record(id="ok", image="a.jpg", text="sawa", lang="sw"), bad])
    assert out.read_text(encoding="utf-8") == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["feedback.jsonl"]  # no temp file left behind


def test_gz_manifests_are_streamed_and_a_gzip_bomb_is_refused(tmp_path, monkeypatch):
    gz = tmp_path / "m.jsonl.gz"
    with gzip.open(gz, "wb") as f:
        f.write(row(1) + b"\n" + row(2) + b"\n")
    assert [r.id for r in read_manifest(gz)] == ["r1", "r2"]
    # 64 MiB without a newline: read whole, the old reader held all of it; the cap stops at 1 MiB
    one_line = tmp_path / "train.de.gz"
    with gzip.open(one_line, "wb", compresslevel=1) as f:
        for _ in range(64):
            f.write(b"a" * (1 << 20))
    tracemalloc.start()
    try:
        with pytest.raises(DataError, match=r"train.de.gz:1: line longer than"):
            read_text_lines(one_line)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20, f"peak {peak / 1e6:.0f} MB"
    monkeypatch.setattr("lugha.jsonl.MAX_DECOMPRESSED_BYTES", 4 << 20)
    many = tmp_path / "test.fr.gz"
    with gzip.open(many, "wb", compresslevel=1) as f:
        f.write(b"une ligne\n" * (1 << 20))  # 10 MiB inflated
    with pytest.raises(DataError, match=r"test.fr.gz: decompresses to more than 4,194,304 bytes"):
        read_text_lines(many)


def test_xm3600_bad_lines_are_reported_rows_not_crashes(tmp_path):
    bi.good_jpeg((tmp_path / "images").mkdir() or tmp_path / "images" / "k1.jpg")
    good = json.dumps({"image/key": "k1", "en": {"caption": ["a dog"]}}).encode()
    surrogate = b'{"image/key": "k1", "en": {"caption": ["bad \\udc80 caption"]}}'
    cap = write(tmp_path / "captions.jsonl", [good, DEEP, surrogate])
    result = get_importer("xm3600")(cap, tmp_path / "images")
    assert [r.text for r in result.records] == ["a dog"]
    assert [w for w, _ in result.skipped] == ["captions.jsonl:2", "captions.jsonl:3"]
    assert "malformed_json" in result.skipped[0][1] and "invalid_unicode" in result.skipped[1][1]


def test_coco_deep_nesting_is_a_data_error_and_surrogate_captions_are_skipped(tmp_path, capsys):
    (tmp_path / "deep.json").write_bytes(DEEP)
    with pytest.raises(DataError, match="nested too deep"):
        get_importer("coco")(tmp_path / "deep.json", tmp_path)
    bi.good_jpeg(tmp_path / "1.jpg")
    data = '{"images": [{"id": 1, "file_name": "1.jpg"}], "annotations": [' \
           '{"id": 1, "image_id": 1, "caption": "a red bus"}, {"id": 2, "image_id": 1, "caption": "x \\ud800"}]}'
    (tmp_path / "captions.json").write_text(data, encoding="ascii")
    out = tmp_path / "out" / "coco.jsonl"
    assert main(["data", "import", "coco", str(tmp_path / "captions.json"), "--images", str(tmp_path),
                 "--out", str(out), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert [r.id for r in read_manifest(out)] == ["coco-1"]
    assert report["skipped"] == 1 and "lone surrogate" in report["skipped_examples"][0]["why"]


def test_importer_image_names_stay_inside_the_images_folder(tmp_path):
    (tmp_path / "images").mkdir()
    bi.good_jpeg(tmp_path / "images" / "in.jpg")
    bi.good_jpeg(tmp_path / "secret.jpg")
    data = {"images": [{"id": 1, "file_name": "in.jpg"}, {"id": 2, "file_name": "../secret.jpg"},
                       {"id": 3, "file_name": str(tmp_path / "secret.jpg")}],
            "annotations": [{"id": i, "image_id": i, "caption": f"c{i}"} for i in (1, 2, 3)]}
    (tmp_path / "c.json").write_text(json.dumps(data))
    coco = get_importer("coco")
    result = coco(tmp_path / "c.json", tmp_path / "images")
    assert [r.id for r in result.records] == ["coco-1"]
    assert all("leaves the images folder" in why for _, why in result.skipped) and len(result.skipped) == 2
    from lugha.data.importers import ImportOptions

    allowed = coco(tmp_path / "c.json", tmp_path / "images", options=ImportOptions(allow_outside=True))
    assert [r.id for r in allowed.records] == ["coco-1", "coco-2", "coco-3"]


def test_check_keeps_image_paths_inside_the_manifest_folder(tmp_path):
    (tmp_path / "d").mkdir()
    bi.good_jpeg(tmp_path / "d" / "a.jpg")
    bi.good_jpeg(tmp_path / "outside.jpg", seed=3)
    m = write(tmp_path / "d" / "m.jsonl", [row(1), row(2, "../outside.jpg"), row(3, str(tmp_path / "outside.jpg"))])
    rep = check_manifest(m, CheckOptions(workers=1, write=False))
    assert rep.counts == {"image_outside_root": 2} and [r.id for r in rep.records] == ["r1"]
    assert check_manifest(m, CheckOptions(workers=1, write=False, allow_outside=True)).ok


def _run_check(manifest: Path, *flags: str) -> tuple[dict, float]:
    """`lugha data check` in a child with 1 GB of heap at most and a minute to finish (the old code read
    /dev/zero until memory ran out, and waited forever on a FIFO)."""
    def limits():
        resource.setrlimit(resource.RLIMIT_DATA, (1 << 30, 1 << 30))

    start = time.monotonic()
    try:
        done = subprocess.run([sys.executable, "-m", "lugha.cli", "data", "check", str(manifest), "--workers", "1",
                               "--json", "--no-write", *flags], capture_output=True, text=True, timeout=60,
                              preexec_fn=limits)
    except subprocess.TimeoutExpired:
        pytest.fail("lugha data check hung on a non-regular file")
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout), time.monotonic() - start


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="FIFOs and /dev/zero are POSIX")
def test_devices_fifos_and_huge_files_are_refused_unread(tmp_path):
    bi.good_jpeg(tmp_path / "a.jpg")
    os.mkfifo(tmp_path / "pipe.jpg")
    os.symlink("/dev/zero", tmp_path / "zero.jpg")
    m = write(tmp_path / "m.jsonl", [row(1), row(2, "/dev/zero"), row(3, "pipe.jpg"), row(4, "zero.jpg")])
    report, _ = _run_check(m)
    assert report["counts"] == {"image_outside_root": 1, "not_regular_file": 2}
    report, seconds = _run_check(m, "--allow-outside")
    assert report["counts"] == {"not_regular_file": 3} and report["kept"] == 1
    rep = check_manifest(m, CheckOptions(workers=1, write=False, max_image_bytes=1000))
    assert rep.counts["file_too_large"] == 1 and "bytes > limit 1,000" in rep.examples["file_too_large"][0]["message"]


def _eps(path: Path) -> Path:
    path.write_bytes(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 64 64\n"
                     b"newpath 0 0 moveto 64 64 lineto stroke\nshowpage\n%%EOF\n")
    return path


def test_eps_renamed_jpg_never_reaches_the_eps_plugin(tmp_path, monkeypatch):
    """Pillow's EPS plugin hands the file to Ghostscript on load; with formats= it is never even asked."""
    from PIL import EpsImagePlugin

    asked = []
    monkeypatch.setattr(EpsImagePlugin.EpsImageFile, "_open", lambda self: asked.append(1) or (_ for _ in ()).throw(
        SyntaxError("EPS plugin reached")))
    _eps(tmp_path / "photo.jpg")
    rep = check_manifest(write(tmp_path / "m.jsonl", [row(1, "photo.jpg")]), CheckOptions(workers=1, write=False))
    assert rep.counts == {"unsupported_format": 1} and not asked
    assert "PostScript/EPS" in rep.examples["unsupported_format"][0]["message"]
    from lugha.image_io import open_image

    with pytest.raises(Exception) as e:
        open_image(tmp_path / "photo.jpg")
    assert "cannot identify" in str(e.value) and not asked


def test_the_runtime_preprocessing_of_a_path_uses_the_same_guards(tmp_path, monkeypatch):
    """Bundle.embed_image(paths) and export calibration open files through kit's preprocess_image."""
    from PIL import EpsImagePlugin

    from lugha.preprocess import PreprocessSpec, preprocess_image

    asked = []
    monkeypatch.setattr(EpsImagePlugin.EpsImageFile, "_open", lambda self: asked.append(1) or (_ for _ in ()).throw(
        SyntaxError("EPS plugin reached")))
    spec = PreprocessSpec(size=32)
    with pytest.raises(Exception, match="cannot identify"):
        preprocess_image(_eps(tmp_path / "x.jpg"), spec)
    assert not asked
    from lugha.image_io import ImageFileError

    with pytest.raises(ImageFileError, match="not a regular file"):
        preprocess_image("/dev/zero", spec)
    assert preprocess_image(bi.good_jpeg(tmp_path / "ok.jpg"), spec).shape[-1] in (3, 32)


def test_a_broken_csv_table_is_a_data_error_naming_the_line(tmp_path):
    """csv raises csv.Error on a field over 128 kB, the decoder UnicodeDecodeError on Latin-1 bytes: now a
    DataError naming the file and where it stopped."""
    bi.good_jpeg(tmp_path / "a.jpg")
    table = tmp_path / "t.csv"
    table.write_bytes(b"image,text\na.jpg,ok\na.jpg,caf\xe9\n")
    with pytest.raises(DataError, match=r"t.csv: cannot read as a table after line \d+ \(UnicodeDecodeError"):
        get_importer("csv")(table, lang="sw")
    table.write_bytes(b"image,text\na.jpg,ok\na.jpg," + b"x" * (200 << 10) + b"\n")
    with pytest.raises(DataError, match=r"t.csv: cannot read as a table after line 2 .*field larger than field limit"):
        get_importer("csv")(table, lang="sw")


def test_data_check_reads_a_gz_manifest_as_a_stream(tmp_path):
    bi.good_jpeg(tmp_path / "a.jpg")
    with gzip.open(tmp_path / "m.jsonl.gz", "wb") as f:
        f.write(row(1) + b"\n" + SURROGATE + b"\n")
    rep = check_manifest(tmp_path / "m.jsonl.gz", CheckOptions(workers=1, min_per_split=0))
    assert (rep.rows, rep.kept, rep.counts) == (2, 1, {"invalid_unicode": 1})
    assert rep.outputs["clean"] == str(tmp_path / "m.clean.jsonl")
