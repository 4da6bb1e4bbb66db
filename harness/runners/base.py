"""The Runner interface every runtime implements.

A runner loads one model variant, proves which backend is really executing it, and then separates the work a
benchmark must not time (`prepare`: layout, dtype, fixed-batch padding) from the work it must time (`infer`).
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class ModelIO:
    """What the loaded model expects: the input's name, shape (batch may be -1 = dynamic), layout and dtype."""

    input_name: str
    input_shape: tuple[int, ...]
    layout: str  # NHWC | NCHW
    dtype: str
    output_names: tuple[str, ...]

    @property
    def fixed_batch(self) -> int:
        b = self.input_shape[0]
        return int(b) if isinstance(b, (int, np.integer)) and b > 0 else 0


@dataclass
class BackendInfo:
    runtime: str
    version: str
    requested: str
    active: list[str] = field(default_factory=list)
    ok: bool = True
    detail: str | None = None

    def to_dict(self) -> dict:
        return {"runtime": self.runtime, "version": self.version, "requested": self.requested,
                "active": list(self.active), "ok": self.ok, "detail": self.detail}


class Runner(abc.ABC):
    """Load -> prove backend -> prepare(batch) -> infer(prepared) -> outputs (name-ordered list of arrays)."""

    runtime: str = ""

    def __init__(self, path: Path, *, threads: int = 0):
        self.path = Path(path)
        self.threads = threads
        self.io: ModelIO
        self.backend: BackendInfo

    @abc.abstractmethod
    def infer(self, prepared: np.ndarray) -> list[np.ndarray]:
        """Run one prepared batch; returns outputs in `self.io.output_names` order. This is the timed call."""

    def close(self) -> None:  # pragma: no cover - default no-op
        pass

    def prepare(self, batch_nhwc: np.ndarray, *, dtype: str | None = None) -> tuple[np.ndarray, int]:
        """NHWC float32 batch -> model-ready array (in `dtype`, default the model's), and the count of real rows.

        Fixed-batch graphs (MobileFaceNet's batch of 2) cannot be resized: a short batch is padded by repeating its
        last row, and the caller drops the padded outputs using the returned count.
        """
        x = np.asarray(batch_nhwc, dtype=np.float32)
        if x.ndim == 3:
            x = x[None]
        n = x.shape[0]
        fixed = self.io.fixed_batch
        if fixed and n != fixed:
            if n > fixed:
                raise ValueError(f"{self.path.name}: batch of {n} exceeds the model's fixed batch {fixed}")
            x = np.concatenate([x, np.repeat(x[-1:], fixed - n, axis=0)], axis=0)
        if self.io.layout == "NCHW":
            x = x.transpose(0, 3, 1, 2)
        return np.ascontiguousarray(x, dtype=dtype or self.io.dtype), n

    def run(self, batch_nhwc: np.ndarray) -> list[np.ndarray]:
        """prepare + infer + trim padding: for accuracy passes, where preparation need not be timed apart."""
        prepared, n = self.prepare(batch_nhwc)
        return [o[:n] if o.ndim and o.shape[0] == prepared.shape[0] else o for o in self.infer(prepared)]

    def max_batch(self, wanted: int) -> int:
        return self.io.fixed_batch or wanted
