"""Per-group DET curves: subject-weighted FNMR and FMR at every threshold, from one PairScores.

The rates are those of harness.metrics.verification.per_group_error_rates (same pairs, same weighting, match iff
score > threshold), evaluated at many thresholds at once: FNMR_g(t) is the mean over the group's subjects (with a
genuine pair) of each subject's share of genuine pairs scoring <= t, i.e. a weighted ECDF of the genuine scores
with weight 1/gn_s per pair; FMR_g(t) is the mean over the group's unordered subject pairs of that pair's share of
image pairs scoring > t, i.e. a weighted upper tail of the same-group impostor scores with weight 1/(m_s m_s')
per pair, over S_g (S_g - 1) / 2 subject pairs. Sorting each group's scores once makes every threshold a binary
search. tests/store/test_det.py checks the curves equal per_group_error_rates at its thresholds.
Drawn as NIST FRVT draws DET: FNMR against FMR, both axes logarithmic (Grother et al., NISTIR 8280).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from harness.metrics.verification import PairScores


@dataclass(frozen=True)
class GroupCurve:
    group: str
    thresholds: np.ndarray
    fmr: np.ndarray  # NaN where the group has no same-group impostor pair
    fnmr: np.ndarray  # NaN where the group has no genuine pair
    n_subjects: int


def _cum(scores: np.ndarray, weights: np.ndarray, thresholds: np.ndarray) -> tuple[np.ndarray, float]:
    """(sum of weights of scores <= t for each t, total weight)."""
    order = np.argsort(scores, kind="stable")
    cw = np.concatenate([[0.0], np.cumsum(weights[order])])
    return cw[np.searchsorted(scores[order], thresholds, side="right")], float(cw[-1])


def threshold_grid(scores: PairScores, n: int = 200, extra: Sequence[float] = ()) -> np.ndarray:
    """n thresholds at quantiles of every score, plus `extra` (e.g. the fp32 threshold, vendor cut-offs)."""
    every = np.concatenate([scores.genuine] + [a for a in scores.impostor.values()]).astype(np.float64)
    q = np.quantile(every, np.linspace(0.0, 1.0, n)) if every.size else np.empty(0)
    return np.unique(np.concatenate([q, np.asarray(extra, np.float64)]))


def group_curves(scores: PairScores, thresholds: np.ndarray) -> list[GroupCurve]:
    """One GroupCurve per group, in scores.groups order."""
    t = np.asarray(thresholds, np.float64)
    n_subj = scores.subjects.size
    gn = np.bincount(scores.genuine_subject, minlength=n_subj).astype(float)
    m = scores.subject_images.astype(float)
    out = []
    for g, name in enumerate(scores.groups):
        members = scores.subject_group == g
        in_g = members[scores.genuine_subject]
        subj = scores.genuine_subject[in_g]
        n_gen_subjects = int((members & (gn > 0)).sum())
        if n_gen_subjects:
            below, _ = _cum(scores.genuine[in_g].astype(np.float64), 1.0 / gn[subj], t)
            fnmr = below / n_gen_subjects
        else:
            fnmr = np.full(t.shape, np.nan)
        imp = scores.impostor.get((g, g), np.empty(0))
        s_g = int(members.sum())
        pairs = s_g * (s_g - 1) / 2.0
        if imp.size and pairs:
            codes = scores.impostor_pairs[(g, g)].astype(np.int64)
            w = 1.0 / (m[codes // n_subj] * m[codes % n_subj])
            below, total = _cum(imp.astype(np.float64), w, t)
            fmr = (total - below) / pairs
        else:
            fmr = np.full(t.shape, np.nan)
        out.append(GroupCurve(name, t, fmr, fnmr, s_g))
    return out
