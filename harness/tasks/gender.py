"""Gender classifier postprocess: probabilities [N, 2] -> per-sample fields.

Output index 1 is male for the one gender model shipped (Cydral's dlib gender classifier; ../shared/MODELS.md;
tests/unit/test_tasks_pipeline.py checks it on labelled London faces, where the reversed order could not pass). The manifest no longer carries
a `male_index` that nothing read: a second gender model with another order would add it back together with the
worker passing it here.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from harness.errors import InputError

MALE_INDEX = 1
LABELS = ("female", "male")


def prob_male(probs: np.ndarray) -> np.ndarray:
    """[N, 2] softmax outputs -> [N] probability of male. The dlib gender model already ends in softmax."""
    probs = np.asarray(probs, np.float64)
    if probs.ndim != 2 or probs.shape[1] != 2:
        raise InputError(f"gender: expected probabilities [N, 2], got {probs.shape}")
    return probs[:, MALE_INDEX]


def gender_fields(p_male: float, label: str | None, threshold: float = 0.5) -> dict[str, Any]:
    """One sample's fields: label, prob_male, pred ("male" when p_male >= threshold), correct (None without a label)."""
    if label is not None and label not in LABELS:
        raise InputError(f"gender: label '{label}' is not one of {', '.join(LABELS)}")
    pred = "male" if p_male >= threshold else "female"
    return {"label": label, "prob_male": float(p_male), "pred": pred,
            "correct": None if label is None else pred == label}
