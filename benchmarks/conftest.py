"""Shared benchmark fixtures: the shared data, the model packs built once per session, and one real model input.

benchmarks/ is not under testpaths (pyproject: testpaths = ["tests"]), so tests/conftest.py does not apply here;
these fixtures mirror its data_root / cache_dir / built_packs. Building is idempotent: a warm cache costs a few
seconds (sha256 checks), a cold one about a minute.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
# The one photo every benchmark feeds (London set, first row of labels.csv). Latency of these graphs does not
# depend on pixel values, but a real image keeps int8 activations in their calibrated range.
FACE_IMAGE = ("london-frl", "neutral_front/001_03.jpg")


def shared_data_dir() -> Path:
    return Path(os.environ.get("BENCH_DATA") or REPO.parent / "shared" / "data")


@pytest.fixture(scope="session")
def data_root() -> Path:
    root = shared_data_dir()
    if not (root / FACE_IMAGE[0] / "labels.csv").is_file():
        pytest.skip(f"shared data not found at {root} (set BENCH_DATA)")
    return root


@pytest.fixture(scope="session")
def built_packs(data_root: Path) -> Path:
    """All three models' packs, built (or verified) once per session into the normal cache; returns the cache root."""
    from harness import specs
    from harness.models.build import build
    from harness.paths import cache_root

    cache = cache_root().path
    build(cache, data_root, specs.all_models(), log=lambda msg: None)
    return cache


@pytest.fixture(scope="session")
def face_image(data_root: Path) -> np.ndarray:
    """RGB uint8 pixels of FACE_IMAGE, decoded the way the harness decodes dataset images."""
    from harness.data.images import decode

    return decode(data_root / FACE_IMAGE[0] / FACE_IMAGE[1])


@pytest.fixture(scope="session")
def model_input(face_image: np.ndarray) -> Callable[[str], np.ndarray]:
    """model id -> [1, H, W, 3] float32 input at the model's size and normalisation (before runner.prepare).

    The whole photo is letterboxed for every model, also the chip models: detection and alignment are not what
    these benchmarks time, and the graphs cost the same whatever face is in the chip.
    """
    from harness import specs
    from harness.tasks.preprocess import letterbox, normalize

    def make(model_id: str) -> np.ndarray:
        spec = specs.get_model(model_id).input
        height, width = spec.size
        boxed, _ = letterbox(face_image, (width, height))
        return normalize(boxed, spec.mean, spec.scale)[None]

    return make
