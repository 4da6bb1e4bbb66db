"""Tasks as objects, looked up by name: what each is fed, what it needs from a dataset, what it records.

A model's manifest names the task its raw outputs serve (`task = "verification"` for an embedder). A scored
task may read the outputs of another's model: identification (1:N search) is fed by the embedding models that
verification uses, so it costs no extra inference; it adds the datasets its protocol needs (a watchlist set and
its distractors) to what those models are fed.

    get_task(name)                       the Task, or UnknownIdError listing the valid names
    model_tasks_for(ds, datasets)        the model tasks whose entries a dataset's samples are fed to
    scored_tasks(model_task)             the scored tasks reading a model task's outputs
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from harness.errors import UnknownIdError


@dataclass(frozen=True)
class Task:
    name: str
    fed_by: str                                   # the model task (models/*.toml `task`) whose outputs it reads
    needs: str                                    # what a dataset must give, as said to the user
    applies: Callable[[Any], bool]                # dataset -> can this task be scored on it
    fields: tuple[str, ...]                       # the per-sample fields its model's post-processing records
    metrics: str                                  # where its metrics are computed (module), for readers and docs
    fed_on: str = "chip"                          # "image": every decoded image; "chip": only acquired faces
    rates: tuple[tuple[str, str], ...] = ()       # (metric, per-sample success column) scored as rate rows


def _has_watchlist(ds) -> bool:
    from harness.data.watchlist import rules_of

    return ds.has_subjects and rules_of(ds.card, f"dataset {ds.id} card") is not None


TASKS: dict[str, Task] = {t.name: t for t in (
    # Detection judges its own detector, so every decoded image is fed. Recall needs labelled eyes or a box
    # (London); "found" (a face was detected at all) is defined everywhere, so in-the-wild photos are scored too.
    Task("detection", "detection", "images", lambda ds: True,
         ("det_found", "det_score", "det_box", "det_kps", "det_hit", "eye_err"), "harness.tasks.detection_eval",
         fed_on="image", rates=(("recall", "det_hit"), ("found", "det_found"))),
    Task("gender", "gender", "a gender mapping in its card (gender_label, docs/datasets.md)",
         lambda ds: bool(ds.gender_label), ("label", "prob_male", "pred", "correct"), "harness.tasks.gender",
         rates=(("accuracy", "correct"),)),
    Task("verification", "verification", "subject ids", lambda ds: ds.has_subjects, ("embedding",),
         "harness.metrics.verification"),
    Task("identification", "verification",
         "subject ids and identification rules in its card (gallery, nonmated_share; docs/datasets.md)",
         _has_watchlist, ("embedding",), "harness.metrics.identification"),
)}


def get_task(name: str) -> Task:
    if name not in TASKS:
        raise UnknownIdError("task", name, list(TASKS))
    return TASKS[name]


def scored_tasks(model_task: str) -> list[Task]:
    return [t for t in TASKS.values() if t.fed_by == model_task]


def distractor_names(datasets: Sequence) -> set[str]:
    """Datasets that a watchlist dataset of the run names as its distractors."""
    from harness.data.watchlist import rules_of

    out = set()
    for ds in datasets:
        rules = rules_of(ds.card, f"dataset {ds.id} card") if ds.has_subjects else None
        if rules is not None and rules.distractors:
            out.add(rules.distractors)
    return out


def model_tasks_for(ds, datasets: Sequence = ()) -> set[str]:
    """The model tasks a dataset's samples are fed to: those of every task that applies to it, plus identification's
    feeder when another dataset of the run enrols its faces as distractors."""
    out = {t.fed_by for t in TASKS.values() if t.applies(ds)}
    if ds.id in distractor_names(datasets):
        out.add(TASKS["identification"].fed_by)
    return out
