"""The on-board watchlist search latency and memory as report cells (issue 18): one row per entry, dataset and gallery
size, with the gallery's storage precision.

Cells of harness.results.rows.search_speed_records, the projection `bench export` and the PostgreSQL store use,
shown beside the entry's own inference p50 (speed.single_stream) so the cost of the search on the device reads
against the cost of the embedding that feeds it. Used by the console after `bench run` and by the report's
"Identification (1:N)" section (harness/report/identification.py); light (no charts) so the console can import it.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from harness.results.rows import search_speed_records

SEARCH_SPEED_HEADERS = ("gallery", "synthetic", "precision", "n", "search p50 ms", "p50 95% CI", "p90 ms", "p99 ms",
                        "validity", "gallery MiB", "RSS growth MiB", "top-k = host", "BLAS threads", "inference p50 ms")
# which cells are numbers (right-aligned in the HTML report)
SEARCH_SPEED_NUMERIC = (True, True, False, True, True, True, True, True, False, True, True, True, False, True)
NOTE = ("Single-probe search on the board (dot products with every template of the gallery, then the top 10; "
        "timed with the run's warm-up, count and duration rules): count n, median with its distribution-free 95% "
        "interval, p90, p99, and VALID/INVALID by the rules of inference. Templates are stored on the board in the "
        "variant's precision (fp32: float32; fp16: float16; int8: symmetric int8 codes with a float32 scale per "
        "template, scores dequantised). Galleries beyond the watchlist are padded with seeded synthetic templates "
        "drawn on the board (their number: synthetic). gallery MiB: the stored templates' bytes; RSS growth MiB: the "
        "worker's resident memory growth while building and searching that gallery. top-k = host: probes whose "
        "candidates equal the host scorer's on the same stored templates (every probe on the watchlist, a seeded "
        "sample on the other sizes). BLAS threads: asked for with --threads (used: as the board's BLAS reports it).")
_MIB = float(1 << 20)


def _ms(v: Any) -> str:
    """Milliseconds: four significant digits below 1 ms (a search of a small gallery takes tens of microseconds),
    three decimals above."""
    if not isinstance(v, (int, float)) or isinstance(v, bool):
        return "-"
    return f"{v:.4g}" if abs(v) < 1 else f"{v:.3f}"


def search_speed_cells(entry: Mapping[str, Any]) -> Iterator[tuple[str, list[str]]]:
    """(dataset, cells under SEARCH_SPEED_HEADERS) per row of the entry's search_speed_records; a failed or not
    computable search is one row whose first latency cell says why."""
    infer = _ms(((entry.get("speed") or {}).get("single_stream") or {}).get("p50_ms"))
    for r in search_speed_records(entry):
        if r.get("status") != "ok":
            yield r["dataset"], ["-", "-", "-", "-", f"{r.get('status')}: {r.get('reason')}", "", "", "", "", "", "",
                                 "", "", infer]
            continue
        ci = (f"[{_ms(r['p50_ci_lo_ms'])}, {_ms(r['p50_ci_hi_ms'])}]" if r.get("p50_ci_lo_ms") is not None
              else "-")
        threads = (f"{r['blas_threads_requested']} (used: {r['blas_threads_used']})"
                   if r.get("blas_threads_requested") is not None else "-")
        size_mb = f"{r['gallery_bytes'] / _MIB:.3g}" if isinstance(r.get("gallery_bytes"), int) else "-"
        growth = f"{r['rss_growth_mb']:.3g}" if isinstance(r.get("rss_growth_mb"), float) else "-"
        yield r["dataset"], [f"{r['gallery_size']:,}", f"{r['synthetic']:,}", str(r.get("precision") or "-"),
                             str(r.get("count")), _ms(r["p50_ms"]), ci, _ms(r["p90_ms"]), _ms(r["p99_ms"]),
                             str(r.get("validity")), size_mb, growth, f"{r.get('topk_agree')}/{r.get('topk_probes')}",
                             threads, infer]


def fidelity_line(entry: Mapping[str, Any], dataset: str) -> str | None:
    """One sentence on the board's stored gallery against float32 (speed.search.<dataset>.top1_vs_fp32,
    harness/search_job.py `fidelity`): overall, the probes whose stored top-1 is not a float32 top-1, with the
    subject-weighted rate and its interval; None without it."""
    rec = ((entry.get("speed") or {}).get("search") or {}).get(dataset)
    top1 = rec.get("top1_vs_fp32") if isinstance(rec, Mapping) else None
    rows = top1.get("rows") if isinstance(top1, Mapping) else None
    overall = rows[0] if isinstance(rows, list) and rows and isinstance(rows[0], Mapping) else None
    if overall is None or overall.get("value") is None:
        return None
    pct = lambda v: f"{100 * v:.2f}%" if isinstance(v, (int, float)) else "-"  # noqa: E731
    return (f"Stored in {top1.get('precision')}, the watchlist's top-1 is not a float32 top-1 for "
            f"{overall.get('k')} of {overall.get('n')} probes: {pct(overall.get('value'))} "
            f"[{pct(overall.get('ci_lo'))}, {pct(overall.get('ci_hi'))}] with each of {overall.get('n_subjects')} "
            f"people weighted once (a fidelity figure of the storage precision, not an error; per group in the CSV "
            f"and the export, config device_search).")
