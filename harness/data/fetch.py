"""Download catalogued datasets with urllib: sha256 verification and HTTP Range resume of a .part file.

A failed or interrupted transfer leaves <file>.part; the next run asks for the remaining bytes. A finished
download whose sha256 does not match is deleted (resuming onto bad bytes would never succeed) and raises
ChecksumError. No network -> OfflineError telling the user how to download by hand.
"""

from __future__ import annotations

import http.client
import os
import shutil
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from harness.data.catalog import CatalogEntry
from harness.data.images import file_sha256
from harness.errors import ChecksumError, InputError, IntegrityError, OfflineError

CHUNK = 1 << 16
USER_AGENT = "edge-fair-bench (bench data fetch)"


@dataclass(frozen=True)
class Fetched:
    path: Path
    sha256: str
    resumed_from: int   # bytes already on disk when this run started (0 = fresh download)
    pinned: bool        # False when the catalog had no sha256 to check against


def _offline(url: str, dest: Path, why: object) -> OfflineError:
    host = urlparse(url).hostname or url
    return OfflineError(f"cannot reach {host}: offline? download {url} by hand into {dest.parent} ({why})")


def download(url: str, dest: Path, sha256: str | None, *, timeout: float = 30.0) -> Fetched:
    """Fetch url to dest (resuming dest.part), verify sha256 when given, and move into place atomically."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.is_file() and sha256 and file_sha256(dest) == sha256:
        return Fetched(dest, sha256, dest.stat().st_size, True)
    part = dest.with_name(dest.name + ".part")
    offset = part.stat().st_size if part.is_file() else 0
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            # 206: the server honoured the range, append. 200: it sent the whole file, start over.
            mode = "ab" if offset and response.status == 206 else "wb"
            with open(part, mode) as out:
                shutil.copyfileobj(response, out, CHUNK)
    except urllib.error.HTTPError as exc:
        if exc.code != 416 or not offset:  # 416: nothing left to send, the .part is already whole
            raise IntegrityError(f"{url}: HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:  # refused, DNS, timeout, cut short
        raise _offline(url, dest, getattr(exc, "reason", exc)) from None
    actual = file_sha256(part)
    if sha256 and actual != sha256:
        part.unlink()
        raise ChecksumError(str(dest), sha256, actual)
    os.replace(part, dest)
    return Fetched(dest, actual, offset, sha256 is not None)


def safe_extract(archive: Path, dest: Path) -> list[Path]:
    """Unpack a zip, refusing members that would land outside dest (zip-slip) and skipping macOS metadata."""
    out = []
    root = dest.resolve()
    with zipfile.ZipFile(archive) as zf:
        for member in zf.infolist():
            if member.filename.startswith("__MACOSX/") or member.is_dir():
                continue
            target = (root / member.filename).resolve()
            if not target.is_relative_to(root):
                raise InputError(f"{archive}: member '{member.filename}' would extract outside {dest}")
            zf.extract(member, root)
            out.append(target)
    return out


def fetch_dataset(entry: CatalogEntry, dest: Path, *, allow_unpinned: bool = False,
                  timeout: float = 30.0) -> list[Fetched]:
    """Download (and unpack) every file of a catalog entry into dest."""
    unpinned = [f.filename for f in entry.files if f.sha256 is None]
    if unpinned and not allow_unpinned:
        raise IntegrityError(f"dataset {entry.name}: no pinned sha256 for {', '.join(unpinned)}; "
                             "pass --allow-unpinned to download and print the digest")
    results = []
    for remote in entry.files:
        got = download(remote.url, dest / remote.filename, remote.sha256, timeout=timeout)
        if remote.extract:
            safe_extract(got.path, dest)
        results.append(got)
    return results


__all__ = ["Fetched", "download", "fetch_dataset", "safe_extract"]
