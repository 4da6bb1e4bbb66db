"""What a dataset card declares beyond its columns: the gender task's label map, derived attributes (Gender Shades'
skin type from Fitzpatrick types) and several groupings per run; and `bench data add` keeping them."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd
import pytest

from harness.data.dataset import build_dataset, load_dataset
from harness.errors import InputError
from harness.scenarios.orchestrate import mark_not_applicable, tasks_for_dataset
from helpers_data import bench_data

FITZ = ["I", "II", "III", "IV", "V", "VI"]
SKIN = {"I": "lighter", "II": "lighter", "III": "lighter", "IV": "darker", "V": "darker", "VI": "darker"}


def frame(n: int = 12, **extra: list[str]) -> pd.DataFrame:
    cols = {"image": [f"img/{i}.jpg" for i in range(n)], "fitzpatrick": [FITZ[i % 6] for i in range(n)],
            "gender": ["Female" if i % 2 else "Male" for i in range(n)]}
    return pd.DataFrame({**cols, **extra})


def build(card: dict, df: pd.DataFrame | None = None, root: Path = Path("/tmp")):
    return build_dataset("cards", root, frame() if df is None else df, card, "cards/manifest.csv")


GENDER_SHADES = {"group_columns": ["fitzpatrick", "gender", "skin"],
                 "groupings": [["fitzpatrick", "gender"], ["skin", "gender"]],
                 "derived": {"skin": {"from": "fitzpatrick", "values": SKIN}}}


# --- gender label ----------------------------------------------------------------------------------------------

def test_capitalised_gender_values_get_the_case_folding_map():
    ds = build({})
    assert ds.gender_label == {"column": "gender", "values": {"Female": "female", "Male": "male"}}
    assert ds.gender_labels().value_counts().to_dict() == {"female": 6, "male": 6}
    assert "gender" in tasks_for_dataset(ds)


def test_declared_map_on_another_column_with_unmapped_values_as_unknown():
    df = frame(sex=["F", "M", "X"] * 4).drop(columns="gender")
    ds = build({"gender_label": {"column": "sex", "values": {"F": "female", "M": "male"}}}, df)
    labels = ds.gender_labels()
    assert labels.value_counts().to_dict() == {"female": 4, "male": 4} and labels.isna().sum() == 4


def test_codes_without_a_map_give_no_gender_task():
    ds = build({}, frame().assign(gender=["F", "M"] * 6))
    assert ds.gender_label is None and "gender" not in tasks_for_dataset(ds)
    with pytest.raises(InputError, match="defines no gender_label"):
        ds.gender_labels()


@pytest.mark.parametrize("spec, message", [
    ({"column": "sex", "values": {"F": "female"}}, "gender_label column 'sex' is not in the manifest"),
    ({"column": "gender", "values": {"Female": "woman"}}, "gender_label maps to woman"),
    ({"column": "gender", "values": {"F": "female", "M": "male"}}, "no value of column 'gender' is mapped"),
    ({"column": "gender"}, "card gender_label needs column"),
])
def test_bad_gender_map_is_one_line_naming_the_manifest(spec, message):
    with pytest.raises(InputError, match=message) as err:
        build({"gender_label": spec})
    assert str(err.value).startswith("cards/manifest.csv: ") and "\n" not in str(err.value)


def test_no_dataset_with_the_task_marks_the_entry_not_applicable():
    no_subjects = build({})
    plan = [{"entry": "mobilefacenet--onnx-fp32", "task": "verification", "status": "pending"},
            {"entry": "gender-dlib--onnx-fp32", "task": "gender", "status": "pending"},
            {"entry": "blazeface--onnx-int8", "task": "detection", "status": "unavailable", "reason": "no ep"}]
    mark_not_applicable(plan, [no_subjects])
    assert plan[0]["status"] == "skipped"
    assert plan[0]["reason"] == "not applicable: verification needs subject ids; none in cards"
    assert plan[1]["status"] == "pending" and plan[2]["status"] == "unavailable"


# --- derived attributes and groupings -------------------------------------------------------------------------

def test_gender_shades_skin_type_and_two_groupings():
    ds = build(GENDER_SHADES)
    assert ds.frame["skin"].tolist() == [SKIN[f] for f in ds.frame["fitzpatrick"]]
    assert ds.groupings == (("fitzpatrick", "gender"), ("skin", "gender"))
    assert ds.default_group_by == ("fitzpatrick", "gender")
    assert ds.group_labels(["skin", "gender"]).value_counts().to_dict() == {
        "darker*Female": 4, "darker*Male": 2, "lighter*Female": 2, "lighter*Male": 4}


def test_default_group_by_leads_the_groupings():
    ds = build({**GENDER_SHADES, "default_group_by": ["skin"]})
    assert ds.groupings == (("skin",), ("fitzpatrick", "gender"), ("skin", "gender"))


def test_missing_source_value_stays_missing_but_an_unmapped_one_is_an_error():
    df = frame()
    df.loc[0, "fitzpatrick"] = None
    ds = build({"derived": GENDER_SHADES["derived"]}, df)
    assert pd.isna(ds.frame.loc[0, "skin"]) and ds.frame["skin"].notna().sum() == 11
    df.loc[0, "fitzpatrick"] = "VII"
    with pytest.raises(InputError, match=r"derived.skin: value\(s\) VII of column 'fitzpatrick' are not in its"):
        build({"derived": GENDER_SHADES["derived"]}, df)


@pytest.mark.parametrize("card, message", [
    ({"derived": {"skin": {"from": "type", "values": SKIN}}}, "derived.skin reads column 'type'"),
    ({"derived": {"skin": {"from": "fitzpatrick"}}}, "derived.skin needs from"),
    ({"derived": {"subject": {"from": "fitzpatrick", "values": SKIN}}}, "reserved column name"),
    ({"group_columns": ["gender"], "groupings": [["gender"], ["skin"]]}, "grouping skin: skin is not among"),
    ({"group_columns": ["gender"], "groupings": "gender"}, "groupings must be a list of attribute lists"),
])
def test_bad_derived_or_groupings_card(card, message):
    with pytest.raises(InputError, match=message):
        build(card)


def test_a_manifest_column_clashing_with_a_derived_one_is_refused():
    with pytest.raises(InputError, match="column 'skin' is in the manifest and also derived"):
        build(GENDER_SHADES, frame(skin=["darker"] * 12))


def test_bench_data_add_keeps_map_derivation_and_groupings(tmp_path, monkeypatch):
    """Registered and loaded back by name: the same frame, hash, groupings and gender map."""
    monkeypatch.setenv("BENCH_DATA_REGISTRY", str(tmp_path / "registry"))
    folder = tmp_path / "gs"
    (folder / "img").mkdir(parents=True)
    frame().to_csv(folder / "manifest.csv", index=False)
    (folder / "card.json").write_text(json.dumps({"name": "gs", **GENDER_SHADES}))
    data_root = tmp_path / "no-data-root"
    assert bench_data("--data-root", str(data_root), "data", "add", str(folder)) == 0
    stored = json.loads((tmp_path / "registry" / "gs" / "card.json").read_text())
    assert stored["gender_label"]["values"] == {"Female": "female", "Male": "male"}
    direct = build_dataset("gs", folder, frame(), {"name": "gs", **GENDER_SHADES}, "m")
    again = load_dataset("gs", data_root)
    assert again.manifest_sha256 == direct.manifest_sha256 and again.groupings == direct.groupings
    skin = lambda ds: ds.frame.set_index("image")["skin"].sort_index().tolist()  # noqa: E731 (stored sorted)
    assert skin(again) == skin(direct)
