"""Each import format, on small files written here in that format's exact shape, with real images."""
from __future__ import annotations

import gzip
import json
import unicodedata
from pathlib import Path

import pytest
from PIL import Image

from lugha.cli import main
from lugha.data.importers import ImportOptions, get_importer
from lugha.langcodes import UnknownLanguageError
from lugha.records import read_manifest
from lugha.data.split import assign_splits
from lugha.errors import DataError

CAFE_NFD = "Cafe\u0301 ya  kahawa\n"  # decomposed é and messy whitespace: must come out NFC, one space


def write_images(folder: Path, names: list[str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(names):
        img = Image.new("RGB", (24, 16), (40 * i % 256, 90, 200))
        img.save(folder / name, "PNG" if name.endswith(".png") else "JPEG")


def run_cli(args: list[str], capsys) -> tuple[list, dict]:
    """Run `lugha data import ... --json`, return (manifest records, report)."""
    assert main(["data", "import", *args, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    return read_manifest(report["out"]), report


def assert_images_resolve(records, manifest: Path) -> None:
    for r in records:
        assert not Path(r.image).is_absolute()
        assert r.image_path(manifest.parent).is_file(), r.image


def test_coco(tmp_path, capsys):
    write_images(tmp_path / "val2017", ["000001.jpg", "000002.png"])
    data = {
        "info": {}, "licenses": [],
        "images": [{"id": 1, "file_name": "000001.jpg", "width": 24, "height": 16},
                   {"id": 2, "file_name": "000002.png", "width": 24, "height": 16},
                   {"id": 3, "file_name": "000003.jpg", "width": 24, "height": 16}],  # not on disk
        "annotations": [{"image_id": 1, "id": 11, "caption": "A red bus. "},
                        {"image_id": 1, "id": 12, "caption": CAFE_NFD},
                        {"image_id": 2, "id": 13, "caption": "Two dogs"},
                        {"image_id": 3, "id": 14, "caption": "lost image"},
                        {"image_id": 2, "id": 15, "caption": "   "}],
    }
    (tmp_path / "ann").mkdir()
    (tmp_path / "ann" / "captions_val2017.json").write_text(json.dumps(data))
    out = tmp_path / "out" / "coco.jsonl"
    recs, report = run_cli(["coco", str(tmp_path / "ann" / "captions_val2017.json"), "--images",
                            str(tmp_path / "val2017"), "--lang", "eng", "--out", str(out)], capsys)
    assert [r.id for r in recs] == ["coco-11", "coco-12", "coco-13"]
    assert recs[0].text == "A red bus." and recs[1].text == unicodedata.normalize("NFC", "Café ya kahawa")
    assert {r.lang for r in recs} == {"en"}
    assert recs[0].image == "../val2017/000001.jpg" and recs[0].group == recs[1].group == "000001.jpg"
    assert_images_resolve(recs, out)
    assert report["skipped"] == 2 and report["languages"] == [
        {"lang": "en", "language": "English", "captions": 3, "images": 2}]


def test_coco_rejects_the_wrong_coco_file(tmp_path):
    write_images(tmp_path / "img", ["a.jpg"])
    inst = tmp_path / "instances.json"
    inst.write_text(json.dumps({"images": [{"id": 1, "file_name": "a.jpg"}],
                                "annotations": [{"id": 1, "image_id": 1, "bbox": [0, 0, 1, 1]}]}))
    with pytest.raises(DataError, match="instances"):
        get_importer("coco")(inst, tmp_path / "img")
    kar = tmp_path / "dataset_coco.json"
    kar.write_text(json.dumps({"images": [{"filename": "a.jpg", "sentences": []}]}))
    with pytest.raises(DataError, match="karpathy"):
        get_importer("coco")(kar, tmp_path / "img")


def test_karpathy_keeps_official_splits(tmp_path):
    write_images(tmp_path / "imgs" / "val2014", ["a.jpg", "b.jpg", "c.jpg"])
    imgs = [{"filepath": "val2014", "filename": n, "split": s, "imgid": i,
             "sentences": [{"raw": f"{n} caption {k}", "sentid": 10 * i + k} for k in range(2)]}
            for i, (n, s) in enumerate([("a.jpg", "restval"), ("b.jpg", "val"), ("c.jpg", "test")])]
    f = tmp_path / "dataset_coco.json"
    f.write_text(json.dumps({"images": imgs, "dataset": "coco"}))
    res = get_importer("karpathy")(f, tmp_path / "imgs", options=ImportOptions(manifest_dir=tmp_path))
    assert [(r.id, r.split) for r in res.records] == [
        ("karpathy-0", "train"), ("karpathy-1", "train"), ("karpathy-10", "val"), ("karpathy-11", "val"),
        ("karpathy-20", "test"), ("karpathy-21", "test")]
    assert res.records[0].image == "imgs/val2014/a.jpg" and res.records[0].group == "a.jpg"


FLICKR_IMAGES = ["1000268201_693b08cb0e.jpg", "1001773457_577c3a7d70.jpg"]
FLICKR_FILES = {
    "Flickr8k.token.txt": "1000268201_693b08cb0e.jpg#0\tA child in a pink dress .\n"
                          "1000268201_693b08cb0e.jpg#1\tA girl going into a wooden building .\n"
                          "1001773457_577c3a7d70.jpg#0\tA black dog and a spotted dog .\n",
    "results_20130124.token": "1000268201_693b08cb0e.jpg#0\tA child in a pink dress .\n"
                              "1000268201_693b08cb0e.jpg#1\tA girl going into a wooden building .\n"
                              "1001773457_577c3a7d70.jpg#0\tA black dog and a spotted dog .\n",
    "results.csv": "image_name| comment_number| comment\n"
                   "1000268201_693b08cb0e.jpg| 0| A child in a pink dress .\n"
                   "1000268201_693b08cb0e.jpg| 1 A girl going into a wooden building .\n"  # Flickr30k's broken row
                   "1001773457_577c3a7d70.jpg| 0| A black dog and a spotted dog .\n",
    "captions.txt": "image,caption\n"
                    "1000268201_693b08cb0e.jpg,A child in a pink dress .\n"
                    "1000268201_693b08cb0e.jpg,\"A girl going into a wooden building .\"\n"
                    "1001773457_577c3a7d70.jpg,A black dog and a spotted dog .\n",
}


@pytest.mark.parametrize("name", list(FLICKR_FILES))
def test_flickr_variants_detected(tmp_path, capsys, name):
    write_images(tmp_path / "Flicker8k_Dataset", FLICKR_IMAGES)
    (tmp_path / name).write_text(FLICKR_FILES[name])
    out = tmp_path / "f.jsonl"
    recs, report = run_cli(["flickr", str(tmp_path / name), "--images", str(tmp_path / "Flicker8k_Dataset"),
                            "--out", str(out)], capsys)
    assert [r.id for r in recs] == ["flickr-1000268201_693b08cb0e-0", "flickr-1000268201_693b08cb0e-1",
                                    "flickr-1001773457_577c3a7d70-0"]
    assert [r.text for r in recs] == ["A child in a pink dress .", "A girl going into a wooden building .",
                                      "A black dog and a spotted dog ."]
    assert recs[0].group == recs[1].group == FLICKR_IMAGES[0] and recs[0].lang == "en"
    assert_images_resolve(recs, out)
    assert report["skipped"] == 0


def test_flickr_unknown_shape_is_named(tmp_path):
    write_images(tmp_path / "i", ["a.jpg"])
    (tmp_path / "x.txt").write_text("just some text\n")
    with pytest.raises(DataError, match="not a Flickr caption file"):
        get_importer("flickr")(tmp_path / "x.txt", tmp_path / "i")


def write_multi30k(tmp_path: Path, de_lines: int = 3) -> Path:
    d = tmp_path / "m30k"
    d.mkdir()
    (d / "train_images.txt").write_text("1000092795.jpg\n10002456.jpg\n1000268201.jpg\n")
    (d / "train.en").write_text("Two young guys outside.\nSeveral men in hard hats.\nA child climbs stairs.\n")
    de = ["Zwei junge Männer im Freien.", "Mehrere Männer mit Schutzhelmen.", "Ein Kind klettert."][:de_lines]
    with gzip.open(d / "train.de.gz", "wt", encoding="utf-8") as f:
        f.write("\n".join(de) + "\n")
    write_images(tmp_path / "flickr30k-images", ["1000092795.jpg", "10002456.jpg", "1000268201.jpg"])
    return d


def test_multi30k(tmp_path, capsys):
    d = write_multi30k(tmp_path)
    out = tmp_path / "m.jsonl"
    recs, report = run_cli(["multi30k", str(d / "train.en"), str(d / "train.de.gz"), "--image-list",
                            str(d / "train_images.txt"), "--images", str(tmp_path / "flickr30k-images"),
                            "--out", str(out)], capsys)
    assert len(recs) == 6 and {r.split for r in recs} == {"train"}
    by_id = {r.id: r for r in recs}
    assert by_id["multi30k-train-2-de"].text == "Mehrere Männer mit Schutzhelmen."
    assert by_id["multi30k-train-2-en"].group == by_id["multi30k-train-2-de"].group == "10002456.jpg"
    assert [row["lang"] for row in report["languages"]] == ["de", "en"]
    assert_images_resolve(recs, out)


def test_multi30k_length_mismatch_names_files_and_counts(tmp_path):
    d = write_multi30k(tmp_path, de_lines=2)
    with pytest.raises(DataError) as e:
        get_importer("multi30k")([d / "train.en", d / "train.de.gz"], d / "train_images.txt",
                                 tmp_path / "flickr30k-images")
    msg = str(e.value)
    assert "train_images.txt has 3" in msg and "train.de.gz has 2" in msg and "train.en" not in msg
    (d / "train.txt").write_text("a\nb\nc\n")
    with pytest.raises(DataError, match=r"train.txt: cannot tell its language.*STEM.LANG"):
        get_importer("multi30k")([d / "train.txt"], d / "train_images.txt", tmp_path / "flickr30k-images")


def write_xm3600(tmp_path: Path, extra_lang: str | None = None) -> Path:
    keys = ["000411001ff7dd4f", "0004a1d6a3ec5a2a"]
    write_images(tmp_path / "images", [f"{k}.jpg" for k in keys])
    lines = []
    for k in keys:
        obj = {"image/key": k}
        for lang, words in (("en", ["a dog", "a brown dog"]), ("sw", ["mbwa"]), ("he", ["כלב"])):
            obj[lang] = {"caption": [f"{w} {k[:4]}" for w in words], "caption/tokenized": words,
                         "caption/tokenized/lowercase": words}
        if extra_lang:
            obj[extra_lang] = {"caption": ["?"]}
        lines.append(json.dumps(obj, ensure_ascii=False))
    (tmp_path / "captions.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return tmp_path / "captions.jsonl"


def test_xm3600_with_langs_filter(tmp_path, capsys):
    cap = write_xm3600(tmp_path)
    out = tmp_path / "xm.jsonl"
    recs, report = run_cli(["xm3600", str(cap), "--images", str(tmp_path / "images"), "--langs", "eng,swh",
                            "--out", str(out)], capsys)
    assert [r.id for r in recs] == ["xm3600-000411001ff7dd4f-en-0", "xm3600-000411001ff7dd4f-en-1",
                                    "xm3600-000411001ff7dd4f-sw-0", "xm3600-0004a1d6a3ec5a2a-en-0",
                                    "xm3600-0004a1d6a3ec5a2a-en-1", "xm3600-0004a1d6a3ec5a2a-sw-0"]
    assert recs[2].text == "mbwa 0004" and recs[2].group == "000411001ff7dd4f"
    assert {row["lang"]: row["captions"] for row in report["languages"]} == {"en": 4, "sw": 2}
    assert_images_resolve(recs, out)
    everything = get_importer("xm3600")(cap, tmp_path / "images")
    assert {r.lang for r in everything.records} == {"en", "sw", "he"}
    # all captions of an image, in every language, end up in one split
    for key in ("000411001ff7dd4f", "0004a1d6a3ec5a2a"):
        assert len({r.split for r in assign_splits(everything.records, seed=4) if r.group == key}) == 1


def test_xm3600_unknown_language_lists_rows(tmp_path):
    cap = write_xm3600(tmp_path, extra_lang="xq")
    with pytest.raises(UnknownLanguageError) as e:
        get_importer("xm3600")(cap, tmp_path / "images")
    assert [code for _, code in e.value.rows] == ["xq", "xq"]
    assert "captions.jsonl:1" in str(e.value) and "captions.jsonl:2" in str(e.value)


def test_folder_sidecars(tmp_path, capsys):
    root = tmp_path / "photos"
    write_images(root, ["x.jpg", "y.png", "z.jpg"])
    write_images(root / "market", ["m.jpg"])
    (root / "x.txt").write_text("Mtoto anacheza\n\nMtoto\n")  # plain .txt: in --lang
    (root / "y.sw.txt").write_text("Mbwa\n")
    (root / "y.yor.txt").write_text("Ajá\n")
    (root / "market" / "m.hau.txt").write_text("Kasuwa\n")  # z.jpg has no captions
    out = tmp_path / "photos.jsonl"
    recs, report = run_cli(["folder", str(root), "--lang", "swa", "--label-from-folder", "--out", str(out)], capsys)
    assert sorted((r.id, r.lang, r.text) for r in recs) == [
        ("folder-market/m-ha-0", "ha", "Kasuwa"), ("folder-x-sw-0", "sw", "Mtoto anacheza"),
        ("folder-x-sw-1", "sw", "Mtoto"), ("folder-y-sw-0", "sw", "Mbwa"), ("folder-y-yo-0", "yo", "Ajá")]
    assert {r.id: r.label for r in recs}["folder-market/m-ha-0"] == "market"
    assert report["skipped"] == 1 and "z.jpg" in report["skipped_examples"][0]["where"]
    assert_images_resolve(recs, out)


def test_folder_plain_txt_needs_a_language(tmp_path):
    write_images(tmp_path, ["x.jpg"])
    (tmp_path / "x.txt").write_text("caption\n")
    with pytest.raises(DataError, match="--lang"):
        get_importer("folder")(tmp_path)


def test_csv_tsv_columns(tmp_path, capsys):
    write_images(tmp_path / "pics", ["a.jpg", "b.png"])
    tsv = tmp_path / "field.tsv"
    tsv.write_text("key\tphoto\tmaelezo\tlugha\tkundi\tsehemu\n"
                   "k1\tpics/a.jpg\tSoko la samaki\tswh\tmarket\ttrain\n"
                   "k2\tpics/a.jpg\tKasuwar kifi\thau\tmarket\tvalid\n"
                   "k3\tpics/b.png\tA fish market\t\tmarket\t\n", encoding="utf-8")
    out = tmp_path / "field.jsonl"
    recs, report = run_cli(["csv", str(tsv), "--image-col", "photo", "--text-col", "maelezo", "--lang-col", "lugha",
                            "--lang", "en", "--id-col", "key", "--label-col", "kundi", "--split-col", "sehemu",
                            "--out", str(out)], capsys)
    assert [(r.id, r.lang, r.split, r.label) for r in recs] == [
        ("k1", "sw", "train", "market"), ("k2", "ha", "val", "market"), ("k3", "en", "", "market")]
    assert recs[0].group == recs[1].group == "pics/a.jpg"
    assert_images_resolve(recs, out)


def test_csv_errors_name_rows_and_columns(tmp_path):
    write_images(tmp_path, ["a.jpg"])
    csv_path = tmp_path / "t.csv"
    csv_path.write_text("image,text,lang\na.jpg,one,ha\na.jpg,two,Hausa\na.jpg,three,xx\n")
    with pytest.raises(UnknownLanguageError) as e:
        get_importer("csv")(csv_path, lang_col="lang")
    assert e.value.rows == [("t.csv:3", "Hausa"), ("t.csv:4", "xx")]
    with pytest.raises(DataError, match=r"--text-col 'caption'.*\['image', 'text', 'lang'\]"):
        get_importer("csv")(csv_path, text_col="caption", lang="en")
    dup = tmp_path / "d.csv"
    dup.write_text("id;image;text\n1;a.jpg;one\n1;a.jpg;two\n")
    with pytest.raises(DataError, match=r"duplicate.*'1' at d.csv:2 and d.csv:3"):
        get_importer("csv")(dup, id_col="id", lang="en", delimiter=";")


def test_missing_images(tmp_path):
    (tmp_path / "imgs").mkdir()
    csv_path = tmp_path / "t.csv"
    csv_path.write_text("image,text\nnope.jpg,one\n")
    with pytest.raises(DataError, match="none of the 1 image"):
        get_importer("csv")(csv_path, tmp_path / "imgs", lang="en")
    kept = get_importer("csv")(csv_path, tmp_path / "imgs", lang="en",
                               options=ImportOptions(manifest_dir=tmp_path, check_images=False))
    assert [r.image for r in kept.records] == ["imgs/nope.jpg"]


def test_ids_are_stable_across_runs_and_prefix_is_configurable(tmp_path):
    cap = write_xm3600(tmp_path)
    a = get_importer("xm3600")(cap, tmp_path / "images")
    b = get_importer("xm3600")(cap, tmp_path / "images", options=ImportOptions(id_prefix="xm"))
    assert len({r.id for r in a.records}) == len(a.records)
    assert [r.id for r in b.records] == [r.id.replace("xm3600-", "xm-", 1) for r in a.records]
    assert all(Path(r.image).is_absolute() for r in a.records)  # no manifest folder: absolute paths


def test_cli_table_output_and_errors(tmp_path, capsys):
    cap = write_xm3600(tmp_path)
    out = tmp_path / "xm.jsonl"
    assert main(["data", "import", "xm3600", str(cap), "--images", str(tmp_path / "images"), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "| lang" in text and "Swahili" in text and "Hebrew" in text and "| all " in text
    assert main(["data", "import", "xm3600", str(cap), "--images", str(tmp_path / "images"), "--langs", "xx",
                 "--out", str(out)]) == 1
    assert "unknown language code" in capsys.readouterr().err
