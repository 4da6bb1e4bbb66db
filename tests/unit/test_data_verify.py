"""`bench data verify` on a fixture dataset holding good copies and broken files, counted in the right group."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pandas as pd
import pytest

from helpers_data import bench_data
from harness.data.layouts import read_layout
from harness.data.verify import verify_dataset
from harness.errors import EXIT_INTEGRITY


def shared_data() -> Path:
    return Path(os.environ.get("BENCH_DATA") or Path(__file__).resolve().parents[2].parent / "shared" / "data")


@pytest.fixture()
def broken(tmp_path) -> Path:
    """A plain manifest dataset: 3 good images + zero-byte, truncated, non-image and missing files."""
    src = shared_data() / "fairface-sample"
    good = pd.read_csv(src / "labels.csv").query("race == 'White'").head(3)
    root = tmp_path / "broken"
    root.mkdir()
    rows = []
    for i, r in enumerate(good.itertuples()):
        shutil.copy(src / r.image, root / f"good{i}.jpg")
        rows.append({"image": f"good{i}.jpg", "race": "White", "gender": r.gender})
    sample = (src / good["image"].iloc[0]).read_bytes()
    (root / "zero.jpg").write_bytes(b"")
    (root / "cut.jpg").write_bytes(sample[: len(sample) // 3])
    (root / "text.png").write_text("this is not a PNG\n")
    rows += [{"image": "zero.jpg", "race": "Black", "gender": "female"},
             {"image": "cut.jpg", "race": "Black", "gender": "male"},
             {"image": "text.png", "race": "Indian", "gender": "female"},
             {"image": "gone.jpg", "race": "Black", "gender": "female"}]
    pd.DataFrame(rows).to_csv(root / "manifest.csv", index=False)
    (root / "card.json").write_text(json.dumps({"name": "broken", "group_columns": ["race", "gender"],
                                                "default_group_by": ["race"]}))
    return root


def test_verify_reasons_and_group_counts(broken):
    report = verify_dataset(read_layout("manifest", broken))
    assert (report.n, report.n_ok, report.ok) == (7, 3, False)
    assert {f["image"]: f["reason"] for f in report.failures} == {
        "zero.jpg": "empty_file", "cut.jpg": "decode_error", "text.png": "decode_error", "gone.jpg": "missing_file"}
    assert report.by_group == [{"group": "Black", "n": 3, "ok": 0, "failed": 3},
                               {"group": "Indian", "n": 1, "ok": 0, "failed": 1},
                               {"group": "White", "n": 3, "ok": 3, "failed": 0}]
    by_cell = {g["group"]: g["failed"] for g in verify_dataset(read_layout("manifest", broken),
                                                                ["race", "gender"]).by_group}
    white = {g: n for g, n in by_cell.items() if g.startswith("White*")}
    assert {g: n for g, n in by_cell.items() if g not in white} == {"Black*female": 2, "Black*male": 1,
                                                                   "Indian*female": 1}
    assert white and set(white.values()) == {0}


def test_verify_command_exit_code_and_json(broken, capsys):
    assert bench_data("data", "verify", str(broken), "--json") == EXIT_INTEGRITY
    out = json.loads(capsys.readouterr().out)
    assert (out["n"], out["ok"], out["failed"]) == (7, 3, 4) and len(out["manifest_sha256"]) == 64
    assert bench_data("data", "verify", str(broken)) == EXIT_INTEGRITY
    text = capsys.readouterr().out
    assert "broken: 3/7 images decode" in text and "FAILED gone.jpg [Black]: missing_file" in text


def test_verify_shared_london_set_all_decode(capsys):
    assert bench_data("--data-root", str(shared_data()), "data", "verify", "london-frl", "--json") == 0
    out = json.loads(capsys.readouterr().out)
    assert out["ok"] == 204 and out["group_by"] == "ethnicity*gender"
    assert {g["group"]: g["n"] for g in out["by_group"]}["black*male"] == 16
