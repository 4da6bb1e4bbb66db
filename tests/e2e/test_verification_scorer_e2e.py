"""Issue 18: verification scores with the 1:N search's exact scorer (grid rows, float64 `similarity`), and on the
shared data (a real `bench run` of mobilefacenet onnx-fp32 over london-frl) every FMR/FNMR row -- counts, rates,
intervals -- is the one the previous float32 cosine path gave, the tuned threshold within 2^-20 of its old value;
and no block size or row order changes a score, a count or the threshold."""

from __future__ import annotations

import contextlib
import copy
import io
from pathlib import Path

import numpy as np
import pytest

from harness import metrics, scoring
from harness.cli import main
from harness.metrics import verification
from harness.metrics.search import GRID, quantize
from harness.results.store import load_run
from harness.scenarios.orchestrate import RunConfig
from harness.watchlist import entry_embeddings

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

ENTRY = "mobilefacenet--onnx-fp32"
DATASET = "london-frl"
RATE_KEYS = ("metric", "group_by", "group", "threshold_kind", "target_fmr", "n", "k", "value", "ci_lo", "ci_hi",
             "ci_method", "unit", "n_units", "n_subjects", "pair_value", "pair_ci_lo", "pair_ci_hi", "n_boot",
             "n_valid", "small", "status", "reason")


def _previous_rows(emb: np.ndarray) -> np.ndarray:
    """The normaliser verification used before issue 18: float32 unit rows, so `similarity` multiplies them in
    float32 (the old `e @ e.T`), the scores stay float32 and nothing is put on the grid."""
    e = np.asarray(emb, dtype=np.float32)
    norms = np.linalg.norm(e, axis=1, keepdims=True)
    return e / norms


@pytest.fixture(scope="module")
def london_run(built_packs, data_root, tmp_path_factory):
    results = tmp_path_factory.mktemp("results")
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        code = main(["run", "--target", "cpu", "--model", "mobilefacenet", "--variant", "onnx-fp32",
                     "--dataset", DATASET, "--min-duration", "0.2", "--min-count", "20", "--bootstrap", "200",
                     "--threads", "1", "--results-dir", str(results), "--cache-dir", str(built_packs),
                     "--data-root", str(data_root), "--no-build"])
    assert code == 0
    return load_run(Path(out.getvalue().strip().splitlines()[-1]))


@pytest.fixture(scope="module")
def london_embeddings(london_run):
    """(ok samples of the entry on london-frl, their embeddings as the run stored them)."""
    df = scoring.load_samples(london_run.path, ENTRY)
    emb = entry_embeddings(london_run.path, ENTRY, df, scoring._entry_records(london_run.path, ENTRY, None)[1])
    ok = ((df["status"] == "ok") & (df["dataset"] == DATASET)).to_numpy()
    return df[ok].reset_index(drop=True), emb[ok]


def _brute_force_threshold(emb: np.ndarray, subjects: np.ndarray, target_fmr: float) -> float:
    """The documented rule, by hand: rows re-normalised in float64 and put on the 2^-20 grid, every impostor pair
    one float64 dot product, t = the (k+1)-th largest, k = floor(target_fmr * N)."""
    e = np.asarray(emb, np.float64)
    g = quantize(e / np.linalg.norm(e, axis=1, keepdims=True))
    i, j = np.triu_indices(len(g), 1)
    imp = np.einsum("ij,ij->i", g[i], g[j])[subjects[i] != subjects[j]]
    k = int(np.floor(target_fmr * imp.size))
    return float(np.sort(imp)[::-1][k])


def _score(run) -> dict:
    return scoring.score_run(run.path, copy.deepcopy(run.doc), RunConfig.from_dict(run.doc["settings"]))


def _entry(doc: dict) -> dict:
    return next(e for e in doc["entries"] if e["entry"] == ENTRY)


def test_rows_identical_to_the_previous_float32_path(london_run, london_embeddings, monkeypatch):
    now = _entry(_score(london_run))
    with monkeypatch.context() as m:
        m.setattr(verification, "_grid_rows", _previous_rows)
        before = _entry(_score(london_run))
    t_now = now["metrics"]["verification"][DATASET]["threshold"]
    t_before = before["metrics"]["verification"][DATASET]["threshold"]
    assert abs(t_now - t_before) <= GRID
    df, emb = london_embeddings
    target = now["metrics"]["verification"][DATASET]["target_fmr"]
    assert t_now == _brute_force_threshold(emb, df["subject"].astype(str).to_numpy(), target) != t_before
    rows = [[r for r in e["metrics"]["rates"] if r["metric"] in ("fmr", "fnmr", "fmr_cross")] for e in (now, before)]
    assert len(rows[0]) == len(rows[1]) > 100
    for metric in ("fmr", "fnmr"):  # errors on both sides, so the counts are not trivially equal
        assert any(r["k"] for r in rows[0] if r["metric"] == metric)
    for a, b in zip(*rows):
        assert {k: a.get(k) for k in RATE_KEYS} == {k: b.get(k) for k in RATE_KEYS}
        if a["threshold_kind"] == "fixed":
            assert a["threshold"] == b["threshold"]
        else:
            assert (a["threshold"], b["threshold"]) == (t_now, t_before)


def test_counts_do_not_depend_on_block_size_or_row_order(london_embeddings):
    df, emb = london_embeddings
    subjects = df["subject"].astype(str).to_numpy()
    groups = df["ethnicity"].astype(str).to_numpy()
    base = metrics.pair_scores(emb, subjects, groups, group_by="ethnicity")
    t = metrics.threshold_at_fmr(base, 1e-3)
    want = metrics.per_group_error_rates(base, threshold=t, fixed_thresholds=(0.8,), n_boot=100)
    order = np.random.default_rng(3).permutation(len(df))
    for block_rows, perm in ((1, order), (7, order[::-1]), (4096, np.arange(len(df)))):
        s = metrics.pair_scores(emb[perm], subjects[perm], groups[perm], group_by="ethnicity", block_rows=block_rows)
        assert np.array_equal(np.sort(s.genuine), np.sort(base.genuine))
        assert all(np.array_equal(np.sort(s.impostor[k]), np.sort(base.impostor[k])) for k in base.impostor)
        assert metrics.threshold_at_fmr(s, 1e-3) == t
        assert metrics.per_group_error_rates(s, threshold=t, fixed_thresholds=(0.8,), n_boot=100) == want


def test_counts_from_mergeable_partials_give_the_per_pair_rows(london_embeddings):
    """What scoring now uses (verification_counts: an impostor histogram, then per-subject and per-subject-pair
    counts, no per-pair array) gives the threshold and every row the per-pair path gives, on the shared data."""
    df, emb = london_embeddings
    subjects = df["subject"].astype(str).to_numpy()
    groups = df[["ethnicity", "gender"]].astype(str).agg("*".join, axis=1).to_numpy()
    per_pair = metrics.pair_scores(emb, subjects, groups, group_by="ethnicity*gender")
    t = metrics.threshold_at_fmr(per_pair, 1e-3)
    want = metrics.per_group_error_rates(per_pair, threshold=t, fixed_thresholds=(0.8, 0.95), n_boot=100)
    for block_rows in (7, 1024):
        counts = metrics.verification_counts(emb, subjects, groups, group_by="ethnicity*gender", target_fmr=1e-3,
                                             thresholds=(0.8, 0.95), block_rows=block_rows)
        assert counts.tuned == t
        assert metrics.per_group_error_rates(counts, threshold=t, fixed_thresholds=(0.8, 0.95), n_boot=100) == want
    assert any(r["k"] for r in want if r["metric"] == "fmr") and any(r["k"] for r in want if r["metric"] == "fnmr")
