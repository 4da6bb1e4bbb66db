"""Fairness metrics: pure numpy/pandas/scipy, importable on a machine with no runtime installed.

rates: Wilson intervals and per-group rate rows; disparity: summaries over groups and their power;
verification: subject-weighted FMR/FNMR by group at scale, with subject-bootstrap intervals; precision_loss: variant against reference.
Formulas and references: docs/metrics.md.
"""

from harness.metrics.disparity import (
    Summary, disparity_rows, fdr, garbe, gini, max_geomean, max_min_diff, max_min_ratio,
    min_detectable_difference, verification_disparity_rows,
)
from harness.metrics.precision_loss import (
    decision_flips, embedding_drift, mcnemar_exact, paired_deltas, paired_error_rates, retention, same_pairs,
    threshold_transfer,
)
from harness.metrics.rates import rate_row, rate_rows, wilson_interval, zero_count_interval
from harness.metrics.verification import (
    PairScores, pair_scores, per_group_error_rates, threshold_at_fmr,
)

__all__ = [
    "PairScores", "Summary", "decision_flips", "disparity_rows", "embedding_drift", "fdr", "garbe", "gini",
    "max_geomean", "max_min_diff", "max_min_ratio", "mcnemar_exact", "min_detectable_difference", "pair_scores",
    "paired_deltas", "paired_error_rates", "per_group_error_rates", "same_pairs", "rate_row", "rate_rows", "retention",
    "threshold_at_fmr", "threshold_transfer", "verification_disparity_rows", "wilson_interval", "zero_count_interval",
]
