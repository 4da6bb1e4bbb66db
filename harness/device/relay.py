"""The board's end of the command relay: one process per connection that runs the host's commands, so the board
user's login shell and its rc run once per connection, not once per command (issue 19, item 6).

sshd runs every command through the user's login shell, and bash started by sshd reads ~/.bashrc even when not
interactive; an rc that costs 0.3-0.7 s made each entry's few commands cost seconds (docs/remote.md, "The board
account"). The host sends this file's source once over the open ControlMaster (`exec python3 -c SOURCE`,
harness/launchers/relay.py start_command: the board's installed harness is not needed) and then its commands; each
runs as `/bin/sh -c COMMAND` in its own process group, in the folder sshd started us in, with the environment the
login shell gave us: what a command would have had over plain ssh, minus the rc's cost.

Standard library only, Python 3.8+ (tests/unit/test_device_python_floor.py): it runs on the board's own python3.

Host -> board, on stdin: one JSON line per request (at most 64 KiB), then `input_len` raw bytes for `run`:
  {"op": "run", "cmd": STR, "input_len": N, "timeout": S}   run to the end; stdout streamed back
  {"op": "spawn", "cmd": STR}                               start in the background, stdin a pipe we hold
  {"op": "wait", "job": K, "timeout": S}                    up to S seconds for job K; its output so far
  {"op": "kill", "job": K}                                  end job K (stdin closed, SIGTERM, then SIGKILL)
  {"op": "time"}                                            our time.time(), at once (launchers/clock.py's pings)
Board -> host, on stdout, frames of one kind byte, a 4-byte big-endian length and the payload:
  b"h" hello (JSON, once, first)   b"o" stdout bytes   b"e" stderr/output bytes   b"x" the request's end (JSON)
The host treats all of it as untrusted (harness/launchers/relay.py bounds every frame).

A spawned job's stdin is its lifeline (the worker runs with --watch-stdin): when our stdin closes (the connection
dropped, the host died or closed us) we close every job's stdin and exit, and the jobs exit on their own.
"""

from __future__ import annotations

import json
import os
import signal
import struct
import subprocess
import sys
import threading
import time

VERSION = 1
FRAME_MAX = 64 * 1024            # we send at most this per frame; the host refuses bigger ones
REQUEST_MAX = 64 * 1024
OUTPUT_KEEP = 1024 * 1024        # a background job's output kept between two waits (the newest bytes)
KILL_GRACE_S = 5.0


class _Out:
    """Frames onto our stdout, one writer at a time."""

    def __init__(self, stream) -> None:
        self.stream = stream
        self.lock = threading.Lock()

    def frame(self, kind: bytes, payload: bytes) -> None:
        with self.lock:
            for i in range(0, max(len(payload), 1), FRAME_MAX):
                part = payload[i:i + FRAME_MAX]
                self.stream.write(kind + struct.pack(">I", len(part)) + part)
            self.stream.flush()

    def end(self, **fields) -> None:
        self.frame(b"x", json.dumps(fields).encode())


def _status(code: int) -> int:
    """A shell's exit status: a process ended by signal N is 128+N (POSIX 2.8.2), as over plain ssh."""
    return 128 - code if code < 0 else code


def _kill_group(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


class _Job:
    """A background command: its stdin held open by us, its stdout and stderr gathered (the newest OUTPUT_KEEP)."""

    def __init__(self, cmd: str) -> None:
        self.proc = subprocess.Popen(["/bin/sh", "-c", cmd], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        self.lock = threading.Lock()
        self.output = bytearray()
        self.reader = threading.Thread(target=self._drain, daemon=True)
        self.reader.start()

    def _drain(self) -> None:
        while True:
            data = self.proc.stdout.read1(65536)
            if not data:
                return
            with self.lock:
                self.output += data
                del self.output[:-OUTPUT_KEEP]

    def take(self) -> bytes:
        with self.lock:
            data, self.output = bytes(self.output), bytearray()
        return data

    def lifeline_cut(self) -> None:
        try:
            self.proc.stdin.close()
        except OSError:
            pass

    def end(self) -> int:
        self.lifeline_cut()
        _kill_group(self.proc, signal.SIGTERM)
        try:
            self.proc.wait(KILL_GRACE_S)
        except subprocess.TimeoutExpired:
            _kill_group(self.proc, signal.SIGKILL)
            self.proc.wait()
        self.reader.join(5)
        return _status(self.proc.returncode)


def _run(req: dict, inp, out: _Out) -> None:
    n = int(req.get("input_len") or 0)
    proc = subprocess.Popen(["/bin/sh", "-c", str(req["cmd"])], stdin=subprocess.PIPE if n else subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    timed_out = threading.Event()

    def expire() -> None:
        timed_out.set()
        _kill_group(proc, signal.SIGKILL)

    timer = threading.Timer(float(req.get("timeout") or 120), expire)
    timer.start()
    err = bytearray()

    def stream_out() -> None:
        while True:
            data = proc.stdout.read1(FRAME_MAX)
            if not data:
                return
            try:
                out.frame(b"o", data)
            except OSError:  # the host is gone: stop the command, the main loop ends at its next read
                _kill_group(proc, signal.SIGKILL)
                return

    def gather_err() -> None:
        while True:
            data = proc.stderr.read1(65536)
            if not data:
                return
            err.extend(data)
            del err[:-FRAME_MAX]

    threads = [threading.Thread(target=stream_out, daemon=True), threading.Thread(target=gather_err, daemon=True)]
    for t in threads:
        t.start()
    try:
        left = n
        while left:  # what the command does not read is still read from the host: the stream stays in step
            data = inp.read(min(left, 1 << 20))
            if not data:
                raise EOFError("the host closed the relay mid-request")
            left -= len(data)
            if proc.stdin is not None and not proc.stdin.closed:
                try:
                    proc.stdin.write(data)
                except (BrokenPipeError, OSError):
                    proc.stdin.close()
        if proc.stdin is not None and not proc.stdin.closed:
            try:
                proc.stdin.close()
            except OSError:
                pass
        for t in threads:
            t.join()
        code = proc.wait()
    finally:
        timer.cancel()
        if proc.poll() is None:
            _kill_group(proc, signal.SIGKILL)
    if err:
        out.frame(b"e", bytes(err))
    out.end(rc=_status(code), timed_out=timed_out.is_set())


def serve(inp, raw_out) -> None:
    out = _Out(raw_out)
    jobs: dict = {}
    out.frame(b"h", json.dumps({"relay": VERSION, "pid": os.getpid()}).encode())
    try:
        while True:
            line = inp.readline(REQUEST_MAX + 1)
            if not line:
                return
            req = json.loads(line)
            op = req.get("op")
            if op == "run":
                _run(req, inp, out)
            elif op == "time":  # read as late as we can: the host's ping brackets it (RFC 5905's on-wire offset)
                out.end(time=time.time())
            elif op == "spawn":
                job = _Job(str(req["cmd"]))
                jobs[job.proc.pid] = job
                out.end(job=job.proc.pid)
            elif op in ("wait", "kill"):
                job = jobs.get(req.get("job"))
                if job is None:
                    out.end(error=f"no job {req.get('job')!r}")
                    continue
                if op == "kill":
                    code = job.end()
                else:
                    try:
                        code = _status(job.proc.wait(max(0.0, float(req.get("timeout") or 0))))
                        job.reader.join(5)
                    except subprocess.TimeoutExpired:
                        code = None
                output = job.take()
                if output:
                    out.frame(b"e", output)
                if code is not None:
                    jobs.pop(job.proc.pid, None)
                out.end(rc=code)
            else:
                out.end(error=f"unknown op {op!r}")
    finally:
        for job in jobs.values():  # the lifeline: each worker sees EOF and exits on its own
            job.lifeline_cut()


def main() -> int:
    # SIGPIPE stays ignored (Python's default): a command that exits without reading its input must not end us;
    # the host gone shows as BrokenPipeError or EOF, and the jobs' lifelines are cut on the way out (serve).
    try:
        serve(sys.stdin.buffer, sys.stdout.buffer)
    except (EOFError, BrokenPipeError, ConnectionResetError):
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
