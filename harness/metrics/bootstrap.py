"""Bootstrap resampling as multiplicities: the one resampling primitive of the metrics package.

A resample of n units with replacement is represented by how often each unit is drawn. Any statistic that is
a ratio of sums over units then becomes a matrix product (resamples x units) @ (units,), so B resamples cost
O(B x units) instead of rebuilding B tables.
"""

from __future__ import annotations

import numpy as np


def resample_counts(rng: np.random.Generator, n_units: int, n_draws: int) -> np.ndarray:
    """(n_draws x n_units) float counts: how often each unit is drawn in each resample of n_units draws.

    Equivalent to rng.multinomial(n_units, [1/n_units] * n_units, size=n_draws), done as one bincount over
    offset indices, which is much faster for thousands of units.
    """
    picks = rng.integers(0, n_units, size=(n_draws, n_units))
    picks += (np.arange(n_draws) * n_units)[:, None]
    return np.bincount(picks.ravel(), minlength=n_draws * n_units).reshape(n_draws, n_units).astype(float)


def percentile_ci(samples: np.ndarray, confidence: float) -> tuple[float | None, float | None]:
    """Percentile interval of the finite values (NaN resamples, e.g. a group with no pairs, are skipped)."""
    valid = samples[np.isfinite(samples)]
    if valid.size == 0:
        return None, None
    lo, hi = np.percentile(valid, [50 * (1 - confidence), 50 * (1 + confidence)])
    return float(lo), float(hi)
