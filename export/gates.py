"""The two gates an export must pass before a bundle exists.

* Parity, per graph/format/precision: the exported graph on the golden inputs against PyTorch's outputs,
  through the ONE parity helper (:mod:`lugha.parity`): names, dtypes, shapes, then max abs and cosine
  against the graph's tolerance.
* Accuracy, per candidate (format/precision) x language x metric (R@1 image->text and text->image, label
  accuracy, a classify run's fusion-head accuracy): paired per-item outcomes against PyTorch fp32 on the
  same items (the evaluation splits the run did not train on, pooled), with the trainer's own metric
  functions (:func:`lugha.training.evaluate.evaluate_embeddings`). Each cell is decided with statistics
  (:mod:`lugha.training.paired_stats`): **fail** (the drop is significantly above the margin, Holm over all
  cells), **pass** (its upper confidence bound is below the margin) or **undecided**; each candidate also
  gets a pooled cell over all languages, where each image's items (one a language) are one cluster
  (:mod:`lugha.training.cluster_stats`), not 16 independent items. A bare threshold cannot work here: on
  149 items one item is 0.67 points, and a few items flip between near-tied neighbours at any precision
  (fp16 included).
  Policy (:func:`blocking`): ``default`` blocks on any fail and on a pooled cell that is not a pass;
  ``strict`` also on any undecided cell.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Callable

import numpy as np

from lugha.errors import ConfigError, LughaError
from lugha.gate_report import GateCell
from lugha.manifest import GraphSpec
from lugha.parity import ParityError, compare_outputs

from lugha.export.graph_runners import Runner, batched

GATED_METRICS = ("i2t_r1", "t2i_r1", "label_acc")
PAIRED_METRICS = GATED_METRICS + ("head_acc",)  # what the paired gate decides (head_acc: classify runs)
GATE_POLICIES = ("default", "strict")


class ExportGateError(LughaError):
    """A parity or accuracy gate failed; ``report`` holds every row so the CLI can show them all."""

    def __init__(self, message: str, report: dict | None = None):
        self.report = report or {}
        super().__init__(message)


@dataclass
class ParityRow:
    graph: str  # the GraphSpec key: name/format/precision
    output: str
    max_abs: float
    min_cosine: float
    allowed_max_abs: float
    required_cosine: float
    ok: bool
    error: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


def parity_gate(spec: GraphSpec, runner: Runner, inputs: dict[str, np.ndarray],
                reference: dict[str, np.ndarray]) -> list[ParityRow]:
    """One row per output; a name/shape/dtype mismatch is a failed row with the helper's message."""
    tol = spec.tolerance
    try:
        actual = runner(inputs)
        results = compare_outputs(reference, actual, tol, spec.key)
    except ParityError as e:
        return [ParityRow(spec.key, e.output, float("nan"), float("nan"), tol.max_abs, tol.min_cosine, False, str(e))]
    except Exception as e:  # noqa: BLE001 - a graph that does not even run fails its gate, it does not crash
        return [ParityRow(spec.key, "", float("nan"), float("nan"), tol.max_abs, tol.min_cosine, False,
                          f"{spec.key}: could not run: {type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}")]
    return [ParityRow(spec.key, r.output, r.max_abs, r.min_cosine, tol.max_abs, tol.min_cosine, r.ok)
            for r in results]


@dataclass
class EvalData:
    """The eval split, ready to feed graphs: distinct images preprocessed, texts and a tokenizer."""

    pairs: object  # lugha.training.data.PairSet
    pixels: np.ndarray  # [N_images, ...] in the bundle's layout, rows follow pairs.image_paths
    encode_tokens: Callable[[list[str]], tuple[np.ndarray, np.ndarray]]
    label_names: dict[str, dict[str, str]] = field(default_factory=dict)
    split: str = ""


def embed_eval(data: EvalData, image: Runner, text: Runner, batch_size: int = 32):
    """(image embeddings, text embeddings, label-prompt encoder) of one candidate."""
    img = batched(image, {"pixel_values": data.pixels}, batch_size)["image_embeds"]

    def encode(texts: list[str]) -> np.ndarray:
        parts = []
        for i in range(0, len(texts), batch_size):
            ids, mask = data.encode_tokens(texts[i:i + batch_size])
            parts.append(text({"input_ids": ids, "attention_mask": mask})["text_embeds"])
        return np.concatenate(parts)

    return img, encode(list(data.pairs.texts)), encode


Items = dict[str, dict[str, np.ndarray]]  # lang -> metric -> per-item hits (bool)
ItemImages = dict[str, dict[str, list[str]]]  # lang -> metric -> the image each item belongs to


def evaluate_candidate(data: EvalData, image: Runner, text: Runner) -> tuple[dict[str, dict[str, float]], Items,
                                                                             ItemImages]:
    """Per-language metrics (the trainer's evaluate_embeddings) of one image/text runner pair, the
    per-item hits they average, and the image of each item."""
    from lugha.training.evaluate import evaluate_embeddings

    img, txt, encode = embed_eval(data, image, text)
    report = evaluate_embeddings(data.pairs, img, txt, encode, data.label_names, items=True)
    metrics = {lang: {k: float(v) for k, v in m.items() if isinstance(v, (int, float))}
               for lang, m in report["languages"].items()}
    return metrics, report["items"], report["item_images"]


def over_splits(report_data: EvalData, gate_data: list[EvalData],
                evaluate: Callable[[EvalData], tuple[dict, Items, ItemImages]]) -> tuple[dict, Items, ItemImages]:
    """``evaluate`` on the report split (its metrics) and on each gate split (their items and the items'
    images, concatenated per language and metric); a split that is both is evaluated once."""
    done: dict[int, tuple[dict, Items, ItemImages]] = {}
    for d in [report_data, *gate_data]:
        if id(d) not in done:
            done[id(d)] = evaluate(d)
    merged: Items = {}
    images: ItemImages = {}
    for d in gate_data:
        _, items, item_images = done[id(d)]
        for lang, per in items.items():
            for metric, hits in per.items():
                have = merged.setdefault(lang, {}).get(metric)
                merged[lang][metric] = hits if have is None else np.concatenate([have, hits])
                images.setdefault(lang, {}).setdefault(metric, []).extend(item_images[lang][metric])
    return done[id(report_data)][0], merged, images


def paired_cell(name: str, lang: str, metric: str, ref, got, images: list[str] | None, max_drop: float) -> GateCell:
    """Tango's per-item cell, or, when items share images (a pooled cell: each image once per language),
    the cluster t cell with images as clusters (Tango's cell its floor): counting an image's 16 correlated
    items as 16 independent ones would make the interval several times too narrow
    (:mod:`lugha.training.cluster_stats`)."""
    from lugha.training import paired_stats as ps
    from lugha.training.cluster_stats import clustered_cell

    if images is not None and len(set(images)) < len(images):
        return clustered_cell(name, lang, metric, ref, got, images, max_drop)
    return ps.make_cell(name, lang, metric, ref, got, max_drop)


def accuracy_cells(reference: Items, candidates: dict[str, Items], max_drop: float,
                   metrics: tuple[str, ...] = PAIRED_METRICS,
                   images: ItemImages | None = None) -> tuple[list[GateCell], list[GateCell]]:
    """Every candidate's decided cells: (per language, pooled per candidate and metric), Holm over both.
    ``images``: the image of each reference item (:func:`over_splits`); without it every item counts as
    independent."""
    from lugha.gate_report import POOLED
    from lugha.training import paired_stats as ps

    cells, pooled = [], []
    for name, per_lang in candidates.items():
        for metric in metrics:
            parts, where = [], []
            for lang in sorted(reference):
                ref, got = reference[lang].get(metric), per_lang.get(lang, {}).get(metric)
                if ref is None or got is None:
                    continue
                if len(ref) != len(got):
                    raise ConfigError(f"{name}[{lang}].{metric}", f"{len(got)} items, the reference has {len(ref)}")
                imgs = (images or {}).get(lang, {}).get(metric)
                cells.append(paired_cell(name, lang, metric, ref, got, imgs, max_drop))
                parts.append((ref, got))
                where.append(imgs)
            if parts:
                ref, got = (np.concatenate([np.asarray(p[i], dtype=bool) for p in parts]) for i in (0, 1))
                imgs = None if any(w is None for w in where) else [x for w in where for x in w]
                pooled.append(paired_cell(name, POOLED, metric, ref, got, imgs, max_drop))
    decided = ps.decide(cells + pooled)
    return decided[:len(cells)], decided[len(cells):]


def blocking(cells: list[GateCell], pooled: list[GateCell], policy: str) -> list[GateCell]:
    """The cells that stop an export under ``policy``: any fail; a pooled cell that is not a pass
    (``default``); also any undecided cell (``strict``)."""
    if policy not in GATE_POLICIES:
        raise ConfigError("--gate", f"expected one of {list(GATE_POLICIES)}, got {policy!r}")
    out = [c for c in pooled if c.decision != "pass"] + [c for c in cells if c.decision == "fail"]
    if policy == "strict":
        out += [c for c in cells if c.decision == "undecided"]
    return out


def worst_cells(cells: list[GateCell]) -> dict[str, dict]:
    """Per candidate, its largest per-language drop (``items``: the n it is a fraction of)."""
    worst: dict[str, GateCell] = {}
    for c in cells:
        if c.candidate not in worst or c.drop_points > worst[c.candidate].drop_points:
            worst[c.candidate] = c
    return {k: {**c.to_dict(), "items": c.n} for k, c in worst.items()}


def summarize_failures(parity: list[ParityRow], blocked: list[GateCell]) -> list[str]:
    """One line per parity failure and per blocking accuracy cell (what moved, how sure, the decision)."""
    lines = [f"parity {r.error}" if r.error else f"parity {r.graph}:{r.output}: max abs {r.max_abs:.3g} (allowed "
             f"{r.allowed_max_abs:.3g}), cosine {r.min_cosine:.5f} (required {r.required_cosine})"
             for r in parity if not r.ok]
    return lines + [f"accuracy {c.line()}" for c in blocked]


__all__ = ["parity_gate", "accuracy_cells", "blocking", "worst_cells", "evaluate_candidate",
           "over_splits", "embed_eval", "summarize_failures", "EvalData", "ParityRow", "ExportGateError",
           "paired_cell", "GATED_METRICS", "PAIRED_METRICS", "GATE_POLICIES"]
