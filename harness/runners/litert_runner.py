"""LiteRT runner (ai-edge-litert; tflite_runtime as a fallback on older devices).

Delegates are proven after allocation: a delegated graph shows DELEGATE nodes in the interpreter's node list. An
Edge TPU model must also contain the edgetpu custom op, since an uncompiled model would otherwise run on the CPU
unnoticed; the same node list (`_get_ops_details`) shows it: it names a custom node by its custom code, and the
nodes a delegate replaced stay listed beside the DELEGATE node (both seen with ai-edge-litert 2.3 and tflite-runtime
2.13). So the runner needs nothing beyond the interpreter module: no flatbuffer reader (ai_edge_litert.tools,
which tflite-runtime lacks).

Everything here works with tflite-runtime 2.13 (Python 3.8/3.9 boards: pyproject's device-litert markers),
checked on its cp39 wheels (x86_64 and, emulated, aarch64: tests/e2e/test_arm64_bullseye.py): XNNPACK by default,
the "none"/"reference" resolver (OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES), `_get_ops_details`,
`load_delegate`. What 2.13 lacks: its default XNNPACK delegate takes float operators only, no quantized ones
(measured: 0 of gender-dlib tflite-int8's nodes delegated, where ai-edge-litert 2.3 delegates 3 partitions; the int8
models with float operators left get those delegated), so a model whose every operator is int8, asked for on
"xnnpack", is refused with that reason (BackendMismatchError, exit 3; in a run that entry fails saying so), never
run on the builtin kernels under XNNPACK's name.
"""

from __future__ import annotations

import ctypes.util
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import numpy as np

from harness.errors import BackendMismatchError, IntegrityError, UnavailableError
from harness.runners.base import BackendInfo, ModelIO, Runner


def import_litert():
    """(interpreter module, package name, version). ai-edge-litert first, tflite_runtime for older devices."""
    from importlib import metadata

    from harness.interrupts import held

    try:
        with held():  # an interrupt inside its module init would read as "not installed" (harness/interrupts.py)
            from ai_edge_litert import interpreter as mod
        return mod, "ai-edge-litert", metadata.version("ai-edge-litert")
    except ImportError:
        pass
    try:
        with held():
            from tflite_runtime import interpreter as mod
        return mod, "tflite-runtime", metadata.version("tflite-runtime")
    except ImportError:
        raise UnavailableError("no LiteRT runtime: pip install ai-edge-litert (or tflite-runtime on older devices)") from None


def find_delegate_library(name: str) -> str | None:
    """Path-or-name of a delegate shared library if the dynamic loader can find it."""
    if Path(name).is_file():
        return name
    stem = (name[3:] if name.startswith("lib") else name).split(".so")[0]  # str.removeprefix is 3.9+
    return ctypes.util.find_library(stem)


def _execution_ops(interp) -> list[str]:
    try:
        return [op["op_name"] for op in interp._get_ops_details()]
    except Exception:  # private API: absent on some builds -> cannot prove, reported as such
        return []


class LiteRTRunner(Runner):
    runtime = "litert"

    def __init__(self, path: Path, *, delegate: str = "xnnpack", delegate_library: str | None = None,
                 threads: int = 0, layout: str = "NHWC"):
        super().__init__(path, threads=threads)
        mod, package, version = import_litert()
        kwargs: dict = {"model_path": str(path)}
        if threads:
            kwargs["num_threads"] = threads
        if delegate == "xnnpack":
            pass  # LiteRT applies XNNPACK by default on CPU; proven below
        elif delegate in ("none", "reference"):
            kwargs["experimental_op_resolver_type"] = mod.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        else:
            lib = delegate_library or delegate
            if find_delegate_library(lib) is None:
                raise UnavailableError(f"delegate '{delegate}': {lib} not found (install it, e.g. libedgetpu1-std)")
            try:
                kwargs["experimental_delegates"] = [mod.load_delegate(lib)]
            except (ValueError, OSError) as exc:
                raise UnavailableError(f"delegate '{delegate}': loading {lib} failed: {exc}") from None
        try:
            self.interp = mod.Interpreter(**kwargs)
            self.interp.allocate_tensors()
        except (ValueError, RuntimeError) as exc:
            raise IntegrityError(f"{path}: LiteRT cannot load the model: {str(exc).splitlines()[0]}") from None
        ops = _execution_ops(self.interp)
        delegated = ops.count("DELEGATE")
        active = [f"{delegate}:{delegated} delegated nodes"] if delegated else ["builtin CPU kernels"]
        ok = delegate in ("none", "reference") or delegated > 0
        if delegate == "xnnpack" and not delegated and package == "tflite-runtime" and _quantized(self.interp):
            active = [f"builtin CPU kernels ({package} {version}'s XNNPACK delegates float operators only: "
                      f"tflite-fp32/fp16 run on it; int8 needs ai-edge-litert (Python >= 3.10) or delegate 'none')"]
        if delegate == "edgetpu" and "edgetpu-custom-op" not in ops:
            ok, active = False, ["builtin CPU kernels (model not compiled by edgetpu_compiler)"]
        detail = None
        if delegate == "edgetpu":  # the board's Edge TPU runtime, recorded beside the run (issue 21)
            from harness.device.libedgetpu import libedgetpu_version

            detail = f"libedgetpu: {libedgetpu_version(delegate_library or 'libedgetpu.so.1')}"
        self.backend = BackendInfo(runtime="litert", version=f"{package} {version}", requested=delegate,
                                   active=active, ok=ok, detail=detail)
        if not ok:
            raise BackendMismatchError(delegate, active, what="delegate")
        inp = self.interp.get_input_details()[0]
        outs = self.interp.get_output_details()
        self.io = ModelIO(input_name=inp["name"], input_shape=tuple(int(d) for d in inp["shape"]), layout=layout,
                          dtype=np.dtype(inp["dtype"]).name, output_names=tuple(o["name"] for o in outs))
        self._in_index = inp["index"]
        self._out_index = [o["index"] for o in outs]
        self._in_quant = inp.get("quantization", (0.0, 0))
        self._out_quant = [o.get("quantization", (0.0, 0)) for o in outs]

    def prepare(self, batch_nhwc: np.ndarray, *, dtype: str | None = None) -> tuple[np.ndarray, int]:
        x, n = super().prepare(batch_nhwc) if self.io.dtype in ("float32", "float16") else self._quantize(batch_nhwc)
        if tuple(x.shape) != self.io.input_shape:
            self.interp.resize_tensor_input(self._in_index, list(x.shape))
            self.interp.allocate_tensors()
            self.io = ModelIO(self.io.input_name, tuple(x.shape), self.io.layout, self.io.dtype, self.io.output_names)
        return x, n

    def _quantize(self, batch_nhwc: np.ndarray) -> tuple[np.ndarray, int]:
        # Integer-IO models (e.g. Edge TPU compiled): quantize with the input tensor's scale/zero point.
        x, n = Runner.prepare(self, batch_nhwc, dtype="float32")
        scale, zero = self._in_quant
        info = np.iinfo(self.io.dtype)
        q = np.clip(np.round(x.astype(np.float32) / scale + zero), info.min, info.max).astype(self.io.dtype)
        return q, n

    def infer(self, prepared: np.ndarray) -> list[np.ndarray]:
        self.interp.set_tensor(self._in_index, prepared)
        self.interp.invoke()
        outs = []
        for idx, (scale, zero) in zip(self._out_index, self._out_quant):
            y = self.interp.get_tensor(idx)
            if y.dtype in (np.int8, np.uint8, np.int16) and scale:
                y = (y.astype(np.float32) - zero) * scale
            outs.append(y)
        return outs

    def max_batch(self, wanted: int) -> int:
        return self.io.fixed_batch if self.io.input_shape[0] > 1 else 1

    def close(self) -> None:
        self.interp = None


def _quantized(interp) -> bool:
    """Whether the model holds int8/uint8 tensors (a quantized model)."""
    try:
        return any(np.dtype(t["dtype"]) in (np.int8, np.uint8) for t in interp.get_tensor_details())
    except Exception:
        return False


# -- the runtime registry's interface (harness/runtimes.py) ----------------------------------------------------------
def make(backend: Any, path: Path, *, layout: Optional[str] = None) -> LiteRTRunner:
    return LiteRTRunner(path, delegate=backend.delegate or "xnnpack", delegate_library=backend.delegate_library,
                        threads=backend.threads, layout=layout or "NHWC")


def availability(backend: Any) -> Tuple[bool, Optional[str]]:
    import_litert()
    if backend.delegate not in (None, "xnnpack", "none", "reference"):
        lib = backend.delegate_library or backend.delegate
        if find_delegate_library(lib) is None:
            return False, f"{lib} not found"
    return True, None


def prepare(backend: Any, model_sha256: str) -> Tuple[Any, Optional[Dict[str, Any]]]:
    """LiteRT keeps no board-side artefact: a compiled Edge TPU model is a variant of its own (tflite-int8@edgetpu)."""
    return backend, None
