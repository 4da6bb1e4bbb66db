"""An emulated aarch64 board: a Debian arm64 root filesystem run under qemu-user through binfmt_misc.

The board is built once per recipe (Debian suite + packages + device wheels + this file's text) with mmdebstrap
(https://gitlab.mister-muffin.de/josch/mmdebstrap), the lean device side (numpy, psutil, onnxruntime,
ai-edge-litert) installed from aarch64 wheels that pip downloads ON THE HOST (`pip install --target --platform
--only-binary=:all:`, so the chroot needs no network or CA bundle), and cached as a zstd tarball
`<cache>/rootfs/<key>.tar.zst`. A later run restores it into `<cache>/boards/<key>/root` (the harness owns that
folder) instead of building again. The harness source is never baked in: it is bind-mounted read-only at run time.

Running a command: a private mount namespace (`unshare --mount --propagation private`), so every bind mount
(proc, an ARM /proc/cpuinfo, /dev, the harness source, an input and an output folder) vanishes with the process,
whatever way it exits. qemu's CPU model is pinned through QEMU_CPU (default cortex-a72, the Raspberry Pi 4's core)
and /proc/cpuinfo says the same, because Debian's qemu 7.2 passes the host's x86 /proc/cpuinfo through and
onnxruntime >= 1.28 then crashes on import (its cpuinfo library finds no ARM core).

Outputs are real aarch64 kernel outputs (XNNPACK, MLAS NEON paths); timings are not the board's: qemu-user
translates every instruction, 100-500x slower than silicon.
"""

from __future__ import annotations

import fcntl
import hashlib
import inspect
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from harness.errors import BenchError, UnavailableError, UsageError

SUITE = "bookworm"  # python3 3.11: the cp311 aarch64 wheels below fit
MIRROR = "http://deb.debian.org/debian"
PACKAGES = ("python3",)
PYTHON_VERSION = "3.11"
# One version per runtime that exists for both x86_64 and aarch64 (cp311), so the same pack runs on both with the
# same runtime; onnxruntime 1.31.1 and ai-edge-litert 2.3.0 are the newest inside pyproject's ranges.
DEVICE_WHEELS = ("numpy==2.4.6", "psutil==7.2.2", "onnxruntime==1.31.1", "ai-edge-litert==2.3.0")
# PyAV (FFmpeg's decoders) for the video source on the board (`bench run --source --emulate`): the `camera` extra
# of pyproject.toml, as an overlay beside the rootfs (Arm64Board.ensure_extra), so the lean board every other
# emulated run uses keeps its recipe and cached tarball. av 18.1.0 is the version the host runs (cp311 aarch64).
CAMERA_WHEELS = ("av==18.1.0",)
WHEEL_PLATFORMS = ("manylinux_2_28_aarch64", "manylinux_2_27_aarch64", "manylinux_2_17_aarch64",
                   "manylinux2014_aarch64")
# arch-test: mmdebstrap runs it to check that the host can execute arm64 binaries before a foreign-architecture
# build; Debian only recommends it, so an install with --no-install-recommends lacks it and mmdebstrap exits 25.
HOST_TOOLS = {"mmdebstrap": "mmdebstrap", "arch-test": "arch-test", "qemu-aarch64-static": "qemu-user-static",
              "update-binfmts": "binfmt-support", "unshare": "util-linux", "zstd": "zstd"}
BINFMT_DIR = Path("/proc/sys/fs/binfmt_misc")
SITE = "/opt/bench/site"   # device wheels, inside the rootfs
SRC = "/opt/bench/src"     # the harness checkout, bind-mounted read-only
EXTRA = "/opt/bench/extra"  # an overlay of extra device wheels (ensure_extra), bind-mounted read-only
IN_DIR, OUT_DIR = "/mnt/in", "/mnt/out"

# /proc/cpuinfo of the boards we emulate (Linux arm64 format; Features as the kernel prints them for each core).
CPUS = {
    "cortex-a72": {"board": "Raspberry Pi 4", "part": "0xd08", "variant": "0x0", "revision": "3", "cores": 4,
                   "features": "fp asimd evtstrm crc32 cpuid"},
    "cortex-a76": {"board": "Raspberry Pi 5", "part": "0xd0b", "variant": "0x4", "revision": "1", "cores": 4,
                   "features": "fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm "
                               "lrcpc dcpop asimddp"},
}
DEFAULT_CPU = "cortex-a72"


def cpuinfo_text(cpu: str) -> str:
    """An ARM /proc/cpuinfo for `cpu`: one block per core, as arch/arm64/kernel/cpuinfo.c prints it, then a Model
    line as the Raspberry Pi kernel adds, saying what this is (the environment fingerprint's cpu.model)."""
    c = CPUS[cpu]
    core = ("processor\t: {i}\nBogoMIPS\t: 108.00\nFeatures\t: {features}\nCPU implementer\t: 0x41\n"
            "CPU architecture: 8\nCPU variant\t: {variant}\nCPU part\t: {part}\nCPU revision\t: {revision}\n\n")
    return ("".join(core.format(i=i, **c) for i in range(c["cores"]))
            + f"Model\t\t: {c['board']} (emulated by qemu-user, -cpu {cpu})\n")


def missing_tools() -> list[str]:
    """Debian packages whose tools this machine lacks (empty when the board can be built and run here)."""
    return sorted({pkg for tool, pkg in HOST_TOOLS.items() if shutil.which(tool) is None})


def qemu_version() -> str:
    """"X.Y" of qemu-aarch64-static, e.g. "7.2"."""
    out = subprocess.run(["qemu-aarch64-static", "--version"], capture_output=True, text=True, check=False).stdout
    m = re.search(r"version (\d+\.\d+)", out)
    return m.group(1) if m else "unknown"


def enable_binfmt() -> None:
    """Mount binfmt_misc if needed and enable qemu-aarch64 (with the F flag Debian registers, the interpreter is
    opened at registration, so it works inside a chroot that has no qemu binary)."""
    if not (BINFMT_DIR / "register").exists():
        _check(["mount", "-t", "binfmt_misc", "binfmt_misc", str(BINFMT_DIR)], "mount binfmt_misc")
    entry = BINFMT_DIR / "qemu-aarch64"
    if not entry.exists() or not entry.read_text().startswith("enabled"):
        _check(["update-binfmts", "--enable", "qemu-aarch64"], "update-binfmts --enable qemu-aarch64")
    if not entry.read_text().startswith("enabled"):
        raise UnavailableError(f"{entry}: qemu-aarch64 is registered but not enabled")


def _check(cmd: list[str], what: str, **kw) -> subprocess.CompletedProcess:
    done = subprocess.run(cmd, capture_output=True, text=True, check=False, **kw)
    if done.returncode != 0:
        last = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["(no output)"]
        raise UnavailableError(f"arm64 board: {what} failed (exit {done.returncode}): {last[0]}")
    return done


@dataclass(frozen=True)
class Recipe:
    """Everything that decides the root filesystem's content; its key names the cached tarball."""

    suite: str = SUITE
    mirror: str = MIRROR
    packages: tuple[str, ...] = PACKAGES
    wheels: tuple[str, ...] = DEVICE_WHEELS
    python_version: str = PYTHON_VERSION

    def key(self) -> str:
        """suite-arm64-<16 hex>: sha256 of the recipe and of the build code's text (Arm64Board._build), so a change
        to either builds a new tarball and a change elsewhere in this module keeps the cached one."""
        code = inspect.getsource(Arm64Board._build)
        text = json.dumps({"recipe": self.__dict__, "build": code, "platforms": WHEEL_PLATFORMS}, sort_keys=True,
                          default=list)
        return f"{self.suite}-arm64-{hashlib.sha256(text.encode()).hexdigest()[:16]}"


# The recipes a board can be built from, by name (`Arm64Board(recipe=RECIPES[name])`).
# - bookworm: python3 3.11, the default board.
# - bullseye: python3 3.9.2, the device side's older-Python run (issue 21: JetPack 5 ships 3.8, Raspberry Pi OS
#   bullseye 3.9), one board for both runtimes. Its wheels have cp39 aarch64 builds that `pip download --platform
#   manylinux2014_aarch64 --python-version 3.9 --only-binary=:all:` finds: tflite-runtime 2.13.0 (LiteRT below
#   Python 3.10: ai-edge-litert has no cp39 wheel, and tflite-runtime 2.14 no aarch64 one; pyproject's
#   device-litert markers), built against numpy 1.x, hence numpy 1.26.4 (the newest 1.x with a cp39 aarch64
#   wheel; onnxruntime 1.19.2 runs with it too), psutil 7.2.2 (abi3), onnxruntime 1.19.2 (1.20 dropped 3.9, so
#   this board is one runtime minor below pyproject's device-onnx floor; its manylinux_2_27 wheel fits bullseye's
#   glibc 2.31), and tomli, the base install's TOML reader below Python 3.11 (pyproject's dependencies).
DEFAULT_SUITE = SUITE
RECIPES = {
    "bookworm": Recipe(),
    "bullseye": Recipe(suite="bullseye", python_version="3.9",
                       wheels=("numpy==1.26.4", "psutil==7.2.2", "onnxruntime==1.19.2", "tflite-runtime==2.13.0",
                               "tomli==2.5.0")),
}


@dataclass
class Arm64Board:
    """One emulated board: `ensure()` builds or restores it, `run()` runs a command inside it."""

    cache: Path
    recipe: Recipe = field(default_factory=Recipe)
    cpu: str = DEFAULT_CPU
    log: object = print

    def __post_init__(self):
        if self.cpu not in CPUS:
            raise UsageError(f"unknown emulated cpu '{self.cpu}'; valid: {', '.join(CPUS)}")
        self.cache = Path(self.cache)
        self._key = self.recipe.key()  # once: the build code's text is read from disk

    @property
    def key(self) -> str:
        return self._key

    @property
    def tarball(self) -> Path:
        return self.cache / "rootfs" / f"{self.key}.tar.zst"

    @property
    def home(self) -> Path:
        return self.cache / "boards" / self.key

    @property
    def root(self) -> Path:
        return self.home / "root"

    @property
    def emulation(self) -> dict:
        """What the environment fingerprint records about the emulation."""
        return {"emulated": True, "by": f"qemu-user {qemu_version()}", "cpu": self.cpu,
                "board": CPUS[self.cpu]["board"], "rootfs": self.key}

    def describe(self) -> str:
        return f"emulated (qemu-user {qemu_version()}, -cpu {self.cpu}: {CPUS[self.cpu]['board']})"

    # --- build / restore ---------------------------------------------------------------------------------------

    def ensure(self) -> dict:
        """The board ready to run: unpacked (restored from the tarball, or built and cached first). One process at
        a time per key (an exclusive lock beside the tarball). Returns what was done with its timings."""
        if missing := missing_tools():
            raise UnavailableError(f"arm64 board: missing tools; install them with apt-get install -y "
                                   f"{' '.join(missing)}")
        if os.geteuid() != 0:
            raise UnavailableError("arm64 board: needs root (mmdebstrap, chroot, bind mounts, binfmt_misc)")
        enable_binfmt()
        self.tarball.parent.mkdir(parents=True, exist_ok=True)
        with open(self.tarball.with_suffix(".lock"), "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            done = {"key": self.key, "tarball": str(self.tarball), "root": str(self.root), "action": "ready"}
            if (self.home / "READY").exists():
                return done
            if not self.tarball.exists():
                done |= self._build()
            done |= self._restore()
            done["action"] = "built" if "build_s" in done else "restored"
            return done

    def _build(self) -> dict:
        t0 = time.perf_counter()
        self.log(f"arm64 board: building {self.key} (mmdebstrap {self.recipe.suite} arm64 minbase)")
        with tempfile.TemporaryDirectory(dir=self.tarball.parent, prefix=".build-") as tmp:
            root = Path(tmp) / "root"
            # In a private mount namespace: the proc/sys/dev mounts mmdebstrap makes inside the new root vanish with it
            # even when it is killed, so no stray /proc mount is ever left in the cache for a copy or rm to walk into.
            _check(["unshare", "--mount", "--propagation", "private", "--",
                    "mmdebstrap", "--variant=minbase", "--architectures=arm64", "--mode=root",
                    f"--include={','.join(self.recipe.packages)}",
                    "--dpkgopt=path-exclude=/usr/share/{doc,man,locale,info}/*",
                    "--dpkgopt=path-include=/usr/share/locale/locale.alias",
                    self.recipe.suite, str(root), self.recipe.mirror], "mmdebstrap")
            t_base = time.perf_counter()
            site = root / SITE.lstrip("/")
            _check([sys.executable, "-m", "pip", "install", "--quiet", "--no-compile", "--target", str(site),
                    "--only-binary=:all:", "--implementation", "cp", "--python-version", self.recipe.python_version,
                    *[a for p in WHEEL_PLATFORMS for a in ("--platform", p)], *self.recipe.wheels],
                   "pip install of the aarch64 device wheels")
            (root / SRC.lstrip("/")).mkdir(parents=True)
            for d in (IN_DIR, OUT_DIR):
                (root / d.lstrip("/")).mkdir(parents=True)
            t_wheels = time.perf_counter()
            # Byte-compile inside the board (emulated python3), so every later start skips it.
            self._run_in(root, ["python3", "-m", "compileall", "-q", "-j", "0", SITE], timeout_s=900)
            site_mb = _tree_mb(site)
            manifest = {"key": self.key, "recipe": self.recipe.__dict__, "site_packages_mb": round(site_mb, 1),
                        "rootfs_mb": round(_tree_mb(root), 1)}
            (root / "opt/bench/board.json").write_text(json.dumps(manifest, indent=1, default=list))
            t_compile = time.perf_counter()
            part = self.tarball.with_name(self.tarball.name + ".part")
            _check(["tar", "--numeric-owner", "-I", "zstd -T0 -6", "-C", str(root), "-cf", str(part), "."],
                   "tar of the root filesystem")
            part.replace(self.tarball)
        t1 = time.perf_counter()
        out = {"build_s": round(t1 - t0, 1), "mmdebstrap_s": round(t_base - t0, 1),
               "wheels_s": round(t_wheels - t_base, 1), "compileall_s": round(t_compile - t_wheels, 1),
               "tarball_mb": round(self.tarball.stat().st_size / 2**20, 1), **manifest}
        self.log(f"arm64 board: built in {out['build_s']} s, tarball {out['tarball_mb']} MB")
        return out

    def _restore(self) -> dict:
        t0 = time.perf_counter()
        if self.home.exists():
            shutil.rmtree(self.home)  # a half-unpacked folder from a killed restore
        self.root.mkdir(parents=True)
        _check(["tar", "--numeric-owner", "-I", "zstd -T0", "-C", str(self.root), "-xf", str(self.tarball)],
               f"restore of {self.tarball}")
        (self.home / "READY").write_text(self.key)
        s = round(time.perf_counter() - t0, 1)
        self.log(f"arm64 board: restored {self.key} in {s} s")
        manifest = json.loads((self.root / "opt/bench/board.json").read_text())
        return {"restore_s": s, **{k: manifest[k] for k in ("site_packages_mb", "rootfs_mb")}}

    def ensure_extra(self, name: str, wheels: tuple[str, ...], what: str) -> Path:
        """A folder of extra aarch64 wheels for the board (e.g. PyAV for the video source), downloaded ON THE HOST
        like the rootfs's (`pip install --target --platform --only-binary=:all:`) into
        `<cache>/boards/extras/<name>-<sha256 of wheels, platforms and Python>/site`, once, under a lock. A run
        binds it read-only at EXTRA and puts it on PYTHONPATH. When pip cannot fetch them (no network, no aarch64
        wheel): UnavailableError "unavailable on this board: <what> not installed (...)", exit 3."""
        key = hashlib.sha256(json.dumps({"wheels": wheels, "platforms": WHEEL_PLATFORMS,
                                         "python": self.recipe.python_version}, sort_keys=True).encode()).hexdigest()
        home = self.cache / "boards" / "extras" / f"{name}-{key[:16]}"
        home.parent.mkdir(parents=True, exist_ok=True)
        with open(home.with_suffix(".lock"), "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if (home / "READY").exists():
                return home / "site"
            if home.exists():
                shutil.rmtree(home)  # a half-written one from a killed install
            t0 = time.perf_counter()
            self.log(f"arm64 board: fetching {', '.join(wheels)} for aarch64")
            proc = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-compile", "--no-deps",
                                   "--target", str(home / "site"), "--only-binary=:all:", "--implementation", "cp",
                                   "--python-version", self.recipe.python_version,
                                   *[a for p in WHEEL_PLATFORMS for a in ("--platform", p)], *wheels],
                                  capture_output=True, text=True, check=False)
            if proc.returncode != 0:
                shutil.rmtree(home, ignore_errors=True)
                last = next((ln.strip() for ln in reversed(proc.stderr.splitlines()) if ln.strip()), "pip failed")
                raise UnavailableError(f"unavailable on this board: {what} not installed (pip could not fetch "
                                       f"{', '.join(wheels)} for aarch64: {last[:200]})")
            (home / "READY").write_text(json.dumps({"wheels": wheels, "s": round(time.perf_counter() - t0, 1)}))
            return home / "site"

    # --- run ---------------------------------------------------------------------------------------------------

    def run(self, argv: list[str], *, src: Path, in_dir: Path | None = None, out_dir: Path | None = None,
            timeout_s: float = 3600.0, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        """argv inside the board, with `src` (a checkout holding harness/) read-only at /opt/bench/src, in_dir
        read-only at /mnt/in and out_dir writable at /mnt/out. Raises UnavailableError if the board is not ready;
        the command's own exit status is returned, not raised."""
        return self._run_in(self.root, argv, binds=self.binds(src=src, in_dir=in_dir, out_dir=out_dir),
                            timeout_s=timeout_s, env=env)

    def binds(self, *, src: Path, in_dir: Path | None = None, out_dir: Path | None = None) -> list[tuple]:
        """The bind mounts of a run; raises UnavailableError if the board is not ready."""
        if not (self.home / "READY").exists():
            raise UnavailableError(f"arm64 board {self.key} is not built or restored; run Arm64Board.ensure()")
        binds = [(Path(src), SRC, "ro")]
        if in_dir is not None:
            binds.append((Path(in_dir), IN_DIR, "ro"))
        if out_dir is not None:
            binds.append((Path(out_dir), OUT_DIR, "rw"))
        return binds

    def command(self, argv: list[str], *, root: Path | None = None, binds=(),
                env: dict[str, str] | None = None) -> list[str]:
        """The host command line that runs argv inside the board: unshare a private mount namespace, mount proc, the
        ARM cpuinfo over /proc/cpuinfo, /dev, a private /tmp and the binds [(host path, board path, "ro"|"rw")],
        then exec chroot + env -i + argv. The chain execs all the way, so the returned process IS the emulated
        program: killing it ends the namespace and with it every mount."""
        root = Path(root or self.root)
        cpuinfo = self._board_file(f"cpuinfo-{self.cpu}", cpuinfo_text(self.cpu))
        cpus = self._board_file(f"cpus-{self.cpu}", f"0-{CPUS[self.cpu]['cores'] - 1}\n")
        r = _q(str(root))
        # sysfs read-only, with the CPU lists onnxruntime's cpuinfo library reads saying the board's core count.
        lines = ["set -e", f"mount -t proc proc {r}/proc", f"mount --bind {_q(str(cpuinfo))} {r}/proc/cpuinfo",
                 f"mount --rbind /sys {r}/sys", f"mount -o remount,bind,ro {r}/sys",
                 *[f"mount --bind {_q(str(cpus))} {r}/sys/devices/system/cpu/{f}" for f in ("possible", "present")],
                 f"mount --rbind /dev {r}/dev", f"mount -t tmpfs tmpfs {r}/tmp"]
        for host, inside, mode in binds:
            lines += [f"mkdir -p {r}{_q(inside)}",  # a bind at a path the rootfs lacks (arm64_exec's work folder)
                      f"mount --bind {'-o ro ' if mode == 'ro' else ''}{_q(str(host))} {r}{_q(inside)}"]
        board_env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": "/root", "LANG": "C.UTF-8",
                     "PYTHONPATH": f"{SITE}:{SRC}", "QEMU_CPU": self.cpu,
                     **(env or {})}
        lines.append(f"exec chroot {r} /usr/bin/env -i " + " ".join(_q(f"{k}={v}") for k, v in board_env.items())
                     + " " + " ".join(_q(a) for a in argv))
        return ["unshare", "--mount", "--propagation", "private", "--", "/bin/sh", "-c", "\n".join(lines)]

    def _board_file(self, name: str, text: str) -> Path:
        path = self.cache / "boards" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists() or path.read_text() != text:
            path.write_text(text)
        return path

    def _run_in(self, root: Path, argv: list[str], *, binds=(), timeout_s: float,
                env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        cmd = self.command(argv, root=root, binds=binds, env=env)
        try:
            return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, check=False)
        except subprocess.TimeoutExpired as exc:
            raise BenchError(f"arm64 board: {' '.join(argv[:3])} timed out after {timeout_s:g} s") from exc


def _q(s: str) -> str:
    import shlex

    return shlex.quote(s)


def _tree_mb(path: Path) -> float:
    return sum(p.lstat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink()) / 2**20
