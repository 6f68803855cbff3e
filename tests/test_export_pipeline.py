"""`lugha export` end to end on a tiny trained run: a bundle that verifies (hashes and signature), golden
samples that reproduce, label packs; and a failed gate that exits non-zero and leaves no bundle."""
from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from lugha.cli import main  # noqa: E402
from lugha.errors import ConfigError  # noqa: E402
from lugha.export.gates import accuracy_cells, blocking, summarize_failures  # noqa: E402
from lugha.manifest import load_bundle_manifest  # noqa: E402
from lugha.parity import assert_parity  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def _hits(n: int, lost: int = 0, gained: int = 0, hits: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(reference, candidate) per-item hits: ``hits`` shared hits, then ``lost`` and ``gained`` items."""
    hits = n // 3 if hits is None else hits
    ref = np.zeros(n, bool)
    ref[:hits + lost] = True
    got = ref.copy()
    got[hits:hits + lost] = False
    got[hits + lost:hits + lost + gained] = True
    return ref, got


def test_accuracy_cells_decide_each_language_and_the_pooled_items():
    ref, cand = {}, {"tflite/int8": {}}
    for lang, (lost, gained) in {"ha": (0, 0), "ta": (2, 0), "yo": (40, 0)}.items():
        for metric in ("i2t_r1", "t2i_r1"):
            r, g = _hits(300, lost, gained, hits=100)
            ref.setdefault(lang, {})[metric], cand["tflite/int8"].setdefault(lang, {})[metric] = r, g
    cells, pooled = accuracy_cells(ref, cand, max_drop=1.0)
    by = {(c.lang, c.metric): c for c in cells}
    assert by["yo", "i2t_r1"].decision == "fail" and by["yo", "i2t_r1"].lost == 40
    assert by["ha", "i2t_r1"].decision == "pass"  # 0 of 300 moved: the upper bound is 0.89 points
    assert by["ta", "t2i_r1"].decision == "undecided" and by["ta", "t2i_r1"].decide_n > 300
    assert [(c.lang, c.metric, c.n) for c in pooled] == [("all", "i2t_r1", 900), ("all", "t2i_r1", 900)]
    assert {c.decision for c in pooled} == {"fail"}
    default = blocking(cells, pooled, "default")
    assert {(c.lang, c.decision) for c in default} == {("all", "fail"), ("yo", "fail")}
    assert ("ta", "undecided") in {(c.lang, c.decision) for c in blocking(cells, pooled, "strict")}
    lines = summarize_failures([], default)
    assert any(line.startswith("accuracy tflite/int8 [yo] i2t_r1: drop +13.33 points") for line in lines)
    assert all("lost" in line and "of 300" in line or "of 900" in line for line in lines)
    with pytest.raises(ConfigError, match="--gate"):
        blocking(cells, pooled, "lenient")


def test_noise_of_a_few_items_passes_pooled_and_stays_undecided_per_language():
    langs = [f"l{i}" for i in range(8)]
    pairs = {lang: _hits(149, *{0: (1, 0), 1: (0, 1)}.get(i, (0, 0))) for i, lang in enumerate(langs)}
    ref = {lang: {"i2t_r1": r} for lang, (r, _) in pairs.items()}
    noisy = {lang: {"i2t_r1": g} for lang, (_, g) in pairs.items()}
    cells, pooled = accuracy_cells(ref, {"onnx/int8": noisy}, max_drop=1.0)
    assert {c.decision for c in cells} == {"undecided"}  # 149 items cannot show a drop below 1 point
    assert pooled[0].decision == "pass" and pooled[0].flips == 2 and not blocking(cells, pooled, "default")
    assert len(blocking(cells, pooled, "strict")) == len(langs)


def test_the_pooled_cell_counts_images_not_each_languages_copy_of_them():
    """8 languages caption the same 149 images: 2 images lost and 2 gained in every language. As 32
    independent flips of 1,192 items the pooled drop (0) would pass; as 4 flipped images of 149 it cannot."""
    images = [f"img{i}.png" for i in range(149)]
    ref, cand, where = {}, {"tflite/int8": {}}, {}
    for lang in (f"l{i}" for i in range(8)):
        r, g = _hits(149, lost=2, gained=2, hits=60)  # the same images move in every language
        ref[lang], cand["tflite/int8"][lang], where[lang] = {"i2t_r1": r}, {"i2t_r1": g}, {"i2t_r1": images}
    as_items = accuracy_cells(ref, cand, max_drop=1.0)[1][0]
    assert (as_items.n, as_items.flips, as_items.decision, as_items.clusters) == (1192, 32, "pass", None)
    cells, pooled = accuracy_cells(ref, cand, max_drop=1.0, images=where)
    cell = pooled[0]
    assert (cell.n, cell.flips, cell.clusters, cell.drop_points) == (1192, 32, 149, 0.0)
    assert cell.decision == "undecided" and cell.ci_high_points > 2.5 * as_items.ci_high_points  # ~sqrt(8)
    assert cell.detectable_points is None and cell.decide_n is None  # Tango's per-item sizes do not apply
    assert all(c.clusters is None for c in cells)  # within a language each image is one item
    assert blocking(cells, pooled, "default") == [cell] and "of 149 images" in cell.line()


@pytest.fixture(scope="module")
def tiny_run(demo_small, tmp_path_factory):
    from lugha.training.train_config import load_train_config
    from lugha.training.trainer import train

    root = tmp_path_factory.mktemp("exportrun")
    cfg = load_train_config(REPO / "configs" / "test-tiny.yaml", [
        f"data.manifest={demo_small}", f"data.cache_dir={root / 'cache'}", "data.languages=[en, sw, yo]",
        "data.batch_size=16", "loop.epochs=2", "model_overrides.adapter.kind=projection"])
    train(cfg, root / "run", show_progress=False, say=lambda m: None)
    return root / "run"


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    pytest.importorskip("cryptography")
    from lugha.export.signing import generate_keypair

    d = tmp_path_factory.mktemp("keys")
    generate_keypair(d / "key.pem", d / "pub.pem")
    return d / "key.pem", d / "pub.pem"


@pytest.mark.slow
def test_export_writes_a_bundle_that_verifies_and_reproduces(tiny_run, keys, tmp_path, capsys):
    out = tmp_path / "bundle"
    # --allow-drop: a tiny random model with ~10 held-out items a language; its pooled cells cannot pass
    # a 1-point margin at that n (no flips at all pass only from n = 268), so the gate reports and the
    # bundle records the override. The gate's own decisions are tested below on a run with hits to lose.
    rc = main(["export", str(tiny_run), "--out", str(out), "--precision", "fp32,fp16,int8", "--allow-drop",
               "--zip", "--sign", str(keys[0]), "--calib-samples", "16", "--json"])
    report = json.loads(capsys.readouterr().out)
    assert rc == 0 and report["ok"]
    assert report["gate"]["splits"] == ["val", "test"] and report["gate"]["policy"] == "default"
    m = load_bundle_manifest(out)  # every SHA-256 checked
    gate = m.accuracy_gate
    assert gate is not None and gate.overridden and gate.blocking and {c.lang for c in gate.pooled} == {"all"}
    assert len(gate.cells) == len(report["accuracy"]) and {c.candidate for c in gate.cells} == {
        "onnx/fp32", "onnx/fp16", "onnx/int8"}
    card = (out / "MODEL_CARD.md").read_text()
    assert card.splitlines()[2].startswith("> **Accuracy gate overridden (`--allow-drop`)**")
    assert "## Accuracy gate" in card and "| onnx/int8 | all | i2t_r1 |" in card
    keys_ = {g.key for g in m.graphs}
    assert keys_ == {f"{n}/onnx/{p}" for n in ("image_encoder", "text_encoder") for p in ("fp32", "fp16", "int8")}
    assert m.tokenizer is not None and (out / m.tokenizer.file).is_file()
    assert set(m.label_packs) == set(m.languages) == {"en", "sw", "yo"}
    with np.load(out / m.label_packs["sw"]) as pack:
        assert pack["embeds"].shape == (len(pack["labels"]), m.model.embed_dim)
        assert np.allclose(np.linalg.norm(pack["embeds"], axis=1), 1.0, atol=1e-5)
    assert {"torch/fp32", "onnx/fp32", "onnx/int8"} <= set(m.metrics)
    assert "## Metrics per language and precision" in card
    assert "Training images are emoji drawings" in card  # the demo's domain, from its records (data/image_domain.py)
    # golden samples reproduce with a fresh onnxruntime session, within each graph's own tolerance
    from lugha.export.bundle_writer import read_golden
    from lugha.export.graph_runners import onnx_runner

    for g in m.graphs:
        inputs, outputs = read_golden(out, g.golden)
        assert_parity(outputs, onnx_runner(out / g.file)(inputs), g.tolerance, g.key)
    assert main(["bundle", "verify", str(out), "--pubkey", str(keys[1])]) == 0
    with zipfile.ZipFile(tmp_path / "bundle.zip") as z:
        assert "manifest.json" in z.namelist() and "graphs/text_encoder.int8.onnx" in z.namelist()
    # a changed manifest no longer matches its signature
    data = json.loads((out / "manifest.json").read_text())
    data["languages"] = ["en"]
    (out / "manifest.json").write_text(json.dumps(data))
    assert main(["bundle", "verify", str(out), "--pubkey", str(keys[1])]) == 1


@pytest.mark.slow
def test_a_failed_gate_exits_nonzero_and_leaves_no_bundle(tiny_run, tmp_path, monkeypatch, capsys):
    from onnx import numpy_helper

    from lugha.export import text_int8

    real = text_int8.quantize_text_per_token  # the default text int8

    def corrupted(src, dst, *args, **kwargs):  # int8 text graph whose embedding rows have flipped signs
        report = real(src, dst, *args, **kwargs)
        m = onnx.load(str(dst))
        for t in m.graph.initializer:
            if t.name.endswith("_row_scale"):
                t.CopyFrom(numpy_helper.from_array(-numpy_helper.to_array(t), t.name))
        onnx.save(m, str(dst))
        return report

    monkeypatch.setattr(text_int8, "quantize_text_per_token", corrupted)
    out = tmp_path / "bundle"
    rc = main(["export", str(tiny_run), "--out", str(out), "--precision", "int8", "--allow-drop"])
    err = capsys.readouterr().err
    assert rc == 1
    assert "text_encoder/onnx/int8" in err and "FAILED" in err
    assert not out.exists() and not list(tmp_path.glob(".bundle.partial-*"))


def test_export_refuses_an_existing_bundle_folder(tiny_run, tmp_path):
    out = tmp_path / "bundle"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert main(["export", str(tiny_run), "--out", str(out)]) == 1
    assert (out / "keep.txt").read_text() == "mine"


MEMO_LANGS = ("en", "sw", "yo", "ha", "hi", "am")


@pytest.fixture(scope="module")
def memorized_run(tmp_path_factory):
    """A tiny run whose val and test rows repeat its training pairs. A tiny random model is at chance on
    unseen emoji, so PyTorch fp32 would have no hits for a graph to lose; here it has, and the gate judges
    the exported graph against its own model (what the gate is for), not the model's generalisation."""
    import dataclasses

    from lugha.data import demo
    from lugha.records import read_manifest, write_manifest
    from lugha.training.train_config import load_train_config
    from lugha.training.trainer import train

    root = tmp_path_factory.mktemp("memorized")
    demo.build_demo(root, limit=96, image_size=64, seed=0)
    rows = [r for r in read_manifest(root / "manifest.jsonl") if r.lang in MEMO_LANGS and r.split == "train"]
    held = [dataclasses.replace(r, id=f"{r.id}-{s}", split=s) for s in ("val", "test") for r in rows]
    write_manifest(root / "memo.jsonl", rows + held)
    cfg = load_train_config(REPO / "configs" / "test-tiny.yaml", [
        f"data.manifest={root / 'memo.jsonl'}", f"data.cache_dir={root / 'cache'}",
        f"data.languages=[{', '.join(MEMO_LANGS)}]", "data.batch_size=16", "loop.epochs=150", "optim.lr=5e-2",
        "model_overrides.adapter.kind=projection"])  # ~45 s: R@1 ~20 % of 70 on the repeated rows
    train(cfg, root / "run", show_progress=False, say=lambda m: None)
    return root / "run", root / "memo.jsonl"


def _token_ids(source, texts) -> set[int]:
    from lugha.export.source import token_encoder

    ids, mask = token_encoder(source.tokenizer)(list(texts))
    return {int(i) for i in ids[mask.astype(bool)]}


def _held_out_ids(manifest, run, lang: str, texts: list[str] | None = None) -> set[int]:
    """Token ids that ``texts`` (default: ``lang``'s held-out texts and label names) use and nothing else
    does: no other held-out text or label name, no golden row (the first test row of each language). Changing
    their embedding rows moves those texts alone and leaves parity intact."""
    from lugha.records import read_manifest
    from lugha.export.source import load_run_source
    from lugha.training.evaluate import load_label_names

    source = load_run_source(run)
    rows = [r for r in read_manifest(manifest) if r.split in ("val", "test")]
    names = load_label_names(manifest)[0]
    first = {}
    for r in rows:
        if r.split == "test":
            first.setdefault(r.lang, r.text)
    mine = texts if texts is not None else [r.text for r in rows if r.lang == lang] + list(names.get(lang, {}).values())
    others = ([r.text for r in rows if r.text not in mine] + list(first.values())
              + [n for other, m in names.items() if texts is not None or other != lang for n in m.values()])
    return _token_ids(source, mine) - _token_ids(source, others)


def _edit_table(path, edit) -> None:
    """Apply ``edit(table) -> table`` to the token embedding table (the largest initializer) of an fp32 ONNX file."""
    from onnx import numpy_helper

    m = onnx.load(str(path))
    table = max(m.graph.initializer, key=lambda t: int(np.prod(t.dims)))
    table.CopyFrom(numpy_helper.from_array(edit(numpy_helper.to_array(table).copy()), table.name))
    onnx.save(m, str(path))


def _negated(ids: set[int]):
    def edit(w: np.ndarray) -> np.ndarray:
        w[sorted(ids)] *= -1
        return w
    return edit


def _noised(ids: set[int]):
    def edit(w: np.ndarray) -> np.ndarray:
        rows = sorted(ids)
        w[rows] = np.random.default_rng(0).normal(0, 20 * w.std(), (len(rows), w.shape[1]))
        return w
    return edit


@pytest.mark.slow
def test_a_degraded_text_graph_is_blocked_and_the_report_names_the_language(memorized_run, tmp_path, monkeypatch,
                                                                          capsys):
    """The fp32 text graph with Yoruba's own token rows negated (what negated int8 row scales did): parity
    cannot see it, the accuracy gate blocks it and names Yoruba alone. fp32, not int8: on this tiny random-
    tower run int8 noise alone already costs other languages significant items (am, sw), which would make
    the language the report names depend on the quantizer rather than on the degradation."""
    from lugha.export import onnx_export

    run, manifest = memorized_run
    yoruba = _held_out_ids(manifest, run, "yo")
    real = onnx_export.export_onnx

    def degraded(spec, model, inputs, path, *args, **kwargs):
        done = real(spec, model, inputs, path, *args, **kwargs)
        if spec.name == "text_encoder":
            _edit_table(path, _negated(yoruba))
        return done

    monkeypatch.setattr(onnx_export, "export_onnx", degraded)
    out = tmp_path / "bundle"
    rc = main(["export", str(run), "--out", str(out), "--precision", "fp32", "--json"])
    report = json.loads(capsys.readouterr().out)
    assert rc == 1 and not report["ok"]
    assert all(r["ok"] for r in report["parity"])  # parity cannot see it: the accuracy gate blocks
    failed = {c["lang"] for c in report["accuracy"] if c["decision"] == "fail"}
    assert failed == {"yo"}, [c for c in report["accuracy"] if c["decision"] == "fail"]
    assert any(f.startswith("accuracy onnx/fp32 [yo]") and "FAIL" in f for f in report["failures"])
    assert not out.exists() and not list(tmp_path.glob(".bundle.partial-*"))


def _texts_the_noise_moves(run, manifest, lang: str) -> list[set[int]]:
    """Own token ids of each of ``lang``'s test texts that is a t2i hit of the gate's reference (PyTorch fp32
    through the gate's own evaluation) and that :func:`_noised` on those rows moves off its hit, most own
    tokens first. Chosen by what the gate would see, not by assuming any noise flips any hit."""
    import torch as th

    from lugha.export import gates
    from lugha.export.source import load_run_source, token_encoder
    from lugha.export.specs import reference_runner, specs_for
    from lugha.preprocess import preprocess_batch
    from lugha.training.data import PairSet

    source = load_run_source(run)
    model = source.model
    pairs = PairSet(source.manifest, "test", [lang])
    data = gates.EvalData(pairs, preprocess_batch(pairs.image_paths, source.preprocess), token_encoder(source.tokenizer))
    image = reference_runner(specs_for(model, ("image_encoder",))[0], model, source.layout)
    text = reference_runner(specs_for(model, ("text_encoder",))[0], model)
    pixels = image({"pixel_values": data.pixels})
    cached = lambda inputs: pixels  # noqa: E731 - the same images every time
    ref = gates.evaluate_candidate(data, cached, text)[1][lang]["t2i_r1"]
    table = max(model.parameters(), key=lambda p: p.numel())  # the token embedding table, as in the ONNX file
    keep = table.detach().clone()
    found = []
    for i in np.flatnonzero(ref):
        ids = _held_out_ids(manifest, run, lang, [pairs.texts[i]])
        if not ids:
            continue
        with th.no_grad():
            table.copy_(th.as_tensor(_noised(ids)(keep.numpy().copy())))
        moved = not gates.evaluate_candidate(data, cached, text)[1][lang]["t2i_r1"][i]
        with th.no_grad():
            table.copy_(keep)
        if moved:
            found.append(ids)
    return sorted(found, key=len, reverse=True)


@pytest.mark.slow
def test_a_candidate_off_by_a_few_items_passes_the_default_gate_undecided_per_language(memorized_run, tmp_path,
                                                                                     monkeypatch, capsys):
    from lugha.export import onnx_export

    run, manifest = memorized_run
    moved = _texts_the_noise_moves(run, manifest, "ha")
    assert moved, "no Hausa hit that noise on its own token rows moves: the run memorized too little"
    one_text = moved[0]
    real = onnx_export.export_onnx

    def noisy(spec, model, inputs, path, *args, **kwargs):  # fp32 text graph, one text's own token rows replaced
        done = real(spec, model, inputs, path, *args, **kwargs)
        if spec.name == "text_encoder":
            _edit_table(path, _noised(one_text))  # one Hausa text (a hit, in val and test) moves: a few items
        return done

    monkeypatch.setattr(onnx_export, "export_onnx", noisy)
    out = tmp_path / "bundle"
    rc = main(["export", str(run), "--out", str(out), "--precision", "fp32", "--json"])
    report = json.loads(capsys.readouterr().out)
    assert rc == 0 and report["ok"] and out.is_dir()
    cells = report["accuracy"]
    assert {c["decision"] for c in cells} == {"undecided"}  # ~150 items a language cannot prove < 1 point
    for c in cells:  # a language with several captions of an image: its t2i items cluster by image
        assert (c["decide_n"] and c["detectable_points"]) if c["clusters"] is None else c["clusters"] < c["n"]
    assert {c["decision"] for c in report["accuracy_pooled"]} == {"pass"}
    assert all(c["clusters"] < c["n"] for c in report["accuracy_pooled"])  # each image once a language
    pooled = {c["metric"]: c for c in report["accuracy_pooled"]}
    assert pooled["t2i_r1"]["lost"] >= 1 and all(c["flips"] <= 4 for c in pooled.values())
    gate = load_bundle_manifest(out).accuracy_gate
    assert not gate.overridden and not gate.blocking and gate.splits == ("val", "test")
