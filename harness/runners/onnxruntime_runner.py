"""onnxruntime runner: providers from the target profile, and proof that the requested one is active.

onnxruntime-gpu lists CUDA/TensorRT as *available* even without a GPU and silently falls back to CPU when a session
cannot start them, so the check reads session.get_providers() (what the session got), never get_available_providers().
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import numpy as np

from harness.errors import BackendMismatchError, IntegrityError, UnavailableError
from harness.runners.base import BackendInfo, ModelIO, Runner

_ONNX_TO_NUMPY = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(uint8)": "uint8",
                  "tensor(int8)": "int8"}


def import_onnxruntime():
    from harness.interrupts import held

    try:
        with held():  # an interrupt inside its module init would read as "not installed" (harness/interrupts.py)
            import onnxruntime
    except ImportError as exc:
        raise UnavailableError(f"onnxruntime is not installed ({exc.msg}); install exactly one wheel: "
                               "pip install -e '.[cpu]' (onnxruntime) or '.[gpu]' (onnxruntime-gpu)") from None
    return onnxruntime


def available_providers() -> list[str]:
    return list(import_onnxruntime().get_available_providers())


class OnnxRuntimeRunner(Runner):
    runtime = "onnxruntime"

    def __init__(self, path: Path, *, provider: str = "CPUExecutionProvider", threads: int = 0,
                 provider_options: dict | None = None, layout: str | None = None):
        super().__init__(path, threads=threads)
        ort = import_onnxruntime()
        if provider not in ort.get_available_providers():
            raise UnavailableError(f"execution provider {provider} is not available in onnxruntime "
                                   f"{ort.__version__} (available: {', '.join(ort.get_available_providers())})")
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
        opts.log_severity_level = 3
        providers = [(provider, dict(provider_options or {}))]
        try:
            self.session = ort.InferenceSession(str(path), sess_options=opts, providers=providers)
        except Exception as exc:  # onnxruntime raises its own pybind types; all mean "this file cannot be loaded"
            text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            if "provider" in text.lower():
                raise UnavailableError(f"{path.name}: {provider} failed to start: {text}") from None
            raise IntegrityError(f"{path}: onnxruntime cannot load the model: {text}") from None
        active = list(self.session.get_providers())
        self.backend = BackendInfo(runtime="onnxruntime", version=ort.__version__, requested=provider, active=active,
                                   ok=bool(active) and active[0] == provider)
        if not self.backend.ok:
            raise BackendMismatchError(provider, active)
        inp = self.session.get_inputs()[0]
        shape = tuple(d if isinstance(d, int) else -1 for d in inp.shape)
        if layout is None:
            layout = "NCHW" if len(shape) == 4 and shape[1] in (1, 3) and shape[3] not in (1, 3) else "NHWC"
        self.io = ModelIO(input_name=inp.name, input_shape=shape, layout=layout,
                          dtype=_ONNX_TO_NUMPY.get(inp.type, "float32"),
                          output_names=tuple(o.name for o in self.session.get_outputs()))
        self._feed_name = inp.name

    def infer(self, prepared: np.ndarray) -> list[np.ndarray]:
        return self.session.run(None, {self._feed_name: prepared})

    def close(self) -> None:
        self.session = None


# -- the runtime registry's interface (harness/runtimes.py) ----------------------------------------------------------
GPU_PROVIDERS = ("CUDAExecutionProvider", "TensorrtExecutionProvider")


def make(backend: Any, path: Path, *, layout: Optional[str] = None) -> OnnxRuntimeRunner:
    return OnnxRuntimeRunner(path, provider=backend.provider or "CPUExecutionProvider", threads=backend.threads,
                             provider_options=dict(backend.provider_options), layout=layout)


def availability(backend: Any) -> Tuple[bool, Optional[str]]:
    providers = available_providers()
    if backend.provider not in providers:
        hint = "onnxruntime-gpu not installed" if backend.provider in GPU_PROVIDERS else "provider missing"
        return False, f"{backend.provider} not available ({hint}; have: {', '.join(providers)})"
    if backend.provider in GPU_PROVIDERS and not _nvidia_gpu_present():
        return False, f"{backend.provider} listed but no NVIDIA GPU/driver found (libcuda.so.1 missing)"
    return True, None


def prepare(backend: Any, model_sha256: str) -> Tuple[Any, Optional[Dict[str, Any]]]:
    """TensorRT's engine cache kept on the board, keyed by what decides the engine (harness/device/artefacts.py)."""
    import dataclasses

    from harness.device import artefacts

    options, artefact = artefacts.prepare(backend.provider, backend.provider_options, model_sha256,
                                          ort_version=import_onnxruntime().__version__)
    return dataclasses.replace(backend, provider_options=options), artefact


def _nvidia_gpu_present() -> bool:
    import ctypes.util

    return ctypes.util.find_library("cuda") is not None or Path("/dev/nvidia0").exists()
