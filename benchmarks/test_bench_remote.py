"""Remote over loopback against local, the same job (issue 12): the SSH launcher's overhead and its effect on timing.

Run: python -m pytest benchmarks/test_bench_remote.py -q -s

One job (gender-dlib onnx-fp32, 1 thread, 64 real-sized inputs, a 2 s single-stream window and a 1 s offline
window, like a short `bench run` entry) launched ROUNDS times, alternately through LocalLauncher and through
SSHLauncher on a loopback board (Debian's sshd, tests/remote/lab.py) whose CAS already holds the files (the
steady state: a second run copies zero bytes). Goals:
- wall-clock ratio remote / local (median of ROUNDS launches each) at most 1.10: ssh, staging and bringing the
  chunks back cost a fixed ~0.1-0.3 s per entry next to the timed windows;
- per-inference latency within noise: the remote p50 lies within the local p50's 95% CI widened by the spread of
  local p50s between rounds (timing happens on the board; the network is outside the timed window).
A loopback "board" is this x86 machine: this measures the launcher, not a network or another ISA.

The board account: sshd runs every command through the user's login shell, and bash started by sshd reads
~/.bashrc even when not interactive. Issue 19 measured 0.31-0.71 s per command for root with a heavy rc (ratio
1.16-1.47 when an entry's start and final fetch each paid it) and 0.01-0.07 s for a /bin/sh user (ratio 0.996).
The job's commands now go through the command relay (harness/launchers/relay.py), which pays it once per
connection, so every lane is held to the same goal. The loopback board logs in as the user running the benchmark
("login"), as a plain account ("plain") or as one whose rc sleeps 0.5 s ("heavy-rc"); the result line states that
user, its login shell, the measured seconds per plain ssh command, how many times the relay started and the timed
windows (docs/remote.md, "The board account").
"""

from __future__ import annotations

import getpass
import pwd
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from harness.jobs import BackendRequest, FileRef, InputArray, Job, LatencySettings, OfflineSettings
from harness.launchers.local import LocalLauncher
from harness.launchers.ssh import Board, SSHLauncher
from harness.models.fetch import sha256_file
from harness.models.pack import variant_path
from harness.trackers.latency import LatencyStats

ROUNDS = 5
RATIO_GOAL = 1.10
N_INPUTS = 64
WINDOWS = {"warmup": 10, "single_stream_s": 2.0, "offline_s": 1.0}  # the job's timed windows (see _job)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", params=["plain", "login", "heavy-rc"])
def board(request, tmp_path_factory):
    """The loopback board with a plain account (its own home: no shell rc per command), with the test host user's
    own account and login shell rc ("login": root's ~/.bashrc here), the two lanes issue 19 asks for, and with an
    rc that sleeps 0.5 s ("heavy-rc": the middle of the 0.31-0.71 s issue 19 measured on another account)."""
    from tests.remote.lab import SSHD, Lab

    if not SSHD.is_file() or shutil.which("ssh") is None:
        pytest.skip("openssh-server not installed (.ci/run installs it)")
    lab = Lab(tmp_path_factory.mktemp("lab"))
    b = lab.add("bench-board", own_home=request.param != "login")
    if request.param == "heavy-rc":  # bash started by sshd reads it for every command (SSH_SOURCE_BASHRC)
        (b.dir / "home" / ".bashrc").write_text("sleep 0.5\n")
    yield Board(name=b.name, host="127.0.0.1", user=b.user, port=b.port, python=str(b.python),
                identity_file=str(lab.client_key), known_hosts=str(lab.known_hosts), workdir=str(b.workdir))
    lab.close()


def _job(folder: Path, model: Path, model_input) -> Job:
    chips = np.clip(model_input("gender-dlib")[0] * 127.5 + 127.5, 0, 255).astype(np.uint8)
    np.save(folder / "chips.npy", np.repeat(chips[None], N_INPUTS, axis=0))
    (folder / model.name).symlink_to(model)
    return Job(entry="gender-dlib--onnx-fp32", task="gender", model=FileRef(model.name, sha256_file(model)),
               layout=None, inputs=InputArray(FileRef("chips.npy", sha256_file(folder / "chips.npy")), (127.5,) * 3,
                                              1 / 127.5),
               backend=BackendRequest("onnxruntime", provider="CPUExecutionProvider", threads=1),
               samples=tuple((f"s{i}", i) for i in range(N_INPUTS)), pool_rows=tuple(range(N_INPUTS)),
               latency=LatencySettings(warmup=WINDOWS["warmup"], min_duration_s=WINDOWS["single_stream_s"],
                                       min_count=100, max_duration_s=10.0),
               offline=OfflineSettings(batch=8, min_duration_s=WINDOWS["offline_s"], min_count=10))


def test_remote_over_loopback_against_local(benchmark, built_packs, model_input, board, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    job = _job(folder, variant_path(built_packs, "gender-dlib", "onnx-fp32"), model_input)
    local, remote = LocalLauncher(timeout_s=120), SSHLauncher(board, timeout_s=120)
    remote.ssh.open()
    user = getpass.getuser()
    account = {"user": user, "login_shell": pwd.getpwnam(user).pw_shell, "ssh_command_s": remote.command_cost(5)}
    walls: dict[str, list[float]] = {"local": [], "remote": []}
    p50s: dict[str, list[float]] = {"local": [], "remote": []}
    cis: list[tuple[float, float]] = []

    def once(name: str, launcher) -> None:
        out = tmp_path / f"out-{name}"
        shutil.rmtree(out, ignore_errors=True)
        t0 = time.perf_counter()
        res = launcher.launch(job, folder, out)
        walls[name].append(time.perf_counter() - t0)
        assert res.ok, res.reason
        stats = LatencyStats.from_ms(np.load(out / res.timings))
        p50s[name].append(stats.p50_ms)
        if name == "local":
            cis.append(tuple(stats.p50_ci_ms))

    once("remote", remote)  # the CAS gets the files once; every measured round copies zero bytes
    for _ in range(ROUNDS):
        once("local", local)
        once("remote", remote)
    assert remote.sync_stats["uploaded_files"] <= 2 and remote.sync_stats["cas_hits"] >= 2 * ROUNDS
    account["relay_starts"] = remote.relay.starts  # 1: the login shell ran once for all of the launches
    ratio = np.median(walls["remote"][1:]) / np.median(walls["local"])
    p50_local, p50_remote = np.median(p50s["local"]), np.median(p50s["remote"])
    noise = max(max(hi - lo for lo, hi in cis), float(np.ptp(p50s["local"])))
    benchmark.extra_info.update({"wall_ratio": round(float(ratio), 4), "walls_s": {k: np.round(v, 3).tolist()
                                                                                 for k, v in walls.items()},
                                 "p50_ms": {k: np.round(v, 4).tolist() for k, v in p50s.items()},
                                 "noise_ms": round(noise, 4), "account": account, "windows": WINDOWS})
    benchmark.pedantic(lambda: None, rounds=1, iterations=1)
    where = (f"board user {account['user']} (login shell {account['login_shell']}, {account['ssh_command_s']} s per "
             f"plain command, relay started {account['relay_starts']}x), windows: warm-up {WINDOWS['warmup']}, "
             f"single-stream {WINDOWS['single_stream_s']} s, offline {WINDOWS['offline_s']} s")
    print(f"\nremote/local wall ratio {ratio:.3f} (local median {np.median(walls['local']):.2f} s, remote "
          f"{np.median(walls['remote'][1:]):.2f} s); p50 local {p50_local:.3f} ms, remote {p50_remote:.3f} ms, "
          f"noise {noise:.3f} ms; {where}")
    remote.close()
    assert ratio <= RATIO_GOAL, (f"remote/local {ratio:.3f} > {RATIO_GOAL} with {where}: the relay should pay a slow "
                                 "login shell once (docs/remote.md, 'The board account')")
    assert abs(p50_remote - p50_local) <= noise
