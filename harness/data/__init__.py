"""Datasets: manifests + cards, readers for public layouts, verification, fetching and splits.

See docs/datasets.md. The public names are re-exported here so callers write `from harness.data import ...`.
"""

from harness.data.dataset import Dataset, build_dataset, load_dataset
from harness.data.images import DecodeFailure, decode, file_sha256
from harness.data.layouts import LAYOUTS, detect_layout, read_layout
from harness.data.splits import Split, calibration_split, evaluation_frame
from harness.data.verify import VerifyReport, verify_dataset

__all__ = [
    "LAYOUTS", "Dataset", "DecodeFailure", "Split", "VerifyReport", "build_dataset", "calibration_split",
    "decode", "detect_layout", "evaluation_frame", "file_sha256", "load_dataset", "read_layout", "verify_dataset",
]
