"""Registered datasets: `bench data add` stores the normalised manifest + card so a dataset is usable by name.

Where: $BENCH_DATA_REGISTRY when set, else <cache root>/datasets (the cache root is --cache-dir / BENCH_CACHE /
~/.cache/edge-fair-bench): a data root is often read-only (a shared mount, ../shared/data), the cache never is.
One folder per dataset:
    <registry>/<name>/manifest.csv   the normalised frame (canonical CSV, rows sorted by image)
    <registry>/<name>/card.json      the card, with `root` = absolute folder the images live in
The images themselves are never copied.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from harness.errors import InputError, UsageError

if TYPE_CHECKING:
    from harness.data.dataset import Dataset

ENV_REGISTRY = "BENCH_DATA_REGISTRY"
DEFAULT_DIRNAME = "datasets"


def registry_dir(data_root: Path) -> Path:
    """The registry folder. `data_root` is accepted for symmetry with the other lookups; it does not move it."""
    from harness.paths import cache_root

    env = os.environ.get(ENV_REGISTRY)
    return Path(env).expanduser().resolve() if env else cache_root().path / DEFAULT_DIRNAME


def registered_names(data_root: Path) -> list[str]:
    folder = registry_dir(data_root)
    if not folder.is_dir():
        return []
    return sorted(d.name for d in folder.iterdir() if (d / "card.json").is_file() and (d / "manifest.csv").is_file())


def entry_dir(data_root: Path, name: str) -> Path | None:
    """The registry folder of `name`, or None when it is not registered."""
    return registry_dir(data_root) / name if name in registered_names(data_root) else None


def register(ds: "Dataset", data_root: Path, *, layout: str, force: bool = False) -> Path:
    """Write ds's manifest + card into the registry atomically (temp folder, then rename)."""
    from harness.data.dataset import canonical_csv
    from harness.data.layouts import builtin_layouts

    if ds.id in builtin_layouts(data_root):
        raise UsageError(f"dataset name '{ds.id}' is a built-in dataset; pass --name to register under another")
    folder = registry_dir(data_root)
    target = folder / ds.id
    if target.exists() and not force:
        raise UsageError(f"dataset '{ds.id}' is already registered in {folder}; pass --force to replace it")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{ds.id}.", dir=folder))
    except OSError as exc:
        raise InputError(f"cannot write the dataset registry {folder}: {exc.strerror}; "
                         f"set {ENV_REGISTRY} to a writable folder") from None
    card = dict(ds.card, name=ds.id, layout=layout, root=str(ds.root.resolve()),
                group_columns=list(ds.group_columns), default_group_by=list(ds.default_group_by),
                manifest_sha256=ds.manifest_sha256, n=int(len(ds.frame)),
                registered_utc=datetime.now(timezone.utc).isoformat(timespec="seconds"))
    (tmp / "manifest.csv").write_bytes(canonical_csv(ds.frame))
    (tmp / "card.json").write_text(json.dumps(card, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    if target.exists():
        shutil.rmtree(target)
    os.replace(tmp, target)
    return target
