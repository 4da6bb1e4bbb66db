"""The watchlist rules of a dataset card: london-frl-views' split, and bad cards refused in one line."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import pandas as pd
import pytest

from harness.cli import main
from harness.data.dataset import load_dataset
from harness.data.watchlist import rules_of, watchlist_split
from harness.errors import InputError


def test_london_views_split(data_root: Path):
    if not (data_root / "london-frl-views" / "labels.csv").is_file():
        pytest.skip("london-frl-views not in the shared data")
    ds = load_dataset("london-frl-views", data_root)
    rules = rules_of(ds.card, "card")
    assert rules.distractors == "fairface-sample" and rules.gallery == {"view": ("front",), "expression": ("neutral",)}
    split = watchlist_split(ds.id, ds.frame, rules, seed=0, group_by=ds.default_group_by, origin="x")
    frame = ds.frame.set_index("image")
    assert set(frame.loc[list(split.gallery_images), "view"]) == {"front"}
    assert set(split.enrolled).isdisjoint(split.nonmated)
    assert len(split.enrolled) + len(split.nonmated) == ds.frame["subject"].nunique() == 102
    assert split.n_mated_probes == 9 * len(split.enrolled) and split.n_nonmated_probes == 10 * len(split.nonmated)
    # stratified: every ethnicity*gender cell with two or more people keeps both kinds
    cells = ds.frame.groupby("subject")[list(ds.default_group_by)].first().astype(str).agg("*".join, axis=1)
    for cell, members in cells.groupby(cells):
        if len(members) >= 2:
            assert set(members.index) & set(split.nonmated) and set(members.index) & set(split.enrolled), cell
    again = watchlist_split(ds.id, ds.frame, rules, seed=0, group_by=ds.default_group_by, origin="x")
    other = watchlist_split(ds.id, ds.frame, rules, seed=1, group_by=ds.default_group_by, origin="x")
    assert again == split and other.nonmated != split.nonmated


def user_set(folder: Path, card_extra: str) -> Path:
    folder.mkdir()
    rows = [{"image": f"{s}_{j}.jpg", "subject": s, "view": "front" if j == 0 else "side", "grp": "a"}
            for s in ("s1", "s2", "s3") for j in range(2)]
    for r in rows:
        (folder / r["image"]).write_bytes(b"")
    pd.DataFrame(rows).to_csv(folder / "manifest.csv", index=False)
    (folder / "card.toml").write_text(f'name = "{folder.name}"\ngroup_columns = ["grp"]\n{card_extra}\n')
    return folder


def bench(argv):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, err.getvalue()


@pytest.mark.parametrize("extra, message", [
    ('[identification]\ngallery = { view = "profile" }', "gallery rule (view in {profile}) selects no image"),
    ('[identification]\ngallery = { pose = "front" }', "names column(s) pose that are not in the manifest"),
    ('[identification]\ngallery = { grp = "a" }', "has no mated probe"),
    ('[identification]\ngallery = { view = "front" }\ndistractors = "../etc"', "is not a dataset name"),
    ('[identification]\ngallery = { view = "front" }\nnonmated_share = 1.5', "must be a share in [0, 1)"),
])
def test_bad_watchlist_cards_are_one_line_exit_2(tmp_path, monkeypatch, extra, message):
    monkeypatch.setenv("BENCH_DATA_REGISTRY", str(tmp_path / "registry"))
    folder = user_set(tmp_path / "mine", extra)
    code, err = bench(["data", "add", str(folder)])
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_a_good_user_card_registers(tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_DATA_REGISTRY", str(tmp_path / "registry"))
    folder = user_set(tmp_path / "mine", '[identification]\ngallery = { view = "front" }\nnonmated_share = 0.3')
    code, err = bench(["data", "add", str(folder)])
    assert code == 0, err
    with pytest.raises(InputError):
        rules_of({"identification": {"gallery": {}}}, "x")
