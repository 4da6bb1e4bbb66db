"""TFLite fp16 and int8 variants with ai-edge-quantizer (no tensorflow).

Before quantizing, the source flatbuffer is normalised so the quantizer sees what the runtime sees:
- old files (MobileFaceNet.tflite) keep op codes in `deprecated_builtin_code` with `builtin_code` = 0 (ADD); the
  quantizer reads only `builtin_code`, takes every op for ADD and silently quantizes nothing (fp16) or the wrong
  things (int8). We copy the real code into `builtin_code`.
- MediaPipe files (BlazeFace short-range) store fp16 weights behind DEQUANTIZE ops; the quantizer only quantizes
  constant weights, so we fold those DEQUANTIZEs into fp32 constants first.
- a SignatureDef is added when missing (tflite_signature.ensure_signature).
- for int8, a standalone RELU is fused into the ADD/CONV that feeds it (exact in float): the quantizer keeps it as
  its own int8 op, XNNPACK delegates no standalone int8 RELU, and BlazeFace's 17 of them split the graph into 18
  delegate partitions (3.7 ms against 0.46 ms fused, 1 thread); the extra requantization also costs keypoint accuracy.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from ai_edge_litert import schema_py_generated as schema_fb
from ai_edge_litert.interpreter import Interpreter
from ai_edge_litert.tools import flatbuffer_utils

from harness.convert.onnx_variants import guess_layout
from harness.convert.tflite_signature import ensure_signature
from harness.errors import BuildError

SIGNATURE_KEY = "serving_default"
_OPS = schema_fb.BuiltinOperator
_TYPES = schema_fb.TensorType


# ------------------------------------------------------------------------------------------ flatbuffer fixes


def _read(src: str | Path) -> schema_fb.ModelT:
    try:
        return flatbuffer_utils.read_model_from_bytearray(bytearray(Path(src).read_bytes()))
    except Exception as exc:  # corrupt flatbuffers raise struct/index/value errors
        raise BuildError(f"{src}: cannot read TFLite model: {exc}") from exc


def _normalize_opcodes(model: schema_fb.ModelT) -> int:
    """builtin_code := the real op code (see module doc). Returns how many op codes were fixed."""
    fixed = 0
    for opcode in model.operatorCodes:
        real = flatbuffer_utils.get_builtin_code_from_operator_code(opcode)
        if opcode.builtinCode != real:
            opcode.builtinCode = real
            fixed += 1
    return fixed


def _fold_fp16_weights(model: schema_fb.ModelT) -> int:
    """Replace DEQUANTIZE(fp16 constant) ops by fp32 constants and drop the orphaned fp16 tensors (the quantizer's
    calibrator reads every tensor of the graph and fails on one that nothing computes). Returns how many folded."""
    dequantize = {i for i, oc in enumerate(model.operatorCodes)
                  if flatbuffer_utils.get_builtin_code_from_operator_code(oc) == _OPS.DEQUANTIZE}
    folded = 0
    for graph_index, graph in enumerate(model.subgraphs):
        kept, orphans = [], set()
        for op in graph.operators:
            src = graph.tensors[op.inputs[0]] if op.opcodeIndex in dequantize else None
            data = model.buffers[src.buffer].data if src is not None else None
            if src is None or src.type != _TYPES.FLOAT16 or data is None or len(data) == 0:
                kept.append(op)
                continue
            buffer = schema_fb.BufferT()
            buffer.data = np.frombuffer(bytes(data), dtype=np.float16).astype(np.float32).view(np.uint8)
            model.buffers.append(buffer)
            graph.tensors[op.outputs[0]].buffer = len(model.buffers) - 1
            model.buffers[src.buffer].data = None  # the fp16 copy is no longer read by anything
            orphans.add(op.inputs[0])
            folded += 1
        graph.operators = kept
        if orphans:
            _drop_tensors(model, graph_index, orphans)
    return folded


_FUSABLE = (_OPS.ADD, _OPS.CONV_2D, _OPS.DEPTHWISE_CONV_2D)


def _fuse_relu(model: schema_fb.ModelT) -> int:
    """RELU(x) with x = ADD/CONV_2D/DEPTHWISE_CONV_2D (no fused activation, x read by nothing else) becomes that
    op with a fused RELU writing the RELU's output (module doc). Returns how many were fused."""
    def code(op) -> int:
        return flatbuffer_utils.get_builtin_code_from_operator_code(model.operatorCodes[op.opcodeIndex])

    fused = 0
    for graph_index, graph in enumerate(model.subgraphs):
        readers = Counter(i for op in graph.operators for i in op.inputs)
        producer = {out: op for op in graph.operators for out in op.outputs}
        kept, orphans = [], set()
        for op in graph.operators:
            x = op.inputs[0] if code(op) == _OPS.RELU else None
            src = producer.get(x)
            if (src is not None and code(src) in _FUSABLE and src.builtinOptions is not None
                    and src.builtinOptions.fusedActivationFunction == schema_fb.ActivationFunctionType.NONE
                    and readers[x] == 1 and x not in graph.outputs):
                src.builtinOptions.fusedActivationFunction = schema_fb.ActivationFunctionType.RELU
                src.outputs = [op.outputs[0]]
                orphans.add(x)
                fused += 1
                continue
            kept.append(op)
        graph.operators = kept
        if orphans:
            _drop_tensors(model, graph_index, orphans)
    return fused


def _drop_tensors(model: schema_fb.ModelT, graph_index: int, drop: set[int]) -> None:
    """Remove tensors nothing refers to any more, renumbering every reference (ops, graph IO, signatures)."""
    graph = model.subgraphs[graph_index]
    new_index = {old: new for new, old in enumerate(i for i in range(len(graph.tensors)) if i not in drop)}

    def remap(indices):
        return [new_index[i] if i >= 0 else i for i in indices]  # -1 marks an omitted optional input

    graph.tensors = [t for i, t in enumerate(graph.tensors) if i not in drop]
    for op in graph.operators:
        op.inputs, op.outputs = remap(op.inputs), remap(op.outputs)
        if op.intermediates is not None:
            op.intermediates = remap(op.intermediates)
    graph.inputs, graph.outputs = remap(graph.inputs), remap(graph.outputs)
    for signature in model.signatureDefs or []:
        if signature.subgraphIndex == graph_index:
            for tensor_map in (signature.inputs or []) + (signature.outputs or []):
                tensor_map.tensorIndex = new_index[tensor_map.tensorIndex]


def prepare_for_quantizer(src: str | Path, *, fuse_relu: bool = False) -> tuple[bytes, list[str]]:
    """The source as bytes the quantizer handles correctly (module doc), and notes on what was changed.
    fuse_relu: fold standalone RELUs into their producers (for int8, module doc)."""
    model = _read(src)
    notes = []
    if fixed := _normalize_opcodes(model):
        notes.append(f"{fixed} op codes copied from deprecated_builtin_code")
    if folded := _fold_fp16_weights(model):
        notes.append(f"{folded} fp16 weight DEQUANTIZE ops folded to fp32 constants before quantizing")
    if fuse_relu and (fused := _fuse_relu(model)):
        notes.append(f"{fused} standalone RELU ops fused into the ADD/CONV feeding them (XNNPACK delegates no "
                     f"standalone int8 RELU)")
    had_signature = bool(model.signatureDefs)
    data = ensure_signature(bytes(flatbuffer_utils.convert_object_to_bytearray(model)), SIGNATURE_KEY)
    if not had_signature:
        notes.append(f"SignatureDef '{SIGNATURE_KEY}' added")
    return data, notes


def has_fp16_weights(src: str | Path) -> bool:
    """True when the file already stores weights as fp16 constants (dequantized at load)."""
    model = _read(src)
    return any(t.type == _TYPES.FLOAT16 and model.buffers[t.buffer].data is not None
               and len(model.buffers[t.buffer].data) > 0 for g in model.subgraphs for t in g.tensors)


# ------------------------------------------------------------------------------------------------ validation


def _quant(detail: dict) -> dict | None:
    scale, zero = detail["quantization"]
    return None if scale == 0 else {"scale": float(scale), "zero_point": int(zero)}


def describe_io(interpreter: Interpreter) -> dict:
    """Input name/shape/layout/dtype (+ quantization when integer) and the outputs, for the model pack."""
    inp = interpreter.get_input_details()[0]
    shape = [int(d) for d in inp["shape"]]
    return {
        "input": {"name": inp["name"], "shape": shape, "layout": guess_layout(shape),
                  "dtype": np.dtype(inp["dtype"]).name, "quantization": _quant(inp)},
        "outputs": [{"name": o["name"], "shape": [int(d) for d in o["shape"]], "dtype": np.dtype(o["dtype"]).name,
                     "quantization": _quant(o)} for o in interpreter.get_output_details()],
    }


def run_tflite(interpreter: Interpreter, sample: np.ndarray) -> dict[str, np.ndarray]:
    """One float input in, float outputs by name: (de)quantizes at the edges when the model IO is integer."""
    interpreter.allocate_tensors()
    inp = interpreter.get_input_details()[0]
    x = np.asarray(sample, dtype=np.float32)
    if q := _quant(inp):
        info = np.iinfo(inp["dtype"])
        x = np.clip(np.round(x / q["scale"]) + q["zero_point"], info.min, info.max)
    interpreter.set_tensor(inp["index"], x.astype(inp["dtype"]))
    interpreter.invoke()
    outputs = {}
    for out in interpreter.get_output_details():
        y = interpreter.get_tensor(out["index"])
        if q := _quant(out):
            y = (y.astype(np.float32) - q["zero_point"]) * q["scale"]
        outputs[out["name"]] = y.astype(np.float32)
    return outputs


def validate_tflite(path: str | Path, sample: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Load in the LiteRT Interpreter and run one input; BuildError("<path>: ...") unless outputs are finite.
    Without a sample a seeded uniform [-1, 1] tensor of the input shape is used."""
    try:
        interpreter = Interpreter(model_path=str(path))
        interpreter.allocate_tensors()
    except Exception as exc:  # the interpreter raises ValueError/RuntimeError on bad files
        raise BuildError(f"{path}: does not load in LiteRT: {exc}") from exc
    if sample is None:
        shape = interpreter.get_input_details()[0]["shape"]
        sample = np.random.default_rng(0).uniform(-1.0, 1.0, shape).astype(np.float32)
    try:
        outputs = run_tflite(interpreter, sample)
    except Exception as exc:
        raise BuildError(f"{path}: inference failed: {exc}") from exc
    for name, y in outputs.items():
        if not np.all(np.isfinite(y)):
            raise BuildError(f"{path}: output '{name}' has non-finite values")
    return outputs


# ------------------------------------------------------------------------------------------------- variants


def _quantizer(model_bytes: bytes, recipe=None):
    # Imported here: ai_edge_quantizer is heavy and only the build step needs it.
    from ai_edge_quantizer import quantizer

    logging.getLogger("absl").setLevel(logging.ERROR)
    return quantizer.Quantizer(model_bytes, recipe)


def _write(dst: str | Path, data: bytes | bytearray) -> None:
    Path(dst).parent.mkdir(parents=True, exist_ok=True)
    Path(dst).write_bytes(bytes(data))


def to_fp16(src: str | Path, dst: str | Path) -> dict:
    """fp16 weights, fp32 compute (ai-edge-quantizer float_casting, weight-only on conv/FC weights)."""
    from ai_edge_quantizer import qtyping
    from ai_edge_quantizer.algorithm_manager import AlgorithmName

    already = has_fp16_weights(src)
    data, notes = prepare_for_quantizer(src)
    if already:
        notes.append("source already stores fp16 weights (dequantized at load); re-cast by float_casting")
    try:
        q = _quantizer(data)
        for op in (qtyping.TFLOperationName.CONV_2D, qtyping.TFLOperationName.DEPTHWISE_CONV_2D,
                   qtyping.TFLOperationName.FULLY_CONNECTED):
            q.add_weight_only_config(regex=".*", operation_name=op, num_bits=16,
                                     algorithm_key=AlgorithmName.FLOAT_CASTING)
        result = q.quantize(enable_progress_report=False)
        _write(dst, result.quantized_model)
    except Exception as exc:  # the quantizer raises ValueError/RuntimeError/KeyError on unsupported graphs
        raise BuildError(f"{dst}: fp16 conversion of {src} failed: {exc}") from exc
    validate_tflite(dst)
    return {
        "recipe": "ai-edge-quantizer float_casting weight-only fp16 (CONV_2D, DEPTHWISE_CONV_2D, FULLY_CONNECTED)",
        **describe_io(Interpreter(model_path=str(dst))),
        "source_fp16_weights": already,
        "io_dtype": "float32",
        "notes": notes,
    }


def calibrated_ranges(calibration: dict) -> dict[str, tuple[float, float]]:
    """(min, max) per tensor name from an ai-edge-quantizer calibration result (per-channel QSVs collapsed)."""
    return {name: (float(np.min(qsv["min"])), float(np.max(qsv["max"])))
            for name, qsv in calibration.items() if qsv and "min" in qsv and "max" in qsv}


def find_outlier_ops(model_bytes: bytes, ranges: dict[str, tuple[float, float]],
                     max_range: float) -> list[tuple[str, str]]:
    """(op type, output tensor name) of every op with an input or output whose calibrated range exceeds
    `max_range`, in graph order: the TFLite twin of onnx_variants.find_outlier_nodes (same rule, same reason: such
    a tensor squeezed into 256 int8 steps loses everything below range/255, so its producer and consumers stay
    float). The output tensor name is what ai-edge-quantizer matches its regexes against."""
    wide = {name for name, (lo, hi) in ranges.items() if hi - lo > max_range}
    model = flatbuffer_utils.read_model_from_bytearray(bytearray(model_bytes))
    names = {v: k for k, v in vars(_OPS).items() if not k.startswith("_")}
    found = []
    for graph in model.subgraphs:
        def tensor_name(i: int) -> str:
            return graph.tensors[i].name.decode()

        for op in graph.operators:
            touched = {tensor_name(i) for i in list(op.inputs) + list(op.outputs) if i >= 0}
            if wide & touched:
                code = flatbuffer_utils.get_builtin_code_from_operator_code(model.operatorCodes[op.opcodeIndex])
                found.append((names.get(code, str(code)), tensor_name(op.outputs[0])))
    return found


def _keep_float(q, float_ops: list[tuple[str, str]], fp16_weights: bool) -> None:
    """Exclude `float_ops` from the static recipe: ai-edge-quantizer names an op's scope "<output>;", and the last
    matching rule wins, so a per-op NO_QUANTIZE after the model-wide static rule keeps that op in float. When the
    source stored its weights as fp16 (BlazeFace), the float ops keep them as fp16 (float_casting): lossless, and
    the file does not grow past the fp32 variant's."""
    from ai_edge_quantizer import qtyping
    from ai_edge_quantizer.algorithm_manager import AlgorithmName

    weighted = {"CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"}
    for op_type, output in float_ops:
        scope = f"^{re.escape(output)};"
        q.update_quantization_recipe(regex=scope, operation_name=qtyping.TFLOperationName.ALL_SUPPORTED,
                                     algorithm_key=AlgorithmName.NO_QUANTIZE)
        if fp16_weights and op_type in weighted:
            q.add_weight_only_config(regex=scope, operation_name=qtyping.TFLOperationName(op_type), num_bits=16,
                                     algorithm_key=AlgorithmName.FLOAT_CASTING)


def weight_precision(path: str | Path) -> dict:
    """Elements of constant (weight) tensors by dtype, and the int8 share of the int8 + float ones (int32 biases
    and shape constants left out: they are neither the weights quantized nor the ones kept float)."""
    model = _read(path)
    names = {v: k for k, v in vars(_TYPES).items() if not k.startswith("_")}
    counts: dict[str, int] = {}
    seen: set[int] = set()
    for graph in model.subgraphs:
        for t in graph.tensors:
            data = model.buffers[t.buffer].data
            if t.buffer in seen or data is None or len(data) == 0:
                continue
            seen.add(t.buffer)
            dtype = names[t.type].lower()
            counts[dtype] = counts.get(dtype, 0) + int(np.prod(t.shape if t.shape is not None else []))
    int8 = counts.get("int8", 0)
    floats = int8 + counts.get("float16", 0) + counts.get("float32", 0)
    return {"elements": counts, "int8_share": round(int8 / floats, 4) if floats else 0.0}


def to_int8(src: str | Path, dst: str | Path, calib: Sequence[np.ndarray], *,
            float_outliers_above: float | None = None) -> dict:
    """Static int8 (ai-edge-quantizer static_wi8_ai8): int8 weights (per-channel) and activations, calibrated on
    `calib` (preprocessed float32 arrays shaped like the input). The model's IO becomes int8 too: the returned
    dict gives the input/output scale and zero point that runners must apply.

    float_outliers_above: mixed precision -- ops touching a tensor whose calibrated range is wider than this stay
    float (find_outlier_ops). BlazeFace needs it: its regressor/classificator heads reach ranges of ~500-650 on
    faces, one int8 step is 2 px of keypoint offset, and plain int8 misses the eye tolerance (MODELS.md)."""
    from ai_edge_quantizer import recipe

    if not calib:
        raise BuildError(f"{src}: int8 needs calibration inputs; none given")
    fp16_source = has_fp16_weights(src)
    data, notes = prepare_for_quantizer(src, fuse_relu=True)
    interpreter = Interpreter(model_content=data)
    signature = interpreter.get_signature_list()[SIGNATURE_KEY]
    input_name = signature["inputs"][0]
    want = list(interpreter.get_input_details()[0]["shape"])
    for i, arr in enumerate(calib):
        if list(arr.shape) != want:
            raise BuildError(f"{src}: calibration input {i} has shape {list(arr.shape)}; model wants {want}")
    float_ops: list[tuple[str, str]] = []
    try:
        q = _quantizer(data, recipe.static_wi8_ai8())
        # Calibrated once under the all-int8 recipe: its QSVs cover every tensor, a superset of what a mixed
        # recipe needs, so they serve both to find the outliers and to quantize.
        calibration = q.calibrate({SIGNATURE_KEY: [{input_name: np.asarray(a, np.float32)} for a in calib]},
                                  num_threads=1)
        if float_outliers_above is not None:
            ranges = calibrated_ranges(calibration)
            float_ops = find_outlier_ops(data, ranges, float(float_outliers_above))
            _keep_float(q, float_ops, fp16_source)
        result = q.quantize(calibration, enable_progress_report=False)
        _write(dst, result.quantized_model)
    except Exception as exc:
        raise BuildError(f"{dst}: int8 quantization of {src} failed: {exc}") from exc
    validate_tflite(dst, calib[0])
    io = describe_io(Interpreter(model_path=str(dst)))
    float_io = io["input"]["dtype"] == "float32"
    notes.append("model IO stays float32 (quantize/dequantize inside)" if float_io else
                 "model IO is int8: quantize inputs / dequantize outputs with the recorded scale and zero point")
    description = ("ai-edge-quantizer static_wi8_ai8 (int8 per-channel weights, int8 activations), "
                   f"min/max calibration on {len(calib)} inputs")
    if float_outliers_above is not None:
        description += (f"; ops touching a tensor with calibrated range > {float(float_outliers_above):g} kept float"
                        + (" (fp16 weights, as in the source)" if fp16_source else ""))
    facts = {
        "recipe": description,
        **io,
        "io_dtype": io["input"]["dtype"],
        "calibration": {"method": "minmax", "n": len(calib)},
        "weights": weight_precision(dst),
        "notes": notes,
    }
    if float_outliers_above is not None:
        facts["float_ops"] = [f"{op_type}:{output}" for op_type, output in float_ops]
        facts["float_outliers_above"] = float(float_outliers_above)
    return facts
