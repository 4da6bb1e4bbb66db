"""Reproducible builds: the same source, recipe and calibration inputs give the same bytes, so that a changed
sha256 in a pack means a changed model.

Every variant of every model is built twice, each time in a fresh process with another PYTHONHASHSEED (Python's
per-process string hashing is what made tflite2onnx's MobileFaceNet ONNX differ on every rebuild), into two tmp
folders, through the build's own conversion dispatch and recipes; the two folders must hold identical files.
Calibration inputs are seeded random arrays: determinism, not accuracy, is under test here (fidelity is
tests/e2e/test_models_e2e.py's business).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness import specs
from harness.models.fetch import sha256_file

REPO = Path(__file__).resolve().parents[2]

CHILD = r"""
import shutil, sys
from pathlib import Path
import numpy as np
from harness import buildmethods, specs
from harness.models.build import _batches, _convert, cpu_runner

sources, out = Path(sys.argv[1]), Path(sys.argv[2])
for m in specs.all_models():
    folder = out / m.id
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    h, w = m.input.size
    samples = [rng.normal(0.0, 1.0, (h, w, 3)).astype(np.float32) for _ in range(8)]
    for variant in m.build_order():
        recipe = m.variants[variant]
        dst = folder / f"{variant}.{recipe.format}"
        if recipe.source:
            shutil.copyfile(sources / m.id / m.source(recipe.source).filename, dst)
            continue
        parent_fmt = m.variants[recipe.parent].format
        parent = folder / f"{recipe.parent}.{parent_fmt}"
        calibrated = buildmethods.METHODS[recipe.method].calibrated
        calib = _batches(cpu_runner(parent, parent_fmt), samples) if calibrated else []
        _convert(recipe.method, parent_fmt, recipe.format, parent, dst, calib, dict(recipe.options))
"""


@pytest.mark.slow
def test_every_variant_builds_into_the_same_bytes_twice(model_sources, tmp_path):
    folders = []
    for seed in ("1", "2"):
        out = tmp_path / f"build-{seed}"
        env = {**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": str(REPO)}
        proc = subprocess.run([sys.executable, "-c", CHILD, str(model_sources), str(out)], env=env,
                              capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-3000:]
        folders.append(out)
    expected = {f"{m.id}/{v}.{m.variants[v].format}" for m in specs.all_models() for v in m.build_order()}
    digests = [{str(p.relative_to(f)): sha256_file(p) for p in f.rglob("*") if p.is_file()} for f in folders]
    assert set(digests[0]) == set(digests[1]) == expected
    differing = sorted(k for k in expected if digests[0][k] != digests[1][k])
    assert differing == [], f"not reproducible: {differing}"
