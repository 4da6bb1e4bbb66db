"""Energy per inference above idle, beside the gross figure (harness/metrics/energy.py): the net power and energy, their
95% interval as the difference of two independent means (checked against scipy's Welch t-test on the same block
means and idle readings), the null figures with their reasons, board values that are not numbers, and where the
reports show it (the Device state section and the buyer's board table)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from harness.metrics.energy import above_idle, energy_probe
from harness.trackers.telemetry import POWER_BLOCKS, energy_mj_per_inference, idle_batch_means, power_stats

WINDOW_S, N = 10.0, 400


def _series(seed: int = 7) -> np.ndarray:
    """A board read every 0.1 s: 3 s idle around 1800 mW (t < 0), then the 10 s window around 4200 mW."""
    rng = np.random.default_rng(seed)
    idle_t, act_t = np.arange(-3.0, 0.0, 0.1), np.arange(0.0, WINDOW_S + 1e-9, 0.1)
    return np.r_[np.c_[idle_t, 1800 + rng.normal(0, 40, idle_t.size)],
                 np.c_[act_t, 4200 + rng.normal(0, 150, act_t.size)]]


def _telemetry(power: dict) -> dict:
    return {"psutil": {"available": True, "summary": {"samples": 3, "fields": {}}},
            "hwmon": {"available": True, "summary": {"samples": 130, "fields": {}, "power": power}}}


def _block(series: np.ndarray, idle_blocks: bool = False) -> dict:
    """The power block as a board's probe records it; `idle_blocks`: with the idle window's own batch means (what
    TelemetryWindow and the host meter add where every idle block has 2 readings)."""
    power = power_stats(series, WINDOW_S)
    idle = series[series[:, 0] < 0]
    power["idle_readings"] = int(len(idle))  # as TelemetryWindow adds from its idle phase
    if idle_blocks:
        power.update(idle_batch_means(np.c_[idle[:, 0] + 3.0, idle[:, 1]], 3.0))
    return power


def test_idle_batch_means_give_the_idle_side_of_the_welch_interval():
    series = _series()
    power = _block(series, idle_blocks=True)
    net = above_idle(_telemetry(power), 12.0, N)
    assert len(power["idle_block_means_mw"]) == POWER_BLOCKS  # 30 idle readings: 6 in each of 5 blocks
    assert net["idle_interval"] == "batch means over 5 time blocks of the idle window"
    # Welch's two-sample t on the block means of each side: the same half-width (scipy around its own centre)
    welch = stats.ttest_ind(power["block_means_mw"], power["idle_block_means_mw"],
                            equal_var=False).confidence_interval(0.95)
    half = (net["net_ci_mw"][1] - net["net_ci_mw"][0]) / 2
    assert half == pytest.approx((welch.high - welch.low) / 2, rel=1e-9)


def test_idle_batch_means_are_left_out_when_an_idle_block_has_fewer_than_2_readings():
    sparse = np.array([[0.1, 1800.0], [0.5, 1810.0], [2.9, 1790.0]])
    assert idle_batch_means(sparse, 3.0) == {}
    assert set(idle_batch_means(np.c_[np.arange(0, 3, 0.1), np.full(30, 1800.0)], 3.0)) == \
        {"idle_ci_mw", "idle_block_means_mw"}


def test_net_power_and_energy_subtract_the_idle_board_with_a_welch_interval():
    series = _series()
    power = _block(series)
    gross = energy_mj_per_inference(series[series[:, 0] >= 0], WINDOW_S, N)
    net = above_idle(_telemetry(power), gross, N)
    idle = series[series[:, 0] < 0, 1]
    assert net["probe"] == "hwmon" and net["idle_readings"] == 30 and net["idle_mw"] == pytest.approx(idle.mean())
    assert net["net_mw"] == pytest.approx(power["mean_mw"] - idle.mean())
    assert net["energy_mj_per_inference"] == pytest.approx(gross - idle.mean() * WINDOW_S / N)
    # the half-width is Welch's for the block means (the active mean's batch-means observations) against the idle
    # readings: scipy's two-sample t-test with unequal variances gives the same interval around its own centre
    welch = stats.ttest_ind(power["block_means_mw"], idle, equal_var=False).confidence_interval(0.95)
    half = (net["net_ci_mw"][1] - net["net_ci_mw"][0]) / 2
    assert half == pytest.approx((welch.high - welch.low) / 2, rel=1e-9)
    assert net["energy_ci_mj"] == pytest.approx([net["energy_mj_per_inference"] - half * WINDOW_S / N,
                                                 net["energy_mj_per_inference"] + half * WINDOW_S / N])
    assert net["gross_energy_ci_mj"] == pytest.approx([c * WINDOW_S / N for c in power["ci_mw"]])
    assert len(power["block_means_mw"]) == POWER_BLOCKS and "reason" not in net and "interval_reason" not in net
    assert net["idle_interval"].startswith("standard error of the idle readings")  # no idle batch means recorded


def test_a_constant_meter_gives_an_exact_net_figure_with_a_zero_width_interval():
    t = np.arange(-2.0, WINDOW_S + 1e-9, 0.1)
    series = np.c_[t, np.where(t < 0, 2000.0, 2500.0)]
    net = above_idle(_telemetry(_block(series)), 2500.0 * WINDOW_S / N, N)
    assert net["net_mw"] == 500.0 and net["net_ci_mw"] == [500.0, 500.0]
    assert net["energy_mj_per_inference"] == pytest.approx(500.0 * WINDOW_S / N)
    assert net["energy_ci_mj"] == pytest.approx([500.0 * WINDOW_S / N] * 2)


@pytest.mark.parametrize("edit, key, fragment", [
    (lambda p: p.update(idle_readings=1), "reason", "1 idle reading(s) (needs 2)"),
    (lambda p: p.update(idle_mw=None, idle_reason="clock uncertainty 0.2 s is more than 5% of the 2.000 s idle "
                        "window"), "reason", "no idle power: clock uncertainty 0.2 s"),
    (lambda p: [p.pop("idle_mw"), p.pop("idle_readings")], "reason", "no idle window (--idle-s 0)"),
    (lambda p: p.update(idle_mw="2000"), "reason", "no idle power"),          # a board's string is not a number
    (lambda p: p.update(ci_mw=None, interval_reason="1 reading(s) in the sparsest of 5 blocks (needs 2)"),
     "interval_reason", "no interval for the active power: 1 reading(s) in the sparsest"),
    (lambda p: p.pop("idle_sd_mw"), "interval_reason", "idle_sd_mw) was not recorded"),
    (lambda p: p.update(idle_sd_mw=float("nan")), "interval_reason", "idle_sd_mw) was not recorded"),
], ids=["one-idle-reading", "idle-null", "no-idle-window", "string", "no-active-interval", "old-run", "nan"])
def test_a_missing_figure_is_null_with_its_reason(edit, key, fragment):
    power = _block(_series())
    edit(power)
    net = above_idle(_telemetry(power), 10.0, N)
    assert fragment in net[key]
    if key == "reason":
        assert net["net_mw"] is None and net["energy_mj_per_inference"] is None and net["energy_ci_mj"] is None
    else:
        assert net["net_mw"] is not None and net["net_ci_mw"] is None and net["energy_ci_mj"] is None


def test_no_power_probe_and_no_gross_energy_say_why():
    assert above_idle({"psutil": {"summary": {"samples": 1}}}, None, N)["reason"] == "no power probe on this target"
    power = _block(_series())
    power["energy_reason"] = "the meter stopped before the window ended: meter (labmeter): unparseable output"
    net = above_idle(_telemetry(power), None, N)
    assert net["net_mw"] is not None and net["energy_mj_per_inference"] is None
    assert net["reason"] == "no energy: the meter stopped before the window ended: meter (labmeter): unparseable output"
    assert energy_probe(_telemetry(power))[1] == "hwmon"


def test_the_reports_show_the_net_energy_beside_the_gross():
    from types import SimpleNamespace

    from harness.report.buyers import energy_cell
    from harness.report.device_state import HEADERS, above_idle_cell

    net = above_idle(_telemetry(_block(_series())), 12.0, N)
    cell = above_idle_cell(net)
    e, (lo, hi) = net["energy_mj_per_inference"], net["energy_ci_mj"]
    assert cell == f"{e:.3f} [{lo:.3f}, {hi:.3f}]" and "above idle mJ/inference [95% CI]" in HEADERS
    assert above_idle_cell({"reason": "1 idle reading(s) (needs 2)"}) == "- (1 idle reading(s) (needs 2))"
    assert above_idle_cell(None) == "not recorded"
    s = SimpleNamespace(energy_mj=12.0, status="ok")
    assert energy_cell(s, {"energy_above_idle": net}) == f"12.00 (above idle {e:.2f} [{lo:.2f}, {hi:.2f}])"
    assert energy_cell(s, {"energy_above_idle": {"reason": "0 idle reading(s) (needs 2)"}}) == \
        "12.00 (above idle: 0 idle reading(s) (needs 2))"
    assert energy_cell(s, {}) == "12.00"  # a run from before the figure existed
