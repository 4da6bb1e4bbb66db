"""The watchlist search on the device (issue 18): send a run's gallery templates to the board, time the search there
against gallery size and in the variant's storage precision, check what comes back against the host's scorer.

Host side of the "search" workload of the job contract (harness.jobs.SearchSpec, harness/device/search.py). For each
embedding entry and watchlist dataset of a run, once harness/watchlist.py has built that entry's own gallery (its
templates: enrolled people, then distractor faces, in the seeded order) and its probe templates:

- the job names the gallery sizes to time: the watchlist's own size and each of the run's `--search-sizes`
  (default DEFAULT_SIZES; at most harness.jobs.MAX_GALLERY), the storage precision of the entry's variant
  (fp32 -> float32, fp16 -> float16, int8 -> int8 codes with a float32 scale per template), and the seed of the
  synthetic templates that pad a gallery beyond the watchlist: the board draws them itself
  (harness.device.search.synthetic_blocks), so 10^6 templates never travel;
- the watchlist and probes travel as float32 .npy files through the launcher's usual content-addressed transfer;
  the board stores the watchlist in the precision, runs the accuracy pass over every searched probe, and per size
  builds the gallery, searches CHECK_PROBES seeded probes once and times single-probe search with the run's latency
  settings, recording the gallery's bytes and its RSS growth;
- the return is read only through harness/launchers/trust.py (`read_search`), and the board's candidates are
  compared with the host's exact scores on the SAME stored templates (the host stores them with the board's own
  functions and regenerates the synthetic rows from the seed, a block at a time): each candidate's score must be
  its true score and each rank's score the true k-best score, within float32 rounding (`SCORE_TOL`), so the lists
  agree up to the order of tied templates. A board that disagrees is refused, in one line. All probes are checked on
  the watchlist, CHECK_PROBES of them on every size;
- separately, a fidelity figure, not an error: per probe whether the stored gallery's top-1 (the board's) is a
  float32 top-1 of the same watchlist, as a rate over probes with every subject weighted once and a subject
  bootstrap interval (harness.metrics.identification.subject_rate_rows, as the identification rates).

The record (run.json `entries[].speed.search.<dataset>`, docs/results.md) has the precision, per gallery size the
latency statistics of single-probe search (count, p50/p90..., CI of the median), VALID/INVALID by the rules of
inference (harness/trackers/validity.py), the gallery's bytes and the worker's RSS growth, the size's top-k check,
the watchlist's top-k check, the top-1 fidelity against float32, and `blas_threads`: the threads asked for with
`--threads` and those the board's BLAS reports using (harness/device/blas.py; "as requested" where it cannot be read).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Callable

import numpy as np

from harness.errors import InfrastructureError
from harness.jobs import STATUS_OK, BackendRequest, FileRef, InputArray, Job, LatencySettings, SearchSpec

K = 10                  # candidates per search on the board (rank-10, docs/metrics.md "Identification")
DEFAULT_SIZES = (1_000, 10_000)  # gallery sizes timed besides the watchlist's own (`bench run --search-sizes`)
CHECK_PROBES = 8        # probes whose top-k on every gallery size the host checks (seeded sample of the searched)
SCORE_TOL = 1e-4        # float32 dot products of unit vectors of dimension <= 1024 are within ~1e-5 of exact
HOST_BLOCK = 65536      # gallery rows the host scores at a time while checking (bounded memory at 10^6 rows)
GALLERY_FILE, PROBES_FILE = "gallery.npy", "probes.npy"
FIDELITY_METRIC = "top1_differs_from_fp32"
TOO_LARGE = "gallery-too-large"  # the kind of a search the board refused: a size would not fit in its memory


def synthetic(n: int, dim: int, seed: int) -> np.ndarray:
    """The first n synthetic templates the board pads a gallery with (harness.device.search.synthetic_blocks)."""
    from harness.device.search import synthetic_blocks

    return np.concatenate([b for _, b in synthetic_blocks(n, dim, seed)]) if n else np.zeros((0, dim), np.float32)


def precision_of(precision: str | None, variant: str | None = None) -> str:
    """The storage precision of an entry's gallery: its variant's precision (the entry's `precision`, else read from
    the variant id `format-precision[@compiler]`) when fp32, fp16 or int8; fp32 for anything else."""
    from harness.jobs import SEARCH_PRECISIONS

    if precision is None and isinstance(variant, str):
        precision = variant.split("@", 1)[0].rsplit("-", 1)[-1]
    return precision if precision in SEARCH_PRECISIONS else "fp32"


def build(entry: str, gallery: np.ndarray, probes: np.ndarray, probe_ids: list[str], folder: Path, *,
          latency: LatencySettings, seed: int, k: int = K, sizes: tuple[int, ...] = DEFAULT_SIZES,
          precision: str = "fp32", n_check: int = CHECK_PROBES, telemetry: tuple[str, ...] = ("psutil",),
          threads: int = 0) -> Job:
    """The search job, its two files written into `folder`: the watchlist's size and `sizes` timed, the gallery in
    `precision`. `threads` > 0 (the run's `--threads`) bounds the board's BLAS threads
    (harness.jobs.blas_environment); 0 leaves numpy's default."""
    import io

    from harness.files import atomic_write_bytes
    from harness.models.fetch import sha256_file

    n = len(gallery)
    k = min(k, n)
    folder.mkdir(parents=True, exist_ok=True)
    refs = []
    for name, arr in ((GALLERY_FILE, gallery), (PROBES_FILE, probes)):
        buf = io.BytesIO()
        np.save(buf, np.ascontiguousarray(arr, np.float32), allow_pickle=False)
        atomic_write_bytes(folder / name, buf.getvalue())
        refs.append(FileRef(name, sha256_file(folder / name)))
    m = len(probe_ids)
    check = np.random.default_rng((seed, 18, m)).choice(m, size=min(n_check, m), replace=False)
    spec = SearchSpec(k=k, sizes=tuple(sorted({n} | {s for s in sizes if s >= k})), precision=precision,
                      seed=int(seed), check_rows=tuple(sorted(int(r) for r in check)))
    return Job(entry=entry, task="search", model=refs[0], layout=None,
               inputs=InputArray(file=refs[1], mean=(0.0,), scale=1.0),
               backend=BackendRequest(runtime="numpy", threads=int(threads)),
               samples=tuple((sid, i) for i, sid in enumerate(probe_ids)), pool_rows=tuple(range(m)),
               latency=latency, telemetry=telemetry, search=spec)


def _blocks(watchlist, size: int, seed: int):
    """(first row, float64 dequantised rows) of the gallery of `size` as the board stores it: the stored watchlist's
    rows, then the synthetic rows stored in its precision, HOST_BLOCK rows at a time."""
    from harness.device.search import store, synthetic_blocks

    n_w = min(size, len(watchlist))
    for b in range(0, n_w, HOST_BLOCK):
        yield b, watchlist.dequantised(b, min(b + HOST_BLOCK, n_w))
    for start, rows in synthetic_blocks(size - n_w, watchlist.codes.shape[1], seed):
        yield n_w + start, store(rows, watchlist.precision).dequantised()


def host_check(blocks, probes: np.ndarray, board_index: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray,
                                                                                      np.ndarray]:
    """(host top-k positions, their scores, the true scores of the board's candidates) of every probe over the
    gallery `blocks` yields (first row, float64 rows), one block of scores at a time: float64 dot products of the
    stored values (harness.metrics.search's top-k rule: score descending, position ascending)."""
    P = np.asarray(probes, np.float64)
    top_s, top_i = np.full((len(P), k), -np.inf), np.full((len(P), k), -1, np.int64)
    true = np.full(board_index.shape, np.nan)
    for b0, rows in blocks:
        s = P @ rows.T
        inside = (board_index >= b0) & (board_index < b0 + len(rows))
        r, c = np.nonzero(inside)
        true[r, c] = s[r, board_index[r, c] - b0]
        idx = np.broadcast_to(np.arange(b0, b0 + len(rows)), s.shape)
        cand_s, cand_i = np.concatenate([top_s, s], axis=1), np.concatenate([top_i, idx], axis=1)
        order = np.lexsort((cand_i, -cand_s), axis=1)[:, :k]  # harness.metrics.search.merge's rule, row by row
        top_s, top_i = np.take_along_axis(cand_s, order, axis=1), np.take_along_axis(cand_i, order, axis=1)
    return top_i, top_s, true


def _verdict(host_index, host_score, true, board_score, probe_ids, *, where: str, what: str) -> dict[str, Any]:
    """The check's counts; InfrastructureError when a candidate's score is not its true score or a rank's score is
    not the true k-best score (within SCORE_TOL), i.e. beyond the order of tied templates."""
    from harness.names import shown

    bad = ((np.abs(true - board_score) > SCORE_TOL) | ~np.isfinite(true)
           | (np.abs(host_score - true) > SCORE_TOL)).any(axis=1)
    k = board_score.shape[1]
    if bad.any():
        i = int(np.argmax(bad))
        raise InfrastructureError(f"{where}: search top-{k} {what}of {int(bad.sum())} of {len(bad)} probes differ "
                                  f"from the host scorer's (first: probe {shown(probe_ids[i])!r})")
    return {"probes": int(len(bad)), "k": int(k), "agree": int(len(bad) - bad.sum()), "score_tolerance": SCORE_TOL}


def compare(gallery: np.ndarray, probes: np.ndarray, board_index: np.ndarray, board_score: np.ndarray,
            probe_ids: tuple[str, ...], *, where: str, precision: str = "fp32") -> dict[str, Any]:
    """Check the board's top-k on the watchlist against the host's on the same stored templates;
    InfrastructureError if they differ (beyond ties). Returns the check's counts."""
    from harness.device.search import normalised, store

    W = store(normalised(gallery), precision)
    k = board_index.shape[1]
    host_index, host_score, true = host_check(_blocks(W, len(W), 0), normalised(probes), board_index, k)
    check = _verdict(host_index, host_score, true, board_score, probe_ids, where=where, what="")
    return {**check, "same_order": int((host_index == board_index).all(axis=1).sum())}


def compare_sizes(gallery: np.ndarray, probes: np.ndarray, ret, job: Job, *, where: str) -> list[dict[str, Any]]:
    """Per gallery size, the check of the board's top-k of the job's check probes against the host's on the same
    stored gallery (the synthetic rows regenerated from the job's seed); InfrastructureError if they differ."""
    from harness.device.search import normalised, store

    spec = job.search
    W = store(normalised(gallery), spec.precision)
    P = normalised(probes)[list(spec.check_rows)]
    ids = tuple(ret.sample_ids[r] for r in spec.check_rows)
    out = []
    for rec in ret.per_size:
        ci, cs = rec["check_index"], rec["check_score"]
        host_index, host_score, true = host_check(_blocks(W, rec["size"], spec.seed), P, ci, spec.k)
        out.append(_verdict(host_index, host_score, true, cs, ids, where=where,
                            what=f"on the gallery of {rec['size']:,} "))
    return out


def fidelity(gallery: np.ndarray, probes: np.ndarray, board_index: np.ndarray, precision: str,
             subjects: list[str] | None, groups: list[str] | None, group_by: str, *, n_boot: int,
             seed: int) -> dict[str, Any]:
    """How often the stored gallery's top-1 (the board's, checked) is not a float32 top-1 of the same watchlist: per
    probe 0/1 (its float32 score below the float32 best by more than SCORE_TOL, so ties are not counted), as rate
    rows over probes with every subject weighted once and a subject bootstrap interval (subject_rate_rows). A
    fidelity figure of the storage precision, not an error; for fp32 it is 0 by construction."""
    from harness.device.search import normalised
    from harness.metrics.identification import subject_rate_rows

    G, P = normalised(gallery).astype(np.float64), normalised(probes).astype(np.float64)
    top1 = board_index[:, :1]
    best_i, best_s, true = host_check([(0, G)], P, top1, 1)
    differs = (best_s[:, 0] - true[:, 0] > SCORE_TOL).astype(float)
    m = len(differs)
    rows = subject_rate_rows(differs, subjects if subjects is not None else [f"p{i}" for i in range(m)],
                             groups if groups is not None else ["all"] * m, metric=FIDELITY_METRIC,
                             group_by=group_by, n_boot=n_boot, seed=seed,
                             context={"precision": precision, "reference": "fp32"})
    return {"metric": FIDELITY_METRIC, "precision": precision, "probes": m, "differs": int(differs.sum()),
            "subject_weighted": subjects is not None, "rows": rows}


def record(ret, job: Job, result, check: dict, n_watchlist: int, *, min_duration_s: float, min_count: int,
           size_checks: list[dict] | None = None, top1: dict | None = None) -> dict[str, Any]:
    """run.json's speed.search.<dataset>: the precision and, per gallery size, the single-probe latency, its
    validity, the gallery's bytes, the worker's RSS growth and the size's top-k check."""
    from harness.trackers.contention import clean_record
    from harness.trackers.latency import LatencyStats
    from harness.trackers.validity import assess

    contention = clean_record(result.contention)
    telemetry = dict(result.telemetry or {})
    per_size = {r["size"]: r for r in ret.per_size}
    checks = dict(zip([r["size"] for r in ret.per_size], size_checks or []))
    sizes = []
    for size, t in zip(ret.sizes, ret.timings):
        stats = LatencyStats.from_ms(t)
        row = {"size": int(size), "synthetic": int(max(size - n_watchlist, 0)),
               "single_stream": stats.to_dict(),
               "validity": assess(stats, min_duration_s=min_duration_s, min_count=min_count,
                                  telemetry=telemetry, backend_check=dict(result.backend or {}),
                                  contention=contention if isinstance(contention, dict) else None)}
        mem = per_size.get(size)
        if mem is not None:
            row["memory"] = {"gallery_bytes": mem["gallery_bytes"], "rss_growth_mb": mem["rss_growth_mb"],
                             "rss_before_mb": mem["rss_before_mb"], "build_ms": mem["build_ms"]}
        if size in checks:
            row["topk_check"] = checks[size]
        sizes.append(row)
    out = {"status": "ok", "k": job.search.k, "dim": ret.dim, "precision": ret.precision,
           "n_watchlist": int(n_watchlist), "n_probes": len(ret.sample_ids), "init_ms": result.init_ms,
           "first_search_ms": result.first_inference_ms, "seed": job.search.seed, "sizes": sizes,
           "topk_check": check, "blas_threads": dict(ret.blas_threads), "cpu_util_pct": result.cpu_util_pct,
           "contention": contention, "memory": dict(result.memory or {})}
    if top1 is not None:
        out["top1_vs_fp32"] = top1
    return out


class DeviceSearch:
    """The callable harness.scoring hands each entry's own gallery and probes to during `bench run`:
    (entry, dataset, gallery templates, probe templates, probe ids, precision, probe subjects and groups) -> the
    speed.search record. `sizes`: the run's `--search-sizes` (timed besides the watchlist's own size)."""

    def __init__(self, launcher, work: Path, *, latency: LatencySettings, seed: int,
                 telemetry: tuple[str, ...] = ("psutil",), threads: int = 0, sizes: tuple[int, ...] = DEFAULT_SIZES,
                 n_boot: int = 1000, log: Callable[[str], None] = lambda m: None):
        self.launcher, self.work, self.latency, self.seed = launcher, Path(work), latency, seed
        self.telemetry, self.threads, self.log = telemetry, int(threads or 0), log
        self.sizes, self.n_boot = tuple(sizes), int(n_boot)

    def __call__(self, entry: str, dataset: str, gallery: np.ndarray, probes: np.ndarray,
                 probe_ids: list[str], *, precision: str | None = "fp32", variant: str | None = None,
                 subjects: list[str] | None = None, groups: list[str] | None = None,
                 group_by: str = "all") -> dict[str, Any]:
        from harness.launchers.trust import read_search

        if len(gallery) == 0 or len(probes) == 0:
            return {"status": "not_computable", "reason": "no gallery template or no probe to search"}
        precision = precision_of(precision, variant)
        name = f"{entry}--search--{dataset}"
        in_dir, out_dir = self.work / name / "in", self.work / name / "out"
        # a search is run whole: what an earlier attempt (a failed search, then --resume) left is not this one's
        shutil.rmtree(out_dir, ignore_errors=True)
        job = build(name, gallery, probes, probe_ids, in_dir, latency=self.latency, seed=self.seed,
                    sizes=self.sizes, precision=precision, telemetry=self.telemetry, threads=self.threads)
        self.log(f"{entry}: watchlist search on {dataset}: {len(probes)} probes, {precision} galleries of "
                 f"{', '.join(str(s) for s in job.search.sizes)} via {self.launcher.name}")
        result = self.launcher.launch(job, in_dir, out_dir)
        if result.status != STATUS_OK:
            refused = isinstance(result.search, dict) and result.search.get("refused") == "memory"
            return self._failed(entry, dataset, TOO_LARGE if refused else result.status, result.reason)
        try:
            ret = read_search(out_dir, job, result, n_gallery=len(gallery), dim=gallery.shape[1],
                              where=self.launcher.where)
            check = compare(gallery, probes, ret.top_index, ret.top_score, ret.sample_ids,
                            where=self.launcher.where, precision=precision)
            size_checks = compare_sizes(gallery, probes, ret, job, where=self.launcher.where)
        except InfrastructureError as exc:
            return self._failed(entry, dataset, "infrastructure-error", exc.message)
        top1 = fidelity(gallery, probes, ret.top_index, precision, subjects, groups, group_by, n_boot=self.n_boot,
                        seed=self.seed)
        return record(ret, job, result, check, len(gallery), min_duration_s=self.latency.min_duration_s,
                      min_count=self.latency.min_count, size_checks=size_checks, top1=top1)

    def _failed(self, entry: str, dataset: str, kind: str, reason: str | None) -> dict[str, Any]:
        """The record of a search that failed or was refused: its one line, logged, and no figures."""
        self.log(f"{entry}: watchlist search on {dataset} {kind}: {reason}")
        return {"status": "failed", "kind": kind, "reason": reason}
