"""Store targets (issue 13), on a throwaway PostgreSQL 15 cluster (tests/store/pgserver.py):
- `bench compare` over 100 runs x 18 entries read from PostgreSQL: under 2 s;
- the procurement report (`bench report --devices --policy examples/procurement.toml`) for 5 boards read from
  PostgreSQL: under 5 s (issue 22).
Runs are built once by the real writer and scorer (tests/unit/helpers_results.make_run) and pushed with the store.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "tests" / "store"), str(REPO / "tests" / "unit")]

from pgserver import TempCluster, bindir  # noqa: E402

pytestmark = pytest.mark.skipif(bindir() is None, reason="PostgreSQL server binaries not found")
MODELS = ("gender-dlib", "mobilefacenet", "blazeface")
VARIANTS = ("onnx-fp32", "onnx-fp16", "onnx-int8", "tflite-fp32", "tflite-fp16", "tflite-int8")  # 3 x 6 = 18


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    from helpers_results import make_run

    from harness.results.uri import open_store

    root = tmp_path_factory.mktemp("lab")
    template = make_run(root, models=MODELS, variants=VARIANTS, seed=0, n_timings=100)
    boards = [make_run(root, target=t, models=("gender-dlib", "mobilefacenet"), variants=VARIANTS[:3], seed=i,
                       n_timings=100) for i, t in enumerate(("cpu", "rpi", "jetson", "coral", "hailo"))]
    with TempCluster() as pg:
        store = open_store(pg.uri, results_dir=str(root))
        store.put(template)
        for b in boards:
            store.put(b)
        # 99 more nightly runs of 18 entries: the template's documents under new ids (arrays not needed by compare)
        with store._connection().transaction():
            for i in range(99):
                doc = dict(template.doc, run_id=f"20260101T{i:06d}Z-cpu-{i:06x}")
                store._put(doc, [])
        store.close()
        yield pg.uri, root, [template.run_id] + [f"20260101T{i:06d}Z-cpu-{i:06x}" for i in range(99)]


def test_compare_100_runs_from_postgres(lab, benchmark):
    from harness.report.compare import compare
    from harness.results.uri import open_store

    uri, root, ids = lab

    def go():  # as `bench compare` reads them: the headline summary stored with each run
        with open_store(uri, results_dir=str(root)) as store:
            return compare(store.load_headlines(ids))

    table = benchmark.pedantic(go, rounds=3, iterations=1)
    assert len(table.run_ids) == 100 and len(table.rows) == 18
    assert benchmark.stats["max"] < 2.0


def test_buyers_report_5_boards_from_postgres(lab, benchmark):
    from harness.commands.report import _devices
    from harness.results.uri import open_store

    uri, root, _ = lab

    class Args:
        runs, format, trend_since, policy = [], None, "none", REPO / "examples" / "procurement.toml"

    def go():
        with open_store(uri, results_dir=str(root)) as store:
            return _devices(store, Args)

    page = benchmark.pedantic(go, rounds=2, iterations=1)
    assert page.count("<h3>") >= 5 and "Decision against the stated policy" in page
    assert benchmark.stats["max"] < 5.0
