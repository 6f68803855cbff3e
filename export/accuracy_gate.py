"""The export's accuracy gate, run end to end: which items, which candidates, what the bundle records.

* :func:`gate_data`: the evaluation splits the run did not train on (``--gate-splits``, default val and
  test), pooled: more items per language is the only way a per-language gate can decide anything.
* :func:`evaluate_all`: PyTorch fp32 and every exported candidate (format/precision) on those items,
  encoders and (for a classify run) the fusion head through the candidate's own graphs; the report split's
  metrics for the manifest, the gate splits' per-item hits for the gate.
* :func:`gate_record`: the :class:`~lugha.gate_report.AccuracyGate` the manifest and model card carry.
"""
from __future__ import annotations

from typing import Callable

from lugha.errors import ConfigError, DataError
from lugha.gate_report import AccuracyGate, GateCell
from lugha.preprocess import preprocess_batch

from lugha.export import fusion_head as fh
from lugha.export import gates
from lugha.export.source import limit_pairs, token_encoder
from lugha.export.specs import reference_runner
from lugha.vocabulary import REFERENCE_METRIC, metric_key

METHOD = ("paired per-item outcomes vs PyTorch fp32; fail: one-sided exact binomial test on the discordant "
          "items (margin 0) or Tango's score test (margin > 0), Holm over all cells; pass: Tango's one-sided 95 % "
          "upper bound below the margin; interval: Tango's score interval, two-sided 90 %; pooled cells (each "
          "image's items in every language): the same questions with images as clusters (cluster t: ratio "
          "estimate, cluster-robust standard error, t with K - 1 df; Tango's per-item interval and p its floor)")


def gate_data(source, opts, data: gates.EvalData, split: str, say: Callable[[str], None]) -> list[gates.EvalData]:
    """EvalData per gate split (the report split's own when it is one of them); a split the manifest
    lacks is skipped with a note, and with none left the gate falls back to the report split."""
    from lugha.training.data import PairSet

    trained_on = getattr(source, "train_split", "train")
    if trained_on in opts.gate_splits:
        raise ConfigError("--gate-splits", f"{trained_on!r} is the split the run trained on; gate on held-out "
                                           f"splits (default val,test)")
    out, missing = [], []
    for name in opts.gate_splits:
        if name == split:
            out.append(data)
            continue
        try:
            pairs = limit_pairs(PairSet(source.manifest, name, source.languages), opts.eval_limit)
        except DataError:
            missing.append(name)
            continue
        out.append(gates.EvalData(pairs, preprocess_batch(pairs.image_paths, source.preprocess),
                                  token_encoder(source.tokenizer), data.label_names, name))
    if missing:
        say(f"accuracy gate: no {'/'.join(missing)} rows in {source.manifest}; gating on "
            f"{'+'.join(d.split for d in out) or split}")
    return out or [data]


def evaluate_all(source, data: gates.EvalData, gate_sets: list[gates.EvalData], specs, runners: dict, opts):
    """(metrics per candidate, items per candidate, the items' images) with ``torch/fp32`` first: metrics of
    ``data``'s split, items pooled over ``gate_sets`` (the same items, so the same images, for every
    candidate)."""
    model, layout = source.model, source.layout
    by_name = {s.name: s for s in specs}
    torch_graphs = {n: reference_runner(s, model, layout) for n, s in by_name.items()}
    graphs_of = {REFERENCE_METRIC: torch_graphs}
    for fmt in opts.formats:
        for precision in opts.precisions:
            name = metric_key(fmt, precision)
            graphs_of[name] = {g: runners[f"{g}/{name}"] for g in by_name}
    head = getattr(model, "fusion_head", None)
    gated_head = "fusion_head" in by_name and getattr(head, "classes", None)  # a classify run: its labels too
    metrics, items, images = {}, {}, {}
    for name, g in graphs_of.items():
        metrics[name], items[name], images = gates.over_splits(
            data, gate_sets, lambda d, g=g: gates.evaluate_candidate(d, g["image_encoder"], g["text_encoder"]))
        if gated_head:
            inputs = by_name["fusion_head"].input_names()
            m, it, im = gates.over_splits(data, gate_sets, lambda d, g=g: _head(d, head, g, inputs))
            for target, extra in ((metrics[name], m), (items[name], it), (images, im)):
                for lang, vals in extra.items():
                    target.setdefault(lang, {}).update(vals)
    return metrics, items, images


def _head(d: gates.EvalData, head, graphs: dict, input_names) -> tuple[dict, dict, dict]:
    items: dict = {}
    images: dict = {}
    m = fh.head_accuracy(d, head, graphs["image_encoder"], graphs["text_encoder"], graphs["fusion_head"],
                         input_names, items=items, item_images=images)
    return m, items, images


def gate_record(opts, splits: list[str], cells: list[GateCell], pooled: list[GateCell],
                blocked: list[GateCell]) -> AccuracyGate:
    from lugha.training.paired_stats import ALPHA

    return AccuracyGate(policy=opts.gate, alpha=ALPHA, max_drop_points=float(opts.max_drop), splits=tuple(splits),
                        method=METHOD, cells=tuple(cells), pooled=tuple(pooled),
                        overridden=bool(blocked) and opts.allow_drop, blocking=tuple(c.line() for c in blocked))


def summary(record: AccuracyGate) -> dict:
    """The report's ``gate`` entry: policy, counts, each pooled cell's decision, what blocks."""
    return {"policy": record.policy, "alpha": record.alpha, "max_drop_points": record.max_drop_points,
            "splits": list(record.splits), "method": record.method, "counts": record.counts(),
            "pooled": {f"{c.candidate} {c.metric}": c.decision for c in record.pooled},
            "overridden": record.overridden, "blocking": list(record.blocking)}


__all__ = ["gate_data", "evaluate_all", "gate_record", "summary", "METHOD"]
