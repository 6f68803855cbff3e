"""`lugha data check` on real files with real defects: every kind counted, no row lost, outputs usable."""
from __future__ import annotations

import json
import os
import unicodedata
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import bad_images as bi
from lugha.cli import main
from lugha.data.check import KINDS, CheckOptions, check_manifest
from lugha.records import read_manifest
from lugha.errors import DataError

MODE_FIXES = {"mode_cmyk": bi.cmyk_jpeg, "mode_16bit": bi.png_16bit, "mode_palette": bi.palette_png_transparent,
              "mode_alpha": bi.rgba_png, "mode_grayscale": bi.gray_png}
IMAGE_SKIPS = {"corrupt_image": bi.truncated_jpeg, "zero_byte": bi.zero_byte, "tiny_image": bi.tiny_png,
               "decompression_bomb": bi.pixel_bomb_png, "unsupported_format": bi.text_as_jpg}


def row(i, image, text=None, lang="sw", split="train", **kw) -> dict:
    return {"id": f"r{i}", "image": image, "text": f"picha ya {i}" if text is None else text, "lang": lang, "split": split, **kw}


def write_lines(path: Path, lines: list) -> Path:
    """Dicts become JSON lines; bytes are written as they are (to plant invalid UTF-8, broken JSON)."""
    with open(path, "wb") as f:
        for line in lines:
            f.write((json.dumps(line, ensure_ascii=False).encode() if isinstance(line, dict) else line) + b"\n")
    return path


def opts(**kw) -> CheckOptions:
    return CheckOptions(**{"workers": 1, "min_per_split": 0, **kw})


def skipped(report) -> list[dict]:
    return [json.loads(x) for x in Path(report.outputs["skipped"]).read_text(encoding="utf-8").splitlines()]


@pytest.mark.parametrize("kind", sorted(IMAGE_SKIPS))
def test_bad_image_is_skipped_with_its_kind(tmp_path, kind):
    IMAGE_SKIPS[kind](tmp_path / "bad.png")
    bi.good_jpeg(tmp_path / "ok.jpg")
    m = write_lines(tmp_path / "m.jsonl", [row(1, "ok.jpg"), row(2, "bad.png")])
    rep = check_manifest(m, opts())
    assert rep.counts == {kind: 1} and (rep.kept, rep.skipped) == (1, 1)
    (entry,) = skipped(rep)
    assert (entry["line"], entry["id"], entry["kind"]) == (2, "r2", kind)
    assert entry["row"]["image"] == "bad.png" and "bad.png" in entry["message"]


def test_renamed_svg_and_heic_are_unsupported_by_content_not_name(tmp_path):
    bi.svg_as_jpg(tmp_path / "a.jpg")
    bi.heic_as_jpg(tmp_path / "b.jpg")
    bi.good_png(tmp_path / "photo.txt")  # a real PNG with a wrong name is fine: content decides
    m = write_lines(tmp_path / "m.jsonl", [row(1, "a.jpg"), row(2, "b.jpg"), row(3, "photo.txt")])
    rep = check_manifest(m, opts())
    assert rep.counts == {"unsupported_format": 2} and [r.id for r in rep.records] == ["r3"]
    msgs = [e["message"] for e in rep.examples["unsupported_format"]]
    assert "SVG" in msgs[0] and "HEIC" in msgs[1]


def test_missing_and_unreadable_files(tmp_path):
    (tmp_path / "folder.jpg").mkdir()
    m = write_lines(tmp_path / "m.jsonl", [row(1, "nowhere.jpg"), row(2, "folder.jpg")])
    rep = check_manifest(m, opts())
    assert rep.counts == {"missing_file": 1, "unreadable_file": 1} and rep.kept == 0


def test_pixel_bomb_does_not_crash_and_limit_is_configurable(tmp_path):
    from PIL import Image as PILImage

    before = PILImage.MAX_IMAGE_PIXELS
    bi.pixel_bomb_png(tmp_path / "bomb.png")  # 144 M pixels: over twice Pillow's own limit too
    bi.good_jpeg(tmp_path / "ok.jpg", 64, 48)
    assert (tmp_path / "bomb.png").stat().st_size < 100_000
    m = write_lines(tmp_path / "m.jsonl", [row(1, "bomb.png"), row(2, "ok.jpg")])
    rep = check_manifest(m, opts())
    assert rep.counts == {"decompression_bomb": 1} and "144,000,000" in rep.examples["decompression_bomb"][0]["message"]
    assert PILImage.MAX_IMAGE_PIXELS == before  # our limit is scoped, Pillow's global is restored
    rep = check_manifest(m, opts(max_pixels=3000, write=False))  # 64x48 = 3072 > 3000
    assert rep.counts == {"decompression_bomb": 2}


def test_exif_orientation_6_cleaned_image_is_upright(tmp_path):
    bi.exif_rotated_jpeg(tmp_path / "rot.jpg", orientation=6)
    with Image.open(tmp_path / "rot.jpg") as raw:
        assert raw.size == (80, 48) and raw.getexif()[bi.ORIENTATION] == 6
    m = write_lines(tmp_path / "m.jsonl", [row(1, "rot.jpg")])
    rep = check_manifest(m, opts())
    assert rep.counts == {"exif_orientation": 1} and rep.kept == 1 and rep.fixed_rows == 1
    (rec,) = read_manifest(rep.outputs["clean"])
    assert rec.meta["source_image"] == "rot.jpg" and rec.meta["fixes"] == ["exif_orientation"]
    with Image.open(rec.image_path(tmp_path)) as up:
        assert up.size == (48, 80) and up.mode == "RGB"
        assert not up.getexif().get(bi.ORIENTATION)  # nobody can apply it twice
        px = np.asarray(up).astype(int)
    red, blue = np.array([255, 0, 0]), np.array([0, 0, 200])
    assert np.abs(px[4, 40] - red).max() < 40  # the stored top-left block is now top-right
    assert np.abs(px[4, 4] - blue).max() < 40 and np.abs(px[70, 40] - blue).max() < 40


def test_mode_fixups_counted_per_mode_and_written_as_rgb(tmp_path):
    lines = [row(0, "ok.jpg")]
    bi.good_jpeg(tmp_path / "ok.jpg")
    for i, (kind, build) in enumerate(sorted(MODE_FIXES.items()), 1):
        build(tmp_path / f"{kind}.img")
        lines += [row(i, f"{kind}.img"), row(i + 10, f"{kind}.img", lang="yo")]  # one image, two captions
    rep = check_manifest(write_lines(tmp_path / "m.jsonl", lines), opts())
    assert rep.counts == {k: 2 for k in MODE_FIXES} and rep.kept == len(lines) and rep.images_checked == 6
    for rec in read_manifest(rep.outputs["clean"]):
        with Image.open(rec.image_path(tmp_path)) as im:
            assert im.mode == "RGB", rec
    by_source = {r.meta.get("source_image"): r for r in rep.records}
    with Image.open(tmp_path / "mode_16bit.img") as src, Image.open(by_source["mode_16bit.img"].image_path(tmp_path)) as fixed:
        expect = np.asarray(src, dtype=np.float64) / 65535 * 255
        assert np.abs(np.asarray(fixed)[..., 0] - expect).max() <= 1  # scaled, not clipped to 255
    with Image.open(by_source["mode_alpha.img"].image_path(tmp_path)) as fixed:
        assert np.asarray(fixed).min() >= 127  # 50 % alpha over white lifts every channel past 127


def test_manifest_line_defects(tmp_path):
    bi.good_jpeg(tmp_path / "ok.jpg")
    good = json.dumps(row(1, "ok.jpg")).encode()
    lines = [
        good,
        b'{"id": "r2", "image": "ok.jpg", "text": "caf\xe9 latin-1", "lang": "sw", "split": "train"}',
        b'{"id": "r3", "image": "ok.jpg", ',
        b"[1, 2]",
        row(5, "ok.jpg", text=None) | {"text": None},
        {"id": "r6", "image": "ok.jpg", "text": "x", "lang": "sw", "colour": "red"},
        {"id": 7, "image": "ok.jpg", "text": "x", "lang": "sw"},
        b"   ",
    ]
    rep = check_manifest(write_lines(tmp_path / "m.jsonl", lines), opts())
    assert rep.counts == {"invalid_utf8": 1, "bad_json": 2, "missing_field": 1, "bad_field": 2}
    assert (rep.rows, rep.kept, rep.blank_lines) == (7, 1, 1)
    entries = {e["line"]: e for e in skipped(rep)}
    assert entries[2]["id"] == "r2" and "\\xe9" in entries[2]["raw"]  # the bytes are kept, escaped
    assert entries[3]["raw"].startswith('{"id": "r3"') and entries[5]["row"]["text"] is None
    assert entries[7]["id"] == "7" and "record.id" in entries[7]["message"]


def test_text_nfc_empty_and_over_long(tmp_path):
    bi.good_jpeg(tmp_path / "ok.jpg")
    decomposed = "cafe\u0301 o\u0323\u0300run"  # café, Yoruba ọ̀ with combining marks
    long_yo = "o\u0323\u0300" * 30  # 60 code points after NFC: ọ (precomposed) + combining grave
    lines = [row(1, "ok.jpg", text=decomposed), row(2, "ok.jpg", text="   \t"), row(3, "ok.jpg", text=""),
             row(4, "ok.jpg", text=long_yo), row(5, "ok.jpg", text="plain")]
    rep = check_manifest(write_lines(tmp_path / "m.jsonl", lines), opts(max_chars=25))
    assert rep.counts == {"empty_text": 2, "text_nfc": 2, "text_too_long": 1}
    recs = {r.id: r for r in read_manifest(rep.outputs["clean"])}
    assert recs["r1"].text == unicodedata.normalize("NFC", decomposed) != decomposed
    r4 = recs["r4"].text
    assert len(r4) <= 25 and unicodedata.is_normalized("NFC", r4) and recs["r4"].meta["text_chars"] == 60
    assert not unicodedata.combining(r4[0]) and r4.endswith("\u0300")  # no tone mark cut from its letter
    assert recs["r5"].text == "plain" and "25" in rep.examples["text_too_long"][0]["message"]


def test_over_long_text_by_tokenizer(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers

    tok = Tokenizer(models.WordLevel({"[UNK]": 0, "a": 1, "b": 2}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.save(str(tmp_path / "tokenizer.json"))
    bi.good_jpeg(tmp_path / "ok.jpg")
    lines = [row(1, "ok.jpg", text="a b a b a b"), row(2, "ok.jpg", text="a b a")]
    rep = check_manifest(write_lines(tmp_path / "m.jsonl", lines),
                         opts(tokenizer=str(tmp_path / "tokenizer.json"), max_tokens=4, max_chars=3))
    assert rep.counts == {"text_too_long": 1}  # max_chars is not used once a tokenizer is given
    assert [r.text for r in rep.records] == ["a b a b", "a b a"]


def test_duplicate_ids_and_split_leakage(tmp_path):
    bi.good_jpeg(tmp_path / "a.jpg", seed=1)
    bi.good_jpeg(tmp_path / "b.jpg", seed=2)
    (tmp_path / "copy").mkdir()
    (tmp_path / "copy" / "a_again.jpg").write_bytes((tmp_path / "a.jpg").read_bytes())
    lines = [row(1, "a.jpg", split="train"), row(2, "b.jpg", split="test"), row(1, "b.jpg", split="test"),
             row(3, "copy/a_again.jpg", split="test"), row(4, "a.jpg", lang="yo", split="train")]
    rep = check_manifest(write_lines(tmp_path / "m.jsonl", lines), opts())
    assert rep.counts == {"duplicate_id": 1, "split_leakage": 1}
    assert [r.id for r in rep.records] == ["r1", "r2", "r4"]  # same image, same split, other language: fine
    (dup,) = rep.examples["duplicate_id"]
    assert (dup["line"], dup["id"], dup["first_line"]) == (3, "r1", 1)
    (leak,) = rep.examples["split_leakage"]
    assert (leak["line"], leak["id"], leak["other_line"], leak["other_id"]) == (4, "r3", 1, "r1")
    assert "a.jpg" in leak["message"] and "'train'" in leak["message"]


def test_few_rows_per_language_and_split(tmp_path):
    lines = []
    for i in range(14):
        bi.good_jpeg(tmp_path / f"{i}.jpg", seed=i)
    for i, (lang, split) in enumerate([("sw", "train")] * 5 + [("sw", "val")] * 5 + [("yo", "train")] * 3
                                      + [("yo", "val")]):
        lines.append(row(i, f"{i}.jpg", lang=lang, split=split))
    rep = check_manifest(write_lines(tmp_path / "m.jsonl", lines), opts(min_per_split=3))
    assert rep.counts == {"few_rows": 1} and rep.kept == 14
    (w,) = rep.examples["few_rows"]
    assert (w["lang"], w["split"], w["rows"], w["line"]) == ("yo", "val", 1, None)
    assert rep.per_lang["yo"]["kept_val"] == 1 and rep.per_lang["sw"]["kept"] == 10


def test_out_elsewhere_keeps_paths_resolvable_and_clean_rerun_is_ok(tmp_path):
    (tmp_path / "imgs").mkdir()
    bi.good_jpeg(tmp_path / "imgs" / "a.jpg")
    bi.gray_png(tmp_path / "imgs" / "g.png")
    m = write_lines(tmp_path / "m.jsonl", [row(1, "imgs/a.jpg"), row(2, "imgs/g.png")])
    rep = check_manifest(m, opts(out=str(tmp_path / "elsewhere" / "clean.jsonl")))
    out = Path(rep.outputs["clean"])
    assert rep.outputs["skipped"] == str(tmp_path / "m.skipped.jsonl")
    assert Path(rep.outputs["fixed_dir"]).parent == out.parent
    for rec in read_manifest(out):
        assert rec.image_path(out.parent).is_file()
    # the copy's paths climb out of its folder ('../imgs/a.jpg'): reported unless the user allows it
    assert check_manifest(out, opts(write=False)).counts == {"image_outside_root": 1}
    again = check_manifest(out, opts(write=False, allow_outside=True))
    assert again.ok and again.kept == 2


def test_missing_manifest_is_a_data_error(tmp_path, capsys):
    with pytest.raises(DataError, match="nope.jsonl"):
        check_manifest(tmp_path / "nope.jsonl")
    assert main(["data", "check", str(tmp_path / "nope.jsonl")]) == 1
    assert "nope.jsonl: manifest not found" in capsys.readouterr().err


def build_mixed(tmp: Path) -> tuple[Path, list[str | None]]:
    """~26 good rows and one row of every kind; returns the manifest and each line's expected kind."""
    spec: list[tuple[str | None, object]] = []
    plan = [("sw", "train")] * 6 + [("sw", "val")] * 3 + [("sw", "test")] * 3 + [("ha", "train")] * 4 \
        + [("ha", "val")] * 2 + [("ha", "test")] * 2 + [("yo", "train")] * 3 + [("yo", "val")] + [("yo", "test")] * 2
    for i, (lang, split) in enumerate(plan):
        bi.good_jpeg(tmp / f"good{i}.jpg", 64 + i, 48, seed=100 + i)
        spec.append((None, row(i, f"good{i}.jpg", lang=lang, split=split)))
    n = 100
    for kind, build in {**IMAGE_SKIPS, **MODE_FIXES, "exif_orientation": bi.exif_rotated_jpeg}.items():
        build(tmp / f"{kind}.bin")
        spec.append((kind, row(n, f"{kind}.bin")))
        n += 1
    bi.svg_as_jpg(tmp / "svg.jpg")
    (tmp / "dir.jpg").mkdir()
    (tmp / "leak.jpg").write_bytes((tmp / "good0.jpg").read_bytes())
    spec += [("unsupported_format", row(n, "svg.jpg")), ("missing_file", row(n + 1, "gone.jpg")),
             ("unreadable_file", row(n + 2, "dir.jpg")), ("duplicate_id", row(3, "good1.jpg")),
             ("split_leakage", row(n + 3, "leak.jpg", split="test")), ("empty_text", row(n + 4, "good1.jpg", text=" ")),
             ("text_nfc", row(n + 5, "good1.jpg", text="Ile\u0301 o\u0323\u0300")),
             ("text_too_long", row(n + 6, "good2.jpg", text="maneno " * 30)),
             ("missing_field", {"id": f"r{n + 7}", "image": "good1.jpg", "lang": "sw"}),
             ("bad_field", row(n + 8, "good1.jpg", split="dev")),
             ("bad_json", b'{"id": "r999" "image": "good1.jpg"}'),
             ("invalid_utf8", b'{"id": "r998", "image": "good1.jpg", "text": "\xc3\x28", "lang": "sw"}'),
             ("invalid_unicode", b'{"id": "r997", "image": "good1.jpg", "text": "Maandishi \\ud800 mabovu", "lang": "sw"}'),
             ("malformed_json", b"[" * 100_000),
             ("line_too_long", b'{"id": "r996", "text": "' + b"a" * (1 << 20) + b'"}'),
             ("image_outside_root", row(n + 9, "../good1.jpg")),
             ("not_regular_file", row(n + 10, "zero.jpg"))]
    os.symlink("/dev/zero", tmp / "zero.jpg")  # inside the folder, so only the file type can refuse it
    return write_lines(tmp / "mixed.jsonl", [line for _, line in spec]), [k for k, _ in spec]


def test_mixed_manifest_every_kind_counted_no_row_lost(tmp_path, capsys):
    manifest, kinds = build_mixed(tmp_path)
    skips = {k for k in kinds if k and KINDS[k][0] == "skip"}
    rep = check_manifest(manifest, opts(min_per_split=2, max_chars=100))
    expected = Counter(k for k in kinds if k) + Counter(few_rows=1)  # yo has 1 row in val
    assert rep.counts == dict(expected)
    # the fixture really covers every kind (file_too_large: test_hostile_input, with a small --max-image-mb)
    assert set(rep.counts) == set(KINDS) - {"mode_other", "file_too_large"}
    kept_lines = {i + 1 for i, k in enumerate(kinds) if k not in skips}
    assert [int(r.id[1:]) for r in rep.records] == [int(json.loads(line)["id"][1:]) for i, line in
                                                    enumerate(manifest.read_bytes().splitlines()) if i + 1 in kept_lines]
    assert rep.kept == len(kept_lines) and rep.skipped == sum(k in skips for k in kinds) == len(skipped(rep))
    assert {e["line"]: e["kind"] for e in skipped(rep)} == {i + 1: k for i, k in enumerate(kinds) if k in skips}
    assert len(read_manifest(rep.outputs["clean"])) == rep.kept

    assert main(["data", "check", str(manifest), "--min-per-split", "2", "--max-chars", "100", "--workers", "1"]) == 0
    table = capsys.readouterr().out
    for kind in expected:
        assert f"| {kind} " in table
    assert f"kept {rep.kept} of {rep.rows} rows" in table
    assert main(["data", "check", str(manifest), "--strict", "--no-write", "--workers", "1"]) == 1
    capsys.readouterr()
    assert main(["data", "check", str(manifest), "--json", "--min-per-split", "2", "--max-chars", "100",
                 "--workers", "1"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["counts"] == dict(expected) and data["kept"] == rep.kept and data["skipped"] == rep.skipped
    assert data["severity"]["few_rows"] == "warn" and data["per_lang"]["yo"]["kept_val"] == 1
    assert data["outputs"]["clean"].endswith("mixed.clean.jsonl")


def test_result_is_the_same_for_any_worker_count(tmp_path, capfd):
    manifest, _ = build_mixed(tmp_path)
    one = check_manifest(manifest, opts(out=str(tmp_path / "w1.jsonl"), skipped=str(tmp_path / "s1.jsonl")))
    two = check_manifest(manifest, opts(out=str(tmp_path / "w2.jsonl"), skipped=str(tmp_path / "s2.jsonl"),
                                        workers=2))
    assert "(2 workers)" in capfd.readouterr().err  # the pool really ran
    strip = lambda d: {k: v for k, v in d.items() if k not in ("options", "outputs")}  # noqa: E731
    assert strip(one.to_dict()) == strip(two.to_dict())
    assert (tmp_path / "w1.jsonl").read_bytes() == (tmp_path / "w2.jsonl").read_bytes()
    assert (tmp_path / "s1.jsonl").read_bytes() == (tmp_path / "s2.jsonl").read_bytes()


def test_clean_demo_style_dataset_passes_strict(tmp_path, capsys):
    for i in range(6):
        bi.good_png(tmp_path / f"{i}.png", seed=i)
    lines = [row(i * 2 + j, f"{i}.png", lang=lang, split="train" if i < 3 else "test") for i in range(6)
             for j, lang in enumerate(("sw", "yo"))]
    m = write_lines(tmp_path / "m.jsonl", lines)
    assert main(["data", "check", str(m), "--strict", "--min-per-split", "3", "--workers", "1"]) == 0
    assert "no problems found" in capsys.readouterr().out
