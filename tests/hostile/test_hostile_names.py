"""Issue 10 §1: a name from a file is data, never a path or markup; non-UTF-8 names are one line, exit 2."""

from __future__ import annotations

import os

import pytest
from conftest import assert_clean, assert_error, assert_unchanged, jpeg, snapshot

from harness.errors import EXIT_INTEGRITY, EXIT_OK, EXIT_USAGE


@pytest.mark.parametrize("name", ["..", "../escape", ".hidden", "x" * 200])
def test_card_name_that_is_a_path_is_refused_and_nothing_is_deleted(box, name):
    """The reported case: card name '..' + `data add --force` deleted the registry's parent (the whole cache)."""
    (box.cache / "keep-me").write_text("the cache's other contents")
    (box.cache / "datasets" / "other").mkdir(parents=True)
    folder = box.dataset(card=f"name = {name!r}\ngroup_columns = [\"gender\"]\n".replace("'", '"'))
    before = snapshot(box.root)
    res = box.bench("data", "add", folder, "--format", "manifest", "--force")
    assert_error(res, EXIT_USAGE, "card.toml", "not a safe file name")
    assert_unchanged(before, snapshot(box.root))


def test_name_flag_that_is_a_path_is_refused(box):
    folder = box.dataset()
    before = snapshot(box.root)
    res = box.bench("data", "add", folder, "--format", "manifest", "--name", "../../outside", "--force")
    assert_error(res, EXIT_USAGE, "'../../outside'", "not a safe file name")
    assert_unchanged(before, snapshot(box.root))


def test_force_over_a_registration_that_is_a_symlink_removes_only_the_link(box):
    """A registry entry pointing elsewhere is replaced; the folder it pointed to is not emptied."""
    outside = box.root / "precious"
    outside.mkdir()
    (outside / "card.json").write_text("{}")
    (outside / "manifest.csv").write_text("image\n")
    (box.cache / "datasets").mkdir()
    (box.cache / "datasets" / "tiny").symlink_to(outside)
    folder = box.dataset()
    before = snapshot(box.root)
    res = box.bench("data", "add", folder, "--format", "manifest", "--force")
    assert_clean(res)
    assert res.rc == EXIT_OK, res
    assert (box.cache / "datasets" / "tiny").is_dir() and not (box.cache / "datasets" / "tiny").is_symlink()
    assert_unchanged(before, snapshot(box.root), "cache/datasets")


def test_group_values_with_rich_markup_print_as_written(box):
    values = ["[/]", "[bold]", "[red]x[/red]", "[link=file:///etc/passwd]y"]
    folder = box.dataset(rows=[(f"imgs/{i}.jpg", v) for i, v in enumerate(values)])
    before = snapshot(box.root)
    res = box.bench("data", "verify", folder)
    assert_clean(res)
    assert res.rc == EXIT_OK, res
    for value in values:
        assert value in res.out, res
    assert_unchanged(before, snapshot(box.root))


def test_file_names_with_markup_print_as_written(box):
    """A corrupt image called '[/]bad[bold].jpg': exit 4 (undecodable), its name printed literally."""
    rows = [("imgs/[/]bad[bold].jpg", "female"), ("imgs/b.jpg", "male")]
    folder = box.dataset(rows=rows, images={"imgs/[/]bad[bold].jpg": b"not a jpeg", "imgs/b.jpg": jpeg(1)})
    res = box.bench("data", "verify", folder)
    assert_clean(res)
    assert res.rc == EXIT_INTEGRITY, res
    assert "FAILED imgs/[/]bad[bold].jpg" in res.out, res


def test_control_characters_in_values_do_not_reach_the_terminal(box):
    folder = box.dataset(rows=[("imgs/a.jpg", "fe\x1b[2Jmale"), ("imgs/b.jpg", "male")])
    res = box.bench("data", "verify", folder)
    assert_clean(res)
    assert res.rc == EXIT_OK, res
    assert "\x1b" not in res.out and "fe\\x1b[2Jmale" in res.out, res


def _utk_with_non_utf8_folder(box):
    root = box.root / "utk"
    (root / os.fsdecode(b"sub\xff")).mkdir(parents=True)
    (root / "20_1_0_20170109150557335.jpg").write_bytes(jpeg(0))
    (root / os.fsdecode(b"sub\xff") / "21_0_1_20170109150557336.jpg").write_bytes(jpeg(1))
    return root


@pytest.mark.parametrize("command", ["verify", "add"])
def test_non_utf8_file_name_is_one_line_exit_2(box, command):
    root = _utk_with_non_utf8_folder(box)
    before = snapshot(box.root)
    res = box.bench("data", command, root)
    assert_error(res, EXIT_USAGE, "sub\\xff/21_0_1_20170109150557336.jpg", "not valid UTF-8")
    assert_unchanged(before, snapshot(box.root))


def test_non_utf8_policy_is_one_line_exit_2(box):
    policy = box.root / "policy.toml"
    policy.write_bytes(b'[[check]]\nkind = "rate"\nmetric = "accuracy\xff"\nmin = 0.5\n')
    res = box.bench("gate", "--policy", policy, "any-run")
    assert_error(res, EXIT_USAGE, str(policy), "not UTF-8")


def test_non_utf8_manifest_is_one_line_exit_2(box):
    folder = box.dataset(manifest=b"image,gender\nimgs/a.jpg,f\xe9male\nimgs/b.jpg,male\n")
    res = box.bench("data", "verify", folder)
    assert_error(res, EXIT_USAGE, "manifest.csv")


@pytest.mark.parametrize("argv, fragment", [
    (("run", "--resume", "../../etc"), "not a safe file name"),
    (("run", "--target", "../cpu"), "unknown target '../cpu'"),
    (("run", "--model", "../x", "--no-build"), "unknown model '../x'"),
    (("models", "build", "--model", "/etc/passwd"), "unknown model"),
    (("data", "verify", "no-such-dataset"), "unknown dataset 'no-such-dataset'"),
    (("data", "fetch", "../x"), "'../x'"),
])
def test_unknown_or_unsafe_ids_are_one_line_exit_2(box, argv, fragment):
    box.results.mkdir()
    before = snapshot(box.root)
    res = box.bench(*argv)
    assert_error(res, EXIT_USAGE, fragment)
    assert_unchanged(before, snapshot(box.root))
