"""Hostile inputs the harness already held against when issue 10 was filed, kept so they stay held: path traversal
and escaping symlinks in manifests, corrupt and truncated images, corrupt pack and run files, malformed policies,
offline fetches, a gate check on `found`, and two runs writing into one results folder."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from conftest import assert_clean, assert_error, assert_unchanged, jpeg, snapshot

from harness.errors import EXIT_INTEGRITY, EXIT_OFFLINE, EXIT_OK, EXIT_USAGE


@pytest.mark.parametrize("image", ["../outside.jpg", "imgs/../../outside.jpg", "/etc/passwd"])
def test_manifest_rows_pointing_outside_the_root(box, image):
    (box.root / "outside.jpg").write_bytes(jpeg(9))
    folder = box.dataset(rows=[("imgs/a.jpg", "female"), (image, "male")], images={"imgs/a.jpg": jpeg(0)})
    before = snapshot(box.root)
    res = box.bench("data", "verify", folder)
    assert_error(res, EXIT_USAGE, "manifest.csv row 2", "outside the dataset root")
    assert_unchanged(before, snapshot(box.root))


def test_symlink_escaping_the_dataset_root(box):
    (box.root / "secret.jpg").write_bytes(jpeg(9))
    folder = box.dataset(rows=[("imgs/a.jpg", "female"), ("imgs/link.jpg", "male")], images={"imgs/a.jpg": jpeg(0)})
    (folder / "imgs" / "link.jpg").symlink_to(box.root / "secret.jpg")
    res = box.bench("data", "add", folder, "--format", "manifest")
    assert_error(res, EXIT_USAGE, "imgs/link.jpg", "outside the dataset root")
    assert not (box.cache / "datasets" / "tiny").exists()


@pytest.mark.parametrize("payload", [b"", b"not an image at all", jpeg(3)[:200]], ids=["empty", "garbage", "truncated"])
def test_corrupt_and_truncated_images_fail_verify_with_integrity(box, payload):
    folder = box.dataset(images={"imgs/a.jpg": jpeg(0), "imgs/b.jpg": payload})
    res = box.bench("data", "verify", folder)
    assert_clean(res)
    assert res.rc == EXIT_INTEGRITY, res
    assert "FAILED imgs/b.jpg" in res.out, res


def test_corrupt_pack_manifest(box):
    pack = box.cache / "packs" / "blazeface" / "pack.json"
    pack.parent.mkdir(parents=True)
    pack.write_text("{not json")
    res = box.bench("models", "list", "--model", "blazeface")
    assert_error(res, EXIT_INTEGRITY, str(pack), "unreadable pack manifest")


@pytest.mark.parametrize("content, fragment", [("{half", "not valid JSON"), ('{"run_id": 1}', "")],
                         ids=["torn", "wrong-shape"])
def test_corrupt_run_json(box, content, fragment):
    run_id = box.run_dir()
    (box.results / run_id / "run.json").write_text(content)
    res = box.bench("report", run_id)
    assert_error(res, EXIT_INTEGRITY, "run.json", fragment)


def test_malformed_policy(box):
    policy = box.root / "policy.toml"
    policy.write_text("[[check]\nkind = ")
    res = box.bench("gate", "--policy", policy, "any-run")
    assert_error(res, EXIT_USAGE, str(policy), "not valid TOML")


def test_offline_fetch_is_exit_5_naming_the_host(box):
    # Every request goes through a proxy on a port nothing listens on: refused at once, the way an offline box is.
    dead = "http://127.0.0.1:9"
    res = box.bench("data", "fetch", "london-frl-original", "--allow-unpinned", "--dest", box.root / "dl",
                    env={"http_proxy": dead, "https_proxy": dead, "HTTP_PROXY": dead, "HTTPS_PROXY": dead,
                         "no_proxy": "", "NO_PROXY": ""})
    assert_error(res, EXIT_OFFLINE, "cannot reach")


def test_gate_accepts_a_check_on_found(box):
    """`found` is reported by every detection entry; a policy on it used to be refused as an unknown metric."""
    run_id = box.run_dir(models=("blazeface",), variants=("onnx-fp32",))
    policy = box.root / "policy.toml"
    policy.write_text('[[check]]\nkind = "rate"\nmetric = "found"\nmin = 0.5\n'
                      '[[check]]\nkind = "disparity"\nmetric = "found"\nsummary = "max_min_ratio"\nmax = 2.0\n')
    res = box.bench("gate", "--policy", policy, run_id)
    assert_clean(res)
    assert res.rc == EXIT_OK, res
    assert "unknown metric" not in res.err


@pytest.mark.slow
@pytest.mark.e2e
def test_two_runs_into_one_results_folder(box, built_packs, data_root):
    """Two `bench run`s at once into one results folder: two distinct complete runs, both in the index, and the
    model cache they read is left as it was."""
    rows = [(f"imgs/{p.name}", p.parent.name) for p in sorted((data_root / "london-frl").rglob("*.jpg"))[:4]]
    src = {f"imgs/{p.name}": p.read_bytes() for p in sorted((data_root / "london-frl").rglob("*.jpg"))[:4]}
    folder = box.dataset(rows=[(img, "f" if i % 2 else "m") for i, (img, _) in enumerate(rows)], images=src)
    env = {**box.env, "BENCH_CACHE": str(built_packs)}
    cache_before = snapshot(built_packs)
    argv = [sys.executable, "-m", "harness", "run", "--model", "blazeface", "--variant", "onnx-fp32", "--dataset",
            str(folder), "--no-build", "--threads", "1", "--min-count", "5", "--min-duration", "0.05",
            "--bootstrap", "20"]
    procs = [subprocess.Popen(argv, cwd=box.work, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for _ in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    for p, (out, err) in zip(procs, outs):
        text = (out + err).decode("utf-8", "backslashreplace")
        assert p.returncode == EXIT_OK and "Traceback" not in text, text
    listed = box.bench("runs", "--json")
    assert listed.rc == EXIT_OK, listed
    runs = json.loads(listed.out)
    assert len(runs) == 2 and len({r["run_id"] for r in runs}) == 2, runs
    assert {r["status"] for r in runs} == {"complete"}, runs
    assert sorted(p.name for p in box.results.iterdir() if p.is_dir()) == sorted(r["run_id"] for r in runs)
    assert_unchanged(cache_before, snapshot(built_packs))
    assert os.path.isfile(box.results / "index.sqlite")
