"""Issue 17, item 10: a full disk. `No space left on device` names the file that could not be written; a model
build that runs out of space exits 1 (it used to exit 0), and the variants it could not write are recorded as
failed *for a reason of this machine* (`retryable`), so the next `bench models build` retries them without --force.

The disk is a real tmpfs of a few hundred KB mounted over the folder (root only; skipped elsewhere), not a mock:
the OS itself answers ENOSPC at whichever write(2), fsync(2) or copy_file_range(2) meets it."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, assert_clean

from harness.cli import fallback_error


@pytest.fixture
def tmpfs():
    """mount(path, size): a tmpfs of `size` over `path`, unmounted after the test."""
    mounted: list[Path] = []

    def mount(path: Path, size: str) -> Path:
        path.mkdir(parents=True, exist_ok=True)
        proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(path)],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here (needs root/CAP_SYS_ADMIN): {proc.stderr.strip()}")
        mounted.append(path)
        return path

    yield mount
    for path in reversed(mounted):
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def _fill(folder: Path) -> None:
    """Leave no free block in the tmpfs at folder."""
    with open(folder / "ballast", "wb", buffering=0) as fh:
        try:
            while True:
                fh.write(b"\0" * 4096)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC


def test_a_full_disk_under_a_run_names_the_samples_file(tmp_path, tmpfs):
    from harness.results.store import RunStore

    root = tmpfs(tmp_path / "results", "256k")
    writer = RunStore(root).create({"target": "cpu"})
    _fill(root)
    with pytest.raises(OSError) as info:
        with writer:
            writer.append_samples("m--onnx-fp32", [{"sample_id": f"s{i}", "status": "ok", "pad": "x" * 200}
                                                   for i in range(200)])
    assert info.value.errno == errno.ENOSPC
    samples = writer.path / "samples" / "m--onnx-fp32.jsonl"
    message, code = fallback_error(info.value)
    assert message == f"{samples}: No space left on device" and code == 1


def test_a_full_disk_under_run_json_names_run_json(tmp_path, tmpfs):
    from harness.results.store import RunStore

    root = tmpfs(tmp_path / "results", "256k")
    writer = RunStore(root).create({"target": "cpu"})
    doc = writer.read_run_json()
    _fill(root)
    with pytest.raises(OSError) as info:
        writer.write_run_json({**doc, "entries": [], "status": "partial"} | {"settings": {"pad": "x" * 8192}})
    message, _ = fallback_error(info.value)
    assert message == f"{writer.path / 'run.json'}: No space left on device"
    assert json.loads((writer.path / "run.json").read_text())["run_id"] == writer.run_id  # the old one is intact


@pytest.mark.slow
def test_a_build_that_runs_out_of_space_exits_1_and_the_next_build_retries(built_packs, data_root, tmp_path, tmpfs):
    cache = tmp_path / "cache"
    shutil.copytree(built_packs / "sources" / "blazeface", cache / "sources" / "blazeface")
    packs = tmpfs(cache / "packs", "600k")  # room for onnx-fp32 (440 KB) and pack.json, not for the rest
    env = {k: v for k, v in os.environ.items() if not k.startswith("BENCH_")}
    env.update(PYTHONPATH=str(REPO), BENCH_CACHE=str(cache), BENCH_DATA=str(data_root))
    cmd = [sys.executable, "-m", "harness", "models", "build", "--model", "blazeface"]
    first = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900, cwd=tmp_path)
    assert_clean(type("R", (), {"out": first.stdout, "err": first.stderr})())
    assert first.returncode == 1, first.stderr
    errors = [line for line in first.stderr.splitlines() if line.startswith("bench: error:")]
    assert len(errors) == 1 and "No space left on device" in errors[0] and str(packs) in errors[0], first.stderr
    pack = json.loads((packs / "blazeface" / "pack.json").read_text())
    full = {v for v, r in pack["variants"].items() if r.get("retryable")}
    assert full and all(str(packs / "blazeface") in pack["variants"][v]["reason"] for v in full), pack["variants"]
    assert all(pack["variants"][v]["status"] == "failed" for v in full)
    # the disk is freed (the pack moves to a real folder), and a plain build -- no --force -- retries exactly those
    saved = tmp_path / "saved"
    shutil.copytree(packs, saved)
    subprocess.run(["umount", "-l", str(packs)], check=True)
    shutil.rmtree(packs, ignore_errors=True)
    shutil.copytree(saved, packs)
    second = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900, cwd=tmp_path)
    assert "Traceback" not in second.stderr, second.stderr
    after = json.loads((packs / "blazeface" / "pack.json").read_text())["variants"]
    assert not any(r.get("retryable") for r in after.values()), after
    for v in full:  # built now, or failed for a reason of the model (int8 fidelity on some CPUs), never skipped
        assert after[v]["rebuilt"] is True, (v, after[v])
        assert after[v]["status"] == "built" or "fidelity" in (after[v].get("reason") or ""), (v, after[v])
    kept = {v for v, r in pack["variants"].items() if r["status"] == "built"}
    assert kept and all(after[v]["rebuilt"] is False for v in kept)  # what fitted is not rebuilt
