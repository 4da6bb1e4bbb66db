"""A board's serial console captured into the run folder while a run holds the board (issue 19, item 4).

Where the console comes from (docs/remote.md, "Console"):
- the labgrid place's `NetworkSerialPort` as its exporter publishes it (labgrid.resource.serialport: host, port,
  speed, protocol "rfc2217" or "raw": a ser2net TCP port on the exporter host), or
- the inventory's `console = "tcp://HOST:PORT"` for a board (a plain ser2net raw TCP port); it wins over the place's.

The port is read through labgrid's own `SerialDriver` on a `NetworkSerialPort` resource (pyserial's `socket://` or
`rfc2217://` handler underneath), by a background thread from when the board is taken until the run lets go of it.
What the console prints is untrusted input: it is decoded as UTF-8 with every undecodable byte shown as `\\xNN`, and
every character that is not printable (ESC and the rest of C0/C1, DEL, ...) shown as its Python escape (`\\x1b`), so
no terminal escape sequence reaches a log reader or a report (the rule of harness.names.shown); a tab is kept, a
line's trailing CR dropped. Lines longer than MAX_LINE_CHARS are split. The log keeps the last MAX_LOG_BYTES
(4 MiB) of lines; what was dropped before them is said in the log's first line. A console that closes (the board's
power cut, ser2net restarted) is reopened every RETRY_S; one that cannot be opened is one warning line and a note in
run.json (`consoles[].error`), never a failed run.

The log is `<run>/boards/<board>/console.log` (the board's name is data: a safe file name per harness.names, else
`board-<sha256 prefix>`), rewritten atomically every SAVE_EVERY_S while it grows and when capture stops.
"""

from __future__ import annotations

import codecs
import hashlib
import ipaddress
import re
import threading
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urlsplit

from harness.errors import InputError
from harness.names import is_safe_id, shown

MAX_LOG_BYTES = 4 * 1024 * 1024
MAX_LINE_CHARS = 4096
TAIL_LINES = 20
RETRY_S = 1.0
SAVE_EVERY_S = 2.0
READ_TIMEOUT_S = 0.25
OPEN_TIMEOUT_S = 5.0
LOG_NAME = "console.log"
PROTOCOLS = ("raw", "rfc2217")
_HOST = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*")


@dataclass(frozen=True)
class ConsoleSource:
    """A network console: labgrid's NetworkSerialPort parameters, and where they came from."""

    host: str
    port: int
    protocol: str = "raw"
    speed: int = 115200
    origin: str = "inventory"  # "inventory" or "labgrid NetworkSerialPort"

    def describe(self) -> str:
        return f"{self.origin} {self.protocol}://{self.host}:{self.port}"


def _host_problem(host: object) -> str | None:
    if not isinstance(host, str) or not host:
        return "no host"
    try:
        ipaddress.ip_address(host)
        return None
    except ValueError:
        pass
    if len(host) > 253 or not _HOST.fullmatch(host):
        return f"host {shown(host)!s} is not a host name or IP address"
    return None


def parse_inventory_console(value: object, where: str) -> ConsoleSource:
    """The inventory's `console = "tcp://HOST:PORT"` (a ser2net raw TCP port), strictly: scheme tcp, a host name
    or IP address, a port 1-65535, nothing else (no user, path, query or fragment). Else one InputError line."""
    expected = 'console must be "tcp://HOST:PORT" (a ser2net raw TCP port)'
    if not isinstance(value, str) or not value.isprintable():
        raise InputError(f"{where}: {expected}")
    try:
        url = urlsplit(value)
        port = url.port
    except ValueError as exc:
        raise InputError(f"{where}: console {shown(value)}: {exc}; {expected}") from None
    host = url.hostname or ""
    if url.hostname and url.netloc.startswith("["):  # an IPv6 literal keeps its brackets out of `host`
        host = url.hostname
    if url.scheme != "tcp" or url.username is not None or url.password is not None or url.path not in ("", "/") \
            or url.query or url.fragment or port is None or not 1 <= port <= 65535 or _host_problem(host):
        raise InputError(f"{where}: console {shown(value)}: {expected}")
    return ConsoleSource(host=host, port=port, protocol="raw", origin="inventory")


def exported_console(params: Any) -> tuple[ConsoleSource | None, str | None]:
    """A NetworkSerialPort as the coordinator hands it out (what an exporter published: untrusted): the source, or
    None and why it is unusable."""
    if not isinstance(params, dict):
        return None, "NetworkSerialPort without parameters"
    host, port = params.get("host"), params.get("port")
    protocol, speed = params.get("protocol", "rfc2217"), params.get("speed", 115200)
    problem = _host_problem(host)
    if problem is None and (isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535):
        problem = f"port {shown(port)} is not 1-65535"
    if problem is None and protocol not in PROTOCOLS:
        problem = f"protocol {shown(protocol)} is not raw or rfc2217"
    if problem is None and (isinstance(speed, bool) or not isinstance(speed, int) or speed <= 0):
        problem = f"speed {shown(speed)} is not a positive integer"
    if problem:
        return None, f"labgrid NetworkSerialPort unusable: {problem}"
    return ConsoleSource(host=host, port=port, protocol=protocol, speed=speed,
                         origin="labgrid NetworkSerialPort"), None


def visible(text: str) -> str:
    """One console line made safe to show: printable characters and tabs kept, every other character (ESC, CR,
    C1 controls, DEL, ...) as its Python escape; undecodable bytes arrive here already as \\xNN."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() or c == "\t" else c.encode("unicode_escape").decode("ascii") for c in text)


def log_name(board: str) -> str:
    """The folder name for `board` under <run>/boards/: the name itself when it is a safe id, else a stable stand-in."""
    if is_safe_id(board):
        return board
    return "board-" + hashlib.sha256(str(board).encode("utf-8", "surrogatepass")).hexdigest()[:12]


class ConsoleLog:
    """The captured console as sanitised lines, keeping the last `cap` bytes (UTF-8, newline included)."""

    def __init__(self, cap: int = MAX_LOG_BYTES, max_line: int = MAX_LINE_CHARS):
        self.cap, self.max_line = cap, max_line
        self.lines: deque[str] = deque()
        self.size = 0  # bytes of self.lines as written
        self.dropped_bytes = 0
        self.dropped_lines = 0
        self.received_bytes = 0
        self._partial = ""
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="backslashreplace")
        self._lock = threading.Lock()
        self.version = 0

    def _add(self, line: str) -> None:
        n = len(line.encode("utf-8")) + 1
        self.lines.append(line)
        self.size += n
        while self.size > self.cap and self.lines:
            old = self.lines.popleft()
            self.size -= len(old.encode("utf-8")) + 1
            self.dropped_bytes += len(old.encode("utf-8")) + 1
            self.dropped_lines += 1

    def _line(self, raw: str) -> None:
        raw = raw[:-1] if raw.endswith("\r") else raw
        shown_line = visible(raw)
        while len(shown_line) > self.max_line:
            self._add(shown_line[:self.max_line])
            shown_line = shown_line[self.max_line:]
        self._add(shown_line)

    def feed(self, data: bytes) -> None:
        """Bytes as they came off the console (a UTF-8 sequence split across reads is joined)."""
        with self._lock:
            self.received_bytes += len(data)
            text = self._partial + self._decoder.decode(data)
            *done, self._partial = text.split("\n")
            for raw in done:
                self._line(raw)
            while len(self._partial) > self.max_line * 4:  # a console that never ends its line: bounded too
                self._line(self._partial[:self.max_line])
                self._partial = self._partial[self.max_line:]
            self.version += 1

    def note(self, text: str) -> None:
        """A line of bench's own (opened, closed, reconnecting), marked `[bench]`; an unfinished line is ended first."""
        with self._lock:
            if self._partial or self._decoder.getstate()[0]:
                self._line(self._partial + self._decoder.decode(b"", final=True))
                self._partial = ""
                self._decoder.reset()
            self._add(visible(f"[bench] {text}"))
            self.version += 1

    def preload(self, text: str) -> None:
        """An earlier capture of the same board (a resumed run): its lines first, within the same cap."""
        with self._lock:
            for line in text.splitlines():
                self._add(visible(line))
            self.version += 1

    def tail(self, n: int = TAIL_LINES) -> list[str]:
        with self._lock:
            out = list(self.lines)[-n:]
            if self._partial:
                out = (out + [visible(self._partial.rstrip("\r"))])[-n:]
            return out

    def text(self) -> str:
        """The log file's content: a first line saying what was dropped (if anything), the kept lines, and the
        unfinished last line."""
        with self._lock:
            head = (f"[bench] {self.dropped_bytes} bytes ({self.dropped_lines} lines) of earlier console output "
                    f"dropped: the log keeps the last {self.cap // (1024 * 1024) or self.cap} "
                    f"{'MiB' if self.cap >= 1024 * 1024 else 'bytes'}\n") if self.dropped_bytes else ""
            body = "".join(line + "\n" for line in self.lines)
            tail = visible(self._partial.rstrip("\r")) + "\n" if self._partial else ""
            return head + body + tail


class ConsoleCapture:
    """A background reader of one board's console (labgrid SerialDriver), reopening it when it closes."""

    def __init__(self, board: str, source: ConsoleSource, *, log: Callable[[str], None] = print,
                 cap: int = MAX_LOG_BYTES, retry_s: float = RETRY_S):
        self.board, self.source, self._log, self.retry_s = board, source, log, retry_s
        self.buffer = ConsoleLog(cap)
        self.connects = 0
        self.error: str | None = None  # why it could not be opened (while never opened) or the last close
        self.path: Path | None = None
        self.rel: str | None = None
        self.record: dict[str, Any] = {"board": board, "source": source.describe(), "log": None, "bytes": 0,
                                       "received_bytes": 0, "dropped_bytes": 0, "connects": 0, "error": None}
        self._stop = threading.Event()
        self._opened = threading.Event()
        self._saved = -1
        self._save_lock = threading.Lock()
        self._warned_write = False
        self._thread = threading.Thread(target=self._run, name=f"bench-console-{log_name(board)}", daemon=True)

    # -- reading ---------------------------------------------------------------------------------------------------
    def _driver(self):
        from labgrid import Target
        from labgrid.driver import SerialDriver
        from labgrid.resource import NetworkSerialPort

        target = Target(f"bench-console-{log_name(self.board)}")
        NetworkSerialPort(target, "console", host=self.source.host, port=self.source.port, speed=self.source.speed,
                          protocol=self.source.protocol)
        driver = SerialDriver(target, "serial", timeout=OPEN_TIMEOUT_S)
        return target, driver

    def _run(self) -> None:
        import logging

        logging.getLogger("SerialDriver").setLevel(logging.WARNING)  # labgrid logs every read at debug
        first = True
        while not self._stop.is_set():
            target = None
            try:
                target, driver = self._driver()
                target.activate(driver)  # opens the port
            except Exception as exc:  # noqa: BLE001 - pyserial/labgrid raise many kinds; one line each
                self._opening_failed(exc, first)
                first = False
                if target is not None:
                    target.cleanup()
                self._stop.wait(self.retry_s)
                continue
            first = False
            self.connects += 1
            self.error = None
            self.buffer.note(f"console {self.source.describe()} opened"
                             + (f" (connection {self.connects})" if self.connects > 1 else ""))
            self._opened.set()
            why = self._read(driver)
            target.cleanup()
            if why is not None:
                self.error = why
                self.buffer.note(f"console closed ({why}); reopening")
                self._stop.wait(self.retry_s)
        self.save()

    def _read(self, driver) -> str | None:
        """Read until stopped (None) or the console closes (why).

        The port labgrid's SerialDriver configured and opened (`driver.serial`, pyserial's socket:// or rfc2217://)
        is read directly, as SerialDriver._read does, not through the driver's `read`: that is a labgrid step
        (labgrid.step), and labgrid's step stack is one per process and not thread-safe, so a step in this thread
        beside a power driver's step in another (a power cycle while the console is read) breaks its assertions."""
        import time

        port = driver.serial
        port.timeout = READ_TIMEOUT_S
        last_save = time.monotonic()
        while not self._stop.is_set():
            try:
                # one byte (waiting at most READ_TIMEOUT_S), then exactly what is there: pyserial's socket:// read
                # raises at end of file and drops what it had read in that call, so never ask for more than is there
                data = port.read(1)
                if data:
                    data += port.read(min(_available(port), 65536))
            except Exception as exc:  # noqa: BLE001 - SerialException('socket disconnected'), OSError, ...
                return _one_line(exc)
            if data:
                self.buffer.feed(data)
            if time.monotonic() - last_save >= SAVE_EVERY_S:
                self.save()
                last_save = time.monotonic()
        return None

    def _opening_failed(self, exc: BaseException, first: bool) -> None:
        why = _one_line(exc)
        if first:
            self.error = why
            self.record["error"] = f"cannot open: {why}"
            self._log(f"board {shown(self.board)}: console {self.source.describe()} cannot be opened ({why}); "
                      "no console log until it answers (run.json consoles)")
            self._opened.set()

    # -- lifetime --------------------------------------------------------------------------------------------------
    def start(self, wait_s: float = OPEN_TIMEOUT_S + 1) -> "ConsoleCapture":
        """Start reading; wait (bounded) for the first open or its failure, so the boot's first lines are caught."""
        self._thread.start()
        self._opened.wait(wait_s)
        return self

    def attach(self, folder: Path, rel: str) -> None:
        """Write the log into `folder` (created) as `rel` relative to the run folder; an earlier log there (a
        resumed run on the same board) is kept as the start of this one."""
        try:
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / LOG_NAME
            if path.is_file() and self.path is None:
                earlier = path.read_bytes()[-self.buffer.cap:].decode("utf-8", "backslashreplace")
                self.buffer.preload(earlier)
                self.buffer.note("resumed: the capture above is from the earlier attempt of this run")
        except OSError as exc:
            self._write_failed(folder, exc)
            return
        self.path, self.rel = path, rel
        self.record["log"] = rel
        self.save()

    def stop(self) -> dict[str, Any]:
        """Stop reading (bounded), write the log a last time; the run.json record."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(READ_TIMEOUT_S + OPEN_TIMEOUT_S + 2)
        self.save()
        return dict(self.record)

    def tail(self, n: int = TAIL_LINES) -> list[str]:
        return self.buffer.tail(n)

    def save(self) -> None:
        from harness.files import atomic_write_bytes

        with self._save_lock:
            self.record.update(received_bytes=self.buffer.received_bytes, dropped_bytes=self.buffer.dropped_bytes,
                               connects=self.connects)
            if self.connects:
                self.record["error"] = None if self.error is None else f"last close: {self.error}"
            if self.path is None or self._saved == self.buffer.version:
                return
            version = self.buffer.version
            data = self.buffer.text().encode("utf-8")
            try:
                atomic_write_bytes(self.path, data)
            except OSError as exc:
                self._write_failed(self.path, exc)
                return
            self._saved = version
            self.record["bytes"] = len(data)

    def _write_failed(self, path: Path, exc: OSError) -> None:
        if not self._warned_write:
            self._warned_write = True
            self._log(f"board {shown(self.board)}: console log {shown(path)}: {exc.strerror or exc} (the run goes on)")


def _available(port) -> int:
    """Bytes ready on `port`: FIONREAD on its socket (pyserial's socket:// in_waiting only says 0 or 1), else
    pyserial's in_waiting (rfc2217: its reader thread's queue)."""
    import array
    import fcntl
    import termios

    try:
        count = array.array("i", [0])
        fcntl.ioctl(port.fileno(), termios.FIONREAD, count)
        return max(0, count[0])
    except (AttributeError, OSError, NotImplementedError, ValueError):
        return port.in_waiting


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return visible(text[:300])


def start_capture(board: str, source: ConsoleSource | None, problem: str | None,
                  log: Callable[[str], None]) -> ConsoleCapture | dict[str, Any] | None:
    """A started capture for `board`, or (an unusable source) the run.json note saying why, warned once."""
    if source is not None:
        return ConsoleCapture(board, source, log=log).start()
    if problem:
        log(f"board {shown(board)}: {problem}; no console log")
        return {"board": board, "source": None, "log": None, "bytes": 0, "error": problem}
    return None


class Consoles:
    """The consoles of one run's session (harness/launchers/remote.py RemoteSession): one capture per board it held
    (a failover moves it to another board), or the note why a board has none."""

    def __init__(self, source: Callable[[str], tuple[ConsoleSource | None, str | None]],
                 log: Callable[[str], None]):
        self._source, self._log = source, log
        self.by_board: dict[str, ConsoleCapture | dict[str, Any]] = {}
        self._run_dir: Path | None = None

    def _capture(self, name: str) -> ConsoleCapture | None:
        cap = self.by_board.get(name)
        return None if cap is None or isinstance(cap, dict) else cap

    def watch(self, name: str) -> None:
        """The board is taken: start reading its console (if it has one)."""
        if self._capture(name) is not None:
            return
        found = start_capture(name, *self._source(name), self._log)
        if found is not None:
            self.by_board[name] = found
            if self._run_dir is not None:
                self._attach(name)

    def _attach(self, name: str) -> None:
        cap = self._capture(name)
        if cap is not None:
            cap.attach(self._run_dir / "boards" / log_name(name), f"boards/{log_name(name)}/{LOG_NAME}")

    def attach(self, run_dir: Path) -> None:
        """The run folder is known: each console's log goes to <run>/boards/<board>/console.log from now on."""
        self._run_dir = Path(run_dir)
        for name in list(self.by_board):
            self._attach(name)

    def tail(self, name: str) -> list[str] | None:
        cap = self._capture(name)
        return None if cap is None else cap.tail()

    def stop(self, name: str | None = None) -> None:
        """Stop reading one board's console (its place is let go), or every one."""
        for board in [name] if name is not None else list(self.by_board):
            cap = self._capture(board)
            if cap is not None:
                cap.stop()

    def records(self, stop: bool = False) -> list[dict[str, Any]]:
        """run.json `consoles` records (`stop`: stop capturing first, so each size is the log's final size)."""
        return [dict(c) if isinstance(c, dict) else (c.stop() if stop else dict(c.record))
                for c in self.by_board.values()]


def note_consoles(doc: dict[str, Any], sessions: list, *, run_dir: Path | None = None, stop: bool = False) -> None:
    """run.json `consoles`: one record per board with a console (source, log path relative to the run folder, its
    size in bytes, bytes received and dropped, connections, error), replacing that board's record of an earlier
    attempt (--resume) and keeping the others. `run_dir`: the logs go there from now on; `stop`: capture ends."""
    records: dict[str, dict[str, Any]] = {r.get("board"): r for r in doc.get("consoles", []) if isinstance(r, dict)}
    for session in sessions:
        if run_dir is not None:
            session.consoles.attach(run_dir)
        for rec in session.consoles.records(stop=stop):
            records[rec["board"]] = rec
    if records:
        doc["consoles"] = list(records.values())
