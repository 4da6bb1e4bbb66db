"""`bench device provision --pool FILTER [--boards N|all] [--jobs J]`: provision every labgrid place of a pool (or the
first N by name), J boards at a time (issue 19; docs/remote.md, "Provisioning a pool").

- **The same lock path as `bench run --pool`**: each place is taken through a labgrid reservation filtered on its
  name, then acquired under this process's holder name (harness/launchers/pool.py), so a board that another run or
  another provisioning holds is never touched. It is waited for up to `--pool-wait` seconds (default 0 here: not at
  all) and otherwise skipped with a line naming its holder: status `held`, exit 3 (it was not provisioned; run
  again, or pass `--pool-wait`). Out-of-service places (docs/remote.md, "Out of service") are skipped, saying so:
  status `out-of-service`, not a failure (the lab took them out; `bench pool return PLACE` brings one back).
- **Host work once**: the harness wheel is built (or found in its cache, under its lock: provision.host_wheel) once
  before any place is taken, and boards of one platform share one `pip download` (provision.dependency_wheels'
  memo, ordered by the wheelhouse's lock).
- **Boards in parallel**: a thread pool of J workers (concurrent.futures; default min(4, boards)); each worker takes
  its place, connects over SSH, provisions (provision.provision: the same steps as one board), closes the
  connection and releases the place (release, then the reservation cancelled), on errors too. One board failing
  never stops the others; the command's exit code is the worst of the boards' (harness/errors.py, README's table),
  3 when no board ended provisioned or current.
- **Ctrl-C / SIGTERM**: boards not started are never taken, the waits stop at the next poll (Pool.acquire's
  `cancel`), the SSH connections in flight are closed (their commands fail at once), every held place is released,
  and the command exits 130; the lines of the boards that finished are already printed. A host-side `pip download`
  in flight is not cut short by SIGTERM (Ctrl-C on a terminal reaches it too): the exit waits for it.

Names a coordinator or board sends (place names, holders, the record's python) are data: printed through
harness.names.shown, never used as paths.
"""

from __future__ import annotations

import threading
import time
import warnings
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from harness.errors import EXIT_FAILURE, EXIT_OK, EXIT_UNAVAILABLE, BenchError, UnavailableError, UsageError

DEFAULT_JOBS = 4
PROVISIONED, CURRENT, FAILED, HELD, OUT_OF_SERVICE = "provisioned", "current", "failed", "held", "out-of-service"
_SAID = {PROVISIONED: "provisioned", CURRENT: "already current", FAILED: "failed", HELD: "skipped",
         OUT_OF_SERVICE: "out of service"}


@dataclass
class BoardResult:
    """One place's outcome (one line, one `--json` record)."""

    place: str
    status: str                      # provisioned | current | failed | held | out-of-service
    exit_code: int
    seconds: float = 0.0
    address: str | None = None
    python: str | None = None        # the board's python version (from its record)
    runtime: str | None = None       # what this host chose for its target (provision.extra_for)
    extra: str | None = None
    error: str | None = None         # one line: why it failed or was skipped
    record: dict[str, Any] | None = field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        return {"place": self.place, "address": self.address, "status": self.status, "exit_code": self.exit_code,
                "seconds": round(self.seconds, 2), "python": self.python, "runtime": self.runtime,
                "extra": self.extra, "error": self.error, "record": self.record}

    def line(self) -> str:
        from harness.names import shown

        parts = [f"{shown(self.place)}: {_SAID[self.status]}"
                 + (f" (exit {self.exit_code})" if self.status == FAILED else "")]
        if self.python:
            parts.append(f"python {shown(str(self.python))[:32]}")
        if self.runtime:
            parts.append(f"{self.runtime} [{self.extra or 'no extra: the system runtime'}]")
        parts.append(f"{self.seconds:.1f} s")
        text = ", ".join(parts)
        return f"{text}: {shown(self.error)}" if self.error else text


def parse_boards(text: str) -> int | None:
    """--boards N|all: a positive count, or None for every matching place."""
    if text == "all":
        return None
    if not text.isdigit() or int(text) < 1:
        raise UsageError(f"--boards {text!r}: expected a positive number of boards or 'all'")
    return int(text)


def select_places(places: list, filters: dict[str, str], boards: int | None) -> tuple[list, list[BoardResult]]:
    """(the places to provision: matching, in service, by name, at most `boards`; results for the matching places
    skipped because they are out of service). No matching place at all: UnavailableError (exit 3, as --pool)."""
    from harness.launchers.pool import _fmt, place_matches

    matching = sorted((p for p in places if place_matches(p.name, p.tags, filters)), key=lambda p: p.name)
    if not matching:
        raise UnavailableError(f"no labgrid place matches {_fmt(filters)} (bench pool lists them)")
    skipped = [BoardResult(p.name, OUT_OF_SERVICE, EXIT_OK, error=f"{p.out_of_service}; skipped (bench pool return "
                                                                   f"{p.name} brings it back)")
               for p in matching if p.out_of_service]
    usable = [p for p in matching if not p.out_of_service]
    return (usable if boards is None else usable[:boards]), skipped


def exit_code(results: list[BoardResult]) -> int:
    """The worst board's exit code; 3 when no board ended provisioned or current (nothing usable)."""
    worst = max((r.exit_code for r in results), default=EXIT_OK)
    if not any(r.status in (PROVISIONED, CURRENT) for r in results):
        worst = max(worst, EXIT_UNAVAILABLE)
    return worst


def summary(results: list[BoardResult], filters: dict[str, str], wall_s: float) -> str:
    from harness.launchers.pool import _fmt

    counts = {s: sum(r.status == s for r in results) for s in _SAID}
    ready = counts[PROVISIONED] + counts[CURRENT]
    said = ", ".join(f"{n} {_SAID[s]}" for s, n in counts.items() if n)
    return (f"pool {_fmt(filters)}: {ready} of {len(results)} place{'s' if len(results) != 1 else ''} ready ({said}) "
            f"in {wall_s:.1f} s; exit {exit_code(results)}")


class _Provisioner:
    """The shared state of one pool provisioning: the pool, the host's wheel, the connections in flight."""

    def __init__(self, pool, inventory: dict[str, Any], *, target_id: str | None, runtime: str | None, cache: Path,
                 pool_wait_s: float, wheel, log: Callable[[str], None]):
        self.pool, self.inventory, self.target_id, self.runtime = pool, inventory, target_id, runtime
        self.cache, self.pool_wait_s, self.wheel, self.log = cache, pool_wait_s, wheel, log
        from harness.launchers.provision import DependencyMemo

        self.deps_memo = DependencyMemo()
        self.cancel = threading.Event()
        self._lock = threading.Lock()
        self._active: set = set()

    def stop(self) -> None:
        """Ctrl-C: no new place is taken, the waits end, every connection in flight is closed."""
        with self._lock:  # closed under the lock: a worker closing its own launcher waits, never closes it at once
            self.cancel.set()
            for launcher in self._active:
                launcher.close()

    def one(self, place) -> BoardResult:
        from harness import specs
        from harness.launchers.provision import extra_for, provision
        from harness.launchers.remote import board_for_lease
        from harness.launchers.ssh import SSHLauncher

        t0 = time.perf_counter()
        try:
            lease = self.pool.acquire({"name": place.name}, wait_s=self.pool_wait_s, log=self.log, cancel=self.cancel)
        except UnavailableError as exc:
            holder = None if self.cancel.is_set() else self._holder(place.name)
            if holder:
                wait = f"within {self.pool_wait_s:g} s" if self.pool_wait_s else "(--pool-wait S waits for it)"
                return BoardResult(place.name, HELD, EXIT_UNAVAILABLE, time.perf_counter() - t0,
                                   error=f"held by {holder}; not provisioned {wait}")
            return BoardResult(place.name, FAILED, exc.exit_code, time.perf_counter() - t0, error=exc.message)
        result = BoardResult(place.name, FAILED, EXIT_FAILURE)
        launcher = None
        try:
            board = board_for_lease(lease, self.inventory)
            result.address = board.address
            target_id = self.target_id or board.tags.get("target")
            if not target_id:
                raise UsageError(f"place {place.name}: no --target and the place has no tag 'target'; say which "
                                 "target profile's runtime its board gets (e.g. --target rpi)")
            target = specs.get_target(target_id)
            result.runtime, result.extra = extra_for(target, self.runtime)
            launcher = SSHLauncher(board)
            with self._lock:
                if self.cancel.is_set():
                    raise UnavailableError(f"place {place.name}: not provisioned: the command is stopping")
                self._active.add(launcher)
            state, record = provision(launcher, target, runtime=self.runtime, cache=self.cache, log=self.log,
                                      wheel=self.wheel, deps_memo=self.deps_memo)
            result.status, result.exit_code, result.record = state, EXIT_OK, record
            result.python = record.get("python") if isinstance(record.get("python"), str) else None
        except BenchError as exc:
            result.exit_code, result.error = exc.exit_code, exc.message
        except Exception as exc:  # noqa: BLE001 - an internal error on one board must not stop the others
            result.exit_code, result.error = EXIT_FAILURE, f"internal error: {type(exc).__name__}: {exc}"
        finally:
            if launcher is not None:
                with self._lock:
                    self._active.discard(launcher)
                launcher.close()
            self._release(lease)
        result.seconds = time.perf_counter() - t0
        return result

    def _holder(self, name: str) -> str | None:
        from harness.names import shown

        try:
            p = next((p for p in self.pool.places() if p.name == name), None)
        except UnavailableError:
            return None
        if p is None:
            return None
        if p.acquired:
            return shown(p.acquired)
        return f"a reservation ({shown(p.reservation)})" if p.reservation else None

    def _release(self, lease) -> None:
        try:
            self.pool.release(lease)
        except UnavailableError as exc:
            warnings.warn(f"labgrid place {lease.place} not released ({exc.message}); once the coordinator is back, "
                          f"bench pool release --stale --coordinator {self.pool.address} frees it", stacklevel=2)


def provision_pool(filters: dict[str, str], *, coordinator: str | None, inventory: dict[str, Any],
                   target_id: str | None, runtime: str | None, cache: Path, boards: int | None = None,
                   jobs: int | None = None, pool_wait_s: float = 0.0, log: Callable[[str], None] = print,
                   on_done: Callable[[BoardResult], None] = lambda r: None) -> list[BoardResult]:
    """Provision the places matching `filters` (see the module docstring); `on_done(result)` is called in this
    thread as each board finishes (and first for the places skipped as out of service). Returns every result."""
    from harness.launchers.pool import Pool
    from harness.launchers.provision import host_wheel

    if jobs is not None and jobs < 1:
        raise UsageError(f"--jobs {jobs}: expected at least 1")
    pool = Pool(coordinator)
    for place, holder in pool.release_stale():
        log(f"labgrid place {place}: released from {holder} (that bench process is gone)")
    chosen, results = select_places(pool.places(), filters, boards)
    for r in results:
        on_done(r)
    if not chosen:
        return results
    wheel = host_wheel(cache, log=log)  # once, before any place is taken
    work = _Provisioner(pool, inventory, target_id=target_id, runtime=runtime, cache=cache,
                        pool_wait_s=pool_wait_s, wheel=wheel, log=log)
    n = min(jobs or DEFAULT_JOBS, len(chosen))
    log(f"provisioning {len(chosen)} board{'s' if len(chosen) != 1 else ''}, {n} at a time (harness wheel "
        f"{wheel.sha256[:12]})")
    with ThreadPoolExecutor(max_workers=n, thread_name_prefix="provision") as workers:
        futures = [workers.submit(work.one, p) for p in chosen]
        try:
            for future in as_completed(futures):
                result = future.result()
                results.append(result)
                on_done(result)
        except BaseException:
            work.stop()
            for future in futures:
                future.cancel()
            raise
    return results
