"""Capture-condition cost on the host (ms per image per transform; docs/camera.md) on one real 640x640 London face.
The condition runs once per image on the host, before detection, so this is added to acquisition time, never to a
board's timings."""

from __future__ import annotations

import pytest

from harness.camera.conditions import parse
from harness.data.images import decode

from conftest import FACE_IMAGE

SPECS = ["exposure:-2", "motion:15", "defocus:4", "jpeg:30", "wb:3000", "h264:1000", "h265:1000"]


@pytest.mark.parametrize("spec", SPECS)
def test_condition_cost(benchmark, data_root, spec):
    if spec.startswith("h26"):
        pytest.importorskip("av")
    img = decode(data_root / FACE_IMAGE[0] / FACE_IMAGE[1])
    (cond,) = parse(spec)
    out = benchmark.pedantic(lambda: cond.apply(img, key="bench"), rounds=5, iterations=1, warmup_rounds=1)
    assert out.shape == img.shape
