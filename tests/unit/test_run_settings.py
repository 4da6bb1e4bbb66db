"""Invalid `bench run` settings are refused in one place (RunConfig) with exit 2, before anything is decoded."""

from __future__ import annotations

import pytest

from harness.cli import main
from harness.errors import EXIT_USAGE, UsageError
from harness.scenarios import orchestrate
from harness.scenarios.orchestrate import RunConfig


@pytest.mark.parametrize("flags, named", [
    (["--min-count", "0"], "--min-count"),
    (["--min-duration", "-1.5"], "--min-duration"),
    (["--min-duration", "nan"], "--min-duration"),
    (["--fmr", "0"], "--fmr"),
    (["--fmr", "1"], "--fmr"),
    (["--cutoff", "1.5"], "--cutoff"),
    (["--cutoff", "-1.01"], "--cutoff"),
    (["--threads", "-1"], "--threads"),
    (["--bootstrap", "0"], "--bootstrap"),
    (["--timeout", "0"], "--timeout"),
    (["--seed", "-3"], "--seed"),
    (["--idle-s", "-1"], "--idle-s"),
    (["--soak-s", "3601"], "--soak-s"),
    (["--cooldown-s", "nan"], "--cooldown-s"),
    (["--cooldown-s", "60", "--cooldown-within", "0"], "--cooldown-within"),
    (["--cooldown-within", "3"], "--cooldown-within"),  # with no --cooldown-s (the cpu profile has none)
    (["--soak-s", "600", "--cooldown-s", "300"], "--timeout"),  # 900 s of waits: no time left for the entry
    (["--search-sizes", "1000,20000000"], "--search-sizes"),  # beyond 10,000,000 templates
    (["--search-sizes", "5"], "--search-sizes"),  # fewer than the 10 candidates a search returns
    (["--search-sizes", "1000,1e4,abc"], "--search-sizes"),
    (["--search-sizes", "1000.5"], "--search-sizes"),
    (["--search-sizes", ",".join(str(1000 * i) for i in range(1, 18))], "--search-sizes"),  # 17 sizes
])
def test_invalid_setting_exits_2_before_the_run_starts(flags, named, monkeypatch, capsys, tmp_path):
    def must_not_run(*a, **k):
        raise AssertionError("run_benchmark was reached with an invalid setting")

    monkeypatch.setattr(orchestrate, "run_benchmark", must_not_run)
    results = tmp_path / "results"
    code = main(["run", "--no-build", "--dataset", "london-frl", "--results-dir", str(results),
                 "--cache-dir", str(tmp_path / "cache"), *flags])
    err = capsys.readouterr().err.strip()
    assert code == EXIT_USAGE
    assert len(err.splitlines()) == 1 and named in err and "invalid run setting" in err
    assert not results.exists() or not any(results.iterdir())


def test_the_same_rules_hold_for_library_callers():
    with pytest.raises(UsageError, match=r"min_duration_s \(--min-duration\) = 120.0: must be <= max_duration_s"):
        RunConfig(min_duration_s=120.0)
    with pytest.raises(UsageError, match="offline_batch = 0"):
        RunConfig(offline_batch=0)
    with pytest.raises(UsageError, match="datasets"):
        RunConfig(datasets=())
    # the edges of each rule are accepted
    RunConfig(min_count=1, cutoffs=(-1.0, 1.0), threads=0, n_boot=1, warmup=0, target_fmr=1e-6)


def test_a_resumed_run_keeps_its_recorded_settings_valid():
    cfg = RunConfig(min_count=5, threads=1)
    assert RunConfig.from_dict(cfg.to_dict()) == cfg


def test_steady_state_settings_come_from_the_flag_else_the_profile(monkeypatch, tmp_path):
    """rpi's [steady_state] sets idle_s = 5; a flag wins; each setting records where it came from."""
    seen = []

    def capture(cfg, **_):
        seen.append(cfg)
        raise UsageError("captured")  # stop here: the settings are what this test is about

    monkeypatch.setattr(orchestrate, "run_benchmark", capture)
    common = ["run", "--no-build", "--results-dir", str(tmp_path / "r"), "--cache-dir", str(tmp_path / "c")]
    assert main([*common, "--target", "rpi", "--soak-s", "30"]) == EXIT_USAGE
    cfg = seen[-1]
    assert (cfg.idle_s, cfg.soak_s, cfg.cooldown_s, cfg.cooldown_within_c) == (5.0, 30.0, 0.0, None)
    assert (cfg.sources["idle_s"], cfg.sources["soak_s"], cfg.sources["cooldown_s"]) == ("profile", "flag", "default")
    assert main([*common, "--target", "cpu", "--idle-s", "2", "--cooldown-s", "120", "--cooldown-within", "3"]) \
        == EXIT_USAGE
    cfg = seen[-1]
    assert (cfg.idle_s, cfg.cooldown_s, cfg.cooldown_within_c) == (2.0, 120.0, 3.0)
    assert RunConfig.from_dict(cfg.to_dict()) == cfg  # a resumed run keeps them
    main([*common, "--target", "rpi", "--emulate", "arm64"])  # emulated: the profile's are not taken
    assert (seen[-1].idle_s, seen[-1].sources["idle_s"]) == (0.0, "default")
