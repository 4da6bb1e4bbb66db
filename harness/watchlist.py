"""Score a run's watchlist (1:N) searches: stored embeddings -> galleries, searches, identification rows.

Host side, after the entries ran (or later, `bench score`): it reads only the run folder's per-sample records and
embedding arrays, and the split recorded in run.json (data.datasets[].identification, harness/data/watchlist.py).

Gallery: one template per enrolled person, the re-normalised mean of the embeddings of the photos the card's
gallery rule selects (a multi-image enrolment template; with the London views it is the one front neutral photo),
plus one template per distractor face. A person whose every gallery photo failed to acquire is not enrolled: their
probes are left out and counted ("n_not_enrolled"). Templates are put in one seeded order, shared by every
variant, so nested galleries are the same people for fp32 and int8.

Precision on the device (issue 18): each variant is scored twice, its probes against the fp32 reference's gallery
("reference_gallery": an fp32 watchlist searched by int8 probes) and against its own gallery ("own_gallery": an
all-int8 system), both at the reference's thresholds, with per-group decision flips and McNemar p against fp32.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from harness.data.watchlist import WatchlistSplit
from harness.metrics import identification as ident
from harness.metrics.precision_loss import decision_flips
from harness.metrics.search import SearchSettings, mate_rank, search

RANK_R = 1        # FNIR's rank (FRVT's default: the mate must be the first candidate)
TOP_K = 20        # candidates kept per search (rank-k hit rate uses k = RANK_K)
RANK_K = 10


@dataclass
class Searches:
    """Per probe (rows of `probes`): best candidate score, its gallery group, the mate's score and rank."""

    probes: pd.DataFrame        # sample_id, subject, role, group columns, _group
    top1: np.ndarray
    top1_group: np.ndarray
    mate_score: np.ndarray
    rank: np.ndarray
    hist: np.ndarray
    groups: list[str]
    prefix_max: np.ndarray
    sizes: tuple[int, ...]
    n_gallery: int
    n_distractors: int
    n_not_enrolled: int
    templates: tuple | None = None  # (gallery n x d, searched probes m x d, their ids) for harness/search_job.py


def _label(frame: pd.DataFrame, group_by: list[str]) -> pd.Series:
    return frame[group_by].astype(str).agg("*".join, axis=1) if group_by else pd.Series("all", index=frame.index)


def gallery(frame: pd.DataFrame, emb: np.ndarray, roles: pd.Series, distractors: pd.DataFrame | None,
            dis_emb: np.ndarray | None, group_by: list[str], dis_group_by: list[str], seed: int,
            dataset: str, distractor_dataset: str | None):
    """(templates (n x d), template keys, template group labels) in the seeded order."""
    ok = (frame["status"] == "ok").to_numpy() & (roles == "gallery").to_numpy() & np.isfinite(emb).all(axis=1)
    keys, vecs, labels = [], [], []
    labels_of = _label(frame, group_by)
    for subject, idx in frame[ok].groupby("subject", sort=True).groups.items():
        pos = frame.index.get_indexer(idx)
        v = emb[pos].mean(axis=0)
        keys.append(f"{dataset}:{subject}")
        vecs.append(v / np.linalg.norm(v))
        labels.append(f"{dataset}:{labels_of.iloc[pos[0]]}")
    n_dis = 0
    if distractors is not None and len(distractors):
        d_ok = (distractors["status"] == "ok").to_numpy() & np.isfinite(dis_emb).all(axis=1)
        d_labels = _label(distractors, dis_group_by)
        for pos in np.nonzero(d_ok)[0]:
            keys.append(f"{distractor_dataset}:{distractors['image'].iloc[pos]}")
            vecs.append(dis_emb[pos] / np.linalg.norm(dis_emb[pos]))
            labels.append(f"{distractor_dataset}:{d_labels.iloc[pos]}")
            n_dis += 1
    order = np.argsort(np.array(keys, dtype=object), kind="stable")
    order = order[np.random.default_rng(seed).permutation(order.size)]
    dim = emb.shape[1] if emb.ndim == 2 else 0
    G = np.array(vecs, np.float64).reshape(-1, dim)[order]
    return G, [keys[i] for i in order], np.array([labels[i] for i in order], dtype=object), n_dis


def run_searches(frame: pd.DataFrame, probe_emb: np.ndarray, gallery_emb: np.ndarray, split: WatchlistSplit,
                 distractors: pd.DataFrame | None, dis_emb: np.ndarray | None, group_by: list[str],
                 dis_group_by: list[str], seed: int, thresholds: tuple[float, ...] = (), searcher=None) -> Searches:
    """Every probe of `frame` (one dataset's records) searched against the gallery made from `gallery_emb`.
    `searcher`: harness.metrics.search.search (default) or a cluster's (harness/search_cluster.py)."""
    roles = split.roles(frame["image"], frame["subject"].astype(str))
    G, keys, g_labels, n_dis = gallery(frame, gallery_emb, roles, distractors, dis_emb, group_by, dis_group_by,
                                       seed, split.dataset, split.rules.distractors)
    position = {k: i for i, k in enumerate(keys)}
    is_probe = roles.isin(["mated", "nonmated"]).to_numpy()
    mate = np.array([position.get(f"{split.dataset}:{s}", -1) if r == "mated" else -1
                     for s, r in zip(frame["subject"].astype(str), roles)])
    not_enrolled = is_probe & (roles == "mated").to_numpy() & (mate < 0)
    keep = is_probe & ~not_enrolled
    probes = frame[keep].assign(role=roles[keep].to_numpy(), _group=_label(frame, group_by)[keep].to_numpy())
    probes = probes.reset_index(drop=True)
    p_emb = probe_emb[keep]
    searched = (probes["status"] == "ok").to_numpy() & np.isfinite(p_emb).all(axis=1)
    group_names = sorted(set(probes["_group"]))
    gcode = {g: i for i, g in enumerate(group_names)}
    n = len(probes)
    top1, mate_score = np.full(n, -np.inf), np.full(n, -np.inf)
    rank = np.full(n, TOP_K + 1)
    top1_group = np.full(n, None, dtype=object)
    sizes = ident.nested_sizes(len(G))
    prefix = np.full((n, len(sizes)), -np.inf)
    settings = SearchSettings(k=TOP_K, thresholds=thresholds, sizes=sizes)
    hist = np.zeros((len(group_names), settings.bins), np.int64)
    if searched.any() and len(G):
        codes = [gcode[g] for g in probes["_group"][searched]]
        res = (searcher or search)(p_emb[searched], G, mate[keep][searched], codes, len(group_names), settings)
        top1[searched] = res.top_score[:, 0]
        idx = res.top_index[:, 0]
        top1_group[searched] = np.where(idx >= 0, g_labels[np.maximum(idx, 0)], None)
        mate_score[searched] = res.mate_score
        rank[searched] = mate_rank(res)
        prefix[searched] = res.prefix_max
        hist = res.hist
    return Searches(probes, top1, top1_group, mate_score, rank, hist, group_names, prefix, sizes, len(G), n_dis,
                    int(not_enrolled.sum()),
                    (G, p_emb[searched], [str(x) for x in probes["sample_id"][searched]]))


def rows_at(s: Searches, thresholds: list[dict], group_by: list[str], *, n_boot: int, seed: int) -> dict:
    """Identification rows of one search configuration at each threshold, plus the threshold-free hit rates."""
    gb = "*".join(group_by)
    mated = (s.probes["role"] == "mated").to_numpy()
    nonmated = ~mated
    subj, grp = s.probes["subject"].astype(str).to_numpy(), s.probes["_group"].to_numpy()
    rows, false_rows, size_rows, model_rows = [], [], [], []
    for name, success in (("rank1_hit", s.rank <= 1), (f"rank{RANK_K}_hit", s.rank <= RANK_K)):
        rows += ident.subject_rate_rows(~success[mated], subj[mated], grp[mated], metric=name, group_by=gb,
                                        n_boot=n_boot, seed=seed, context={"threshold": None, "rank": None})
        for r in rows[-len(set(grp[mated].tolist())) - 1:]:  # stored as a miss rate: turn into the hit rate
            if r.get("value") is not None:
                r.update(value=1 - r["value"], ci_lo=1 - r["ci_hi"], ci_hi=1 - r["ci_lo"], k=r["n"] - r["k"],
                         search_value=1 - r["search_value"])
    for t in thresholds:
        ctx = {"threshold": t["value"], "threshold_kind": t["kind"]}
        fp, miss = ident.search_outcomes(s.top1, s.mate_score, s.rank, t["value"], RANK_R)
        rows += ident.subject_rate_rows(fp[nonmated], subj[nonmated], grp[nonmated], metric="fpir", group_by=gb,
                                        n_boot=n_boot, seed=seed, context=ctx)
        rows += ident.subject_rate_rows(miss[mated], subj[mated], grp[mated], metric="fnir", group_by=gb,
                                        n_boot=n_boot, seed=seed, context=ctx | {"rank": RANK_R})
        false_rows += ident.false_candidate_rows(grp[nonmated], s.top1[nonmated], s.top1_group[nonmated],
                                                 t["value"], ctx)
        for j, size in enumerate(s.sizes):
            fp_n = s.prefix_max[nonmated, j] >= t["value"]
            for r in ident.subject_rate_rows(fp_n, subj[nonmated], grp[nonmated], metric="fpir", group_by=gb,
                                             n_boot=n_boot, seed=seed, context=ctx):
                size_rows.append({"kind": "measured", "gallery_size": int(size), **r})
        model_rows += ident.fpir_model_rows(s.hist, s.groups, t["value"],
                                            sorted(set(ident.MODEL_SIZES) | {s.n_gallery}), ctx)
    return {"rates": rows, "false_candidates": false_rows, "fpir_by_gallery_size": size_rows,
            "fpir_by_gallery_size_model": model_rows}


def decisions(s: Searches, thresholds: list[dict], group_by: list[str]) -> pd.DataFrame:
    """Per search and threshold: 1 when the search decided right (no false candidate / mate found), for flips."""
    out = []
    mated = (s.probes["role"] == "mated").to_numpy()
    for t in thresholds:
        fp, miss = ident.search_outcomes(s.top1, s.mate_score, s.rank, t["value"], RANK_R)
        correct = np.where(mated, ~miss, ~fp).astype(float)
        out.append(s.probes[["sample_id", *group_by]].assign(correct=correct, role=s.probes["role"].to_numpy(),
                                                              threshold_kind=t["kind"], threshold=t["value"]))
    return pd.concat(out, ignore_index=True) if out else pd.DataFrame()


def flips(ref: pd.DataFrame, var: pd.DataFrame, group_by: list[str], config: str) -> list[dict]:
    """Decision flips per group with exact McNemar p, per threshold and search kind (mated / non-mated)."""
    rows = []
    for (kind, thr, role), r in ref.groupby(["threshold_kind", "threshold", "role"], sort=True):
        v = var[(var["threshold_kind"] == kind) & (var["threshold"] == thr) & (var["role"] == role)]
        for row in decision_flips(r, v, "correct", group_by):
            rows.append(dict(row, metric="fpir" if role == "nonmated" else "fnir", threshold_kind=kind, threshold=thr,
                             config=config))
    return rows


def entry_embeddings(run_dir: Path | None, entry: str, df: pd.DataFrame, raw_records: list[dict] | None) -> np.ndarray:
    """The entry's embeddings aligned to `df` (deduplicated records): from embeddings/<entry>.npy (row i = raw
    record i, written by the run) when present, else from the records' own "embedding" fields (older runs)."""
    path = None if run_dir is None else Path(run_dir) / "embeddings" / f"{entry}.npy"
    if path is not None and path.is_file() and raw_records is not None:
        arr = np.load(path, allow_pickle=False).astype(np.float64)
        first: dict[str, int] = {}
        for i, r in enumerate(raw_records):
            first.setdefault(r.get("sample_id"), i)
        if arr.shape[0] == len(raw_records):
            return arr[[first[s] for s in df["sample_id"]]]
    dim = next((len(e) for e in df.get("embedding", []) if isinstance(e, list)), 0)
    return np.array([e if isinstance(e, list) else [np.nan] * dim for e in df.get("embedding", [])],
                    np.float64).reshape(len(df), dim)
