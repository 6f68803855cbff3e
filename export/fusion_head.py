"""What an export does for a ``task: classify`` run's fusion head, beside the two encoders.

* :func:`load_classify_source`: the run (frozen towers, LoRA merged, ``model.fusion_head``) as an
  :class:`~lugha.export.source.ExportSource`.
* :func:`head_golden`: the head's golden inputs, made from the encoders' PyTorch outputs on real eval
  rows plus one row with the image missing and one with the text missing (the all-zero convention of
  :mod:`lugha.training.fusion`), so parity also covers the missing-side path.
* :func:`head_accuracy`: the head's label accuracy per language through one candidate's three graphs
  (image encoder -> text encoder -> fusion head, exactly what a device chains), with per-item hits for
  the paired gate (:func:`lugha.export.gates.accuracy_cells`), which decides ``head_acc``; the image-only /
  text-only accuracies of heads that skip a missing side are reported beside it.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from lugha.export.gates import EvalData
from lugha.export.graph_runners import Runner, batched

MODES = (("head_acc", None), ("head_acc_image_only", "text"), ("head_acc_text_only", "image"))


def load_classify_source(run_dir: str | os.PathLike, checkpoint: str = "best"):
    """A classify run as an export source: its frozen model with the trained fusion head attached."""
    from lugha.training.adapters import merge_adapters
    from lugha.training.classify import load_classify_parts

    from lugha.export.source import ExportSource

    model, _, tok, cfg, folder, _ = load_classify_parts(run_dir, checkpoint)
    merge_adapters(model).eval()
    return ExportSource(model, tok, model.cfg, Path(cfg.data.manifest), tuple(cfg.data.languages),
                        f"run {folder} (classify: {cfg.classify.head} fusion head)", True)


def head_feeds(input_names, image: dict[str, np.ndarray], text: dict[str, np.ndarray],
               attention_mask: np.ndarray) -> dict[str, np.ndarray]:
    """The head's inputs from the encoders' outputs (rows aligned): embeddings, or for a cross-attention
    head the patches, the token states and ``text_mask`` = the attention mask cut to the token states."""
    if "image_patches" in input_names:
        tokens = text["text_tokens"]
        return {"image_patches": image["image_patches"], "text_tokens": tokens,
                "text_mask": np.ascontiguousarray(attention_mask[:, :tokens.shape[1]])}
    return {"image_embeds": image["image_embeds"], "text_embeds": text["text_embeds"]}


def without(feeds: dict[str, np.ndarray], side: str | None) -> dict[str, np.ndarray]:
    """``feeds`` with one side (``image`` / ``text``: every input named after it) all zeros: missing."""
    if side is None:
        return feeds
    return {k: np.zeros_like(v) if k.startswith(f"{side}_") else v for k, v in feeds.items()}


def head_golden(input_names, image: dict[str, np.ndarray], text: dict[str, np.ndarray],
                attention_mask: np.ndarray) -> dict[str, np.ndarray]:
    """Golden inputs: the real rows, then row 0 with the image missing and row 1 with the text missing."""
    feeds = head_feeds(input_names, image, text, attention_mask)
    first, second = ({k: v[i:i + 1] for k, v in feeds.items()} for i in (0, 1))
    parts = [feeds, without(first, "image"), without(second, "text")]
    return {k: np.concatenate([p[k] for p in parts]) for k in feeds}


def class_targets(data: EvalData, head) -> np.ndarray:
    """Per eval row: the head's class index of its label, -1 for a label the head lacks (counted wrong),
    -2 for an unlabelled row (left out)."""
    field = getattr(head, "label_field", "label")
    index = {c: i for i, c in enumerate(head.classes)}
    values = [getattr(r, field) for r in data.pairs.records]
    return np.array([-2 if not v else index.get(v, -1) for v in values], dtype=np.int64)


def head_accuracy(data: EvalData, head, image: Runner, text: Runner, fusion: Runner, input_names,
                  batch_size: int = 32, items: dict | None = None,
                  item_images: dict | None = None) -> dict[str, dict[str, float]]:
    """Per language: ``head_acc`` (both sides), ``head_n``, and for a head that skips a missing side
    ``head_acc_image_only`` (text missing) / ``head_acc_text_only`` (image missing). ``items``, when
    given, receives ``{lang: {"head_acc": per-row hits}}`` for the paired gate; ``item_images`` each row's
    image (the gate's clusters)."""
    targets = class_targets(data, head)
    rows = np.flatnonzero(targets > -2)
    if not len(rows):
        return {}
    img = batched(image, {"pixel_values": data.pixels}, batch_size)
    modes = MODES if getattr(head, "skips_missing", False) else MODES[:1]
    preds = {name: [] for name, _ in modes}
    texts = [data.pairs.texts[i] for i in rows]
    for i in range(0, len(rows), batch_size):
        part = rows[i:i + batch_size]
        ids, mask = data.encode_tokens(texts[i:i + batch_size])
        txt = text({"input_ids": ids, "attention_mask": mask})
        feeds = head_feeds(input_names, {k: v[data.pairs.image_index[part]] for k, v in img.items()}, txt, mask)
        for name, side in modes:
            preds[name].append(fusion(without(feeds, side))["logits"].argmax(axis=1))
    preds = {k: np.concatenate(v) for k, v in preds.items()}
    out = {}
    langs = data.pairs.langs[rows]
    for lang in sorted(set(langs.tolist())):
        sel = langs == lang
        m = {name: float((p[sel] == targets[rows][sel]).mean()) for name, p in preds.items()}
        out[lang] = {**m, "head_n": int(sel.sum())}
        if items is not None:
            items.setdefault(lang, {})["head_acc"] = preds["head_acc"][sel] == targets[rows][sel]
        if item_images is not None:
            paths = data.pairs.image_paths
            item_images.setdefault(lang, {})["head_acc"] = [paths[int(i)] for i in data.pairs.image_index[rows[sel]]]
    return out


__all__ = ["load_classify_source", "head_feeds", "head_golden", "without", "class_targets", "head_accuracy"]
