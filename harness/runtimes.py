"""The runtime registry: every inference runtime the harness can drive, by the name target profiles use.

One entry per runtime, one module per runtime (harness/runners/<name>_runner.py). The module is imported only when a
backend of that runtime is started, checked or prepared, so a board's device install still needs exactly one runtime
(docs/architecture.md, "Lean device install"); everything else here is plain data the host and the board read
without importing any runtime. Adding a runtime (an OpenVINO NPU, a Hailo-8) is one entry below plus one runner
module with three functions:

- `make(backend, path, *, layout)` -> a harness.runners.base.Runner with the backend proven active;
- `availability(backend)` -> (available, reason if not), without loading a model;
- `prepare(backend, model_sha256)` -> (backend to start, artefact record or None): the job's prepare step, where a
  runtime keeps a board-side artefact (onnxruntime's TensorRT engine cache, harness/device/artefacts.py).

Device side: stdlib only and Python 3.8 syntax (tests/unit/test_device_python_floor.py).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Dict, Optional, Tuple

from harness.errors import UnavailableError


@dataclass(frozen=True)
class Runtime:
    """What the harness knows about a runtime without importing it."""

    name: str
    module: str                 # the runner module (make / availability / prepare)
    option: str                 # the profile's backend key naming what runs the model: "provider" or "delegate"
    default: str                # what runs it when the profile names nothing (the runner's own default)
    cpu: Tuple[str, ...]        # option values that run the model on this machine's CPU (not an accelerator)
    extra: str                  # pyproject.toml's device extra that installs it (bench device provision)
    packages: Tuple[str, ...]   # distributions that provide it, in the environment fingerprint
    option_required: bool = False  # a profile's backend must name its option


RUNTIMES: Dict[str, Runtime] = {r.name: r for r in (
    # onnxruntime-gpu installs the same module under another distribution name: both listed, so a run says which
    # wheel provided it. Its providers: onnxruntime.ai/docs/execution-providers.
    Runtime("onnxruntime", "harness.runners.onnxruntime_runner", option="provider", default="CPUExecutionProvider",
            cpu=("CPUExecutionProvider",), extra="device-onnx", packages=("onnxruntime", "onnxruntime-gpu"),
            option_required=True),
    # ai-edge-litert, or tflite-runtime on older boards. XNNPACK and the builtin kernels ("none", "reference": the
    # interpreter without default delegates) run on the CPU; any other delegate is an accelerator (Edge TPU).
    Runtime("litert", "harness.runners.litert_runner", option="delegate", default="xnnpack",
            cpu=("xnnpack", "none", "reference"), extra="device-litert",
            packages=("ai_edge_litert", "tflite_runtime")),
)}


def names() -> Tuple[str, ...]:
    return tuple(RUNTIMES)


def get(name: str) -> Runtime:
    try:
        return RUNTIMES[name]
    except KeyError:
        raise UnavailableError(f"no runner for runtime '{name}' (known: {', '.join(RUNTIMES)})") from None


def module(name: str) -> Any:
    """The runner module of `name`, imported now (this is the one place a runtime's module is imported)."""
    return importlib.import_module(get(name).module)


def requested(backend: Any) -> str:
    """The provider/delegate a backend (specs.Backend or jobs.BackendRequest) asks for, as its runner reports it."""
    return getattr(backend, get(backend.runtime).option, None) or get(backend.runtime).default


def cpu_executed(backend: Any) -> bool:
    """Whether the backend runs the model on this machine's CPU (so CPU contention can starve it)."""
    if backend.runtime not in RUNTIMES:
        return False
    rt = RUNTIMES[backend.runtime]
    chosen: Optional[str] = getattr(backend, rt.option, None)
    return (chosen or rt.default).lower() in {c.lower() for c in rt.cpu}


def fingerprint_packages() -> Tuple[str, ...]:
    """Every runtime's distributions, for the environment fingerprint."""
    return tuple(p for r in RUNTIMES.values() for p in r.packages)
