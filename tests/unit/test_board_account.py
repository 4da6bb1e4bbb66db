"""The board account's cost per SSH command: measured at the health check (median of `true` runs), shown in the
"healthy (...)" line and called out above SLOW_COMMAND_S (docs/remote.md, "The board account")."""

from __future__ import annotations

import subprocess

from harness.launchers import remote, ssh
from harness.launchers.ssh import Board, SSHLauncher


class FakeSSH:
    """Each `true` takes the next of `costs` seconds on a fake clock; a negative cost is a failed command."""

    def __init__(self, clock: list[float], costs: list[float]):
        self.clock, self.costs, self.commands = clock, list(costs), []

    def run(self, command, timeout=120.0, **kw):
        self.commands.append(command)
        cost = self.costs.pop(0)
        self.clock[0] += abs(cost)
        return subprocess.CompletedProcess([], 0 if cost >= 0 else 255, b"", b"")


def launcher_with(monkeypatch, costs: list[float]) -> SSHLauncher:
    clock = [100.0]
    monkeypatch.setattr(ssh.time, "perf_counter", lambda: clock[0])
    launcher = SSHLauncher(Board(name="pi-1", host="10.0.0.9", user="bench", port=22))
    launcher.ssh = FakeSSH(clock, costs)
    return launcher


def test_command_cost_is_the_median_of_trivial_commands(monkeypatch):
    launcher = launcher_with(monkeypatch, [0.9, 0.3, 0.5])
    assert launcher.command_cost() == 0.5 and launcher.ssh.commands == ["true"] * 3
    assert launcher_with(monkeypatch, [0.1, -0.1, 0.1]).command_cost() is None


def test_a_slow_account_is_called_out_once_and_shown_in_the_summary():
    board = Board(name="pi-1", host="10.0.0.9", user="root", port=22)
    said: list[str] = []
    remote._account_warning(board, {"ssh_command_s": 0.71}, said.append)
    (line,) = said
    assert "board pi-1: each command over SSH takes 0.71 s" in line and "/bin/sh" in line and "\n" not in line
    remote._account_warning(board, {"ssh_command_s": remote.SLOW_COMMAND_S}, said.append)
    remote._account_warning(board, {}, said.append)
    assert len(said) == 1
    assert "0.04 s per command" in remote._summary({"device_model": "Raspberry Pi 5", "python": "3.11",
                                                     "disk_free_mb": 900, "ssh_command_s": 0.04})
