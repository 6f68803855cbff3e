"""``--trim-vocab``: keep only the token ids the target languages use; rebuild the table and tokenizer.json.

multilingual-e5-small spends 96 M of its 117 M parameters on a 250 k-row embedding table, most of whose
rows no sentence in Yoruba, Hausa or Swahili ever reads. The ids the dataset's text (with the model's
prefix and special tokens) produces come from :func:`lugha.data.coverage.coverage_report`; every other
row goes, and the tokenizer's ids are renumbered to match.

Why tokenization of covered text cannot change: Unigram picks the best-scoring segmentation; the original
best one uses only kept pieces, and removing pieces only removes alternatives (the lowest-scoring piece is
kept too, so the unknown-token penalty, derived from the minimum score, is unchanged). WordPiece's longest
match at each position is likewise still there. Both are checked anyway: every text must encode to the
remapped ids and give the same embedding (max abs diff <= 1e-6), or the trim is refused.
"""
from __future__ import annotations

import json

import numpy as np

from lugha.errors import ConfigError, LughaError

MAX_ABS_DIFF = 1e-6


class VocabTrimError(LughaError):
    """Trimming would change what the model sees (a tokenizer type it cannot trim, or a changed encoding)."""


def _remap_post_processor(pp: dict | None, new: dict[int, int]) -> None:
    if not pp:
        return
    if pp.get("type") == "Sequence":
        for p in pp.get("processors", []):
            _remap_post_processor(p, new)
    for tok in pp.get("special_tokens", {}).values():  # TemplateProcessing
        tok["ids"] = [new[i] for i in tok["ids"]]
    for key in ("sep", "cls"):  # RobertaProcessing / BertProcessing: [token, id]
        if isinstance(pp.get(key), list) and len(pp[key]) == 2:
            pp[key][1] = new[pp[key][1]]


def trim_tokenizer_json(data: dict, keep: list[int]) -> dict:
    """tokenizer.json (as a dict) with only ``keep`` ids, renumbered 0..len(keep)-1 in their old order."""
    data = json.loads(json.dumps(data))  # deep copy
    new = {old: i for i, old in enumerate(keep)}
    model = data["model"]
    kind = model.get("type")
    if kind == "Unigram":
        model["vocab"] = [model["vocab"][i] for i in keep]
        if model.get("unk_id") is not None:
            model["unk_id"] = new[model["unk_id"]]
    elif kind in ("WordPiece", "WordLevel"):
        model["vocab"] = {tok: new[i] for tok, i in model["vocab"].items() if i in new}
    else:
        raise VocabTrimError(f"tokenizer model {kind!r}: trimming supports Unigram, WordPiece and WordLevel "
                             "(BPE merges would need rebuilding)")
    data["added_tokens"] = [dict(t, id=new[t["id"]]) for t in data.get("added_tokens", []) if t["id"] in new]
    _remap_post_processor(data.get("post_processor"), new)
    if data.get("padding") and data["padding"].get("pad_id") is not None:
        data["padding"]["pad_id"] = new[data["padding"]["pad_id"]]
    return data


def ids_to_keep(tokenizer_data: dict, used: set[int]) -> list[int]:
    """``used`` + every added (special) token + for Unigram the lowest-scoring piece (see module doc)."""
    keep = set(used) | {t["id"] for t in tokenizer_data.get("added_tokens", [])}
    model = tokenizer_data["model"]
    if model.get("type") == "Unigram":
        scores = [s for _, s in model["vocab"]]
        keep.add(int(np.argmin(scores)))
        if model.get("unk_id") is not None:
            keep.add(model["unk_id"])
    return sorted(keep)


def trim_source(source, sample_texts: int = 256) -> dict:
    """Trim ``source``'s tokenizer and text-tower embedding table in place; returns the report."""
    import torch
    from tokenizers import Tokenizer

    from lugha.data.coverage import coverage_report
    from lugha.records import read_manifest
    from lugha.tokenizer import TextTokenizer
    from lugha.training.evaluate import load_label_names
    from lugha.training.text_tower import TorchTokenizer

    cfg = source.model_cfg
    langs = set(source.languages)
    records = [r for r in read_manifest(source.manifest) if not langs or r.lang in langs]
    if not records:
        raise ConfigError("--trim-vocab", f"{source.manifest}: no text in languages {sorted(langs)} to trim to")
    # label prompts are embedded into the label packs with the same tokenizer: they must stay covered
    names = load_label_names(source.manifest)[0]
    texts = [r.text for r in records]
    texts += sorted({names.get(r.lang, {}).get(r.label, r.label) for r in records if r.label})
    old_tok = source.tokenizer
    backend = old_tok.backend
    from lugha.records import Record

    report = coverage_report([Record(str(i), "", t, "x") for i, t in enumerate(texts)], backend,
                             cfg.text_tower.max_length, cfg.text_tower.prefix)
    data = json.loads(backend.to_str())
    keep = ids_to_keep(data, set(report["vocab_ids"]))
    new_backend = Tokenizer.from_str(json.dumps(trim_tokenizer_json(data, keep)))
    new_tok = TorchTokenizer(TextTokenizer(new_backend, old_tok.inner.spec, f"{old_tok.inner.source} (trimmed)"))

    remap = np.full(max(keep) + 1, -1, dtype=np.int64)
    remap[keep] = np.arange(len(keep))
    old_ids, old_mask = old_tok.inner.encode_batch(texts)
    new_ids, new_mask = new_tok.inner.encode_batch(texts)
    expect = np.where(old_mask > 0, remap[np.minimum(old_ids, len(remap) - 1)], new_tok.pad_id)
    if old_ids.shape != new_ids.shape or not (np.array_equal(old_mask, new_mask) and np.array_equal(expect, new_ids)):
        bad = next((i for i in range(len(texts)) if old_ids.shape != new_ids.shape
                    or not np.array_equal(expect[i], new_ids[i])), 0)
        raise VocabTrimError(f"trimmed tokenizer encodes {texts[bad]!r} differently; refusing to trim")

    net = source.model.text_tower.net
    old_emb = net.get_input_embeddings()
    sample = texts[:: max(1, len(texts) // sample_texts)][:sample_texts]
    with torch.no_grad():
        before = source.model.encode_text(*old_tok(sample))
        new_emb = torch.nn.Embedding(len(keep), old_emb.embedding_dim, padding_idx=int(new_tok.pad_id))
        new_emb.weight.copy_(old_emb.weight[torch.as_tensor(keep)])
        net.set_input_embeddings(new_emb)
        net.config.vocab_size = len(keep)
        if getattr(net.config, "pad_token_id", None) is not None:
            net.config.pad_token_id = int(new_tok.pad_id)
        after = source.model.encode_text(*new_tok(sample))
    diff = float((before - after).abs().max())
    if diff > MAX_ABS_DIFF:
        raise VocabTrimError(f"embeddings of covered text changed by {diff:.3g} (> {MAX_ABS_DIFF}) after trimming")
    source.tokenizer = new_tok
    rows_before, dim = old_emb.num_embeddings, old_emb.embedding_dim
    return {"vocab_before": int(backend.get_vocab_size()), "table_rows_before": int(rows_before), "kept": len(keep),
            "table_mb_before": rows_before * dim * 4 / 1e6, "table_mb_after": len(keep) * dim * 4 / 1e6,
            "texts": len(texts), "languages": sorted({r.lang for r in records}), "max_abs_diff": diff,
            "checked_texts": len(sample)}


__all__ = ["trim_source", "trim_tokenizer_json", "ids_to_keep", "VocabTrimError"]
