"""Image decoding and hashing for dataset files.

Decoding goes through cv2.imdecode on the file bytes (not cv2.imread) so paths with non-ASCII characters or odd
separators work on every OS, and so a missing file, an empty file and an undecodable file are told apart: the
per-sample record's `fta_reason` carries exactly these reasons.

A dataset file is untrusted input (issue 17, item 9), so before any pixel is decoded:
- only a regular file is read: it is opened with O_NONBLOCK and fstat'ed, so a FIFO, socket or device named
  `x.jpg` is a `not_regular_file` failure instead of a hang (opening a FIFO without O_NONBLOCK blocks until a writer
  appears) or an endless read (/dev/zero);
- the file is at most `BENCH_MAX_IMAGE_BYTES` bytes (default 256 MiB) and its width x height, read from the header
  by Pillow's lazy `Image.open` (which parses the header only and decodes nothing until asked), is at most
  `BENCH_MAX_IMAGE_PIXELS` (default 89,478,485: Pillow's own `Image.MAX_IMAGE_PIXELS`, its decompression-bomb
  threshold, about 256 MiB of 24-bit pixels); a larger one is a `too_large` failure. A 194 KB PNG that claims
  40000 x 40000 pixels would otherwise make OpenCV allocate 4.8 GB or raise. A file whose header Pillow cannot
  read is a `decode_error`, like one OpenCV cannot decode.
Each is a per-image failure counted in its group, as a corrupt image is.
"""

from __future__ import annotations

import hashlib
import io
import os
import stat
import threading
import warnings
from pathlib import Path

import cv2
import numpy as np

from harness.errors import InputError

# The reasons a file can fail to give an image; they are the `fta_reason` values of the per-sample record.
MISSING_FILE = "missing_file"
EMPTY_FILE = "empty_file"
DECODE_ERROR = "decode_error"
NOT_REGULAR_FILE = "not_regular_file"
TOO_LARGE = "too_large"

ENV_MAX_PIXELS = "BENCH_MAX_IMAGE_PIXELS"
ENV_MAX_BYTES = "BENCH_MAX_IMAGE_BYTES"
DEFAULT_MAX_PIXELS = 89_478_485   # PIL.Image.MAX_IMAGE_PIXELS (Pillow's decompression-bomb threshold)
DEFAULT_MAX_BYTES = 256 << 20


def _limit(env: str, default: int) -> int:
    from harness.limits import positive_int

    return positive_int(env, default)  # type: ignore[return-value]


def max_image_pixels() -> int:
    """The per-image pixel bound: $BENCH_MAX_IMAGE_PIXELS or the default; UsageError for a bad value."""
    return _limit(ENV_MAX_PIXELS, DEFAULT_MAX_PIXELS)


def max_image_bytes() -> int:
    """The per-image file-size bound: $BENCH_MAX_IMAGE_BYTES or the default; UsageError for a bad value."""
    return _limit(ENV_MAX_BYTES, DEFAULT_MAX_BYTES)


def check_limits() -> None:
    """Validate both settings up front (a command calls this before it decodes anything)."""
    max_image_pixels()
    max_image_bytes()


class DecodeFailure(InputError):
    """An image file could not be turned into pixels; `reason` is one of the constants above."""

    def __init__(self, path: Path | str, reason: str, detail: str = ""):
        super().__init__(f"{path}: {reason}" + (f" ({detail})" if detail else ""))
        self.path, self.reason, self.detail = str(path), reason, detail


def read_regular(path: Path | str, max_bytes: int) -> bytes:
    """The bytes of a regular file of at most max_bytes; DecodeFailure (missing, not a regular file, too large)."""
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise DecodeFailure(path, MISSING_FILE) from None
    except IsADirectoryError:
        raise DecodeFailure(path, DECODE_ERROR, "is a directory") from None
    except OSError as exc:  # ENXIO: a FIFO/socket with no peer; EACCES, ELOOP, ...
        raise DecodeFailure(path, NOT_REGULAR_FILE if exc.errno == getattr(os, "ENXIO", -1) else DECODE_ERROR,
                            exc.strerror or type(exc).__name__) from None
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise DecodeFailure(path, DECODE_ERROR, "is a directory")
        if not stat.S_ISREG(st.st_mode):
            raise DecodeFailure(path, NOT_REGULAR_FILE, f"a {_kind(st.st_mode)}, not a regular file")
        if st.st_size > max_bytes:
            raise DecodeFailure(path, TOO_LARGE, f"{st.st_size} bytes > {max_bytes} ({ENV_MAX_BYTES})")
        with os.fdopen(fd, "rb", closefd=False) as fh:
            data = fh.read(max_bytes + 1)  # a file that grew since fstat is still bounded
    except OSError as exc:
        raise DecodeFailure(path, DECODE_ERROR, exc.strerror or type(exc).__name__) from None
    finally:
        os.close(fd)
    if len(data) > max_bytes:
        raise DecodeFailure(path, TOO_LARGE, f"more than {max_bytes} bytes ({ENV_MAX_BYTES})")
    return data


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "FIFO"), (stat.S_ISSOCK, "socket"), (stat.S_ISCHR, "character device"),
                       (stat.S_ISBLK, "block device")):
        if test(mode):
            return name
    return "special file"


_PIL_LOCK = threading.Lock()  # Image.MAX_IMAGE_PIXELS is process-global; verify reads headers from a thread pool


def header_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from the image header, without decoding pixels (Pillow's lazy open); None if unreadable."""
    from PIL import Image, UnidentifiedImageError

    with _PIL_LOCK, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # DecompressionBombWarning: the bound is ours, checked by the caller
        saved, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None  # Pillow must not raise before we look
        try:
            with Image.open(io.BytesIO(data)) as im:
                return int(im.size[0]), int(im.size[1])
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError):
            return None
        except Exception:  # noqa: BLE001 - a crafted header may make a format plugin raise anything (struct.error,
            return None    # IndexError, ...): an unreadable header, not a crash
        finally:
            Image.MAX_IMAGE_PIXELS = saved


def decode(path: Path | str) -> np.ndarray:
    """Read an image file into an RGB uint8 array of shape (H, W, 3); raise DecodeFailure with a reason."""
    path = Path(path)
    max_pixels, max_bytes = max_image_pixels(), max_image_bytes()
    data = read_regular(path, max_bytes)
    if not data:
        raise DecodeFailure(path, EMPTY_FILE)
    size = header_size(data)
    if size is None:
        raise DecodeFailure(path, DECODE_ERROR, f"no image header Pillow can read in {len(data)} bytes")
    if size[0] * size[1] > max_pixels:
        raise DecodeFailure(path, TOO_LARGE, f"{size[0]}x{size[1]} pixels > {max_pixels} ({ENV_MAX_PIXELS})")
    # OpenCV 4.9+/5 returns None for truncated JPEG/PNG data instead of a partly grey image, so None covers
    # both "not an image" and "cut short".
    try:
        bgr = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
    except cv2.error as exc:
        raise DecodeFailure(path, DECODE_ERROR, f"OpenCV: {str(exc).strip().splitlines()[-1]}") from None
    if bgr is None:
        raise DecodeFailure(path, DECODE_ERROR, f"OpenCV could not decode {len(data)} bytes")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def file_sha256(path: Path | str, chunk_size: int = 1 << 20) -> str:
    """sha256 hex digest of a file, read in chunks so large archives do not load into memory."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk_size), b""):
            digest.update(block)
    return digest.hexdigest()
