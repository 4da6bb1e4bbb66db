"""Runtime runners behind one interface; imported lazily so a device needs only the runtime it uses."""

from __future__ import annotations

from pathlib import Path

from harness.errors import UnavailableError
from harness.runners.base import BackendInfo, ModelIO, Runner
from harness.specs import Backend

__all__ = ["BackendInfo", "ModelIO", "Runner", "make_runner", "backend_availability"]


def make_runner(backend: Backend, path: Path, *, layout: str | None = None) -> Runner:
    """Load `path` on `backend`; raises UnavailableError / BackendMismatchError if the backend is not really active."""
    if backend.runtime == "onnxruntime":
        from harness.runners.onnxruntime_runner import OnnxRuntimeRunner

        return OnnxRuntimeRunner(path, provider=backend.provider or "CPUExecutionProvider", threads=backend.threads,
                                 provider_options=dict(backend.provider_options), layout=layout)
    if backend.runtime == "litert":
        from harness.runners.litert_runner import LiteRTRunner

        return LiteRTRunner(path, delegate=backend.delegate or "xnnpack", delegate_library=backend.delegate_library,
                            threads=backend.threads, layout=layout or "NHWC")
    raise UnavailableError(f"no runner for runtime '{backend.runtime}'")


def backend_availability(backend: Backend) -> tuple[bool, str | None]:
    """Whether this machine can start `backend`, without loading a model. (available, reason if not)."""
    try:
        if backend.runtime == "onnxruntime":
            from harness.runners.onnxruntime_runner import available_providers

            providers = available_providers()
            if backend.provider not in providers:
                gpu = backend.provider in ("CUDAExecutionProvider", "TensorrtExecutionProvider")
                hint = "onnxruntime-gpu not installed" if gpu else "provider missing"
                return False, f"{backend.provider} not available ({hint}; have: {', '.join(providers)})"
            if backend.provider in ("CUDAExecutionProvider", "TensorrtExecutionProvider") and not _nvidia_gpu_present():
                return False, f"{backend.provider} listed but no NVIDIA GPU/driver found (libcuda.so.1 missing)"
            return True, None
        if backend.runtime == "litert":
            from harness.runners.litert_runner import find_delegate_library, import_litert

            import_litert()
            if backend.delegate not in (None, "xnnpack", "none", "reference"):
                lib = backend.delegate_library or backend.delegate
                if find_delegate_library(lib) is None:
                    return False, f"{lib} not found"
            return True, None
    except UnavailableError as exc:
        return False, exc.message
    return False, f"unknown runtime '{backend.runtime}'"


def _nvidia_gpu_present() -> bool:
    import ctypes.util

    return ctypes.util.find_library("cuda") is not None or Path("/dev/nvidia0").exists()
