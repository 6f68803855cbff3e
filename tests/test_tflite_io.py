"""lugha.runtimes.tflite_io (the TFLite I/O shared by the exporter's gates and the LiteRT runtime) over a stand-in
interpreter with the Interpreter API's shape: signatures, tensor details, int8 boundaries."""
from __future__ import annotations

import numpy as np
import pytest

from lugha.errors import BundleError
from lugha.runtimes.tflite_io import SignatureSet


def _detail(shape, dtype=np.float32, quant=(0.0, 0), index=0):
    return {"shape": np.array(shape), "dtype": dtype, "quantization": quant, "index": index}


class _Runner:
    """A signature runner computing ``fn`` on the raw (already quantized) feeds; records what it got."""

    def __init__(self, ins, outs, fn):
        self.ins, self.outs, self.fn, self.calls = ins, outs, fn, []

    def get_input_details(self):
        return self.ins

    def get_output_details(self):
        return self.outs

    def __call__(self, **feeds):
        self.calls.append(feeds)
        return self.fn(**feeds)


class _Interpreter:
    def __init__(self, runners):
        self.runners = runners

    def get_signature_list(self):
        return {k: {} for k in self.runners}

    def get_signature_runner(self, key):
        return self.runners[key]


def test_int8_boundary_quantized_in_and_dequantized_out_with_each_tensors_params():
    # the graph doubles its int8 input's real value: q_out = (2 * (q_in - zi) * si) / so + zo
    si, zi, so, zo = 0.05, -10, 0.1, 5

    def fn(args_0):
        real = (args_0.astype(np.float32) - zi) * si
        return {"output_0": np.clip(np.round(2 * real / so + zo), -128, 127).astype(np.int8)}

    runner = _Runner({"args_0": _detail((1, 3), np.int8, (si, zi))},
                     {"output_0": _detail((1, 3), np.int8, (so, zo))}, fn)
    sigs = SignatureSet(_Interpreter({"serving_default": runner}), ["pixel_values"], ["image_embeds"], "img.tflite")
    x = np.array([[0.0, 1.0, -0.5], [2.0, 100.0, 0.25]], np.float32)
    out = sigs.run({"pixel_values": x})["image_embeds"]
    assert out.dtype == np.float32 and out.shape == (2, 3) and len(runner.calls) == 2  # batch-1: row by row
    assert runner.calls[0]["args_0"].dtype == np.int8
    assert runner.calls[1]["args_0"].tolist() == [[30, 127, -5]]  # 100.0 clipped at the int8 top
    q_in = np.clip(np.round(x / si + zi), -128, 127)
    q_out = np.clip(np.round(2 * (q_in - zi) * si / so + zo), -128, 127)
    np.testing.assert_allclose(out, (q_out - zo) * so, atol=1e-6)  # dequantized with the output's own params
    assert sigs.boundary_quantization() == {
        "pixel_values": {"kind": "input", "dtype": "int8", "scale": si, "zero_point": zi},
        "image_embeds": {"kind": "output", "dtype": "int8", "scale": so, "zero_point": zo}}


def test_text_rows_pick_the_shortest_signature_and_pad_with_the_fill_value():
    def make(n):
        ins = {"input_ids": _detail((1, n), np.int32), "attention_mask": _detail((1, n), np.int32)}
        def fn(input_ids, attention_mask):
            return {"text_embeds": input_ids.sum(1, keepdims=True).astype(np.float32)}

        return _Runner(ins, {"text_embeds": _detail((1, 1))}, fn)

    runners = {"seq_8": make(8), "seq_4": make(4)}
    sigs = SignatureSet(_Interpreter(runners), ["input_ids", "attention_mask"], ["text_embeds"], "txt.tflite",
                        fill={"input_ids": 1})
    assert sigs.sequence_lengths == [4, 8]
    ids = np.array([[5, 6, 0, 0, 0, 0], [5, 6, 7, 8, 9, 0]], np.int64)
    mask = (ids > 0).astype(np.int64)
    out = sigs.run({"input_ids": ids, "attention_mask": mask})["text_embeds"]
    assert [len(r.calls) for r in (runners["seq_4"], runners["seq_8"])] == [1, 1]
    assert runners["seq_4"].calls[0]["input_ids"].tolist() == [[5, 6, 0, 0]]  # trailing padding cut
    assert runners["seq_8"].calls[0]["input_ids"].tolist() == [[5, 6, 7, 8, 9, 0, 1, 1]]  # padded with fill
    assert runners["seq_8"].calls[0]["input_ids"].dtype == np.int32  # int64 ids cast to the graph's int32
    assert out[:, 0].tolist() == [11.0, 37.0]
    too_long = np.ones((1, 9), np.int64)
    with pytest.raises(BundleError, match="9 tokens do not fit the longest signature"):
        sigs.run({"input_ids": too_long, "attention_mask": too_long})


def test_inputs_that_cannot_be_matched_or_shaped_name_the_file_and_input():
    runner = _Runner({"a": _detail((1, 2)), "b": _detail((1, 2))}, {"y": _detail((1, 1))}, lambda **_: {})
    with pytest.raises(BundleError, match="odd.tflite: signature inputs"):
        SignatureSet(_Interpreter({"serving_default": runner}), ["x"], ["y"], "odd.tflite")
    one = _Runner({"x": _detail((1, 2))}, {"y": _detail((1, 1))}, lambda x: {"y": x[:, :1]})
    sigs = SignatureSet(_Interpreter({"serving_default": one}), ["x"], ["y"], "g.tflite", "image_encoder")
    with pytest.raises(BundleError, match=r"image_encoder: input x has shape \(1, 3\)"):
        sigs.run({"x": np.zeros((1, 3), np.float32)})
