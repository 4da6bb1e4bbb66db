"""Every reader on real files: the shared samples directly, and each public layout rebuilt in tmp_path from
copies of a few shared images; plus `bench data add` / `list` through the registry."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pandas as pd
import pytest

from helpers_data import bench_data
from harness.data.dataset import load_dataset
from harness.data.layouts import detect_layout, read, read_layout
from harness.errors import InputError, UsageError


def shared_data() -> Path:
    return Path(os.environ.get("BENCH_DATA") or Path(__file__).resolve().parents[2].parent / "shared" / "data")


FF = shared_data() / "fairface-sample"


def ff_images(n: int) -> list[Path]:
    """n shared FairFace-sample images, alternating genders, so fixtures hold real decodable faces."""
    labels = pd.read_csv(FF / "labels.csv")
    return [FF / p for p in labels.groupby("gender").head(n // 2 + 1)["image"].head(n)]


# --- shared samples ---------------------------------------------------------------------------------------------

def test_london_frl_sample():
    root = shared_data() / "london-frl"
    assert detect_layout(root) == "london-frl"
    ds = load_dataset("london-frl", shared_data())
    assert len(ds.frame) == 204 and ds.frame["subject"].nunique() == 102
    assert ds.default_group_by == ("ethnicity", "gender")
    assert set(ds.frame["ethnicity"]) == {"white", "black", "east_asian", "west_asian", "east_asian/white"}
    assert ds.frame["subject"].iloc[0] == "001"  # identities stay strings, leading zeros kept
    assert ds.frame["left_eye_x"].dtype == "float64" and "landmarks" not in ds.frame.columns
    eyes = ds.frame.dropna(subset=["left_eye_x"])  # smiling photos carry no landmarks
    assert len(eyes) == 102 and (eyes["left_eye_x"] < eyes["right_eye_x"]).all()  # "left" = the image's left
    assert ds.frame["age"].isna().sum() == 4  # 2 subjects without age, 2 images each
    assert ds.gender_labels().value_counts().to_dict() == {"male": 106, "female": 98}  # README: 53 + 49 sitters


def test_fairface_sample():
    ds = load_dataset("fairface-sample", shared_data())
    assert detect_layout(ds.root) == "fairface-sample"
    assert len(ds.frame) == 572 and not ds.has_subjects and "md5" not in ds.frame.columns
    counts = ds.group_labels().value_counts()
    assert len(counts) == 14 and counts.between(40, 42).all()


# --- public layouts rebuilt from copies ---------------------------------------------------------------------------

def test_fairface_official_layout(tmp_path):
    root = tmp_path / "fairface"
    rows = {"train": [], "val": []}
    for i, src in enumerate(ff_images(4)):
        split = "train" if i < 3 else "val"
        (root / split).mkdir(parents=True, exist_ok=True)
        shutil.copy(src, root / split / f"{i + 1}.jpg")
        gender = "Female" if "_Female_" in src.name else "Male"
        rows[split].append({"file": f"{split}/{i + 1}.jpg", "age": "20-29", "gender": gender,
                            "race": "East Asian" if i % 2 else "Latino_Hispanic", "service_test": "True"})
    for split, r in rows.items():
        pd.DataFrame(r).to_csv(root / f"fairface_label_{split}.csv", index=False)
    assert detect_layout(root) == "fairface"
    ds = read_layout("fairface", root)
    assert ds.id == "fairface" and len(ds.frame) == 4
    assert ds.frame["split"].tolist() == ["train", "train", "train", "val"]
    assert set(ds.frame["race"]) == {"East Asian", "Latino_Hispanic"}  # FairFace's own spellings
    assert set(ds.frame["gender"]) <= {"Male", "Female"}
    assert set(ds.gender_labels()) <= {"male", "female"}


def test_utkface_layout_maps_codes_and_reports_malformed_names(tmp_path):
    root = tmp_path / "UTKFace"
    root.mkdir()
    names = ["25_0_0_20170116174525125.jpg", "31_1_1_20170117012906685.jpg",
             "8_1_3_20170109204305937.jpg.chip.jpg", "40_0_4_20170103182513512.jpg"]
    bad = ["39_1_20170116174525125.jpg.chip.jpg", "61_3_2_20170109141609160.jpg", "readme.jpg"]
    for src, name in zip(ff_images(7), names + bad):
        shutil.copy(src, root / name)
    assert detect_layout(root) == "utkface"
    got = read("utkface", root)
    frame = got.dataset.frame.set_index("image")
    assert frame.loc[names[0], ["age", "gender", "race"]].tolist() == ["25", "male", "White"]
    assert frame.loc[names[1], ["gender", "race"]].tolist() == ["female", "Black"]
    assert frame.loc[names[2], "race"] == "Indian" and frame.loc[names[3], "race"] == "Others"
    assert sorted(s.file for s in got.skipped) == sorted(bad)
    assert got.dataset.card["codes"]["race"]["2"] == "Asian"


def make_lfw(root: Path) -> None:
    people = {"George_W_Bush": 2, "Serena_Williams": 2, "Colin_Powell": 1}
    sources = iter(ff_images(5))
    for person, n in people.items():
        (root / person).mkdir(parents=True)
        for k in range(1, n + 1):
            shutil.copy(next(sources), root / person / f"{person}_{k:04d}.jpg")


def test_lfw_layout_with_per_person_labels(tmp_path):
    root = tmp_path / "lfw"
    make_lfw(root)
    labels = tmp_path / "lfw_attrs.csv"
    pd.DataFrame({"name": ["George W Bush", "Serena Williams"], "gender": ["Male", "Female"],
                  "race": ["White", "Black"]}).to_csv(labels, index=False)
    assert detect_layout(root) == "lfw"
    got = read("lfw", root, labels=labels)
    ds = got.dataset
    frame = ds.frame.set_index("image")
    assert frame.loc["George_W_Bush/George_W_Bush_0002.jpg", ["subject", "gender"]].tolist() == ["George_W_Bush", "Male"]
    # the label file picks the subset: Colin Powell has no row, so he is left out and said, not grouped "unknown"
    assert "Colin_Powell" not in set(ds.frame["subject"]) and len(ds.frame) == 4
    assert [(s.file, s.reason) for s in got.skipped] == [("Colin_Powell/", "not in lfw_attrs.csv: left out (1 images)")]
    assert ds.group_columns == ("gender", "race") and ds.frame["subject"].nunique() == 2
    assert ds.gender_labels().tolist().count("female") == 2
    assert ds.gender_label == {"column": "gender", "values": {"Female": "female", "Male": "male"}}


def test_lfw_layout_with_per_image_labels_and_no_labels(tmp_path):
    root = tmp_path / "lfw"
    make_lfw(root)
    labels = tmp_path / "per_image.csv"
    pd.DataFrame({"image": ["Serena_Williams/Serena_Williams_0001.jpg"], "smiling": ["yes"]}).to_csv(labels, index=False)
    got = read("lfw", root, labels=labels, group_by=["smiling"])
    assert got.dataset.group_labels().value_counts().to_dict() == {"yes": 1}
    assert len(got.skipped) == 4 and all(s.reason == "not in per_image.csv: left out" for s in got.skipped)
    plain = read_layout("lfw", root)
    assert plain.group_columns == () and set(plain.group_labels()) == {"all"}


def test_plain_manifest_with_toml_card(tmp_path):
    root = tmp_path / "mine"
    (root / "photos").mkdir(parents=True)
    rows = []
    for i, src in enumerate(ff_images(4)):
        shutil.copy(src, root / "photos" / f"p{i}.jpg")
        rows.append({"image": f"photos/p{i}.jpg", "skin_type": f"type{i % 2 + 1}", "site": "a"})
    pd.DataFrame(rows).to_csv(root / "my_labels.csv", index=False)
    (root / "card.toml").write_text('name = "mine"\nlicence = "internal"\ngroup_columns = ["skin_type"]\n'
                                    '[attributes.skin_type]\nmeaning = "Fitzpatrick, clinician-rated"\n')
    assert detect_layout(root / "my_labels.csv") == "manifest"
    ds = read_layout("manifest", root / "my_labels.csv")
    assert ds.id == "mine" and ds.root == root.resolve() and ds.default_group_by == ("skin_type",)
    assert ds.card["attributes"]["skin_type"]["meaning"].startswith("Fitzpatrick")


def test_unrecognisable_folder_names_the_formats(tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(InputError, match=r"cannot tell the layout; pass --format \{london-frl,"):
        detect_layout(tmp_path)


# --- registry through `bench data add/list` -------------------------------------------------------------------

def test_add_then_list_then_load_by_name(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("BENCH_DATA_REGISTRY", str(tmp_path / "registry"))
    root = tmp_path / "lfw"
    make_lfw(root)
    assert bench_data("--data-root", str(shared_data()), "data", "add", str(root), "--name", "lfw-mini", "--json") == 0
    added = json.loads(capsys.readouterr().out)
    assert added["n"] == 5 and added["registry"] == str(tmp_path / "registry" / "lfw-mini")
    assert bench_data("--data-root", str(shared_data()), "data", "list", "--json") == 0
    listed = {d["name"]: d for d in json.loads(capsys.readouterr().out)}
    assert listed["lfw-mini"]["kind"] == "registered" and listed["london-frl"]["kind"] == "built-in"
    again = load_dataset("lfw-mini", shared_data())
    direct = read_layout("lfw", root, name="lfw-mini")
    assert again.manifest_sha256 == direct.manifest_sha256 and again.root == root.resolve()
    with pytest.raises(UsageError, match="already registered.*--force"):
        bench_data("--data-root", str(shared_data()), "data", "add", str(root), "--name", "lfw-mini")
    with pytest.raises(UsageError, match="'london-frl' is a built-in"):
        bench_data("--data-root", str(shared_data()), "data", "add", str(shared_data() / "london-frl"))


def test_registry_defaults_under_the_cache_and_read_only_registry_is_explained(tmp_path, monkeypatch):
    monkeypatch.delenv("BENCH_DATA_REGISTRY", raising=False)
    cache = tmp_path / "cache"
    cache.mkdir()
    monkeypatch.setenv("BENCH_CACHE", str(cache))
    root = tmp_path / "lfw"
    make_lfw(root)
    data_root = tmp_path / "data"
    data_root.mkdir()
    assert bench_data("--data-root", str(data_root), "data", "add", str(root)) == 0
    assert (cache / "datasets" / "lfw" / "card.json").is_file()
    assert not (data_root / "datasets").exists()  # the data root is never written to
    if os.geteuid() != 0:  # root ignores permissions
        monkeypatch.setenv("BENCH_CACHE", str(cache / "sub"))
        cache.chmod(0o500)
        try:
            with pytest.raises(InputError, match="cannot write the dataset registry.*BENCH_DATA_REGISTRY"):
                bench_data("--data-root", str(data_root), "data", "add", str(root))
        finally:
            cache.chmod(0o700)


def test_lfw_follows_a_symlinked_person_folder_inside_the_root(tmp_path):
    root = tmp_path / "lfw"
    make_lfw(root)
    store = root / "_store"
    store.mkdir()
    (root / "Serena_Williams").rename(store / "Serena_Williams")
    (root / "Serena_Williams").symlink_to(store / "Serena_Williams", target_is_directory=True)
    ds = read_layout("lfw", root)
    assert ds.frame["subject"].value_counts().to_dict() == {"George_W_Bush": 2, "Serena_Williams": 2, "Colin_Powell": 1}
    assert "Serena_Williams/Serena_Williams_0001.jpg" in set(ds.frame["image"])


def test_lfw_refuses_a_symlinked_folder_leading_outside_the_root(tmp_path):
    root = tmp_path / "lfw"
    make_lfw(root)
    outside = tmp_path / "elsewhere" / "Serena_Williams"
    outside.parent.mkdir()
    (root / "Serena_Williams").rename(outside)
    (root / "Serena_Williams").symlink_to(outside, target_is_directory=True)
    with pytest.raises(InputError) as err:
        read_layout("lfw", root)
    assert str(err.value) == (f"{root / 'Serena_Williams'}: symlinked folder resolves to {outside}, outside the "
                              f"dataset root {root}; move or copy it inside the root")
    (root / "Serena_Williams").unlink()
    (root / "Serena_Williams").symlink_to(tmp_path / "gone", target_is_directory=True)
    with pytest.raises(InputError, match="broken symlink"):
        read_layout("lfw", root)


def test_lfw_label_file_matching_nobody_is_one_clear_error(tmp_path):
    root = tmp_path / "lfw"
    make_lfw(root)
    labels = tmp_path / "other.csv"
    pd.DataFrame({"name": ["Nobody Here"], "gender": ["Male"]}).to_csv(labels, index=False)
    with pytest.raises(InputError, match="labels none of the 5 images"):
        read_layout("lfw", root, labels=labels)
