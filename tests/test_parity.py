import numpy as np
import pytest

from lugha.manifest import TensorSpec, Tolerance
from lugha.parity import (DtypeMismatchError, OutputNameError, ShapeMismatchError, ToleranceError,
                          assert_parity, check_tensors, compare_outputs)

TOL = Tolerance(max_abs=1e-3, min_cosine=0.999, int8_steps=1)


def test_equal_outputs_pass_and_report_zero():
    x = np.random.default_rng(0).normal(size=(4, 16)).astype(np.float32)
    (r,) = assert_parity({"emb": x}, {"emb": x.copy()}, TOL, "image_encoder")
    assert r.ok and r.max_abs == 0.0 and r.min_cosine == pytest.approx(1.0)


def test_value_drift_names_graph_and_output():
    x = np.ones((2, 8), np.float32)
    y = x.copy()
    y[1, 3] += 0.01
    with pytest.raises(ToleranceError, match=r"text_encoder:emb: max abs diff 0\.01"):
        assert_parity({"emb": x}, {"emb": y}, TOL, "text_encoder")


def test_cosine_is_checked_per_row():
    x = np.eye(3, dtype=np.float32)
    y = x.copy()
    y[2] = [0.0, 0.0, -1.0]  # one row flipped: max_abs 2, cosine -1 for that row only
    res = compare_outputs({"e": x}, {"e": y}, Tolerance(max_abs=10.0, min_cosine=0.9), "g")
    assert res[0].min_cosine == pytest.approx(-1.0) and not res[0].ok


def test_int8_outputs_compare_in_steps():
    x = np.array([[1, 2, 3]], np.int8)
    assert assert_parity({"q": x}, {"q": x + np.int8(1)}, TOL)[0].max_steps == 1
    with pytest.raises(ToleranceError, match="2 quantisation steps"):
        assert_parity({"q": x}, {"q": x + np.int8(2)}, TOL)


def test_nan_fails():
    x = np.zeros((1, 4), np.float32)
    y = x.copy()
    y[0, 0] = np.nan
    assert not compare_outputs({"e": x}, {"e": y}, TOL)[0].ok


def test_names_shapes_dtypes_are_typed_errors():
    x = np.zeros((2, 4), np.float32)
    with pytest.raises(OutputNameError):
        compare_outputs({"a": x}, {"b": x}, TOL)
    with pytest.raises(ShapeMismatchError):
        compare_outputs({"a": x}, {"a": x[:1]}, TOL)
    with pytest.raises(DtypeMismatchError):
        compare_outputs({"a": x}, {"a": x.astype(np.float16)}, TOL)


def test_check_tensors_resolves_dynamic_dims_consistently():
    specs = [TensorSpec("input_ids", "int64", ("batch", "seq")), TensorSpec("attention_mask", "int64", ("batch", "seq"))]
    ids = np.zeros((2, 5), np.int64)
    assert check_tensors({"input_ids": ids, "attention_mask": ids}, specs, "text_encoder") == {"batch": 2, "seq": 5}
    with pytest.raises(ShapeMismatchError, match="seq"):
        check_tensors({"input_ids": ids, "attention_mask": ids[:, :4]}, specs, "text_encoder")
    with pytest.raises(DtypeMismatchError):
        check_tensors({"input_ids": ids.astype(np.int32), "attention_mask": ids}, specs, "text_encoder")
    with pytest.raises(ShapeMismatchError):
        check_tensors({"pixels": np.zeros((1, 3, 8, 8), np.float32)},
                      [TensorSpec("pixels", "float32", ("batch", 3, 16, 16))], "image_encoder")


def test_all_zero_output_against_real_one_has_cosine_zero():
    """A backend that silently returns zeros (seen with tflite-runtime on int8 text graphs) must fail."""
    x = np.ones((2, 4), np.float32)
    res = compare_outputs({"e": x}, {"e": np.zeros_like(x)}, Tolerance(max_abs=10.0, min_cosine=0.5), "g")
    assert res[0].min_cosine == 0.0 and not res[0].ok
    both = compare_outputs({"e": np.zeros_like(x)}, {"e": np.zeros_like(x)}, TOL, "g")
    assert both[0].min_cosine == 1.0 and both[0].ok
