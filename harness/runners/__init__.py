"""Runtime runners behind one interface, found through the runtime registry (harness/runtimes.py): each runtime's
module is imported only when it is used, so a device needs only the runtime it runs."""

from __future__ import annotations

from pathlib import Path

from harness import runtimes
from harness.errors import UnavailableError
from harness.runners.base import BackendInfo, ModelIO, Runner
from harness.specs import Backend

__all__ = ["BackendInfo", "ModelIO", "Runner", "make_runner", "backend_availability"]


def make_runner(backend: Backend, path: Path, *, layout: str | None = None) -> Runner:
    """Load `path` on `backend`; raises UnavailableError / BackendMismatchError if the backend is not really active."""
    return runtimes.module(backend.runtime).make(backend, path, layout=layout)


def backend_availability(backend: Backend) -> tuple[bool, str | None]:
    """Whether this machine can start `backend`, without loading a model. (available, reason if not)."""
    try:
        return runtimes.module(backend.runtime).availability(backend)
    except UnavailableError as exc:
        return False, exc.message
