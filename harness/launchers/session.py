"""A Session: where one run's jobs run, behind one contract, opened by one factory (docs/architecture.md, "Where jobs
run").

The orchestrator (harness/scenarios/orchestrate.py) holds Sessions, never a kind of board: it asks a session what
the machine running the jobs can run (`health`, for planning), launches through `session.launcher`, tells it each
job's outcome (`note`), and after an infrastructure error asks whether the board still answers (`reachable`), for
the same board power-cycled (`power_cycle`) or another one (`failover`). The shape follows LAVA's and labgrid's
split between a device (what runs a job) and the place it is reached through: an infrastructure error may be
retried on the infrastructure, a test error never (LAVA "Exceptions": InfrastructureError vs TestError).

Kinds (`Where.kind`):
- local: a child process on this machine (harness/launchers/local.py); health is this machine's target_status.
- emulated: the emulated aarch64 board under qemu-user (harness/launchers/emulated.py); built or restored when
  opened, so its readiness replaces this machine's device check. It has no power switch: `power_cycle` gives None
  (a hung worker is killed by the launcher's timeout; there is no board process to restart here). The emulated
  board behind sshd is a device/place/pool like any board and has one where the lab gives it one
  (harness/launchers/sshd_power.py).
- device | place | pool: a board over SSH (harness/launchers/remote.py RemoteSession), chosen by address or
  inventory name, by labgrid place, or from a labgrid pool; with `boards` > 1 a fan-out over several boards
  (harness/scenarios/fanout.py).

`Where` is the typed, frozen selection built once from a run's settings (`Where.from_settings`): run.json keeps the
`settings.remote` dict it always had (stored runs and --resume read it; `Where.remote()` writes it), and the factory
`open_session` turns a Where into the list of sessions a run uses (one, or N for a fan-out); everything past it
(open_remote, open_fanout, the pool's places, `--each`) reads the Where's typed fields, never the dict.
"""

from __future__ import annotations

import abc
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from harness.errors import UsageError

KINDS = ("local", "emulated", "device", "place", "pool")
# The keys of run.json `settings.remote` (harness/commands/run.py remote_selection), in the order it writes them.
REMOTE_KEYS = ("device", "place", "pool", "boards", "inventory", "coordinator", "pool_wait_s", "allow_stale_board",
               "out_of_service_after")


class Session(abc.ABC):
    """Where a run's jobs run: the launcher in use and what the run may ask of the machine behind it.

    `remote` is True only for a board reached over SSH: the places where behaviour must differ key on it (an
    infrastructure error is retried there, run.json records the board per entry, the board's console is captured).
    """

    remote: bool = False

    def __init__(self, launcher) -> None:
        self.launcher = launcher
        self.power_cycles: list[dict[str, Any]] = []  # run.json `power_cycles` (only a board with a switch has any)

    @property
    def board_name(self) -> str | None:
        """The board's name (inventory or address), None where the jobs do not run on a named board."""
        return None

    @property
    def board_address(self) -> str | None:
        return None

    @abc.abstractmethod
    def health(self) -> dict[str, Any]:
        """{"available": bool, "reason": str|None, "backends": [{runtime, requested, available, reason, ...}]}: what
        the machine running the jobs can run, for planning (run.json `target.profile.backends`)."""

    def availability(self) -> Callable | None:
        """plan_entries' `availability(backend) -> (ok, reason)`, None for this machine's own check."""
        return None

    def memory(self) -> tuple[float, str] | None:
        """(MiB, how the refusal names them) of the machine a watchlist search runs on (harness/search_fit.py), None
        where unknown; here this machine's."""
        from harness.search_fit import host_memory

        return host_memory()

    def describe(self) -> dict[str, Any]:
        """run.json `launcher`."""
        return self.launcher.describe()

    def note(self, infrastructure_failure: bool, reason: str = "") -> None:
        """One job's outcome (a pool counts a place's consecutive infrastructure failures); nothing to count here."""

    def reachable(self) -> bool:
        return True

    def power_cycle(self, why: str, entry: str):
        """A fresh launcher on the same machine after cutting its power, or None where it has no power switch."""
        return None

    def failover(self):
        """A launcher on another machine for one retry, or None where there is no other."""
        return None

    def console_tail(self, name: str | None = None) -> list[str] | None:
        """The machine's last console lines, None where it has no console."""
        return None

    def close(self) -> None:
        """The run lets go of the machine."""
        close = getattr(self.launcher, "close", None)
        if close is not None:
            close()

    def release(self) -> None:
        self.close()


class LocalSession(Session):
    """A child process on this machine (LocalLauncher); its health is this machine's target_status."""

    def __init__(self, target, *, timeout_s: float) -> None:
        from harness.launchers.local import LocalLauncher

        super().__init__(LocalLauncher(timeout_s=timeout_s))
        self.target = target

    def health(self) -> dict[str, Any]:
        from harness.targets import target_status

        return target_status([self.target.id])[0]


class EmulatedSession(Session):
    """The emulated aarch64 board (qemu-user), built or restored when opened (make_launcher: UnavailableError when it
    cannot be). Its readiness replaces this machine's device check; the backends planned and recorded are this
    machine's target_status, as they always were. No power switch: power_cycle stays None."""

    def __init__(self, launcher, target) -> None:
        super().__init__(launcher)
        self.target = target

    def health(self) -> dict[str, Any]:
        from harness.targets import target_status

        return dict(target_status([self.target.id])[0], available=True)

    def memory(self) -> tuple[float, str] | None:
        from harness.search_fit import host_memory

        return host_memory(emulated=True)


@dataclass(frozen=True)
class Where:
    """Where a run's jobs run, from its settings (`Where.from_settings`): kind local | emulated | device | place |
    pool, and that kind's fields. run.json keeps `settings.remote` as a dict; `remote()` gives it back."""

    kind: str = "local"
    device: str | None = None
    place: str | None = None
    pool: str | None = None  # the labgrid filter, KEY=VAL[,KEY=VAL]
    boards: int | None = None  # --boards N: a fan-out over up to N boards of the pool
    coordinator: str | None = None
    inventory: str | None = None
    pool_wait_s: float | None = None
    allow_stale_board: bool = False
    out_of_service_after: int | None = None
    emulate: str | None = None  # "arm64[:cpu][@suite]"

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise UsageError(f"where jobs run: unknown kind {self.kind!r} (one of {', '.join(KINDS)})")
        chosen = [k for k in ("device", "place", "pool") if getattr(self, k)]
        if len(chosen) > 1:
            raise UsageError(f"where jobs run: {' and '.join('--' + k for k in chosen)} together; choose one")
        if self.emulate and chosen:
            raise UsageError(f"where jobs run: --emulate with --{chosen[0]}: the emulated board runs on this machine; "
                             f"an emulated board behind SSH is a --device/--place/--pool of its own")
        want = chosen[0] if chosen else ("emulated" if self.emulate else "local")
        if self.kind != want:
            raise UsageError(f"where jobs run: kind {self.kind!r} does not match its fields (they say {want!r})")
        if self.boards is not None and (self.kind != "pool" or int(self.boards) < 1):
            raise UsageError(f"--boards {self.boards}: takes at least 1 board from a labgrid pool (--pool KEY=VAL)")

    @classmethod
    def from_settings(cls, cfg) -> "Where":
        """From a RunConfig (`remote` dict, `emulate`); a conflicting selection is one UsageError line."""
        remote = dict(cfg.remote or {})  # keys a stored run lacks read as unset, as the openers always read them
        kind = next((k for k in ("device", "place", "pool") if remote.get(k)), None)
        if kind is None:
            kind = "emulated" if cfg.emulate else "local"
        return cls(kind=kind, device=remote.get("device"), place=remote.get("place"), pool=remote.get("pool"),
                   boards=remote.get("boards"), coordinator=remote.get("coordinator"),
                   inventory=remote.get("inventory"), pool_wait_s=remote.get("pool_wait_s"),
                   allow_stale_board=bool(remote.get("allow_stale_board")),
                   out_of_service_after=remote.get("out_of_service_after"), emulate=cfg.emulate)

    @property
    def at_once(self) -> bool:
        """A run on this machine: its session opens at once, with no board to reach, start or wait for."""
        return self.kind == "local"

    @property
    def fanout(self) -> bool:
        """--boards N > 1: the run's entries spread over several boards at once (harness/scenarios/fanout.py)."""
        return int(self.boards or 1) > 1

    def remote(self) -> dict[str, Any]:
        """run.json's `settings.remote` for this selection (the format stored runs and --resume read, parsed back by
        `from_settings`); the openers (harness/launchers/remote.py, harness/scenarios/each.py) take the Where."""
        return {k: getattr(self, k) for k in REMOTE_KEYS}


@contextmanager
def open_session(where: Where, target, *, variants: tuple[str, ...], timeout_s: float, cache: Path,
                 log: Callable[[str], None] = print) -> Iterator[list[Session]]:
    """The sessions a run uses (one, or up to `where.boards` for a fan-out), closed on the way out (errors and
    Ctrl-C too)."""
    if where.kind == "local":
        session: Session = LocalSession(target, timeout_s=timeout_s)
        try:
            yield [session]
        finally:
            session.close()
        return
    if where.kind == "emulated":
        from harness.launchers.emulated import make_launcher

        session = EmulatedSession(make_launcher(where.emulate, target, cache, timeout_s=timeout_s, log=log), target)
        try:
            yield [session]
        finally:
            session.close()
        return
    from harness.launchers import remote

    if where.fanout:
        with remote.open_fanout(where, target, variants, timeout_s=timeout_s, log=log, cache=cache) as sessions:
            yield sessions
        return
    with remote.open_remote(where, target, variants, timeout_s=timeout_s, log=log, cache=cache) as one:
        yield [one]
