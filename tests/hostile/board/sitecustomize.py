"""The hostile board's worker (issue 17): the real `python -m harness worker` runs, then, as it exits, its output
folder is turned into one chosen corruption, the way a board whose `python` somebody replaced would answer.

Active only in a worker process (`-m harness worker ... --out DIR`) whose environment names a config file in
HOSTILE_CONFIG: {"mode": "...", "secret": "/path/outside/the/run.npy"}. Every other Python process that finds this
folder on its path (the host itself, the board's health check) is left alone. Put this folder first on PYTHONPATH:
tests/hostile/hostile_board.py does it for the local worker and writes the `python` shim of an sshd board.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import signal
import stat
import sys
from pathlib import Path


def _config() -> dict | None:
    path = os.environ.get("HOSTILE_CONFIG")
    argv = list(getattr(sys, "orig_argv", []))
    if not path or "worker" not in argv or "--out" not in argv:
        return None
    try:
        cfg = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None
    if not cfg.get("mode") or cfg["mode"] == "none":
        return None
    cfg["out"] = argv[argv.index("--out") + 1]
    return cfg


def _rewrite_chunk(path: Path, change) -> None:
    import numpy as np

    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    change(arrays)
    with open(path, "wb") as fh:
        np.savez(fh, **arrays)


def corrupt(mode: str, out: Path, secret: str) -> None:
    import numpy as np

    result = out / "result.json"
    d = json.loads(result.read_text())
    chunks = sorted((out / "outputs").glob("chunk-*.npz"))
    timings = out / "timings.npy"

    def add_chunk(data: bytes | None = None, copy_of: Path | None = None) -> None:
        new = out / "outputs" / f"chunk-{len(chunks):05d}.npz"
        if copy_of is not None:
            shutil.copyfile(copy_of, new)
        else:
            new.write_bytes(data)
        d["chunks"] = list(d["chunks"]) + [new.name]

    if mode == "timings-absolute":
        d["timings"] = secret
    elif mode == "timings-dotdot":
        d["timings"] = os.path.relpath(secret, out)
    elif mode == "timings-symlink":
        timings.unlink()
        timings.symlink_to(secret)
    elif mode == "timings-device":  # a character device (root can make one) else a link to /dev/zero
        timings.unlink()
        try:
            os.mknod(timings, stat.S_IFCHR | 0o600, os.makedev(1, 5))
        except PermissionError:
            timings.symlink_to("/dev/zero")
    elif mode == "timings-fifo":
        timings.unlink()
        os.mkfifo(timings)
    elif mode == "missing-chunk":
        chunks[-1].unlink()
        d["chunks"] = [c.name for c in chunks[:-1]]
    elif mode == "duplicate-chunk":
        add_chunk(copy_of=chunks[0])
    elif mode == "not-zip":
        chunks[0].write_bytes(b"this is not a zip archive\n" * 10)
    elif mode == "unknown-id":
        _rewrite_chunk(chunks[0], lambda a: a.__setitem__("sample_ids", np.array(["intruder"] + list(a["sample_ids"][1:]))))
    elif mode == "short-infer-ms":
        _rewrite_chunk(chunks[0], lambda a: a.__setitem__("infer_ms", a["infer_ms"][:-1]))
    elif mode == "junk-chunk":  # 2 MiB of noise: the host runs with a chunk limit of 1 MiB
        add_chunk(data=os.urandom(2 << 20))
    elif mode == "timings-missing":
        timings.unlink()
    elif mode == "timings-null":
        d["timings"] = None
    elif mode in ("timings-empty", "timings-nan", "timings-inf", "timings-object"):
        t = np.load(timings)
        if mode == "timings-empty":
            t = t[:0]
        elif mode == "timings-nan":
            t[0] = np.nan
        elif mode == "timings-inf":
            t[0] = np.inf
        else:
            t = np.array([{"ms": 1.0}] * 3, dtype=object)
        with open(timings, "wb") as fh:
            np.save(fh, t, allow_pickle=True)
    elif mode == "fingerprint":
        d["environment"]["hostname_sha256"] = "0" * 16
    elif mode == "backend":
        d["backend"]["requested"] = d["backend"]["active"][0] = "CUDAExecutionProvider"
    elif mode == "entry":
        d["entry"] = "blazeface--onnx-fp32"
    elif mode == "reason-escape":
        d.update(status="infrastructure-error", reason="\x00\x1b[2J\x1b[31mall clear\x1b[0m\x07 \x9b1m")
    elif mode == "nested":
        result.write_text("[" * 100000 + "]" * 100000)
        return
    elif mode == "kill":  # killed on a live board before its result is written: no result.json
        result.unlink()
        os.kill(os.getpid(), signal.SIGKILL)
    else:
        raise SystemExit(f"hostile board: unknown mode {mode!r}")
    result.write_text(json.dumps(d))


_cfg = _config()
if _cfg is not None:
    atexit.register(corrupt, _cfg["mode"], Path(_cfg["out"]), _cfg.get("secret", ""))
