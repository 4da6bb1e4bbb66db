"""The hostile board (issue 17): a device whose worker returns a chosen corruption (board/sitecustomize.py).

Two boundaries, the same corruptions:
- `local_env(...)`: the local launcher's worker child (the cheap process boundary: `bench run` as a user types it,
  its worker a real child process whose output folder is corrupted as it exits);
- `ssh_board(lab, ...)`: a loopback sshd board (tests/remote/lab.py) whose `python` in the inventory is a shim that
  runs the board's lean venv with this folder first on its path, so the corruption happens on the board and comes
  back through the SSH transfer.
A small slice of london-frl (copied: the dataset reader refuses files outside its root) keeps each run to seconds.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np

BOARD_DIR = Path(__file__).resolve().parent / "board"
REPO = Path(__file__).resolve().parents[2]
N_IMAGES = 8
ENTRY = "gender-dlib--onnx-fp32"
RUN = ("run", "--target", "cpu", "--model", "gender-dlib", "--variant", "onnx-fp32", "--dataset", "london-frl",
       "--threads", "1", "--min-count", "5", "--min-duration", "0.05", "--bootstrap", "20", "--no-build")
SECRET_VALUE = 4242.4242  # the planted .npy outside the run: never to be found in it


def tiny_london(data_root: Path, dest: Path, n: int = N_IMAGES) -> Path:
    """A data root holding london-frl's first `n` rows (images and landmarks copied)."""
    src, dst = data_root / "london-frl", dest / "london-frl"
    dst.mkdir(parents=True)
    lines = (src / "labels.csv").read_text().splitlines()
    (dst / "labels.csv").write_text("\n".join(lines[:n + 1]) + "\n")
    for row in csv.DictReader(lines[:n + 1]):
        for rel in (row["image"], row.get("landmarks")):
            if rel:
                (dst / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(src / rel, dst / rel)
    for name in ("README.md", "LICENSE.md", "london_info.csv"):
        if (src / name).is_file():
            shutil.copyfile(src / name, dst / name)
    return dest


def plant_secret(root: Path) -> Path:
    """A readable .npy outside the run that a board would like the host to take for its timings."""
    secret = root / "secret.npy"
    np.save(secret, np.full(64, SECRET_VALUE))
    return secret


def configure(config: Path, mode: str, secret: Path | None = None) -> None:
    config.write_text(json.dumps({"mode": mode, "secret": str(secret or "")}))


def local_env(config: Path, cache: Path, data: Path, **extra: str) -> dict[str, str]:
    """The environment of a `bench run` whose local worker is the hostile one."""
    return {"PYTHONPATH": f"{BOARD_DIR}:{REPO}", "HOSTILE_CONFIG": str(config), "BENCH_CACHE": str(cache),
            "BENCH_DATA": str(data), **extra}


def ssh_board(lab, name: str, config: Path):
    """A loopback sshd board whose worker is the hostile one (its inventory `python` is a shim)."""
    board = lab.add(name)
    shim = board.dir / "hostile-python"
    shim.write_text(f"#!/bin/sh\nHOSTILE_CONFIG='{config}' PYTHONPATH='{BOARD_DIR}' exec '{board.python}' \"$@\"\n")
    shim.chmod(0o755)
    board.python = shim
    lab.write()
    return board
