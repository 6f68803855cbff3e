"""``export_run``: a run -> graphs (ONNX/TFLite x fp32/fp16/int8) -> parity + accuracy gates -> one bundle.

The bundle is assembled in a hidden staging folder beside ``out`` and renamed into place only after
every gate passed; any failure (a gate, an exporter, Ctrl-C) removes the staging folder, so a failed
export never leaves a bundle that looks usable.
"""
from __future__ import annotations

import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from lugha.atomic import replace_dir
from lugha.errors import ConfigError
from lugha.manifest import BundleManifest, GraphSpec, add_all_files, write_manifest
from lugha.preprocess import preprocess_batch
from lugha.runtimes.bundle_zip import sweep_stale
from lugha.tokenizer import spec_for_model
from lugha.vocabulary import FORMATS, PRECISIONS, REFERENCE_METRIC, metric_key  # noqa: F401 (FORMATS, PRECISIONS: re-exported)

from lugha.export import accuracy_gate, advisor, bundle_writer as bw, fusion_head as fh, gates
from lugha.export.graph_runners import onnx_runner, tflite_runner
from lugha.export.options import ExportOptions  # re-exported: callers know it from here
from lugha.export.source import ExportSource, calibration_batches, calibration_texts, eval_pairs, limit_pairs, token_encoder
from lugha.export.specs import reference_runner, specs_for, tolerance_for


@dataclass
class ExportResult:
    bundle: Path
    zip: Path | None
    report: dict = field(default_factory=dict)


def _golden_inputs(source: ExportSource, data: gates.EvalData, rows: int) -> dict[str, dict[str, np.ndarray]]:
    """Real eval images and texts (one per language first); for a head, their fp32 encoder outputs plus
    a row with the image missing and one with the text missing (:func:`fusion_head.head_golden`)."""
    pairs = data.pairs
    first = {}
    for i, r in enumerate(pairs.records):
        first.setdefault(r.lang, i)
    idx = (list(first.values()) + [i for i in range(len(pairs.records)) if i not in first.values()])[:max(rows, 2)]
    ids, mask = data.encode_tokens([pairs.texts[i] for i in idx])
    pixels = data.pixels[[int(pairs.image_index[i]) for i in idx]]
    model = source.model
    img = reference_runner(specs_for(model, ("image_encoder",))[0], model, source.layout)({"pixel_values": pixels})
    txt = reference_runner(specs_for(model, ("text_encoder",))[0], model)({"input_ids": ids, "attention_mask": mask})
    out = {"image_encoder": {"pixel_values": pixels}, "text_encoder": {"input_ids": ids, "attention_mask": mask}}
    for head in specs_for(model, ("fusion_head",)):
        out[head.name] = fh.head_golden(head.input_names(), img, txt, mask)
    return out


def _static_rows(inputs: dict[str, np.ndarray], length: int | None) -> dict[str, np.ndarray]:
    """Golden inputs of a static batch-1 TFLite graph: the first row, tokens padded/cut to ``length``, int32."""
    out = {}
    for k, v in inputs.items():
        v = v[:1]
        if length is not None and v.dtype.kind == "i":
            v = v[:, :length] if v.shape[1] >= length else np.pad(v, ((0, 0), (0, length - v.shape[1])))
            v = v.astype(np.int32)
        out[k] = np.ascontiguousarray(v)
    return out


def export_run(source: ExportSource, out: str | Path, opts: ExportOptions,
               say: Callable[[str], None] = print) -> ExportResult:
    out = Path(out)
    occupied = out.is_file() or (out.is_dir() and any(out.iterdir()))
    if occupied and not opts.overwrite:
        raise ConfigError("--out", f"{out} exists; pass --overwrite or another folder")
    out.parent.mkdir(parents=True, exist_ok=True)
    # the pid in the names: what a kill -9 left behind is swept by the next export, a live one's never
    staging_prefix, scratch_prefix = f".{out.name}.partial-", "lugha-export-"
    sweep_stale(out.parent, staging_prefix)
    sweep_stale(out.parent, f".{out.name}.zip.")  # the zip's temp file (lugha.atomic.temp_name: .NAME.<pid>-*.tmp)
    sweep_stale(None, scratch_prefix)
    staging = Path(tempfile.mkdtemp(prefix=f"{staging_prefix}{os.getpid()}-", dir=out.parent))
    scratch = Path(tempfile.mkdtemp(prefix=f"{scratch_prefix}{os.getpid()}-"))
    try:
        report = _build(source, staging, scratch, opts, say)
        if opts.sign_key:
            from lugha.export.signing import sign_bundle

            sign_bundle(staging, opts.sign_key)
            report["signed"] = True
        replace_dir(staging, out)  # the previous bundle is removed only once the new one is in place (#17)
        out.chmod(0o755)  # mkdtemp made it private; a bundle is meant to be copied and read
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    zip_path = bw.zip_bundle(out, out.with_name(out.name + ".zip")) if opts.zip else None
    report["bundle"], report["zip"] = str(out), str(zip_path) if zip_path else None
    return ExportResult(out, zip_path, report)


def _build(source: ExportSource, root: Path, scratch: Path, opts: ExportOptions, say) -> dict:
    t0 = time.monotonic()
    model, cfg, layout = source.model, source.model_cfg, source.layout
    report: dict = {"source": source.origin, "model": cfg.name, "formats": list(opts.formats),
                    "precisions": list(opts.precisions)}
    if opts.trim_vocab:
        from lugha.export.vocab_trim import trim_source

        report["vocab_trim"] = trim_source(source)
        say(f"vocab trimmed: {report['vocab_trim']['kept']:,} of {report['vocab_trim']['vocab_before']:,} ids kept")
    pairs, split = eval_pairs(source, opts.eval_split)
    pairs = limit_pairs(pairs, opts.eval_limit)
    from lugha.training.evaluate import load_label_names

    label_names = load_label_names(source.manifest)[0]
    data = gates.EvalData(pairs, preprocess_batch(pairs.image_paths, source.preprocess), token_encoder(source.tokenizer),
                          label_names)
    golden_in = _golden_inputs(source, data, opts.golden_rows)
    seq_lengths = tuple(sorted(set(opts.seq_lengths or (min(16, cfg.text_tower.max_length), cfg.text_tower.max_length))))
    specs = specs_for(model)
    if "tflite" in opts.formats and any("image_patches" in s.output_names() for s in specs):
        raise ConfigError("--formats", "a cross-attention fusion head exports to ONNX only (its text tokens "
                          "have a data-dependent length); drop tflite or train another head")
    findings = advisor.scan_modules(model)
    needs_calib = "int8" in opts.precisions and any(s.quant_scheme == "static" for s in specs)
    calib = calibration_batches(source, opts.calib_samples) if needs_calib else []
    text_calib = (calibration_texts(source, opts.calib_texts) if "int8" in opts.precisions
                  and opts.text_int8 != "dynamic" and any(s.quant_scheme == "dynamic" for s in specs) else [])
    graphs: list[GraphSpec] = []
    runners: dict[str, Callable] = {}
    golden_for: dict[str, dict] = {}
    info_rows = []
    (root / "graphs").mkdir()
    for spec in specs:
        inputs = golden_in[spec.name]
        for fmt in opts.formats:
            made = _export_format(spec, source, fmt, opts, inputs, (calib, text_calib), seq_lengths, root, scratch, findings, say)
            for precision, (rel, quant, tensors_in, g_in) in made.items():
                ref = reference_runner(spec, model, layout)(g_in)
                tol = tolerance_for(*spec.tolerances[precision], ref)
                key = f"{spec.name}/{metric_key(fmt, precision)}"
                gs = GraphSpec(spec.name, fmt, precision, rel, tensors_in,
                               spec.outputs(model, static={"batch": 1} if fmt == "tflite" else None),
                               quant, bw.write_golden(root, key, g_in, ref), tol)
                graphs.append(gs)
                pads = {"input_ids": int(source.tokenizer.pad_id)}
                # The ONNX gate opens the graph as a device does: the runtime's session, the bundle's spec.
                runners[key] = (onnx_runner(root / rel, spec=gs) if fmt == "onnx" else tflite_runner(root / rel, spec, pads))
                golden_for[key] = (g_in, ref)
                size = (root / rel).stat().st_size
                info_rows.append({"key": key, "scheme": quant.get("scheme", ""), "size_mb": size / 1e6})
                say(f"exported {key}: {size / 1e6:.2f} MB ({quant.get('scheme', '')})")
    # --- gates ---
    report.update(advisor=advisor.format_findings(findings), graphs=info_rows)  # shown on failure too
    record = _gates(source, opts, data, split, specs, graphs, runners, golden_for, report, say)
    # --- bundle ---
    tok_spec = spec_for_model(cfg, padding="longest" if "onnx" in opts.formats else "max_length",
                              pad_token=source.tokenizer.backend.id_to_token(int(source.tokenizer.pad_id)))
    source.tokenizer.backend.save(str(root / tok_spec.file), pretty=False)
    packs = _label_packs(source, data, root)
    report.update(label_packs=sorted(packs), seconds=round(time.monotonic() - t0, 1))
    card = {**_card_info(source, data, report, opts, info_rows, split), "gate": record}
    bw.write_model_card(root, card)
    manifest = BundleManifest(model=cfg, graphs=tuple(graphs), tokenizer=tok_spec,
                              languages=tuple(pairs.languages), label_packs=packs,
                              metrics={c: {lang: {k: v for k, v in m.items()} for lang, m in per.items()}
                                       for c, per in report["metrics"].items()}, accuracy_gate=record)
    done = write_manifest(root, add_all_files(root, manifest))
    report["bundle_bytes"] = done.total_bytes
    return report


def _gates(source, opts, data, split, specs, graphs, runners, golden_for, report, say):
    """Parity on the golden rows, then the paired accuracy gate; raises ExportGateError (with the whole
    report) when a gate blocks, else returns the gate's record for the manifest and model card."""
    parity = [row for g in graphs for row in gates.parity_gate(g, runners[g.key], *golden_for[g.key])]
    say(f"parity: {sum(r.ok for r in parity)}/{len(parity)} graphs within tolerance")
    gate_sets = accuracy_gate.gate_data(source, opts, data, split, say)
    metrics, items, images = accuracy_gate.evaluate_all(source, data, gate_sets, specs, runners, opts)
    reference_items = items.pop(REFERENCE_METRIC)
    cells, pooled = gates.accuracy_cells(reference_items, items, opts.max_drop, images=images)
    blocked = gates.blocking(cells, pooled, opts.gate)
    failures = gates.summarize_failures(parity, blocked)
    record = accuracy_gate.gate_record(opts, [d.split or split for d in gate_sets], cells, pooled, blocked)
    report.update(parity=[r.to_dict() for r in parity], accuracy=[c.to_dict() for c in cells],
                  accuracy_pooled=[c.to_dict() for c in pooled], gate=accuracy_gate.summary(record), metrics=metrics,
                  worst_drops=gates.worst_cells(cells), eval_split=split)
    say(f"accuracy gate ({opts.gate}, margin {opts.max_drop} points, {'+'.join(record.splits)}): "
        + ", ".join(f"{v} {k}" for k, v in record.counts().items()) + " per-language cells; pooled: "
        + ", ".join(f"{c.candidate} {c.metric} {c.decision}" for c in pooled))
    must_block = [f for f in failures if f.startswith("parity") or not opts.allow_drop]  # parity always blocks
    if blocked and opts.allow_drop:
        report["allowed_drops"] = [f for f in failures if f.startswith("accuracy")]
        say(f"--allow-drop: {len(blocked)} accuracy cells would have blocked ({opts.gate} gate); bundle written, "
            "its manifest and model card say so")
    if must_block:
        raise gates.ExportGateError(f"{len(must_block)} gate failure(s); no bundle written. First: {must_block[0]}",
                                    {**report, "failures": must_block})
    return record


def _export_format(spec, source, fmt, opts, inputs, calibration, seq_lengths, root, scratch, findings, say) -> dict:
    """{precision: (bundle-relative file, quantization info, input TensorSpecs, golden inputs)}.
    ``calibration``: (image batches, text batches) for the int8 graphs."""
    model, layout, made = source.model, source.layout, {}
    calib, text_calib = calibration
    if fmt == "onnx":
        from lugha.export.onnx_export import export_onnx
        from lugha.export.onnx_quant import convert_fp16, quantize_image_static, quantize_text_dynamic

        fp32_rel = f"graphs/{spec.name}.fp32.onnx"
        fp32 = root / fp32_rel if "fp32" in opts.precisions else scratch / f"{spec.name}.fp32.onnx"
        exp = export_onnx(spec, model, inputs, fp32, layout, opts.force_legacy_onnx)
        say(exp.describe())
        base = {"exporter": f"torch.onnx.export ({exp.exporter})", **({"fallback_reason": exp.fallback_reason}
                                                                      if exp.fallback_reason else {})}
        tin = spec.inputs(model, layout)
        for precision in opts.precisions:
            rel = f"graphs/{spec.name}.{precision}.onnx"
            if precision == "fp32":
                q = {"scheme": "fp32"}
            elif precision == "fp16":
                q = convert_fp16(fp32, root / rel).to_dict()
            elif spec.quant_scheme == "dynamic" and opts.text_int8 != "dynamic":
                from lugha.export.text_int8 import quantize_text_per_token

                q = quantize_text_per_token(fp32, root / rel, text_calib,
                                            fine=opts.text_int8 == "per-token-fine").to_dict()
            elif spec.quant_scheme == "dynamic":
                q = quantize_text_dynamic(fp32, root / rel).to_dict()
            elif spec.quant_scheme == "static":
                plan = advisor.plan_int8(fp32, spec.name, opts.int8_policy)
                findings.extend(plan.findings)
                q = quantize_image_static(fp32, root / rel, calib, opts.calib_method, True, plan.nodes_to_exclude,
                                          plan.activations, rounding=opts.int8_rounding,
                                          float_stem=opts.int8_float_stem).to_dict()
                q["advisor"] = [f.to_dict() for f in plan.findings]
            else:
                shutil.copyfile(fp32, root / rel)
                q = {"scheme": "none: kept float (a few kB head that normalises inside; see the advisor)"}
            made[precision] = (rel, {**base, **q, **spec.graph_info(model)}, tin, inputs)
        return made
    from lugha.export.tflite_export import export_tflite, static_inputs

    tokens = "input_ids" in spec.input_names()
    for precision in opts.precisions:
        rel = f"graphs/{spec.name}.{precision}.tflite"
        done = export_tflite(spec, model, precision, inputs, root / rel, layout, seq_lengths, calib,
                             rounding=opts.int8_rounding, float_stem=opts.int8_float_stem, text_calib=text_calib)
        say(f"{spec.name}: litert-torch {precision}, {done.seconds:.1f}s")
        q = {**done.quantization, "signatures": done.signatures, "static_batch": 1, **spec.graph_info(model)}
        if tokens:
            q["signature_per"] = "sequence length: pad ids/mask to the smallest seq_<L> >= the text's length"
        length = max(seq_lengths) if tokens else None
        tin = static_inputs(spec, model, layout, length)
        made[precision] = (rel, q, tin, _static_rows(inputs, length))
    return made


def _label_packs(source: ExportSource, data: gates.EvalData, root: Path) -> dict[str, str]:
    """Per language: every label of the manifest (any split) in that language's names, embedded fp32."""
    from lugha.records import read_manifest

    labels: dict[str, set[str]] = {}
    for r in read_manifest(source.manifest):
        if r.label and r.lang in data.pairs.languages:
            labels.setdefault(r.lang, set()).add(r.label)
    spec = specs_for(source.model, ("text_encoder",))[0]
    run = reference_runner(spec, source.model)
    packs = {}
    for lang, names in sorted(labels.items()):
        shown = [data.label_names.get(lang, {}).get(c, c) for c in sorted(names)]
        emb = np.concatenate([run(dict(zip(("input_ids", "attention_mask"), data.encode_tokens(shown[i:i + 64]))))
                              ["text_embeds"] for i in range(0, len(shown), 64)])
        packs[lang] = bw.write_label_pack(root, lang, shown, emb)
    return packs


def _card_info(source, data, report, opts, info_rows, split) -> dict:
    from lugha import __version__
    from lugha.data.coverage import coverage_report

    cov = coverage_report(data.pairs.records, source.tokenizer.backend, source.model_cfg.text_tower.max_length,
                          source.model_cfg.text_tower.prefix)
    cfg = source.model_cfg
    limitations = ["Embeddings are not L2-normalised inside the graphs: host code normalises (int8-safe).",
                   f"Text longer than {cfg.text_tower.max_length} tokens is cut."]
    if not source.trained:
        limitations.insert(0, "UNTRAINED projections: metrics measure the pretrained towers with random "
                              "projections, not a trained model.")
    if "vocab_trim" in report:
        limitations.append(f"Vocabulary trimmed to the {report['vocab_trim']['kept']:,} token ids the training "
                           "text uses: other text maps to <unk> pieces.")
    from lugha.data.image_domain import domain_limitation

    # what the images are (emoji drawings, photos, ...): eval and training rows share one manifest and domain
    limitations.append(domain_limitation(data.pairs.records))
    licences = [bw.LICENCES.get(cfg.image_tower.arch, f"image tower {cfg.image_tower.arch}: see its source"),
                bw.LICENCES.get(cfg.text_tower.name_or_path, f"text tower {cfg.text_tower.name_or_path}: see its source")]
    if "emoji" in str(source.manifest) or (source.manifest.parent / "LICENSES").is_dir():
        licences.append(bw.LICENCES["demo"])
    return {"model": cfg.name, "lugha_version": __version__, "source": source.origin, "description": cfg.description,
            "languages": list(data.pairs.languages), "manifest": str(source.manifest), "eval_split": split,
            "coverage": {r["lang"]: r for r in cov["by_lang"]},
            "data_rows": {lang: {"n_texts": int((data.pairs.langs == lang).sum()),
                                 "n_images": len({int(data.pairs.image_index[i]) for i in np.flatnonzero(data.pairs.langs == lang)})}
                          for lang in data.pairs.languages},
            "metrics": report["metrics"], "quantization": info_rows, "max_drop": opts.max_drop, "advisor": report["advisor"], "limitations": limitations, "licences": licences}


__all__ = ["export_run", "ExportOptions", "ExportResult", "FORMATS", "PRECISIONS"]
