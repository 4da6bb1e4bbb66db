"""The watchlist search on the device (issue 18): send a run's gallery templates to the board, time the search there,
check what comes back against the host's scorer.

Host side of the "search" workload of the job contract (harness.jobs.SearchSpec, harness/device/search.py). For each
embedding entry and watchlist dataset of a run, once harness/watchlist.py has built that entry's own gallery (its
templates: enrolled people, then distractor faces, in the seeded order) and its probe templates:

- the gallery is extended to DISTRACTOR_FACTOR times its size with synthetic distractor templates (seeded Gaussian
  directions, normalised: uniform on the sphere; the issue allows synthetic templates for timing), so the search is
  timed at the watchlist's size and at 10x;
- gallery and probes travel as float32 .npy files through the launcher's usual content-addressed transfer (the
  job's model and input files), the board runs the accuracy pass over every searched probe and times single-probe
  search per gallery size with the run's latency settings;
- the return is read only through harness/launchers/trust.py (`read_search`), and the board's candidates are
  compared with the host's exact scorer (harness/metrics/search.py) on the same templates: each candidate's score
  must be its true score and each rank's score the true k-best score, within float32 rounding (`SCORE_TOL`), so
  the lists agree up to the order of tied templates. A board that disagrees is refused, in one line.

The record (run.json `entries[].speed.search.<dataset>`, docs/results.md) has per gallery size the latency
statistics of single-probe search (count, p50/p90..., CI of the median), VALID/INVALID by the rules of inference
(harness/trackers/validity.py), the top-k check's counts, and `blas_threads`: the threads asked for with `--threads`
and those the board's BLAS reports using (harness/device/blas.py; "as requested" where it cannot be read).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Callable

import numpy as np

from harness.errors import InfrastructureError
from harness.jobs import STATUS_OK, BackendRequest, FileRef, InputArray, Job, LatencySettings, SearchSpec

K = 10                  # candidates per search on the board (rank-10, docs/metrics.md "Identification")
DISTRACTOR_FACTOR = 10  # the largest gallery timed: the watchlist's size times this, synthetic distractors added
SCORE_TOL = 1e-4        # float32 dot products of unit vectors of dimension <= 1024 are within ~1e-5 of exact
GALLERY_FILE, PROBES_FILE = "gallery.npy", "probes.npy"


def synthetic(n: int, dim: int, seed: int) -> np.ndarray:
    """n unit vectors uniform on the sphere (normalised Gaussian draws, Muller 1959), seeded."""
    x = np.random.default_rng((seed, n, dim)).standard_normal((n, dim))
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def build(entry: str, gallery: np.ndarray, probes: np.ndarray, probe_ids: list[str], folder: Path, *,
          latency: LatencySettings, seed: int, k: int = K, factor: int = DISTRACTOR_FACTOR,
          telemetry: tuple[str, ...] = ("psutil",), threads: int = 0) -> tuple[Job, np.ndarray]:
    """(the search job, the full gallery it sends) with its two files written into `folder`. `threads` > 0 (the run's
    `--threads`) bounds the board's BLAS threads (harness.jobs.blas_environment); 0 leaves numpy's default."""
    from harness.files import atomic_write_bytes
    from harness.models.fetch import sha256_file

    n, dim = gallery.shape
    full = np.concatenate([gallery, synthetic(n * (factor - 1), dim, seed)]) if factor > 1 else gallery
    folder.mkdir(parents=True, exist_ok=True)
    refs = []
    for name, arr in ((GALLERY_FILE, full), (PROBES_FILE, probes)):
        import io

        buf = io.BytesIO()
        np.save(buf, np.ascontiguousarray(arr, np.float32), allow_pickle=False)
        atomic_write_bytes(folder / name, buf.getvalue())
        refs.append(FileRef(name, sha256_file(folder / name)))
    sizes = tuple(sorted({n, len(full)}))
    job = Job(entry=entry, task="search", model=refs[0], layout=None,
              inputs=InputArray(file=refs[1], mean=(0.0,), scale=1.0),
              backend=BackendRequest(runtime="numpy", threads=int(threads)),
              samples=tuple((sid, i) for i, sid in enumerate(probe_ids)), pool_rows=tuple(range(len(probe_ids))),
              latency=latency, telemetry=telemetry, search=SearchSpec(k=min(k, n), sizes=sizes))
    return job, full


def unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float64)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def host_top_k(gallery: np.ndarray, probes: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The host scorer's top-k (exact scores, ties by position) of every probe, all templates L2-normalised as on the
    board: harness.metrics.search.search."""
    from harness.metrics.search import NO_MATE, SearchSettings, search

    res = search(unit(probes), unit(gallery), [NO_MATE] * len(probes), [0] * len(probes), 1, SearchSettings(k=k))
    return res.top_index, res.top_score


def compare(gallery: np.ndarray, probes: np.ndarray, board_index: np.ndarray, board_score: np.ndarray,
            probe_ids: tuple[str, ...], *, where: str) -> dict[str, Any]:
    """Check the board's top-k against the host scorer's on the same templates; InfrastructureError if they differ
    (beyond ties). Returns the check's counts."""
    from harness.metrics.search import quantize
    from harness.names import shown

    k = board_index.shape[1]
    host_index, host_score = host_top_k(gallery, probes, k)
    G, P = quantize(unit(gallery)), quantize(unit(probes))
    true = np.einsum("nkd,nd->nk", G[board_index], P)  # the exact score of each candidate the board named
    wrong_score = np.abs(true - board_score) > SCORE_TOL
    not_best = np.abs(host_score - true) > SCORE_TOL   # the candidate at rank j is not a true j-th best
    bad = (wrong_score | not_best).any(axis=1)
    if bad.any():
        i = int(np.argmax(bad))
        raise InfrastructureError(f"{where}: search top-{k} of {int(bad.sum())} of {len(bad)} probes differ from the "
                                  f"host scorer's (first: probe {shown(probe_ids[i])!r})")
    return {"probes": int(len(bad)), "k": int(k), "agree": int(len(bad) - bad.sum()),
            "same_order": int((host_index == board_index).all(axis=1).sum()), "score_tolerance": SCORE_TOL}


def record(ret, job: Job, result, check: dict, n_watchlist: int, *, min_duration_s: float,
           min_count: int) -> dict[str, Any]:
    """run.json's speed.search.<dataset>: per gallery size the single-probe latency and its validity."""
    from harness.trackers.contention import clean_record
    from harness.trackers.latency import LatencyStats
    from harness.trackers.validity import assess

    contention = clean_record(result.contention)
    telemetry = dict(result.telemetry or {})
    sizes = []
    for size, t in zip(ret.sizes, ret.timings):
        stats = LatencyStats.from_ms(t)
        sizes.append({"size": int(size), "synthetic": int(max(size - n_watchlist, 0)),
                      "single_stream": stats.to_dict(),
                      "validity": assess(stats, min_duration_s=min_duration_s, min_count=min_count,
                                         telemetry=telemetry, backend_check=dict(result.backend or {}),
                                         contention=contention if isinstance(contention, dict) else None)})
    return {"status": "ok", "k": job.search.k, "dim": ret.dim, "n_watchlist": int(n_watchlist),
            "n_probes": len(ret.sample_ids), "init_ms": result.init_ms, "first_search_ms": result.first_inference_ms,
            "sizes": sizes, "topk_check": check, "blas_threads": dict(ret.blas_threads),
            "cpu_util_pct": result.cpu_util_pct,
            "contention": contention, "memory": dict(result.memory or {})}


class DeviceSearch:
    """The callable harness.scoring hands each entry's own gallery and probes to during `bench run`:
    (entry record, dataset, gallery templates, probe templates, probe ids) -> the speed.search record."""

    def __init__(self, launcher, work: Path, *, latency: LatencySettings, seed: int,
                 telemetry: tuple[str, ...] = ("psutil",), threads: int = 0,
                 log: Callable[[str], None] = lambda m: None):
        self.launcher, self.work, self.latency, self.seed = launcher, Path(work), latency, seed
        self.telemetry, self.threads, self.log = telemetry, int(threads or 0), log

    def __call__(self, entry: str, dataset: str, gallery: np.ndarray, probes: np.ndarray,
                 probe_ids: list[str]) -> dict[str, Any]:
        from harness.launchers.trust import read_search

        if len(gallery) == 0 or len(probes) == 0:
            return {"status": "not_computable", "reason": "no gallery template or no probe to search"}
        name = f"{entry}--search--{dataset}"
        in_dir, out_dir = self.work / name / "in", self.work / name / "out"
        # a search is run whole: what an earlier attempt (a failed search, then --resume) left is not this one's
        shutil.rmtree(out_dir, ignore_errors=True)
        job, full = build(name, gallery, probes, probe_ids, in_dir, latency=self.latency, seed=self.seed,
                          telemetry=self.telemetry, threads=self.threads)
        self.log(f"{entry}: watchlist search on {dataset}: {len(probes)} probes, galleries of "
                 f"{', '.join(str(s) for s in job.search.sizes)} via {self.launcher.name}")
        result = self.launcher.launch(job, in_dir, out_dir)
        if result.status != STATUS_OK:
            return self._failed(entry, dataset, result.status, result.reason)
        try:
            ret = read_search(out_dir, job, result, n_gallery=len(full), dim=full.shape[1], where=self.launcher.where)
            check = compare(full, probes, ret.top_index, ret.top_score, ret.sample_ids, where=self.launcher.where)
        except InfrastructureError as exc:
            return self._failed(entry, dataset, "infrastructure-error", exc.message)
        return record(ret, job, result, check, len(gallery), min_duration_s=self.latency.min_duration_s,
                      min_count=self.latency.min_count)

    def _failed(self, entry: str, dataset: str, kind: str, reason: str | None) -> dict[str, Any]:
        """The record of a search that failed or was refused: its one line, logged, and no figures."""
        self.log(f"{entry}: watchlist search on {dataset} {kind}: {reason}")
        return {"status": "failed", "kind": kind, "reason": reason}
