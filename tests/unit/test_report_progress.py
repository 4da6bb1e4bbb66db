"""Plain progress lines when `bench run` is not on a terminal (issue 16, "Silent when not on a terminal"): start and
end lines, at most one line per interval per task in between, driven by a fake clock; and an entry's samples
counted from the chunks its worker writes."""

from __future__ import annotations

import threading

import numpy as np

from harness.jobs import OUTPUTS_DIR
from harness.report.progress import LineProgress
from harness.scenarios.entry import ChunkWatcher


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def test_start_end_and_at_most_one_line_per_interval():
    clock, lines = FakeClock(), []
    progress = LineProgress(lines.append, interval_s=10.0, clock=clock)
    advance = progress("decode, detect, align", 100)
    assert lines == ["progress: decode, detect, align: started, 100 to do"]
    for _ in range(30):  # 30 samples in 3 s: no line (under the interval)
        clock.t += 0.1
        advance()
    assert len(lines) == 1
    clock.t += 7.0  # 10 s since the start: one line
    advance()
    assert lines[-1] == "progress: decode, detect, align: 31/100 (31%), elapsed 10 s"
    for _ in range(50):  # 50 more within 5 s: nothing more
        clock.t += 0.1
        advance()
    assert len(lines) == 2
    clock.t += 20.0
    advance(19)  # the last ones: the end line, whatever the interval
    assert lines[-1] == "progress: decode, detect, align: 100/100 done, elapsed 35 s"
    advance()  # after the end: silent, and the count never passes the total
    assert len(lines) == 3


def test_the_bound_is_per_task():
    clock, lines = FakeClock(), []
    progress = LineProgress(lines.append, interval_s=5.0, clock=clock)
    entries = progress("model variants", 2)
    a = progress("gender-dlib--onnx-int8 samples", 10)
    clock.t += 6.0
    a(3)
    entries()  # its own interval has passed too: each task reports on its own clock
    assert lines[-2:] == ["progress: gender-dlib--onnx-int8 samples: 3/10 (30%), elapsed 6 s",
                          "progress: model variants: 1/2 (50%), elapsed 6 s"]
    empty = progress("nothing left (resumed)", 0)
    assert lines[-1] == "progress: nothing left (resumed): 0/0 done, elapsed 0 s"
    empty()
    assert lines[-1] == "progress: nothing left (resumed): 0/0 done, elapsed 0 s"


def test_advance_from_two_threads_counts_every_sample():
    lines = []
    advance = LineProgress(lines.append, interval_s=1e9)("x", 2000)
    threads = [threading.Thread(target=lambda: [advance() for _ in range(1000)]) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert lines[-1].startswith("progress: x: 2000/2000 done")


def test_chunk_watcher_counts_the_samples_a_worker_has_written(tmp_path):
    seen = []
    out = tmp_path / "out"
    w = ChunkWatcher(out, seen.append, interval_s=3600)  # polled by hand: no timing in this test
    assert w.poll() == 0  # no outputs folder yet
    (out / OUTPUTS_DIR).mkdir(parents=True)
    np.savez(out / OUTPUTS_DIR / "chunk-00000.npz", sample_ids=np.array(["a", "b"]), infer_ms=np.zeros(2))
    assert w.poll() == 2 and w.poll() == 0
    np.savez(out / OUTPUTS_DIR / "chunk-00001.npz", sample_ids=np.array(["c"]), infer_ms=np.zeros(1))
    (out / OUTPUTS_DIR / "chunk-00002.npz").write_bytes(b"half a file")  # not counted, no crash
    assert w.poll() == 1
    assert seen == [2, 1]
    with ChunkWatcher(out, seen.append, interval_s=3600):  # the context manager polls once more on exit
        pass
    assert seen[-1] == 3
