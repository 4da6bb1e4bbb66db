"""decode() and file_sha256() on real shared images and on broken copies of them."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from harness.data.images import DecodeFailure, decode, file_sha256
from harness.errors import InputError


def shared_data() -> Path:
    return Path(os.environ.get("BENCH_DATA") or Path(__file__).resolve().parents[2].parent / "shared" / "data")


LONDON_IMAGE = shared_data() / "london-frl" / "neutral_front" / "001_03.jpg"


def test_decode_gives_rgb_uint8_matching_opencv_bgr_reversed():
    rgb = decode(LONDON_IMAGE)
    bgr = cv2.imread(str(LONDON_IMAGE), cv2.IMREAD_COLOR)
    assert rgb.dtype == np.uint8 and rgb.shape == (640, 640, 3)
    np.testing.assert_array_equal(rgb, bgr[:, :, ::-1])


def test_decode_handles_non_ascii_and_spaces_in_path(tmp_path):
    odd = tmp_path / "dossier é 顔" / "photo #1 (copy).jpg"
    odd.parent.mkdir()
    shutil.copy(LONDON_IMAGE, odd)
    np.testing.assert_array_equal(decode(odd), decode(LONDON_IMAGE))


@pytest.mark.parametrize(
    "make, reason",
    [
        (lambda p: None, "missing_file"),
        (lambda p: p.write_bytes(b""), "empty_file"),
        (lambda p: p.write_bytes(LONDON_IMAGE.read_bytes()[:5000]), "decode_error"),  # truncated JPEG
        (lambda p: p.write_text("not an image, just text\n"), "decode_error"),
    ],
    ids=["missing", "zero-byte", "truncated", "text"],
)
def test_decode_failure_reasons(tmp_path, make, reason):
    path = tmp_path / "broken.jpg"
    make(path)
    with pytest.raises(DecodeFailure) as info:
        decode(path)
    assert info.value.reason == reason
    assert isinstance(info.value, InputError)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_file_sha256_matches_hashlib_across_chunk_boundaries():
    expected = hashlib.sha256(LONDON_IMAGE.read_bytes()).hexdigest()
    assert file_sha256(LONDON_IMAGE) == expected
    assert file_sha256(LONDON_IMAGE, chunk_size=997) == expected
