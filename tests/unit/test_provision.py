"""harness/launchers/provision.py without a board: the board's platform report is checked field by field, the
manylinux tags it implies, the extra each target's runtime gets (Jetson keeps JetPack's onnxruntime), and the
source hash the harness wheel is cached under."""

from __future__ import annotations

import json
import shutil

import pytest

from harness import specs
from harness.errors import UnavailableError, UsageError
from harness.launchers.provision import extra_for, parse_probe, source_files, source_sha256
from harness.paths import REPO_ROOT

GOOD = {"python": "3.11.7", "implementation": "cpython", "machine": "aarch64", "libc": ["glibc", "2.36"],
        "venv": True}


def probe(**changes) -> bytes:
    return json.dumps({**GOOD, **changes}).encode()


def test_probe_gives_the_manylinux_tags_of_its_glibc():
    py = parse_probe(probe(), "board b")
    assert py.short == "3.11" and py.key == "cp311-aarch64-glibc2.36"
    assert py.platforms[0] == "manylinux_2_36_aarch64" and py.platforms[-2] == "manylinux_2_17_aarch64"
    assert py.platforms[-1] == "manylinux2014_aarch64" and len(py.platforms) == 36 - 17 + 2


@pytest.mark.parametrize("changes, field", [
    ({"python": "3.11.7; rm -rf /"}, "python"), ({"python": 3.11}, "python"), ({"python": "2.7.18"}, "python"),
    ({"implementation": "pypy"}, "implementation"), ({"machine": "../x86_64"}, "machine"),
    ({"libc": ["musl", "1.2"]}, "libc"), ({"libc": ["glibc", "2.12"]}, "libc"), ({"libc": "glibc 2.36"}, "libc")])
def test_probe_refuses_a_malformed_field_in_one_line(changes, field):
    with pytest.raises(UnavailableError) as err:
        parse_probe(probe(**changes), "board b")
    assert f"field '{field}'" in err.value.message and "\n" not in err.value.message


@pytest.mark.parametrize("data", [b"\xff\xfe", b"[1, 2]", b"{" * 100000, b"x" * 5000, b'{"python": NaN}'])
def test_probe_refuses_what_is_not_a_small_json_object(data):
    with pytest.raises(UnavailableError) as err:
        parse_probe(data, "board b")
    assert err.value.message.startswith("board b") and "\n" not in err.value.message


def test_each_target_runtime_gets_its_device_extra_and_jetson_keeps_its_onnxruntime():
    assert extra_for(specs.get_target("cpu"), None) == ("onnxruntime", "device-onnx")
    assert extra_for(specs.get_target("cpu"), "litert") == ("litert", "device-litert")
    assert extra_for(specs.get_target("rpi"), None) == ("litert", "device-litert")
    jetson = specs.get_target("jetson")
    assert jetson.system_runtimes == ("onnxruntime",)
    assert extra_for(jetson, "onnxruntime") == ("onnxruntime", None)
    assert extra_for(jetson, "litert") == ("litert", "device-litert")
    with pytest.raises(UsageError):
        extra_for(specs.get_target("coral"), "onnxruntime")


def test_source_hash_follows_content_not_caches(tmp_path):
    tree = tmp_path / "src"
    for rel in source_files(REPO_ROOT):
        (tree / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(REPO_ROOT / rel, tree / rel)
    before = source_sha256(tree)
    (tree / "harness" / "__pycache__").mkdir(exist_ok=True)
    (tree / "harness" / "__pycache__" / "x.cpython-311.pyc").write_bytes(b"\0")
    assert source_sha256(tree) == before
    (tree / "harness" / "limits.py").write_text((tree / "harness" / "limits.py").read_text() + "\n# changed\n")
    assert source_sha256(tree) != before


@pytest.fixture(scope="module")
def harness_wheel(tmp_path_factory):
    """This checkout's wheel, built as `bench device provision` builds it (its METADATA holds the markers)."""
    from harness.launchers.provision import host_wheel

    return host_wheel(tmp_path_factory.mktemp("cache"), log=lambda m: None)


@pytest.mark.parametrize("python, machine", [("3.8.10", "aarch64"), ("3.8.10", "x86_64"), ("3.9.2", "aarch64"),
                                             ("3.9.18", "x86_64")])
def test_litert_below_python_3_10_is_tflite_runtime_2_13_with_numpy_1(harness_wheel, python, machine):
    """The device-litert extra's markers, evaluated for the board's python (not this host's 3.10+): ai-edge-litert
    has no cp38/cp39 wheel, so tflite-runtime 2.13 (cp38/cp39 wheels for aarch64 and x86_64) with numpy < 2."""
    from packaging.requirements import Requirement

    from harness.launchers.provision import BoardPython, board_requirements

    reqs = [Requirement(r) for r in board_requirements(harness_wheel.path, BoardPython(python, machine, "2.31", True),
                                                       "device-litert")]
    names = [r.name for r in reqs]
    assert "ai-edge-litert" not in names and "onnxruntime" not in names
    (tflite,) = [r for r in reqs if r.name == "tflite-runtime"]
    assert "2.13.0" in tflite.specifier and "2.14.0" not in tflite.specifier and "2.12.0" not in tflite.specifier
    numpy = [r.specifier for r in reqs if r.name == "numpy"]
    newest = "1.24.4" if python.startswith("3.8") else "1.26.4"  # the newest numpy with wheels for that python
    def allowed(version):  # by every numpy requirement at once (the base install's and the extra's), as pip does
        return all(version in s for s in numpy)

    assert allowed(newest) and not allowed("2.0.2"), numpy


@pytest.mark.parametrize("python", ["3.10.12", "3.11.2", "3.13.0"])
def test_litert_from_python_3_10_is_ai_edge_litert(harness_wheel, python):
    from packaging.requirements import Requirement

    from harness.launchers.provision import BoardPython, board_requirements

    reqs = {Requirement(r).name: Requirement(r).specifier
            for r in board_requirements(harness_wheel.path, BoardPython(python, "aarch64", "2.36", True),
                                        "device-litert")}
    assert "tflite-runtime" not in reqs and "2.3.0" in reqs["ai-edge-litert"]
    assert "2.4.6" in reqs["numpy"]  # numpy 2 stays allowed where ai-edge-litert runs
