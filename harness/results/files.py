"""`file://` store: the run directories under a results root plus the SQLite index (harness/results/store.py and
index.py, wrapped, not changed). The default: nothing to set up, and the form a device writes before a push."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from harness.errors import IntegrityError, UnknownIdError
from harness.results.base import SAFE_ID, ResultStore
from harness.results.index import RunIndex, RunRow
from harness.results.store import RUN_JSON, Run, RunStore, RunWriter, load_run, resolve_run


class FileStore(ResultStore):
    def __init__(self, root: str | os.PathLike[str]):
        self.root = Path(root)
        self.uri = self.root.resolve().as_uri()
        self._runs = RunStore(self.root)

    def create(self, meta: Mapping[str, Any], run_id: str | None = None) -> RunWriter:
        return self._runs.create(meta, run_id)

    def open_existing(self, run_id: str) -> RunWriter:
        return self._runs.open_existing(run_id)

    def query(self, *, target: str | None = None, model: str | None = None, commit: str | None = None,
              since: str | None = None, status: str | None = None) -> list[RunRow]:
        rows = RunIndex(self.root).query(target=target, model=model, commit=commit, since=since)
        return [r for r in rows if status is None or r.status == status]

    def load_id(self, run_id: str) -> Run:
        path = self.root / run_id
        if not SAFE_ID.match(run_id) or not path.is_dir():
            raise UnknownIdError(f"run in {self.uri}", run_id, self.ids()[-10:])
        return load_run(path)

    def load(self, ref: str) -> Run:
        """A run id, a unique prefix of one, or a run directory anywhere on disk (as `bench report ./x` takes)."""
        return load_run(resolve_run(ref, self.root))

    def put(self, run: Run) -> str:
        """Copy the run's directory in: copied to a hidden temporary name, then renamed (readers never see half)."""
        if run.path is None:
            raise IntegrityError(f"run {run.run_id}: the file store copies run directories; this run has none")
        dest = self.root / run.run_id
        if dest.exists():
            if load_run(dest).doc == run.doc:
                return "unchanged"
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{run.run_id}.", dir=self.root))
        try:
            shutil.copytree(run.path, tmp / "run", ignore=shutil.ignore_patterns("work", "*.lock"))
            (tmp / "run" / RUN_JSON).write_text(json.dumps(run.doc, indent=1), encoding="utf-8")
            replaced = dest.exists()
            if replaced:
                old = self.root / f".{run.run_id}.old"
                os.replace(dest, old)
                os.replace(tmp / "run", dest)
                shutil.rmtree(old)
            else:
                os.replace(tmp / "run", dest)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        RunIndex(self.root).upsert(load_run(dest))
        return "replaced" if replaced else "added"
