"""A board that lies about the watchlist search (issue 18): the real worker runs a search job in a child process
(LocalLauncher), then its output folder is corrupted as a hostile board would send it back; the host's record for
that search is a failure with one line naming the file or field and the problem, never a traceback, never the
board's figures."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from harness.jobs import LatencySettings
from harness.launchers.local import LocalLauncher
from harness.search_job import DeviceSearch

N, M, DIM = 30, 4, 16


def _rewrite_chunk(out: Path, change) -> None:
    path = next((out / "outputs").glob("chunk-*.npz"))
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    change(arrays)
    np.savez(path, **arrays)


def _result(out: Path, change) -> None:
    d = json.loads((out / "result.json").read_text())
    change(d)
    (out / "result.json").write_text(json.dumps(d))


def _set(key, value):
    return lambda a: a.__setitem__(key, value(a))


def _swap_candidates(a):  # well-formed, but not the true top-k: the 1st and the last candidate of probe 0 swapped
    ids = a["out0"].copy()
    ids[0, 0], ids[0, -1] = ids[0, -1], ids[0, 0]
    a["out0"] = ids


CASES = [
    ("chunk", _set("out0", lambda a: a["out0"][:, :3]), ["outputs/chunk-00000.npz 'out0'", "not 4 x 10 integer"]),
    ("chunk", _set("out0", lambda a: a["out0"].astype(np.float32)), ["'out0'", "integer gallery ids"]),
    ("chunk", _set("out1", lambda a: np.where(np.arange(10) == 3, np.nan, a["out1"]).astype(np.float32)),
     ["'out1'", "not a finite number in [-1, 1]"]),
    ("chunk", _set("out1", lambda a: a["out1"] * 3), ["'out1'", "not a finite number in [-1, 1]"]),
    ("chunk", _set("out0", lambda a: a["out0"] + N), ["'out0'", "gallery id outside [0, 30)"]),
    ("chunk", _set("out0", lambda a: -a["out0"] - 1), ["'out0'", "gallery id outside"]),
    ("chunk", _set("out0", lambda a: np.repeat(a["out0"][:, :1], 10, axis=1)),
     ["'out0'", "names a gallery template twice"]),
    ("chunk", _set("out1", lambda a: a["out1"][:, ::-1].copy()), ["'out1'", "not in descending score order"]),
    ("chunk", _set("sample_ids", lambda a: np.array(["x"] * len(a["sample_ids"]))),
     ["'sample_ids'", "names sample 'x', which the host did not send"]),
    ("chunk", _swap_candidates, ["search top-10 of 1 of 4 probes differ from the host scorer's", "'p0'"]),
    ("result", lambda d: d["search"].__setitem__("counts", [1, 1]), ["timings.npy", "counts per size add up to 2"]),
    ("result", lambda d: d["search"].__setitem__("sizes", [30]), ["field 'search'", "the job asked for k=10"]),
    ("result", lambda d: d["search"].__setitem__("n_gallery", 10**9), ["field 'search'", "the host sent 30 x 16"]),
    ("result", lambda d: d.__setitem__("search", "fast"), ["field 'search'", "is not an object"]),
    # the gallery-size sweep's own fields: storage precision, memory per size, the check probes' candidates
    ("result", lambda d: d["search"].__setitem__("precision", "int8"), ["'precision'", "the job asked for fp32"]),
    ("result", lambda d: d["search"].__setitem__("precision", "\x1b[31m\n" * 40), ["'precision'", "\\x1b[31m\\n"]),
    ("result", lambda d: d["search"]["per_size"].pop(), ["'per_size'", "one record per gallery size (2)"]),
    ("result", lambda d: d["search"].pop("per_size"), ["'per_size'", "is not a list of one record per gallery size"]),
    ("result", lambda d: d["search"]["per_size"][1].__setitem__("gallery_bytes", 1),
     ["'per_size'[1] 'gallery_bytes'", "300 fp32 templates of 16 take 19200"]),
    ("result", lambda d: d["search"]["per_size"][1].__setitem__("rss_growth_mb", -1.0),
     ["'per_size'[1] 'rss_growth_mb'", "not a finite number >= 0"]),
    ("result", lambda d: d["search"]["per_size"][0].__setitem__("rss_growth_mb", 1e30), ["'rss_growth_mb'", "bounds"]),
    ("result", lambda d: d["search"]["per_size"][0].__setitem__("rss_before_mb", "lots"), ["'rss_before_mb'"]),
    ("result", lambda d: d["search"]["per_size"][1].__setitem__("size", 30), ["'per_size'[1]", "gallery of 300"]),
    ("result", lambda d: d["search"]["per_size"][1]["check_index"][0].__setitem__(0, 300),
     ["'per_size'[1] 'check_index'/'check_score'", "not 4 x 10 candidate ids and scores"]),
    ("result", lambda d: d["search"]["per_size"][1]["check_score"][0].__setitem__(0, 7.0),
     ["'per_size'[1] 'out1'", "not a finite number in [-1, 1]"]),
    ("result", lambda d: d["search"]["per_size"][1]["check_index"][0].reverse(),
     ["search top-10 on the gallery of 300 of 1 of 4 probes differ from the host scorer's"]),
]


class Hostile(LocalLauncher):
    def __init__(self, where: str, change):
        super().__init__(timeout_s=120)
        self.kind, self.change = where, change

    def launch(self, job, inputs_dir, out_dir):
        result = super().launch(job, inputs_dir, out_dir)
        assert result.ok, result.reason
        (_rewrite_chunk if self.kind == "chunk" else _result)(Path(out_dir), self.change)
        if self.kind == "result":  # what the host takes as the board's result.json (trust.outcome reads it)
            from harness.launchers.trust import outcome

            return outcome(job, out_dir, where=self.where, exit_code=0, wall_s=0.0, fallback="gone")
        return result


@pytest.mark.parametrize("kind, change, fragments", CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_a_lying_board_is_refused_in_one_line(tmp_path, kind, change, fragments):
    rng = np.random.default_rng(7)
    search = DeviceSearch(Hostile(kind, change), tmp_path / "work",
                          latency=LatencySettings(warmup=1, min_duration_s=0.0, min_count=5), seed=1, sizes=(300,))
    rec = search("e", "d", rng.standard_normal((N, DIM)), rng.standard_normal((M, DIM)), [f"p{i}" for i in range(M)])
    assert rec["status"] == "failed" and rec["kind"] == "infrastructure-error", rec
    reason = rec["reason"]
    assert "\n" not in reason and "Traceback" not in reason and reason.startswith("local worker: ")
    for f in fragments:
        assert f in reason, reason
    assert "sizes" not in rec  # no figure of a board caught lying


def test_an_honest_board_passes_the_same_path(tmp_path):
    rng = np.random.default_rng(7)
    search = DeviceSearch(LocalLauncher(timeout_s=120), tmp_path / "work",
                          latency=LatencySettings(warmup=1, min_duration_s=0.0, min_count=5), seed=1, sizes=(300,))
    rec = search("e", "d", rng.standard_normal((N, DIM)), rng.standard_normal((M, DIM)), [f"p{i}" for i in range(M)])
    assert rec["status"] == "ok" and rec["topk_check"]["agree"] == M
    assert [s["size"] for s in rec["sizes"]] == [N, 10 * N]
    assert [s["topk_check"]["agree"] for s in rec["sizes"]] == [M, M]
    assert [s["memory"]["gallery_bytes"] for s in rec["sizes"]] == [N * DIM * 4, 10 * N * DIM * 4]
