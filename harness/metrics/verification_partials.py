"""Verification's counts as mergeable partial results (issue 18, "Scale: exact, mergeable"): any block order or
partition of the pairs gives the same threshold, the same counts and so the same rows.

A block is any set of pairs given as (score, subject a, subject b) arrays, a == b for a genuine pair. Two passes:

1. `ImpostorHistogram`: impostor scores counted per 2^-20-wide bin (bin = floor(score * 2^20), exact for any
   float64). Kept sparse (the bins holding a score, their counts): at most 2^21 + 1 bins for cosines, whatever
   the number of pairs. Partials add. It locates the bin holding the FMR-tuned threshold (the
   (k+1)-th largest impostor score, k = floor(target_fmr * N)) and how many impostors lie above that bin.
   A score is a float64 dot product of rows on the search scorer's 2^-20 grid, so it is a multiple of 2^-40, not
   of 2^-20: a count per 2^-20 bin locates the threshold but does not give it; pass 2 carries the exact scores of
   that one bin (a few per bin at 1e9 pairs) and the threshold is picked among them.
2. `PairCounts`: at each threshold t, per subject its genuine pairs scoring <= t (misses; a match is score > t,
   harness.metrics.verification), and per subject pair its impostor pairs scoring > t (exceedances), sparse
   (only subject pairs with one). For the tuned threshold, whose exact value is not known yet, the counts are
   taken at the top edge of its bin and the bin's own scores are kept with their subject (pair): `resolve` then
   moves the few that lie above t. Partials add (counts) and concatenate (the bin's scores).

Memory: O(bins + subjects + subject pairs with an exceedance + the threshold bin's scores), independent of the
number of comparisons; no per-pair array is kept. The subject bootstrap of the rates needs only these aggregates
(per-subject misses and per-subject-pair exceedances: harness.metrics.verification._Estimator), never a pair.

Subject pairs are oriented (group, subject) low to high and coded a * S + b, the order verification's
`pair_scores` files them in, so rows built from these counts equal those built from its per-pair arrays.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

BIN_SCALE = 2.0 ** 20  # bins per unit score: the search scorer's grid step (harness.metrics.search.GRID)


@dataclass(frozen=True, eq=False)
class Labels:
    """Who the rows are, known before any score: group names, sorted subjects, each subject's group index and
    image count. Pair totals follow from them (every pair of two rows is scored exactly once)."""

    group_by: str
    groups: tuple[str, ...]
    subjects: np.ndarray
    subject_group: np.ndarray
    subject_images: np.ndarray

    @property
    def n_subjects(self) -> int:
        return int(self.subjects.size)

    def genuine_pairs(self) -> np.ndarray:
        """Genuine pairs per subject: m (m - 1) / 2."""
        m = self.subject_images.astype(np.int64)
        return m * (m - 1) // 2

    def impostor_pairs(self) -> dict[tuple[int, int], int]:
        """Impostor pairs per group pair (gi <= gj): image pairs of two different subjects."""
        m = self.subject_images.astype(np.int64)
        n_groups = len(self.groups)
        images = np.bincount(self.subject_group, weights=m, minlength=n_groups).astype(np.int64)
        squares = np.bincount(self.subject_group, weights=m * m, minlength=n_groups).astype(np.int64)
        return {(i, j): int((images[i] ** 2 - squares[i]) // 2 if i == j else images[i] * images[j])
                for i in range(n_groups) for j in range(i, n_groups)}

    def pair_codes(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Codes a * S + b of impostor subject pairs, oriented so (group, subject) of a is below that of b."""
        a, b = np.asarray(a, np.int64), np.asarray(b, np.int64)
        ga, gb = self.subject_group[a], self.subject_group[b]
        swap = (ga > gb) | ((ga == gb) & (a > b))
        lo, hi = np.where(swap, b, a), np.where(swap, a, b)
        return lo * self.n_subjects + hi

    def cell_of(self, codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(group of a, group of b) of coded subject pairs."""
        a, b = np.divmod(codes, self.n_subjects)
        return self.subject_group[a], self.subject_group[b]


def score_bin(scores: np.ndarray) -> np.ndarray:
    """The 2^-20-wide bin of each score: floor(score * 2^20), exact (a power-of-two scale)."""
    return np.floor(np.asarray(scores, np.float64) * BIN_SCALE).astype(np.int64)


def _bin_top(b: int) -> float:
    """The lowest score above bin b."""
    return (b + 1) / BIN_SCALE


def _in_bin(s: np.ndarray, b: int | None) -> np.ndarray:
    """Mask of the scores in bin b (none when b is None)."""
    if b is None:
        return np.zeros(s.shape, bool)
    return (s >= b / BIN_SCALE) & (s < _bin_top(b))


def sum_by_key(keys: Sequence[np.ndarray], counts: Sequence[np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Sparse counts (key arrays with their count arrays; None: each key counts once) summed: sorted unique keys
    and their int64 totals. One np.bincount over the keys' range when they fill at least an eighth of it (O(n +
    range)), else over their ranks after a sort (O(n log n)). bincount's weights are float64: integer totals are
    exact below 2^53 (9e15 pairs)."""
    k = np.concatenate(keys).astype(np.int64, copy=False) if len(keys) != 1 else np.asarray(keys[0], np.int64)
    n = None if counts is None else np.concatenate(counts).astype(np.float64, copy=False)
    if not k.size:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    k = k.ravel()
    lo, hi = int(k.min()), int(k.max())
    if hi - lo < 8 * k.size:
        dense = np.bincount(k - lo, weights=n, minlength=hi - lo + 1)
        nz = np.flatnonzero(dense)
        return nz + lo, dense[nz].astype(np.int64)
    uniq, inv = np.unique(k, return_inverse=True)
    return uniq, np.bincount(inv, weights=n, minlength=uniq.size).astype(np.int64)


@dataclass(frozen=True)
class ImpostorHistogram:
    """Pass 1: impostor scores per bin, sparse: the bins holding a score (sorted) and their counts."""

    bins: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    counts: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))

    @classmethod
    def of(cls, scores: np.ndarray, a: np.ndarray, b: np.ndarray) -> "ImpostorHistogram":
        """The partial of any block of pairs (a == b: genuine, not counted)."""
        return cls.of_impostors(np.asarray(scores, np.float64)[np.asarray(a) != np.asarray(b)])

    @classmethod
    def of_impostors(cls, scores: np.ndarray) -> "ImpostorHistogram":
        return cls(*sum_by_key([score_bin(scores)]))

    @property
    def n(self) -> int:
        return int(self.counts.sum())

    def merge(self, other: "ImpostorHistogram") -> "ImpostorHistogram":
        """Two partials of disjoint pairs -> one. Commutative and associative."""
        return ImpostorHistogram.combine([self, other])

    @staticmethod
    def combine(parts: Sequence["ImpostorHistogram"]) -> "ImpostorHistogram":
        """Partials of disjoint pairs, in any order -> one."""
        return ImpostorHistogram(*sum_by_key([p.bins for p in parts], [p.counts for p in parts]))

    def locate(self, target_fmr: float) -> tuple[int, int, int]:
        """(bin, rank, k): the bin holding the (k+1)-th largest impostor score, k = floor(target_fmr * N), and its
        rank within that bin (0 = the bin's largest). Needs at least one impostor."""
        k = math.floor(target_fmr * self.n)
        from_top = np.cumsum(self.counts[::-1])
        j = int(np.searchsorted(from_top, k + 1))  # first top-down bin whose running count reaches k + 1
        above = int(from_top[j - 1]) if j else 0
        return int(self.bins[::-1][j]), k - above, k


def nth_largest(values: np.ndarray, rank: int) -> float:
    """The value of that rank (0 = the largest) among `values`, ties counted: the tuned threshold within its bin."""
    v = np.asarray(values, np.float64)
    return float(np.partition(v, v.size - 1 - rank)[v.size - 1 - rank])


def merge_all(parts: Iterable, combine, every: int = 16):
    """Fold partials with `combine` (a list of partials -> one), `every` at a time, so at most that many are held
    at once whatever the number of blocks. None when there are none."""
    held: list = []
    for p in parts:
        held.append(p)
        if len(held) >= every:
            held = [combine(held)]
    return combine(held) if held else None


@dataclass(frozen=True)
class Exceedances:
    """At one threshold: genuine misses per subject (score <= t), and impostor exceedances (score > t) per coded
    subject pair, sparse."""

    threshold: float
    misses: np.ndarray        # (S,) int64
    codes: np.ndarray         # sorted unique subject-pair codes with at least one exceedance
    counts: np.ndarray        # exceedances of each


@dataclass(frozen=True)
class PairCounts:
    """Pass 2: per explicit threshold, misses and exceedances; for a pending tuned threshold in bin `bin`, the
    same at the bin's top edge plus the bin's own scores (impostor: with pair code; genuine: with subject)."""

    thresholds: tuple[float, ...]
    bin: int | None
    n_subjects: int
    misses: np.ndarray                       # (len(thresholds) + pending, S) int64
    codes: tuple[np.ndarray, ...]            # per threshold (the pending edge last)
    counts: tuple[np.ndarray, ...]
    bin_impostor: tuple[np.ndarray, np.ndarray] = (np.zeros(0), np.zeros(0, np.int64))   # (scores, codes)
    bin_genuine: tuple[np.ndarray, np.ndarray] = (np.zeros(0), np.zeros(0, np.int64))    # (scores, subjects)

    @classmethod
    def of(cls, labels: Labels, scores: np.ndarray, a: np.ndarray, b: np.ndarray,
           thresholds: Sequence[float], bin: int | None = None) -> "PairCounts":
        """The partial of any block of pairs: scores with the subject index of each side (a == b: genuine)."""
        s = np.asarray(scores, np.float64)
        a, b = np.asarray(a, np.int64), np.asarray(b, np.int64)
        gen = a == b
        return cls.of_genuine(labels, s[gen], a[gen], thresholds, bin).merge(
            cls.of_impostors(labels, s[~gen], labels.pair_codes(a[~gen], b[~gen]), thresholds, bin))

    @staticmethod
    def _cuts(thresholds: Sequence[float], bin: int | None) -> list[tuple[float, bool]]:
        # the pending threshold's counts are taken at its bin's top edge: above it is > t, below it is <= t
        return [(float(t), False) for t in thresholds] + ([] if bin is None else [(_bin_top(bin), True)])

    @classmethod
    def of_genuine(cls, labels: Labels, scores: np.ndarray, subjects: np.ndarray, thresholds: Sequence[float],
                   bin: int | None = None) -> "PairCounts":
        """Genuine pairs only: a miss is a score <= t (verification's rule: a match is score > t)."""
        s, subj = np.asarray(scores, np.float64), np.asarray(subjects, np.int64)
        cuts = cls._cuts(thresholds, bin)
        n_subj = labels.n_subjects
        misses = np.zeros((len(cuts), n_subj), np.int64)
        for j, (t, edge) in enumerate(cuts):
            misses[j] = np.bincount(subj[s < t if edge else s <= t], minlength=n_subj)
        empty = tuple(np.zeros(0, np.int64) for _ in cuts)
        in_bin = _in_bin(s, bin)
        return cls(tuple(float(t) for t in thresholds), bin, n_subj, misses, empty, empty,
                   bin_genuine=(s[in_bin], subj[in_bin]))

    @classmethod
    def of_impostors(cls, labels: Labels, scores: np.ndarray, codes: np.ndarray, thresholds: Sequence[float],
                     bin: int | None = None) -> "PairCounts":
        """Impostor pairs only, with their oriented subject-pair codes (Labels.pair_codes): an exceedance is a
        score > t."""
        s, codes = np.asarray(scores, np.float64), np.asarray(codes)
        cuts = cls._cuts(thresholds, bin)
        if cuts:  # only scores some cut (or the pending bin) counts are looked at again: one pass over the tile
            keep = s >= min([t for t, _ in cuts] + ([] if bin is None else [bin / BIN_SCALE]))
            s, codes = s[keep], codes[keep]
        codes = codes.astype(np.int64, copy=False)
        sparse = [sum_by_key([codes[s >= t if edge else s > t]]) for t, edge in cuts]
        in_bin = _in_bin(s, bin)
        return cls(tuple(float(t) for t in thresholds), bin, labels.n_subjects,
                   np.zeros((len(cuts), labels.n_subjects), np.int64), tuple(c for c, _ in sparse),
                   tuple(n.astype(np.int64) for _, n in sparse), bin_impostor=(s[in_bin], codes[in_bin]))

    def merge(self, other: "PairCounts") -> "PairCounts":
        """Two partials of disjoint pairs -> one. Commutative and associative."""
        return PairCounts.combine([self, other])

    @staticmethod
    def combine(parts: Sequence["PairCounts"]) -> "PairCounts":
        """Partials of disjoint pairs, in any order -> one (the sparse counts re-summed once, not per merge)."""
        first = parts[0]
        if any((p.thresholds, p.bin, p.n_subjects) != (first.thresholds, first.bin, first.n_subjects) for p in parts):
            raise ValueError("merge: partials at different thresholds")
        sparse = [sum_by_key([p.codes[j] for p in parts], [p.counts[j] for p in parts])
                  for j in range(len(first.codes))]
        return PairCounts(first.thresholds, first.bin, first.n_subjects, sum(p.misses for p in parts),
                          tuple(c for c, _ in sparse), tuple(n for _, n in sparse),
                          tuple(np.concatenate([p.bin_impostor[i] for p in parts]) for i in range(2)),
                          tuple(np.concatenate([p.bin_genuine[i] for p in parts]) for i in range(2)))

    def at(self, j: int) -> Exceedances:
        """Counts at explicit threshold j."""
        return Exceedances(self.thresholds[j], self.misses[j], self.codes[j], self.counts[j])

    def tuned_threshold(self, rank: int) -> float:
        """The exact tuned threshold: the bin's impostor score of that rank (0 = largest), from pass 1's `locate`."""
        return nth_largest(self.bin_impostor[0], rank)

    def resolve(self, threshold: float) -> Exceedances:
        """Counts at the pending threshold, which lies in the bin: the edge's counts with the bin's scores above
        `threshold` moved (a genuine one is then no miss; an impostor one is an exceedance)."""
        if self.bin is None or score_bin(np.array([threshold]))[0] != self.bin:
            raise ValueError(f"resolve: threshold {threshold} is not in the pending bin {self.bin}")
        j = len(self.thresholds)
        g_s, g_a = self.bin_genuine
        misses = self.misses[j] - np.bincount(g_a[g_s > threshold], minlength=self.n_subjects)
        i_s, i_c = self.bin_impostor
        up = i_c[i_s > threshold]
        codes, counts = sum_by_key([self.codes[j], up], [self.counts[j], np.ones(up.size, np.int64)])
        return Exceedances(float(threshold), misses, codes, counts)
