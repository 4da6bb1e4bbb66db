"""User data through `bench data add` and `bench run` on the real packs, scored by score_run: detection,
verification and gender entries on a manifest whose genders read "Female"/"Male", two groupings from one card
(one of them derived), and a dataset without identities whose verification entry is not applicable."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import pandas as pd
import pytest

from harness.cli import main

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

FAST = ["--threads", "1", "--min-duration", "0.05", "--min-count", "20", "--bootstrap", "50", "--variant", "onnx-fp32",
        "--no-build"]
# A coarser attribute derived from London's self-reported ethnicity, to score a second grouping from one card.
REGION = {"white": "europe", "black": "africa", "east_asian": "asia", "west_asian": "asia", "east_asian/white": "mixed"}
CARD = f"""name = "mine"
root = "ROOT"
licence = "CC BY 4.0"
group_columns = ["ethnicity", "gender", "region"]
groupings = [["ethnicity", "gender"], ["region", "gender"]]
[derived.region]
from = "ethnicity"
values = {{ {", ".join(f'"{k}" = "{v}"' for k, v in REGION.items())} }}
"""


def bench(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue(), err.getvalue()


def user_manifest(folder: Path, data_root: Path, n_subjects: int, *, subjects: bool = True) -> Path:
    """London images (neutral + smiling of the first n_subjects of each gender) listed as a user would: genders
    capitalised, eye points kept so detection recall is scored, the images left where they are."""
    lab = pd.read_csv(data_root / "london-frl" / "labels.csv", dtype=str)
    chosen = lab[lab["expression"] == "neutral"].groupby("gender").head(n_subjects)["subject"]
    rows = lab[lab["subject"].isin(chosen)].drop(columns=["landmarks", "age", "expression"])
    rows["gender"] = rows["gender"].str.capitalize()
    if not subjects:
        rows = rows.drop(columns="subject")
    folder.mkdir(parents=True)
    rows.to_csv(folder / "manifest.csv", index=False)
    (folder / "card.toml").write_text(CARD.replace('"mine"', f'"{folder.name}"')
                                      .replace("ROOT", str(data_root / "london-frl")))
    return folder


@pytest.fixture(scope="module")
def user_run(built_packs, data_root, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("userdata")
    mp = pytest.MonkeyPatch()
    mp.setenv("BENCH_DATA_REGISTRY", str(tmp / "registry"))
    common = ["--cache-dir", str(built_packs), "--data-root", str(data_root)]
    try:
        added = [bench(["data", "add", str(user_manifest(tmp / name, data_root, 6, subjects=subjects)), *common])
                 for name, subjects in (("mine", True), ("mine-nosubj", False))]
        runs = {}
        for name, models in (("mine", ("blazeface", "mobilefacenet", "gender-dlib")), ("mine-nosubj", ("mobilefacenet",))):
            argv = ["run", "--dataset", name, *[a for m in models for a in ("--model", m)], *FAST,
                    "--results-dir", str(tmp / "results"), *common]
            code, out, err = bench(argv)
            assert code == 0, err[-3000:]
            runs[name] = json.loads((Path(out.strip().splitlines()[-1]) / "run.json").read_text())
    finally:
        mp.undo()
    return added, runs


def entry(doc: dict, model: str) -> dict:
    return next(e for e in doc["entries"] if e["model"] == model)


def rows(e: dict, metric: str, group_by: str) -> dict[str, dict]:
    return {r["group"]: r for r in e["metrics"]["rates"] if r["metric"] == metric and r["group_by"] == group_by
            and r.get("threshold_kind") != "fixed"}


def test_both_datasets_register(user_run):
    added, _ = user_run
    assert [code for code, _, _ in added] == [0, 0]
    assert "mine (manifest): 24 images" in added[0][1]


def test_gender_entry_scores_every_image_of_a_female_male_dataset(user_run):
    _, runs = user_run
    e = entry(runs["mine"], "gender-dlib")
    assert e["status"] == "ok", e.get("reason")
    for group_by in ("ethnicity*gender", "region*gender"):
        by = rows(e, "accuracy", group_by)
        assert by["all"]["n"] == 24 - e["acquisition"]["fta"]
        assert {g.split("*")[1] for g in by if g != "all"} == {"Female", "Male"}
        assert sum(r["n"] for g, r in by.items() if g != "all") == by["all"]["n"]
    # studio portraits: the fp32 model gets nearly all of them right (README: about 0.99 on London)
    assert rows(e, "accuracy", "ethnicity*gender")["all"]["value"] >= 0.85


def test_detection_scores_recall_from_the_eye_points_per_grouping(user_run):
    _, runs = user_run
    e = entry(runs["mine"], "blazeface")
    assert e["status"] == "ok", e.get("reason")
    for group_by in ("ethnicity*gender", "region*gender"):
        recall, found = rows(e, "recall", group_by), rows(e, "found", group_by)
        # London labels eye points on the neutral photos only: recall is scored on those 12, "found" on all 24
        assert recall["all"]["n"] == 12 and found["all"]["n"] == 24
        assert recall["all"]["k"] <= found["all"]["k"]
    assert {r["group_by"] for r in e["metrics"]["disparities"]} == {"ethnicity*gender", "region*gender"}


def test_verification_pairs_the_subjects_in_each_grouping(user_run):
    _, runs = user_run
    e = entry(runs["mine"], "mobilefacenet")
    assert e["status"] == "ok", e.get("reason")
    v = e["metrics"]["verification"]["mine"]
    assert v["n_genuine"] == 12 and 0 < v["threshold"] < 1  # 12 subjects x (neutral, smiling)
    for group_by in ("ethnicity*gender", "region*gender"):
        fnmr, fmr = rows(e, "fnmr", group_by), rows(e, "fmr", group_by)
        assert fnmr["all"]["n"] == 12
        assert sum(r["n"] for g, r in fnmr.items() if g != "all") == 12  # every genuine pair sits in one group
        assert fmr["all"]["n"] > 0 and all(r["threshold"] == v["threshold"] for r in fmr.values())


def test_run_records_the_groupings(user_run):
    _, runs = user_run
    (record,) = runs["mine"]["data"]["datasets"]
    assert record["groupings"] == [["ethnicity", "gender"], ["region", "gender"]]


def test_without_subject_ids_verification_is_not_applicable(user_run):
    _, runs = user_run
    e = entry(runs["mine-nosubj"], "mobilefacenet")
    assert e["status"] == "skipped"
    assert e["reason"] == "not applicable: verification needs subject ids; none in mine-nosubj"
    assert runs["mine-nosubj"]["status"] == "complete"
