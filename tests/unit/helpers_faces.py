"""Real face inputs for the converter tests: London neutral studio photos, read straight from ../shared/data."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import pandas as pd
import pytest

DATA = Path(os.environ.get("BENCH_DATA", Path(__file__).resolve().parents[2].parent / "shared" / "data"))
SOURCES = Path(os.environ.get("BENCH_CACHE", Path.home() / ".cache" / "edge-fair-bench")) / "sources"


def need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"source model not fetched: {path}")
    if not (DATA / "london-frl" / "labels.csv").exists():
        pytest.skip(f"shared data not found under {DATA}")
    return path


def london(rows: slice) -> pd.DataFrame:
    labels = pd.read_csv(DATA / "london-frl" / "labels.csv")
    return labels[labels["expression"] == "neutral"].iloc[rows]


def rgb(image: str):
    return cv2.cvtColor(cv2.imread(str(DATA / "london-frl" / image)), cv2.COLOR_BGR2RGB)
