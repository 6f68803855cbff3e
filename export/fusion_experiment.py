"""The fusion-head comparison (``lugha experiments fusion``): every head under one budget, measured the way
the low-resource multimodal survey compares them (arXiv 2502.05568, Table 5: accuracy, robustness to a
missing modality, memory, compute).

Protocol (cross-lingual transfer, then missing modality):

1. One shared encoder stage, outside every head's budget: the model's towers stay frozen and its
   projections train contrastively (the ``projection`` adapter, CLIP loss) on the train split's rows in
   ``train_langs``. It gives every head the same aligned embedding space; the bundle's encoders.
2. Each head trains ``steps`` AdamW steps (same lr, batch size, schedule, seed) on the same rows, labels
   from ``label_field`` (the demo: the CLDR group), on features from the frozen-feature cache.
3. Test: the test split in every language. The demo splits by emoji, so test images are never seen in
   training; a language outside ``train_langs`` (held out) is cross-lingual transfer: its text, at
   test time, is in a language no label was ever trained with. Accuracy per language, mean over seen
   and held-out languages, and the same with the text missing (image only) and the image missing
   (text only), by the fusion heads' convention (an all-zero side; see :mod:`lugha.training.fusion`).
4. Cost: trainable head parameters; peak training memory; the head exported to ONNX through the export
   spec (:class:`lugha.export.specs.FusionHeadSpec`, or ``CrossAttentionHeadSpec``), its fp32 parity
   against PyTorch on test rows (missing-modality rows included) and its onnxruntime latency at batch 1.

Peak training memory is measured, not estimated: each head trains in a fresh process (glibc's mmap
threshold pinned at 64 kB so freed tensors go back to the OS) after a one-step warm-up on a throwaway
copy (torch's one-off start-up is not the head's); the number is the peak resident set while training
(``VmHWM``, reset through ``/proc/self/clear_refs``) minus the resident set just before it.
"""
from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from lugha.config import DEFAULT_MODEL
from lugha.errors import ConfigError

from lugha.training.fusion import HEAD_KINDS, HeadData

DEFAULT_TRAIN_LANGS = ("en", "sw", "hi", "am")


@dataclass(frozen=True)
class FusionExperiment:
    manifest: str
    model: str = DEFAULT_MODEL
    train_langs: tuple[str, ...] = DEFAULT_TRAIN_LANGS
    test_langs: tuple[str, ...] = ()  # empty: every language of the test split
    heads: tuple[str, ...] = HEAD_KINDS
    steps: int = 300
    batch_size: int = 64
    lr: float = 1e-3
    seed: int = 0
    proj_epochs: int = 5
    proj_lr: float = 2e-3
    label_field: str = "label"
    patch_grid: int = 3
    max_tokens: int = 24
    hidden: int = 256
    threads: int = 1
    isolate: bool = True  # train each head in a fresh process (the memory number needs it)
    latency_repeats: int = 200
    latency_warmup: int = 20
    cache_dir: str | None = None
    work_dir: str | None = None

    def __post_init__(self) -> None:
        bad = [h for h in self.heads if h not in HEAD_KINDS]
        if bad or not self.heads:
            raise ConfigError("--heads", f"expected some of {list(HEAD_KINDS)}, got {list(self.heads)}")
        if not self.train_langs:
            raise ConfigError("--train-langs", "need at least one training language")
        for name in ("steps", "batch_size", "proj_epochs", "latency_repeats"):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name.replace('_', '-')}", f"must be >= 1, got {getattr(self, name)}")

    def classify_config(self):
        from lugha.training.train_config import ClassifyConfig

        return ClassifyConfig(label_field=self.label_field, patch_grid=self.patch_grid, max_tokens=self.max_tokens,
                              hidden=self.hidden)

    def optim(self):
        from lugha.training.train_config import OptimConfig

        return OptimConfig(lr=self.lr, weight_decay=0.01, warmup_steps=min(20, self.steps // 10))


def projection_config(exp: FusionExperiment):
    """Stage 1: the shared projections (towers frozen), as a normal retrieval run of the trainer."""
    from lugha.training.train_config import DataConfig, LoopConfig, OptimConfig, RuntimeConfig, TrainConfig, resolve_paths

    return resolve_paths(TrainConfig(
        model=exp.model, model_overrides={"adapter.kind": "projection"},
        data=DataConfig(manifest=exp.manifest, languages=exp.train_langs, val_split="", batch_size=exp.batch_size,
                        cache_dir=exp.cache_dir),
        optim=OptimConfig(lr=exp.proj_lr, warmup_steps=20), loop=LoopConfig(epochs=exp.proj_epochs, log_every=50),
        runtime=RuntimeConfig(seed=exp.seed, threads=exp.threads, precision="fp32")))


def prepare_data(exp: FusionExperiment, work: Path, say: Callable[[str], None], show_progress: bool):
    """(frozen model, train HeadData, test HeadData, classes). Tower features are cached before stage 1
    (one pass fills the pooled and the token caches; stage 1 then reads the pooled ones)."""
    from lugha.training import checkpoint as ckpt
    from lugha.training.classify import freeze, load_features_for, split_classes
    from lugha.training.feature_cache import frozen_weights_digest
    from lugha.training.fusion import project_features
    from lugha.training.train_config import diff_configs, load_train_config
    from lugha.training.trainer import train

    pcfg = projection_config(exp)
    kind = "xattn" if "xattn" in exp.heads else "early"
    fixed = dict(kind=kind, grid=exp.patch_grid, max_tokens=exp.max_tokens, batch_size=exp.batch_size,
                 device="cpu", autocast=contextlib.nullcontext, precision="fp32", cache_dir=pcfg.data.cache_dir,
                 show_progress=show_progress)
    test_langs = exp.test_langs or ()
    run = work / "projections"
    if (run / ckpt.TRAIN_CONFIG).is_file():
        changed = diff_configs(load_train_config(run / ckpt.TRAIN_CONFIG), pcfg)
        if changed or not (run / "last" / ckpt.META).is_file():
            raise ConfigError("--work", f"{run} holds another (or an unfinished) projection run "
                                        f"{'(changed: ' + ', '.join(changed) + ')' if changed else ''}; "
                                        "pass another --work folder")
        say(f"stage 1: reusing the projections of {run}")
    else:
        model, tok = ckpt.build_for_training(pcfg, pcfg.model_config())
        digest = frozen_weights_digest(model)
        for split, langs in (("train", exp.train_langs), ("test", test_langs)):
            load_features_for(model, pcfg.model_config(), tok, pcfg.data.manifest, split, langs, exp.label_field,
                              digest=digest, **fixed)
        say(f"stage 1: projections on {', '.join(exp.train_langs)} ({exp.proj_epochs} epochs, towers frozen)")
        train(pcfg, run, show_progress=show_progress, say=lambda m: None)
    model, tok, model_cfg, _, _ = ckpt.load_run_model(run, "last")
    digest = frozen_weights_digest(model)
    loaded = {split: load_features_for(model, model_cfg, tok, pcfg.data.manifest, split, langs, exp.label_field,
                                       digest=digest, **fixed)
              for split, langs in (("train", exp.train_langs), ("test", test_langs))}
    freeze(model)
    classes = split_classes(loaded["train"][0].labels, f"{exp.manifest} split 'train'")
    train_data, test_data = (project_features(model, feats, pairs, classes) for pairs, feats in
                             (loaded["train"], loaded["test"]))
    return model, train_data, test_data, classes


# -- one head's training, measured (runs in a child process when isolated) ---------------------------------
def _rss_bytes(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")  # Linux >= 4.0: VmHWM := VmRSS
        return True
    except OSError:
        return False


def train_measured(spec: dict) -> dict:
    """Train one head as ``spec`` says (kind, data path, budget); returns losses, seconds and the peak
    training memory, and saves the head's state dict to ``spec['out']``."""
    import copy
    import gc
    import resource

    import torch

    from lugha.training.classify import head_kwargs, head_steps
    from lugha.training.fusion import build_head
    from lugha.training.optim import make_optimizer, make_scheduler
    from lugha.training.train_config import ClassifyConfig, OptimConfig

    torch.set_num_threads(spec["threads"])
    data = HeadData.load(spec["data"])
    cc, oc = ClassifyConfig(**spec["classify"]), OptimConfig(**spec["optim"])
    head = build_head(spec["kind"], spec["num_classes"], data.image.shape[1], seed=spec["seed"], **head_kwargs(cc))

    def run(h, steps: int) -> list[float]:
        h.prepare(data)
        opt = make_optimizer(h, oc, torch.device("cpu"))
        return list(head_steps(h, data, opt, make_scheduler(opt, oc, spec["steps"]), spec["batch_size"],
                               spec["seed"], steps))

    torch.manual_seed(spec["seed"])
    run(copy.deepcopy(head), 1)  # warm-up: torch's one-off allocations are not the head's
    gc.collect()
    base, exact = _rss_bytes("VmRSS"), _reset_peak()
    max_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    torch.manual_seed(spec["seed"])
    t0 = time.perf_counter()
    losses = run(head, spec["steps"])
    seconds = time.perf_counter() - t0
    if exact and base is not None:
        peak, method = _rss_bytes("VmHWM") - base, "peak RSS while training - RSS before (VmHWM reset)"
    else:  # no /proc/self/clear_refs: the lifetime peak's growth, a lower bound
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - max_before
        method = "growth of the lifetime peak RSS (ru_maxrss), a lower bound"
    torch.save(head.state_dict(), spec["out"])
    return {"losses": losses, "seconds": seconds, "peak_bytes": max(int(peak), 0), "memory_method": method,
            "isolated": spec.get("isolated", False)}


def _train_head(exp: FusionExperiment, kind: str, data_path: Path, num_classes: int, work: Path) -> tuple:
    from dataclasses import asdict

    spec = {"kind": kind, "data": str(data_path), "num_classes": num_classes, "seed": exp.seed,
            "steps": exp.steps, "batch_size": exp.batch_size, "threads": exp.threads,
            "classify": asdict(exp.classify_config()), "optim": asdict(exp.optim()),
            "out": str(work / f"{kind}.pt"), "isolated": exp.isolate}
    if not exp.isolate:
        return train_measured(spec), spec["out"]
    spec_path = work / f"{kind}.json"
    spec_path.write_text(json.dumps(spec))
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "OMP_NUM_THREADS": str(exp.threads)}
    done = subprocess.run([sys.executable, "-m", __name__, "--child", str(spec_path)], env=env,
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"training the {kind} head failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1]), spec["out"]


# -- export, parity and latency of one trained head ----------------------------------------------------------
def export_and_time(exp: FusionExperiment, model, head, test: HeadData, work: Path) -> dict:
    """Export ``head`` to ONNX through its spec, check fp32 parity on test rows (both sides, image missing,
    text missing) and time onnxruntime at batch 1 (warm-up, then ``latency_repeats`` runs, median)."""
    from lugha.export.graph_runners import onnx_runner
    from lugha.export.onnx_export import export_onnx
    from lugha.export.specs import SPECS, CrossAttentionHeadSpec, tolerance_for, torch_reference
    from lugha.parity import compare_outputs

    model.fusion_head = head.eval()
    spec = next(s for s in (SPECS["fusion_head"], CrossAttentionHeadSpec()) if s.applies(model))

    def named(rows, missing=None) -> dict[str, np.ndarray]:
        return dict(zip(spec.input_names(), (t.numpy() for t in test.inputs(head.input_kind, rows, missing))))

    n = min(len(test), 32)
    parts = [named(np.arange(n)), named(np.arange(min(n, 8)), "image"), named(np.arange(min(n, 8)), "text")]
    inputs = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    done = export_onnx(spec, model, {k: v[:4] for k, v in inputs.items()}, work / f"{head.kind}.onnx")
    ref = torch_reference(spec, model, inputs)
    out = onnx_runner(done.path, threads=exp.threads)(inputs)
    parity = compare_outputs(ref, out, tolerance_for(*spec.tolerances["fp32"], ref), spec.name)[0]
    session, one = onnx_runner(done.path, threads=exp.threads), {k: v[:1] for k, v in inputs.items()}
    for _ in range(exp.latency_warmup):
        session(one)
    times = []
    for _ in range(exp.latency_repeats):
        t0 = time.perf_counter()
        session(one)
        times.append(time.perf_counter() - t0)
    key = spec.output_names()[0]
    return {"spec": spec.name, "exporter": done.exporter, "onnx_kb": done.path.stat().st_size / 1024,
            "onnx_ms": 1e3 * float(np.median(times)), "onnx_ms_p90": 1e3 * float(np.percentile(times, 90)),
            "parity_max_abs": parity.max_abs, "parity_min_cos": parity.min_cosine, "parity_ok": parity.ok,
            "parity_rows": int(len(ref[key])),
            "parity_argmax_agree": float((ref[key].argmax(1) == out[key].argmax(1)).mean())}


def run_fusion_experiment(exp: FusionExperiment, say: Callable[[str], None] = print,
                          show_progress: bool = True) -> dict:
    """The whole comparison; returns the report (``heads``: one row per head; ``per_language``)."""
    import torch

    from lugha.training.classify import accuracy_report, head_kwargs
    from lugha.training.fusion import build_head, count_head_parameters

    work = Path(exp.work_dir) if exp.work_dir else Path(tempfile.mkdtemp(prefix="lugha-fusion-"))
    work.mkdir(parents=True, exist_ok=True)
    model, train, test, classes = prepare_data(exp, work, say, show_progress)
    train.save(work / "train.npz")
    langs = sorted(set(test.langs.tolist()))
    seen = [lang for lang in langs if lang in exp.train_langs]
    held = [lang for lang in langs if lang not in exp.train_langs]
    # one image is captioned in every language, so the independent unit of the test set is the image
    n_images = len(set(test.image_index.tolist()))
    say(f"{len(classes)} classes; {len(train)} training rows ({', '.join(exp.train_langs)}); test: "
        f"{len(test)} rows, seen {seen}, held out {held}")
    rows, per_lang = [], {}
    threads = torch.get_num_threads()
    for kind in exp.heads:
        say(f"head {kind}: {exp.steps} steps" + (" in a fresh process" if exp.isolate else ""))
        stats, state = _train_head(exp, kind, work / "train.npz", len(classes), work)
        head = build_head(kind, len(classes), train.image.shape[1], seed=exp.seed,
                          **head_kwargs(exp.classify_config()))
        head.load_state_dict(torch.load(state, weights_only=True))
        torch.set_num_threads(exp.threads)
        try:
            acc = accuracy_report(head, test, train.labels)
            cost = export_and_time(exp, model, head, test, work)
        finally:
            torch.set_num_threads(threads)
        by_lang = acc["languages"]

        def mean_of(keys: list[str], metric: str = "acc") -> float | None:
            return float(np.mean([by_lang[k][metric] for k in keys])) if keys else None

        per_lang[kind] = by_lang
        losses = stats["losses"]
        a = acc["mean"]["mean_acc"]
        rows.append({"head": kind, "params": count_head_parameters(head), "acc": a,
                     "acc_se": float(np.sqrt(a * (1 - a) / n_images)),
                     "acc_seen": mean_of(seen), "acc_heldout": mean_of(held),
                     "acc_image_only": acc["mean"]["mean_acc_image_only"],
                     "acc_text_only": acc["mean"]["mean_acc_text_only"],
                     "acc_text_only_heldout": mean_of(held, "acc_text_only"),
                     "majority_acc": acc["mean"]["mean_majority_acc"],
                     "peak_train_mb": stats["peak_bytes"] / 2 ** 20, "train_s": stats["seconds"],
                     "ms_per_step": 1e3 * stats["seconds"] / max(len(losses), 1),
                     "loss_first": losses[0], "loss_last": float(np.mean(losses[-10:])),
                     "memory_method": stats["memory_method"], **cost})
        say(f"head {kind}: acc {rows[-1]['acc']:.3f}, image only {rows[-1]['acc_image_only']:.3f}, text only "
            f"{rows[-1]['acc_text_only']:.3f}, onnx {cost['onnx_ms']:.3f} ms")
    protocol = {"manifest": str(exp.manifest), "model": exp.model, "label_field": exp.label_field,
                "classes": classes, "train_split": "train", "test_split": "test", "train_langs": list(exp.train_langs),
                "seen_langs": seen, "heldout_langs": held, "train_rows": len(train), "test_rows": len(test),
                "test_images": n_images,
                "steps": exp.steps, "batch_size": exp.batch_size, "lr": exp.lr, "seed": exp.seed,
                "threads": exp.threads, "projection_epochs": exp.proj_epochs, "patch_grid": exp.patch_grid,
                "max_tokens": exp.max_tokens, "latency": f"onnxruntime CPU, batch 1, {exp.threads} thread(s), "
                f"{exp.latency_warmup} warm-up + {exp.latency_repeats} timed runs, median",
                "memory": rows[0]["memory_method"] if rows else "", "work_dir": str(work)}
    return {"protocol": protocol, "heads": rows, "per_language": per_lang}


TABLE = [("head", "head"), ("params", "params"), ("acc", "acc"), ("+-", "acc_se"), ("seen", "acc_seen"),
         ("held-out", "acc_heldout"),
         ("image only", "acc_image_only"), ("text only", "acc_text_only"), ("train MB", "peak_train_mb"),
         ("ms/step", "ms_per_step"), ("ONNX ms", "onnx_ms"), ("ONNX kB", "onnx_kb"),
         ("parity max|d|", "parity_max_abs"), ("parity", "parity_ok")]


def format_report(report: dict) -> str:
    """The comparison table, then accuracy per language (``*`` = a training language)."""
    from lugha.reports import format_table

    def cell(key: str, v):
        if key == "parity_max_abs":
            return f"{v:.1e}"
        if key == "parity_ok":
            return "ok" if v else "FAIL"
        return v

    rows = [{title: cell(key, r.get(key)) for title, key in TABLE} for r in report["heads"]]
    p, per = report["protocol"], report["per_language"]
    heads = [r["head"] for r in report["heads"]]
    first = per[heads[0]] if heads else {}
    lang_rows = [{"lang": lang + ("*" if lang in p["seen_langs"] else ""), "n": m["n"],
                  "majority": m.get("majority_acc"), **{h: per[h][lang]["acc"] for h in heads}}
                 for lang, m in first.items()]
    lines = [format_table(rows), "",
             f"Accuracy per language on the test split ({p['test_rows']} rows; * = a training language; "
             f"majority = always the most common training class):", "", format_table(lang_rows), "",
             f"Budget per head: {p['steps']} steps, batch {p['batch_size']}, lr {p['lr']}, seed {p['seed']}, "
             f"{p['threads']} thread(s); latency: {p['latency']}; memory: {p['memory']}. +-: one standard error "
             f"of acc with the {p['test_images']} test images as the independent unit (each is captioned in "
             f"every language): smaller differences between heads are noise."]
    return "\n".join(lines)


def _child_main(spec_path: str) -> int:
    spec = json.loads(Path(spec_path).read_text())
    print(json.dumps(train_measured(spec)))
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--child":
        sys.exit(_child_main(sys.argv[2]))
    sys.exit("usage: python -m lugha.export.fusion_experiment --child SPEC.json (internal)")
