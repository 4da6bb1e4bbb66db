"""The dataset model: a normalised manifest frame + a card, validated once at load.

Every reader (harness/data/layouts.py) produces a raw frame and a card; `build_dataset` turns them into a `Dataset`
with one column vocabulary, so nothing downstream knows which layout a dataset came from.

Frame columns (docs/datasets.md):
  image               path relative to the dataset root, POSIX separators (the sample id is f"{id}/{image}")
  subject             identity label, or absent when the dataset has no identities
  split               the dataset's own split name (e.g. FairFace "train"/"val"), optional
  <attribute columns> strings in the dataset's own names and values (never integer codes); NA when unknown
  face_x0..face_y1    optional loose face box in image pixels
  left_eye_x..right_eye_y  optional eye centres in pixels ("left" = the eye on the image's left)
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Mapping

import pandas as pd

from harness.data.watchlist import rules_of, watchlist_split
from harness.errors import InputError, UnknownIdError
from harness.names import safe_id, shown, utf8_problem

try:  # Python 3.11+; tomli is the declared fallback for 3.10 in pyproject.toml
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - exercised only on 3.10
    import tomli as tomllib  # type: ignore[no-redef]

BOX_COLUMNS = ("face_x0", "face_y0", "face_x1", "face_y1")
EYE_COLUMNS = ("left_eye_x", "left_eye_y", "right_eye_x", "right_eye_y")
GEOMETRY_COLUMNS = BOX_COLUMNS + EYE_COLUMNS
RESERVED_COLUMNS = ("image", "subject", "split") + GEOMETRY_COLUMNS

# Joins group values the way rate rows do: group_by "gender*ethnicity", group "female*black".
GROUP_SEP = "*"

MANIFEST_NAMES = ("manifest.csv", "manifest.parquet")
CARD_NAMES = ("card.toml", "card.json")


@dataclass(frozen=True, eq=False)
class Dataset:
    """A validated dataset. `frame` is shared: treat it as read-only (copy before changing it)."""

    id: str
    root: Path
    frame: pd.DataFrame
    group_columns: tuple[str, ...]
    default_group_by: tuple[str, ...]
    manifest_sha256: str
    card: Mapping[str, Any] = field(default_factory=dict)

    @property
    def groupings(self) -> tuple[tuple[str, ...], ...]:
        """Every grouping scored per run: the default first, then the card's other `groupings` (e.g. race*gender
        and skin*gender, as Gender Shades reports both from one data set)."""
        listed = [self.default_group_by] + [tuple(g) for g in self.card.get("groupings") or []]
        return tuple(dict.fromkeys(listed))

    @property
    def has_subjects(self) -> bool:
        return "subject" in self.frame.columns and bool(self.frame["subject"].notna().any())

    @property
    def attribute_columns(self) -> tuple[str, ...]:
        return tuple(c for c in self.frame.columns if c not in RESERVED_COLUMNS)

    def sample_id(self, image: str) -> str:
        return f"{self.id}/{image}"

    def path(self, image: str) -> Path:
        return self.root / image

    def check_group_by(self, group_by: list[str] | tuple[str, ...] | None) -> tuple[str, ...]:
        """Return group_by (default: the card's) after checking every attribute exists in the frame."""
        chosen = tuple(group_by) if group_by else self.default_group_by
        unknown = [c for c in chosen if c not in self.attribute_columns]
        if unknown:
            raise InputError(
                f"dataset {self.id}: unknown group attribute(s) {', '.join(unknown)}; "
                f"valid: {', '.join(self.attribute_columns) or '(none)'}"
            )
        return chosen

    def group_labels(self, group_by: list[str] | tuple[str, ...] | None = None) -> pd.Series:
        """One label per row, e.g. "female*black"; "all" when the dataset has no group attributes."""
        cols = self.check_group_by(group_by)
        if not cols:
            return pd.Series("all", index=self.frame.index, dtype="str")
        return self.frame[list(cols)].fillna("NA").astype(str).agg(GROUP_SEP.join, axis=1)

    @property
    def gender_label(self) -> Mapping[str, Any] | None:
        """The card's gender mapping {"column": ..., "values": {own value: "female"|"male"}}, or None."""
        return self.card.get("gender_label") or None

    def gender_labels(self) -> pd.Series:
        """Ground truth for the gender task as "female"/"male" (NA where the value is unmapped or missing)."""
        spec = self.gender_label
        if spec is None:
            raise InputError(f"dataset {self.id}: the card defines no gender_label; gender accuracy needs one")
        return self.frame[spec["column"]].map(dict(spec["values"]))

    def to_record(self) -> dict[str, Any]:
        """The run.json data.datasets entry."""
        return {
            "id": self.id,
            "root": str(self.root),
            "manifest_sha256": self.manifest_sha256,
            "n": int(len(self.frame)),
            "group_columns": list(self.group_columns),
        }


def canonical_csv(frame: pd.DataFrame) -> bytes:
    """The bytes the manifest hash covers: rows sorted by image, LF line ends, so CSV and Parquet hash the same."""
    ordered = frame.sort_values("image", kind="stable").reset_index(drop=True)
    return ordered.to_csv(index=False, lineterminator="\n").encode("utf-8")


def normalise_frame(frame: pd.DataFrame, origin: str) -> pd.DataFrame:
    """Fix column order and dtypes: strings for image/subject/split/attributes, float64 for geometry."""
    if "image" not in frame.columns:
        raise InputError(f"{origin}: missing required column 'image'; columns: {', '.join(map(str, frame.columns))}")
    out = frame.copy()
    out.columns = [str(c).strip() for c in out.columns]
    for col in out.columns:
        if col in GEOMETRY_COLUMNS:
            try:
                out[col] = pd.to_numeric(out[col]).astype("float64")
            except (ValueError, TypeError) as exc:
                raise InputError(f"{origin}: column '{col}' must be numeric pixels: {exc}") from None
        else:
            # Attribute values stay the dataset's own strings; NA stays NA (not the string "nan").
            out[col] = out[col].astype("str").where(out[col].notna())
            out[col] = out[col].str.strip()
    out["image"] = out["image"].str.replace("\\", "/", regex=False)
    attributes = [c for c in out.columns if c not in RESERVED_COLUMNS]
    order = [c for c in ("image", "subject", "split") if c in out.columns] + attributes
    order += [c for c in GEOMETRY_COLUMNS if c in out.columns]
    return out[order].reset_index(drop=True)


def _check_paths(frame: pd.DataFrame, root: Path, origin: str) -> None:
    """Refuse rows that point outside the dataset root: ../ paths, absolute paths, symlinks that escape."""
    real_root = root.resolve()
    for row, image in enumerate(frame["image"], start=1):
        if image is None or pd.isna(image) or image == "":
            raise InputError(f"{origin} row {row}: empty image path")
        if utf8_problem(image):  # a file name from disk that is not UTF-8 (os.fsdecode's surrogateescape)
            raise InputError(f"{shown(root / image)}: file name is not valid UTF-8 ({origin} row {row}); rename it")
        pure = PurePosixPath(image)
        if pure.is_absolute() or Path(image).is_absolute() or ".." in pure.parts:
            raise InputError(f"{origin} row {row}: image '{image}' points outside the dataset root {root}")
        target = (root / image).resolve()
        if not target.is_relative_to(real_root):
            raise InputError(f"{origin} row {row}: image '{image}' resolves to {target}, outside the dataset root {root}")


def derive_attributes(frame: pd.DataFrame, card: Mapping[str, Any], origin: str) -> pd.DataFrame:
    """Add the card's derived attributes: each maps another column's values, e.g. Gender Shades' skin type
    (Buolamwini & Gebru 2018, section 4: Fitzpatrick I-III "lighter", IV-VI "darker"):

        [derived.skin]
        from = "fitzpatrick"
        values = { I = "lighter", II = "lighter", III = "lighter", IV = "darker", V = "darker", VI = "darker" }

    Missing source values stay missing; a present value the map does not cover is an error (a typo must not
    silently leave a group out). A derived column already in the frame (a registered manifest carries it) must
    hold exactly the derived values.
    """
    derived = card.get("derived") or {}
    if not isinstance(derived, Mapping):
        raise InputError(f"{origin}: card 'derived' must be a table of {{ from = column, values = {{...}} }}")
    out = frame
    for name, spec in derived.items():
        if name in RESERVED_COLUMNS:
            raise InputError(f"{origin}: derived attribute '{name}' uses a reserved column name")
        if not isinstance(spec, Mapping) or not isinstance(spec.get("values"), Mapping) or not spec.get("values"):
            raise InputError(f"{origin}: derived.{name} needs from = \"column\" and a non-empty values table")
        source = spec.get("from")
        if source not in out.columns:
            raise InputError(f"{origin}: derived.{name} reads column '{source}', which is not in the manifest")
        mapping = {str(k): str(v) for k, v in spec["values"].items()}
        unmapped = sorted(set(out[source].dropna()) - set(mapping))
        if unmapped:
            raise InputError(f"{origin}: derived.{name}: value(s) {', '.join(unmapped)} of column '{source}' are "
                             "not in its values table")
        values = out[source].map(mapping)
        if name in out.columns and not out[name].equals(values):
            raise InputError(f"{origin}: column '{name}' is in the manifest and also derived from '{source}' "
                             "with other values; rename one")
        out = out.assign(**{name: values})
    return out


GENDER_LABELS = ("female", "male")  # the gender models' classes (harness/tasks/gender.py LABELS)


def resolve_gender_label(frame: pd.DataFrame, card: Mapping[str, Any], origin: str) -> dict[str, Any] | None:
    """The card's `gender_label` checked against the frame, or one inferred from a `gender` column.

    A card declares which column holds gender and how its values map to the models' "female"/"male"; values it
    does not map are unknown for the gender task (NA), not errors. Without a declaration, a column named `gender`
    whose values are female/male in any capitalisation ("Female"/"Male" as FairFace writes them, "F"/"M" not) gets
    the case-folding map, written into the card so the registered card.json shows what was used.
    """
    spec = card.get("gender_label")
    if spec:
        if not isinstance(spec, Mapping) or not isinstance(spec.get("values"), Mapping) or not spec.get("column"):
            raise InputError(f"{origin}: card gender_label needs column = \"...\" and values = {{ own value = "
                             "\"female\" | \"male\" }}")
        if spec["column"] not in frame.columns:
            raise InputError(f"{origin}: gender_label column '{spec['column']}' is not in the manifest")
        wrong = sorted({str(v) for v in spec["values"].values()} - set(GENDER_LABELS))
        if wrong:
            raise InputError(f"{origin}: gender_label maps to {', '.join(wrong)}; the gender task's labels are "
                             f"{', '.join(GENDER_LABELS)}")
        mapped = frame[spec["column"]].map({str(k): v for k, v in spec["values"].items()})
        if mapped.isna().all():
            raise InputError(f"{origin}: no value of column '{spec['column']}' is mapped by gender_label "
                             f"({', '.join(map(str, spec['values']))})")
        return {"column": str(spec["column"]), "values": {str(k): str(v) for k, v in spec["values"].items()}}
    if "gender" not in frame.columns:
        return None
    values = sorted(set(frame["gender"].dropna()))
    if not values or any(v.lower() not in GENDER_LABELS for v in values):
        return None
    return {"column": "gender", "values": {v: v.lower() for v in values}}


def validate_frame(frame: pd.DataFrame, root: Path, card: Mapping[str, Any], origin: str) -> None:
    """All manifest checks; each failure is one InputError line naming the file and the row."""
    _check_paths(frame, root, origin)
    dup = frame["image"].duplicated(keep="first")
    if dup.any():
        first = int(dup.to_numpy().nonzero()[0][0])
        image = frame["image"].iloc[first]
        original = int((frame["image"] == image).to_numpy().nonzero()[0][0])
        raise InputError(f"{origin} row {first + 1}: duplicate image '{image}' (first at row {original + 1})")
    group_columns = list(card.get("group_columns", []))
    missing = [c for c in group_columns if c not in frame.columns]
    if missing:
        raise InputError(f"{origin}: group column(s) {', '.join(missing)} named by the card are not in the manifest")
    unknown = [c for c in card.get("default_group_by", []) if c not in group_columns]
    if unknown:
        raise InputError(f"{origin}: default_group_by {', '.join(unknown)} is not among group_columns")
    groupings = card.get("groupings") or []
    if not isinstance(groupings, list) or not all(isinstance(g, list) and g for g in groupings):
        raise InputError(f"{origin}: groupings must be a list of attribute lists, e.g. [[\"race\", \"gender\"]]")
    for grouping in groupings:
        unknown = [c for c in grouping if c not in group_columns]
        if unknown:
            raise InputError(f"{origin}: grouping {GROUP_SEP.join(map(str, grouping))}: {', '.join(map(str, unknown))} "
                             "is not among group_columns")
    for col in group_columns:
        blank = frame[col].isna()
        if blank.any():
            row = int(blank.to_numpy().nonzero()[0][0]) + 1
            raise InputError(f"{origin} row {row}: empty value in group column '{col}'")
    # A card may list each group attribute's values; a listed value with no rows is an empty group.
    for col, spec in (card.get("attributes") or {}).items():
        values = spec.get("values") if isinstance(spec, Mapping) else None
        if not values or col not in frame.columns:
            continue
        present = set(frame[col].dropna())
        empty = [str(v) for v in values if str(v) not in present]
        if empty:
            raise InputError(f"{origin}: empty group(s) {', '.join(f'{col}={v}' for v in empty)}: no rows carry this value")
        extra = sorted(present - {str(v) for v in values})
        if extra:
            raise InputError(f"{origin}: column '{col}' has value(s) {', '.join(extra)} not listed in the card")


def build_dataset(dataset_id: str, root: Path, frame: pd.DataFrame, card: Mapping[str, Any], origin: str) -> Dataset:
    """Normalise, validate and hash a raw frame from any reader."""
    norm = normalise_frame(frame, origin)
    derived = derive_attributes(norm, card, origin)
    if derived is not norm:  # new columns go where normalise_frame puts attributes
        norm = normalise_frame(derived, origin)
    validate_frame(norm, root, card, origin)
    card = dict(card)
    gender_label = resolve_gender_label(norm, card, origin)
    card.pop("gender_label", None)
    if gender_label is not None:
        card["gender_label"] = gender_label
    group_columns = tuple(card.get("group_columns", []))
    first = (card.get("groupings") or [group_columns])[0]
    default_group_by = tuple(card.get("default_group_by", first))
    rules = rules_of(card, origin)
    if rules is not None:  # a card whose watchlist rules cannot hold is refused when the dataset is read or added
        watchlist_split(dataset_id, norm, rules, seed=0, group_by=(), origin=origin)
    digest = hashlib.sha256(canonical_csv(norm)).hexdigest()
    return Dataset(dataset_id, Path(root), norm, group_columns, default_group_by, digest, card)


def read_manifest(path: Path) -> pd.DataFrame:
    """Read a manifest as strings (CSV) or as stored (Parquet, only when pyarrow is importable)."""
    if not path.is_file():
        raise InputError(f"{path}: manifest not found")
    if path.suffix.lower() == ".parquet":
        try:
            import pyarrow  # noqa: F401  (pandas needs it for Parquet; say so plainly instead of a deep ImportError)
        except ModuleNotFoundError:
            raise InputError(f"{path}: reading Parquet manifests needs pyarrow (pip install pyarrow), or use CSV") from None
        return pd.read_parquet(path)
    try:
        # dtype=str keeps codes and ids as written ("001" stays "001"); pandas' NA markers ("", "NA", "N/A",
        # "null", ...) mean missing, as in london-frl's ages.
        return pd.read_csv(path, dtype=str)
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as exc:
        raise InputError(f"{path}: not a readable CSV manifest: {str(exc).splitlines()[0]}") from None


def read_card(path: Path) -> dict[str, Any]:
    """Read a dataset card (TOML or JSON)."""
    try:
        if path.suffix.lower() == ".toml":
            return tomllib.loads(path.read_text(encoding="utf-8"))
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"{path}: card not found") from None
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{path}: malformed card: {exc}") from None


def find_first(folder: Path, names: tuple[str, ...]) -> Path | None:
    return next((folder / n for n in names if (folder / n).is_file()), None)


def load_manifest_dir(folder: Path, dataset_id: str | None = None) -> Dataset:
    """A folder holding manifest.(csv|parquet) + card.(toml|json); the card's `root` says where images live
    (relative to the folder or absolute), defaulting to the folder itself."""
    manifest, card_path = find_first(folder, MANIFEST_NAMES), find_first(folder, CARD_NAMES)
    if manifest is None or card_path is None:
        raise InputError(f"{folder}: needs {' or '.join(MANIFEST_NAMES)} and {' or '.join(CARD_NAMES)}")
    card = read_card(card_path)
    if dataset_id is None and card.get("name") is not None:  # a name from a file is data: it may become a path
        dataset_id = safe_id("dataset name", card["name"], card_path)
    root = (folder / os.path.expanduser(card.get("root", "."))).resolve()
    return build_dataset(dataset_id or folder.name, root, read_manifest(manifest), card, str(manifest))


def load_dataset(name_or_path: str | os.PathLike, data_root: Path) -> Dataset:
    """A dataset by name (built-in under the data root, or registered) or by path (any readable layout)."""
    # Imported here: layouts and registry build on this module.
    from harness.data import layouts, registry

    key = str(name_or_path)
    builtin = layouts.builtin_layouts(data_root)
    if key in builtin:
        return layouts.read_layout(builtin[key], data_root / key, name=key)
    entry = registry.entry_dir(data_root, key)
    if entry is not None:
        return load_manifest_dir(entry, key)
    path = Path(key).expanduser()
    if path.exists():
        return layouts.read_layout(layouts.detect_layout(path), path)
    if not Path(data_root).is_dir():
        raise InputError(f"dataset '{key}': the data root {data_root} does not exist "
                         "(set --data-root or BENCH_DATA, or give the dataset's path)")
    raise UnknownIdError("dataset", key, list(builtin) + registry.registered_names(data_root))
