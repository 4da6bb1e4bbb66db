"""Every file the harness writes and every folder it removes goes through here.

- One file mode policy: files 0666 and folders 0777, minus the process umask (so 0644 / 0755 under the usual 022),
  the same as `open()` and `mkdir()` give; `tempfile.mkstemp` alone would leave 0600.
- One atomic write: a temporary file in the same folder, fsynced, then os.replace'd, then the folder fsynced (the
  rename is durable only once the directory entry is), so a reader sees the old file or the new one, never half.
- One removal rule: `remove_owned(path, owner)` deletes only inside the folder that owns it, after resolving both,
  and never follows a symlink out of it (shutil.rmtree itself does not follow symlinks inside the tree).
- One translation of the OS's "no" (read-only filesystem, permission denied, a file where a folder should be)
  into a one-line InputError naming the path: `cannot_write`.
- Every write names its file when it fails (`naming`): write(2) and fsync(2) errors such as ENOSPC ("No space
  left on device") carry no file name of their own (issue 17, item 10). `environment_error` tells a failure of
  the machine (disk full, quota, out of memory or file handles, I/O error, read-only file system), worth retrying
  once it is fixed, from a failure of the input.
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from harness.errors import BenchError, InputError
from harness.names import shown

FILE_MODE = 0o666
DIR_MODE = 0o777


# OS errors that say "this machine, now", not "this input": a step that failed with one is retried next time.
ENVIRONMENT_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.ENOMEM, errno.EMFILE, errno.ENFILE,
                                errno.EIO, errno.EROFS})


@contextmanager
def naming(path: str | os.PathLike) -> Iterator[None]:
    """An OSError raised in the body names `path` when the OS named no file (a failed write(2) names none)."""
    try:
        yield
    except OSError as exc:
        if exc.filename is None and exc.errno is not None:  # a bare OSError("...") keeps its own message
            exc.filename = os.fspath(path)
        raise


def environment_error(exc: BaseException) -> str | None:
    """'PATH: reason' when `exc` is a failure of the machine (ENVIRONMENT_ERRNOS, MemoryError), else None.

    shutil.copyfile names the source as `filename` and the destination as `filename2`; for a full disk the
    destination is the file that could not be written."""
    if isinstance(exc, MemoryError):
        return "out of memory"
    if not isinstance(exc, OSError) or exc.errno not in ENVIRONMENT_ERRNOS:
        return None
    where = exc.filename2 if exc.errno == errno.ENOSPC and exc.filename2 else exc.filename
    return f"{shown(where)}: {exc.strerror or exc}" if where is not None else (exc.strerror or str(exc))


def umask() -> int:
    """The process umask (read by setting and restoring it; there is no portable read-only call)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def file_mode() -> int:
    """The mode a new file gets: 0666 minus the umask, as open() would give it."""
    return FILE_MODE & ~umask()


def cannot_write(path: str | os.PathLike, exc: OSError, what: str = "") -> BenchError:
    """One line for an OS refusal to write `path`: the path, what it is, and the OS's reason (exit 2)."""
    reason = exc.strerror or str(exc)
    if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        reason += "; choose a writable folder"
    label = f"{what} " if what else ""
    return InputError(f"{label}{shown(path)}: cannot write: {reason}")


def ensure_dir(path: Path, what: str) -> Path:
    """`path` as an existing folder (created with parents if missing); InputError if it is a file or unwritable."""
    if path.exists() and not path.is_dir():
        raise InputError(f"{what} {shown(path)} is not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):  # a parent (or, after a race, the path) is a regular file
        raise InputError(f"{what} {shown(path)}: a part of the path is a file, not a folder") from None
    except OSError as exc:
        raise cannot_write(path, exc, what) from None
    return path


def ensure_writable_dir(path: Path, what: str) -> Path:
    """ensure_dir, then prove a file can be created there (root ignores mode bits, a read-only mount does not)."""
    ensure_dir(path, what)
    try:
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as exc:
        raise cannot_write(path, exc, what) from None
    return path


def temp_dir(parent: Path, prefix: str) -> Path:
    """A new uniquely named folder in `parent` with the folder mode policy (mkdtemp alone gives 0700)."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    os.chmod(path, DIR_MODE & ~umask())
    return path


def fsync_dir(path: Path) -> None:
    """Make a rename in `path` durable; not every platform can open a directory, which is then a no-op."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write `data` to `path` atomically with the file mode policy: tmp + fsync + os.replace + folder fsync."""
    path = Path(path)
    with naming(path):
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with naming(path):
            os.fchmod(fd, file_mode())
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def write_python_command(path: str | os.PathLike, module: str, args: list[str], what: str) -> Path:
    """An executable /bin/sh script at `path` running `python -m module ARGS "$@"` with this interpreter and this
    checkout first on PYTHONPATH (the emulated board's python shim, an sshd board's power switch), written
    atomically; executable for whoever the file mode policy lets read it. `what`: its comment line."""
    import shlex
    import sys

    from harness.paths import REPO_ROOT

    cmd = [sys.executable, "-m", module, *args]
    try:
        path = atomic_write_text(path, f"#!/bin/sh\n# {what}\n"
                                       f"PYTHONPATH={shlex.quote(str(REPO_ROOT))} exec {shlex.join(cmd)} \"$@\"\n")
        mode = file_mode()
        path.chmod(mode | (mode & 0o444) >> 2)  # r -> r-x
    except OSError as exc:
        raise cannot_write(path, exc, "the command") from None
    return path


def _inside(path: Path, owner: Path) -> Path:
    """The absolute path of `path` (its last component NOT resolved, so a symlink is removed, not followed),
    after checking it lies strictly inside the resolved `owner`."""
    real_owner = owner.resolve()
    parent = path.parent.resolve()
    target = parent / path.name
    if path.name in ("", ".", "..") or not (parent == real_owner or parent.is_relative_to(real_owner)):
        raise InputError(f"refusing to remove {shown(path)}: it is not inside {shown(real_owner)}, the folder "
                         "that owns it")
    return target


def remove_owned(path: str | os.PathLike, owner: str | os.PathLike) -> bool:
    """Remove the file, symlink or folder `path` only if it lies inside `owner`; returns whether anything was removed.

    A symlink is unlinked, never followed (so a link to elsewhere deletes only the link); a folder is removed with
    shutil.rmtree, which does not follow symlinks inside the tree either.
    """
    target = _inside(Path(path), Path(owner))
    if target.is_symlink() or (target.exists() and not target.is_dir()):
        target.unlink()
        return True
    if target.is_dir():
        shutil.rmtree(target)
        return True
    return False
