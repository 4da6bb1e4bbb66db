"""Contention during the timed window (issue 16, "Busy host, VALID stamp"): counters from synthetic snapshots,
the INVALID reasons each bound gives, "unavailable" where a counter is absent, and a board's record cleaned on the
host. No test here depends on how busy the machine running it is."""

from __future__ import annotations

import pytest

from harness.jobs import BackendRequest
from harness.trackers.contention import (UNAVAILABLE, ContentionWindow, _runnable, clean_record, snapshot,
                                         summarise)
from harness.trackers.validity import (MAX_INVOLUNTARY_PER_INFERENCE, MAX_LOAD_PER_CORE, MAX_STEAL_PCT,
                                       MIN_CPU_SHARE, assess, contention_reasons)

OK_STATS = {"count": 200, "duration_s": 2.5}


def snap(wall, cpu, inv, steal, total, load, runnable):
    return {"wall_s": wall, "cpu_s": cpu, "involuntary": inv, "steal_s": steal, "cpu_total_s": total,
            "loadavg_1m": load, "runnable": runnable}


def quiet() -> dict:
    """30 s window, 1 thread on 2 cores: a full core of CPU, 60 involuntary switches over 3000 inferences,
    0.5% steal, load 1.1."""
    return summarise(snap(100.0, 50.0, 1000, 10.0, 1000.0, 1.0, 2), snap(130.0, 80.0, 1060, 10.3, 1060.0, 1.1, 1),
                     cores=2, threads=1, count=3000, cpu_executed=True)


def starved() -> dict:
    """Issue 16's host: the process got 0.12 of a core at load 9 on 2 cores, preempted often, 12% steal."""
    return summarise(snap(0.0, 10.0, 0, 0.0, 0.0, 8.5, 9), snap(300.0, 46.0, 9000, 72.0, 600.0, 9.2, 11),
                     cores=2, threads=1, count=3000, cpu_executed=True)


def test_summary_of_a_quiet_window():
    c = quiet()
    assert (c["wall_s"], c["cpu_s"], c["cpu_share"], c["cpu_share_per_thread"]) == (30.0, 30.0, 1.0, 1.0)
    assert (c["involuntary_ctx_switches"], c["involuntary_per_s"]) == (60, 2.0)
    assert c["involuntary_per_inference_thread"] == pytest.approx(0.02)
    assert c["steal_pct"] == pytest.approx(0.5)
    assert c["loadavg_1m"] == {"start": 1.0, "end": 1.1} and c["runnable"] == {"start": 2, "end": 1}
    assert c["threads"] == 1 and c["threads_requested"] == 1 and c["cpu_executed"] is True
    assert contention_reasons(c) == []
    assert assess(OK_STATS, min_duration_s=1.0, min_count=100, contention=c) == {"status": "VALID", "reasons": []}


def test_a_starved_single_stream_is_invalid_with_each_reason():
    c = starved()
    assert c["cpu_share"] == pytest.approx(0.12) and c["steal_pct"] == pytest.approx(12.0)
    verdict = assess(OK_STATS, min_duration_s=1.0, min_count=100, contention=c)
    assert verdict["status"] == "INVALID"
    assert verdict["reasons"] == [
        "contention: the process got 0.12 of a core (36.00 s CPU over 300.00 s wall) < 0.5: starved by other work",
        "contention: 3.00 involuntary context switches per inference per thread (9000 in 3000 inferences x 1 "
        "threads) >= 1",
        "contention: steal time 12.0% of CPU time > 10% (the hypervisor ran other guests on this machine's CPUs)",
        "contention: load average 9.20 on 2 cores > 2 per core (each runnable task gets under half a core)",
    ]


@pytest.mark.parametrize("field, value, fragment", [
    ("cpu_share", MIN_CPU_SHARE - 0.01, "of a core"),
    ("involuntary_per_inference_thread", MAX_INVOLUNTARY_PER_INFERENCE, "involuntary context switches"),
    ("steal_pct", MAX_STEAL_PCT + 0.1, "steal time"),
    ("loadavg_1m", {"start": 1.0, "end": MAX_LOAD_PER_CORE * 2 + 0.01}, "load average"),
])
def test_each_bound_trips_on_its_own(field, value, fragment):
    c = quiet() | {field: value}
    reasons = contention_reasons(c)
    assert len(reasons) == 1 and fragment in reasons[0]
    at_bound = {"cpu_share": MIN_CPU_SHARE, "involuntary_per_inference_thread": MAX_INVOLUNTARY_PER_INFERENCE - 0.01,
                "steal_pct": MAX_STEAL_PCT, "loadavg_1m": {"start": 1.0, "end": MAX_LOAD_PER_CORE * 2}}[field]
    assert contention_reasons(quiet() | {field: at_bound}) == []


def test_an_accelerator_backend_is_not_judged_by_its_host_threads_cpu_share():
    c = starved() | {"cpu_executed": False}
    reasons = contention_reasons(c)
    # a CUDA/Edge TPU loop waits on the device: low CPU share and switches are expected, steal and load still count
    assert [r.split(":")[1].split()[0] for r in reasons] == ["steal", "load"]


def test_absent_counters_are_unavailable_and_not_judged():
    none = {k: UNAVAILABLE for k in ("cpu_s", "involuntary", "steal_s", "cpu_total_s", "loadavg_1m", "runnable")}
    c = summarise({"wall_s": 0.0, **none}, {"wall_s": 5.0, **none}, cores=4, threads=0, count=500,
                  cpu_executed=True)
    for key in ("cpu_s", "cpu_share", "cpu_share_per_thread", "involuntary_ctx_switches", "involuntary_per_s",
                "involuntary_per_inference_thread", "steal_pct", "loadavg_1m", "runnable"):
        assert c[key] == UNAVAILABLE, key
    assert c["threads"] == 4 and c["threads_requested"] == "runtime default"  # runtime default: one per core
    assert contention_reasons(c) == []


def test_runnable_count_is_read_from_proc_loadavg_form(tmp_path):
    f = tmp_path / "loadavg"
    f.write_text("6.12 5.40 3.02 7/812 4242\n")
    assert _runnable(f) == 7
    f.write_text("garbage")
    assert _runnable(f) == UNAVAILABLE
    assert _runnable(tmp_path / "absent") == UNAVAILABLE


def test_a_real_window_records_every_counter_or_says_unavailable():
    """Shape only: which values a busy or idle host gives is not asserted."""
    with ContentionWindow(threads=1, cpu_executed=True) as w:
        sum(i * i for i in range(20000))
        w.count = 1
    c = w.record
    assert c["cores"] >= 1 and c["count"] == 1 and c["wall_s"] > 0
    for key in ("cpu_share", "involuntary_ctx_switches", "steal_pct", "loadavg_1m", "runnable"):
        assert c[key] == UNAVAILABLE or isinstance(c[key], (int, float, dict)), key
    assert set(snapshot()) == {"wall_s", "cpu_s", "involuntary", "steal_s", "cpu_total_s", "loadavg_1m", "runnable"}


def test_a_boards_record_is_cleaned_before_it_is_judged_or_stored():
    hostile = quiet() | {"cpu_share": "0.1; rm -rf /", "steal_pct": -5, "cores": float("inf"),
                         "loadavg_1m": {"start": "[red]x[/red]", "end": 99.0}, "cpu_executed": "yes",
                         "extra": "../../etc/passwd"}
    c = clean_record(hostile)
    assert c["cpu_share"] == c["steal_pct"] == c["cores"] == c["loadavg_1m"] == UNAVAILABLE
    assert c["cpu_executed"] is False and "extra" not in c
    assert contention_reasons(c) == []
    assert clean_record(quiet()) == quiet()
    for not_a_record in (None, "busy", [1, 2], 3.0):
        assert clean_record(not_a_record) == UNAVAILABLE


def test_which_backends_run_on_the_cpu():
    from harness.device.worker import cpu_executed

    assert cpu_executed(BackendRequest(runtime="onnxruntime", provider="CPUExecutionProvider"))
    assert not cpu_executed(BackendRequest(runtime="onnxruntime", provider="CUDAExecutionProvider"))
    assert cpu_executed(BackendRequest(runtime="litert", delegate="xnnpack"))
    assert cpu_executed(BackendRequest(runtime="litert"))
    assert not cpu_executed(BackendRequest(runtime="litert", delegate="edgetpu"))
