"""Fixtures for the remote tests: a loopback lab of sshd boards (tests/remote/lab.py), a labgrid coordinator and
exporter in front of them, and a tiny slice of london-frl (symlinked, never copied) so each run takes seconds."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.remote.lab import SSHD, Lab, Labgrid

N_IMAGES = 24


def pytest_collection_modifyitems(items):
    for item in items:
        if "tests/remote/" in str(item.fspath):
            item.add_marker(pytest.mark.remote)


@pytest.fixture(scope="session")
def tiny_data(data_root: Path, tmp_path_factory) -> Path:
    """A temporary data root holding london-frl's first N_IMAGES rows (images and landmark files copied there: the
    dataset reader refuses files that resolve outside the dataset root, so symlinks will not do)."""
    import csv

    root = tmp_path_factory.mktemp("tiny-data")
    src, dst = data_root / "london-frl", root / "london-frl"
    dst.mkdir()
    lines = (src / "labels.csv").read_text().splitlines()
    (dst / "labels.csv").write_text("\n".join(lines[:N_IMAGES + 1]) + "\n")
    for row in csv.DictReader(lines[:N_IMAGES + 1]):
        for rel in (row["image"], row.get("landmarks")):
            if rel:
                (dst / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(src / rel, dst / rel)
    for name in ("README.md", "LICENSE.md", "london_info.csv"):
        if (src / name).is_file():
            shutil.copyfile(src / name, dst / name)
    return root


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    if not SSHD.is_file() or shutil.which("ssh") is None:
        pytest.skip("openssh-server/openssh-client not installed (.ci/run installs them)")
    lab = Lab(tmp_path_factory.mktemp("lab"))
    try:
        yield lab
    finally:
        lab.close()


@pytest.fixture(scope="module")
def labgrid(lab, tmp_path_factory):
    pytest.importorskip("labgrid")
    lg = Labgrid(tmp_path_factory.mktemp("lg"), lab)
    try:
        yield lg
    finally:
        lg.close()
