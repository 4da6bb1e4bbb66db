"""Where things live: model cache, data root, results root.

Each root is resolved flag > environment variable > default, and the source is kept so the run can record
where every setting came from.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent

ENV_CACHE = "BENCH_CACHE"
ENV_DATA = "BENCH_DATA"
ENV_RESULTS = "BENCH_RESULTS"


@dataclass(frozen=True)
class Resolved:
    path: Path
    source: str  # "flag" | "env" | "default"

    def to_dict(self) -> dict:
        return {"path": str(self.path), "source": self.source}


def _resolve(flag: str | os.PathLike | None, env: str, defaults: list[Path]) -> Resolved:
    if flag:
        return Resolved(Path(flag).expanduser().resolve(), "flag")
    if os.environ.get(env):
        return Resolved(Path(os.environ[env]).expanduser().resolve(), "env")
    for candidate in defaults:
        if candidate.exists():
            return Resolved(candidate.resolve(), "default")
    return Resolved(defaults[0].resolve() if defaults else Path.cwd(), "default")


def cache_root(flag: str | None = None) -> Resolved:
    return _resolve(flag, ENV_CACHE, [Path.home() / ".cache" / "edge-fair-bench"])


def data_root(flag: str | None = None) -> Resolved:
    # The shared sample data sits beside the checkout (../shared/data); a user's own data root wins when given.
    return _resolve(flag, ENV_DATA, [Path.cwd() / ".." / "shared" / "data", REPO_ROOT.parent / "shared" / "data"])


def results_root(flag: str | None = None) -> Resolved:
    return _resolve(flag, ENV_RESULTS, [Path.cwd() / "results"])


def sources_dir(cache: Path, model_id: str) -> Path:
    return cache / "sources" / model_id


def packs_dir(cache: Path, model_id: str) -> Path:
    return cache / "packs" / model_id
