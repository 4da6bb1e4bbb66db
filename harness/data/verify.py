"""`bench data verify`: every file exists and decodes; counts per group; failures with reasons."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import pandas as pd

from harness.data.dataset import GROUP_SEP, Dataset
from harness.data.images import DecodeFailure, decode


@dataclass(frozen=True)
class VerifyReport:
    dataset: str
    root: str
    manifest_sha256: str
    group_by: tuple[str, ...]
    n: int
    n_ok: int
    failures: list[dict[str, str]]   # {"image", "group", "reason", "detail"}
    by_group: list[dict[str, Any]]   # {"group", "n", "ok", "failed"} sorted by group

    @property
    def ok(self) -> bool:
        return self.n_ok == self.n

    def to_dict(self) -> dict[str, Any]:
        return {"dataset": self.dataset, "root": self.root, "manifest_sha256": self.manifest_sha256,
                "group_by": GROUP_SEP.join(self.group_by), "n": self.n, "ok": self.n_ok,
                "failed": self.n - self.n_ok, "failures": self.failures, "by_group": self.by_group}


def _check(path) -> tuple[str, str] | None:
    try:
        decode(path)
    except DecodeFailure as exc:
        return exc.reason, exc.detail
    return None


def verify_dataset(ds: Dataset, group_by: list[str] | None = None, *, workers: int = 2) -> VerifyReport:
    """Decode every image (OpenCV releases the GIL, so a small thread pool helps) and tally by group."""
    cols = ds.check_group_by(group_by)
    labels = ds.group_labels(cols)
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        results = list(pool.map(_check, [ds.path(img) for img in ds.frame["image"]]))
    failed = pd.Series([r is not None for r in results], index=ds.frame.index)
    failures = [{"image": img, "group": lab, "reason": r[0], "detail": r[1]}
                for img, lab, r in zip(ds.frame["image"], labels, results) if r is not None]
    table = pd.DataFrame({"group": labels, "failed": failed}).groupby("group", sort=True)["failed"].agg(["size", "sum"])
    by_group = [{"group": str(g), "n": int(row["size"]), "ok": int(row["size"] - row["sum"]), "failed": int(row["sum"])}
                for g, row in table.iterrows()]
    return VerifyReport(ds.id, str(ds.root), ds.manifest_sha256, cols, int(len(ds.frame)),
                        int((~failed).sum()), failures, by_group)
