"""TFLite fp16 and int8 variants with ai-edge-quantizer (no tensorflow).

Before quantizing, the source flatbuffer is normalised so the quantizer sees what the runtime sees:
- old files (MobileFaceNet.tflite) keep op codes in `deprecated_builtin_code` with `builtin_code` = 0 (ADD); the
  quantizer reads only `builtin_code`, takes every op for ADD and silently quantizes nothing (fp16) or the wrong
  things (int8). We copy the real code into `builtin_code`.
- MediaPipe files (BlazeFace short-range) store fp16 weights behind DEQUANTIZE ops; the quantizer only quantizes
  constant weights, so we fold those DEQUANTIZEs into fp32 constants first.
- a SignatureDef is added when missing (tflite_signature.ensure_signature).
"""

from __future__ import annotations

import logging
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


def prepare_for_quantizer(src: str | Path) -> tuple[bytes, list[str]]:
    """The source as bytes the quantizer handles correctly (module doc), and notes on what was changed."""
    model = _read(src)
    notes = []
    if fixed := _normalize_opcodes(model):
        notes.append(f"{fixed} op codes copied from deprecated_builtin_code")
    if folded := _fold_fp16_weights(model):
        notes.append(f"{folded} fp16 weight DEQUANTIZE ops folded to fp32 constants before quantizing")
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


def to_int8(src: str | Path, dst: str | Path, calib: Sequence[np.ndarray]) -> dict:
    """Static int8 (ai-edge-quantizer static_wi8_ai8): int8 weights (per-channel) and activations, calibrated on
    `calib` (preprocessed float32 arrays shaped like the input). The model's IO becomes int8 too: the returned
    dict gives the input/output scale and zero point that runners must apply."""
    from ai_edge_quantizer import recipe

    if not calib:
        raise BuildError(f"{src}: int8 needs calibration inputs; none given")
    data, notes = prepare_for_quantizer(src)
    interpreter = Interpreter(model_content=data)
    signature = interpreter.get_signature_list()[SIGNATURE_KEY]
    input_name = signature["inputs"][0]
    want = list(interpreter.get_input_details()[0]["shape"])
    for i, arr in enumerate(calib):
        if list(arr.shape) != want:
            raise BuildError(f"{src}: calibration input {i} has shape {list(arr.shape)}; model wants {want}")
    try:
        q = _quantizer(data, recipe.static_wi8_ai8())
        calibration = q.calibrate({SIGNATURE_KEY: [{input_name: np.asarray(a, np.float32)} for a in calib]},
                                  num_threads=1)
        result = q.quantize(calibration, enable_progress_report=False)
        _write(dst, result.quantized_model)
    except Exception as exc:
        raise BuildError(f"{dst}: int8 quantization of {src} failed: {exc}") from exc
    validate_tflite(dst, calib[0])
    io = describe_io(Interpreter(model_path=str(dst)))
    float_io = io["input"]["dtype"] == "float32"
    notes.append("model IO stays float32 (quantize/dequantize inside)" if float_io else
                 "model IO is int8: quantize inputs / dequantize outputs with the recorded scale and zero point")
    return {
        "recipe": f"ai-edge-quantizer static_wi8_ai8 (int8 per-channel weights, int8 activations), "
                  f"min/max calibration on {len(calib)} inputs",
        **io,
        "io_dtype": io["input"]["dtype"],
        "calibration": {"method": "minmax", "n": len(calib)},
        "notes": notes,
    }
