"""Manifest validation, hashing and the card's grouping, on small manifests over copies of shared images."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pandas as pd
import pytest

from harness.data.dataset import build_dataset, canonical_csv, load_dataset, load_manifest_dir, read_manifest
from harness.errors import InputError, UnknownIdError


def shared_data() -> Path:
    return Path(os.environ.get("BENCH_DATA") or Path(__file__).resolve().parents[2].parent / "shared" / "data")


CARD = {"name": "mini", "licence": "CC BY 4.0", "group_columns": ["race", "gender"], "default_group_by": ["race"]}


@pytest.fixture()
def mini(tmp_path) -> Path:
    """A manifest-layout folder: 4 FairFace-sample images copied in, manifest.csv + card.json."""
    src = shared_data() / "fairface-sample"
    labels = pd.read_csv(src / "labels.csv").groupby("gender").head(2)
    root = tmp_path / "mini"
    rows = []
    for i, r in enumerate(labels.itertuples()):
        (root / "img").mkdir(parents=True, exist_ok=True)
        shutil.copy(src / r.image, root / "img" / f"{i}.jpg")
        rows.append({"image": f"img/{i}.jpg", "race": r.race, "gender": r.gender})
    pd.DataFrame(rows).to_csv(root / "manifest.csv", index=False)
    (root / "card.json").write_text(json.dumps(CARD))
    return root


def rows_of(root: Path) -> list[dict]:
    return pd.read_csv(root / "manifest.csv", dtype=str).to_dict("records")


def rewrite(root: Path, rows: list[dict]) -> None:
    pd.DataFrame(rows).to_csv(root / "manifest.csv", index=False)


def test_manifest_dir_loads_with_card_grouping(mini):
    ds = load_manifest_dir(mini)
    assert ds.id == "mini" and len(ds.frame) == 4
    assert ds.group_columns == ("race", "gender") and ds.default_group_by == ("race",)
    assert ds.sample_id("img/0.jpg") == "mini/img/0.jpg"
    assert ds.group_labels(["gender", "race"]).str.count(r"\*").eq(1).all()
    assert ds.to_record()["n"] == 4


@pytest.mark.parametrize("bad", ["../outside.jpg", "img/../../outside.jpg", "/etc/passwd"])
def test_rows_pointing_outside_the_root_are_refused(mini, bad):
    rows = rows_of(mini)
    rows[2]["image"] = bad
    rewrite(mini, rows)
    with pytest.raises(InputError, match=r"manifest\.csv row 3: image .* outside the dataset root"):
        load_manifest_dir(mini)


def test_symlink_escaping_the_root_is_refused(mini, tmp_path):
    outside = tmp_path / "elsewhere.jpg"
    shutil.copy(mini / "img" / "0.jpg", outside)
    (mini / "img" / "link.jpg").symlink_to(outside)
    rows = rows_of(mini) + [{"image": "img/link.jpg", "race": "White", "gender": "male"}]
    rewrite(mini, rows)
    with pytest.raises(InputError, match=r"row 5: image 'img/link.jpg' resolves to .*elsewhere\.jpg, outside"):
        load_manifest_dir(mini)


def test_missing_image_column_is_refused(mini):
    pd.DataFrame(rows_of(mini)).rename(columns={"image": "file"}).to_csv(mini / "manifest.csv", index=False)
    with pytest.raises(InputError, match=r"manifest\.csv: missing required column 'image'"):
        load_manifest_dir(mini)


def test_duplicate_image_rows_are_refused(mini):
    rows = rows_of(mini)
    rewrite(mini, rows + [rows[1]])
    with pytest.raises(InputError, match=r"row 5: duplicate image 'img/1.jpg' \(first at row 2\)"):
        load_manifest_dir(mini)


def test_group_column_missing_from_manifest_is_refused(mini):
    (mini / "card.json").write_text(json.dumps(dict(CARD, group_columns=["race", "skin_tone"])))
    with pytest.raises(InputError, match="group column.*skin_tone.*not in the manifest"):
        load_manifest_dir(mini)


def test_empty_value_in_a_group_column_is_refused(mini):
    rows = rows_of(mini)
    rows[3]["gender"] = ""
    rewrite(mini, rows)
    with pytest.raises(InputError, match="row 4: empty value in group column 'gender'"):
        load_manifest_dir(mini)


def test_card_value_with_no_rows_is_an_empty_group(mini):
    card = dict(CARD, attributes={"gender": {"values": ["female", "male", "nonbinary"]}})
    (mini / "card.json").write_text(json.dumps(card))
    with pytest.raises(InputError, match=r"manifest\.csv: empty group\(s\) gender=nonbinary: no rows"):
        load_manifest_dir(mini)


def test_unknown_group_attribute_asked_for(mini):
    ds = load_manifest_dir(mini)
    with pytest.raises(InputError, match="dataset mini: unknown group attribute.*ethnicity; valid: race, gender"):
        ds.group_labels(["ethnicity"])


def test_manifest_sha256_ignores_row_order_and_file_format_but_not_labels(mini):
    ds = load_manifest_dir(mini)
    rows = rows_of(mini)
    shuffled = build_dataset("mini", mini, pd.DataFrame(rows[::-1]), CARD, "shuffled")
    assert shuffled.manifest_sha256 == ds.manifest_sha256
    rows[0]["gender"] = "female" if rows[0]["gender"] == "male" else "male"
    changed = build_dataset("mini", mini, pd.DataFrame(rows), CARD, "changed")
    assert changed.manifest_sha256 != ds.manifest_sha256
    assert canonical_csv(ds.frame).startswith(b"image,race,gender\n")


def test_parquet_without_pyarrow_is_a_clear_error(tmp_path):
    try:
        import pyarrow  # noqa: F401
        pytest.skip("pyarrow is installed: Parquet is readable here")
    except ModuleNotFoundError:
        pass
    path = tmp_path / "manifest.parquet"
    path.write_bytes(b"PAR1")
    with pytest.raises(InputError, match=r"manifest\.parquet: reading Parquet manifests needs pyarrow"):
        read_manifest(path)


def test_unknown_dataset_name_lists_the_valid_ones(tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_DATA_REGISTRY", str(tmp_path / "reg"))
    with pytest.raises(UnknownIdError, match="unknown dataset 'nope'; valid: fairface-sample, london-frl"):
        load_dataset("nope", shared_data())
