"""A tensorflow-free ONNX -> TFLite converter for small float32 CNNs.

Why it exists: the dlib gender classifier ships only as ONNX, and the one known ONNX -> TFLite path (onnx2tf) needs
TensorFlow (about 1.6 GB) and fails on it. LiteRT targets (Raspberry Pi, Coral) need a .tflite, so we write the
flatbuffer directly with the object API that ai-edge-litert ships (``ai_edge_litert.schema_py_generated`` + its
``tools.flatbuffer_utils``).

Layout: TFLite convolutions and pools are NHWC, ONNX is NCHW. Every ONNX tensor maps to a TFLite tensor plus a
``Layout`` saying how the stored tensor relates to the ONNX one:
  - ``SAME``: identical shape and element order;
  - ``NHWC``: a 4-D ONNX NCHW tensor stored NHWC (the model input becomes NHWC, the TFLite convention);
  - ``FLAT_HWC``: an ONNX ``Flatten`` of an NCHW tensor ([N, C*H*W]) stored in H, W, C feature order.
Flatten after NHWC is handled by *permuting the following Gemm's weight columns* (FLAT_HWC), not by a TRANSPOSE op:
one op fewer at run time and no TRANSPOSE on accelerators (Edge TPU) that would split the graph there. Any consumer
that cannot absorb a layout (graph outputs included) gets the tensor converted back to ONNX order by TRANSPOSE/RESHAPE.

Supported: Conv (group 1, depthwise), Relu/Clip (fused into the producer where possible), Add/Sub/Mul/Div,
BatchNormalization, AveragePool/MaxPool/GlobalAveragePool, Flatten/Reshape, Gemm/MatMul with constant weights,
Softmax. Anything else raises BuildError naming the node. The result is checked against onnxruntime on a seeded
random input before it is written.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import onnx
from ai_edge_litert import schema_py_generated as fb
from ai_edge_litert.tools import flatbuffer_utils
from onnx import numpy_helper
from onnx.reference import ReferenceEvaluator

from harness.errors import BuildError, IntegrityError

TOLERANCE = 1e-4          # max abs diff allowed between onnxruntime and LiteRT on the validation input
VALIDATION_SEED = 0
SIGNATURE_KEY = "serving_default"   # ai-edge-quantizer needs a SignatureDef to quantise the result

_OP = fb.BuiltinOperator
_OPTS = fb.BuiltinOptions
_ACT = fb.ActivationFunctionType
_OP_NAMES = {code: name for name, code in vars(_OP).items() if not name.startswith("_")}
_NCHW_TO_NHWC = (0, 2, 3, 1)
_NHWC_TO_NCHW = (0, 3, 1, 2)


class Layout(enum.Enum):
    SAME = "same"
    NHWC = "nhwc"
    FLAT_HWC = "flat_hwc"


@dataclass(frozen=True)
class _Value:
    """Where an ONNX tensor lives in the TFLite graph."""

    index: int
    layout: Layout
    chw: tuple[int, int, int] | None = None   # FLAT_HWC only: the (C, H, W) that was flattened


class _GraphBuilder:
    """Accumulates tensors, buffers, opcodes and operators, then packs them into a ModelT."""

    def __init__(self) -> None:
        self.tensors: list[fb.TensorT] = []
        self.buffers: list[fb.BufferT] = [fb.BufferT()]   # buffer 0: the empty sentinel every tflite file has
        self.operators: list[fb.OperatorT] = []
        self.opcodes: dict[int, int] = {}                 # builtin code -> opcode index
        self.producer: dict[int, fb.OperatorT] = {}       # tensor index -> the op that writes it

    def tensor(self, name: str, shape: list[int] | tuple[int, ...], dtype: int = fb.TensorType.FLOAT32) -> int:
        t = fb.TensorT()
        t.name, t.shape, t.type, t.buffer = name, [int(d) for d in shape], dtype, 0
        self.tensors.append(t)
        return len(self.tensors) - 1

    def const(self, name: str, array: np.ndarray) -> int:
        array = np.ascontiguousarray(array)
        if array.dtype == np.float32:
            dtype, data = fb.TensorType.FLOAT32, array.astype("<f4")
        elif array.dtype == np.int32:
            dtype, data = fb.TensorType.INT32, array.astype("<i4")
        else:
            raise BuildError(f"internal: constant {name} has unsupported dtype {array.dtype}")
        buf = fb.BufferT()
        buf.data = data.reshape(-1).view(np.uint8)
        self.buffers.append(buf)
        index = self.tensor(name, array.shape, dtype)
        self.tensors[index].buffer = len(self.buffers) - 1
        return index

    def op(self, code: int, inputs: list[int], outputs: list[int],
           options_type: int = _OPTS.NONE, options: Any = None) -> fb.OperatorT:
        if code not in self.opcodes:
            self.opcodes[code] = len(self.opcodes)
        op = fb.OperatorT()
        op.opcodeIndex, op.inputs, op.outputs = self.opcodes[code], list(inputs), list(outputs)
        op.builtinOptionsType, op.builtinOptions = options_type, options
        self.operators.append(op)
        for out in outputs:
            self.producer[out] = op
        return op

    def model(self, inputs: dict[str, int], outputs: dict[str, int]) -> fb.ModelT:
        codes = []
        for code in sorted(self.opcodes, key=self.opcodes.get):
            oc = fb.OperatorCodeT()
            # deprecated_builtin_code is an int8: codes >= 127 live only in builtin_code (the schema's convention).
            oc.deprecatedBuiltinCode, oc.builtinCode, oc.version = min(code, 127), code, 1
            codes.append(oc)
        sg = fb.SubGraphT()
        sg.tensors, sg.operators, sg.name = self.tensors, self.operators, "main"
        sg.inputs, sg.outputs = list(inputs.values()), list(outputs.values())
        sig = fb.SignatureDefT()
        sig.signatureKey, sig.subgraphIndex = SIGNATURE_KEY, 0
        sig.inputs = [_tensor_map(name, index) for name, index in inputs.items()]
        sig.outputs = [_tensor_map(name, index) for name, index in outputs.items()]
        model = fb.ModelT()
        model.version, model.description = 3, "edge-fair-bench onnx_to_tflite"
        model.operatorCodes, model.subgraphs, model.buffers = codes, [sg], self.buffers
        model.signatureDefs = [sig]
        return model


def _tensor_map(name: str, index: int) -> fb.TensorMapT:
    tm = fb.TensorMapT()
    tm.name, tm.tensorIndex = name, index
    return tm


def _options(cls: type, **fields: Any) -> Any:
    obj = cls()
    for key, value in fields.items():
        setattr(obj, key, value)
    return obj


def _stored_shape(shape: list[int], layout: Layout) -> list[int]:
    return [shape[i] for i in _NCHW_TO_NHWC] if layout is Layout.NHWC else list(shape)


def _tflite_padding(in_hw: tuple[int, int], kernel: tuple[int, int], strides: tuple[int, int],
                    dilations: tuple[int, int], pads: tuple[int, int, int, int]) -> str | None:
    """'VALID' / 'SAME' when TFLite's own padding reproduces ONNX `pads` [top, left, bottom, right], else None."""
    if not any(pads):
        return "VALID"
    same = []
    for size, k, s, d in zip(in_hw, kernel, strides, dilations):
        out = -(-size // s)
        total = max((out - 1) * s + (k - 1) * d + 1 - size, 0)
        same.append((total // 2, total - total // 2))   # TFLite puts the odd pixel at the end (= ONNX SAME_UPPER)
    (top, bottom), (left, right) = same
    return "SAME" if tuple(pads) == (top, left, bottom, right) else None


class _Converter:
    def __init__(self, src: Path, model: onnx.ModelProto, batch: int) -> None:
        self.src, self.model, self.batch = src, model, batch
        self.graph = model.graph
        self.opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 1)
        self.b = _GraphBuilder()
        self.consts: dict[str, np.ndarray] = {i.name: numpy_helper.to_array(i) for i in self.graph.initializer}
        self.values: dict[str, _Value] = {}
        self.materialized: dict[str, int] = {}
        self.shapes = self._infer_shapes()
        self.consumers: dict[str, int] = {}
        for node in self.graph.node:
            for name in node.input:
                self.consumers[name] = self.consumers.get(name, 0) + 1
        self.handlers: dict[str, Callable[[onnx.NodeProto], None]] = {
            "Conv": self._conv, "Relu": self._activation, "Clip": self._activation,
            "Add": self._binary, "Sub": self._binary, "Mul": self._binary, "Div": self._binary,
            "BatchNormalization": self._batch_norm, "AveragePool": self._pool, "MaxPool": self._pool,
            "GlobalAveragePool": self._global_average_pool, "Flatten": self._flatten, "Reshape": self._flatten,
            "Gemm": self._gemm, "MatMul": self._gemm, "Softmax": self._softmax,
        }

    # ---- errors ---------------------------------------------------------------------------------------------------
    def unsupported(self, node: onnx.NodeProto, detail: str = "") -> BuildError:
        what = f"ONNX op {node.op_type} (node {node.name or node.output[0]})" + (f" {detail}" if detail else "")
        return BuildError(f"{self.src}: {what} is not supported by the built-in converter "
                          "(it covers small CNNs: Conv, pooling, elementwise, Gemm/MatMul, Softmax, Flatten)")

    # ---- shapes ---------------------------------------------------------------------------------------------------
    def _infer_shapes(self) -> dict[str, list[int]]:
        """Pin the batch dimension, then let ONNX shape inference give every tensor a static shape."""
        model = onnx.ModelProto()
        model.CopyFrom(self.model)
        del model.graph.value_info[:]
        init_names = set(self.consts)
        for value in list(model.graph.input) + list(model.graph.output):
            if value.name in init_names or not value.type.tensor_type.shape.dim:
                continue
            dim0 = value.type.tensor_type.shape.dim[0]
            if dim0.HasField("dim_value") and dim0.dim_value not in (0, self.batch):
                raise BuildError(
                    f"{self.src}: {value.name} has a fixed batch of {dim0.dim_value}; asked for {self.batch}")
            dim0.Clear()
            dim0.dim_value = self.batch
        try:
            model = onnx.shape_inference.infer_shapes(model, strict_mode=True, data_prop=True)
        except Exception as exc:  # onnx raises its own InferenceError/ValidationError family
            raise BuildError(f"{self.src}: ONNX shape inference failed: {str(exc).splitlines()[0]}") from exc
        shapes: dict[str, list[int]] = {}
        for value in list(model.graph.input) + list(model.graph.value_info) + list(model.graph.output):
            ttype = value.type.tensor_type
            if ttype.elem_type != onnx.TensorProto.FLOAT:
                continue
            dims = [d.dim_value if d.HasField("dim_value") else -1 for d in ttype.shape.dim]
            shapes[value.name] = dims
        return shapes

    def shape(self, name: str, node: onnx.NodeProto) -> list[int]:
        dims = self.shapes.get(name)
        if dims is None or any(d <= 0 for d in dims):
            raise self.unsupported(node, f"with non-static or non-float32 tensor {name} (shape {dims})")
        return dims

    # ---- tensors and layouts --------------------------------------------------------------------------------------
    def new_value(self, name: str, layout: Layout, node: onnx.NodeProto,
                  chw: tuple[int, int, int] | None = None) -> int:
        index = self.b.tensor(name, _stored_shape(self.shape(name, node), layout))
        self.values[name] = _Value(index, layout, chw)
        return index

    def const_value(self, name: str, node: onnx.NodeProto) -> np.ndarray:
        if name not in self.consts:
            raise self.unsupported(node, f"with non-constant input {name}")
        return self.consts[name]

    def plain(self, name: str, node: onnx.NodeProto) -> int:
        """The tensor in ONNX layout, converting (once) if it is stored otherwise."""
        value = self.values[name]
        if value.layout is Layout.SAME:
            return value.index
        if name in self.materialized:
            return self.materialized[name]
        shape = self.shape(name, node)
        out = self.b.tensor(f"{name}/onnx_layout", shape)
        if value.layout is Layout.NHWC:
            self._transpose(value.index, out, _NHWC_TO_NCHW, name)
        else:
            c, h, w = value.chw
            hwc = self.b.tensor(f"{name}/hwc", [shape[0], h, w, c])
            self._reshape(value.index, hwc, [shape[0], h, w, c], name)
            chw = self.b.tensor(f"{name}/chw", [shape[0], c, h, w])
            self._transpose(hwc, chw, _NHWC_TO_NCHW, name)
            self._reshape(chw, out, shape, name)
        self.materialized[name] = out
        return out

    def nhwc(self, name: str, node: onnx.NodeProto) -> int:
        value = self.values[name]
        if value.layout is Layout.NHWC:
            return value.index
        shape = self.shape(name, node)
        if len(shape) != 4:
            raise self.unsupported(node, f"on {len(shape)}-D input {name}")
        out = self.b.tensor(f"{name}/nhwc", _stored_shape(shape, Layout.NHWC))
        self._transpose(self.plain(name, node), out, _NCHW_TO_NHWC, name)
        return out

    def _transpose(self, src: int, dst: int, perm: tuple[int, ...], name: str) -> None:
        perm_index = self.b.const(f"{name}/perm", np.array(perm, np.int32))
        self.b.op(_OP.TRANSPOSE, [src, perm_index], [dst], _OPTS.TransposeOptions, fb.TransposeOptionsT())

    def _reshape(self, src: int, dst: int, shape: list[int], name: str) -> None:
        shape_index = self.b.const(f"{name}/shape", np.array(shape, np.int32))
        self.b.op(_OP.RESHAPE, [src, shape_index], [dst], _OPTS.ReshapeOptions,
                  _options(fb.ReshapeOptionsT, newShape=list(shape)))

    # ---- node handlers --------------------------------------------------------------------------------------------
    def attrs(self, node: onnx.NodeProto) -> dict[str, Any]:
        return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}

    def _window(self, node: onnx.NodeProto, in_hw: tuple[int, int], kernel: tuple[int, int],
                strides: tuple[int, int], dilations: tuple[int, int]) -> tuple[int, int, int, int]:
        """Explicit [top, left, bottom, right] pads, resolving auto_pad."""
        attrs = self.attrs(node)
        auto_pad = attrs.get("auto_pad", b"NOTSET")
        auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else auto_pad
        if auto_pad == "VALID":
            return (0, 0, 0, 0)
        if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
            pads = []
            for size, k, s, d in zip(in_hw, kernel, strides, dilations):
                total = max((-(-size // s) - 1) * s + (k - 1) * d + 1 - size, 0)
                small, big = total // 2, total - total // 2
                pads.append((small, big) if auto_pad == "SAME_UPPER" else (big, small))
            return (pads[0][0], pads[1][0], pads[0][1], pads[1][1])
        pads = tuple(attrs.get("pads", (0, 0, 0, 0)))
        if len(pads) != 4:
            raise self.unsupported(node, f"with pads={list(pads)} (only 2-D windows)")
        return pads

    def _pad(self, src: int, name: str, in_shape_nhwc: list[int], pads: tuple[int, int, int, int],
             fill: float | None) -> int:
        """Explicit PAD (zeros) or PADV2 (fill value) for pads TFLite's SAME/VALID cannot express."""
        top, left, bottom, right = pads
        n, h, w, c = in_shape_nhwc
        out = self.b.tensor(f"{name}/padded", [n, h + top + bottom, w + left + right, c])
        paddings = self.b.const(f"{name}/paddings", np.array([[0, 0], [top, bottom], [left, right], [0, 0]], np.int32))
        if fill is None:
            self.b.op(_OP.PAD, [src, paddings], [out], _OPTS.PadOptions, fb.PadOptionsT())
        else:
            value = self.b.const(f"{name}/pad_value", np.array([fill], np.float32))
            self.b.op(_OP.PADV2, [src, paddings, value], [out], _OPTS.PadV2Options, fb.PadV2OptionsT())
        return out

    def _conv(self, node: onnx.NodeProto) -> None:
        attrs = self.attrs(node)
        x = self.nhwc(node.input[0], node)
        n, c_in, h, w = self.shape(node.input[0], node)
        weights = self.const_value(node.input[1], node).astype(np.float32)
        if weights.ndim != 4:
            raise self.unsupported(node, f"with {weights.ndim - 2}-D kernel")
        c_out, kh, kw = weights.shape[0], weights.shape[2], weights.shape[3]
        bias = (self.const_value(node.input[2], node).astype(np.float32)
                if len(node.input) > 2 and node.input[2] else np.zeros(c_out, np.float32))
        group = attrs.get("group", 1)
        strides = tuple(attrs.get("strides", (1, 1)))
        dilations = tuple(attrs.get("dilations", (1, 1)))
        pads = self._window(node, (h, w), (kh, kw), strides, dilations)
        padding = _tflite_padding((h, w), (kh, kw), strides, dilations, pads)
        if padding is None:
            x, padding = self._pad(x, node.output[0], [n, h, w, c_in], pads, fill=None), "VALID"
        common = dict(padding=getattr(fb.Padding, padding), strideH=strides[0], strideW=strides[1],
                      dilationHFactor=dilations[0], dilationWFactor=dilations[1], fusedActivationFunction=_ACT.NONE)
        name = node.output[0]
        if group == 1:
            w_index = self.b.const(f"{name}/weights", weights.transpose(0, 2, 3, 1))          # OIHW -> OHWI
            code, opt_type, opts = _OP.CONV_2D, _OPTS.Conv2DOptions, _options(fb.Conv2DOptionsT, **common)
        elif group == c_in and weights.shape[1] == 1 and c_out % c_in == 0:
            w_index = self.b.const(f"{name}/weights", weights.transpose(1, 2, 3, 0))   # [CM,1,H,W] -> [1,H,W,CM]
            code, opt_type = _OP.DEPTHWISE_CONV_2D, _OPTS.DepthwiseConv2DOptions
            opts = _options(fb.DepthwiseConv2DOptionsT, depthMultiplier=c_out // c_in, **common)
        else:
            raise self.unsupported(node, f"with group={group}")
        b_index = self.b.const(f"{name}/bias", bias)
        self.b.op(code, [x, w_index, b_index], [self.new_value(name, Layout.NHWC, node)], opt_type, opts)

    def _pool(self, node: onnx.NodeProto) -> None:
        attrs = self.attrs(node)
        if len(node.output) > 1 and node.output[1]:
            raise self.unsupported(node, "with an Indices output")
        kernel = tuple(attrs["kernel_shape"])
        if len(kernel) != 2:
            raise self.unsupported(node, f"with kernel_shape={list(kernel)}")
        strides = tuple(attrs.get("strides", (1, 1)))
        if tuple(attrs.get("dilations", (1, 1))) != (1, 1):
            raise self.unsupported(node, f"with dilations={attrs['dilations']}")
        if attrs.get("storage_order", 0) != 0:
            raise self.unsupported(node, "with storage_order=1")
        x = self.nhwc(node.input[0], node)
        n, c, h, w = self.shape(node.input[0], node)
        pads = self._window(node, (h, w), kernel, strides, (1, 1))
        padded_hw = (h + pads[0] + pads[2], w + pads[1] + pads[3])
        floor_hw = [(size - k) // s + 1 for size, k, s in zip(padded_hw, kernel, strides)]
        if floor_hw != self.shape(node.output[0], node)[2:]:
            raise self.unsupported(node, f"with ceil_mode={attrs.get('ceil_mode', 0)} changing the output size")
        padding = _tflite_padding((h, w), kernel, strides, (1, 1), pads)
        average = node.op_type == "AveragePool"
        # TFLite's SAME average pool divides by the count of real pixels (ONNX count_include_pad=0); counting the
        # padded zeros (count_include_pad=1) needs an explicit PAD. Max pool pads with the lowest float instead.
        if average and attrs.get("count_include_pad", 0) and padding == "SAME":
            padding = None
        if padding is None:
            if average and not attrs.get("count_include_pad", 0):
                raise self.unsupported(node, f"with pads={list(pads)} and count_include_pad=0")
            fill = None if average else float(np.finfo(np.float32).min)
            x, padding = self._pad(x, node.output[0], [n, h, w, c], pads, fill), "VALID"
        opts = _options(fb.Pool2DOptionsT, padding=getattr(fb.Padding, padding), strideH=strides[0],
                        strideW=strides[1], filterHeight=kernel[0], filterWidth=kernel[1],
                        fusedActivationFunction=_ACT.NONE)
        code = _OP.AVERAGE_POOL_2D if average else _OP.MAX_POOL_2D
        self.b.op(code, [x], [self.new_value(node.output[0], Layout.NHWC, node)], _OPTS.Pool2DOptions, opts)

    def _global_average_pool(self, node: onnx.NodeProto) -> None:
        x = self.nhwc(node.input[0], node)
        axes = self.b.const(f"{node.output[0]}/axes", np.array([1, 2], np.int32))
        self.b.op(_OP.MEAN, [x, axes], [self.new_value(node.output[0], Layout.NHWC, node)],
                  _OPTS.ReducerOptions, _options(fb.ReducerOptionsT, keepDims=True))

    def _activation(self, node: onnx.NodeProto) -> None:
        act = _ACT.RELU
        if node.op_type == "Clip":
            attrs = self.attrs(node)
            lo = (float(self.const_value(node.input[1], node)) if len(node.input) > 1 and node.input[1]
                  else attrs.get("min", float("-inf")))
            hi = (float(self.const_value(node.input[2], node)) if len(node.input) > 2 and node.input[2]
                  else attrs.get("max", float("inf")))
            act = {(0.0, float("inf")): _ACT.RELU, (0.0, 6.0): _ACT.RELU6, (-1.0, 1.0): _ACT.RELU_N1_TO_1}.get((lo, hi))
            if act is None:
                raise self.unsupported(node, f"with min={lo}, max={hi}")
        src = self.values[node.input[0]]
        producer = self.b.producer.get(src.index)
        # Fusing changes the producer's output for every reader: only when this Relu is its one reader under its
        # one ONNX name (an identity Flatten aliases names) and the pre-activation value is not a graph output.
        aliases = sum(value.index == src.index for value in self.values.values())
        fusable = (producer is not None and self.consumers.get(node.input[0]) == 1 and aliases == 1
                   and node.input[0] not in {o.name for o in self.graph.output}
                   and getattr(producer.builtinOptions, "fusedActivationFunction", None) == _ACT.NONE)
        if fusable:   # the producer applies the activation itself: one op and one tensor fewer
            producer.builtinOptions.fusedActivationFunction = act
            self.b.tensors[src.index].name = node.output[0]
            self.values[node.output[0]] = src
            return
        code = {_ACT.RELU: _OP.RELU, _ACT.RELU6: _OP.RELU6, _ACT.RELU_N1_TO_1: _OP.RELU_N1_TO_1}[act]
        out = self.new_value(node.output[0], src.layout, node, src.chw)
        self.b.op(code, [src.index], [out])

    @staticmethod
    def _relayout_const(array: np.ndarray, other: _Value) -> np.ndarray | None:
        """A constant operand re-laid-out to broadcast against `other`'s stored layout; None if it cannot be."""
        array = array.astype(np.float32)
        if other.layout is Layout.NHWC:
            if array.ndim > 4:
                return None
            array = array.reshape((1,) * (4 - array.ndim) + array.shape).transpose(_NCHW_TO_NHWC)
            while array.ndim > 1 and array.shape[0] == 1:   # [1,1,1,C] -> [C]: the plain per-channel form
                array = array[0]
        elif other.layout is Layout.FLAT_HWC and array.size > 1:
            c, h, w = other.chw
            if array.shape[-1] != c * h * w or array.size != c * h * w:
                return None
            array = array.reshape(c, h, w).transpose(1, 2, 0).reshape(array.shape)
        return array

    def _binary(self, node: onnx.NodeProto) -> None:
        """Add/Sub/Mul/Div computed in the operands' stored layout when they share one, else in ONNX layout."""
        code, opt_type, opt_cls = {
            "Add": (_OP.ADD, _OPTS.AddOptions, fb.AddOptionsT), "Sub": (_OP.SUB, _OPTS.SubOptions, fb.SubOptionsT),
            "Mul": (_OP.MUL, _OPTS.MulOptions, fb.MulOptionsT), "Div": (_OP.DIV, _OPTS.DivOptions, fb.DivOptionsT),
        }[node.op_type]
        names = list(node.input[:2])
        first = self.values[next(name for name in names if name not in self.consts)]
        consts = {name: self._relayout_const(self.consts[name], first) for name in names if name in self.consts}
        stored = (all(array is not None for array in consts.values()) and all(
            self.values[name].layout is first.layout and self.values[name].chw == first.chw
            for name in names if name not in self.consts))
        if stored:
            layout, chw = first.layout, first.chw
            inputs = [self.values[name].index if name not in consts else
                      self.b.const(f"{node.output[0]}/const", consts[name]) for name in names]
        else:
            layout, chw = Layout.SAME, None
            inputs = [self.plain(name, node) if name not in consts else
                      self.b.const(f"{node.output[0]}/const", self.consts[name].astype(np.float32)) for name in names]
        out = self.new_value(node.output[0], layout, node, chw)
        self.b.op(code, inputs, [out], opt_type, _options(opt_cls, fusedActivationFunction=_ACT.NONE))

    def _batch_norm(self, node: onnx.NodeProto) -> None:
        """Inference BatchNormalization as MUL + ADD with per-channel constants."""
        if self.attrs(node).get("training_mode", 0) or len(node.output) > 1:
            raise self.unsupported(node, "in training mode")
        scale, offset, mean, var = (self.const_value(i, node).astype(np.float64) for i in node.input[1:5])
        mul = scale / np.sqrt(var + self.attrs(node).get("epsilon", 1e-5))
        add = offset - mean * mul
        x = self.values[node.input[0]]
        rank = len(self.shape(node.input[0], node))
        if not (x.layout is Layout.NHWC or (x.layout is Layout.SAME and rank == 2)):
            raise self.unsupported(node, f"on a {rank}-D input")
        name = node.output[0]
        scaled = self.b.tensor(f"{name}/scaled", self.b.tensors[x.index].shape)
        self.b.op(_OP.MUL, [x.index, self.b.const(f"{name}/scale", mul.astype(np.float32))], [scaled],
                  _OPTS.MulOptions, _options(fb.MulOptionsT, fusedActivationFunction=_ACT.NONE))
        out = self.new_value(name, x.layout, node)
        self.b.op(_OP.ADD, [scaled, self.b.const(f"{name}/offset", add.astype(np.float32))], [out],
                  _OPTS.AddOptions, _options(fb.AddOptionsT, fusedActivationFunction=_ACT.NONE))

    def _flatten(self, node: onnx.NodeProto) -> None:
        """Flatten/Reshape. [N,C,H,W] stored NHWC -> [N, C*H*W] keeps H,W,C order (FLAT_HWC) for a Gemm to absorb."""
        in_shape, out_shape = self.shape(node.input[0], node), self.shape(node.output[0], node)
        x = self.values[node.input[0]]
        if in_shape == out_shape:                 # e.g. Flatten of an [N, K] tensor: nothing to do
            self.values[node.output[0]] = x
            return
        to_batch_rows = len(out_shape) == 2 and out_shape[0] == in_shape[0]
        if x.layout is Layout.NHWC and to_batch_rows:
            _, c, h, w = in_shape
            layout = Layout.SAME if h == w == 1 else Layout.FLAT_HWC
            out = self.new_value(node.output[0], layout, node, None if layout is Layout.SAME else (c, h, w))
            self._reshape(x.index, out, out_shape, node.output[0])
            return
        src = x.index if x.layout is Layout.SAME else self.plain(node.input[0], node)
        self._reshape(src, self.new_value(node.output[0], Layout.SAME, node), out_shape, node.output[0])

    def _gemm(self, node: onnx.NodeProto) -> None:
        attrs = self.attrs(node)
        if attrs.get("transA", 0):
            raise self.unsupported(node, "with transA=1")
        a_shape = self.shape(node.input[0], node)
        if len(a_shape) != 2:
            raise self.unsupported(node, f"on a {len(a_shape)}-D input")
        b = self.const_value(node.input[1], node).astype(np.float64)
        weights = (b if attrs.get("transB", 0) else b.T) * attrs.get("alpha", 1.0)     # FULLY_CONNECTED wants [M, K]
        m = weights.shape[0]
        bias = np.zeros(m)
        if node.op_type == "Gemm" and len(node.input) > 2 and node.input[2]:
            c = self.const_value(node.input[2], node)
            if c.size not in (1, m) or (c.ndim == 2 and c.shape[0] != 1):
                raise self.unsupported(node, f"with bias shape {list(c.shape)}")
            bias = np.broadcast_to(c.reshape(-1), (m,)) * attrs.get("beta", 1.0)
        x = self.values[node.input[0]]
        if x.layout is Layout.FLAT_HWC:           # permute weight columns from C,H,W to the stored H,W,C order
            c_, h, w = x.chw
            weights = weights.reshape(m, c_, h, w).transpose(0, 2, 3, 1).reshape(m, -1)
            x_index = x.index
        else:
            x_index = self.plain(node.input[0], node)
        name = node.output[0]
        inputs = [x_index, self.b.const(f"{name}/weights", weights.astype(np.float32)),
                  self.b.const(f"{name}/bias", bias.astype(np.float32))]
        opts = _options(fb.FullyConnectedOptionsT, fusedActivationFunction=_ACT.NONE, keepNumDims=False)
        self.b.op(_OP.FULLY_CONNECTED, inputs, [self.new_value(name, Layout.SAME, node)],
                  _OPTS.FullyConnectedOptions, opts)

    def _softmax(self, node: onnx.NodeProto) -> None:
        rank = len(self.shape(node.input[0], node))
        axis = self.attrs(node).get("axis", -1 if self.opset >= 13 else 1) % rank
        x = self.values[node.input[0]]
        # Before opset 13 Softmax flattens from `axis`: the same thing only when axis is the last one.
        if x.layout is Layout.NHWC and axis == 1 and self.opset >= 13:
            src, layout = x.index, Layout.NHWC    # channels are the stored last axis
        elif axis == rank - 1:
            src, layout = self.plain(node.input[0], node), Layout.SAME
        else:
            raise self.unsupported(node, f"with axis={axis} on a {rank}-D input")
        self.b.op(_OP.SOFTMAX, [src], [self.new_value(node.output[0], layout, node)],
                  _OPTS.SoftmaxOptions, _options(fb.SoftmaxOptionsT, beta=1.0))

    # ---- driver ---------------------------------------------------------------------------------------------------
    def _fold(self, node: onnx.NodeProto) -> None:
        """Evaluate a node whose inputs are all constant (Constant nodes, shape arithmetic) with the ONNX reference."""
        feeds = {name: self.consts[name] for name in node.input if name}
        opsets = {o.domain: o.version for o in self.model.opset_import}
        results = ReferenceEvaluator(node, opsets=opsets).run(None, feeds)
        self.consts.update(zip(node.output, (np.asarray(r) for r in results)))

    def build(self) -> tuple[fb.ModelT, dict[str, Any]]:
        init_names = set(self.consts)
        graph_inputs = [i for i in self.graph.input if i.name not in init_names]
        if len(graph_inputs) != 1:
            raise BuildError(f"{self.src}: the built-in converter takes one input; the model has {len(graph_inputs)}")
        inp = graph_inputs[0]
        if inp.type.tensor_type.elem_type != onnx.TensorProto.FLOAT:
            raise BuildError(f"{self.src}: input {inp.name} is not float32; the built-in converter needs float32")
        in_shape = self.shapes[inp.name]
        layout = Layout.NHWC if len(in_shape) == 4 else Layout.SAME
        self.values[inp.name] = _Value(self.b.tensor(inp.name, _stored_shape(in_shape, layout)), layout)
        # ONNX requires nodes in topological order (onnx.checker enforces it), so one pass suffices.
        for node in self.graph.node:
            if node.domain not in ("", "ai.onnx"):
                raise self.unsupported(node, f"from domain {node.domain}")
            if all(name in self.consts for name in node.input if name):
                self._fold(node)
                continue
            handler = self.handlers.get(node.op_type)
            if handler is None:
                raise self.unsupported(node)
            handler(node)
        outputs: dict[str, int] = {}
        for out in self.graph.output:
            if out.name not in self.values:
                raise BuildError(f"{self.src}: output {out.name} is a constant; the built-in converter needs a "
                                 "computed output")
            if self.values[out.name].layout is Layout.SAME:
                outputs[out.name] = self.values[out.name].index
            else:   # graph outputs keep ONNX's layout so callers see the same array from either runtime
                stored = self.values[out.name].index
                self.b.tensors[stored].name = f"{out.name}/stored"
                outputs[out.name] = self.plain(out.name, onnx.NodeProto(name=out.name, op_type="Output"))
                self.b.tensors[outputs[out.name]].name = out.name
        model = self.b.model({inp.name: self.values[inp.name].index}, outputs)
        facts = {
            "input": inp.name,
            "input_shape": list(self.b.tensors[self.values[inp.name].index].shape),
            "layout": "NHWC" if layout is Layout.NHWC else "as-onnx",
            "outputs": {name: list(self.b.tensors[index].shape) for name, index in outputs.items()},
            "ops": sorted(_OP_NAMES[code] for code in self.b.opcodes),
            "batch": self.batch,
        }
        return model, facts


def _max_abs_diff(src: Path, tflite_bytes: bytes, facts: dict[str, Any]) -> float:
    """Run one seeded random input through onnxruntime (the source) and LiteRT (the result)."""
    import onnxruntime as ort
    from ai_edge_litert.interpreter import Interpreter

    shape = facts["input_shape"]
    nhwc = facts["layout"] == "NHWC"
    onnx_shape = [shape[i] for i in _NHWC_TO_NCHW] if nhwc else shape
    x = np.random.default_rng(VALIDATION_SEED).uniform(-1.0, 1.0, onnx_shape).astype(np.float32)
    session = ort.InferenceSession(str(src), providers=["CPUExecutionProvider"])
    expected = dict(zip([o.name for o in session.get_outputs()], session.run(None, {facts["input"]: x})))
    runner = Interpreter(model_content=tflite_bytes).get_signature_runner(SIGNATURE_KEY)
    got = runner(**{facts["input"]: np.ascontiguousarray(x.transpose(_NCHW_TO_NHWC)) if nhwc else x})
    return max(float(np.max(np.abs(got[name] - expected[name]))) for name in facts["outputs"])


def _write_atomic(dst: Path, data: bytes) -> None:
    from harness.files import atomic_write_bytes  # the one atomic write and file mode policy

    dst.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(dst, data)


def convert(src: Path, dst: Path, *, batch: int = 1) -> dict[str, Any]:
    """Convert float32 ONNX `src` to TFLite `dst` with a fixed `batch`; validate against onnxruntime; return facts.

    Facts: input (name), input_shape (e.g. [batch, 32, 32, 3]), layout ("NHWC" for 4-D inputs), outputs
    ({name: shape}, in ONNX layout), ops (TFLite builtin names used), batch, max_abs_diff, tolerance.
    Raises BuildError for an unsupported op/attribute or a result further than TOLERANCE from onnxruntime;
    `dst` is only written (atomically) once the result has passed.
    """
    src, dst = Path(src), Path(dst)
    if batch < 1:
        raise BuildError(f"{src}: batch must be >= 1, got {batch}")
    if not src.is_file():
        raise BuildError(f"{src}: no such ONNX file")
    try:
        model = onnx.load(str(src))
        onnx.checker.check_model(model)
    except Exception as exc:  # protobuf DecodeError / onnx ValidationError: the file itself is bad
        raise IntegrityError(f"{src}: not a valid ONNX model: {str(exc).splitlines()[0]}") from exc
    tflite_model, facts = _Converter(src, model, batch).build()
    data = bytes(flatbuffer_utils.convert_object_to_bytearray(tflite_model))
    try:
        diff = _max_abs_diff(src, data, facts)
    except Exception as exc:  # LiteRT refuses the flatbuffer (RuntimeError/ValueError): our bug, reported as such
        first_line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise BuildError(f"{src}: the converted TFLite model does not run in LiteRT: {first_line}") from exc
    if not diff <= TOLERANCE:
        raise BuildError(f"{src}: converted TFLite differs from onnxruntime by {diff:.3g} (> {TOLERANCE:g})")
    _write_atomic(dst, data)
    return {**facts, "max_abs_diff": diff, "tolerance": TOLERANCE}
