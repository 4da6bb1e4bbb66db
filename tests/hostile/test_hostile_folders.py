"""Issue 10 §3: results folders that are read-only, missing or files; one file mode policy for what bench writes."""

from __future__ import annotations

import stat

import pytest
from conftest import assert_clean, assert_error, assert_unchanged, snapshot

from harness.errors import EXIT_OK, EXIT_USAGE


def test_run_into_a_read_only_results_folder(box):
    box.results.mkdir()
    before = snapshot(box.root)
    res = box.bench("run", "--model", "blazeface", "--no-build", readonly=(box.results,))
    assert_error(res, EXIT_USAGE, f"results folder {box.results}", "cannot write")
    assert_unchanged(before, snapshot(box.root))


def test_runs_on_a_read_only_results_folder_lists_without_writing(box):
    run_id = box.run_dir()
    before = snapshot(box.root)
    res = box.bench("runs", readonly=(box.results,))
    assert_clean(res)
    assert res.rc == EXIT_OK, res
    assert run_id[:8] in res.out, res
    lines = [line for line in res.err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("bench: warning: ") and "read-only" in lines[0], res
    assert_unchanged(before, snapshot(box.root))


def test_report_into_a_read_only_folder(box):
    run_id = box.run_dir()
    out_dir = box.root / "out"
    out_dir.mkdir()
    before = snapshot(box.root)
    res = box.bench("report", run_id, "-o", out_dir / "r.html", readonly=(out_dir,))
    assert_error(res, EXIT_USAGE, str(out_dir / "r.html"), "cannot write")
    assert_unchanged(before, snapshot(box.root))


def test_gate_junit_into_a_read_only_folder(box):
    run_id = box.run_dir()
    out_dir = box.root / "out"
    out_dir.mkdir()
    policy = box.root / "policy.toml"
    policy.write_text('[[check]]\nkind = "rate"\nmetric = "accuracy"\nmin = 0.0\n')
    res = box.bench("gate", "--policy", policy, run_id, "--junit", out_dir / "j.xml", readonly=(out_dir,))
    assert_error(res, EXIT_USAGE, str(out_dir / "j.xml"), "cannot write")


@pytest.mark.parametrize("argv", [("runs",), ("run", "--model", "blazeface", "--no-build"), ("report", "some-run"),
                                  ("compare", "--target", "cpu"), ("gate", "--policy", "p.toml", "some-run")])
def test_results_path_that_is_a_file(box, argv):
    box.results.write_text("not a folder")
    (box.work / "p.toml").write_text('[[check]]\nkind = "rate"\nmetric = "accuracy"\nmin = 0.0\n')
    before = snapshot(box.root)
    res = box.bench(*argv)
    assert_error(res, EXIT_USAGE, f"results folder {box.results} is not a folder")
    assert_unchanged(before, snapshot(box.root))


@pytest.mark.parametrize("argv", [("runs",), ("report", "some-run"), ("compare", "--target", "cpu")])
def test_reading_a_missing_results_folder_says_so_and_creates_nothing(box, argv):
    before = snapshot(box.root)
    res = box.bench(*argv)
    assert_error(res, EXIT_USAGE, f"results folder {box.results} does not exist")
    assert not box.results.exists()
    assert_unchanged(before, snapshot(box.root))


def test_report_whose_parent_is_a_file(box):
    run_id = box.run_dir()
    (box.root / "blocker").write_text("a file")
    res = box.bench("report", run_id, "-o", box.root / "blocker" / "r.html")
    assert_error(res, EXIT_USAGE, str(box.root / "blocker"))


def test_report_output_that_is_a_folder(box):
    run_id = box.run_dir()
    res = box.bench("report", run_id, "-o", box.root)
    assert_error(res, EXIT_USAGE, "is a folder")


def test_one_file_mode_policy(box):
    """run.json, reports, JUnit and registry files: 0644 under umask 022, like every other file bench writes."""
    run_id = box.run_dir()
    run = box.results / run_id
    policy = box.root / "policy.toml"
    policy.write_text('[[check]]\nkind = "rate"\nmetric = "accuracy"\nmin = 0.0\n')
    for argv in (("report", run_id, "-o", box.root / "r.html"), ("report", run_id, "-o", box.root / "r.md"),
                 ("gate", "--policy", policy, run_id, "--junit", box.root / "j.xml"),
                 ("data", "add", box.dataset(), "--format", "manifest")):
        res = box.bench(*argv)
        assert_clean(res)
        assert res.rc == EXIT_OK, res
    files = [run / "run.json", *(run / "timings").iterdir(), *(run / "samples").iterdir(), box.root / "r.html",
             box.root / "r.md", box.root / "j.xml", box.cache / "datasets" / "tiny" / "card.json",
             box.cache / "datasets" / "tiny" / "manifest.csv"]
    modes = {str(p.relative_to(box.root)): oct(stat.S_IMODE(p.stat().st_mode)) for p in files}
    assert set(modes.values()) == {"0o644"}, modes
    assert oct(stat.S_IMODE((box.cache / "datasets" / "tiny").stat().st_mode)) == "0o755"
