"""Quantization advisor: before int8, find the layers known to quantize badly and say what to do.

Known trouble (Google's EfficientNet-Lite notes, the TFLite/ORT quantization guides):

* SiLU (swish) + squeeze-excite, as in EfficientNet-B0: SiLU's long negative tail and the SE branch's
  per-image channel gates (a sigmoid of a global average) do not fit one 8-bit activation range. Lite0
  drops SE and uses ReLU6 for exactly this reason.
* L2 normalisation: a division by a norm computed from the same tensor; int8 error in the norm
  multiplies into every element.
* Softmax in a classification head: its output spans orders of magnitude in [0, 1].

The advisor reads the torch modules (what the model is) and the exported ONNX graph (which node names
to keep float), returns findings with advice, and records what the pipeline did about each.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path

POLICIES = ("keep-float", "w8a16", "as-is")


@dataclass
class Finding:
    graph: str
    kind: str  # "silu", "squeeze_excite", "l2_norm", "softmax_head"
    count: int
    advice: str
    action: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class QuantPlan:
    """What the int8 step of one graph does: nodes left in float and the activation width."""

    graph: str
    nodes_to_exclude: list[str] = field(default_factory=list)
    activations: str = "uint8"
    findings: list[Finding] = field(default_factory=list)


def scan_modules(model) -> list[Finding]:
    """Findings from the torch modules of the exported parts (towers, projections, the fusion head)."""
    from lugha.export.specs import SPECS, fusion_head_of

    counts: dict[tuple[str, str], int] = defaultdict(int)
    parts = {"image_encoder": (model.image_tower, model.image_proj), "text_encoder": (model.text_tower, model.text_proj)}
    for graph, modules in parts.items():
        for root in modules:
            for mod in root.modules():
                cls = type(mod).__name__
                if cls in ("SiLU", "Swish"):
                    counts[graph, "silu"] += 1
                elif "SqueezeExcite" in cls or cls in ("SEModule", "SqueezeExcitation"):
                    counts[graph, "squeeze_excite"] += 1
                elif cls == "Softmax" and graph != "text_encoder":
                    counts[graph, "softmax_head"] += 1
    findings = [Finding(g, k, n, ADVICE[k]) for (g, k), n in sorted(counts.items())]
    head = fusion_head_of(model)
    if head is not None:
        kept = SPECS["fusion_head"].quant_scheme == "none"
        for kind, n in sorted(scan_head(head).items()):
            findings.append(Finding("fusion_head", kind, n, ADVICE[kind],
                                    "the fusion_head graph stays float in every precision" if kept else ""))
    return findings


# Functional ops inside a head (heads call F.normalize / softmax, not nn.Softmax modules, so a module
# walk cannot see them): what each counts as.
_HEAD_OPS = {"normalize": "l2_norm", "norm": "l2_norm", "vector_norm": "l2_norm", "softmax": "softmax_head",
             "log_softmax": "softmax_head", "_softmax": "softmax_head"}


def scan_head(head) -> dict[str, int]:
    """{"l2_norm": n, "softmax_head": n}: the normalisations and softmaxes one forward of ``head`` calls,
    recorded by running it (whatever its kind) on a small zero batch under a torch function mode."""
    import torch
    from torch.overrides import TorchFunctionMode

    counts: dict[str, int] = defaultdict(int)

    class Record(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            kind = _HEAD_OPS.get(getattr(func, "__name__", ""))
            if kind:
                counts[kind] += 1
            return func(*args, **(kwargs or {}))

    was_training = head.training
    head.eval()
    try:
        with torch.no_grad(), Record():
            head(*_head_sample(head))
    finally:
        head.train(was_training)
    return dict(counts)


def _head_sample(head) -> tuple:
    import torch

    dim = int(head.dim)
    if getattr(head, "input_kind", "embeds") == "tokens":
        return (torch.zeros(2, head.num_patches, dim), torch.zeros(2, 3, dim), torch.ones(2, 3, dtype=torch.int64))
    return torch.zeros(2, dim), torch.zeros(2, dim)


ADVICE = {
    "silu": "SiLU activations: their negative tail shares one 8-bit range with large positives; prefer "
            "an int8-friendly tower (EfficientNet-Lite0: ReLU6, no SE), or fp16, or w8a16",
    "squeeze_excite": "squeeze-excite gates (sigmoid of a global mean) quantize badly: keep them in float "
                      "(--int8-policy keep-float), or use w8a16 / fp16, or the Lite0 tower",
    "l2_norm": "L2 normalisation inside a graph: keep it float (the bundle normalises in host code; heads "
               "that normalise stay float)",
    "softmax_head": "softmax in a head: keep it float, export logits and let host code apply softmax",
}


def _consumers(graph) -> dict[str, list]:
    out: dict[str, list] = defaultdict(list)
    for node in graph.node:
        for name in node.input:
            out[name].append(node)
    return out


def scan_onnx(path: str | Path, graph_name: str) -> tuple[list[Finding], list[str]]:
    """(findings, names of the nodes that should stay float) in an exported fp32 graph.

    Squeeze-excite is found by shape, not by name, so both exporters' graphs work: a ``Mul`` whose
    gate is a ``Sigmoid`` reached from a spatial ``ReduceMean`` of the same feature map within a few
    nodes. SiLU is ``x * Sigmoid(x)``. L2 norms are ``LpNormalization``/``ReduceL2`` or a ``Div`` by a
    ``Sqrt``; softmax is ``Softmax``.
    """
    import onnx

    g = onnx.load(str(path), load_external_data=False).graph
    producer = {o: n for n in g.node for o in n.output}
    silu, se_nodes, se_blocks, l2, soft = 0, set(), 0, [], []
    for node in g.node:
        if node.op_type == "Mul" and len(node.input) == 2:
            a, b = node.input
            for x, gate in ((a, b), (b, a)):
                sig = producer.get(gate)
                if sig is None or sig.op_type != "Sigmoid":
                    continue
                if sig.input[0] == x:
                    silu += 1
                    break
                path_nodes = _walk_back_to(sig, producer, "ReduceMean", limit=6)
                if path_nodes:
                    se_blocks += 1
                    se_nodes.update(n.name for n in path_nodes + [node])
                    break
        elif node.op_type in ("LpNormalization", "ReduceL2") or (
                node.op_type == "Div" and getattr(producer.get(node.input[1]), "op_type", "") == "Sqrt"):
            l2.append(node.name)
        elif node.op_type == "Softmax" and graph_name != "text_encoder":
            soft.append(node.name)
    findings = []
    if silu:
        findings.append(Finding(graph_name, "silu", silu, ADVICE["silu"]))
    if se_blocks:
        findings.append(Finding(graph_name, "squeeze_excite", se_blocks, ADVICE["squeeze_excite"]))
    if l2:
        findings.append(Finding(graph_name, "l2_norm", len(l2), ADVICE["l2_norm"]))
    if soft:
        findings.append(Finding(graph_name, "softmax_head", len(soft), ADVICE["softmax_head"]))
    return findings, sorted(se_nodes) + l2 + soft


def _walk_back_to(start, producer: dict, op_type: str, limit: int) -> list:
    """Nodes from ``start`` back to the nearest ``op_type`` through first inputs (empty if none)."""
    chain, node = [start], start
    for _ in range(limit):
        node = next((producer[i] for i in node.input if i in producer), None)
        if node is None:
            return []
        chain.append(node)
        if node.op_type == op_type:
            return chain
    return []


def plan_int8(path: str | Path, graph_name: str, policy: str = "keep-float") -> QuantPlan:
    """The int8 plan for one exported graph under ``policy`` (see ``POLICIES``)."""
    if policy not in POLICIES:
        from lugha.errors import ConfigError

        raise ConfigError("--int8-policy", f"expected one of {POLICIES}, got {policy!r}")
    findings, risky = scan_onnx(path, graph_name)
    plan = QuantPlan(graph_name, findings=findings)
    if not findings:
        return plan
    if policy == "keep-float" and risky:
        plan.nodes_to_exclude = risky
        action = f"kept {len(risky)} flagged nodes in float (SE gates, norms, head softmax); the rest is int8"
    elif policy == "w8a16":
        plan.activations = "int16"
        action = "int8 weights with 16-bit activations (w8a16)"
    else:
        action = "quantized as-is (--int8-policy as-is)"
    for f in findings:
        f.action = action if f.kind != "silu" or policy != "keep-float" else (
            "SiLU stays int8 (keeping every SiLU float would undo int8); check the parity/accuracy gates, "
            "and prefer Lite0 or fp16 if they fail")
    return plan


def format_findings(findings: list[Finding]) -> list[str]:
    return [f"{f.graph}: {f.count} x {f.kind}: {f.advice}" + (f" -> done: {f.action}" if f.action else "")
            for f in findings]


__all__ = ["scan_modules", "scan_head", "scan_onnx", "plan_int8", "format_findings", "Finding", "QuantPlan", "POLICIES"]
