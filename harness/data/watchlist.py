"""The 1:N (watchlist) protocol a dataset card declares: who is enrolled, who searches, who is a distractor.

A card's `identification` table (TOML shown; card.json holds the same keys):

    [identification]
    gallery = { view = "front", expression = "neutral" }   # column = value (or [values]): the enrolment photos
    nonmated_share = 0.2          # share of subjects held out of the gallery: their photos are non-mated searches
    distractors = "fairface-sample"   # optional: a dataset of faces with no identity, every face enrolled

Split by subject (ISO/IEC 19795-1:2021, 7.6 on disjoint enrolment/test sets; NISTIR 8280 Part 3, sec. 3 on mated
and non-mated searches): a seeded draw of round(share x subjects) people, stratified by the dataset's default
grouping so small groups keep mated and non-mated people, is held out; everyone else is enrolled with the images
the gallery rule selects and searches with every other image (mated probes). Every image of a held-out person is a
non-mated probe. The split goes into run.json (`identification` of the dataset record), so `bench score` reuses
it without the data.

The distractor name is data read from a file: it must be a safe id and names a built-in or registered dataset,
never a path.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from harness.errors import InputError
from harness.names import id_problem, shown

CARD_KEY = "identification"


@dataclass(frozen=True)
class WatchlistRules:
    gallery: dict[str, tuple[str, ...]]   # column -> accepted values
    nonmated_share: float
    distractors: str | None

    def to_dict(self) -> dict[str, Any]:
        return {"gallery": {k: list(v) for k, v in self.gallery.items()}, "nonmated_share": self.nonmated_share,
                "distractors": self.distractors}


def rules_of(card: Mapping[str, Any], origin: str) -> WatchlistRules | None:
    """The card's identification rules, checked; None when the card declares none (the set is not a watchlist)."""
    spec = card.get(CARD_KEY)
    if spec is None:
        return None
    if not isinstance(spec, Mapping):
        raise InputError(f"{origin}: card identification must be a table with gallery, nonmated_share, distractors")
    gallery = spec.get("gallery")
    if not isinstance(gallery, Mapping) or not gallery:
        raise InputError(f"{origin}: card identification.gallery must be a non-empty table of column = value(s)")
    rule: dict[str, tuple[str, ...]] = {}
    for col, values in gallery.items():
        vals = values if isinstance(values, list) else [values]
        if not vals or not all(isinstance(v, (str, int)) and not isinstance(v, bool) for v in vals):
            raise InputError(f"{origin}: card identification.gallery.{shown(col)} must be a value or a list of values")
        rule[str(col)] = tuple(str(v) for v in vals)
    share = spec.get("nonmated_share", 0.0)
    if not isinstance(share, (int, float)) or isinstance(share, bool) or not 0.0 <= share < 1.0:
        raise InputError(f"{origin}: card identification.nonmated_share = {shown(share)}: must be a share in [0, 1)")
    distractors = spec.get("distractors")
    if distractors is not None and id_problem(distractors) is not None:
        raise InputError(f"{origin}: card identification.distractors {shown(repr(distractors))} is not a dataset "
                         "name (a built-in or registered dataset, never a path)")
    return WatchlistRules(rule, float(share), distractors)


@dataclass(frozen=True)
class WatchlistSplit:
    dataset: str
    rules: WatchlistRules
    seed: int
    gallery_images: tuple[str, ...]      # sorted
    enrolled: tuple[str, ...]            # subjects with a gallery image, sorted
    nonmated: tuple[str, ...]            # held-out subjects, sorted
    n_mated_probes: int
    n_nonmated_probes: int

    def to_dict(self) -> dict[str, Any]:
        """What run.json records (data.datasets[].identification); `from_dict` reads it back for `bench score`."""
        return {"rules": self.rules.to_dict(), "seed": self.seed, "gallery_images": list(self.gallery_images),
                "gallery_sha256": hashlib.sha256("\n".join(self.gallery_images).encode()).hexdigest(),
                "enrolled_subjects": list(self.enrolled), "nonmated_subjects": list(self.nonmated),
                "n_gallery": len(self.gallery_images), "n_mated_probes": self.n_mated_probes,
                "n_nonmated_probes": self.n_nonmated_probes}

    @classmethod
    def from_dict(cls, dataset: str, d: Mapping[str, Any]) -> "WatchlistSplit":
        r = d["rules"]
        rules = WatchlistRules({k: tuple(v) for k, v in r["gallery"].items()}, float(r["nonmated_share"]),
                               r.get("distractors"))
        return cls(dataset, rules, int(d["seed"]), tuple(d["gallery_images"]), tuple(d["enrolled_subjects"]),
                   tuple(d["nonmated_subjects"]), int(d["n_mated_probes"]), int(d["n_nonmated_probes"]))

    def roles(self, images: pd.Series, subjects: pd.Series) -> pd.Series:
        """Per row: "gallery", "mated" (a probe of an enrolled subject), "nonmated", or None (not in the split)."""
        gallery = images.isin(set(self.gallery_images))
        enrolled = subjects.isin(set(self.enrolled))
        out = pd.Series(None, index=images.index, dtype="object")
        out[enrolled & ~gallery] = "mated"
        out[subjects.isin(set(self.nonmated))] = "nonmated"
        out[gallery & enrolled] = "gallery"
        return out


def watchlist_split(dataset: str, frame: pd.DataFrame, rules: WatchlistRules, *, seed: int,
                    group_by: tuple[str, ...] | list[str], origin: str) -> WatchlistSplit:
    """Apply the card's rules to `frame` (the rows a run evaluates). One InputError line when the rules cannot hold:
    no subject ids, a gallery column missing, a gallery rule that selects nobody, no mated probe left."""
    if "subject" not in frame.columns or frame["subject"].isna().all():
        raise InputError(f"{origin}: identification needs subject ids; the manifest has no subject column")
    missing = [c for c in rules.gallery if c not in frame.columns]
    if missing:
        raise InputError(f"{origin}: identification.gallery names column(s) {', '.join(map(shown, missing))} that "
                         "are not in the manifest")
    frame = frame[frame["subject"].notna()]
    selected = np.ones(len(frame), bool)
    for col, values in rules.gallery.items():
        selected &= frame[col].isin(values).to_numpy()
    if not selected.any():
        rule = ", ".join(f"{c} in {{{', '.join(v)}}}" for c, v in rules.gallery.items())
        raise InputError(f"{origin}: identification gallery rule ({rule}) selects no image")
    # Held-out people: a seeded stratified draw per group (sorted subjects, one generator), so every group with at
    # least two people keeps some of each kind whenever the share allows it.
    subjects = frame.groupby("subject", sort=True)[list(group_by)].first() if group_by else \
        pd.DataFrame(index=sorted(frame["subject"].unique()))
    labels = subjects.astype(str).agg("*".join, axis=1) if group_by else pd.Series("all", index=subjects.index)
    rng = np.random.default_rng(seed)
    held: list[str] = []
    for _, members in labels.groupby(labels, sort=True):
        names = sorted(members.index)
        k = int(np.floor(rules.nonmated_share * len(names) + 0.5))
        if rules.nonmated_share > 0 and len(names) >= 2:
            k = min(max(k, 1), len(names) - 1)
        held += [names[i] for i in sorted(rng.permutation(len(names))[:k])]
    held_set = set(held)
    gallery_rows = frame[selected & ~frame["subject"].isin(held_set).to_numpy()]
    if gallery_rows.empty:
        raise InputError(f"{origin}: identification gallery rule selects only held-out people; nobody is enrolled")
    enrolled = sorted(set(gallery_rows["subject"]))
    mated = frame["subject"].isin(set(enrolled)) & ~frame["image"].isin(set(gallery_rows["image"]))
    if not mated.any():
        raise InputError(f"{origin}: identification has no mated probe: every image of the enrolled people is in the "
                         "gallery; the gallery rule must leave other photos to search with")
    return WatchlistSplit(dataset, rules, seed, tuple(sorted(gallery_rows["image"])), tuple(enrolled),
                          tuple(sorted(held_set)), int(mated.sum()), int(frame["subject"].isin(held_set).sum()))
