"""The task registry: what each task is fed and needs; a watchlist set's distractors feed the embedders."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.errors import UnknownIdError
from harness.tasks.registry import TASKS, get_task, model_tasks_for, scored_tasks


def test_registry_names_and_feeders():
    assert set(TASKS) == {"detection", "gender", "verification", "identification"}
    assert get_task("identification").fed_by == "verification"
    assert {t.name for t in scored_tasks("verification")} == {"verification", "identification"}
    assert get_task("detection").fed_on == "image" and get_task("verification").fed_on == "chip"
    with pytest.raises(UnknownIdError, match="unknown task 'watchlist'"):
        get_task("watchlist")


def test_distractors_are_fed_to_the_embedders(data_root: Path):
    from harness.data.dataset import load_dataset

    if not (data_root / "london-frl-views" / "labels.csv").is_file():
        pytest.skip("london-frl-views not in the shared data")
    views = load_dataset("london-frl-views", data_root)
    faces = load_dataset("fairface-sample", data_root)
    assert get_task("identification").applies(views) and not get_task("identification").applies(faces)
    assert "verification" not in model_tasks_for(faces)               # no identities: nothing to pair
    assert "verification" in model_tasks_for(faces, [views, faces])   # ... but enrolled as distractors
    assert model_tasks_for(views, [views, faces]) == {"detection", "gender", "verification"}
