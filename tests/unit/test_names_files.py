"""harness.names (one safe-name rule, one way to show a name) and harness.files (atomic write, mode, removal)."""

from __future__ import annotations

import os
import stat

import pytest

from harness.errors import InputError
from harness.files import atomic_write_bytes, ensure_writable_dir, remove_owned
from harness.names import id_problem, safe_id, shown
from harness.report.summary import METRICS
from harness.scoring import TASK_METRICS


@pytest.mark.parametrize("value", ["cpu", "london-frl", "20261127T162436Z-cpu-2f3ddb", "blazeface--onnx-fp32", "a.b_c"])
def test_safe_ids_pass(value):
    assert safe_id("run id", value) == value


@pytest.mark.parametrize("value, problem", [
    ("..", "contains '..'"), ("a..b", "contains '..'"), ("../x", "path separator"), ("a\\b", "path separator"),
    (".hidden", "starts with '.'"), ("-rf", "starts with '-'"), ("", "empty"), ("x" * 129, "129 characters"),
    ("a\0b", "non-printable"), ("a\nb", "non-printable"), ("a b", "other than"), ("café", "other than"), (3, "int"),
])
def test_unsafe_ids_name_the_problem_and_the_source(value, problem):
    assert problem in id_problem(value)
    with pytest.raises(InputError, match="card.toml: dataset name .* is not a safe file name"):
        safe_id("dataset name", value, "card.toml")


def test_shown_escapes_undecodable_bytes_and_control_characters():
    assert shown(os.fsdecode(b"sub\xff/a.jpg")) == "sub\\xff/a.jpg"
    assert shown("a\nb\x1b[2J") == "a\\nb\\x1b[2J"
    assert shown(b"\xfe") == "\\xfe"
    assert shown("[bold]ok") == "[bold]ok"  # markup is the console's business (harness.report.console.user_text)


def test_atomic_write_honours_the_umask(tmp_path):
    old = os.umask(0o027)
    try:
        atomic_write_bytes(tmp_path / "f", b"x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "f").stat().st_mode) == 0o640
    assert not [p for p in tmp_path.iterdir() if p.name != "f"], "temp file left behind"


def test_remove_owned_refuses_outside_and_never_follows_links(tmp_path):
    owner, outside = tmp_path / "owner", tmp_path / "outside"
    (owner / "sub").mkdir(parents=True)
    outside.mkdir()
    (outside / "keep").write_text("x")
    (owner / "link").symlink_to(outside)
    (owner / "sub" / "inner-link").symlink_to(outside)
    for bad in (owner / "..", owner / "../outside", outside, owner):
        with pytest.raises(InputError, match="not inside"):
            remove_owned(bad, owner)
    assert remove_owned(owner / "link", owner) and (outside / "keep").exists()
    assert remove_owned(owner / "sub", owner) and (outside / "keep").exists()
    assert not remove_owned(owner / "gone", owner)


def test_ensure_writable_dir_names_a_file_in_the_way(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(InputError, match="results folder .*/f is not a folder"):
        ensure_writable_dir(tmp_path / "f", "results folder")
    with pytest.raises(InputError, match="a part of the path is a file"):
        ensure_writable_dir(tmp_path / "f" / "sub", "results folder")


def test_every_scored_metric_has_a_direction():
    """The gate's table must know every metric scoring writes (issue 10: `found` was refused)."""
    scored = {metric for pairs in TASK_METRICS.values() for metric, _ in pairs}
    assert scored <= METRICS.keys(), scored - METRICS.keys()
