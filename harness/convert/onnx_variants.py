"""ONNX fp16 and int8 variants of an fp32 ONNX model, plus the tools to find a working int8 recipe.

Each builder is a pure function: source path in, destination path out, and a small dict of facts that the model
pack records (recipe, input name/shape/layout, notes). Every output is validated (onnx.checker, an onnxruntime
session, finite outputs for one input) before the function returns; failures raise BuildError naming the file.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import version_converter
from onnxconverter_common import float16
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_static,
)
from onnxruntime.quantization.calibrate import create_calibrator

from harness.errors import BuildError

# Ops kept in fp32 by the fp16 converter, on top of onnxconverter-common's own list. ConstantOfShape: its `value`
# attribute stays fp32 while its consumers (BlazeFace's channel-padding Concat) turn fp16, so the model fails to load.
FP16_EXTRA_BLOCKED_OPS: tuple[str, ...] = ("ConstantOfShape",)

# DequantizeLinear gained the `axis` attribute (needed for per-channel weights) in opset 13.
MIN_QDQ_OPSET = 13

ACTIVATION_TYPES: dict[str, QuantType] = {"uint8": QuantType.QUInt8, "int8": QuantType.QInt8}
WEIGHT_TYPES: dict[str, QuantType] = {"int8": QuantType.QInt8, "uint8": QuantType.QUInt8}
# CalibrationMethod.Distribution is deliberately absent: it is meant for float8 and gives garbage int8 models.
CALIBRATION_METHODS: dict[str, CalibrationMethod] = {
    "minmax": CalibrationMethod.MinMax,
    "percentile": CalibrationMethod.Percentile,
    "entropy": CalibrationMethod.Entropy,
}


# ----------------------------------------------------------------------------------------------- model facts


def _dims(value_info: onnx.ValueInfoProto) -> list[int | str]:
    """Static dims as ints, symbolic ones by their name (or "?") so the pack records what the file says."""
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?")
            for d in value_info.type.tensor_type.shape.dim]


def guess_layout(shape: Sequence[int | str]) -> str:
    """NHWC / NCHW for a 4-D image input, judged by where the 1- or 3-channel axis sits (face models take grey or
    RGB images); "unknown" when neither or both axes could be channels."""
    if len(shape) != 4:
        return "unknown"
    last, second = shape[3] in (1, 3), shape[1] in (1, 3)
    if last and not second:
        return "NHWC"
    if second and not last:
        return "NCHW"
    return "unknown"


def _graph_inputs(model: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    """Real inputs: older exporters also list initializers as graph inputs."""
    initializers = {init.name for init in model.graph.initializer}
    return [i for i in model.graph.input if i.name not in initializers]


def describe_input(model: onnx.ModelProto) -> dict:
    """{"name", "shape", "layout"} of the model's single image input."""
    inputs = _graph_inputs(model)
    shape = _dims(inputs[0])
    return {"name": inputs[0].name, "shape": shape, "layout": guess_layout(shape)}


def _opset(model: onnx.ModelProto) -> int:
    return next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))


def _load(src: str | Path) -> onnx.ModelProto:
    try:
        return onnx.load(str(src))
    except Exception as exc:  # protobuf raises DecodeError, OSError, ... : all mean "not a readable model"
        raise BuildError(f"{src}: cannot read ONNX model: {exc}") from exc


def _name_unnamed_nodes(model: onnx.ModelProto) -> int:
    """Give every unnamed node a unique name: the fp16 converter and node exclusions address nodes by name."""
    taken = {n.name for n in model.graph.node if n.name}
    count = 0
    for i, node in enumerate(model.graph.node):
        if not node.name:
            name = f"{node.op_type}_{i}"
            while name in taken:
                name += "_"
            node.name = name
            taken.add(name)
            count += 1
    return count


# ------------------------------------------------------------------------------------------------ validation


def validate_onnx(path: str | Path, sample: np.ndarray | None = None) -> list[np.ndarray]:
    """Check the file with onnx.checker, open an onnxruntime CPU session and run one input.

    Returns the outputs; raises BuildError("<path>: <what failed>") on any failure or non-finite output.
    Without a sample, a seeded uniform [-1, 1] tensor of the input shape (symbolic dims = 1) is used.
    """
    try:
        onnx.checker.check_model(str(path))
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as exc:  # checker / session errors are many types; all mean "does not load"
        raise BuildError(f"{path}: does not load: {exc}") from exc
    inp = session.get_inputs()[0]
    if sample is None:
        shape = [d if isinstance(d, int) and d > 0 else 1 for d in inp.shape]
        sample = np.random.default_rng(0).uniform(-1.0, 1.0, shape).astype(np.float32)
    try:
        outputs = session.run(None, {inp.name: sample})
    except Exception as exc:
        raise BuildError(f"{path}: inference failed: {exc}") from exc
    for meta, out in zip(session.get_outputs(), outputs):
        if not np.all(np.isfinite(out)):
            raise BuildError(f"{path}: output '{meta.name}' has non-finite values")
    return outputs


# ------------------------------------------------------------------------------------------------------ fp16


def to_fp16(src: str | Path, dst: str | Path) -> dict:
    """fp16 weights and activations (onnxconverter-common), float32 model inputs/outputs kept (keep_io_types)."""
    model = _load(src)
    named = _name_unnamed_nodes(model)
    blocked = sorted(set(float16.DEFAULT_OP_BLOCK_LIST) | set(FP16_EXTRA_BLOCKED_OPS))
    try:
        converted = float16.convert_float_to_float16(model, keep_io_types=True, op_block_list=blocked)
        Path(dst).parent.mkdir(parents=True, exist_ok=True)
        onnx.save(converted, str(dst))
    except Exception as exc:
        raise BuildError(f"{dst}: fp16 conversion of {src} failed: {exc}") from exc
    validate_onnx(dst)
    kept = sorted({n.op_type for n in model.graph.node} & set(blocked))
    notes = ["float32 model IO (keep_io_types=True): casts at the edges",
             "x86 CPU onnxruntime runs fp16 graphs with fp32 kernels: expect no speed-up there"]
    if named:
        notes.append(f"named {named} unnamed nodes")
    return {
        "recipe": "onnxconverter-common float16, keep_io_types=True",
        "input": describe_input(converted),
        "io_dtype": "float32",
        "kept_fp32_ops": kept,
        "notes": notes,
    }


# ------------------------------------------------------------------------------------------------------ int8


class ListDataReader(CalibrationDataReader):
    """Feeds a list of preprocessed arrays, one per calibration step, to onnxruntime's calibrators."""

    def __init__(self, input_name: str, arrays: Iterable[np.ndarray]):
        self._input_name = input_name
        self._arrays = [np.ascontiguousarray(a, dtype=np.float32) for a in arrays]
        self._pos = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self._pos >= len(self._arrays):
            return None
        self._pos += 1
        return {self._input_name: self._arrays[self._pos - 1]}

    def rewind(self) -> None:
        self._pos = 0


def _check_calib(src: str | Path, inp: dict, calib: Sequence[np.ndarray]) -> None:
    if not calib:
        raise BuildError(f"{src}: int8 needs calibration inputs; none given")
    for i, arr in enumerate(calib):
        ok = len(arr.shape) == len(inp["shape"]) and all(
            not isinstance(want, int) or want <= 0 or want == got for want, got in zip(inp["shape"], arr.shape))
        if not ok:
            raise BuildError(f"{src}: calibration input {i} has shape {list(arr.shape)}; "
                             f"model input '{inp['name']}' wants {inp['shape']}")


def _prepare_for_qdq(model: onnx.ModelProto) -> tuple[onnx.ModelProto, list[str]]:
    """Opset >= 13 and every node named. Returns the model and notes on what was changed."""
    notes = []
    opset = _opset(model)
    if opset < MIN_QDQ_OPSET:
        model = version_converter.convert_version(model, MIN_QDQ_OPSET)
        notes.append(f"opset upgraded {opset} -> {MIN_QDQ_OPSET} (per-channel DequantizeLinear needs axis)")
    named = _name_unnamed_nodes(model)
    if named:
        notes.append(f"named {named} unnamed nodes")
    return model, notes


def to_int8(
    src: str | Path,
    dst: str | Path,
    calib: Sequence[np.ndarray],
    *,
    activation: str = "uint8",
    weight: str = "int8",
    reduce_range: bool = False,
    per_channel: bool = True,
    method: str = "minmax",
    exclude_ops: Sequence[str] = (),
    exclude_nodes: Sequence[str] = (),
) -> dict:
    """Static 8-bit QDQ (onnxruntime quantize_static): `weight` weights, `activation` activations, calibrated on
    `calib`.

    uint8 activations are the default: U8S8 is onnxruntime's fast path on x86, while S8S8 ran slower than fp32
    here. Nodes of `exclude_ops` types and the named `exclude_nodes` stay float (mixed precision).

    Portability across x86 CPUs (onnxruntime docs, "Quantize ONNX models": "Data type selection" and "When to use
    reduce-range and per-channel quantization", https://onnxruntime.ai/docs/performance/model-optimizations/
    quantization.html): on AVX2 and AVX512 CPUs without VNNI, U8S8 kernels multiply with VPMADDUBSW, whose int16
    pair sums saturate, so one model gives different outputs on a VNNI and a non-VNNI CPU. The documented remedies
    are `reduce_range=True` (weights in [-64, 64]: a pair sum of 2 * 255 * 64 fits int16) or U8U8
    (`weight="uint8"`, another kernel family); see also onnxruntime PR #12088 and oneDNN's
    "Nuances of int8 computations". The recipe is recorded in the pack.
    """
    if activation not in ACTIVATION_TYPES:
        raise BuildError(f"{dst}: activation '{activation}' not one of {sorted(ACTIVATION_TYPES)}")
    if weight not in WEIGHT_TYPES:
        raise BuildError(f"{dst}: weight '{weight}' not one of {sorted(WEIGHT_TYPES)}")
    if method not in CALIBRATION_METHODS:
        raise BuildError(f"{dst}: calibration method '{method}' not one of {sorted(CALIBRATION_METHODS)}")
    model, notes = _prepare_for_qdq(_load(src))
    inp = describe_input(model)
    _check_calib(src, inp, calib)
    all_names = {n.name for n in model.graph.node}
    unknown = sorted(set(exclude_nodes) - all_names)
    if unknown:
        raise BuildError(f"{src}: excluded nodes not in the graph: {', '.join(unknown)}")
    # One exclusion mechanism: op types become the node names they cover.
    excluded = sorted(set(exclude_nodes) | {n.name for n in model.graph.node if n.op_type in set(exclude_ops)})
    Path(dst).parent.mkdir(parents=True, exist_ok=True)
    try:
        with tempfile.TemporaryDirectory(prefix="bench-int8-") as tmp:
            prepared = Path(tmp) / "prepared.onnx"
            onnx.save(model, str(prepared))
            quantize_static(
                str(prepared), str(dst), ListDataReader(inp["name"], calib),
                quant_format=QuantFormat.QDQ,
                per_channel=per_channel,
                activation_type=ACTIVATION_TYPES[activation],
                weight_type=WEIGHT_TYPES[weight],
                reduce_range=reduce_range,
                nodes_to_exclude=excluded,
                calibrate_method=CALIBRATION_METHODS[method],
            )
    except Exception as exc:
        raise BuildError(f"{dst}: int8 quantization of {src} failed: {exc}") from exc
    validate_onnx(dst, np.asarray(calib[0], dtype=np.float32))
    if excluded:
        notes.append(f"{len(excluded)} nodes kept in float (mixed precision)")
    return {
        "recipe": (f"onnxruntime {ort.__version__} quantize_static QDQ, weights {weight}"
                   f"{' (7-bit range)' if reduce_range else ''} {'per-channel' if per_channel else 'per-tensor'}, "
                   f"activations {activation}, {method} calibration on {len(calib)} inputs"),
        "input": inp,
        "io_dtype": "float32",
        "activation": activation,
        "weights": weight,
        "reduce_range": reduce_range,
        "per_channel": per_channel,
        "calibration": {"method": method, "n": len(calib)},
        "excluded_nodes": excluded,
        "notes": notes,
    }


# ------------------------------------------------------------------------------- finding a working recipe


def activation_ranges(src: str | Path, calib: Sequence[np.ndarray]) -> dict[str, tuple[float, float]]:
    """Calibrated (min, max) of every float tensor, by tensor name, from onnxruntime's own MinMax calibrator."""
    model, _ = _prepare_for_qdq(_load(src))
    inp = describe_input(model)
    _check_calib(src, inp, calib)
    with tempfile.TemporaryDirectory(prefix="bench-ranges-") as tmp:
        prepared, augmented = Path(tmp) / "prepared.onnx", Path(tmp) / "augmented.onnx"
        onnx.save(model, str(prepared))
        calibrator = create_calibrator(prepared, augmented_model_path=str(augmented),
                                       calibrate_method=CalibrationMethod.MinMax)
        calibrator.collect_data(ListDataReader(inp["name"], calib))
        data = calibrator.compute_data()
    return {name: (float(np.min(td.range_value[0])), float(np.max(td.range_value[1])))
            for name, td in data.items()}


def to_int8_recipe(src: str | Path, dst: str | Path, calib: Sequence[np.ndarray], **options) -> dict:
    """to_int8 from a manifest's recipe options (harness.buildmethods): `calib_method` is quantize_static's
    calibration method, and `float_outliers_above` keeps float every node touching a tensor whose calibrated range is
    wider than it (mixed precision: BlazeFace's heads, blazeface_int8_recipe)."""
    opts = dict(options)
    if "calib_method" in opts:
        opts["method"] = opts.pop("calib_method")
    if "float_outliers_above" in opts:
        limit = float(opts.pop("float_outliers_above"))
        opts["exclude_nodes"] = list(opts.get("exclude_nodes", [])) + find_outlier_nodes(src, calib, limit)
    return to_int8(src, dst, calib, **opts)


def find_outlier_nodes(src: str | Path, calib: Sequence[np.ndarray], max_range: float) -> list[str]:
    """Names of nodes with an input or output whose calibrated range (max - min) exceeds `max_range`.

    Such a tensor, squeezed into 256 int8 steps, loses everything below range/255; keeping its producer and
    consumers in float confines the damage. Returned in graph order.
    """
    ranges = activation_ranges(src, calib)
    wide = {name for name, (lo, hi) in ranges.items() if hi - lo > max_range}
    model, _ = _prepare_for_qdq(_load(src))
    return [n.name for n in model.graph.node if wide & (set(n.input) | set(n.output))]


# Ops whose QDQ pairs cost BlazeFace most (its residual Adds, channel-padding Concats and MaxPools carry the wide
# activations between blocks): kept float in its recipe. Measured (calibrated on 40 FairFace images, 10 London test
# images, fp32 vs int8 at the best anchor): regressor max abs diff 3.2 px with them quantized, 1.1 px in float.
BLAZEFACE_FLOAT_OPS: tuple[str, ...] = ("Add", "Concat", "MaxPool")


def blazeface_int8_recipe(src: str | Path, calib: Sequence[np.ndarray], max_range: float = 256.0) -> dict:
    """to_int8 keyword arguments that give a usable int8 BlazeFace (mixed precision).

    Plain static QDQ breaks BlazeFace: its score/regressor heads emit logits and offsets of hundreds to thousands
    for anchors far from any face, so one int8 step is several units and keypoints collapse (6-7 px off at the best
    anchor). Keeping in float every node that touches a tensor with a calibrated range over `max_range` (an int8
    step over 1, i.e. a pixel at the regressor heads) -- the heads and the last 8x8 block -- plus the
    BLAZEFACE_FLOAT_OPS, leaves about 80% of the weight bytes in int8 at ~1 px. A smaller max_range buys accuracy
    with float weights (64: ~0.6 px, but only ~10% of the weight bytes int8).
    """
    return {
        "activation": "uint8",
        "method": "minmax",
        "per_channel": True,
        "exclude_ops": BLAZEFACE_FLOAT_OPS,
        "exclude_nodes": find_outlier_nodes(src, calib, max_range),
    }
