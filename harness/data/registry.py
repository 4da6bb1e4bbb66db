"""Registered datasets: `bench data add` stores the normalised manifest + card so a dataset is usable by name.

Where: $BENCH_DATA_REGISTRY when set, else <cache root>/datasets (the cache root is --cache-dir / BENCH_CACHE /
~/.cache/edge-fair-bench): a data root is often read-only (a shared mount, ../shared/data), the cache never is.
One folder per dataset:
    <registry>/<name>/manifest.csv   the normalised frame (canonical CSV, rows sorted by image)
    <registry>/<name>/card.json      the card, with `root` = absolute folder the images live in
The images themselves are never copied. A name becomes a folder only after `harness.names.safe_id`, and a
replaced registration is removed with `harness.files.remove_owned`, which refuses anything outside the registry.
"""

from __future__ import annotations

import json
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from harness.errors import InputError, UsageError
from harness.files import atomic_write_bytes, cannot_write, remove_owned, temp_dir
from harness.names import is_safe_id, safe_id, shown

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
    return sorted(d.name for d in folder.iterdir() if is_safe_id(d.name) and not d.is_symlink()
                  and (d / "card.json").is_file() and (d / "manifest.csv").is_file())


def entry_dir(data_root: Path, name: str) -> Path | None:
    """The registry folder of `name`, or None when it is not registered."""
    return registry_dir(data_root) / name if name in registered_names(data_root) else None


def register(ds: "Dataset", data_root: Path, *, layout: str, force: bool = False) -> Path:
    """Write ds's manifest + card into the registry atomically (temp folder, then rename)."""
    from harness.data.dataset import canonical_csv
    from harness.data.layouts import builtin_layouts

    name = safe_id("dataset name", ds.id, f"dataset at {ds.root}")
    if name in builtin_layouts(data_root):
        raise UsageError(f"dataset name '{name}' is a built-in dataset; pass --name to register under another")
    folder = registry_dir(data_root)
    target = folder / name
    if target.exists() and not force:
        raise UsageError(f"dataset '{name}' is already registered in {folder}; pass --force to replace it")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        tmp = temp_dir(folder, f".{name}.")
    except OSError as exc:
        raise InputError(f"cannot write the dataset registry {folder}: {exc.strerror}; "
                         f"set {ENV_REGISTRY} to a writable folder") from None
    card = dict(ds.card, name=name, layout=layout, root=str(ds.root.resolve()),
                group_columns=list(ds.group_columns), default_group_by=list(ds.default_group_by),
                manifest_sha256=ds.manifest_sha256, n=int(len(ds.frame)),
                registered_utc=datetime.now(timezone.utc).isoformat(timespec="seconds"))
    try:
        atomic_write_bytes(tmp / "manifest.csv", canonical_csv(ds.frame))
        atomic_write_bytes(tmp / "card.json", (json.dumps(card, indent=2, sort_keys=True) + "\n").encode("utf-8"))
        if target.exists() or target.is_symlink():
            # Move the old registration aside inside the registry first, so a name is never missing for long.
            old = temp_dir(folder, f".{name}.old.")
            os.replace(target, old / name)
            os.replace(tmp, target)
            remove_owned(old, folder)
        else:
            os.replace(tmp, target)
    except OSError as exc:
        remove_owned(tmp, folder)
        raise cannot_write(folder, exc, "dataset registry") from None
    except UnicodeEncodeError:  # a value read from a file name that is not UTF-8 (os.fsdecode's surrogates)
        remove_owned(tmp, folder)
        raise InputError(f"dataset at {shown(ds.root)}: a file or folder name is not valid UTF-8; "
                         "rename it (the registry stores UTF-8)") from None
    return target
