"""The board's artefact cache: compiled forms of a model that a runtime builds on the device and can keep.

TensorRT (onnxruntime's TensorrtExecutionProvider) compiles an engine for the exact GPU, TensorRT version and
options on first use; onnxruntime writes it to `trt_engine_cache_path`, by default the process's working folder,
which is the job folder the SSH launcher deletes after every entry. So without a kept cache a Jetson rebuilds the
engine for every entry and every night, minutes each on an Orin, all counted as init. This module gives each engine
a folder keyed by what determines it (onnxruntime's TensorRT EP documentation: the engine is valid only for the
same model, TensorRT version, GPU and EP options), outside any job folder:

    <root>/tensorrt/<key>/        key = sha256 of {model sha256, onnxruntime version, TensorRT version, GPU, options}

and reports whether the engine was already there (a cache hit) and what files it holds. The worker then creates
the session twice on a miss: the first includes the engine build, the second loads from the cache; init_ms is the
load alone and engine_build_ms the difference, so a benchmark's init is comparable across nights. The root is
BENCH_DEVICE_CACHE or ~/.cache/edge-fair-bench-device. Standard library only (the device side).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Mapping

ROOT_ENV = "BENCH_DEVICE_CACHE"
TRT_PROVIDER = "TensorrtExecutionProvider"
ENGINE_SUFFIXES = (".engine", ".profile", ".timing")  # onnxruntime's TRT EP cache file endings


def cache_root() -> Path:
    return Path(os.environ.get(ROOT_ENV) or Path.home() / ".cache" / "edge-fair-bench-device")


def _gpu_name() -> str:
    """The GPU the engine is built for: a Jetson's device-tree model, else nvidia-smi's first name, else 'unknown'."""
    try:
        return Path("/proc/device-tree/model").read_bytes().rstrip(b"\x00").decode("utf-8", "replace").strip()
    except OSError:
        pass
    import shutil
    import subprocess

    if shutil.which("nvidia-smi"):
        try:
            out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                                 text=True, timeout=5, check=False).stdout.strip().splitlines()
            if out:
                return out[0].strip()
        except (OSError, subprocess.SubprocessError):
            pass
    return "unknown"


def _tensorrt_version() -> str:
    try:
        import tensorrt  # type: ignore[import-not-found]

        return str(tensorrt.__version__)
    except Exception:  # noqa: BLE001 - absent or broken: JetPack ships libnvinfer without the Python module
        return "unknown"


def engine_files(folder: Path) -> list[dict[str, Any]]:
    if not folder.is_dir():
        return []
    return [{"name": p.name, "bytes": p.stat().st_size} for p in sorted(folder.iterdir())
            if p.is_file() and p.name.endswith(ENGINE_SUFFIXES)]


def prepare(provider: str | None, options: Mapping[str, Any], model_sha256: str, *, ort_version: str,
            root: Path | None = None, gpu: str | None = None, trt_version: str | None = None
            ) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """Provider options with a kept engine cache, and what the cache held before the session (None when the
    provider keeps no artefact, or the profile set its own cache path or left caching off)."""
    opts = dict(options)
    if provider != TRT_PROVIDER or not _truthy(opts.get("trt_engine_cache_enable")) \
            or opts.get("trt_engine_cache_path"):
        return opts, None
    identity = {"model_sha256": model_sha256, "onnxruntime": ort_version,
                "tensorrt": trt_version if trt_version is not None else _tensorrt_version(),
                "gpu": gpu if gpu is not None else _gpu_name(),
                "options": {k: str(v) for k, v in sorted(opts.items())}}
    key = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:20]
    folder = (root or cache_root()) / "tensorrt" / key
    folder.mkdir(parents=True, exist_ok=True)
    opts["trt_engine_cache_path"] = str(folder)
    opts.setdefault("trt_timing_cache_enable", "True")
    opts.setdefault("trt_timing_cache_path", str(folder))
    before = engine_files(folder)
    return opts, {"kind": "tensorrt-engine", "key": key, "path": str(folder), "identity": identity,
                  "hit": any(f["name"].endswith(".engine") for f in before), "files_before": before}


def _truthy(value: Any) -> bool:
    return str(value).strip().lower() in ("1", "true", "yes", "on")
