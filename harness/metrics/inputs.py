"""Input checks shared by the metric modules, with their messages as constants.

The messages are module constants so that tests (and callers that want to recognise a failure) can compare
them exactly; each names the table or array and the problem, on one line.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from harness.errors import InputError

MISSING_COLUMNS = "{what}: missing column(s) {missing}; present: {present}"
NOT_BINARY = "{what}: column '{column}' must hold 0/1/true/false or null; found {examples}"
EMPTY_GROUP_BY = "{what}: group_by must name at least one column"
BAD_COUNTS = "wilson_interval: need 0 <= k <= n, got k={k}, n={n}"
BAD_CONFIDENCE = "{what}: confidence must be in (0, 1), got {confidence}"
NO_SAMPLE_ID = "{what}: no 'sample_id' column to pair reference and variant samples on"
DUPLICATE_SAMPLE_ID = "{what}: sample_id '{sample_id}' occurs more than once"
SHAPE_MISMATCH = "{what}: {a} has {n_a} rows but {b} has {n_b}"
BAD_EMBEDDING_ROW = "{what}: embedding row {row} is zero or not finite"
NOT_2D = "{what}: embeddings must be a 2-D array (rows x dims), got shape {shape}"
SUBJECT_IN_TWO_GROUPS = "{what}: subject '{subject}' has rows in groups '{g1}' and '{g2}'"
NO_IMPOSTORS = "{what}: no impostor pairs (need at least two subjects)"
BAD_TARGET_FMR = "threshold_at_fmr: target_fmr must be in (0, 1), got {target}"
UNKNOWN_METRIC = "{what}: no rate rows with metric '{metric}'; metrics present: {present}"

GROUP_SEP = "*"  # joins attribute values into an intersectional group name: "female*black"
ALL = "all"  # the group name of the overall row


def require_columns(df: pd.DataFrame, columns: Sequence[str], what: str) -> None:
    """Raise InputError naming every missing column, so one run of the caller shows all of them."""
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise InputError(
            MISSING_COLUMNS.format(what=what, missing=", ".join(missing), present=", ".join(map(str, df.columns)))
        )


def check_confidence(confidence: float, what: str) -> None:
    if not 0.0 < confidence < 1.0:
        raise InputError(BAD_CONFIDENCE.format(what=what, confidence=confidence))


def binary_column(df: pd.DataFrame, column: str, what: str) -> pd.Series:
    """The column as float 1.0/0.0 with NaN for missing (failure to acquire, not applicable).

    JSON lines give a bool column with nulls as dtype object; the nullable "boolean" dtype is the one pandas
    conversion that accepts True/False/None/NaN/0/1 alike and rejects anything else.
    """
    try:
        as_bool = df[column].astype("boolean")
    except (TypeError, ValueError):
        values = pd.Series(df[column].dropna().unique())
        bad = [v for v in values.tolist() if v not in (0, 1, True, False)][:3]
        raise InputError(NOT_BINARY.format(what=what, column=column, examples=bad)) from None
    return as_bool.astype("Float64").astype(float)


def group_labels(df: pd.DataFrame, group_by: Sequence[str], what: str) -> tuple[str, pd.Series]:
    """(group_by name "a*b", per-row group label "x*y"); the label is NaN where any attribute is missing.

    Rows with a missing attribute still count in the overall row but belong to no group: they cannot be
    placed in an intersection honestly.
    """
    group_by = list(group_by)
    if not group_by:
        raise InputError(EMPTY_GROUP_BY.format(what=what))
    require_columns(df, group_by, what)
    attrs = df[group_by]
    # object -> str turns a missing value into "None"/"nan"; those labels are masked out just below.
    parts = [attrs[c].astype(object).astype(str) for c in group_by]
    labels = parts[0]
    for part in parts[1:]:
        labels = labels + GROUP_SEP + part
    labels = labels.astype(object).where(attrs.notna().all(axis=1))
    return GROUP_SEP.join(group_by), labels


def as_2d_float(emb: np.ndarray, what: str) -> np.ndarray:
    arr = np.asarray(emb, dtype=np.float32)
    if arr.ndim != 2:
        raise InputError(NOT_2D.format(what=what, shape=arr.shape))
    return arr


def same_length(what: str, **arrays: Sequence) -> None:
    """Raise if the named arrays differ in length (first differing pair named)."""
    names = list(arrays)
    first = names[0]
    for other in names[1:]:
        if len(arrays[other]) != len(arrays[first]):
            raise InputError(
                SHAPE_MISMATCH.format(
                    what=what, a=first, n_a=len(arrays[first]), b=other, n_b=len(arrays[other])
                )
            )
