"""Provisioning a board: this checkout's wheel and its pinned dependency wheels, over the run's SSH connection, into
a venv in the board's work folder, with a provision record that `bench run` checks (docs/remote.md, "Provisioning
a board"; issue 19).

Host side:
- the harness wheel is built from the source tree (pyproject.toml, README.md, harness/) copied to a temporary
  folder (`pip wheel --no-deps`, never in the checkout), with SOURCE_DATE_EPOCH fixed so that the zip's timestamps
  do not depend on the build time (reproducible-builds.org's SOURCE_DATE_EPOCH, honoured by the `wheel` package);
  it is cached in <cache>/provision/wheels/<source sha256>/ under a cache lock (harness.models.lock);
- the dependency wheels come from `pip download --only-binary :all: --platform ... --python-version ...
  --implementation cp` for the board's own Python and platform (asked over SSH first), into a wheelhouse cache
  keyed by that platform, under a lock; the manylinux tags a glibc X.Y board accepts are PEP 600's
  manylinux_X_y for every y <= Y (down to 2_17, PEP 599's manylinux2014, which pip widens to 2010/1).

Board side (all through SSHLauncher: `sync` puts each wheel into the board's content-addressed cas/, so a wheel the
board already has costs no bytes):
- <workdir>/wheelhouse/<wheel name> -> ../cas/<sha256>, <workdir>/venv made with `python3 -m venv`
  (`--system-site-packages` where the target profile's [provision] system_runtimes names a runtime the board
  already has, the Jetson's JetPack onnxruntime-gpu: no wheel replaces it), `pip install --no-index --find-links`
  of the wheel with the device extra of the runtime (`[device-onnx]`, `[device-litert]`, or none);
- <workdir>/provision.json: harness version, wheel name and sha256, extra, target, runtime, python, platform tags,
  every dependency wheel's name and sha256, time (UTC).

Everything the board sends back (the probe of its Python, the record) is untrusted: read bounded, parsed by
harness.launchers.trust.parse_json, every field checked, a problem one line naming the board and the field. A name
from the board is never used as a path: the venv's python is always <workdir>/venv/bin/python.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from harness import runtimes
from harness.errors import BenchError, OfflineError, UnavailableError
from harness.paths import REPO_ROOT

RECORD_FILE = "provision.json"
VENV_DIR = "venv"
WHEELHOUSE_DIR = "wheelhouse"
RECORD_MAX_BYTES = 64 * 1024     # a record is ~2 KB; more is not one
PROBE_MAX_BYTES = 4096
EXTRAS = {r.name: r.extra for r in runtimes.RUNTIMES.values()}  # pyproject.toml's device extras
SOURCE_DATE_EPOCH = "315532800"  # 1980-01-01, the earliest time a zip can hold
DISTRIBUTION = "edge_fair_bench"
OLDEST_MANYLINUX_MINOR = 17      # manylinux2014 == manylinux_2_17 (PEP 600)
_SHA = re.compile(r"^[0-9a-f]{64}$")
_VERSION = re.compile(r"^[0-9A-Za-z.+!_-]{1,64}$")
_PY_VERSION = re.compile(r"^3\.(\d{1,2})\.\d{1,3}([a-z]+\d{0,3})?\+?$")
_GLIBC = re.compile(r"^2\.(\d{1,3})$")
_WHEEL_NAME = re.compile(r"^[A-Za-z0-9_.+-]{1,200}\.whl$")
MACHINES = ("x86_64", "aarch64", "armv7l")

# Run on the board by its base python: stdlib only, works on 3.8.
_PROBE = ("import json, platform, sys, importlib.util as u; print(json.dumps({'python': platform.python_version(), "
          "'implementation': sys.implementation.name, 'machine': platform.machine(), "
          "'libc': list(platform.libc_ver()), 'venv': u.find_spec('ensurepip') is not None}))")


# -- the host's wheel -----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class HostWheel:
    path: Path
    sha256: str
    version: str
    source_sha256: str


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def source_files(root: Path = REPO_ROOT) -> list[Path]:
    """What the wheel is built from (relative paths): pyproject.toml, README.md and the harness package."""
    files = [Path(n) for n in ("pyproject.toml", "README.md") if (root / n).is_file()]
    for path in sorted((root / "harness").rglob("*")):
        rel = path.relative_to(root)
        if path.is_file() and "__pycache__" not in rel.parts and path.suffix not in (".pyc", ".pyo"):
            files.append(rel)
    return files


def source_sha256(root: Path = REPO_ROOT) -> str:
    """The content hash of the source tree: each file's relative path and sha256, in order."""
    h = hashlib.sha256()
    for rel in source_files(root):
        h.update(f"{rel.as_posix()}\0{sha256_file(root / rel)}\n".encode())
    return h.hexdigest()


def _cache_dir(cache: Path, *parts: str) -> Path:
    return Path(cache) / "provision" / Path(*parts)


def host_wheel(cache: Path, *, root: Path = REPO_ROOT, log: Callable[[str], None] = print) -> HostWheel:
    """This checkout's wheel, built once per source tree content (cached, under a lock)."""
    from harness.models.lock import cache_lock, locks_dir

    src = source_sha256(root)
    folder = _cache_dir(cache, "wheels", src)
    with cache_lock(locks_dir(Path(cache)) / "provision-wheel.lock", "the harness wheel cache", log=log):
        found = sorted(folder.glob(f"{DISTRIBUTION}-*.whl")) if folder.is_dir() else []
        if not found:
            log(f"building the harness wheel (source {src[:12]})")
            found = [_build_wheel(root, folder)]
    path = found[0]
    version = path.name.split("-")[1]
    return HostWheel(path=path, sha256=sha256_file(path), version=version, source_sha256=src)


def _build_wheel(root: Path, folder: Path) -> Path:
    with tempfile.TemporaryDirectory(prefix="bench-wheel-") as tmp:
        tree, out = Path(tmp) / "src", Path(tmp) / "out"
        for rel in source_files(root):
            (tree / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(root / rel, tree / rel)
        env = dict(os.environ, SOURCE_DATE_EPOCH=SOURCE_DATE_EPOCH, PIP_DISABLE_PIP_VERSION_CHECK="1")
        proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(tree)],
                              capture_output=True, text=True, env=env, timeout=900)
        if proc.returncode != 0:
            raise _pip_error("building the harness wheel (pip wheel)", proc.stderr)
        built = sorted(out.glob(f"{DISTRIBUTION}-*.whl"))
        if len(built) != 1:
            raise BenchError(f"pip wheel left {len(built)} harness wheels in {out}, expected one")
        folder.mkdir(parents=True, exist_ok=True)
        part = folder / f".{built[0].name}.part"
        shutil.copyfile(built[0], part)
        os.replace(part, folder / built[0].name)
        return folder / built[0].name


def _pip_error(what: str, stderr: str) -> BenchError:
    from harness.names import shown

    lines = [ln.strip() for ln in (stderr or "").splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("ERROR:")] or lines
    last = shown(errors[-1] if errors else "no message")
    text = " ".join(lines)
    if any(s in text for s in ("NewConnectionError", "Temporary failure in name resolution", "Network is unreachable",
                               "Failed to establish a new connection", "Max retries exceeded")):
        return OfflineError(f"{what}: the package index is unreachable: {last}")
    if "No matching distribution" in text or "Could not find a version" in text:
        return UnavailableError(f"{what}: {last}")
    return BenchError(f"{what}: {last}")


# -- the board's platform ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class BoardPython:
    version: str        # 3.11.7
    machine: str        # x86_64 | aarch64 | armv7l
    glibc: str          # 2.36
    has_ensurepip: bool

    @property
    def short(self) -> str:  # 3.11
        return ".".join(self.version.split(".")[:2])

    @property
    def platforms(self) -> list[str]:
        """The manylinux platform tags this board accepts, newest first (PEP 600; PEP 599's manylinux2014)."""
        minor = int(self.glibc.split(".")[1])
        tags = [f"manylinux_2_{m}_{self.machine}" for m in range(minor, OLDEST_MANYLINUX_MINOR - 1, -1)]
        return tags + [f"manylinux2014_{self.machine}"]

    @property
    def key(self) -> str:
        return f"cp{self.short.replace('.', '')}-{self.machine}-glibc{self.glibc}"


def parse_probe(stdout: bytes, where: str) -> BoardPython:
    """The board's answer to _PROBE, bounded and checked field by field (UnavailableError: one line, exit 3)."""
    from harness.errors import InfrastructureError
    from harness.launchers.trust import parse_json

    def bad(field: str, problem: str) -> UnavailableError:
        return UnavailableError(f"{where}: its python's platform report field '{field}': {problem}")

    if len(stdout) > PROBE_MAX_BYTES:
        raise UnavailableError(f"{where}: its python's platform report is over {PROBE_MAX_BYTES} bytes")
    try:
        doc = parse_json(stdout, where, "its python's platform report")
    except InfrastructureError as exc:
        raise UnavailableError(exc.message) from None
    if not isinstance(doc, dict):
        raise UnavailableError(f"{where}: its python's platform report is not a JSON object")
    version = doc.get("python")
    if not isinstance(version, str) or not (m := _PY_VERSION.match(version)):
        raise bad("python", f"{version!r} is not a CPython 3 version")
    if doc.get("implementation") != "cpython":
        raise bad("implementation", f"{doc.get('implementation')!r}: only CPython wheels are fetched (cp)")
    if doc.get("machine") not in MACHINES:
        raise bad("machine", f"{doc.get('machine')!r} is not one of {', '.join(MACHINES)}")
    libc = doc.get("libc")
    if not (isinstance(libc, list) and len(libc) == 2 and libc[0] == "glibc" and isinstance(libc[1], str)
            and _GLIBC.match(libc[1])):
        raise bad("libc", f"{libc!r}: a glibc 2.x board is needed (manylinux wheels)")
    if int(libc[1].split(".")[1]) < OLDEST_MANYLINUX_MINOR:
        raise bad("libc", f"glibc {libc[1]} is older than manylinux2014's 2.17")
    del m
    return BoardPython(version=version, machine=doc["machine"], glibc=libc[1], has_ensurepip=doc.get("venv") is True)


# -- dependency wheels ----------------------------------------------------------------------------------------------
_SAVED = re.compile(r"^(?:Saved|File was already downloaded)\s+(\S+\.whl)\s*$")


def board_requirements(wheel_path: Path, board: BoardPython, extra: str | None) -> list[str]:
    """The harness wheel's own requirements (its METADATA's Requires-Dist, with `extra`) that apply on `board`, with
    their environment markers evaluated for the BOARD's python and machine (PEP 508). pip download's
    --python-version selects wheels for the target but evaluates markers against the interpreter running pip, so
    a Python 3.8 board would otherwise be asked for numpy>=1.26 (3.9+) instead of the 1.24 its marker selects.
    The dependencies' own dependencies are still resolved by pip download (their markers against this host's
    python: the runtimes' dependencies carry no python_version markers that differ between 3.8 and 3.11)."""
    import zipfile

    from packaging.requirements import Requirement

    with zipfile.ZipFile(wheel_path) as zf:
        meta = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
        text = zf.read(meta).decode("utf-8")
    env = {"python_version": board.short, "python_full_version": board.version, "platform_machine": board.machine,
           "sys_platform": "linux", "platform_system": "Linux", "os_name": "posix", "implementation_name": "cpython",
           "platform_python_implementation": "CPython", "extra": extra or ""}
    out = []
    for line in text.splitlines():
        if not line.startswith("Requires-Dist:"):
            continue
        req = Requirement(line.split(":", 1)[1].strip())
        if req.marker is None or req.marker.evaluate(env):
            out.append(f"{req.name}{'[' + ','.join(sorted(req.extras)) + ']' if req.extras else ''}{req.specifier}")
    return out


class DependencyMemo:
    """The dependency wheels already fetched by this process, per (platform, harness wheel, extra): the boards of one
    `bench device provision --pool` share one pip download per platform. A board's thread waits for another
    fetching the same platform on an in-process lock (quietly), then finds its answer."""

    def __init__(self):
        self.found: dict[tuple, list[tuple[Path, str]]] = {}
        self._locks: dict[tuple, threading.Lock] = {}
        self._guard = threading.Lock()

    def lock(self, key: tuple) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(key, threading.Lock())


def dependency_wheels(cache: Path, board: BoardPython, wheel: HostWheel, extra: str | None, *,
                      log: Callable[[str], None] = print, memo: DependencyMemo | None = None
                      ) -> list[tuple[Path, str]]:
    """(path, sha256) of every dependency wheel the harness wheel (with `extra`) needs on `board`, fetched with pip
    download for the board's python and platform into <cache>/provision/wheelhouse/<platform key> (under the
    wheelhouse's cache lock: other bench processes). `memo`: see DependencyMemo."""
    key = (board.key, wheel.sha256, extra)
    if memo is None:
        return _dependency_wheels(cache, board, wheel, extra, log=log)
    with memo.lock(key):
        if key not in memo.found:
            memo.found[key] = _dependency_wheels(cache, board, wheel, extra, log=log)
        return list(memo.found[key])


def _dependency_wheels(cache: Path, board: BoardPython, wheel: HostWheel, extra: str | None, *,
                       log: Callable[[str], None]) -> list[tuple[Path, str]]:
    from harness.models.lock import cache_lock, locks_dir

    folder = _cache_dir(cache, "wheelhouse", board.key)
    cmd = [sys.executable, "-m", "pip", "download", "--only-binary", ":all:", "--implementation", "cp",
           "--python-version", board.short, "--dest", str(folder), "--progress-bar", "off",
           "--disable-pip-version-check"]
    for tag in board.platforms:
        cmd += ["--platform", tag]
    with cache_lock(locks_dir(Path(cache)) / f"provision-wheelhouse-{board.key}.lock",
                    f"the {board.key} wheelhouse", log=log):
        folder.mkdir(parents=True, exist_ok=True)
        proc = subprocess.run([*cmd, *board_requirements(wheel.path, board, extra)], capture_output=True, text=True,
                              timeout=1800)
        if proc.returncode != 0:
            raise _pip_error(f"fetching the dependency wheels for {board.key} (pip download)", proc.stderr)
        names = []
        for line in proc.stdout.splitlines():
            if (m := _SAVED.match(line.strip())) and not Path(m.group(1)).name.startswith(f"{DISTRIBUTION}-"):
                names.append(Path(m.group(1)).name)
        out = []
        for name in sorted(set(names)):
            path = folder / name
            if not path.is_file():
                raise BenchError(f"pip download named {name} but {folder} does not hold it")
            out.append((path, sha256_file(path)))
    return out


# -- the board's record ---------------------------------------------------------------------------------------------
def workdir_path(board, name: str) -> str:
    return f"{board.workdir.rstrip('/')}/{name}"


def venv_python(board) -> str:
    """The provisioned board's python: always <workdir>/venv/bin/python (never a path read from the board)."""
    return workdir_path(board, f"{VENV_DIR}/bin/python")


def read_record(launcher) -> dict[str, Any] | None:
    """The board's provision record, checked; None when the board has none. A malformed one: UnavailableError."""
    from harness.errors import InfrastructureError
    from harness.launchers.ssh import SSH_FAILED, _last
    from harness.launchers.trust import parse_json

    board, q = launcher.board, shlex.quote
    path = workdir_path(board, RECORD_FILE)
    where = f"board {board.name}"
    proc = launcher.ssh.run(f"if [ -f {q(path)} ]; then head -c {RECORD_MAX_BYTES + 1} {q(path)}; else exit 3; fi",
                            timeout=60)
    if proc.returncode == 3 and not proc.stdout:
        return None
    if proc.returncode == SSH_FAILED:
        raise UnavailableError(f"{where} ({board.address}): unreachable: {_last(proc.stderr) or 'ssh failed'}")
    if proc.returncode != 0:
        raise UnavailableError(f"{where}: cannot read its provision record {path}: "
                               f"{_last(proc.stderr) or f'exit {proc.returncode}'}")
    what = f"provision record {RECORD_FILE}"
    if len(proc.stdout) > RECORD_MAX_BYTES:
        raise UnavailableError(f"{where}: {what}: over {RECORD_MAX_BYTES} bytes")
    try:
        doc = parse_json(proc.stdout, where, what)
    except InfrastructureError as exc:
        raise UnavailableError(exc.message) from None
    if not isinstance(doc, dict):
        raise UnavailableError(f"{where}: {what}: not a JSON object")
    checks = {"harness_version": lambda v: isinstance(v, str) and _VERSION.match(v),
              "wheel_sha256": lambda v: isinstance(v, str) and _SHA.match(v),
              "extra": lambda v: v is None or v in EXTRAS.values(),
              "time": lambda v: isinstance(v, str) and len(v) <= 64}
    for field, ok in checks.items():
        if not ok(doc.get(field)):
            raise UnavailableError(f"{where}: {what} field '{field}': missing or malformed ({str(doc.get(field))[:80]!r})")
    return doc


def extra_for(target, runtime: str | None) -> tuple[str, str | None]:
    """(runtime, device extra or None) for a target profile: `runtime` (default: the profile's first backend's) must
    be one of the profile's; a runtime the profile lists in [provision] system_runtimes gets no extra."""
    from harness.errors import UsageError

    runtimes = list(dict.fromkeys(b.runtime for b in target.backends))
    runtime = runtime or runtimes[0]
    if runtime not in runtimes:
        raise UsageError(f"--runtime {runtime!r}: target '{target.id}' uses {', '.join(runtimes)}")
    if runtime in target.system_runtimes:
        return runtime, None
    return runtime, EXTRAS[runtime]


def fix_command(board, target_id: str | None, inventory: str | None) -> str:
    parts = ["bench", "device", "provision", board.name]
    if target_id:
        parts += ["--target", target_id]
    if inventory:
        parts += ["--inventory", inventory]
    return shlex.join(parts)


# -- provisioning -----------------------------------------------------------------------------------------------------
def current(record: dict[str, Any] | None, wheel: HostWheel, extra: str | None, system_site: bool) -> bool:
    return bool(record) and record.get("harness_version") == wheel.version and \
        record.get("wheel_sha256") == wheel.sha256 and record.get("extra") == extra and \
        bool(record.get("system_site_packages")) == system_site


def provision(launcher, target, *, runtime: str | None, cache: Path, log: Callable[[str], None] = print,
              wheel: HostWheel | None = None, deps_memo: DependencyMemo | None = None
              ) -> tuple[str, dict[str, Any]]:
    """Provision the board behind `launcher` (an SSHLauncher) for `target`. ("current" | "provisioned", record).
    `wheel`: the host's wheel when the caller already has it (a pool provisioning builds it once for every board);
    `deps_memo`: see dependency_wheels."""
    from harness.launchers.ssh import SSH_FAILED, RemoteFailure, _last

    board, q = launcher.board, shlex.quote
    where = f"board {board.name}"
    try:
        launcher.ssh.open()
    except ConnectionError as exc:
        raise UnavailableError(f"{where} ({board.address}): unreachable: {exc}") from None
    runtime, extra = extra_for(target, runtime)
    system_site = runtime in target.system_runtimes
    wheel = wheel or host_wheel(cache, log=log)
    try:
        record = read_record(launcher)
    except UnavailableError as exc:
        log(f"{exc.message}; provisioning anew")
        record = None
    venv_py = venv_python(board)
    if current(record, wheel, extra, system_site) and \
            launcher.ssh.run(f"test -x {q(venv_py)}", timeout=60).returncode == 0:
        return "current", record

    probe = launcher.ssh.run(f"{q(board.python)} -c {q(_PROBE)}", timeout=60)
    if probe.returncode == SSH_FAILED:
        raise UnavailableError(f"{where} ({board.address}): unreachable: {_last(probe.stderr) or 'ssh failed'}")
    if probe.returncode != 0:
        raise UnavailableError(f"{where}: its python ({board.python}) does not run: "
                               f"{_last(probe.stderr) or f'exit {probe.returncode}'}")
    py = parse_probe(probe.stdout[:PROBE_MAX_BYTES + 1], where)
    if not py.has_ensurepip:
        raise UnavailableError(f"{where}: its python ({board.python}) cannot make a venv with pip (no ensurepip; "
                               "on Debian: apt install python3-venv)")
    log(f"{where}: python {py.version} on {py.machine} (glibc {py.glibc}); fetching wheels for {py.key}")
    deps = dependency_wheels(cache, py, wheel, extra, log=log, memo=deps_memo)
    files = [(wheel.path, wheel.sha256), *deps]
    for path, _ in files:
        if not _WHEEL_NAME.match(path.name):
            raise BenchError(f"{path}: not a wheel name this harness sends")
    before = dict(launcher.sync_stats)
    try:
        launcher.sync(files)
    except RemoteFailure as exc:
        raise UnavailableError(f"{where}: {exc}") from None
    sent = {k: launcher.sync_stats[k] - before[k] for k in before}

    work = board.workdir.rstrip("/")
    house, venv = f"{work}/{WHEELHOUSE_DIR}", f"{work}/{VENV_DIR}"
    links = " && ".join(f"ln -s ../cas/{sha} {q(house + '.new/' + path.name)}" for path, sha in files)
    requirement = f"{house}/{wheel.path.name}" + (f"[{extra}]" if extra else "")
    pip = f"{q(venv + '/bin/python')} -m pip"
    script = " && ".join([
        f"rm -rf {q(house + '.new')}", f"mkdir -p {q(house + '.new')}", links,
        f"rm -rf {q(house)}", f"mv {q(house + '.new')} {q(house)}",
        f"{q(board.python)} -m venv {'--system-site-packages ' if system_site else ''}{q(venv)}",
        f"{{ {pip} uninstall -y -q {DISTRIBUTION.replace('_', '-')} >/dev/null 2>&1 || true; }}",
        f"{pip} install -q --disable-pip-version-check --no-index --find-links {q(house)} {q(requirement)}",
        f"{q(venv + '/bin/python')} -c 'import harness; print(harness.__version__)'"])
    proc = launcher.ssh.run(script, timeout=1800)
    if proc.returncode == SSH_FAILED:
        raise UnavailableError(f"{where} ({board.address}): connection lost while installing: "
                               f"{_last(proc.stderr) or 'ssh failed'}")
    if proc.returncode != 0:
        raise UnavailableError(f"{where}: installing into {venv} failed: "
                               f"{_last(proc.stderr) or f'exit {proc.returncode}'}")
    installed = proc.stdout[-200:].decode(errors="replace").strip().splitlines()
    if not installed or installed[-1] != wheel.version:
        raise UnavailableError(f"{where}: the venv's harness reports version {installed[-1:]!r}, expected "
                               f"{wheel.version}")
    record = {"harness_version": wheel.version, "wheel": wheel.path.name, "wheel_sha256": wheel.sha256,
              "source_sha256": wheel.source_sha256, "extra": extra, "target": target.id, "runtime": runtime,
              "system_site_packages": system_site, "python": py.version, "platform": py.key,
              "venv": venv, "dependencies": {p.name: sha for p, sha in deps},
              "sent": sent, "time": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")}
    blob = base64.b64encode(json.dumps(record, indent=1).encode()).decode()
    part, final = f"{work}/.{RECORD_FILE}.part", f"{work}/{RECORD_FILE}"
    proc = launcher.ssh.run(f"echo {blob} | base64 -d > {q(part)} && mv -f {q(part)} {q(final)}", timeout=60)
    if proc.returncode != 0:
        raise UnavailableError(f"{where}: writing {final} failed: {_last(proc.stderr) or f'exit {proc.returncode}'}")
    return "provisioned", record


def adopt(launcher, *, target_id: str, cache: Path, allow_stale: bool, inventory: str | None,
          log: Callable[[str], None] = print, wheel_of: Callable[[], HostWheel] | None = None) -> None:
    """Before a run's health check: a board with a provision record runs its venv's python, and is refused (exit 3)
    when its harness version or wheel differs from what this host would provision, unless `allow_stale`. A board
    without a record is left as it is. `wheel_of()`: the host's wheel (a fan-out's boards, connected from several
    threads, share one; default host_wheel)."""
    board = launcher.board
    try:
        launcher.ssh.open()
    except ConnectionError as exc:
        raise UnavailableError(f"board {board.name} ({board.address}): unreachable: {exc}") from None
    record = read_record(launcher)
    if record is None:
        return
    launcher.board = replace(board, python=venv_python(board))
    launcher.provision_record = record
    wheel = wheel_of() if wheel_of is not None else host_wheel(cache, log=log)
    if record["harness_version"] == wheel.version and record["wheel_sha256"] == wheel.sha256:
        return
    what = (f"board {board.name} is provisioned with edge-fair-bench {record['harness_version']} (wheel "
            f"{record['wheel_sha256'][:12]}), this host has {wheel.version} (wheel {wheel.sha256[:12]})")
    if allow_stale:
        log(f"{what}; running anyway (--allow-stale-board)")
        return
    raise UnavailableError(f"{what}; run {fix_command(board, target_id, inventory)} (or pass --allow-stale-board)")

