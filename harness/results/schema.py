"""run.json schema: the current version, JSON Schema validation, and upgrades of older documents.

Validation uses the `jsonschema` library (draft 2020-12) against harness/schema/run.schema.json. When the library
is not installed, validation is skipped with one warning rather than failing a run that took an hour to measure:
the structural checks load_run needs (schema_version, run_id, entries) are done by the store regardless.
"""

from __future__ import annotations

import copy
import json
import warnings
from functools import lru_cache
from pathlib import Path
from typing import Any

from harness.errors import IntegrityError

SCHEMA_VERSION = 1
SCHEMA_PATH = Path(__file__).resolve().parent.parent / "schema" / "run.schema.json"


@lru_cache(maxsize=1)
def load_schema() -> dict[str, Any]:
    """The run.json JSON Schema shipped as package data."""
    return json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))


@lru_cache(maxsize=1)
def _validator() -> Any | None:
    try:
        import jsonschema
    except ImportError:
        warnings.warn("jsonschema is not installed: run.json documents are not schema-validated", stacklevel=3)
        return None
    return jsonschema.Draft202012Validator(load_schema())


def schema_errors(doc: dict[str, Any]) -> list[str] | None:
    """All schema violations as 'path: message' lines, [] when valid, None when no validator is available."""
    validator = _validator()
    if validator is None:
        return None
    errors = sorted(validator.iter_errors(doc), key=lambda e: list(e.absolute_path))
    return [f"{'/'.join(str(p) for p in e.absolute_path) or '(root)'}: {e.message}" for e in errors]


def validate(doc: dict[str, Any], where: str) -> None:
    """Raise IntegrityError naming `where` and the first violation (plus how many more) if `doc` is invalid."""
    errors = schema_errors(doc)
    if errors:
        more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
        raise IntegrityError(f"{where}: run.json does not match schema v{SCHEMA_VERSION}: {errors[0]}{more}")


def _upgrade_0_to_1(doc: dict[str, Any]) -> dict[str, Any]:
    """v0 (pre-release) -> v1.

    v0 differences: no schema_version key (or 0); `target` was a bare id string; entries used `id` for the entry id
    and `speed.latency` for what is now `speed.single_stream`; run status "done" meant "complete".
    """
    if isinstance(doc.get("target"), str):
        doc["target"] = {"id": doc["target"], "profile": {}}
    if doc.get("status") == "done":
        doc["status"] = "complete"
    for entry in doc.get("entries", []):
        if "entry" not in entry and "id" in entry:
            entry["entry"] = entry.pop("id")
        speed = entry.get("speed")
        if isinstance(speed, dict) and "latency" in speed and "single_stream" not in speed:
            speed["single_stream"] = speed.pop("latency")
    doc["schema_version"] = 1
    return doc


# from-version -> function producing the next version; add one function per schema bump.
_UPGRADES = {0: _upgrade_0_to_1}


def upgrade(doc: dict[str, Any], where: str = "run.json") -> dict[str, Any]:
    """Return a copy of `doc` upgraded step by step to SCHEMA_VERSION; a newer or unknown version is an IntegrityError."""
    version = doc.get("schema_version", 0)
    if not isinstance(version, int) or version > SCHEMA_VERSION or version < 0:
        raise IntegrityError(
            f"{where}: schema_version {version!r} is not supported (this harness reads 0..{SCHEMA_VERSION}); "
            "upgrade edge-fair-bench to read it"
        )
    doc = copy.deepcopy(doc)
    while version < SCHEMA_VERSION:
        doc = _UPGRADES[version](doc)
        version = doc["schema_version"]
    return doc
