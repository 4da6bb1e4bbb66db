"""The energy above idle in the tabular outputs (issue 21): one projection (harness.results.rows.energy_record) gives
the `bench export` speed table, the PostgreSQL store's efb_speed (tests/store/test_store_energy.py) and the
`bench report` / `bench compare` tables the same columns: the gross energy's interval, the idle power, the net
power and net energy per inference with their 95% intervals, and why one is missing; null where the run has no
such block, and a board's values that are not numbers never used."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from harness.commands.export import frames
from harness.metrics.energy import above_idle
from harness.report.compare import compare
from harness.report.html import render_html, render_markdown
from harness.report.summary import EntrySummary, summarize
from harness.results.rows import ENERGY_COLS, SPEED_COLS, energy_record, rows_for
from harness.trackers.telemetry import power_stats
from helpers_results import make_run

WINDOW_S, N = 10.0, 400


def _net(seed: int = 3) -> dict:
    """speed.energy_above_idle of a board read every 0.1 s: 3 s idle near 1800 mW, then 10 s active near 4200 mW."""
    rng = np.random.default_rng(seed)
    idle_t, act_t = np.arange(-3.0, 0.0, 0.1), np.arange(0.0, WINDOW_S + 1e-9, 0.1)
    series = np.r_[np.c_[idle_t, 1800 + rng.normal(0, 40, idle_t.size)],
                   np.c_[act_t, 4200 + rng.normal(0, 150, act_t.size)]]
    power = power_stats(series, WINDOW_S)
    power["idle_readings"] = int(idle_t.size)
    telemetry = {"hwmon": {"available": True, "summary": {"samples": len(series), "power": power}}}
    return above_idle(telemetry, 4200 * WINDOW_S / N, N)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("results")
    net = _net()
    no_idle = {**dict.fromkeys(("net_mw", "net_ci_mw", "energy_mj_per_inference", "energy_ci_mj")),
               "idle_mw": None, "idle_readings": 0, "gross_energy_ci_mj": net["gross_energy_ci_mj"],
               "reason": "no idle power: no idle window (--idle-s 0)"}
    run = make_run(root, target="rpi", energy_mj={"onnx-fp32": 105.0, "onnx-int8": 105.0},
                   above_idle={"onnx-fp32": net, "onnx-int8": no_idle})
    old = make_run(root, target="rpi", seed=1, energy_mj={"onnx-fp32": 5.0})  # a run from before the block
    return run, old, net


def test_energy_record_projects_the_block_with_its_intervals_and_reasons():
    net = _net()
    rec = energy_record({"energy_above_idle": net})
    assert tuple(rec) == ENERGY_COLS and SPEED_COLS[-len(ENERGY_COLS):] == ENERGY_COLS
    assert rec["net_energy_mj"] == net["energy_mj_per_inference"] and rec["net_mw"] == net["net_mw"]
    assert [rec["net_energy_ci_lo_mj"], rec["net_energy_ci_hi_mj"]] == net["energy_ci_mj"]
    assert rec["net_energy_ci_lo_mj"] < rec["net_energy_mj"] < rec["net_energy_ci_hi_mj"]
    assert [rec["net_ci_lo_mw"], rec["net_ci_hi_mw"]] == net["net_ci_mw"]
    assert [rec["energy_ci_lo_mj"], rec["energy_ci_hi_mj"]] == net["gross_energy_ci_mj"]
    assert rec["idle_mw"] == net["idle_mw"] and rec["idle_readings"] == 30 and rec["net_energy_reason"] is None
    # the net figure without an interval says why
    assert energy_record({"energy_above_idle": {**net, "energy_ci_mj": None, "interval_reason": "sparse blocks"}})[
        "net_energy_reason"] == "sparse blocks"
    # absent (a run before the block, a failed entry): every column null
    assert energy_record({}) == dict.fromkeys(ENERGY_COLS) == energy_record(None)


def test_a_boards_values_that_are_not_numbers_are_null():
    hostile = {"idle_mw": "1800", "idle_readings": True, "net_mw": float("nan"), "net_ci_mw": [1.0],
               "energy_mj_per_inference": float("inf"), "energy_ci_mj": [0.0, "1"], "gross_energy_ci_mj": "x",
               "reason": 7}
    rec = energy_record({"energy_above_idle": hostile})
    assert {k: v for k, v in rec.items() if v is not None} == {"net_energy_reason": "7"}
    assert energy_record({"energy_above_idle": "junk"}) == dict.fromkeys(ENERGY_COLS)


def test_export_tables_carry_the_energy_columns_null_where_absent(runs, tmp_path):
    run, old, net = runs
    speed = frames([run, old])["speed"]
    assert list(speed.columns) == list(SPEED_COLS)
    speed.to_csv(tmp_path / "speed.csv", index=False)  # what `bench export --format csv` writes
    back = pd.read_csv(tmp_path / "speed.csv").set_index(["run_id", "entry"])
    fp32 = back.loc[(run.run_id, "gender-dlib--onnx-fp32")]
    assert fp32["net_energy_mj"] == pytest.approx(net["energy_mj_per_inference"])
    assert [fp32["net_energy_ci_lo_mj"], fp32["net_energy_ci_hi_mj"]] == pytest.approx(net["energy_ci_mj"])
    assert fp32["energy_mj"] == 105.0 and fp32["idle_readings"] == 30
    int8 = back.loc[(run.run_id, "gender-dlib--onnx-int8")]
    assert np.isnan(int8["net_energy_mj"]) and int8["net_energy_reason"].startswith("no idle power")
    assert not np.isnan(int8["energy_ci_lo_mj"])  # the gross interval stands without an idle window
    assert back.loc[old.run_id][list(ENERGY_COLS)].isna().all().all()
    assert [r[-len(ENERGY_COLS):] for r in rows_for(run.doc)["speed"]] == \
        [tuple(energy_record(e["speed"]).values()) for e in run.entries]


def test_report_and_compare_tables_show_the_net_energy_beside_the_gross(runs):
    run, old, net = runs
    rows = {(r["run"], r["variant"]): r for r in compare([old, run]).long_rows()}
    lo, hi = net["energy_ci_mj"]
    mine = rows[(run.run_id, "onnx-fp32")]
    assert list(mine)[list(mine).index("energy_mj") + 1:][:2] == ["net_energy_mj", "net_energy_ci_mj"]
    assert (mine["energy_mj"], mine["net_energy_mj"], mine["net_energy_ci_mj"]) == \
        ("105.00", f"{net['energy_mj_per_inference']:.2f}", f"[{lo:.2f}, {hi:.2f}]")
    assert (rows[(run.run_id, "onnx-int8")]["net_energy_mj"], rows[(old.run_id, "onnx-fp32")]["net_energy_ci_mj"]) \
        == ("-", "-")
    md = render_markdown([run])
    assert "| net_energy_mj | net_energy_ci_mj |" in md and f"[{lo:.2f}, {hi:.2f}]" in md
    page = render_html([run])
    assert "above idle mJ" in page and f"[{lo:.2f}, {hi:.2f}]" in page


def test_a_headline_stored_before_the_field_reads_it_from_the_speed_block(runs):
    run, _, net = runs
    entry = run.entry("gender-dlib--onnx-fp32")
    full = summarize(run, entry)
    assert full.net_energy_mj == net["energy_mj_per_inference"] and full.net_energy_ci == tuple(net["energy_ci_mj"])
    fields = {k: v for k, v in full.fields().items() if k not in ("net_energy_mj", "net_energy_ci")}
    stored = {"entry": entry["entry"], "speed": entry["speed"], "headline_summary": fields}
    assert summarize(run, stored) == full == EntrySummary.from_fields(full.fields())
