"""The sshd board's power switch (harness/launchers/sshd_power.py): which sshd it may touch, and the executable an
inventory names. Switching a real sshd (and the emulated board's qemu-user workers under it) is tested for real in
tests/remote/test_power.py and tests/remote/test_emulated_pool.py."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from harness.errors import EXIT_USAGE, InputError
from harness.launchers.sshd_power import pidfile_of, running_sshd, write_switch
from harness.paths import REPO_ROOT


@pytest.mark.parametrize("text, pidfile", [
    ("Port 2222\nPidFile /srv/board/sshd.pid\nPidFile /srv/other.pid\n", "/srv/board/sshd.pid"),  # the first wins
    ("# PidFile /commented.pid\n  pidfile=/srv/b.pid\n", "/srv/b.pid"),  # keywords are case-insensitive, '=' too
    ('PIDFILE "/srv/q.pid"\n', "/srv/q.pid"),
])
def test_the_pidfile_is_read_as_sshd_reads_its_config(tmp_path, text, pidfile):
    cfg = tmp_path / "sshd_config"
    cfg.write_text(text)
    assert str(pidfile_of(cfg)) == pidfile


@pytest.mark.parametrize("text, words", [
    ("Port 2222\n", "no PidFile line"),
    ("PidFile /run/sshd.pid\n", "PidFile /run/sshd.pid: the board's sshd needs a PidFile of its own"),
    ("PidFile /var/run/sshd.pid\n", "needs a PidFile of its own"),
    ("PidFile none\n", "needs a PidFile of its own"),
    ("PidFile sshd.pid\n", "an absolute path"),
])
def test_a_config_that_would_touch_the_system_sshd_or_none_is_refused(tmp_path, text, words):
    cfg = tmp_path / "sshd_config"
    cfg.write_text(text)
    with pytest.raises(InputError) as exc:
        pidfile_of(cfg)
    assert words in exc.value.message and str(cfg) in exc.value.message and "\n" not in exc.value.message


def test_a_pidfile_naming_no_sshd_is_off(tmp_path):
    pid = tmp_path / "sshd.pid"
    assert running_sshd(pid) is None  # no file
    pid.write_text("garbage\n")
    assert running_sshd(pid) is None
    pid.write_text(f"{os.getpid()}\n")  # a live process that is not an sshd (a reused pid): never killed
    assert running_sshd(pid) is None


def test_the_switch_written_for_the_inventory_runs_this_module(tmp_path):
    cfg = tmp_path / "sshd_config"
    cfg.write_text(f"PidFile {tmp_path / 'sshd.pid'}\n")
    path = write_switch(tmp_path / "power", config=cfg, log=tmp_path / "sshd.log")
    assert os.access(path, os.X_OK)
    text = path.read_text()
    assert text.startswith("#!/bin/sh\n") and f"PYTHONPATH={REPO_ROOT} exec {sys.executable} -m " \
        f"harness.launchers.sshd_power --config {cfg} --sshd /usr/sbin/sshd --log {tmp_path / 'sshd.log'} \"$@\"" in text
    # off with nothing running is done at once (a board already off), through the written file itself
    done = subprocess.run([str(path), "off"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stderr == ""


def test_bad_input_is_one_line_with_its_exit_code(tmp_path):
    cfg = tmp_path / "sshd_config"
    cfg.write_text("Port 2222\n")
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
    for argv in (["off", "--config", str(cfg)], ["write", str(tmp_path / "p"), "--config", str(cfg)],
                 ["on", "--config", str(tmp_path / "missing")]):
        out = subprocess.run([sys.executable, "-m", "harness.launchers.sshd_power", *argv], env=env,
                             capture_output=True, text=True, timeout=60)
        assert out.returncode == EXIT_USAGE and "Traceback" not in out.stderr, out.stderr
        assert out.stderr.startswith("sshd_power: ") and out.stderr.count("\n") == 1, out.stderr
    assert not (tmp_path / "p").exists()  # refused before anything is written
