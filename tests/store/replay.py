"""Replay a complete local run through a RunWriter as the orchestrator writes one (harness/scenarios/orchestrate.py):
the run created with its header, then per entry its files (samples, timings, embeddings) and a partial run.json
with the entries so far (unscored: `metrics` is added by scoring at the end), then the complete, scored run.json.
Used by tests/store/test_store_write_through.py and tools/store_write_cost.py."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from harness.results.pgwrite import entry_paths
from harness.results.store import Run

HEADER_KEYS = ("run_id", "schema_version", "created_utc", "finished_utc", "status", "entries")


def header_of(src: Run) -> dict[str, Any]:
    """The run.json skeleton the orchestrator passes to store.create()."""
    return {k: v for k, v in src.doc.items() if k not in HEADER_KEYS}


def copy_entry_files(src: Run, dest: Path, entry: str) -> None:
    for rel in entry_paths(entry):
        if (src.path / rel).exists():
            (dest / rel).parent.mkdir(exist_ok=True)
            shutil.copyfile(src.path / rel, dest / rel)


def replay(src: Run, writer, *, after: Callable[[int, str], None] | None = None, upto: int | None = None) -> None:
    """Write src's entries one by one through `writer` (created from header_of(src)); `after(i, what)` is called
    after each run.json write (what: an entry id, or 'complete'). `upto`: stop after that many entries (partial)."""
    doc = writer.read_run_json()
    entries = src.entries if upto is None else src.entries[:upto]
    for i, e in enumerate(entries):
        copy_entry_files(src, writer.path, e["entry"])
        doc["entries"] = [{k: v for k, v in x.items() if k != "metrics"} for x in entries[:i + 1]]
        writer.write_run_json(doc)
        if after:
            after(i, e["entry"])
    if upto is None:
        doc = {**src.doc, "run_id": writer.run_id, "created_utc": doc["created_utc"]}
        writer.write_run_json(doc)
        if after:
            after(len(entries), "complete")
