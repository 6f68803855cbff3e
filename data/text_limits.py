"""Text length limits of ``lugha data check``: by characters, or by tokens of a tokenizer.json."""
from __future__ import annotations

import unicodedata
from typing import Callable

from lugha.errors import DataError


def truncator(opts) -> "Callable[[str], tuple[str, str] | None]":
    """text -> None, or (truncated text, message); by tokens when a tokenizer is given, else characters."""
    if opts.tokenizer:
        try:
            from tokenizers import Tokenizer
        except ImportError as e:  # pragma: no cover - tokenizers is a base dependency
            raise DataError(f"--tokenizer needs the `tokenizers` package ({e})") from None
        try:
            tok = Tokenizer.from_file(str(opts.tokenizer))
        except Exception as e:  # noqa: BLE001 - tokenizers raises plain Exception on a bad file
            raise DataError(f"{opts.tokenizer}: not a tokenizer.json ({e})") from None

        def by_tokens(text: str):
            enc = tok.encode(text, add_special_tokens=False)
            if len(enc.ids) <= opts.max_tokens:
                return None
            end = enc.offsets[opts.max_tokens - 1][1]
            return cut(text, end), f"{len(enc.ids)} tokens > {opts.max_tokens}; truncated"

        return by_tokens

    def by_chars(text: str):
        if len(text) <= opts.max_chars:
            return None
        return cut(text, opts.max_chars), f"{len(text)} characters > {opts.max_chars}; truncated"

    return by_chars


def cut(text: str, end: int) -> str:
    """``text[:end]``, moved left so a combining mark (Yoruba tone marks, Devanagari signs) keeps its base."""
    while 0 < end < len(text) and unicodedata.combining(text[end]):
        end -= 1
    return text[:end].rstrip()


__all__ = ["cut", "truncator"]
