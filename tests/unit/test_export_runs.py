"""`bench export`'s runs table: one row per run with the board as the reports name it, its provenance (real,
emulated, imported: harness/results/provenance.py) and the machine's fingerprint, summarised and as its sha256."""

from __future__ import annotations

import pandas as pd

from harness.cli import main
from harness.report import buyers
from harness.results.provenance import fingerprint_sha256
from helpers_results import make_run


def test_export_writes_a_runs_table_with_board_target_fingerprint_and_provenance(tmp_path):
    root = tmp_path / "results"
    kp = {"int8": "x86-avx2-vpmaddubsw", "int8_label": "AVX2 vpmaddubsw", "features": {"avx2": True}}
    real = make_run(root, target="cpu", launcher={"kind": "local"}, environment={"kernel_path": kp})
    emulated = make_run(root, target="rpi", seed=1,
                        launcher={"kind": "ssh", "emulation": {"by": "qemu-user 8.2.2", "cpu": "cortex-a76"}})
    imported = make_run(root, target="jetson", seed=2, environment={"cpu": {"model": "<b>Orin</b>", "arch": "aarch64"}})
    out = tmp_path / "out"
    assert main(["export", real.run_id, emulated.run_id, imported.run_id, "--format", "csv", "-o", str(out),
                 "--results-dir", str(root)]) == 0
    runs = pd.read_csv(out / "runs.csv").set_index("run_id")
    assert list(runs.index) == [real.run_id, emulated.run_id, imported.run_id]
    assert list(runs["board"]) == ["cpu", "rpi (emulated)", "jetson (imported)"]  # as the buyer's page names them
    assert list(runs["board"]) == [buyers._board(r) for r in (real, emulated, imported)]
    assert list(runs["target"]) == ["cpu", "rpi", "jetson"]
    assert list(runs["provenance"]) == ["real", "emulated", "imported"]
    assert "qemu-user 8.2.2" in runs.loc[emulated.run_id, "provenance_reason"]
    assert runs.loc[real.run_id, "int8_kernel_path"] == "AVX2 vpmaddubsw"
    assert runs.loc[imported.run_id, "cpu_model"] == "<b>Orin</b>"  # a board's string is data, kept as text
    assert runs.loc[real.run_id, "fingerprint_sha256"] == fingerprint_sha256(real.doc)
    # the same machine and settings share a fingerprint; a different one does not
    assert runs.loc[emulated.run_id, "fingerprint_sha256"] != runs.loc[imported.run_id, "fingerprint_sha256"]
    assert fingerprint_sha256(real.doc) == fingerprint_sha256(dict(real.doc))
    assert len(pd.read_csv(out / "entries.csv")) == 6  # the store's tables are still written beside it
