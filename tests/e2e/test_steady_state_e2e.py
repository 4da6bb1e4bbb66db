"""`bench run --idle-s --soak-s --cooldown-s --cooldown-within` end to end (issue 21): host CLI -> job spec -> the
worker in a child process (local launcher) -> result.json -> run.json -> report, on six real faces and two entries,
the SoC temperature and a Pi 5's fan cooling state read from a fake thermal tree (Linux thermal sysfs layout)
through $BENCH_THERMAL_ROOT."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.report.html import render_markdown
from harness.results.store import load_run
from harness.trackers.psutil_probe import THERMAL_ROOT_ENV
from test_run_e2e import bench

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

MODEL = "gender-dlib"
ENTRIES = (f"{MODEL}--onnx-fp32", f"{MODEL}--onnx-int8")


def test_idle_soak_and_cool_down_reach_run_json_and_the_report(built_packs, data_root, tmp_path, monkeypatch):
    zone = tmp_path / "thermal" / "thermal_zone0"
    zone.mkdir(parents=True)
    (zone / "type").write_text("cpu-thermal\n")
    (zone / "temp").write_text("45000\n")
    monkeypatch.setenv(THERMAL_ROOT_ENV, str(tmp_path / "thermal"))
    # a Pi 5's fan as the thermal framework shows it (tests/unit/test_fan_state.py), and no hwmon fan
    fan = tmp_path / "thermal" / "cooling_device0"
    fan.mkdir()
    for name, text in (("type", "pwm-fan"), ("cur_state", "2"), ("max_state", "4")):
        (fan / name).write_text(text + "\n")
    (tmp_path / "hwmon").mkdir()
    monkeypatch.setenv("BENCH_HWMON_ROOT", str(tmp_path / "hwmon"))
    argv = ["run", "--target", "cpu", "--model", MODEL, "--variant", "onnx-fp32", "--variant", "onnx-int8",
            "--dataset", "london-frl", "--limit", "6", "--threads", "1", "--min-duration", "0.1", "--min-count", "5",
            "--bootstrap", "20", "--idle-s", "0.5", "--soak-s", "0.5", "--cooldown-s", "30", "--cooldown-within",
            "2", "--results-dir", str(tmp_path / "results"), "--cache-dir", str(built_packs), "--data-root",
            str(data_root), "--no-build"]
    code, out, err = bench(argv)
    assert code == 0, err[-2000:]
    run_dir = Path(out.strip().splitlines()[-1])
    doc = json.loads((run_dir / "run.json").read_text())
    assert {k: doc["settings"]["sources"][k] for k in ("idle_s", "soak_s", "cooldown_s", "cooldown_within_c")} \
        == dict.fromkeys(("idle_s", "soak_s", "cooldown_s", "cooldown_within_c"), "flag")
    # the run's idle temperature: what the board read before the first entry loaded anything
    assert doc["steady_state"] == {"idle_temp_c": 45.0, "from_entry": ENTRIES[0]}
    first, second = (next(e for e in doc["entries"] if e["entry"] == eid)["speed"]["device_state"] for eid in ENTRIES)
    assert first["cooldown"]["done"] is False and first["settings"]["cooldown_s"] == 0  # nothing ran before it
    assert second["settings"] == {"idle_s": 0.5, "soak_s": 0.5, "cooldown_s": 30.0, "cooldown_within_c": 2.0,
                                  "idle_temp_c": 45.0}
    c = second["cooldown"]
    assert c["done"] and c["mode"] == "to_idle" and c["reached"] and c["waited_s"] < 30  # 45 C is idle already
    for state in (first, second):
        assert state["idle"]["done"] and state["idle"]["s"] >= 0.5 and state["idle"]["temp_c"] == 45.0
        s = state["soak"]
        assert s["done"] and s["s"] >= 0.5 and s["inferences"] >= 1 and s["temp_after_c"] == 45.0
        assert state["fan"]["start"] == state["fan"]["end"] == {"readable": True, "fans": [
            {"source": "cooling_device", "device": "pwm-fan", "state": 2, "max_state": 4}]}
    md = render_markdown([load_run(run_dir)])
    assert "## Device state" in md and "0.5 s," in md and "inferences, 45.0 → 45.0 C" in md
    assert "pwm-fan state 2/4" in md
