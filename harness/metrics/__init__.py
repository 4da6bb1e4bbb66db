"""Fairness metrics: pure numpy/pandas/scipy, importable on a machine with no runtime installed.

rates: Wilson intervals and per-group rate rows; disparity: summaries over groups and their power;
verification: subject-weighted FMR/FNMR by group at scale, with subject-bootstrap intervals; precision_loss: variant against reference.
Formulas and references: docs/metrics.md.
"""

from __future__ import annotations

import importlib

# name -> submodule, imported on first use (PEP 562): `from harness.metrics.search import ...` on a Dask worker or
# a board then costs numpy only, not scipy.stats and pandas (6 s of imports on a loaded 2-core host, paid by each
# fresh worker on its first task).
_EXPORTS = {
    "disparity": ("Summary", "disparity_rows", "fdr", "garbe", "gini", "max_geomean", "max_min_diff", "max_min_ratio",
                  "min_detectable_difference", "verification_disparity_rows"),
    "precision_loss": ("decision_flips", "embedding_drift", "mcnemar_exact", "paired_deltas", "paired_error_rates",
                       "retention", "same_pairs", "threshold_transfer"),
    "rates": ("rate_row", "rate_rows", "wilson_interval", "zero_count_interval"),
    "verification": ("PairScores", "VerificationCounts", "pair_scores", "per_group_error_rates", "threshold_at_fmr",
                     "verification_counts"),
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}


def __getattr__(name: str):
    if name in _MODULE_OF:
        value = getattr(importlib.import_module(f"{__name__}.{_MODULE_OF[name]}"), name)
        globals()[name] = value
        return value
    try:
        return importlib.import_module(f"{__name__}.{name}")
    except ModuleNotFoundError as exc:
        if exc.name != f"{__name__}.{name}":
            raise
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_MODULE_OF))


__all__ = [
    "PairScores", "Summary", "decision_flips", "disparity_rows", "embedding_drift", "fdr", "garbe", "gini",
    "max_geomean", "max_min_diff", "max_min_ratio", "mcnemar_exact", "min_detectable_difference", "pair_scores",
    "paired_deltas", "paired_error_rates", "per_group_error_rates", "same_pairs", "rate_row", "rate_rows", "retention",
    "threshold_at_fmr", "threshold_transfer", "VerificationCounts", "verification_counts",
    "verification_disparity_rows", "wilson_interval", "zero_count_interval",
]
