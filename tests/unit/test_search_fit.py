"""`--search-sizes` a board cannot hold are refused before any image is decoded, by the board's own formula."""

from __future__ import annotations

import time
from collections import namedtuple
from types import SimpleNamespace

import pytest

from harness.cli import main
from harness.device import search as board
from harness.errors import EXIT_USAGE, GalleryTooLarge
from harness.launchers.remote import RemoteSession
from harness.search_fit import embedding_dim, refuse_unfit_sizes

MIB = 1 << 20


def test_gallery_bytes_at_each_storage_precision():
    # per row: stored bytes + a float32 score; plus one generation block's scratch (20 bytes a component)
    assert board.gallery_bytes(1_000, 192, "fp32") == 1_000 * (768 + 4) + 1_000 * 192 * 20
    assert board.gallery_bytes(1_000, 192, "fp16") == 1_000 * (384 + 4) + 1_000 * 192 * 20
    assert board.gallery_bytes(1_000, 192, "int8") == 1_000 * (192 + 4 + 4) + 1_000 * 192 * 20
    # the scratch is one block (65,536 rows) however large the gallery
    assert board.gallery_bytes(10_000_000, 192, "int8") == 10_000_000 * 200 + 65_536 * 192 * 20


def test_too_large_refuses_past_the_headroom_and_the_board_uses_the_same_rule(monkeypatch):
    need = board.gallery_bytes(100_000, 192, "fp32")
    edge_mb = need / board.MEMORY_HEADROOM / MIB
    assert board.too_large(100_000, 192, "fp32", edge_mb, "x") is None  # exactly at 80%: fits
    reason = board.too_large(100_000, 192, "fp32", edge_mb * 0.999, "x")
    assert reason == (f"x: a gallery of 100,000 fp32 templates of 192 needs {need:,} bytes ({need / MIB:,.0f} MiB), "
                      f"the board has {edge_mb * 0.999:,.0f} MiB available (at most 80% of it is used)")
    monkeypatch.setattr(board, "available_mb", lambda: edge_mb * 0.999)
    with pytest.raises(GalleryTooLarge) as err:
        board.check_fits(100_000, 192, "fp32", "x")
    assert str(err.value) == reason
    monkeypatch.setattr(board, "available_mb", lambda: edge_mb)
    board.check_fits(100_000, 192, "fp32", "x")


def entry(path, variant="onnx-int8", status="pending", task="verification"):
    return {"entry": f"mobilefacenet--{variant}", "task": task, "variant": variant,
            "precision": variant.rsplit("-", 1)[-1], "status": status, "path": str(path)}


def test_the_host_refuses_at_the_entry_precision_and_leaves_other_entries_alone(built_packs):
    pack = built_packs / "packs" / "mobilefacenet"
    assert embedding_dim(pack / "onnx-fp32.onnx") == embedding_dim(pack / "tflite-int8.tflite") == 192
    sizes = (1_000, 1_000_000)
    fp32_mb = board.gallery_bytes(1_000_000, 192, "fp32") / MIB
    int8_mb = board.gallery_bytes(1_000_000, 192, "int8") / MIB
    memory = ((fp32_mb + int8_mb) / 2 / board.MEMORY_HEADROOM, "the board has {mb} MiB available")
    refuse_unfit_sizes(sizes, [entry(pack / "onnx-int8.onnx")], memory)  # int8 rows fit
    with pytest.raises(GalleryTooLarge, match=r"^--search-sizes 1,000,000 \(mobilefacenet--onnx-fp32\): a gallery "
                                              r"of 1,000,000 fp32 templates of 192 needs 1,\d{3},\d{3},\d{3} bytes"):
        refuse_unfit_sizes(sizes, [entry(pack / "onnx-int8.onnx"), entry(pack / "onnx-fp32.onnx", "onnx-fp32")],
                           memory)
    # entries that will not run, other tasks, and unknown memory check nothing
    refuse_unfit_sizes(sizes, [entry(pack / "onnx-fp32.onnx", "onnx-fp32", status="skipped"),
                               entry(pack / "onnx-fp32.onnx", "onnx-fp32", task="detection")], memory)
    refuse_unfit_sizes(sizes, [entry(pack / "onnx-fp32.onnx", "onnx-fp32")], None)


def board_session(report) -> RemoteSession:
    """A RemoteSession on a board whose health check answered `report` (no connection: memory() reads the report)."""
    return RemoteSession(SimpleNamespace(board=SimpleNamespace(name="pi-1"), health_report=report, close=lambda: None))


@pytest.mark.parametrize("total, expect", [(2048, 2048.0), (0, None), (-5, None), (float("nan"), None),
                                           (True, None), ("4096", None), (None, None)])
def test_a_remote_board_total_memory_is_read_from_its_health_report_as_untrusted(total, expect):
    got = board_session({"fingerprint": {"memory_total_mb": total}}).memory()
    assert (got and got[0]) == expect
    assert board_session("garbage").memory() is None
    assert board_session({"fingerprint": "garbage"}).memory() is None


@pytest.mark.parametrize("available, expect", [(1536, (1536.0, "available")), (0, (2048.0, "in total")),
                                               ("1e9", (2048.0, "in total")), (float("inf"), (2048.0, "in total")),
                                               (None, (2048.0, "in total"))])
def test_a_remote_board_available_memory_wins_over_its_total_when_usable(available, expect):
    report = {"memory_available_mb": available, "fingerprint": {"memory_total_mb": 2048}}
    mb, what = board_session(report).memory()
    assert mb == expect[0] and expect[1] in what


def test_the_health_report_carries_the_boards_available_memory():
    import psutil

    from harness.device.health import report

    got = report({"backends": [], "workdir": ".cache/edge-fair-bench"})["memory_available_mb"]
    assert isinstance(got, int) and 0 < got <= psutil.virtual_memory().total / MIB


def test_bench_run_refuses_a_huge_size_before_the_run_is_created_and_stops_the_decoding(
        built_packs, data_root, tmp_path, monkeypatch, capsys):
    """The faces are decoded while the board is connected (harness/scenarios/host_faces.py); the refusal, which needs
    the board's memory, comes as soon as it has answered, and stops the decoding."""
    import threading

    import psutil

    from harness.scenarios import host_faces

    VM = namedtuple("VM", "total available percent used free")
    monkeypatch.setattr(psutil, "virtual_memory", lambda: VM(4096 * MIB, 1024 * MIB, 75.0, 3072 * MIB, 1024 * MIB))
    stopped = threading.Event()

    def decoding_until_stopped(datasets, cfg, det_ref, chipper, progress):
        step = progress("decode, detect, align", 10 ** 9)
        try:
            while True:  # an acquisition that would never end by itself
                step()
                time.sleep(0.01)
        except host_faces.Stopped:
            stopped.set()
            raise

    monkeypatch.setattr(host_faces, "acquire_all", decoding_until_stopped)
    results = tmp_path / "results"
    code = main(["run", "--target", "cpu", "--model", "mobilefacenet", "--variant", "onnx-fp32", "--dataset",
                 "london-frl-views", "--search-sizes", "1000,10000000", "--results-dir", str(results),
                 "--cache-dir", str(built_packs), "--data-root", str(data_root), "--no-build"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == EXIT_USAGE, err
    need = board.gallery_bytes(10_000_000, 192, "fp32")
    assert err[-1].endswith(f"--search-sizes 10,000,000 (mobilefacenet--onnx-fp32): a gallery of 10,000,000 fp32 "
                            f"templates of 192 needs {need:,} bytes ({need / MIB:,.0f} MiB), this machine has "
                            "1,024 MiB available (at most 80% of it is used)")
    assert not results.exists() or not any(results.iterdir())  # no run was created
    assert stopped.is_set()  # bench run waited for the decoding to stop before it returned
