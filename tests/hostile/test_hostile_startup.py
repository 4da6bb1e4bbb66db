"""Issue 17, item 13: SIGTERM or Ctrl-C (SIGINT) while `bench` is still starting up -- importing harness.cli, or
parsing the arguments, which imports the command's module (numpy, pandas, ...) -- ends as any other interrupt:
`bench: interrupted`, exit 130, no traceback.

The moment is found, not guessed: the command runs under `python -X importtime`, which writes one stderr line per
finished import, and the signal is sent when the chosen module's line appears (so the process is inside that
phase of start-up). Those lines are dropped before the contract is checked."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from conftest import REPO, Result

from harness.errors import EXIT_INTERRUPTED


def _interrupt_when_imported(box, module: str, signum: int) -> Result:
    cmd = [sys.executable, "-X", "importtime", "-m", "harness", "run", "--target", "cpu", "--no-build"]
    proc = subprocess.Popen(cmd, cwd=box.work, env={**box.env, "PYTHONPATH": str(REPO)}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    err: list[bytes] = []
    try:
        for line in proc.stderr:
            err.append(line)
            if line.rstrip().endswith(b"| " + module.encode()) or line.rstrip().endswith(b" " + module.encode()):
                proc.send_signal(signum)
                break
        else:
            pytest.fail(f"{module} was never imported: {b''.join(err)[-2000:]!r}")
        out, rest = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = (b"".join(err) + rest).decode("utf-8", "backslashreplace")
    kept = "".join(line + "\n" for line in text.splitlines() if not line.startswith("import time:"))
    return Result(proc.returncode, out.decode("utf-8", "backslashreplace"), kept)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
@pytest.mark.parametrize("module", ["harness.errors", "numpy"],
                         ids=["importing harness.cli", "importing the command"])
def test_an_interrupt_during_start_up_is_exit_130_one_line(box, module, signum):
    res = _interrupt_when_imported(box, module, signum)
    if res.rc == 2 and "unknown dataset" in res.err:  # the signal landed after start-up, on a busy host: a race
        pytest.skip("the signal arrived after start-up had finished (host too busy to hit the window)")
    assert res.rc == EXIT_INTERRUPTED, res
    assert "Traceback" not in res.err + res.out, res
    assert [line for line in res.err.splitlines() if line.strip()] == ["bench: interrupted"], res
    assert not os.path.exists(box.results), "nothing written"
