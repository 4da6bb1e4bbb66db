"""Issue 17, item 9: image files that would crash, hang or exhaust the decoder. A PNG whose header claims
40000 x 40000 pixels (194 KB on disk, 1.6 G pixels), a FIFO named like an image, a character device: each is a
per-image failure counted in its group (`bench data verify` exits 4 listing it; `bench run` records it as a failure
to acquire), never a traceback, a hang or gigabytes of memory."""

from __future__ import annotations

import json
import os
import stat
import struct
import zlib

import pytest

from conftest import assert_clean, assert_error, jpeg

from harness.errors import EXIT_INTEGRITY, EXIT_OK, EXIT_USAGE


def bomb_png(width: int, height: int, block: int = 1000) -> bytes:
    """A valid 1-bit greyscale PNG of width x height black pixels: deflate packs ~1000:1, so 40000 x 40000 is
    ~194 KB that decodes to 1.6 G pixels (what OpenCV refuses with an exception, or allocates for 20000 x 20000)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    comp = zlib.compressobj(9)
    rows = (b"\0" * ((width + 7) // 8 + 1)) * block
    body = [comp.compress(rows) for _ in range(height // block)] + [comp.flush()]
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0))
            + chunk(b"IDAT", b"".join(body)) + chunk(b"IEND", b""))


@pytest.fixture(scope="module")
def bomb() -> bytes:
    return bomb_png(40000, 40000)


def _failures(res) -> dict[str, str]:
    return {f["image"]: f["reason"] for f in json.loads(res.out)["failures"]}


def test_a_40000_by_40000_png_is_a_too_large_failure_in_its_group(box, bomb):
    assert len(bomb) < 256 * 1024
    folder = box.dataset(rows=[("imgs/a.jpg", "female"), ("imgs/bomb.png", "male")],
                         images={"imgs/a.jpg": jpeg(0), "imgs/bomb.png": bomb})
    res = box.bench("data", "verify", folder, "--json", timeout=120)
    assert_clean(res)
    assert res.rc == EXIT_INTEGRITY, res
    assert _failures(res) == {"imgs/bomb.png": "too_large"}
    by_group = {g["group"]: g for g in json.loads(res.out)["by_group"]}
    assert (by_group["male"]["failed"], by_group["female"]["failed"]) == (1, 0)


def test_the_pixel_bound_is_a_setting(box):
    """$BENCH_MAX_IMAGE_PIXELS: a 48 x 48 JPEG is too large under a bound of 1000 pixels; a bad value is exit 2."""
    folder = box.dataset(rows=[("imgs/a.jpg", "female")])
    res = box.bench("data", "verify", folder, "--json", env={"BENCH_MAX_IMAGE_PIXELS": "1000"})
    assert res.rc == EXIT_INTEGRITY and _failures(res) == {"imgs/a.jpg": "too_large"}, res
    res = box.bench("data", "verify", folder, env={"BENCH_MAX_IMAGE_PIXELS": "lots"})
    assert_error(res, EXIT_USAGE, "BENCH_MAX_IMAGE_PIXELS", "whole number")


def test_a_fifo_named_like_an_image_does_not_hang_verify(box):
    folder = box.dataset(rows=[("imgs/a.jpg", "female"), ("imgs/fifo.jpg", "male")],
                         images={"imgs/a.jpg": jpeg(0)})
    os.mkfifo(folder / "imgs" / "fifo.jpg")
    res = box.bench("data", "verify", folder, "--json", timeout=60)  # the old code blocked in open() forever
    assert_clean(res)
    assert res.rc == EXIT_INTEGRITY, res
    assert _failures(res) == {"imgs/fifo.jpg": "not_regular_file"}


def test_a_device_named_like_an_image_is_not_read(box):
    """A character device (a copy of /dev/zero's node, inside the root) would be read forever."""
    folder = box.dataset(rows=[("imgs/a.jpg", "female"), ("imgs/zero.jpg", "male")], images={"imgs/a.jpg": jpeg(0)})
    try:
        os.mknod(folder / "imgs" / "zero.jpg", 0o644 | stat.S_IFCHR, os.makedev(1, 5))
    except PermissionError:
        pytest.skip("making a device node needs root (CAP_MKNOD)")
    res = box.bench("data", "verify", folder, "--json", timeout=60)
    assert_clean(res)
    assert res.rc == EXIT_INTEGRITY, res
    assert _failures(res) == {"imgs/zero.jpg": "not_regular_file"}


@pytest.mark.slow
@pytest.mark.e2e
def test_run_counts_the_bomb_and_the_fifo_as_failures_to_acquire(box, built_packs, data_root, bomb):
    """`bench run` over two real faces, the 40000 x 40000 PNG and a FIFO: completes (exit 0), both hostile files
    are failures to acquire with their reasons in the per-sample records, in their groups."""
    faces = sorted((data_root / "london-frl").rglob("*.jpg"))[:2]
    images = {f"imgs/{p.name}": p.read_bytes() for p in faces}
    images["imgs/bomb.png"] = bomb
    rows = [(f"imgs/{p.name}", "f") for p in faces] + [("imgs/bomb.png", "m"), ("imgs/fifo.jpg", "m")]
    folder = box.dataset(rows=rows, images=images)
    os.mkfifo(folder / "imgs" / "fifo.jpg")
    res = box.bench("run", "--model", "blazeface", "--variant", "onnx-fp32", "--dataset", folder, "--no-build",
                    "--threads", "1", "--min-count", "5", "--min-duration", "0.05", "--bootstrap", "20",
                    env={"BENCH_CACHE": str(built_packs)}, timeout=600)
    assert_clean(res)
    assert res.rc == EXIT_OK, res
    run_dir = box.results / res.out.strip().splitlines()[-1].split("/")[-1]
    records = [json.loads(line) for f in (run_dir / "samples").glob("*.jsonl") for line in f.read_text().splitlines()]
    reasons = {r["image"]: r.get("fta_reason") for r in records if r.get("image") in ("imgs/bomb.png", "imgs/fifo.jpg")}
    assert reasons == {"imgs/bomb.png": "too_large", "imgs/fifo.jpg": "not_regular_file"}, records[:4]
