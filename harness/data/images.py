"""Image decoding and hashing for dataset files.

Decoding goes through cv2.imdecode on the file bytes (not cv2.imread) so paths with non-ASCII characters or odd
separators work on every OS, and so a missing file, an empty file and an undecodable file are told apart: the
per-sample record's `fta_reason` carries exactly these reasons.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import cv2
import numpy as np

from harness.errors import InputError

# The reasons a file can fail to give an image; they are the `fta_reason` values of the per-sample record.
MISSING_FILE = "missing_file"
EMPTY_FILE = "empty_file"
DECODE_ERROR = "decode_error"


class DecodeFailure(InputError):
    """An image file could not be turned into pixels; `reason` is one of the constants above."""

    def __init__(self, path: Path | str, reason: str, detail: str = ""):
        super().__init__(f"{path}: {reason}" + (f" ({detail})" if detail else ""))
        self.path, self.reason, self.detail = str(path), reason, detail


def decode(path: Path | str) -> np.ndarray:
    """Read an image file into an RGB uint8 array of shape (H, W, 3); raise DecodeFailure with a reason."""
    path = Path(path)
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except FileNotFoundError:
        raise DecodeFailure(path, MISSING_FILE) from None
    except IsADirectoryError:
        raise DecodeFailure(path, DECODE_ERROR, "is a directory") from None
    if data.size == 0:
        raise DecodeFailure(path, EMPTY_FILE)
    # OpenCV 4.9+/5 returns None for truncated JPEG/PNG data instead of a partly grey image, so None covers
    # both "not an image" and "cut short".
    bgr = cv2.imdecode(data, cv2.IMREAD_COLOR)
    if bgr is None:
        raise DecodeFailure(path, DECODE_ERROR, f"OpenCV could not decode {data.size} bytes")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def file_sha256(path: Path | str, chunk_size: int = 1 << 20) -> str:
    """sha256 hex digest of a file, read in chunks so large archives do not load into memory."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk_size), b""):
            digest.update(block)
    return digest.hexdigest()
