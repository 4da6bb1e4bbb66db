"""Deterministic calibration / evaluation splits.

The int8 calibration images must never be scored: `evaluation_frame` is everything not in the calibration split.
With identities, the unit of sampling is the subject, so no person is on both sides. The split id names the
dataset, mix, size and seed; its sha256 covers the sorted image list, so a pack records exactly what it saw.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from harness.data.dataset import GROUP_SEP, Dataset
from harness.errors import InputError


@dataclass(frozen=True)
class Split:
    id: str
    images: tuple[str, ...]        # sorted image paths relative to the dataset root
    sha256: str                    # sha256 of "\n".join(images)
    composition: dict[str, int]    # group label ("female*black") -> count, grouped by `group_by`
    dataset: str = ""
    group_by: tuple[str, ...] = ()
    subjects: tuple[str, ...] = field(default=())

    def to_dict(self) -> dict[str, Any]:
        """What packs and run.json record (the image list is summarised by its sha256)."""
        return {"id": self.id, "dataset": self.dataset, "n": len(self.images), "sha256": self.sha256,
                "group_by": GROUP_SEP.join(self.group_by), "composition": dict(self.composition)}


def _parse_mix(mix: str) -> tuple[str, str | None, str | None]:
    if mix in ("balanced", "as-is"):
        return mix, None, None
    if mix.startswith("group:") and "=" in mix:
        attr, value = mix[len("group:"):].split("=", 1)
        return "group", attr, value
    raise InputError(f"calibration mix '{mix}': use balanced, as-is or group:ATTR=VALUE")


def _units(ds: Dataset, labels: pd.Series) -> pd.DataFrame:
    """One row per sampling unit (a subject, or an image when there are no identities), with its group label."""
    frame = pd.DataFrame({"image": ds.frame["image"], "label": labels})
    if ds.has_subjects:
        frame["unit"] = ds.frame["subject"].fillna("image:" + ds.frame["image"])
    else:
        frame["unit"] = frame["image"]
    # A subject's group is its first image's group (subjects do not change demographic labels).
    units = frame.groupby("unit", sort=True).agg(label=("label", "first"), n=("image", "size"))
    return units.reset_index()


def _order(units: pd.DataFrame, mix: str, rng: np.random.Generator) -> list[int]:
    """Unit positions in draw order: random for as-is/group; round-robin across shuffled groups for balanced."""
    perm = rng.permutation(len(units))
    if mix != "balanced":
        return perm.tolist()
    shuffled = units.iloc[perm].assign(pos=perm)
    shuffled["rank"] = shuffled.groupby("label", sort=False).cumcount()
    # Rank r of every group comes before rank r+1 of any group; ties broken by group label for determinism.
    return shuffled.sort_values(["rank", "label"], kind="stable")["pos"].tolist()


def calibration_split(ds: Dataset, *, seed: int, size: int = 64, mix: str = "balanced",
                      group_by: list[str] | tuple[str, ...] | None = None) -> Split:
    """Draw `size` images (whole subjects only) by `mix`: balanced across group_by cells, as-is, or one group."""
    if size <= 0:
        raise InputError(f"calibration size must be positive, got {size}")
    kind, attr, value = _parse_mix(mix)
    cols = ds.check_group_by(group_by)
    labels = ds.group_labels(cols)
    pool = ds
    if kind == "group":
        ds.check_group_by([attr])
        keep = ds.frame[attr] == value
        if not keep.any():
            raise InputError(f"dataset {ds.id}: empty group {attr}={value}; values: "
                             f"{', '.join(sorted(ds.frame[attr].dropna().unique()))}")
        pool = Dataset(ds.id, ds.root, ds.frame[keep], ds.group_columns, ds.default_group_by,
                       ds.manifest_sha256, ds.card)
        labels = labels[keep]
    if size > len(pool.frame):
        raise InputError(f"dataset {ds.id}: calibration size {size} exceeds the {len(pool.frame)} images available"
                         + (f" for {mix}" if kind == "group" else ""))
    units = _units(pool, labels)
    rng = np.random.default_rng(seed)
    chosen, total = [], 0
    for pos in _order(units, kind, rng):
        n = int(units["n"].iat[pos])
        if total + n <= size:  # whole subjects only: a subject that does not fit is passed over
            chosen.append(pos)
            total += n
        if total == size:
            break
    picked_units = set(units["unit"].iloc[chosen])
    in_split = _units_of(pool).isin(picked_units)
    images = tuple(sorted(pool.frame.loc[in_split, "image"]))
    composition = {str(k): int(v) for k, v in labels[in_split].value_counts().sort_index().items()}
    subjects = tuple(sorted(pool.frame.loc[in_split, "subject"].dropna())) if ds.has_subjects else ()
    mix_label = f"balanced[{GROUP_SEP.join(cols) or 'all'}]" if kind == "balanced" else mix
    return Split(
        id=f"{ds.id}:calib:{mix_label}:n{size}:seed{seed}",
        images=images,
        sha256=hashlib.sha256("\n".join(images).encode("utf-8")).hexdigest(),
        composition=composition,
        dataset=ds.id,
        group_by=cols,
        subjects=tuple(dict.fromkeys(subjects)),
    )


def _units_of(ds: Dataset) -> pd.Series:
    if ds.has_subjects:
        return ds.frame["subject"].fillna("image:" + ds.frame["image"])
    return ds.frame["image"]


def evaluation_frame(ds: Dataset, split: Split) -> pd.DataFrame:
    """Rows of ds that may be scored: all of them when the split came from another dataset, else every row whose
    image (and, with identities, whose subject) is not in the calibration split."""
    if split.dataset and split.dataset != ds.id:
        return ds.frame
    out = ~ds.frame["image"].isin(split.images)
    if ds.has_subjects:
        out &= ~ds.frame["subject"].isin(split.subjects)
    return ds.frame[out]
