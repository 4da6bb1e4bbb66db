"""The runtime registry (harness/runtimes.py) and the target profile search path (specs.target_dirs,
$BENCH_TARGETS_PATH), issue 21: adding a board is one profile (in a lab's own folder) plus, for a new runtime, one
registry entry and one runner module; `bench targets list` says where each profile came from; a lab profile that
reuses an id, a bad profile or a bad search path is one line naming the file, exit 2."""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

import pytest

from harness import runtimes, specs
from harness.cli import main
from harness.errors import EXIT_OK, EXIT_USAGE
from harness.jobs import BackendRequest
from harness.launchers import trust
from harness.paths import REPO_ROOT
from harness.runners import backend_availability, make_runner

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

LAB_CPU = '''id = "lab-cpu"
name = "A lab's x86 box (onnxruntime CPU)"
[[backends]]
runtime = "onnxruntime"
provider = "CPUExecutionProvider"
variants = ["onnx-fp32", "onnx-int8"]
threads = 2
'''


def _bench(argv: list[str], capsys) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


# --- the runtime registry ---------------------------------------------------------------------------------------

def test_every_registered_runtime_has_a_runner_module_and_a_device_extra():
    extras = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    for name, rt in runtimes.RUNTIMES.items():
        mod = runtimes.module(name)
        assert all(callable(getattr(mod, f, None)) for f in ("make", "availability", "prepare")), name
        assert rt.extra in extras, f"{name}: device extra {rt.extra} not in pyproject.toml"
        assert rt.default in rt.cpu  # a profile that names nothing runs on the CPU


def test_no_runtime_is_chosen_by_an_if_chain_outside_the_registry():
    # A comparison of a runtime name with a literal ("runtime == 'onnxruntime'", "runtime in ('litert', ...)") is a
    # second place that has to know each runtime; the registry and the runner modules are the only ones allowed.
    branch = re.compile(r"runtime\s*(==|!=|\bin\b|\bnot in\b)\s*[(\[{]?\s*[\"'](%s)[\"']" % "|".join(runtimes.RUNTIMES))
    allowed = {REPO_ROOT / "harness/runtimes.py"} | set((REPO_ROOT / "harness/runners").glob("*_runner.py"))
    found = [f"{p.relative_to(REPO_ROOT)}:{i}" for p in sorted((REPO_ROOT / "harness").rglob("*.py"))
             if p not in allowed for i, line in enumerate(p.read_text().splitlines(), 1) if branch.search(line)]
    assert not found, f"runtime if-chains outside harness/runtimes.py: {found}"


@pytest.mark.parametrize("backend, requested, on_cpu", [
    (BackendRequest(runtime="onnxruntime", provider="CPUExecutionProvider"), "CPUExecutionProvider", True),
    (BackendRequest(runtime="onnxruntime"), "CPUExecutionProvider", True),
    (BackendRequest(runtime="onnxruntime", provider="TensorrtExecutionProvider"), "TensorrtExecutionProvider", False),
    (BackendRequest(runtime="litert"), "xnnpack", True),
    (BackendRequest(runtime="litert", delegate="none"), "none", True),
    (BackendRequest(runtime="litert", delegate="edgetpu"), "edgetpu", False),
])
def test_what_a_backend_requests_and_whether_it_runs_on_the_cpu(backend, requested, on_cpu):
    assert runtimes.requested(backend) == requested and runtimes.cpu_executed(backend) is on_cpu


TOY_RUNNER = '''
from harness.runners.base import BackendInfo


class ToyRunner:
    def __init__(self, path, delegate):
        self.path, self.backend = path, BackendInfo(runtime="toyrt", version="0.1", requested=delegate,
                                                    active=[delegate], ok=True)


def make(backend, path, *, layout=None):
    return ToyRunner(path, backend.delegate or "npu")


def availability(backend):
    return (True, None) if backend.delegate == "npu" else (False, f"no {backend.delegate} on this machine")


def prepare(backend, model_sha256):
    return backend, None
'''


def test_a_new_runtime_is_one_registry_entry_one_module_and_one_lab_profile(tmp_path, monkeypatch, capsys):
    (tmp_path / "mods").mkdir()
    (tmp_path / "mods" / "toyrt_runner.py").write_text(TOY_RUNNER)
    monkeypatch.syspath_prepend(str(tmp_path / "mods"))
    monkeypatch.setitem(runtimes.RUNTIMES, "toyrt", runtimes.Runtime(
        "toyrt", "toyrt_runner", option="delegate", default="npu", cpu=(), extra="device-toy", packages=("toyrt",)))
    lab = tmp_path / "lab"
    lab.mkdir()
    (lab / "toy-npu.toml").write_text('id = "toy-npu"\nname = "Toy NPU board"\n[[backends]]\nruntime = "toyrt"\n'
                                      'delegate = "npu"\nvariants = ["onnx-int8"]\n[[backends]]\nruntime = "toyrt"\n'
                                      'delegate = "dsp"\nvariants = ["tflite-int8"]\n')
    monkeypatch.setenv(specs.TARGETS_PATH_ENV, str(lab))
    code, out, err = _bench(["targets", "list", "--json"], capsys)
    assert code == EXIT_OK, err
    row = next(r for r in json.loads(out) if r["target"] == "toy-npu")
    assert row["source"] == str(lab) and row["available"] is True
    assert [(b["requested"], b["available"], b["reason"]) for b in row["backends"]] == [
        ("npu", True, None), ("dsp", False, "no dsp on this machine")]
    backend = specs.get_target("toy-npu").backends[0]
    runner = make_runner(backend, tmp_path / "m.onnx")
    assert runner.backend.requested == "npu" and runner.path == tmp_path / "m.onnx"
    assert not runtimes.cpu_executed(backend)  # an accelerator: never judged by CPU contention
    job = type("J", (), {"backend": BackendRequest(runtime="toyrt")})()
    assert trust.expected_requested(job) == "npu"


def test_an_unknown_runtime_is_unavailable_not_a_crash():
    backend = specs.Backend(runtime="hailort", variants=())
    assert backend_availability(backend) == (False, "no runner for runtime 'hailort' (known: onnxruntime, litert)")


# --- the target profile search path -----------------------------------------------------------------------------

def test_a_labs_profile_is_listed_with_where_it_came_from(tmp_path, monkeypatch, capsys):
    lab = tmp_path / "lab targets"
    lab.mkdir()
    (lab / "lab-cpu.toml").write_text(LAB_CPU)
    monkeypatch.setenv(specs.TARGETS_PATH_ENV, os.pathsep.join(["", str(lab), str(lab)]))  # empty part, lab twice
    assert specs.target_dirs() == [specs.TARGETS_DIR, lab]
    assert specs.get_target("lab-cpu").path == lab / "lab-cpu.toml"
    code, out, err = _bench(["targets", "--json"], capsys)
    assert code == EXIT_OK, err
    sources = {r["target"]: r["source"] for r in json.loads(out)}
    assert sources["lab-cpu"] == str(lab) and sources["cpu"] == sources["rpi"] == "built-in"
    assert {r["target"]: r["available"] for r in json.loads(out)}["lab-cpu"] is True  # onnxruntime CPU is here
    code, out, err = _bench(["targets", "list"], capsys)
    assert code == EXIT_OK and "lab-cpu" in out and "built-in" in out and "from" in out


def test_a_lab_profile_reusing_an_id_is_refused_naming_both_files(tmp_path, monkeypatch, capsys):
    lab = tmp_path / "lab"
    lab.mkdir()
    (lab / "rpi.toml").write_text((specs.TARGETS_DIR / "rpi.toml").read_text().replace("threads = 4", "threads = 2"))
    monkeypatch.setenv(specs.TARGETS_PATH_ENV, str(lab))
    code, out, err = _bench(["targets"], capsys)
    assert code == EXIT_USAGE and out == ""
    assert err.strip().splitlines() == [
        f"bench: error: {lab / 'rpi.toml'}: target 'rpi' is already defined by {specs.TARGETS_DIR / 'rpi.toml'}; "
        "a lab's profile needs an id of its own (docs/targets.md)"]
    code, _, err = _bench(["run", "--target", "cpu", "--no-build", "--results-dir", str(tmp_path / "r")], capsys)
    assert code == EXIT_USAGE and "already defined" in err  # every command, not just the listing


@pytest.mark.parametrize("name, text, problem", [
    ("broken.toml", 'id = "broken"\n[[backends]\n', "invalid TOML"),
    ("noid.toml", '[[backends]]\nruntime = "onnxruntime"\n', "missing key 'id'"),
    ("badrt.toml", 'id = "badrt"\n[[backends]]\nruntime = "tensorflow"\nvariants = []\n', "runtime"),
    ("noprov.toml", 'id = "noprov"\n[[backends]]\nruntime = "onnxruntime"\nvariants = []\n',
     "backends[0] (onnxruntime) needs a 'provider'"),
    ("my board.toml", LAB_CPU, "not a safe file name"),
])
def test_a_bad_lab_profile_is_one_line_naming_the_file_exit_2(tmp_path, monkeypatch, capsys, name, text, problem):
    lab = tmp_path / "lab"
    lab.mkdir()
    (lab / name).write_text(text)
    monkeypatch.setenv(specs.TARGETS_PATH_ENV, str(lab))
    code, _, err = _bench(["targets"], capsys)
    lines = err.strip().splitlines()
    assert code == EXIT_USAGE and len(lines) == 1, err
    assert str(lab / name) in lines[0] and problem in lines[0] and "Traceback" not in err


def test_a_search_path_part_that_is_not_a_folder_is_exit_2(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(specs.TARGETS_PATH_ENV, str(tmp_path / "nowhere"))
    code, _, err = _bench(["targets"], capsys)
    assert code == EXIT_USAGE
    assert err.strip() == f"bench: error: {specs.TARGETS_PATH_ENV}: {tmp_path / 'nowhere'}: no such folder"
    (tmp_path / "file").write_text("x")
    monkeypatch.setenv(specs.TARGETS_PATH_ENV, str(tmp_path / "file"))
    code, _, err = _bench(["targets"], capsys)
    assert code == EXIT_USAGE and err.strip().endswith(": not a folder")


@pytest.mark.e2e
@pytest.mark.slow
def test_a_run_on_a_labs_profile_records_where_the_profile_came_from(tmp_path, monkeypatch, capsys, built_packs,
                                                                      data_root):
    lab = tmp_path / "lab"
    lab.mkdir()
    (lab / "lab-cpu.toml").write_text(LAB_CPU)
    monkeypatch.setenv(specs.TARGETS_PATH_ENV, str(lab))
    code, out, err = _bench(["run", "--target", "lab-cpu", "--model", "gender-dlib", "--variant", "onnx-int8",
                             "--dataset", "london-frl", "--limit", "4", "--threads", "1", "--min-count", "3",
                             "--min-duration", "0.1", "--bootstrap", "20", "--no-build", "--results-dir",
                             str(tmp_path / "results"), "--cache-dir", str(built_packs), "--data-root",
                             str(data_root)], capsys)
    assert code == EXIT_OK, err[-2000:]
    doc = json.loads((Path(out.strip().splitlines()[-1]) / "run.json").read_text())
    assert doc["target"]["id"] == "lab-cpu" and doc["target"]["profile"]["source"] == str(lab)
    (e,) = doc["entries"]
    assert e["status"] == "ok" and e["backend"]["requested"] == "CPUExecutionProvider"
