"""The command relay through Debian's real sshd (issue 19, item 6): the board user's rc runs once per connection,
not per command, and a job's lifeline holds whichever end goes away: the relay killed on the board, or the host's
side closed."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from harness.launchers.relay import RelayLost
from harness.launchers.ssh import Board, SSHLauncher


@pytest.fixture(scope="module")
def board(lab):
    b = lab.add("relay-board")
    # bash started by sshd reads ~/.bashrc even when not interactive (Debian's SSH_SOURCE_BASHRC): this one says so
    (b.dir / "home" / ".bashrc").write_text(f"echo rc >> {b.dir / 'rc.log'}\n")
    return b


@pytest.fixture
def launcher(lab, board):
    launcher = SSHLauncher(Board(name=board.name, host="127.0.0.1", user=board.user, port=board.port,
                                 python=str(board.python), identity_file=str(lab.client_key),
                                 known_hosts=str(lab.known_hosts), workdir=str(board.workdir)))
    launcher.ssh.open()
    (board.dir / "rc.log").write_text("")
    yield launcher
    launcher.close()


def _rc_runs(board) -> int:
    return (board.dir / "rc.log").read_text().count("rc")


def _appears(path: Path, within_s: float = 15.0) -> bool:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        if path.exists():
            return True
        time.sleep(0.05)
    return False


def test_the_rc_runs_once_for_every_command_of_a_connection(launcher, board):
    assert launcher.ssh.run("true").returncode == 0 and _rc_runs(board) == 1  # a plain ssh command pays it
    for i in range(10):
        proc = launcher.run(f"echo {i}; echo e{i} >&2; exit {i % 3}")
        assert (proc.returncode, proc.stdout, proc.stderr) == (i % 3, f"{i}\n".encode(), f"e{i}\n".encode())
    assert _rc_runs(board) == 2 and launcher.relay.starts == 1


def test_a_relay_killed_on_the_board_is_a_lost_connection_and_the_job_ends(launcher, board, tmp_path):
    mark = board.workdir / "relay-killed-job-ended"
    mark.unlink(missing_ok=True)
    board.workdir.mkdir(parents=True, exist_ok=True)
    job = launcher.relay.spawn(f"cat >/dev/null; echo ended > {mark}")  # ends only when its stdin closes
    assert launcher.relay.wait(job, 0.2, lambda b: None) is None
    os.kill(launcher.relay.pid, signal.SIGKILL)  # a person's kill -9 on the board (the loopback board is this host)
    with pytest.raises(RelayLost, match="^board relay-board: the command relay's connection closed"):
        launcher.relay.wait(job, 5, lambda b: None)
    assert _appears(mark) and not launcher.relay.running
    assert launcher.run("echo again").stdout == b"again\n" and launcher.relay.starts == 2  # a new one, when needed


def test_the_hosts_side_closed_ends_the_relay_and_its_jobs(launcher, board):
    mark = board.workdir / "host-closed-job-ended"
    mark.unlink(missing_ok=True)
    board.workdir.mkdir(parents=True, exist_ok=True)
    job = launcher.relay.spawn(f"cat >/dev/null; echo ended > {mark}")
    assert launcher.relay.wait(job, 0.2, lambda b: None) is None
    pid = launcher.relay.pid
    launcher.relay.close()  # the host's ssh client killed: sshd closes the channel, the relay reads EOF
    assert _appears(mark)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and _alive(pid):
        time.sleep(0.05)
    assert not _alive(pid)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie has exited
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False
