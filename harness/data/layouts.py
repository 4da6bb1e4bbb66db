"""Readers for the layouts people download, each giving the same normalised frame (see harness/data/dataset.py).

One reader per layout; `detect_layout` picks one from what is on disk, `read` runs it. Readers keep the dataset's
own attribute names and values (FairFace "Male", London "male"), except where the source stores integer codes
(UTKFace), which are mapped to the names its authors document. The card's `gender_label` says how to get the
gender task's "female"/"male" from each dataset's own values.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pandas as pd

from harness.data.dataset import (
    CARD_NAMES,
    GEOMETRY_COLUMNS,
    MANIFEST_NAMES,
    Dataset,
    build_dataset,
    find_first,
    load_manifest_dir,
    read_card,
    read_manifest,
)
from harness.errors import InputError, UnknownIdError
from harness.names import shown, utf8_problem

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
LAYOUTS = ("london-frl", "london-frl-views", "fairface-sample", "fairface", "utkface", "lfw", "manifest")
BUILTIN_NAMES = ("london-frl", "london-frl-views", "fairface-sample")  # shipped under the data root (../shared/data)

_IDENTITY_GENDER = {"column": "gender", "values": {"female": "female", "male": "male"}}
_DATASET_ID = re.compile(r"^[a-z0-9][a-z0-9._-]*$")


@dataclass(frozen=True)
class Skipped:
    """A file a reader could not use (e.g. a UTKFace name that does not parse): reported, never fatal."""

    file: str
    reason: str


@dataclass(frozen=True)
class LayoutRead:
    dataset: Dataset
    layout: str
    skipped: list[Skipped] = field(default_factory=list)


def _images_under(root: Path) -> list[Path]:
    """Every image file below root; a file name that is not UTF-8 is refused here, naming it, before it reaches a
    table (pandas with pyarrow strings cannot even hold it)."""
    images = sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    for p in images:
        if utf8_problem(str(p)):
            raise InputError(f"{shown(p)}: file name is not valid UTF-8; rename it")
    return images


def _header(csv_path: Path) -> list[str]:
    with open(csv_path, encoding="utf-8", errors="replace") as fh:
        return [c.strip() for c in fh.readline().strip().split(",")]


# --- the shared samples --------------------------------------------------------------------------------------


def _read_london(root: Path, **_: Any) -> tuple[pd.DataFrame, dict, list[Skipped]]:
    frame = read_manifest(root / "labels.csv")
    # `landmarks` is the path of the .tem file (neutral images only): a file reference, not an attribute.
    frame = frame.drop(columns=["landmarks"], errors="ignore")
    card = {
        "name": "london-frl",
        "layout": "london-frl",
        "source": "DeBruine & Jones (2017) Face Research Lab London Set v5, doi:10.6084/m9.figshare.5047666.v5 "
        "(640 px copy, see README.md)",
        "licence": "CC BY 4.0",
        "attributes": {
            "gender": {"meaning": "self-reported", "values": ["female", "male"]},
            "ethnicity": {"meaning": "self-reported: white, black, east_asian, west_asian, east_asian/white"},
            "expression": {"meaning": "neutral (NNN_03) or smiling (NNN_08) studio photo"},
            "age": {"meaning": "years, self-reported; missing for 2 subjects"},
        },
        "group_columns": ["gender", "ethnicity"],
        "default_group_by": ["ethnicity", "gender"],
        "oracle_columns": [c for c in GEOMETRY_COLUMNS if c in frame.columns],
        "gender_label": _IDENTITY_GENDER,
    }
    return frame, card, []


def _read_london_views(root: Path, **_: Any) -> tuple[pd.DataFrame, dict, list[Skipped]]:
    """All ten views of the London set: the watchlist (1:N) set. Its card declares the gallery/probe rules
    (harness/data/watchlist.py): the front neutral photo of each enrolled person is the gallery, every other photo
    a probe, a seeded share of people held out as non-mated searches, FairFace faces added as distractors."""
    frame = read_manifest(root / "labels.csv")
    card = {
        "name": "london-frl-views",
        "layout": "london-frl-views",
        "source": "DeBruine & Jones (2017) Face Research Lab London Set v5, doi:10.6084/m9.figshare.5047666.v5, "
        "all ten views (640 px copy, see README.md)",
        "licence": "CC BY 4.0",
        "attributes": {
            "gender": {"meaning": "self-reported", "values": ["female", "male"]},
            "ethnicity": {"meaning": "self-reported: white, black, east_asian, west_asian, east_asian/white"},
            "expression": {"meaning": "neutral (shots 01-05) or smiling (06-10)", "values": ["neutral", "smiling"]},
            "view": {"meaning": "camera angle", "values": ["front", "left_3quarter", "left_profile",
                                                          "right_3quarter", "right_profile"]},
            "age": {"meaning": "years, self-reported; missing for 2 images"},
        },
        "group_columns": ["gender", "ethnicity"],
        "default_group_by": ["ethnicity", "gender"],
        "gender_label": _IDENTITY_GENDER,
        "identification": {
            "gallery": {"view": "front", "expression": "neutral"},
            "nonmated_share": 0.2,
            "distractors": "fairface-sample",
        },
    }
    return frame, card, []


def _read_fairface_sample(root: Path, **_: Any) -> tuple[pd.DataFrame, dict, list[Skipped]]:
    frame = read_manifest(root / "labels.csv").drop(columns=["md5"], errors="ignore")
    card = {
        "name": "fairface-sample",
        "layout": "fairface-sample",
        "source": "Karkkainen & Joo (2021) FairFace, WACV; 572-image sample of the train split (see README.md)",
        "licence": "CC BY 4.0",
        "attributes": {
            "race": {"meaning": "annotator-perceived: Black, EastAsian, Indian, Latino, MiddleEastern, "
                     "SoutheastAsian, White"},
            "gender": {"meaning": "annotator-perceived", "values": ["female", "male"]},
            "age_bin": {"meaning": "annotator-perceived: 20s, 30s, 40s, 50s, 60s, 70plus"},
        },
        "group_columns": ["race", "gender", "age_bin"],
        "default_group_by": ["race", "gender"],
        "gender_label": _IDENTITY_GENDER,
    }
    return frame, card, []


# --- public layouts --------------------------------------------------------------------------------------------

FAIRFACE_LABEL_FILES = {"train": "fairface_label_train.csv", "val": "fairface_label_val.csv"}


def _read_fairface(root: Path, **_: Any) -> tuple[pd.DataFrame, dict, list[Skipped]]:
    parts = []
    for split, name in FAIRFACE_LABEL_FILES.items():
        if (root / name).is_file():
            part = read_manifest(root / name)
            if "file" not in part.columns:
                raise InputError(f"{root / name}: missing required column 'file'")
            parts.append(part.rename(columns={"file": "image"}).assign(split=split))
    if not parts:
        raise InputError(f"{root}: no {' or '.join(FAIRFACE_LABEL_FILES.values())}")
    card = {
        "name": "fairface",
        "layout": "fairface",
        "source": "Karkkainen & Joo (2021) FairFace, WACV; github.com/joojs/fairface",
        "licence": "CC BY 4.0",
        "attributes": {
            "race": {"meaning": "annotator-perceived: White, Black, Latino_Hispanic, East Asian, Southeast Asian, "
                     "Indian, Middle Eastern (FairFace's own spellings)"},
            "gender": {"meaning": "annotator-perceived: Male / Female (FairFace's own capitalisation, kept)"},
            "age": {"meaning": "annotator-perceived bin: 0-2, 3-9, 10-19, ..., more than 70"},
            "service_test": {"meaning": "FairFace's flag for its balanced service-test subset"},
        },
        "group_columns": ["race", "gender", "age"],
        "default_group_by": ["race", "gender"],
        "gender_label": {"column": "gender", "values": {"Female": "female", "Male": "male"}},
    }
    return pd.concat(parts, ignore_index=True), card, []


UTK_GENDER = {"0": "male", "1": "female"}
UTK_RACE = {"0": "White", "1": "Black", "2": "Asian", "3": "Indian", "4": "Others"}
# [age]_[gender]_[race]_[date&time].jpg; the aligned release appends ".chip.jpg".
_UTK_NAME = re.compile(r"^(?P<age>\d{1,3})_(?P<gender>[01])_(?P<race>[0-4])_(?P<stamp>\d{8,})(?:\.\w+)*$")


def _read_utkface(root: Path, **_: Any) -> tuple[pd.DataFrame, dict, list[Skipped]]:
    rows, skipped = [], []
    for path in _images_under(root):
        rel = path.relative_to(root).as_posix()
        match = _UTK_NAME.match(path.name)
        if match is None:
            skipped.append(Skipped(rel, "name is not [age]_[gender]_[race]_[date&time].jpg with gender 0-1, race 0-4"))
            continue
        rows.append({"image": rel, "age": str(int(match["age"])), "gender": UTK_GENDER[match["gender"]],
                     "race": UTK_RACE[match["race"]]})
    if not rows:
        raise InputError(f"{root}: no UTKFace-named images ({len(skipped)} files with other names)")
    card = {
        "name": "utkface",
        "layout": "utkface",
        "source": "Zhang, Song & Qi (2017) UTKFace, susanqq.github.io/UTKFace",
        "licence": "non-commercial research only (UTKFace terms)",
        "attributes": {
            "age": {"meaning": "years, from the file name"},
            "gender": {"meaning": "file-name code 0 -> male, 1 -> female"},
            "race": {"meaning": "file-name code 0 White, 1 Black, 2 Asian, 3 Indian, 4 Others"},
        },
        "codes": {"gender": UTK_GENDER, "race": UTK_RACE},
        "group_columns": ["race", "gender"],
        "default_group_by": ["race", "gender"],
        "gender_label": _IDENTITY_GENDER,
    }
    return pd.DataFrame(rows), card, skipped


_PERSON_KEYS = ("subject", "name", "person")


def _person_folders(root: Path) -> list[Path]:
    """LFW's <root>/<Name>/ folders. A symlinked folder is followed when it resolves inside the root; one that
    leads outside (or nowhere) is refused: images outside the root are never read (see _check_paths)."""
    real_root = root.resolve()
    folders = []
    for d in sorted(root.iterdir()):
        if d.is_symlink():
            target = d.resolve()
            if not target.exists():
                raise InputError(f"{d}: broken symlink (points to {target})")
            if target.is_dir() and not target.is_relative_to(real_root):
                raise InputError(f"{d}: symlinked folder resolves to {target}, outside the dataset root {root}; "
                                 "move or copy it inside the root")
        if d.is_dir():
            folders.append(d)
    return folders


def _read_lfw(root: Path, labels: Path | None = None, **_: Any) -> tuple[pd.DataFrame, dict, list[Skipped]]:
    rows = [{"image": p.relative_to(root).as_posix(), "subject": d.name}
            for d in _person_folders(root) for p in sorted(d.iterdir())
            if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()]
    if not rows:
        raise InputError(f"{root}: no person folders with images (LFW layout is <root>/<Name>/<Name>_0001.jpg)")
    frame = pd.DataFrame(rows)
    attributes: list[str] = []
    skipped: list[Skipped] = []
    if labels is not None:
        table = read_manifest(labels)
        if "image" in table.columns:  # per-image labels
            on = "image"
        else:  # per-person labels; LFW writes names with underscores, attribute files often with spaces
            on = next((k for k in _PERSON_KEYS if k in table.columns), None)
            if on is None:
                raise InputError(f"{labels}: needs an 'image' column or one of {', '.join(_PERSON_KEYS)}")
            table = table.rename(columns={on: "subject"})
            table["subject"] = table["subject"].str.strip().str.replace(" ", "_", regex=False)
            on = "subject"
        if table[on].duplicated().any():
            raise InputError(f"{labels}: duplicate {on} '{table[on][table[on].duplicated()].iloc[0]}'")
        attributes = [c for c in table.columns if c not in ("image", "subject")]
        # The label file chooses the subset: people (or images) it does not list are left out and reported, not
        # pooled into an "unknown" group that would sit beside the real groups in every table.
        labelled = frame[on].isin(set(table[on]))
        for key, n in frame.loc[~labelled, on].value_counts(sort=False).sort_index().items():
            what = f"{key}/" if on == "subject" else key
            skipped.append(Skipped(what, f"not in {labels.name}: left out" + (f" ({n} images)" if on == "subject"
                                                                                 else "")))
        frame = frame[labelled].merge(table[[on] + attributes], on=on, how="left", validate="many_to_one")
        if frame.empty:
            raise InputError(f"{labels}: labels none of the {len(labelled)} images under {root} "
                             f"(matched on '{on}')")
    card = {
        "name": "lfw",
        "layout": "lfw",
        "source": "Huang et al. (2007) Labeled Faces in the Wild, vis-www.cs.umass.edu/lfw"
        + (f"; attributes from {labels.name}" if labels is not None else ""),
        "licence": "research use (LFW terms); check the attribute file's own licence",
        "attributes": {a: {"meaning": f"from {labels.name}"} for a in attributes} if labels is not None else {},
        "group_columns": attributes,
        "default_group_by": attributes,
    }
    return frame, card, skipped


def _read_manifest_layout(path: Path, labels: Path | None = None, **_: Any) -> tuple[pd.DataFrame, dict, list[Skipped]]:
    """A user's CSV (PATH itself, or --labels) with an `image` column, plus card.toml/card.json beside it."""
    csv = labels if labels is not None else path
    if csv.is_dir():
        csv = find_first(csv, MANIFEST_NAMES + ("labels.csv",))
        if csv is None:
            raise InputError(f"{path}: no {', '.join(MANIFEST_NAMES)} or labels.csv")
    card_path = find_first(csv.parent, CARD_NAMES)
    card = read_card(card_path) if card_path else {}
    frame = read_manifest(csv)
    card.setdefault("name", csv.parent.name if csv.stem in ("manifest", "labels") else csv.stem)
    card.setdefault("layout", "manifest")
    card.setdefault("source", str(csv))
    card.setdefault("licence", "unknown (no card)")
    card.setdefault("group_columns", [])
    card["root"] = str((csv.parent / card.get("root", ".")).resolve())
    return frame, card, []


_READERS: dict[str, Callable[..., tuple[pd.DataFrame, dict, list[Skipped]]]] = {
    "london-frl": _read_london,
    "london-frl-views": _read_london_views,
    "fairface-sample": _read_fairface_sample,
    "fairface": _read_fairface,
    "utkface": _read_utkface,
    "lfw": _read_lfw,
    "manifest": _read_manifest_layout,
}


def detect_layout(path: Path) -> str:
    """Pick the reader from what is on disk; InputError when nothing fits (then --format decides)."""
    path = Path(path)
    if path.is_file():
        if path.suffix.lower() in (".csv", ".parquet"):
            return "manifest"
        raise InputError(f"{path}: a file must be a CSV/Parquet manifest")
    if not path.is_dir():
        raise InputError(f"{path}: no such file or folder")
    if find_first(path, MANIFEST_NAMES) and find_first(path, CARD_NAMES):
        return "manifest"
    if any((path / n).is_file() for n in FAIRFACE_LABEL_FILES.values()):
        return "fairface"
    if (path / "labels.csv").is_file():
        header = set(_header(path / "labels.csv"))
        if {"image", "subject", "expression", "view", "ethnicity"} <= header:
            return "london-frl-views"
        if {"image", "subject", "expression", "ethnicity"} <= header:
            return "london-frl"
        if {"image", "race", "gender", "age_bin"} <= header:
            return "fairface-sample"
        return "manifest"
    top = [p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES]
    if top and sum(bool(_UTK_NAME.match(p.name)) for p in top) * 2 > len(top):
        return "utkface"
    people = [d for d in path.iterdir() if d.is_dir()]
    if people and all(any(f.name.startswith(d.name + "_") for f in d.iterdir()) for d in people[:20]):
        return "lfw"
    raise InputError(f"{path}: cannot tell the layout; pass --format {{{','.join(LAYOUTS)}}}")


def builtin_layouts(data_root: Path) -> dict[str, str]:
    """Built-in datasets present under the data root: name -> layout (the name is also the layout)."""
    return {n: n for n in BUILTIN_NAMES if (Path(data_root) / n / "labels.csv").is_file()}


def read(layout: str, path: Path, *, name: str | None = None, labels: Path | None = None,
         group_by: list[str] | None = None) -> LayoutRead:
    """Run one reader and build the validated Dataset; `group_by` overrides the card's default grouping."""
    if layout not in _READERS:
        raise UnknownIdError("layout", layout, LAYOUTS)
    path = Path(path).expanduser().resolve()
    if layout == "manifest" and path.is_dir() and find_first(path, MANIFEST_NAMES) and find_first(path, CARD_NAMES) \
            and labels is None:
        ds = load_manifest_dir(path, name)
        return LayoutRead(_regroup(ds, group_by) if group_by else ds, layout)
    if layout != "manifest" and not path.is_dir():
        raise InputError(f"{path}: the {layout} layout is a folder")
    frame, card, skipped = _READERS[layout](path, labels=Path(labels).expanduser() if labels else None)
    dataset_id = name or card["name"]
    if not _DATASET_ID.match(dataset_id):
        raise InputError(f"dataset name '{dataset_id}': use lower-case letters, digits, '.', '_', '-'")
    card["name"] = dataset_id
    if group_by:
        card["group_columns"] = list(dict.fromkeys(list(card.get("group_columns", [])) + list(group_by)))
        card["default_group_by"] = list(group_by)
    root = Path(card.pop("root")) if layout == "manifest" else path
    origin = str(labels or (path / "labels.csv" if (path / "labels.csv").is_file() else path))
    return LayoutRead(build_dataset(dataset_id, root, frame, card, origin), layout, skipped)


def _regroup(ds: Dataset, group_by: list[str]) -> Dataset:
    ds.check_group_by(group_by)
    card = dict(ds.card, default_group_by=list(group_by),
                group_columns=list(dict.fromkeys(list(ds.group_columns) + list(group_by))))
    return build_dataset(ds.id, ds.root, ds.frame, card, ds.id)


def read_layout(layout: str, path: Path, *, name: str | None = None, labels: Path | None = None,
                group_by: list[str] | None = None) -> Dataset:
    return read(layout, path, name=name, labels=labels, group_by=group_by).dataset
