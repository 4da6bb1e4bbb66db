"""The hostile-input suite's sandbox: every case runs the real `bench` (python -m harness) in a child process inside a
tmp folder, and checks the contract of issue 10: the documented exit code, one line on stderr naming the file and the
problem, no traceback anywhere, and nothing changed outside what the command owns.

How to add a case: tests/hostile/README.md.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "unit"))  # helpers_results.make_run: schema-valid run folders

READONLY_UNAVAILABLE = 97  # exit status of the mount wrapper when this machine cannot make a read-only bind mount

# Mount each folder read-only in a private mount namespace, then run the command there: the OS itself answers
# EROFS, which root cannot override (chmod alone does not stop root). Nothing leaks: the namespace dies with it.
_RO_SCRIPT = ('n=$1; shift; while [ "$n" -gt 0 ]; do '
              'mount --bind "$1" "$1" && mount -o remount,ro,bind "$1" "$1" || exit 97; shift; n=$((n-1)); done; '
              'exec "$@"')


@dataclass
class Result:
    rc: int
    out: str
    err: str

    def __str__(self) -> str:  # shown by pytest when an assertion fails
        return f"exit {self.rc}\n--- stdout\n{self.out}\n--- stderr\n{self.err}"


def jpeg(seed: int = 0, size: int = 48) -> bytes:
    """A small real JPEG (noise): decodes, has no face, which `bench data verify` does not need."""
    img = np.random.default_rng(seed).integers(0, 255, (size, size, 3), dtype=np.uint8)
    ok, buf = cv2.imencode(".jpg", img)
    assert ok
    return buf.tobytes()


def snapshot(root: Path) -> dict[str, tuple]:
    """Every path under root (symlinks not followed) -> (kind, size, mtime_ns, mode): enough to see any change."""
    out: dict[str, tuple] = {}
    for dirpath, dirnames, filenames in os.walk(os.fsencode(root)):
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            kind = "link" if os.path.islink(p) else "dir" if os.path.isdir(p) else "file"
            out[os.fsdecode(os.path.relpath(p, os.fsencode(root)))] = (
                kind, 0 if kind == "dir" else st.st_size, 0 if kind == "dir" else st.st_mtime_ns, st.st_mode)
    return out


class Sandbox:
    """A tmp folder standing in for a user's machine: home, model cache, results and data root all inside it."""

    def __init__(self, root: Path):
        self.root = root
        self.home, self.cache, self.results, self.data = (root / "home", root / "cache", root / "results",
                                                          root / "data")
        self.work = root / "work"  # the cwd of every command
        self.tools = root / "tools"  # third-party tool caches (matplotlib's font list): not the harness's writes
        for d in (self.home, self.cache, self.data, self.work, self.tools):
            d.mkdir()
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("BENCH_", "PYTHON"))}
        self.env.update(HOME=str(self.home), XDG_CACHE_HOME=str(self.home / ".cache"), BENCH_CACHE=str(self.cache),
                        BENCH_RESULTS=str(self.results), BENCH_DATA=str(self.data), PYTHONPATH=str(REPO),
                        MPLCONFIGDIR=str(self.tools / "matplotlib"),
                        LC_ALL="C.UTF-8", LANG="C.UTF-8", COLUMNS="200", NO_COLOR="1", TERM="dumb")

    def bench(self, *args: str | os.PathLike, readonly: tuple[Path, ...] = (), env: dict[str, str] | None = None,
              timeout: float = 180) -> Result:
        """Run `python -m harness ARGS` here; `readonly` folders are made read-only for that command only."""
        cmd = [sys.executable, "-m", "harness", *map(os.fspath, args)]
        restore: list[tuple[Path, int]] = []
        if readonly and os.geteuid() == 0:
            if not shutil.which("unshare"):
                pytest.skip("read-only folders as root need unshare(1) and mount(8)")
            cmd = ["unshare", "-m", "sh", "-c", _RO_SCRIPT, "sh", str(len(readonly)), *map(str, readonly), *cmd]
        elif readonly:  # not root: the mode bits are honoured
            for d in readonly:
                restore.append((d, d.stat().st_mode))
                d.chmod(0o555)
        try:
            proc = subprocess.run(cmd, cwd=self.work, env={**self.env, **(env or {})}, capture_output=True,
                                  timeout=timeout, preexec_fn=lambda: os.umask(0o022))
        finally:
            for d, mode in restore:
                d.chmod(mode)
        if readonly and proc.returncode == READONLY_UNAVAILABLE and os.geteuid() == 0:
            pytest.skip("this machine cannot make a read-only bind mount (needs CAP_SYS_ADMIN)")
        return Result(proc.returncode, proc.stdout.decode("utf-8", "backslashreplace"),
                      proc.stderr.decode("utf-8", "backslashreplace"))

    def dataset(self, name: str = "tiny", rows: list[tuple[str, str]] | None = None, *, card: str | None = None,
                images: dict[str, bytes] | None = None, manifest: bytes | None = None) -> Path:
        """A manifest-layout folder (manifest.csv + card.toml + images) outside the data root."""
        folder = self.root / name
        rows = rows if rows is not None else [("imgs/a.jpg", "female"), ("imgs/b.jpg", "male")]
        images = images if images is not None else {img: jpeg(i) for i, (img, _) in enumerate(rows)}
        for rel, data in images.items():
            path = folder / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        body = "image,gender\n" + "".join(f"{img},{g}\n" for img, g in rows)
        (folder / "manifest.csv").write_bytes(manifest if manifest is not None else body.encode("utf-8"))
        (folder / "card.toml").write_text(card if card is not None else f'name = "{name}"\ngroup_columns = ["gender"]\n')
        return folder

    def run_dir(self, **kw) -> str:
        """A complete, schema-valid run in the results folder (written in-process: set-up, not the case)."""
        from helpers_results import LABELS, make_run

        if not LABELS.is_file():
            pytest.skip(f"shared data not found at {LABELS.parent} (set BENCH_DATA)")
        old = os.umask(0o022)
        try:
            return make_run(self.results, **kw).run_id
        finally:
            os.umask(old)


@pytest.fixture
def box(tmp_path: Path) -> Sandbox:
    return Sandbox(tmp_path)


def assert_clean(res: Result) -> None:
    """No traceback and no Python exception name leaking to the user, whatever the exit code."""
    both = res.out + res.err
    assert "Traceback" not in both, res
    for leak in ("UnicodeEncodeError", "UnicodeDecodeError", "MarkupError", "OperationalError", "FileExistsError",
                 "PermissionError", "IsADirectoryError", "NotADirectoryError"):
        assert leak not in both, res


def assert_error(res: Result, code: int, *fragments: str) -> str:
    """Exit `code`, exactly one stderr line 'bench: error: ...' holding every fragment; returns that line."""
    assert_clean(res)
    assert res.rc == code, res
    lines = [line for line in res.err.splitlines() if line.strip()]
    assert len(lines) == 1, res
    assert lines[0].startswith("bench: error: "), res
    for fragment in fragments:
        assert fragment in lines[0], res
    return lines[0]


def assert_unchanged(before: dict[str, tuple], after: dict[str, tuple], *allowed: str) -> None:
    """Nothing under the sandbox changed except paths under an `allowed` prefix."""
    changed = {p for p in before.keys() | after.keys() if before.get(p) != after.get(p) and p.split("/")[0] != "tools"}
    unexpected = sorted(p for p in changed if not any(p == a or p.startswith(a.rstrip("/") + "/") for a in allowed))
    assert not unexpected, f"changed outside {allowed or '(nothing allowed)'}: {unexpected[:10]}"
