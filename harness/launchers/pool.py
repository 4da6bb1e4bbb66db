"""A pool of boards shared through labgrid (PyPI `labgrid`, 26.x, gRPC coordinator): acquire, read, release.

labgrid is the embedded-Linux community's coordinator for lab hardware: an exporter publishes a board's resources
(here a NetworkService: the board's SSH address, user and port), a place groups them and carries tags
(target=rpi), and clients reserve (a fair queue, `reserve --wait`), acquire and release places. We use its client
library (labgrid.remote.client.ClientSession, the code behind `labgrid-client`) rather than a lease server of our own.

Release policy, designed around what labgrid 26.0.1 does (docs/remote.md, "Pool"):
- an acquisition has no lease: a place stays acquired until someone releases it. So the holder's identity says
  which process holds it: the session name is `<host>/<user>+bench-<pid>-<process start ms>`, set atomically by
  the acquisition itself (no second call that a kill -9 could skip). `stale_holders` finds places held by a
  bench process of THIS host that no longer exists (pid gone, or reused: start time differs) and
  `release_stale` releases them with release-from (only if still held by that exact holder). `bench run --pool`
  sweeps this host's stale holders before it reserves; `bench pool release --stale` does it by hand.
- a waiting reservation expires about a minute after its last poll; we poll every second while waiting, and a
  killed waiter's reservation simply expires.
- releasing without cancelling the reservation keeps the place allocated to it (the next waiter is blocked
  about 90 s): `release` cancels the reservation right after releasing the place, also on error and Ctrl-C.
- the exporter exits when the coordinator goes away; something must restart it (systemd Restart=always in the lab,
  the test fixture in tests/remote/); a place whose NetworkService is gone cannot be acquired (labgrid refuses).
Every call opens a short gRPC session and closes it: nothing runs in the background while a job runs.
"""

from __future__ import annotations

import asyncio
import logging
import getpass
import os
import re
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from harness.errors import UnavailableError, UsageError

# gRPC's C core runs fork handlers in a process that forks while its threads are active ("Other threads are
# currently calling into gRPC, skipping fork() handlers"); a child forked with a preexec_fn (the ssh ControlMaster,
# harness/launchers/ssh.py) then ran gRPC's poller on closed descriptors and died before exec ("Epoll1Poller
# encountered epoll_wait error: Bad file descriptor": the board reported unreachable). Every child bench forks
# execs at once and never uses gRPC, which is the case gRPC's fork support is not needed for (gRPC's
# doc/fork_support.md): off, before grpc is first imported (labgrid imports it in Pool._call), unless set already.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

DEFAULT_COORDINATOR = "127.0.0.1:20408"
HOLDER_RE = re.compile(r"^(?P<host>[^/]+)/(?P<user>.+)\+bench-(?P<pid>\d+)-(?P<start>\d+)$")
_POLL_S = 1.0
# Out of service (docs/remote.md, "Out of service"): the place is acquired by this holder, which no run can take and
# `release --stale` never frees (it is no bench process), and its comment says why and since when; both live in
# the coordinator, so every host sees them. The consecutive infrastructure failures are counted in a place tag.
OUT_OF_SERVICE_HOLDER = "bench/out-of-service"
# Besides the NetworkService (the board's SSH address), what an exporter may publish for a place that bench reads:
# the board's console (harness/launchers/console.py) and its PDU outlet or USB hub port (harness/launchers/netpower.py).
EXPORTED = ("NetworkSerialPort", "NetworkPowerPort", "PDUDaemonPort", "NetworkUSBPowerPort")
OUT_OF_SERVICE = "out of service"
FAILURES_TAG = "bench_infra_failures"
DEFAULT_OUT_OF_SERVICE_AFTER = 3


def labgrid_problem() -> str | None:
    """Why this process cannot drive the pool (labgrid missing, or not the 26.x series), else None.

    labgrid documents no Python client API (its public client is the `labgrid-client` command; the request for one,
    labgrid-project/labgrid#1438, was closed without one). The pool drives the library behind that command
    (labgrid.remote.client.ClientSession and the coordinator's generated gRPC stubs), whose shape changes between
    release series, so another series is refused here in one line rather than failing somewhere inside it. What
    labgrid does for a place that is held (switching a USB hub port) goes through `labgrid-client` itself
    (harness/launchers/netpower.py)."""
    from importlib import metadata

    try:
        found = metadata.version("labgrid")
    except metadata.PackageNotFoundError:
        return "labgrid is not installed: pip install -e '.[remote]'"
    if found.split(".")[0] != "26":
        return (f"labgrid {found} is installed; bench's pool drives labgrid 26.x's client library (labgrid has no "
                "public Python client API): pip install 'labgrid>=26,<27' (the [remote] extra)")
    return None


def coordinator_address(flag: str | None = None) -> str:
    """--coordinator > LG_COORDINATOR (labgrid's own variable) > 127.0.0.1:20408 (labgrid's default)."""
    return flag or os.environ.get("LG_COORDINATOR") or DEFAULT_COORDINATOR


def _process_start_ms(pid: int) -> int | None:
    import psutil

    try:
        return int(psutil.Process(pid).create_time() * 1000)
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None


def holder_name(pid: int | None = None) -> str:
    """This process's labgrid session name: <host>/<user>+bench-<pid>-<start ms>."""
    pid = pid or os.getpid()
    host = os.environ.get("LG_HOSTNAME", socket.gethostname())
    user = os.environ.get("LG_USERNAME", getpass.getuser())
    return f"{host}/{user}+bench-{pid}-{_process_start_ms(pid)}"


def holder_alive(holder: str) -> bool | None:
    """True/False for a bench holder of this host; None when it is not ours to judge (another host, not bench)."""
    m = HOLDER_RE.match(holder or "")
    if not m or m["host"] != os.environ.get("LG_HOSTNAME", socket.gethostname()):
        return None
    return _process_start_ms(int(m["pid"])) == int(m["start"])


@dataclass
class Place:
    name: str
    tags: dict[str, str]
    acquired: str | None
    comment: str = ""
    network_service: dict[str, Any] | None = None   # address, username, port of the board (held or free)
    reservation: str | None = None
    matches: list[str] = field(default_factory=list)
    exported: dict[str, dict[str, Any]] = field(default_factory=dict)  # EXPORTED class -> its parameters
    meters: dict[str, dict[str, Any]] = field(default_factory=dict)  # sigrok resources: name -> cls, params, avail

    @property
    def out_of_service(self) -> str | None:
        """The out-of-service mark ("since UTC: reason") when the place carries one, else None."""
        if self.acquired == OUT_OF_SERVICE_HOLDER or self.comment.startswith(OUT_OF_SERVICE):
            return self.comment[len(OUT_OF_SERVICE):].strip() if self.comment.startswith(OUT_OF_SERVICE) else "?"
        return None

    @property
    def infra_failures(self) -> int:
        value = self.tags.get(FAILURES_TAG, "0")
        return int(value) if value.isdigit() else 0

    def to_dict(self) -> dict[str, Any]:
        alive = holder_alive(self.acquired) if self.acquired else None
        return {"name": self.name, "tags": self.tags, "acquired": self.acquired, "comment": self.comment,
                "holder_alive": alive, "network_service": self.network_service, "reservation": self.reservation,
                "out_of_service": self.out_of_service, "infra_failures": self.infra_failures,
                "exported": self.exported, "meters": self.meters}


@dataclass
class Lease:
    """A place this process acquired through a reservation; `release` undoes both."""

    place: str
    token: str
    network_service: dict[str, Any]
    tags: dict[str, str] = field(default_factory=dict)  # the place's labgrid tags (recorded with the board)
    exported: dict[str, dict[str, Any]] = field(default_factory=dict)  # EXPORTED class -> its parameters
    meters: dict[str, dict[str, Any]] = field(default_factory=dict)  # its sigrok resources (launchers/sigrok_meter.py)
    coordinator: str = ""  # where it was acquired, and by whom: what labgrid-client needs to act as its holder
    holder: str = ""


class Pool:
    """Synchronous calls into a labgrid coordinator, one short session each (see the module docstring)."""

    def __init__(self, coordinator: str | None = None):
        self.address = coordinator_address(coordinator)
        self.holder = holder_name()

    # -- session plumbing ---------------------------------------------------------------------------------------
    def _call(self, fn, holder: str | None = None):
        problem = labgrid_problem()
        if problem:
            raise UnavailableError(problem)
        from labgrid.remote.client import ClientSession
        from labgrid.util.proxy import proxymanager

        holder = holder or self.holder
        host, user = holder.split("/", 1)

        class Session(ClientSession):
            def gethostname(self):
                return host

            def getuser(self):
                return user

        async def go():
            import grpc
            from labgrid.remote.generated import labgrid_coordinator_pb2_grpc

            session = Session(proxymanager.get_grpc_address(self.address, default_port=20408),
                              asyncio.get_running_loop())
            # A channel of its own (local subchannel pool): grpc otherwise shares one TCP connection between
            # channels of a process, and the coordinator refuses a second client stream from the same peer.
            await session.channel.close()
            session.channel = grpc.aio.insecure_channel(session.address, options=[
                ("grpc.use_local_subchannel_pool", 1), ("grpc.keepalive_time_ms", 7500),
                ("grpc.keepalive_timeout_ms", 10000), ("grpc.http2.ping_timeout_ms", 10000),
                ("grpc.http2.max_pings_without_data", 0)])
            session.stub = labgrid_coordinator_pb2_grpc.CoordinatorStub(session.channel)
            try:
                await asyncio.wait_for(session.start(), timeout=10)
            except Exception as exc:  # noqa: BLE001 - grpc/labgrid raise many kinds; one line for the user
                await session.close()
                raise UnavailableError(f"labgrid coordinator {self.address} unreachable: "
                                       f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
            try:
                return await fn(session)
            finally:
                await session.stop()
                await session.close()

        # labgrid's client logs through the root logger (logging.error("coordinator became unavailable ...")),
        # which with no handler configures itself and prints a stray "ERROR:root:..." line; what went wrong
        # reaches the user as our own one-line error, so its log is dropped for the length of the call.
        quiet = logging.NullHandler()
        root = logging.getLogger()
        root.addHandler(quiet)
        loop = asyncio.new_event_loop()
        try:
            return loop.run_until_complete(go())
        finally:
            loop.close()
            root.removeHandler(quiet)

    @staticmethod
    def _grpc_error(exc) -> str:
        details = getattr(exc, "details", None)
        return details() if callable(details) else str(exc)

    # -- reading ------------------------------------------------------------------------------------------------
    @staticmethod
    def _board_behind(session, place) -> dict[str, Any] | None:
        """The NetworkService a free place would hand out: the first exported one its resource matches name
        (labgrid's Place.hasmatch), so `bench pool` shows which board stands behind every place."""
        res = Pool._behind(session, place).get("NetworkService")
        return None if res is None else {k: res.get(k) for k in ("address", "username", "port")}

    @staticmethod
    def _resource_paths(session, place) -> list[tuple[str, str, str, str]]:
        """(exporter, group, class, name) of the resources a place holds (acquired) or would be handed (free: every
        exported resource its matches select, labgrid's Place.hasmatch), in a stable order."""
        if place.acquired:
            return [tuple(p) for p in place.acquired_resources]
        return [(e, g, res.cls, r) for e, groups in sorted(session.resources.items())
                for g, named in sorted(groups.items()) for r, res in sorted(named.items())
                if place.hasmatch((e, g, res.cls, r))]

    @staticmethod
    def _behind(session, place) -> dict[str, dict[str, Any]]:
        """Per resource class, the parameters of the first exported resource the place matches (free place) or holds
        (acquired place): NetworkService and EXPORTED."""
        out: dict[str, dict[str, Any]] = {}
        for exporter, group, rcls, rname in Pool._resource_paths(session, place):
            res = session.resources.get(exporter, {}).get(group, {}).get(rname)
            if res is not None and rcls in ("NetworkService", *EXPORTED) and rcls not in out:
                out[rcls] = dict(res.params)
                if rcls == "NetworkUSBPowerPort":  # switched by name through labgrid-client (launchers/netpower.py)
                    match = place.getmatch((exporter, group, rcls, rname))
                    out[rcls]["resource"] = (match.rename if match is not None and match.rename else None) or rname
        return out

    @staticmethod
    def _meters(session, place) -> dict[str, dict[str, Any]]:
        """The sigrok resources (a power meter: harness/launchers/sigrok_meter.py) the place matches (free place) or
        holds (acquired place), by resource name: {"cls", "params", "avail"}."""
        from harness.launchers.sigrok_meter import CLASSES

        out: dict[str, dict[str, Any]] = {}
        for exporter, group, rcls, rname in Pool._resource_paths(session, place):
            res = session.resources.get(exporter, {}).get(group, {}).get(rname)
            if res is not None and rcls in CLASSES and rname not in out:
                out[rname] = {"cls": rcls, "params": dict(res.params), "avail": bool(res.avail)}
        return out

    @classmethod
    def _places(cls, session) -> list[Place]:
        out = []
        for name, p in sorted(session.places.items()):
            ns = None
            for path in p.acquired_resources:
                exporter, group, rcls, rname = path
                if rcls == "NetworkService":
                    res = session.resources.get(exporter, {}).get(group, {}).get(rname)
                    if res is not None:
                        ns = {k: res.params.get(k) for k in ("address", "username", "port")}
            if ns is None and not p.acquired:
                ns = cls._board_behind(session, p)
            behind = cls._behind(session, p)
            out.append(Place(name=name, tags=dict(p.tags), acquired=p.acquired, comment=p.comment or "",
                             network_service=ns, reservation=p.reservation,
                             matches=[str(m) for m in p.matches],
                             exported={k: v for k, v in behind.items() if k in EXPORTED},
                             meters=cls._meters(session, p)))
        return out

    def places(self) -> list[Place]:
        async def fn(session):
            return self._places(session)

        return self._call(fn)

    # -- acquire / release ------------------------------------------------------------------------------------
    def acquire(self, filters: dict[str, str], *, wait_s: float = 3600.0, log=lambda m: None,
                cancel: threading.Event | None = None) -> Lease:
        """Reserve a place whose tags match `filters` (labgrid's fair queue), acquire it, read its NetworkService.

        `{"name": PLACE}` asks for one place by name. Waits up to `wait_s` for a free place; then UnavailableError.
        Ctrl-C or an error while waiting cancels the reservation; so does `cancel` being set (by another thread:
        the waits of a fan-out's or a pool provisioning's worker threads end when the command is interrupted),
        within one poll. A place allocated while it carries the out-of-service mark (marked by another run between
        its release and its out-of-service hold) is put on that hold here and the wait goes on.
        """
        deadline = time.monotonic() + wait_s
        while True:
            if cancel is not None and cancel.is_set():
                raise UnavailableError(f"no labgrid place matching {_fmt(filters)} taken: the command is stopping")
            lease = self._acquire(filters, wait_s=max(0.0, deadline - time.monotonic()), log=log, cancel=cancel)
            mark = self.is_out_of_service(lease.place)
            if not mark:
                return lease
            self.retire(lease)
            log(f"labgrid place {lease.place} is out of service ({mark}): not used")

    def _acquire(self, filters: dict[str, str], *, wait_s: float, log, cancel: threading.Event | None = None
                 ) -> Lease:
        from labgrid.remote.common import ReservationState
        from labgrid.remote.generated import labgrid_coordinator_pb2 as pb

        async def fn(session):
            import grpc

            matching = [p for p in session.places.values() if place_matches(p.name, p.tags, filters)]
            if not matching:
                raise UnavailableError(f"no labgrid place matches {_fmt(filters)} at {self.address} (bench pool "
                                       "lists them)")
            placed = {p.name: p for p in self._places(session)}
            retired = [placed[p.name] for p in matching if placed[p.name].out_of_service]
            if len(retired) == len(matching):
                raise UnavailableError(
                    f"every labgrid place matching {_fmt(filters)} is out of service ("
                    + "; ".join(f"{p.name}: {p.out_of_service}" for p in retired)
                    + "); bench pool return PLACE brings one back")
            try:
                res = (await session.stub.CreateReservation(pb.CreateReservationRequest(
                    filters={"main": pb.Reservation.Filter(filter=filters)}, prio=0.0))).reservation
            except grpc.aio.AioRpcError as exc:
                raise UnavailableError(f"labgrid: cannot reserve {_fmt(filters)}: {self._grpc_error(exc)}") from None
            token = res.token
            try:
                deadline, said = time.monotonic() + wait_s, False
                while True:
                    res = (await session.stub.PollReservation(pb.PollReservationRequest(token=token))).reservation
                    state = ReservationState(res.state)
                    if state in (ReservationState.allocated, ReservationState.acquired):
                        break
                    if state is not ReservationState.waiting:
                        raise UnavailableError(f"labgrid reservation for {_fmt(filters)} is {state.name}")
                    if cancel is not None and cancel.is_set():
                        raise UnavailableError(f"labgrid reservation for {_fmt(filters)} cancelled: the command "
                                               "is stopping")
                    if time.monotonic() > deadline:
                        raise UnavailableError(f"no free labgrid place matching {_fmt(filters)} within {wait_s:g} s")
                    if not said:
                        log(f"waiting for a free place matching {_fmt(filters)} (labgrid reservation {token})")
                        said = True
                    await asyncio.sleep(_POLL_S)
                name = res.allocations["main"]
                try:
                    await session.stub.AcquirePlace(pb.AcquirePlaceRequest(placename=name))
                except grpc.aio.AioRpcError as exc:
                    raise UnavailableError(f"labgrid place {name}: cannot acquire: {self._grpc_error(exc)}") from None
                await session.sync_with_coordinator()
                place = next(p for p in self._places(session) if p.name == name)
                if not place.network_service:
                    await self._release(session, name, token)
                    raise UnavailableError(f"labgrid place {name} has no NetworkService resource (the exporter "
                                           "publishes the board's SSH address)")
                return Lease(place=name, token=token, network_service=place.network_service, tags=dict(place.tags),
                             exported=place.exported, meters=place.meters, coordinator=self.address,
                             holder=self.holder)
            except BaseException:
                await self._cancel(session, token)
                raise

        return self._call(fn)

    async def _cancel(self, session, token: str) -> None:
        import grpc
        from labgrid.remote.generated import labgrid_coordinator_pb2 as pb

        try:
            await session.stub.CancelReservation(pb.CancelReservationRequest(token=token))
        except grpc.aio.AioRpcError:
            pass

    async def _release(self, session, place: str, token: str | None, holder: str | None = None) -> None:
        from labgrid.remote.generated import labgrid_coordinator_pb2 as pb

        await session.stub.ReleasePlace(pb.ReleasePlaceRequest(placename=place, fromuser=holder or self.holder))
        if token:
            await self._cancel(session, token)
        await session.sync_with_coordinator()

    def release(self, lease: Lease) -> None:
        """Release the place (only if this process still holds it), then cancel its reservation."""
        async def fn(session):
            await self._release(session, lease.place, lease.token)

        self._call(fn)

    def release_stale(self) -> list[tuple[str, str]]:
        """Release every place held by a bench process of this host that is gone; [(place, holder)]."""
        async def fn(session):
            kicked = []
            for p in self._places(session):
                if p.acquired and holder_alive(p.acquired) is False:
                    await self._release(session, p.name, None, holder=p.acquired)
                    kicked.append((p.name, p.acquired))
            return kicked

        return self._call(fn)


    # -- consecutive infrastructure failures and out of service -----------------------------------------------------
    async def _set(self, session, place: str, *, tags: dict[str, str] | None = None, comment: str | None = None):
        from labgrid.remote.generated import labgrid_coordinator_pb2 as pb

        if tags is not None:
            await session.stub.SetPlaceTags(pb.SetPlaceTagsRequest(placename=place, tags=tags))
        if comment is not None:
            await session.stub.SetPlaceComment(pb.SetPlaceCommentRequest(placename=place, comment=comment))
        await session.sync_with_coordinator()

    def note_result(self, place: str, infrastructure_failure: bool, reason: str = "", *,
                    limit: int = DEFAULT_OUT_OF_SERVICE_AFTER) -> int:
        """Count one job's outcome on `place`: an infrastructure failure adds one to its consecutive count (a place
        tag), anything else resets it. At `limit` the place's comment marks it out of service (reason and time); the
        holder keeps it until release, which then retires it (`retire`). The count after this job."""
        import grpc

        async def fn(session):
            p = next((x for x in self._places(session) if x.name == place), None)
            if p is None:
                return 0
            n = p.infra_failures + 1 if infrastructure_failure else 0
            if n == p.infra_failures:
                return n
            await self._set(session, place, tags={FAILURES_TAG: str(n) if n else ""})
            if infrastructure_failure and n >= limit and not p.out_of_service:
                await self._set(session, place, comment=f"{OUT_OF_SERVICE} since {_utc()}: {n} consecutive "
                                                        f"infrastructure failures (last: {_one_line(reason)})")
            return n

        try:
            return self._call(fn)
        except (UnavailableError, grpc.aio.AioRpcError):  # counting must never fail a run
            return 0

    def _hold_out_of_service(self, place: str) -> None:
        import grpc
        from labgrid.remote.generated import labgrid_coordinator_pb2 as pb

        async def fn(session):
            try:
                await session.stub.AcquirePlace(pb.AcquirePlaceRequest(placename=place))
            except grpc.aio.AioRpcError as exc:  # taken meanwhile: its comment still turns runs away
                return self._grpc_error(exc)
            await session.sync_with_coordinator()
            return None

        self._call(fn, holder=OUT_OF_SERVICE_HOLDER)

    def retire(self, lease: Lease) -> None:
        """Release a leased place that was marked out of service and hold it out of service."""
        self.release(lease)
        self._hold_out_of_service(lease.place)

    def is_out_of_service(self, place: str) -> str | None:
        return next((p.out_of_service for p in self.places() if p.name == place), None)

    def return_to_service(self, place: str) -> Place:
        """Undo the mark: release the out-of-service hold, clear the comment and the failure count."""
        async def fn(session):
            p = next((x for x in self._places(session) if x.name == place), None)
            if p is None:
                raise UsageError(f"no labgrid place {place!r} at {self.address} (bench pool lists them)")
            if p.acquired == OUT_OF_SERVICE_HOLDER:
                await self._release(session, place, None, holder=OUT_OF_SERVICE_HOLDER)
            await self._set(session, place, tags={FAILURES_TAG: ""},
                            comment="" if p.comment.startswith(OUT_OF_SERVICE) else None)
            return p

        return self._call(fn)


def _utc() -> str:
    from datetime import datetime, timezone

    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _one_line(text: str, limit: int = 200) -> str:
    """A reason from a board is data: one printable line, bounded."""
    line = " ".join("".join(c if c.isprintable() else " " for c in str(text)).split())
    return line if len(line) <= limit else line[:limit - 3] + "..."


def place_matches(name: str, tags: dict[str, str], filters: dict[str, str]) -> bool:
    """Whether a place (its name and tags) matches a --pool/--place filter (`name` filters on the place's name), as
    labgrid's reservation filter does."""
    return all((tags.get(k) if k != "name" else name) == v for k, v in filters.items())


def _fmt(filters: dict[str, str]) -> str:
    return " ".join(f"{k}={v}" for k, v in sorted(filters.items()))


def parse_filters(text: str) -> dict[str, str]:
    """'target=rpi,site=lab2' -> {"target": "rpi", "site": "lab2"} (labgrid's tag key/value rules)."""
    out = {}
    for pair in [p for p in text.replace(" ", ",").split(",") if p]:
        key, sep, value = pair.partition("=")
        if not sep or not re.fullmatch(r"[a-z][a-z0-9_]*", key) or not re.fullmatch(r"[A-Za-z0-9_.-]+", value):
            raise UsageError(f"--pool {text!r}: expected KEY=VALUE[,KEY=VALUE] (labgrid tags), got {pair!r}")
        out[key] = value
    if not out:
        raise UsageError("--pool needs at least one KEY=VALUE tag, e.g. --pool target=rpi")
    return out
