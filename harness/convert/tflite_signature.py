"""Give a .tflite model a SignatureDef when it has none.

ai-edge-quantizer calibrates and validates through signature runners, so a model without a SignatureDef
(MobileFaceNet.tflite, the BlazeFace short-range file) cannot be int8-quantized until it gets one. The signature maps
the subgraph's input and output tensors by their own tensor names.
"""

from __future__ import annotations

from ai_edge_litert import schema_py_generated as schema_fb
from ai_edge_litert.tools import flatbuffer_utils

from harness.errors import BuildError


def _name(raw: bytes | str | None, index: int) -> str:
    if raw is None:
        return f"tensor_{index}"
    return raw.decode() if isinstance(raw, bytes) else raw


def signature_keys(model_bytes: bytes) -> list[str]:
    """Keys of the SignatureDefs the model already has."""
    model = _read(model_bytes)
    return [_name(s.signatureKey, i) for i, s in enumerate(model.signatureDefs or [])]


def _read(model_bytes: bytes) -> schema_fb.ModelT:
    try:
        return flatbuffer_utils.read_model_from_bytearray(bytearray(model_bytes))
    except Exception as exc:  # the flatbuffer reader raises struct/index/value errors on corrupt input
        raise BuildError(f"tflite model ({len(model_bytes)} bytes): cannot read flatbuffer: {exc}") from exc


def ensure_signature(model_bytes: bytes, key: str = "serving_default") -> bytes:
    """The model bytes unchanged when a SignatureDef exists; else the model with one signature `key` over
    subgraph 0, inputs and outputs named after their tensors."""
    model = _read(model_bytes)
    if model.signatureDefs:
        return model_bytes
    if not model.subgraphs:
        raise BuildError(f"tflite model ({len(model_bytes)} bytes): has no subgraph to sign")
    graph = model.subgraphs[0]

    def tensor_maps(indices: list[int]) -> list[schema_fb.TensorMapT]:
        maps = []
        for idx in indices:
            tensor_map = schema_fb.TensorMapT()
            tensor_map.name = _name(graph.tensors[idx].name, idx)
            tensor_map.tensorIndex = int(idx)
            maps.append(tensor_map)
        return maps

    signature = schema_fb.SignatureDefT()
    signature.signatureKey = key
    signature.subgraphIndex = 0
    signature.inputs = tensor_maps(list(graph.inputs))
    signature.outputs = tensor_maps(list(graph.outputs))
    model.signatureDefs = [signature]
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))
