"""The host's end of the command relay (the board's end: harness/device/relay.py).

One relay per board connection (the board end's source, run by the machine's python3: start_command), started over
the open ControlMaster the first time a command is sent, runs each of the launcher's commands as `/bin/sh -c`. The
board user's login shell (and whatever its rc does) then runs once per connection instead of once per command: with
an rc that costs 0.3-0.7 s, an entry's start and final fetch cost that much each over plain ssh (issue 19, item 6;
docs/remote.md, "The board account").

Everything the relay sends is untrusted: a frame's kind must be known and its length at most FRAME_MAX, an exit
record is bounded JSON, a command's buffered output is capped, and every read has a deadline. Anything else (the
channel closed, a deadline passed, a frame out of protocol) closes the relay and raises RelayLost, one line naming
the board; the next command starts a new one. A request interrupted half-way (Ctrl-C, a tar refused) also closes
it, so a relay is never read out of step.
"""

from __future__ import annotations

import json
import os
import select
import shlex
import struct
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable

FRAME_MAX = 1024 * 1024       # the board's relay sends 64 KiB frames; anything over 1 MiB is not its protocol
EXIT_MAX = 64 * 1024
OUTPUT_MAX = 16 * 1024 * 1024  # a `run` whose stdout is buffered (not streamed to a consumer)
STDERR_KEEP = 64 * 1024
START_S = 60.0                 # login shell + rc + the board's Python (an emulated board's takes seconds)
GRACE_S = 30.0                 # past the relay's own timeout for a command
TIMED_OUT = 255                # a command past its timeout reads like ssh's own failure (launchers/ssh.py SSH_FAILED)


def start_command(python: str) -> str:
    """The remote command that starts the relay: its source (standard library only) run by the machine's own
    python3, or by the board's `python` where there is none. Not the board's installed harness, so the two can never
    differ, and not inside whatever the board's `python` wraps: an emulated board's (launchers/arm64_exec.py) runs
    in a chroot, while the relay's commands (mkdir, tar, the worker's own `python` line) belong to the machine
    behind sshd, as they did over plain ssh."""
    from harness.device import relay as board_end

    source = Path(board_end.__file__).read_text()
    return f'exec "$(command -v python3 || echo {shlex.quote(python)})" -c {shlex.quote(source)}'


class RelayLost(ConnectionError):
    """The relay's channel closed, stalled or broke its protocol (an infrastructure error): one line."""


class _Frames:
    """Reads the relay's frames from a pipe with deadlines, bounded."""

    def __init__(self, fd: int, where: str) -> None:
        self.fd, self.where, self.buf = fd, where, bytearray()

    def _fill(self, n: int, deadline: float) -> None:
        while len(self.buf) < n:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.fd], [], [], left)[0]:
                raise RelayLost(f"{self.where}: the command relay did not answer in time")
            data = os.read(self.fd, max(65536, n - len(self.buf)))
            if not data:
                raise RelayLost(f"{self.where}: the command relay's connection closed")
            self.buf += data

    def next(self, deadline: float) -> tuple[bytes, bytes]:
        self._fill(5, deadline)
        kind, (n,) = bytes(self.buf[:1]), struct.unpack(">I", self.buf[1:5])
        if kind not in (b"h", b"o", b"e", b"x") or n > FRAME_MAX or (kind in (b"h", b"x") and n > EXIT_MAX):
            raise RelayLost(f"{self.where}: the command relay sent a frame outside its protocol")
        self._fill(5 + n, deadline)
        payload = bytes(self.buf[5:5 + n])
        del self.buf[:5 + n]
        return kind, payload

    def record(self, payload: bytes) -> dict[str, Any]:
        try:
            d = json.loads(payload)
        except ValueError:
            d = None
        if not isinstance(d, dict):
            raise RelayLost(f"{self.where}: the command relay sent a record that is not a JSON object")
        return d


class _Stdout:
    """A file-like read() over a streamed command's b"o" frames (for trust.receive_tar, which bounds the total)."""

    def __init__(self, relay: "Relay", deadline: float) -> None:
        self.relay, self.deadline, self.pending, self.done = relay, deadline, b"", False
        self.err = bytearray()
        self.end: dict[str, Any] | None = None

    def _more(self) -> bool:
        while not self.pending and not self.done:
            kind, payload = self.relay._frames.next(self.deadline)
            if kind == b"o":
                self.pending = payload
            elif kind == b"e":
                self.err += payload
                del self.err[:-STDERR_KEEP]
            elif kind == b"x":
                self.end, self.done = self.relay._frames.record(payload), True
            else:
                raise RelayLost(f"{self.relay.where}: the command relay sent a frame outside its protocol")
        return bool(self.pending)

    def read(self, n: int = -1) -> bytes:
        if not self._more():
            return b""
        n = len(self.pending) if n is None or n < 0 else n
        data, self.pending = self.pending[:n], self.pending[n:]
        return data

    def readinto(self, b) -> int:
        data = self.read(len(b))
        b[:len(data)] = data
        return len(data)

    def readable(self) -> bool:
        return True

    def finish(self, limit: int) -> None:
        """Read to the end record, refusing more than `limit` further stdout bytes."""
        seen = 0
        while self._more():
            seen += len(self.pending)
            self.pending = b""
            if seen > limit:
                raise RelayLost(f"{self.relay.where}: the command relay sent more than {limit} bytes of output")


class Relay:
    """One relay process on the board, reached through `ssh` (an SSH object: its argv over the ControlMaster)."""

    def __init__(self, ssh, python: Callable[[], str], where: str) -> None:
        self.ssh, self.python, self.where = ssh, python, where  # python: the board's, read at each start
        self._python = ""
        self._proc: subprocess.Popen | None = None
        self._frames: _Frames | None = None
        self._err = None
        self._lock = threading.RLock()
        self.starts = 0
        self.pid: int | None = None  # what the board's relay said its pid is (diagnostics; the board's word)

    # -- lifecycle -----------------------------------------------------------------------------------------------
    def open(self) -> None:
        with self._lock:
            python = self.python()
            if self._proc is not None and self._proc.poll() is None and python == self._python:
                return
            self.close()
            self._python = python
            self._err = tempfile.TemporaryFile()
            self._proc = subprocess.Popen(self.ssh.argv(start_command(python)), stdin=subprocess.PIPE,
                                          stdout=subprocess.PIPE, stderr=self._err, bufsize=0)
            self._frames = _Frames(self._proc.stdout.fileno(), self.where)
            try:
                kind, payload = self._frames.next(time.monotonic() + START_S)
                hello = self._frames.record(payload) if kind == b"h" else {}
                if hello.get("relay") != 1:
                    raise RelayLost(f"{self.where}: the command relay did not start (no hello from python3 or "
                                    f"{python})")
            except RelayLost as exc:
                why = self._stderr_line()
                self.close()
                raise RelayLost(f"{exc}{': ' + why if why else ''}") from None
            self.starts += 1  # also this relay's generation: a job handle names the relay that holds its lifeline
            self.pid = _integer(hello.get("pid"))

    def _stderr_line(self) -> str:
        from harness.launchers.ssh import _last

        if self._err is None:
            return ""
        try:
            if self._proc is not None:
                self._proc.wait(1)
        except subprocess.TimeoutExpired:
            pass
        self._err.seek(0)
        return _last(self._err.read()[-8192:])

    def close(self) -> None:
        """Kill our ssh client: the relay reads EOF, cuts every job's lifeline and exits."""
        with self._lock:
            if self._proc is not None:
                for pipe in (self._proc.stdin, self._proc.stdout):
                    try:
                        pipe.close()
                    except OSError:
                        pass
                self._proc.kill()
                self._proc.wait()
                self._proc = None
            if self._err is not None:
                self._err.close()
                self._err = None
            self._frames = None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    # -- requests ------------------------------------------------------------------------------------------------
    def _send(self, payload: bytes) -> None:
        try:
            self._proc.stdin.write(payload)
            self._proc.stdin.flush()
        except (BrokenPipeError, OSError, ValueError, AttributeError):
            raise RelayLost(f"{self.where}: the command relay's connection closed") from None

    def _request(self, body: Callable[[], Any], req: dict[str, Any], data: bytes = b"", *,
                 generation: int | None = None) -> Any:
        """Send `req` (and `data`, from a thread: the command's output is read meanwhile, or both pipes could fill
        and stall), then body() reads the answer. Any failure half-way closes the relay. With `generation` (a job's
        request) no new relay is started: the job lived in that one, and ended with it."""
        with self._lock:
            if generation is None:
                self.open()
            elif not self.running or generation != self.starts:
                raise RelayLost(f"{self.where}: the command relay holding the job was closed while it ran")
            writer, failed = None, []
            try:
                self._send(json.dumps(req).encode() + b"\n")
                if data:
                    def feed() -> None:
                        try:
                            self._send(data)
                        except RelayLost as exc:
                            failed.append(exc)

                    writer = threading.Thread(target=feed, daemon=True)
                    writer.start()
                result = body()
                if writer is not None:
                    writer.join()
                    if failed:
                        raise failed[0]
                return result
            except BaseException as exc:
                why = self._stderr_line() if isinstance(exc, RelayLost) else ""
                self.close()  # half a request read: never read this relay again
                if why and why not in str(exc):
                    raise RelayLost(f"{exc}: {why}") from None
                raise

    def run(self, cmd: str, *, input: bytes | None = None, timeout: float = 120.0,
            consume: Callable[[Any], None] | None = None, after_limit: int = 1 << 20) -> subprocess.CompletedProcess:
        """`/bin/sh -c cmd` on the board. Its stdout is buffered (capped at OUTPUT_MAX) or, with `consume`, given as
        a stream to consume(stream); what it leaves unread is read to the end, at most `after_limit` bytes."""
        data = input or b""

        def body() -> subprocess.CompletedProcess:
            stream = _Stdout(self, time.monotonic() + timeout + GRACE_S)
            if consume is not None:
                consume(stream)
                stream.finish(after_limit)
                out = b""
            else:
                chunks, size = [], 0
                while (part := stream.read()):
                    size += len(part)
                    if size > OUTPUT_MAX:
                        raise RelayLost(f"{self.where}: a command's output is over {OUTPUT_MAX} bytes")
                    chunks.append(part)
                out = b"".join(chunks)
            end = stream.end or {}
            rc = _integer(end.get("rc"))
            if rc is None:
                raise RelayLost(f"{self.where}: the command relay sent no exit status")
            if end.get("timed_out") is True:  # as ssh.run says it (SSH.run: exit 255 and this line)
                return subprocess.CompletedProcess(cmd, TIMED_OUT, out, f"timed out after {timeout:g} s".encode())
            return subprocess.CompletedProcess(cmd, rc, out, bytes(stream.err))

        return self._request(body, {"op": "run", "cmd": cmd, "input_len": len(data), "timeout": timeout}, data)

    def spawn(self, cmd: str) -> tuple[int, int]:
        """Start `cmd` in the background on the board; its stdin (a lifeline) is held by the relay. The job's handle:
        (the relay's generation, the job's number there)."""

        def body() -> tuple[int, int]:
            end = self._end(time.monotonic() + GRACE_S, None)
            job = _integer(end.get("job"))
            if job is None:
                raise RelayLost(f"{self.where}: the command relay did not start the job: "
                                f"{_said(end.get('error'))}")
            return self.starts, job

        return self._request(body, {"op": "spawn", "cmd": cmd})

    def wait(self, handle: tuple[int, int], timeout: float, output: Callable[[bytes], None]) -> int | None:
        """Up to `timeout` s for the job; its output so far goes to output(bytes). Its exit status, or None."""

        def body() -> int | None:
            end = self._end(time.monotonic() + timeout + GRACE_S, output)
            rc = _integer(end.get("rc"))
            if "error" in end or (rc is None and end.get("rc") is not None):
                raise RelayLost(f"{self.where}: the command relay lost the job: {_said(end.get('error'))}")
            return rc

        return self._request(body, {"op": "wait", "job": handle[1], "timeout": timeout}, generation=handle[0])

    def kill(self, handle: tuple[int, int], output: Callable[[bytes], None]) -> int | None:
        def body() -> int | None:
            return _integer(self._end(time.monotonic() + 2 * GRACE_S, output).get("rc"))

        return self._request(body, {"op": "kill", "job": handle[1]}, generation=handle[0])

    def clock(self, n: int, timeout: float) -> list[tuple[float, Any, float]]:
        """n pings of the board's time.time(), answered by the relay itself (no process starts on the board): each
        (this host's perf_counter as the request leaves, the board's answer as sent, perf_counter as it arrives).
        The answer is the board's word: harness/launchers/clock.py checks it."""
        with self._lock:
            self.open()  # a relay started here would lengthen the first round trip, not the ones measured
            pings = []
            for _ in range(n):
                sent, arrived = time.perf_counter(), []

                def body() -> Any:
                    end = self._end(time.monotonic() + timeout, None)
                    arrived.append(time.perf_counter())
                    return end.get("time")

                said = self._request(body, {"op": "time"})
                pings.append((sent, said, arrived[0]))
            return pings

    def _end(self, deadline: float, output: Callable[[bytes], None] | None) -> dict[str, Any]:
        while True:
            kind, payload = self._frames.next(deadline)
            if kind == b"x":
                return self._frames.record(payload)
            if kind == b"e" and output is not None:
                output(payload)
            elif kind != b"e":
                raise RelayLost(f"{self.where}: the command relay sent a frame outside its protocol")


def _integer(value: Any) -> int | None:
    """A whole number the relay sent (JSON's true/false are not numbers here), or None."""
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _said(value: Any) -> str:
    from harness.names import shown

    return shown(str(value))[:200] if value is not None else "no reason given"
