"""The text side of the contract: how a caption becomes ``input_ids`` + ``attention_mask``.

The spec travels inside every bundle beside ``tokenizer.json`` (the ``tokenizers`` library's own format,
readable on a Pi without torch or transformers), so the device pads, truncates and prefixes exactly as
training did. ``tokenizers`` is imported lazily: the image-only path of the kit never needs it.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Sequence

import numpy as np

from lugha.errors import BundleError, ConfigError, MissingDependencyError, MissingFileError

if TYPE_CHECKING:  # pragma: no cover
    from lugha.config import ModelConfig

TOKENIZER_FILE = "tokenizer.json"
# Tried in order when neither the spec nor tokenizer.json names a padding token.
_PAD_CANDIDATES = ("<pad>", "[PAD]", "<|pad|>", "<|padding|>")


class InvalidTokenizerError(BundleError):
    """A tokenizer file that the ``tokenizers`` library cannot read, or that lacks what the spec needs."""


@dataclass(frozen=True)
class TokenizerSpec:
    """``file``: the tokenizer.json, relative to the bundle folder. ``padding``: ``max_length`` gives
    fixed ``[B, max_length]`` arrays (what static-shape TFLite/NNAPI graphs need), ``longest`` pads to the
    longest text of the batch. ``prefix`` is prepended to every text (e5 was trained with
    ``"passage: "``). ``pad_token``: ``None`` takes tokenizer.json's own padding token, else the first
    of ``<pad>``/``[PAD]`` in the vocabulary.
    """

    file: str = TOKENIZER_FILE
    max_length: int = 64
    padding: Literal["max_length", "longest"] = "max_length"
    truncation: bool = True
    prefix: str = ""
    pad_token: str | None = None
    add_special_tokens: bool = True

    def __post_init__(self) -> None:
        if not self.file:
            raise ConfigError("file", "must name the tokenizer file, e.g. 'tokenizer.json'")
        if self.max_length < 2:
            raise ConfigError("max_length", f"must be >= 2 (room for the special tokens), got {self.max_length}")


def spec_for_model(cfg: "ModelConfig", **changes) -> TokenizerSpec:
    """The tokenizer spec a model config implies (its text tower's max length and prefix)."""
    values = {"max_length": cfg.text_tower.max_length, "prefix": cfg.text_tower.prefix}
    values.update(changes)
    return TokenizerSpec(**values)


class TextTokenizer:
    """A loaded tokenizer.json bound to its spec. ``backend`` is the ``tokenizers.Tokenizer``."""

    def __init__(self, backend, spec: TokenizerSpec, source: str = "tokenizer"):
        self.spec = spec
        self.source = source
        self.pad_id = _resolve_pad_id(backend, spec, source)
        # Padding is done here in numpy (one rule for every tokenizer file); truncation by the library,
        # because it knows to keep the special tokens (</s>) inside max_length.
        backend.no_padding()
        if spec.truncation:
            backend.enable_truncation(spec.max_length)
        else:
            backend.no_truncation()
        self.backend = backend

    @property
    def vocab_size(self) -> int:
        return int(self.backend.get_vocab_size(with_added_tokens=True))

    def encode_batch(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """``(input_ids, attention_mask)``, both int64 ``[B, L]``; ``L`` follows ``spec.padding``."""
        if isinstance(texts, str):
            raise TypeError("encode_batch takes a list of texts, got one str; wrap it in a list")
        texts = [self.spec.prefix + t for t in texts]
        encodings = self.backend.encode_batch(texts, add_special_tokens=self.spec.add_special_tokens)
        lengths = [len(e.ids) for e in encodings]
        longest = max(lengths, default=0)
        if self.spec.padding == "max_length":
            if longest > self.spec.max_length:  # only possible with truncation off
                i = lengths.index(longest)
                raise ConfigError("tokenizer.truncation", f"text {i} has {longest} tokens > max_length "
                                  f"{self.spec.max_length} and truncation is off")
            width = self.spec.max_length
        else:
            width = longest
        ids = np.full((len(encodings), width), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(encodings), width), dtype=np.int64)
        for row, enc in enumerate(encodings):
            n = len(enc.ids)
            ids[row, :n] = enc.ids
            mask[row, :n] = enc.attention_mask
        return ids, mask

    def __repr__(self) -> str:
        return f"TextTokenizer({self.source!r}, vocab={self.vocab_size}, {self.spec})"


def _resolve_pad_id(backend, spec: TokenizerSpec, source: str) -> int:
    if spec.pad_token is not None:
        pad_id = backend.token_to_id(spec.pad_token)
        if pad_id is None:
            raise InvalidTokenizerError(f"{source}: pad_token {spec.pad_token!r} is not in the vocabulary")
        return int(pad_id)
    own = backend.padding  # the padding config saved in tokenizer.json, if any
    if own and own.get("pad_id") is not None:
        return int(own["pad_id"])
    for token in _PAD_CANDIDATES:
        pad_id = backend.token_to_id(token)
        if pad_id is not None:
            return int(pad_id)
    raise InvalidTokenizerError(f"{source}: no padding token (tried {', '.join(_PAD_CANDIDATES)}); "
                                "set tokenizer.pad_token in the spec")


def load_tokenizer(path: str | os.PathLike, spec: TokenizerSpec | None = None) -> TextTokenizer:
    """Load a tokenizer.json (``path`` is the file, or a bundle folder holding ``spec.file``)."""
    spec = spec or TokenizerSpec()
    file = Path(path)
    if file.is_dir():
        file = file / spec.file
    if not file.is_file():
        raise MissingFileError(f"tokenizer file not found: {file}")
    try:
        from tokenizers import Tokenizer
    except ImportError:
        raise MissingDependencyError("encoding text needs the 'tokenizers' package: pip install tokenizers") from None
    try:
        backend = Tokenizer.from_file(str(file))
    except Exception as e:  # the library raises a bare Exception with serde's message
        reason = (str(e).splitlines() or ["unreadable"])[0][:200]
        raise InvalidTokenizerError(f"{file}: not a valid tokenizer.json ({reason})") from None
    return TextTokenizer(backend, spec, str(file))


__all__ = ["TokenizerSpec", "TextTokenizer", "InvalidTokenizerError", "load_tokenizer", "spec_for_model",
           "TOKENIZER_FILE"]
