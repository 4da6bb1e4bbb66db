"""A run's headline summary: the run.json document without the per-group rows, each entry carrying the figures
every view shows (harness.report.summary.EntrySummary) already computed. Stored beside each run in a lab's
PostgreSQL store (efb_runs.headline), so `bench compare` over a hundred nightly runs reads a few kB per run
instead of parsing and summarising every run.json (docs/results.md).

The headline is derived from the stored document at push time, by the same summarize() every view uses, so a
headline and a full read always agree (tests/store/test_store_postgres.py checks equality); a run pushed before
headlines existed has none and is read in full.
"""

from __future__ import annotations

from typing import Any

HEADLINE_KEY = "headline_summary"  # the precomputed EntrySummary fields on each headline entry
_HEAVY = ("metrics", "acquisition", "stages")  # what compare never reads from an entry


def headline_doc(doc: dict[str, Any]) -> dict[str, Any]:
    """The headline of one run.json document (see module docstring)."""
    from harness.report.summary import summarize
    from harness.results.store import Run

    run = Run(path=None, doc=doc)  # type: ignore[arg-type]
    entries = []
    for e in doc.get("entries", []):
        light = {k: v for k, v in e.items() if k not in _HEAVY}
        light[HEADLINE_KEY] = summarize(run, e).fields()
        entries.append(light)
    return {k: v for k, v in doc.items() if k not in ("entries", "pipeline_sensitivity")} | {"entries": entries,
                                                                                            "headline": True}
