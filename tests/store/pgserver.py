"""A throwaway PostgreSQL cluster from Debian's packages for the store tests and benchmarks (never a system cluster).

initdb + pg_ctl into a temporary folder, listening on 127.0.0.1 at a free port and on a unix socket in that folder,
trust authentication for one role. PostgreSQL refuses to run as root: as root the cluster runs as the `postgres`
system user (runuser), which the Debian package creates. fsync is off: the tests exercise the store's
transactions, not the disk.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path


def bindir() -> Path | None:
    """Where initdb and pg_ctl are: $PG_BINDIR, Debian's /usr/lib/postgresql/<newest>/bin, or PATH."""
    if os.environ.get("PG_BINDIR"):
        return Path(os.environ["PG_BINDIR"])
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class TempCluster:
    ROLE = "bench"

    def __init__(self) -> None:
        b = bindir()
        if b is None:
            raise RuntimeError("PostgreSQL server binaries not found (apt-get install postgresql, or set PG_BINDIR)")
        self.bin = b
        self.dir = Path(tempfile.mkdtemp(prefix="efb-pg-"))
        self.data = self.dir / "data"
        self.port = _free_port()
        self._as = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        if self._as:
            shutil.chown(self.dir, "postgres")
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", self.ROLE, "--no-sync", "-E", "UTF8")
        self.start()

    def _run(self, tool: str, *args: str) -> None:
        subprocess.run([*self._as, str(self.bin / tool), *args], check=True, capture_output=True, timeout=120)

    @property
    def uri(self) -> str:
        return f"postgresql://{self.ROLE}@127.0.0.1:{self.port}/postgres"

    @property
    def socket_uri(self) -> str:
        return f"postgresql://{self.ROLE}@/postgres?host={self.dir}&port={self.port}"

    def start(self) -> None:
        opts = f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.dir} -c fsync=off -c max_connections=40"
        self._run("pg_ctl", "-D", str(self.data), "-o", opts, "-l", str(self.dir / "log"), "-w", "start")

    def stop(self, mode: str = "fast") -> None:
        """Stop the server; mode 'immediate' is a crash (connections cut, no shutdown checkpoint)."""
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")

    def close(self) -> None:
        try:
            self.stop("immediate")
        except subprocess.CalledProcessError:
            pass
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> TempCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
