"""Which board a run uses: `--device user@host[:port]|NAME` (inventory), `--place NAME` or `--pool KEY=VAL` (labgrid).

The inventory (docs/remote.md, "Inventory") is a TOML file: `--inventory FILE` > env BENCH_INVENTORY >
~/.config/edge-fair-bench/boards.toml. `[defaults]` applies to every board (and to labgrid places, whose address
comes from their NetworkService); `[boards.NAME]` names a board. No passwords: keys only.

`open_remote` is a context manager around the whole run: it acquires (pool), connects and health-checks the board
before anything is copied, yields a `RemoteSession`, and always releases the place and closes the connection, on
errors and Ctrl-C too. `RemoteSession.failover()` gives another matching board after an infrastructure error
(pool only: a place not tried yet), so an entry is retried once elsewhere; test errors are never retried.
"""

from __future__ import annotations

import math
import os
import threading
import time
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

from harness.errors import InputError, UnavailableError, UsageError
from harness.launchers.session import Session, Where
from harness.launchers.ssh import Board, SSHLauncher, parse_address

ENV_INVENTORY = "BENCH_INVENTORY"
DEFAULT_INVENTORY = Path("~/.config/edge-fair-bench/boards.toml")
_BOARD_KEYS = {"address", "python", "identity_file", "known_hosts", "workdir", "tags", "connect_timeout_s",
               "keepalive_s", "power", "console", "meter", "meter_unit", "meter_interval_s", "meter_config"}
# a host-side meter (harness/launchers/host_meter.py)
_METER_KEYS = {"meter", "meter_unit", "meter_interval_s", "meter_config"}


def inventory_path(flag: str | None = None) -> Path | None:
    if flag:
        return Path(flag).expanduser()
    if os.environ.get(ENV_INVENTORY):
        return Path(os.environ[ENV_INVENTORY]).expanduser()
    default = DEFAULT_INVENTORY.expanduser()
    return default if default.is_file() else None


def load_inventory(path: Path | None) -> dict[str, Any]:
    """{"defaults": {...}, "boards": {name: {...}}}; an unreadable or malformed file is one InputError line."""
    if path is None:
        return {"defaults": {}, "boards": {}}
    try:
        import tomllib
    except ImportError:  # Python 3.10
        import tomli as tomllib
    try:
        doc = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise InputError(f"{path}: cannot read the inventory: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise InputError(f"{path}: invalid TOML: {exc}") from None
    unknown = sorted(set(doc) - {"defaults", "boards"})
    if unknown:
        raise InputError(f"{path}: unknown table(s) {', '.join(unknown)} (expected [defaults] and [boards.NAME])")
    for name, entry in [("defaults", doc.get("defaults", {}))] + list(doc.get("boards", {}).items()):
        if not isinstance(entry, dict):
            raise InputError(f"{path}: [{name}] must be a table")
        bad = sorted(set(entry) - _BOARD_KEYS)
        if bad:
            raise InputError(f"{path}: [{name}]: unknown key(s) {', '.join(bad)}; valid: {', '.join(sorted(_BOARD_KEYS))}")
        if "password" in entry:
            raise InputError(f"{path}: [{name}]: passwords are not accepted; use SSH keys")
        if "power" in entry and name == "defaults":
            raise InputError(f"{path}: [defaults]: power belongs to one board ([boards.NAME]): one switch for "
                             "every board would cycle the wrong one")
        if "power" in entry:
            from harness.launchers.power import PowerSpec

            PowerSpec.parse(entry["power"], f"{path}: [{name}]")
        if _METER_KEYS & set(entry):
            from harness.launchers import host_meter

            if name == "defaults":
                host_meter.check_table(entry, f"{path}: [{name}]", defaults=True)
            else:
                host_meter.check_board_table(entry, f"{path}: [{name}]")
        if "console" in entry:
            if name == "defaults":
                raise InputError(f"{path}: [defaults]: console belongs to one board ([boards.NAME])")
            from harness.launchers.console import parse_inventory_console

            parse_inventory_console(entry["console"], f"{path}: [{name}]")
    return {"defaults": doc.get("defaults", {}), "boards": doc.get("boards", {})}


def make_board(name: str, address: str, options: dict[str, Any], where: str,
               published: dict[str, Any] | None = None) -> Board:
    """`published`: a held labgrid place's sigrok resources (Lease.meters), where a `meter = "labgrid:NAME"` is
    looked up; None for a board that is no labgrid place (such a meter is refused, exit 2)."""
    try:
        user, host, port = parse_address(address)
    except ValueError as exc:
        raise UsageError(f"{where}: bad address {address!r}: expected user@host[:port] ({exc})") from None
    kw = {k: v for k, v in options.items() if k in _BOARD_KEYS - {"address", "power", "console"} - _METER_KEYS}
    if "tags" in kw:
        kw["tags"] = {str(k): str(v) for k, v in kw["tags"].items()}
    if "meter" in options:
        from harness.launchers.host_meter import HostMeterSpec

        spec = HostMeterSpec.from_options(options, where)
        if spec.labgrid is not None and published is None:
            raise InputError(f"{where}: meter {options['meter']!r} reads a labgrid place's resource: board {name} "
                             "is no labgrid place here (use --place/--pool, or a meter command)")
        kw["meter"] = spec.on_place(name, published or {})
    return Board(name=name, host=host, user=user, port=port, **kw)


def power_for(name: str, inventory: dict[str, Any], inv_path: Path | None):
    """The PowerSpec of an inventory board or labgrid place (harness/launchers/power.py), or None."""
    table = inventory["boards"].get(name, {}).get("power")
    if table is None:
        return None
    from harness.launchers.power import PowerSpec

    return PowerSpec.parse(table, f"{inv_path}: [boards.{name}]")


def console_for(name: str, inventory: dict[str, Any], inv_path: Path | None):
    """The inventory's `console = "tcp://HOST:PORT"` of a board or labgrid place (harness/launchers/console.py)."""
    value = inventory["boards"].get(name, {}).get("console")
    if value is None:
        return None
    from harness.launchers.console import parse_inventory_console

    return parse_inventory_console(value, f"{inv_path}: [boards.{name}]")


def board_for_device(device: str, inventory: dict[str, Any], inv_path: Path | None) -> Board:
    """An inventory name, or user@host[:port] (with the inventory's [defaults])."""
    defaults, boards = inventory["defaults"], inventory["boards"]
    if device in boards:
        entry = boards[device]
        if "address" not in entry:
            raise InputError(f"{inv_path}: [boards.{device}] has no address")
        return make_board(device, entry["address"], {**defaults, **entry}, str(inv_path))
    if "@" in device or ":" in device or "." in device or device == "localhost":
        return make_board(device, device, dict(defaults), "--device")
    known = ", ".join(sorted(boards)) or "(no inventory)"
    raise UsageError(f"--device {device!r}: not user@host[:port] and not a board in the inventory "
                     f"({inv_path or 'none found'}; boards: {known})")


class RemoteSession(Session):
    """A board over SSH (harness/launchers/session.py's contract): the launcher in use, its health report for
    planning, its power switch and console where the inventory or labgrid place has them, and how to get another
    board for one retry after an infrastructure error."""

    remote = True

    def __init__(self, launcher: SSHLauncher, failover: Callable[[], SSHLauncher | None] | None = None,
                 lease: Callable[[], dict[str, Any] | None] = lambda: None, *,
                 power: Callable[[str], Any] = lambda name: None,
                 reconnect: Callable[[Any], SSHLauncher] | None = None,
                 note: Callable[[str, bool, str], None] = lambda place, infra, reason: None,
                 release: Callable[[], None] | None = None, log: Callable[[str], None] = print,
                 console: Callable[[str], tuple[Any, str | None]] = lambda name: (None, None)):
        super().__init__(launcher)
        self._release = release
        self._failover = failover
        self._lease = lease
        self._power = power
        self._reconnect = reconnect
        self._note = note
        self._log = log
        self.history: list[dict[str, Any]] = []
        # the board's console, read from when it is taken until it is let go (harness/launchers/console.py)
        from harness.launchers.console import Consoles

        self.consoles = Consoles(console, log)
        self.consoles.watch(launcher.board.name)

    @property
    def board_name(self) -> str:
        return self.launcher.board.name

    @property
    def board_address(self) -> str:
        return self.launcher.board.address

    def health(self) -> dict[str, Any]:
        """The board answered for itself in its health check (harness/device/health.py)."""
        return {"available": True, "backends": self.launcher.health_report["backends"]}

    def availability(self) -> Callable:
        on_board = {(b["runtime"], b["requested"]): (b["available"], b["reason"])
                    for b in self.launcher.health_report["backends"]}
        return lambda b: on_board.get((b.runtime, b.requested),
                                      (False, "not checked on the board (no requested variant uses it)"))

    def memory(self) -> tuple[float, str] | None:
        """The board's memory from its health report, untrusted (harness/search_fit.py): `memory_available_mb`
        (psutil's `available` on the board, what its own check reads), else, from a board whose harness predates
        that field, `fingerprint.memory_total_mb` (a bound: a size that does not fit in the total never fits);
        None where neither is a usable number (the board's own check then stays the only one)."""
        report = self.launcher.health_report
        if not isinstance(report, dict):
            return None
        available = report.get("memory_available_mb")  # boards from this version on: what the board itself checks
        if _usable_mb(available):
            return float(available), "the board reported {mb} MiB available in its health check"
        fingerprint = report.get("fingerprint")
        total = fingerprint.get("memory_total_mb") if isinstance(fingerprint, dict) else None
        if not _usable_mb(total):
            return None
        return float(total), "the board reported {mb} MiB of memory in total in its health check"

    def console_tail(self, name: str | None = None) -> list[str] | None:
        """The last console lines of the board (the current one by default), None when it has no console."""
        return self.consoles.tail(name or self.launcher.board.name)

    def close(self) -> None:
        """The run lets go of the board: the console's last lines saved, the connection closed."""
        self.consoles.stop()
        self.launcher.close()

    def note(self, infrastructure_failure: bool, reason: str = "") -> None:
        """One job's outcome on the current board (pool: the consecutive infrastructure failures of its place)."""
        self._note(self.launcher.board.name, infrastructure_failure, reason)

    def power_cycle(self, why: str, entry: str) -> SSHLauncher | None:
        """The board stopped answering: power-cycle it (its inventory `power`), wait for its shell (bounded by
        boot_timeout_s), and give a fresh launcher on the same board, or None when it has no power switch or did
        not come back. Every cycle is recorded (run.json `power_cycles`)."""
        from harness.launchers.power import switch, wait_for_shell
        from harness.results.store import utc_now

        board = self.launcher.board
        spec = self._power(board.name)
        if spec is None or self._reconnect is None:
            return None
        record = {"board": board.name, "address": board.address, "entry": entry, "at_utc": utc_now(),
                  "reason": why, "boot_timeout_s": spec.boot_timeout_s, "switch": spec.source}
        tail = self.console_tail()
        if tail is not None:  # the board's last words before its power was cut
            record["console_tail"] = tail
        self.power_cycles.append(record)
        self._log(f"{entry}: board {board.name} does not answer: power-cycling it")
        self.launcher.close()
        try:
            record["cycle_s"] = round(switch(spec, board.name, "cycle"), 3)
        except UnavailableError as exc:
            record.update(ok=False, error=exc.message)
            self._log(exc.message)
            return None
        launcher, waited, last = wait_for_shell(lambda: self._reconnect(board), spec.boot_timeout_s)
        record.update(shell_s=round(waited, 3), ok=launcher is not None)
        if launcher is None:
            record["error"] = f"no shell within {spec.boot_timeout_s:g} s ({last})"
            self._log(f"board {board.name}: {record['error']}")
            return None
        self._log(f"board {board.name}: back after {record['cycle_s'] + waited:.1f} s; retrying {entry} once on it")
        self.launcher = launcher
        return launcher

    def failover(self) -> SSHLauncher | None:
        if self._failover is None:
            return None
        self.history.append(self.describe())
        self.consoles.stop(self.launcher.board.name)  # its place is released now
        new = self._failover()
        if new is not None:
            self.launcher = new
            self.consoles.watch(new.board.name)
        return new

    def describe(self) -> dict[str, Any]:
        d = self.launcher.describe()
        lease = self._lease()
        if lease:
            d["labgrid"] = lease
        if self.history:
            d["earlier"] = list(self.history)
        return d

    def release(self) -> None:
        """Let go of the board now (a fan-out's lost board): close the connection, release its pool place."""
        self.close()
        if self._release is not None:
            self._release()

    def reachable(self) -> bool:
        return self.launcher.ssh.run("true", timeout=30).returncode == 0


def _usable_mb(value: Any) -> bool:
    """A memory figure a board sent that can be compared (untrusted: a number, finite, positive)."""
    return not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value) and value > 0


def _connector(where: Where, target, variants: tuple[str, ...], timeout_s: float,
               log: Callable[[str], None], cache: Path | None) -> Callable[[Board], SSHLauncher]:
    """connect(board): a launcher on `board`, its provision record adopted (a board with one runs its venv and must be
    current: provision.adopt; `cache` holds the host's wheel) and health-checked (UnavailableError while it does not
    answer)."""
    def folder() -> Path:
        from harness.paths import cache_root

        return Path(cache) if cache else cache_root().path

    wheel_lock, wheel = threading.Lock(), []

    def wheel_of():
        """The host's wheel, looked up once for every board (a fan-out connects boards from several threads)."""
        from harness.launchers.provision import host_wheel

        with wheel_lock:
            if not wheel:
                wheel.append(host_wheel(folder(), log=log))
            return wheel[0]

    def adopt(launcher: SSHLauncher) -> None:
        from harness.launchers.provision import adopt as adopt_record

        adopt_record(launcher, target_id=target.id, cache=folder(), allow_stale=where.allow_stale_board,
                     inventory=where.inventory, log=log, wheel_of=wheel_of)

    def connect(board) -> SSHLauncher:
        launcher = SSHLauncher(board, timeout_s=timeout_s)
        try:
            adopt(launcher)
            launcher.check(target, variants)
        except BaseException:
            launcher.close()
            raise
        return launcher

    return connect


@contextmanager
def open_remote(where: Where, target, variants: tuple[str, ...], *, timeout_s: float,
                log: Callable[[str], None] = print, cache: Path | None = None) -> Iterator[RemoteSession]:
    """One board of `where` (kind device, place or pool; its inventory, coordinator, pool wait, ...). A board with a
    provision record runs its venv and must be current (provision.adopt; `cache` holds the host's wheel, default the
    harness cache)."""
    if where.kind not in ("device", "place", "pool"):
        raise ValueError(f"open_remote: a {where.kind} selection is no board over SSH")
    inv_path = inventory_path(where.inventory)
    inventory = load_inventory(inv_path)

    connect = _connector(where, target, variants, timeout_s, log, cache)

    def power(name: str):
        return power_for(name, inventory, inv_path)

    if where.kind == "device":
        board = board_for_device(where.device, inventory, inv_path)
        launcher = connect(board)
        session = None
        try:
            log(f"board {board.name} ({board.address}): healthy ({_summary(launcher.health_report)})"
                f"{_provisioned(launcher)}")
            _account_warning(board, launcher.health_report, log)
            session = RemoteSession(launcher, power=power, reconnect=connect, log=log,
                                    console=lambda name: (console_for(name, inventory, inv_path), None))
            yield session
        finally:
            (session if session else launcher).close()
        return

    boards = _PoolBoards(where, inventory, inv_path, connect, power, log)
    try:
        yield boards.session(boards.take(boards.filters), failover=where.kind == "pool")
    finally:
        boards.close()


# --boards N: past the first board, the others are waited for at most this long (a fan-out starts with what is free
# then, and says so); the first board waits --pool-wait as a one-board run does.
FANOUT_WAIT_S = 30.0


@contextmanager
def open_fanout(where: Where, target, variants: tuple[str, ...], *, timeout_s: float,
                log: Callable[[str], None] = print, cache: Path | None = None) -> Iterator[list[RemoteSession]]:
    """`--pool FILTER --boards N` (`where.boards`): up to N matching places, each acquired, connected and health-checked as
    open_remote does one. The first place is acquired alone (it must exist: it waits `pool_wait_s`); then the other
    N-1 are taken concurrently, one thread each (`_taking_more`), while this thread connects and health-checks the
    first; their waits share one deadline FANOUT_WAIT_S past the first's acquisition (fewer is said, one line per
    board not taken). Yields one RemoteSession per board; every place is released and every connection closed on
    the way out, on errors and Ctrl-C too. Boards of one fan-out must be one board model (same_model): mixing is a
    UsageError (exit 2)."""
    if where.kind != "pool":
        raise ValueError(f"open_fanout: a {where.kind} selection is no labgrid pool")
    n = int(where.boards or 1)
    inv_path = inventory_path(where.inventory)
    inventory = load_inventory(inv_path)
    boards = _PoolBoards(where, inventory, inv_path, _connector(where, target, variants, timeout_s, log, cache),
                         lambda name: power_for(name, inventory, inv_path), log)
    try:
        first = boards.acquire(boards.filters)
        deadline = time.monotonic() + min(boards.pool_wait_s, FANOUT_WAIT_S)
        with _taking_more(boards, n - 1, deadline) as collect:
            sessions = [boards.session(boards.connect_lease(first), failover=False)]
            more, missing = collect()
        sessions += more
        for reason in missing:
            log(f"fan-out: {len(sessions)} of {n} boards ({reason}); running on "
                + ", ".join(s.launcher.board.name for s in sessions))
        same_model([(s.launcher.board.name, s.launcher.board.tags, s.launcher.health_report) for s in sessions],
                   target.id)
        if len(sessions) > 1:
            log(f"fan-out over {len(sessions)} boards: " + ", ".join(s.launcher.board.name for s in sessions))
        yield sessions
    finally:
        boards.close()


@contextmanager
def _taking_more(boards: "_PoolBoards", k: int, deadline: float
                 ) -> Iterator[Callable[[], tuple[list[RemoteSession], list[str]]]]:
    """Start taking up to `k` more places of `boards.filters` at once: k threads, each reserving, acquiring,
    connecting and health-checking one board (labgrid's queue hands each reservation a different place), each wait
    bounded by `deadline`. Yields collect(): waits for the threads and gives (sessions in place-name order, [why a
    board was not taken]); a board that cannot be had (UnavailableError: none free in time, unreachable,
    unhealthy) is a reason, any other error is raised once every thread has ended. An exception in the body (the
    first board failing its health check, Ctrl-C) stops the waiting threads (their reservations cancelled within
    a poll, Pool.acquire's `cancel`) and waits for the connects in flight; `boards.close()` then releases every
    place they took."""
    from concurrent.futures import ThreadPoolExecutor

    cancel = threading.Event()

    def one() -> RemoteSession:
        return boards.session(boards.take(boards.filters, wait_s=max(0.0, deadline - time.monotonic()),
                                          cancel=cancel), failover=False)

    with ThreadPoolExecutor(max_workers=max(k, 1), thread_name_prefix="fanout-connect") as workers:
        futures = [workers.submit(one) for _ in range(max(k, 0))]

        def collect() -> tuple[list[RemoteSession], list[str]]:
            taken, missing, errors = [], [], []
            for future in futures:
                try:
                    taken.append(future.result())
                except UnavailableError as exc:
                    missing.append(exc.message)
                except Exception as exc:  # noqa: BLE001 - raised below, once every thread has ended
                    errors.append(exc)
            if errors:
                raise errors[0]
            return sorted(taken, key=lambda s: s.launcher.board.name), missing

        try:
            yield collect
        except BaseException:
            cancel.set()
            raise


def board_class(tags: dict[str, str], report: dict[str, Any] | None, target_id: str) -> tuple:
    """What two boards of one fan-out must share: the target profile (the place's `target` tag where it has one),
    emulated or not (and how), and the board model, read from the board's own fingerprint by the same rule the gate
    matches baselines with (harness/report/board.py, `board_of`: device-tree model, else the CPU model)."""
    from harness.report.board import board_of

    report = report or {}
    ident = board_of({"target": {"id": target_id}, "device_environment": report.get("fingerprint") or {},
                      "launcher": {"emulation": report.get("emulation")}})
    return (tags.get("target", target_id), ident.emulated, ident.model, report.get("machine"))


def same_model(boards: list[tuple[str, dict[str, str], dict[str, Any] | None]], target_id: str) -> None:
    """Refuse a fan-out over boards of different models (UsageError, one line naming two of them): fan-out is for
    throughput, `--each` for comparing boards."""
    from harness.names import shown

    first_name, tags, report = boards[0]
    want = board_class(tags, report, target_id)
    for name, tags, report in boards[1:]:
        have = board_class(tags, report, target_id)
        if have != want:
            def said(c: tuple) -> str:
                return f"target {c[0]}, {'emulated ' + c[1] if c[1] else 'real'}, model {shown(str(c[2]))}, {c[3]}"
            raise UsageError(f"--boards: board {shown(first_name)} ({said(want)}) and board {shown(name)} "
                             f"({said(have)}) are different board models; a fan-out spreads one run over boards of "
                             "one model (compare models with --each)")


def board_for_lease(lease, inventory: dict[str, Any]) -> Board:
    """The board behind an acquired labgrid place: its NetworkService's address, user and port, with the inventory's
    [defaults] and the [boards.PLACE] entry of the same name (python, workdir, keys...); the place's labgrid tags
    go with the board into run.json (a gate can match baselines per tag, e.g. model)."""
    ns = lease.network_service
    options = {**inventory["defaults"], **inventory["boards"].get(lease.place, {})}
    options["tags"] = {**lease.tags, **(options.get("tags") or {})}
    user = ns.get("username")
    return make_board(lease.place, f"{user + '@' if user else ''}{ns['address']}:{ns.get('port') or 22}",
                      options, f"labgrid place {lease.place}", getattr(lease, "meters", None) or {})


class _PoolBoards:
    """The labgrid places one `bench run` holds (one, or several for a fan-out): take, note, release, failover."""

    def __init__(self, where: Where, inventory: dict[str, Any], inv_path: Path | None,
                 connect: Callable[[Any], SSHLauncher], power: Callable[[str], Any], log: Callable[[str], None]):
        from harness.launchers.pool import DEFAULT_OUT_OF_SERVICE_AFTER, Pool, parse_filters

        self.inventory, self.connect, self.power, self.log = inventory, connect, power, log
        self.inv_path = inv_path
        self.pool = Pool(where.coordinator)
        self.filters = {"name": where.place} if where.kind == "place" else parse_filters(where.pool)
        self.pool_wait_s = float(where.pool_wait_s or 3600)  # --pool-wait; unset: an hour
        for place, holder in self.pool.release_stale():
            log(f"labgrid place {place}: released from {holder} (that bench process is gone)")
        self._lock = threading.Lock()  # a fan-out takes its boards from several threads (_taking_more)
        self.tried: set[str] = set()
        self.held: dict[str, Any] = {}  # place -> Lease
        self.sessions: list[RemoteSession] = []
        self.limit = int(where.out_of_service_after or DEFAULT_OUT_OF_SERVICE_AFTER)

    def note(self, place: str, infra: bool, reason: str) -> None:
        n = self.pool.note_result(place, infra, reason, limit=self.limit)
        if infra:
            self.log(f"labgrid place {place}: {n} consecutive infrastructure failure{'s' if n != 1 else ''}"
                     + (f" (out of service at {self.limit})" if n < self.limit else ": marked out of service"))

    def take(self, flt: dict[str, str], wait_s: float | None = None, cancel: threading.Event | None = None
             ) -> tuple[SSHLauncher, Any]:
        """Acquire a matching place and connect to its board: (launcher, lease)."""
        return self.connect_lease(self.acquire(flt, wait_s, cancel))

    def acquire(self, flt: dict[str, str], wait_s: float | None = None, cancel: threading.Event | None = None):
        """A lease on a matching place (waiting `wait_s`, default the run's --pool-wait), held until release."""
        wait = self.pool_wait_s if wait_s is None else wait_s
        lease = self.pool.acquire(flt, wait_s=wait, log=self.log, cancel=cancel)
        with self._lock:
            self.held[lease.place] = lease
            self.tried.add(lease.place)
        return lease

    def connect_lease(self, lease) -> tuple[SSHLauncher, Any]:
        """Connect to and health-check the board of a held place: (launcher, lease); failing, the place is
        released (and an unhealthy board counted as its place's infrastructure failure)."""
        try:
            board = board_for_lease(lease, self.inventory)
        except BaseException:
            self.release(lease.place)
            raise
        try:
            launcher = self.connect(board)
        except UnavailableError as exc:  # not answering its health check: an infrastructure failure of the place
            self.note(lease.place, True, exc.message)
            self.release(lease.place)
            raise
        except BaseException:
            self.release(lease.place)
            raise
        self.log(f"labgrid place {lease.place} acquired: board {board.address} healthy "
                 f"({_summary(launcher.health_report)})")
        _account_warning(board, launcher.health_report, self.log)
        return launcher, lease

    def release(self, place: str) -> None:
        # A coordinator gone at release time must not turn a finished run into a failure (exit 3), nor replace the
        # exception of one that failed: the place stays held by this (soon gone) process; say how to free it.
        with self._lock:
            lease = self.held.pop(place, None)
        if lease is None:
            return
        try:
            mark = self.pool.is_out_of_service(lease.place)
            if mark:
                self.pool.retire(lease)
                self.log(f"labgrid place {lease.place} is out of service ({mark}); bench pool return {lease.place} "
                         "brings it back")
                return
            self.pool.release(lease)
        except UnavailableError as exc:
            warnings.warn(f"labgrid place {lease.place} not released ({exc.message}); once the coordinator is back, "
                          f"bench pool release --stale --coordinator {self.pool.address} frees it", stacklevel=2)
            return
        self.log(f"labgrid place {lease.place} released")

    def session(self, taken: tuple[SSHLauncher, Any], *, failover: bool) -> RemoteSession:
        """A RemoteSession on a taken place; with `failover`, one retry may move it to a matching place not tried."""
        launcher, lease = taken
        current = {"place": lease.place}

        def lease_info():
            return ({"coordinator": self.pool.address, "place": current["place"], "holder": self.pool.holder}
                    if current["place"] in self.held else None)

        def move() -> SSHLauncher | None:
            from harness.launchers.pool import place_matches

            session.launcher.close()
            self.release(current["place"])
            others = [p for p in self.pool.places() if p.name not in self.tried
                      and place_matches(p.name, p.tags, self.filters)]
            for p in others:
                try:
                    new, new_lease = self.take({"name": p.name})
                except UnavailableError as exc:
                    self.log(f"labgrid place {p.name}: {exc.message}")
                    continue
                current["place"] = new_lease.place
                return new
            return None

        from harness.launchers.exported import Exported

        exported = Exported(self.inventory, self.inv_path, self.held, self.log)
        session = RemoteSession(launcher, move if failover else None, lease=lease_info,
                                power=lambda name: self.power(name) or exported.power(name), reconnect=self.connect,
                                note=self.note, release=lambda: self.release(current["place"]), log=self.log,
                                console=exported.console)
        with self._lock:
            self.sessions.append(session)
        return session

    def close(self) -> None:
        with self._lock:
            sessions, places = list(self.sessions), list(self.held)
        for s in sessions:
            s.close()
        for place in places:
            self.release(place)


# Seconds per plain ssh command above which the board account's shell start-up is called out: a user whose login
# shell is /bin/sh measured 0.01-0.07 s per command, root with a heavy ~/.bashrc 0.31-0.71 s (issue 19, loopback
# sshd). A job's commands go through the command relay (launchers/relay.py), which pays it once per connection, but
# what such an rc exports reaches the worker.
SLOW_COMMAND_S = 0.15


def _summary(report: dict[str, Any] | None) -> str:
    r = report or {}
    parts = [r.get("device_model") or r.get("machine") or "?", f"python {r.get('python')}",
             f"{r.get('disk_free_mb')} MB free"]
    if r.get("temperature_c") is not None:
        parts.append(f"{r['temperature_c']:.0f} C")
    if r.get("ssh_command_s") is not None:
        parts.append(f"{r['ssh_command_s']:.2f} s per command")
    return ", ".join(parts)


def _provisioned(launcher) -> str:
    rec = getattr(launcher, "provision_record", None)
    return f"; provisioned: edge-fair-bench {rec['harness_version']} in {launcher.board.python}" if rec else ""


def _account_warning(board, report: dict[str, Any] | None, log: Callable[[str], None]) -> None:
    cost = (report or {}).get("ssh_command_s")
    if cost is not None and cost > SLOW_COMMAND_S:
        log(f"board {board.name}: each command over SSH takes {cost:.2f} s (above {SLOW_COMMAND_S} s): the board "
            f"user's login shell start-up (e.g. ~/.bashrc) does work; bench pays it once per connection (its command "
            "relay), but what it exports reaches the worker; use a board user whose shell is /bin/sh or whose rc "
            "returns at once when not interactive (docs/remote.md, \"The board account\")")
