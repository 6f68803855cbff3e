"""The training config: one YAML file, typed and checked, with ``--set key=value`` dotted overrides.

Loading goes YAML -> dict -> overrides -> :func:`lugha._schema.from_dict`, so a typo in a key or a
string where a number belongs raises :class:`ConfigError` naming the dotted field
(``optim.lr: expected a number, got str 'fast'``). The resolved config is written into every run
folder as ``config.yaml`` so a run can be resumed or repeated from its folder alone.
"""
from __future__ import annotations

import copy
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Sequence

from lugha._schema import from_dict, to_dict
from lugha.config import ModelConfig, get_model_config
from lugha.errors import ConfigError, MissingDependencyError


@dataclass(frozen=True)
class DataConfig:
    """Which pairs train and validate, and how they are loaded.

    ``languages``: keep only these (empty = all). ``balance_languages``: each epoch draws languages
    uniformly instead of in proportion to their row counts. ``language_weights``: multiply a language's
    share of each epoch (``{en: 4}`` keeps English in view while adapting to every language: the retention
    lever). ``image_cache``: resize each image once into a
    uint8 memmap under ``cache_dir`` (default ``LUGHA_HOME/cache``). ``augment``: ``hflip`` flips half the
    training images (seeded per epoch and row, so runs repeat; never applied to cached tower features);
    ``crop`` / ``crop_hflip`` add random resized crops, which run on the training device (``loader: cache``).
    ``loader``: ``workers`` = DataLoader processes (``num_workers``); ``cache`` = batches gathered from the
    image cache on a thread and augmented on the device (:mod:`lugha.training.image_cache`), the one that
    keeps a GPU fed.
    """

    manifest: str = ""
    languages: tuple[str, ...] = ()
    train_split: str = "train"
    val_split: str = "val"
    batch_size: int = 64
    num_workers: int = 0
    balance_languages: bool = False
    language_weights: dict[str, float] = field(default_factory=dict)
    unique_groups: bool = True  # no two rows of one group (same image) in a batch: they are not negatives
    image_cache: bool = True
    cache_dir: str | None = None
    augment: Literal["none", "hflip", "crop", "crop_hflip"] = "none"
    loader: Literal["workers", "cache"] = "workers"

    def __post_init__(self) -> None:
        if self.augment.startswith("crop") and self.loader != "cache":
            raise ConfigError("data.augment", f"{self.augment} crops on the training device: set data.loader: cache")
        if self.loader == "cache" and not self.image_cache:
            raise ConfigError("data.loader", "cache reads the image cache: data.image_cache must be true")
        if self.batch_size < 2:
            raise ConfigError("data.batch_size", f"contrastive training needs >= 2, got {self.batch_size}")
        if self.num_workers < 0:
            raise ConfigError("data.num_workers", f"must be >= 0, got {self.num_workers}")
        bad = {k: v for k, v in self.language_weights.items() if not float(v) > 0}
        if bad:
            raise ConfigError("data.language_weights", f"weights must be > 0, got {bad}")


@dataclass(frozen=True)
class OptimConfig:
    """AdamW with linear warm-up then cosine decay to ``min_lr_ratio * lr``, per optimizer step."""

    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup_steps: int = 50
    min_lr_ratio: float = 0.0
    grad_accum: int = 1
    clip_grad_norm: float | None = 1.0
    betas: tuple[float, float] = (0.9, 0.98)
    eps: float = 1e-6

    def __post_init__(self) -> None:
        if self.lr <= 0:
            raise ConfigError("optim.lr", f"must be positive, got {self.lr}")
        if self.grad_accum < 1:
            raise ConfigError("optim.grad_accum", f"must be >= 1, got {self.grad_accum}")
        if self.warmup_steps < 0:
            raise ConfigError("optim.warmup_steps", f"must be >= 0, got {self.warmup_steps}")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ConfigError("optim.min_lr_ratio", f"must be in [0, 1], got {self.min_lr_ratio}")


@dataclass(frozen=True)
class LoopConfig:
    """How long to train and when to look. ``max_steps`` (optimizer steps) caps ``epochs`` when set.

    ``eval_every``: validate every N optimizer steps (0 = at each epoch end only). ``keep_best``: the
    validation metric that picks ``RUN/best`` (higher is better). ``patience``: stop after this many
    evaluations without improvement (0 = never). ``checkpoint_every``: also save ``RUN/last`` every N
    steps (0 = at epoch ends only), so a killed run loses at most N steps.
    """

    epochs: int = 5
    max_steps: int | None = None
    eval_every: int = 0
    keep_best: str = "mean_r1"
    patience: int = 0
    checkpoint_every: int = 0
    log_every: int = 10

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise ConfigError("loop.epochs", f"must be >= 1, got {self.epochs}")
        if self.max_steps is not None and self.max_steps < 1:
            raise ConfigError("loop.max_steps", f"must be >= 1 or null, got {self.max_steps}")


@dataclass(frozen=True)
class RuntimeConfig:
    """``precision``: ``auto`` = bf16 autocast on CUDA, fp16 + GradScaler where bf16 is unsupported,
    fp32 on CPU. ``feature_cache``: when a tower is frozen, compute its features once and train the heads
    from a memmap. ``deterministic``: ``torch.use_deterministic_algorithms`` (warn-only) + seeded order.
    ``threads``: torch CPU threads for the run (0 = torch's default, one per core); 1 is often faster for
    head-only training, whose small ops lose more to thread hand-offs than they gain, on a busy machine."""

    seed: int = 0
    threads: int = 0
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    device: str = "auto"
    channels_last: bool = False
    compile: bool = False
    deterministic: bool = True
    feature_cache: bool = True


@dataclass(frozen=True)
class ClassifyConfig:
    """``task: classify``: a fusion head (:mod:`lugha.training.fusion`) on the frozen towers' embeddings.

    ``head``: ``early`` | ``late`` | ``xattn`` | ``prototype``. ``label_field``: the record field holding
    the class (``subgroup`` for the demo's finer classes). ``init_from``: a retrieval run whose trained
    projections / LoRA the head sits on (null: the model as built). ``patch_grid`` (grid x grid image
    patches) and ``max_tokens`` (text tokens) are what the cross-attention head reads."""

    head: Literal["early", "late", "xattn", "prototype"] = "early"
    label_field: Literal["label", "subgroup"] = "label"
    init_from: str | None = None
    hidden: int = 256
    dropout: float = 0.1
    late_weights: Literal["learned", "equal"] = "learned"
    attn_heads: int = 4
    patch_grid: int = 3
    max_tokens: int = 24

    def __post_init__(self) -> None:
        for name, low in (("hidden", 1), ("attn_heads", 1), ("patch_grid", 1), ("max_tokens", 2)):
            if getattr(self, name) < low:
                raise ConfigError(f"classify.{name}", f"must be >= {low}, got {getattr(self, name)}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError("classify.dropout", f"must be in [0, 1), got {self.dropout}")


@dataclass(frozen=True)
class TrainConfig:
    """``model``: a registry name (``lugha`` ``list_models()``); ``model_overrides``: dotted changes to
    that model config (``adapter.kind: projection``), recorded in the run's ``model_config.json``.
    ``task``: ``retrieval`` (contrastive dual encoder) or ``classify`` (a fusion head, see ``classify``)."""

    model: str = "lowclip-lite0-e5small"
    model_overrides: dict[str, Any] = field(default_factory=dict)
    task: Literal["retrieval", "classify"] = "retrieval"
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    loop: LoopConfig = field(default_factory=LoopConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    classify: ClassifyConfig = field(default_factory=ClassifyConfig)
    # a finished run whose trained tensors of the same names and shapes start this one (e.g. the English
    # projections of a baseline under an all-language LoRA run); ignored when resuming
    init_from: str | None = None

    def to_dict(self) -> dict:
        return to_dict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "TrainConfig":
        return from_dict(cls, data, "train")

    def model_config(self) -> ModelConfig:
        """The registry config with ``model_overrides`` applied (checked like any config)."""
        base = get_model_config(self.model).to_dict()
        for key, value in self.model_overrides.items():
            _set_dotted(base, key, value, "model_overrides")
        return from_dict(ModelConfig, base, "model_overrides")


def _yaml():
    try:
        import yaml
    except ImportError:
        raise MissingDependencyError("training configs need PyYAML: pip install 'lugha[train]'") from None

    class Loader(yaml.SafeLoader):
        """SafeLoader that reads ``1e-3`` as a float (YAML 1.1 insists on ``1.0e-3``)."""

    Loader.add_implicit_resolver(
        "tag:yaml.org,2002:float",
        re.compile(r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
                    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
                    |\.[0-9_]+(?:[eE][-+][0-9]+)?
                    |[-+]?\.(?:inf|Inf|INF)
                    |\.(?:nan|NaN|NAN))$""", re.X),
        list("-+0123456789."),
    )
    return yaml, Loader


def parse_value(text: str) -> Any:
    """A ``--set`` value: YAML scalar/list syntax (``3``, ``1e-4``, ``true``, ``[en, sw]``, ``null``)."""
    yaml, loader = _yaml()
    try:
        return yaml.load(text, Loader=loader)
    except yaml.YAMLError:
        return text


def _set_dotted(d: dict, key: str, value: Any, where: str) -> None:
    parts = key.split(".")
    if not all(parts):
        raise ConfigError(where, f"bad key {key!r}")
    node = d
    for i, p in enumerate(parts[:-1]):
        nxt = node.get(p)
        if nxt is None:
            nxt = node[p] = {}
        if not isinstance(nxt, dict):
            raise ConfigError(".".join(parts[: i + 1]), f"is not a section, cannot set {key!r}")
        node = nxt
    node[parts[-1]] = value


def apply_overrides(data: dict, overrides: Sequence[str]) -> dict:
    """``["optim.lr=1e-4", "data.languages=[en]"]`` applied to a copy of ``data``.

    ``model_overrides.<dotted.key>=v`` keeps the dotted key whole (it addresses the model config).
    """
    out = copy.deepcopy(data)
    for item in overrides:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError("--set", f"expected key=value, got {item!r}")
        value = parse_value(raw)
        if key.startswith("model_overrides."):
            out.setdefault("model_overrides", {})[key[len("model_overrides."):]] = value
        else:
            _set_dotted(out, key, value, "--set")
    return out


def load_train_config(path: str | os.PathLike | None, overrides: Sequence[str] = ()) -> TrainConfig:
    """Read a YAML config (``None`` = all defaults), apply ``--set`` overrides, check every field."""
    data: dict = {}
    if path is not None:
        yaml, loader = _yaml()
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as e:
            raise ConfigError(str(path), f"cannot read config ({e.strerror})") from None
        try:
            data = yaml.load(text, Loader=loader) or {}
        except yaml.YAMLError as e:
            raise ConfigError(str(path), f"not valid YAML ({str(e).splitlines()[0]})") from None
        if not isinstance(data, dict):
            raise ConfigError(str(path), f"expected a mapping at top level, got {type(data).__name__}")
    cfg = TrainConfig.from_dict(apply_overrides(data, overrides))
    cfg.model_config()  # fail now, not after the data is loaded, on a bad model name or override
    return cfg


def resolve_paths(cfg: TrainConfig, base: str | os.PathLike = ".") -> TrainConfig:
    """Make the manifest, cache and ``init_from`` paths absolute (relative to ``base``, the working
    directory), so the ``config.yaml`` saved in a run still points at the data when resumed from elsewhere."""
    import dataclasses

    def absolute(p: str | None) -> str | None:
        return str((Path(base) / p).resolve()) if p else p

    return dataclasses.replace(cfg, init_from=absolute(cfg.init_from), data=dataclasses.replace(
        cfg.data, manifest=absolute(cfg.data.manifest) or "", cache_dir=absolute(cfg.data.cache_dir)),
        classify=dataclasses.replace(cfg.classify, init_from=absolute(cfg.classify.init_from)))


def dump_yaml(cfg: TrainConfig) -> str:
    yaml, _ = _yaml()
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False, allow_unicode=True)


def diff_configs(a: TrainConfig, b: TrainConfig) -> list[str]:
    """Dotted keys whose values differ (for a clear error when ``--resume`` meets a changed config)."""
    out: list[str] = []

    def walk(x: Any, y: Any, path: str) -> None:
        if isinstance(x, dict) and isinstance(y, dict):
            for k in sorted(set(x) | set(y)):
                walk(x.get(k), y.get(k), f"{path}.{k}" if path else k)
        elif x != y:
            out.append(path)

    walk(a.to_dict(), b.to_dict(), "")
    return out
