"""The build-method registry: how a manifest's `method = "..."` makes a variant from its parent (issue 21).

A model manifest (models/<id>.toml) builds a variant `from` another with a named method; the method and the two
formats pick one converter here, and the recipe's options are checked against what that converter accepts before
anything runs (harness.specs.load_model). Each entry is plain data: the converter module is imported only when a
build runs, so reading manifests never imports onnxruntime's quantiser, ai-edge-quantizer or tflite2onnx.

Adding a method (say an OpenVINO NNCF int8, or a vendor's own quantiser) is one `BuildMethod` below plus one
function with the converters' signature:

    convert(src: Path, dst: Path, [calib: list[np.ndarray],] **options) -> dict   # facts for the pack record

`calib` is passed to calibrated methods only (the parent variant's inputs for the calibration faces, batched as the
parent runs them; harness.models.build). Option kinds: "bool", "choice" (one of CHOICES[option]), "names" (a list
of non-empty strings), "positive" (a number > 0), "count" (an integer > 0).

Compilers that make a variant for one accelerator from a built one (`tflite-int8@edgetpu`) are not build methods:
they run a vendor's executable on a finished variant (harness.models.compile, specs.COMPILES).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Callable, Mapping

from harness.errors import InputError

OPTION_KINDS = ("bool", "choice", "names", "positive", "count")
CHOICES: Mapping[str, tuple[str, ...]] = MappingProxyType({
    "activation": ("uint8", "int8"), "weight": ("int8", "uint8"), "calib_method": ("minmax", "percentile", "entropy")})


@dataclass(frozen=True)
class Converter:
    """One converter: the parent's format in, the variant's format out."""

    source: str                  # the parent variant's format
    output: str                  # the built variant's format
    function: str                # "module:function", imported when a build runs
    options: Mapping[str, str] = field(default_factory=dict)  # recipe option -> its kind (OPTION_KINDS)

    def load(self) -> Callable[..., dict]:
        module, name = self.function.split(":")
        return getattr(importlib.import_module(module), name)


@dataclass(frozen=True)
class BuildMethod:
    name: str
    what: str                    # one line for docs and errors
    converters: tuple[Converter, ...]
    calibrated: bool = False     # the converter takes calibration inputs (post-training quantisation)

    def converter(self, source: str, output: str) -> Converter | None:
        return next((c for c in self.converters if (c.source, c.output) == (source, output)), None)


_INT8_ONNX = {"activation": "choice", "weight": "choice", "reduce_range": "bool", "per_channel": "bool",
              "calib_method": "choice", "exclude_ops": "names", "exclude_nodes": "names",
              "float_outliers_above": "positive"}

METHODS: Mapping[str, BuildMethod] = MappingProxyType({m.name: m for m in (
    BuildMethod("fp16", "weights and activations in float16", (
        Converter("onnx", "onnx", "harness.convert.onnx_variants:to_fp16"),       # onnxconverter-common
        Converter("tflite", "tflite", "harness.convert.tflite_variants:to_fp16"),  # ai-edge-quantizer
    )),
    BuildMethod("int8", "static post-training 8-bit quantisation, calibrated on the calibration faces", (
        Converter("onnx", "onnx", "harness.convert.onnx_variants:to_int8_recipe", _INT8_ONNX),  # quantize_static
        Converter("tflite", "tflite", "harness.convert.tflite_variants:to_int8",
                  {"float_outliers_above": "positive"}),                           # ai-edge-quantizer
    ), calibrated=True),
    BuildMethod("tflite-to-onnx", "TFLite graph converted to ONNX", (
        Converter("tflite", "onnx", "harness.convert.tflite_to_onnx:convert"),    # tflite2onnx
    )),
    BuildMethod("onnx-to-tflite", "ONNX graph converted to TFLite", (
        Converter("onnx", "tflite", "harness.convert.onnx_to_tflite:convert", {"batch": "count"}),
    )),
)})


def names() -> tuple[str, ...]:
    return tuple(METHODS)


def lookup(method: str, source: str, output: str, where: str) -> tuple[BuildMethod, Converter]:
    """The method and its converter from `source` to `output` format; InputError (one line, `where` first) if the
    method is unknown or makes no such conversion."""
    m = METHODS.get(method)
    if m is None:
        raise InputError(f"{where}: unknown method {method!r}; valid: {', '.join(names())}")
    conv = m.converter(source, output)
    if conv is None:
        made = ", ".join(f"{c.source} -> {c.output}" for c in m.converters)
        raise InputError(f"{where}: method {method!r} makes {made}, not {source} -> {output}")
    return m, conv


def option_error(kind: str, key: str, value: object) -> str | None:
    """Why `value` is not a valid `kind` option, or None."""
    ok = {"bool": isinstance(value, bool),
          "choice": value in CHOICES.get(key, ()),
          "names": isinstance(value, list) and all(isinstance(v, str) and v for v in value),
          "positive": isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0,
          "count": isinstance(value, int) and not isinstance(value, bool) and value > 0}[kind]
    if ok:
        return None
    want = {"bool": "true or false", "choice": " or ".join(f"'{c}'" for c in CHOICES.get(key, ())),
            "names": "a list of names", "positive": "a positive number", "count": "a positive integer"}[kind]
    return f"{key} must be {want}, got {value!r}"
