"""The command relay (harness/device/relay.py on the board, harness/launchers/relay.py on the host), at the process
boundary: the board's end runs for real (its source, as start_command sends it, in a folder without the harness),
reached through a stand-in for ssh that runs the remote command with /bin/sh and, like a login shell's rc, appends
a line to a file each time it starts. tests/remote/ runs it through Debian's sshd."""

from __future__ import annotations

import hashlib
import os
import sys
import time
from pathlib import Path

import pytest

from harness.launchers.relay import FRAME_MAX, Relay, RelayLost



class LoginShell:
    """What SSH.argv gives the relay: a command line that runs `remote` the way sshd would, with an "rc"."""

    def __init__(self, folder: Path) -> None:
        self.rc_log = folder / "rc.log"
        self.rc_log.touch()

    def argv(self, remote: str) -> list[str]:
        return ["/bin/sh", "-c", f"echo rc >> {self.rc_log}; cd {self.rc_log.parent} && {remote}"]


@pytest.fixture
def relay(tmp_path):
    shell = LoginShell(tmp_path)
    r = Relay(shell, lambda: sys.executable, "board t")
    r.shell = shell
    yield r
    r.close()


def test_commands_return_status_output_and_errors_and_the_rc_runs_once(relay):
    results = [relay.run(f"printf 'out{i}'; echo err{i} >&2; exit {i}") for i in range(5)]
    assert [(p.returncode, p.stdout, p.stderr) for p in results] == [
        (i, f"out{i}".encode(), f"err{i}\n".encode()) for i in range(5)]
    assert relay.shell.rc_log.read_text() == "rc\n" and relay.starts == 1


def test_input_reaches_the_command_whole_and_unread_input_keeps_the_stream_in_step(relay):
    data = os.urandom(3 * FRAME_MAX + 17)
    assert relay.run("sha256sum", input=data).stdout.split()[0].decode() == hashlib.sha256(data).hexdigest()
    assert relay.run("exit 4", input=data).returncode == 4          # never read: still consumed by the relay
    out = relay.run("cat", input=data).stdout                        # output larger than one frame
    assert out == data and relay.starts == 1


def test_a_command_past_its_timeout_is_killed_and_reads_like_ssh_timing_out(relay):
    p = relay.run("sleep 30", timeout=0.5)
    assert (p.returncode, p.stderr) == (255, b"timed out after 0.5 s")
    assert relay.run("echo still").stdout == b"still\n"


def test_a_streamed_command_feeds_its_consumer_and_the_rest_is_read_to_the_end(relay):
    seen = []
    p = relay.run("head -c 300000 /dev/zero", consume=lambda s: seen.append(s.read(1000)))
    assert p.returncode == 0 and seen == [b"\0" * 1000]
    with pytest.raises(RelayLost, match="more than 1000 bytes of output"):
        relay.run("head -c 300000 /dev/zero", consume=lambda s: None, after_limit=1000)
    assert not relay.running  # refused half-way: never read again; the next command starts a new relay
    assert relay.run("true").returncode == 0 and relay.starts == 2


def test_a_background_job_reports_its_output_and_status_and_dies_with_the_relay(relay, tmp_path):
    mark = tmp_path / "after-eof"
    out: list[bytes] = []
    job = relay.spawn(f"echo started; cat >/dev/null; echo gone > {mark}")
    assert relay.wait(job, 0.3, out.append) is None and b"".join(out) == b"started\n"
    killed = relay.spawn("kill -9 $$")
    assert relay.wait(killed, 10, out.append) == 137                # 128 + SIGKILL, as a shell reports it
    relay.close()                                                    # its stdin, the job's lifeline, closes
    for _ in range(100):
        if mark.exists():
            break
        time.sleep(0.05)
    assert mark.read_text() == "gone\n"


def test_a_job_is_ended_on_request(relay):
    out: list[bytes] = []
    job = relay.spawn("trap 'echo term; exit 9' TERM; echo up; while :; do sleep 0.05; done")
    assert relay.wait(job, 0.5, out.append) is None
    assert relay.kill(job, out.append) == 9 and b"term" in b"".join(out)


class Board:
    """A board whose relay answers with what a hostile board would send."""

    def __init__(self, folder: Path, script: str) -> None:
        self.py = folder / "fake.py"
        self.py.write_text(script)

    def argv(self, remote: str) -> list[str]:
        return [sys.executable, str(self.py)]


HELLO = "import struct, sys, json\nw = sys.stdout.buffer.write\n" \
        "def f(k, p): w(k + struct.pack('>I', len(p)) + p); sys.stdout.flush()\n" \
        "f(b'h', json.dumps({'relay': 1}).encode())\nsys.stdin.readline()\n"


@pytest.mark.parametrize("reply, fragment", [
    ("f(b'o', b'x' * (2 << 20))", "a frame outside its protocol"),            # longer than any frame
    ("f(b'z', b'')", "a frame outside its protocol"),                          # unknown kind
    ("f(b'x', b'[1, 2]')", "not a JSON object"),
    ("f(b'x', b'{\"rc\": \"0\"}')", "no exit status"),
    ("w(b'o\\x00\\x00')", "connection closed"),                                # cut mid-header
    ("import time; time.sleep(60)", "did not answer in time"),
])
def test_what_a_board_sends_back_is_checked(tmp_path, reply, fragment):
    r = Relay(Board(tmp_path, HELLO + reply + "\n"), lambda: "python3", "board evil")
    with pytest.raises(RelayLost, match=fragment) as err:
        r.run("true", timeout=0.1) if "sleep" not in reply else _short(r)
    assert str(err.value).startswith("board evil: ") and "\n" not in str(err.value)
    assert not r.running


def _short(r: Relay) -> None:
    import harness.launchers.relay as relay_mod

    grace, relay_mod.GRACE_S = relay_mod.GRACE_S, 0.5
    try:
        r.run("true", timeout=0.1)
    finally:
        relay_mod.GRACE_S = grace


def test_a_relay_that_cannot_start_says_why_in_one_line(tmp_path):
    r = Relay(Board(tmp_path, "import sys; sys.stderr.write('No module named harness.device.relay\\n')"),
              lambda: "python3", "board b")
    with pytest.raises(RelayLost, match="did not start|connection closed") as err:
        r.run("true")
    assert "No module named harness.device.relay" in str(err.value) and "\n" not in str(err.value)
