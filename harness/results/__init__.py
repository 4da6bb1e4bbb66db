"""Run directory store (atomic, never overwritten), run.json schema + upgrade, SQLite index, resume."""

from harness.results.index import RunIndex, RunRow
from harness.results.schema import SCHEMA_VERSION, upgrade, validate
from harness.results.store import (
    Run,
    RunStore,
    RunWriter,
    iter_runs,
    load_run,
    new_run_id,
    resolve_run,
)

__all__ = [
    "SCHEMA_VERSION", "Run", "RunIndex", "RunRow", "RunStore", "RunWriter", "iter_runs", "load_run", "new_run_id",
    "resolve_run", "upgrade", "validate",
]
