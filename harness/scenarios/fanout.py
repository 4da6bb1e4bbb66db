"""`bench run --pool FILTER --boards N`: one run's entries spread over several boards of one model at once.

The host acquires the faces once (decode, detection, alignment, the inputs sent) and then hands the entries out
through a work queue: one thread per board drives that board's launcher and takes the next entry whenever its board
is free (the "dynamic" schedule of a task farm: a slow entry never holds back a board that could take another).
Every entry is measured on exactly one board and recorded with it (`entries[].board`); run.json `boards` keeps every
board that took part (with its own fingerprint) and `infrastructure_failures` every infrastructure failure, both
kept across `--resume`.

A board lost mid-entry (LAVA's infrastructure error, docs/remote.md "Failures"): where it has a power switch it is
power-cycled and the entry retried once on it, as in a one-board run; otherwise the board leaves the fan-out (its
place released) and the entry goes back on the queue once, for another board. A board that still answers keeps
taking entries; its failed entry too goes back once, to another board. An entry that fails for infrastructure
reasons a second time is recorded failed (the run stays partial, exit 3, resumable); so is one that cannot go back
(no other board to take it), with what the host's meter saw during its last attempt (`entries[].meter`, as any
failed job keeps it: docs/remote.md); entries left when every board
is gone stop the run with BoardLost (exit 3, resumable: `bench run --resume RUN --pool FILTER --boards N` runs only
the missing entries, on whichever boards it gets).

The threads share the run's state under one lock (harness.scenarios.orchestrate._Entries): only a board's own
work (the launch over SSH, a power cycle) runs outside it, so run.json and the per-sample records are written by one
thread at a time, exactly as in a one-board run.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any


@dataclass
class _Item:
    entry: dict
    avoid: set[str] = field(default_factory=set)  # boards that failed it: a requeued entry goes to another board
    retried: bool = False
    reason: str | None = None  # its last infrastructure error
    last_board: str | None = None  # the board of that error
    meter: dict | None = None  # what the host's meter saw during that attempt (orchestrate.failed_meter), if it ran


class _Queue:
    """Entries waiting for a board. A board takes the first entry it may run; it stops when none is left for it and
    none is running anywhere (nothing can come back for it then)."""

    def __init__(self, entries: list[dict], lock: threading.Lock):
        self.items = [_Item(e) for e in entries]
        self.running = 0
        self.cond = threading.Condition(lock)

    def take(self, board: str) -> _Item | None:
        """Called with the lock held."""
        while True:
            for i, item in enumerate(self.items):
                if board not in item.avoid:
                    self.running += 1
                    return self.items.pop(i)
            if self.running == 0:
                return None
            self.cond.wait()

    def done(self, requeued: _Item | None = None) -> None:
        """Called with the lock held, once per item taken."""
        self.running -= 1
        if requeued is not None:
            self.items.append(requeued)
        self.cond.notify_all()


def fan_out(ctx, entries: list[dict], sessions: list, advance) -> None:
    """Run `entries` (the pending ones of ctx.plan) over `sessions` (one session per board, harness/launchers/session.py); see the module
    docstring. Raises BoardLost when entries are left and every board is gone, re-raises a board thread's error."""
    from harness.scenarios.orchestrate import BoardLost, Requeue

    ctx.lock = threading.Lock()
    queue = _Queue(entries, ctx.lock)
    lost: dict[str, str] = {}  # board -> why it left the fan-out
    errors: list[BaseException] = []
    with ctx.lock:
        for s in sessions:
            note_board(ctx.doc, s)
        ctx.writer.write_run_json(ctx.doc)

    def worker(session) -> None:
        name = session.board_name
        first = True
        with ctx.lock:
            while name not in lost and not errors:
                item = queue.take(name)
                if item is None:
                    return
                requeued = None
                try:
                    def on_infra(result, entry, item=item):
                        return _after_failure(ctx, session, item, result, lost)

                    if ctx.run(item.entry, session.launcher, session, first=first, on_infra=on_infra,
                               retries=0 if item.retried else 1):
                        first = False
                    advance()
                except Requeue:
                    item.avoid.add(name)
                    item.retried = True
                    requeued = item
                except BaseException as exc:  # noqa: BLE001 - handed to the main thread, which re-raises it
                    errors.append(exc)
                finally:
                    queue.done(requeued)
                    note_board(ctx.doc, session)

    threads = [threading.Thread(target=worker, args=(s,), name=f"board-{s.board_name}", daemon=True)
               for s in sessions]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    with ctx.lock:
        for s in sessions:
            note_board(ctx.doc, s)
        for b in ctx.doc["boards"]:
            if b["board"]["name"] in lost:
                b["left"] = lost[b["board"]["name"]]
        ctx.doc["launcher"] = sessions[0].describe()
        ctx.writer.write_run_json(ctx.doc)
        if errors:
            raise errors[0]
        left = [item.entry["entry"] for item in queue.items]
        if left and len(lost) < len(sessions):  # a board still answers, but none other than the one that failed
            for item in queue.items:
                entry = _record_failed(item, "no other board of the fan-out to retry it on")
                ctx.record(entry, None)
            ctx.writer.write_run_json(ctx.doc)
            return
        for item in queue.items:  # every board is gone: the attempted entries on record, the rest left to resume
            if item.reason is not None:
                ctx.record(_record_failed(item, "every board of the fan-out is gone"), None)
    if left:
        gone = "; ".join(f"board {b}: {why}" for b, why in lost.items())
        raise BoardLost(f"every board of the fan-out is gone with {len(left)} entr{'y' if len(left) == 1 else 'ies'} "
                        f"left ({', '.join(left)}; {gone}); run {ctx.writer.run_id} keeps every sample brought back: "
                        f"resume with bench run --resume {ctx.writer.run_id} (add --pool/--boards to continue on "
                        "other boards)")


def _record_failed(item: _Item, why: str) -> dict:
    """The run.json entry of an item lost with no board left to retry it on: failed for infrastructure reasons on
    its last board, keeping what the host's meter saw during that attempt (`meter`, energy null, "job failed: WHY")
    as a failed job recorded on its board keeps it (orchestrate.keep_meter)."""
    from harness.scenarios.orchestrate import _entry_record

    entry = _entry_record(item.entry)
    last = item.last_board
    entry.update(status="failed", failure="infrastructure", reason=f"{item.reason} ({why})", board=last, device=last)
    if item.meter is not None:
        entry["meter"] = item.meter
    return entry


def _after_failure(ctx, session, item: _Item, result, lost: dict[str, str]):
    """An infrastructure error of `item` on `session`'s board (called with ctx.lock held): a fresh launcher on the
    same board after a power cycle (one retry there, run.json `power_cycles`), or Requeue: the entry goes to another
    board once, and a board that no longer answers leaves the fan-out (its place released)."""
    from harness.scenarios.orchestrate import Requeue, _unlocked, failed_meter

    name = session.board_name
    item.reason, item.last_board = result.reason, name
    item.meter = failed_meter(result, session.launcher)  # this attempt's; None where no host meter ran for it
    ctx.log(f"{item.entry['entry']}: infrastructure error on board {name}: {result.reason}")
    with _unlocked(ctx.lock):
        answering = session.reachable()
        new = None
        n = len(session.power_cycles)
        if not answering:  # its power switch first, then the same board once more
            new = session.power_cycle(result.reason, item.entry["entry"])
    ctx.doc.setdefault("power_cycles", []).extend(session.power_cycles[n:])
    if new is not None:
        ctx.writer.write_run_json(ctx.doc)
        return new
    if not answering:
        lost[name] = f"lost during {item.entry['entry']}: {result.reason}"
        ctx.log(f"board {name} leaves the fan-out ({result.reason})")
        with _unlocked(ctx.lock):
            session.release()
    ctx.log(f"{item.entry['entry']}: back on the queue for another board")
    raise Requeue()


def note_board(doc: dict[str, Any], session) -> None:
    """run.json `boards`: one record per board that took part (its launcher's description: name, address, tags,
    health, sync, labgrid lease), updated in place by name, so a resumed fan-out adds its boards to the earlier ones."""
    rec = session.describe()
    name = rec["board"]["name"]
    boards = doc.setdefault("boards", [])
    old = next((b for b in boards if b.get("board", {}).get("name") == name), None)
    if old is None:
        boards.append(rec)
    else:
        keep = {k: old[k] for k in ("fingerprint",) if k in old}
        old.clear()
        old.update(rec | keep)


def note_fingerprint(doc: dict[str, Any], board: str, environment: dict[str, Any] | None) -> None:
    """The board's own fingerprint (the worker's `environment`, checked against its health check by the trust
    boundary) in its `boards` record: each board of a fan-out is described by itself."""
    for b in doc.get("boards", []):
        if b.get("board", {}).get("name") == board and environment:
            b.setdefault("fingerprint", environment)


def live_session(sessions: list, doc: dict[str, Any]):
    """A board still in the fan-out (the first not lost that answers), for the jobs after the entries (the watchlist
    searches on the device)."""
    left = {b["board"]["name"] for b in doc.get("boards", []) if b.get("left")}
    live = [s for s in sessions if s.board_name not in left]
    # a board power-cycled during the fan-out was reconnected from its board thread, and its ControlMaster (killed
    # with the thread that started it: PR_SET_PDEATHSIG) is gone with that thread: take one that answers
    return next((s for s in live if s.reachable()), live[0] if live else sessions[0])
