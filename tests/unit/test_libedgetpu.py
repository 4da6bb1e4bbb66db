"""The board's libedgetpu version (issue 21): dpkg-query's answer, the library file's name, and what the Edge TPU
runner records, through a fake `dpkg-query` on PATH and a fake library folder (this machine has no Edge TPU)."""

from __future__ import annotations

import os
import sys
import types
from pathlib import Path

import pytest

from harness.device import libedgetpu
from harness.runners import litert_runner
from harness.runners.litert_runner import LiteRTRunner

# dpkg-query -W -f '${db:Status-Abbrev}\t${Package}\t${Version}\n' libedgetpu1-std libedgetpu1-max on a board with
# Coral's apt repository (coral.ai/docs/accelerator/get-started) and the std runtime installed; dpkg prints "un " for
# a package it knows of but has not installed.
RECORDED = "ii \tlibedgetpu1-std\t16.0\nun \tlibedgetpu1-max\t\n"


@pytest.fixture
def gender_tflite(built_packs) -> Path:
    from harness.models.pack import variant_path

    return variant_path(built_packs, "gender-dlib", "tflite-fp32")


@pytest.fixture
def fake_dpkg(tmp_path, monkeypatch):
    def install(stdout: str, rc: int = 0):
        bin_dir = tmp_path / "bin"
        bin_dir.mkdir(exist_ok=True)
        exe = bin_dir / "dpkg-query"
        (tmp_path / "answer").write_text(stdout)
        exe.write_text(f"#!{sys.executable}\nimport sys\nsys.stdout.write(open({str(tmp_path / 'answer')!r}).read())\n"
                       f"sys.exit({rc})\n")
        exe.chmod(0o755)
        monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return install


def test_recorded_dpkg_answer():
    assert libedgetpu.parse_dpkg_query(RECORDED) == "libedgetpu1-std 16.0"
    assert libedgetpu.parse_dpkg_query("un \tlibedgetpu1-std\t\nun \tlibedgetpu1-max\t\n") is None
    assert libedgetpu.parse_dpkg_query("ii \tlibedgetpu1-max\t16.0\n") == "libedgetpu1-max 16.0"


@pytest.mark.parametrize("hostile", [
    "ii \tlibedgetpu1-std\t16.0\x1b[31m\n",            # a terminal escape in the version
    "ii \tlibedgetpu1-std\t16.0 $(reboot)\n",          # not a Debian version
    "ii \tlibevil\t1.0\n",                             # another package
    "ii \tlibedgetpu1-std\t" + "9" * 100 + "\n",       # unbounded
])
def test_a_board_answer_that_is_not_a_version_is_not_taken(hostile):
    assert libedgetpu.parse_dpkg_query(hostile) is None


def test_dpkg_query_at_the_process_boundary(fake_dpkg):
    fake_dpkg(RECORDED, rc=1)  # exit 1: one of the two packages is unknown; the other is still listed
    assert libedgetpu.from_dpkg() == "libedgetpu1-std 16.0"
    assert libedgetpu.libedgetpu_version() == "libedgetpu1-std 16.0"


def test_without_dpkg_the_library_file_names_its_abi(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))  # no dpkg-query at all
    lib = tmp_path / "lib"
    lib.mkdir()
    (lib / "libedgetpu.so.1.0").write_bytes(b"\x7fELF stand-in")
    (lib / "libedgetpu.so.1").symlink_to("libedgetpu.so.1.0")
    assert libedgetpu.from_dpkg() is None
    assert libedgetpu.from_library_file("libedgetpu.so.1", dirs=(str(lib),)) == "libedgetpu.so.1.0 (file; no dpkg record)"
    assert libedgetpu.from_library_file(str(lib / "libedgetpu.so.1")) == "libedgetpu.so.1.0 (file; no dpkg record)"
    assert libedgetpu.from_library_file("libedgetpu.so.1", dirs=(str(tmp_path / "none"),)) is None
    monkeypatch.setattr(libedgetpu, "LIBRARY_DIRS", (str(tmp_path / "none"),))
    assert libedgetpu.libedgetpu_version() == "unknown"


def test_the_edgetpu_runner_records_the_boards_libedgetpu(gender_tflite, monkeypatch, fake_dpkg):
    """A delegate that "loads" (faked) and a model the runner takes for compiled: its backend record names libedgetpu
    as dpkg-query reports it."""
    from ai_edge_litert import interpreter as real

    def interpreter(**kwargs):
        assert kwargs.pop("experimental_delegates", []) == ["fake-edgetpu-delegate"]
        return real.Interpreter(**kwargs)

    fake = types.SimpleNamespace(Interpreter=interpreter, OpResolverType=real.OpResolverType,
                                 load_delegate=lambda lib: "fake-edgetpu-delegate")
    monkeypatch.setattr(litert_runner, "import_litert", lambda: (fake, "ai-edge-litert", "fake"))
    monkeypatch.setattr(litert_runner, "find_delegate_library", lambda name: "/usr/lib/libedgetpu.so.1")
    monkeypatch.setattr(litert_runner, "_execution_ops", lambda interp: ["edgetpu-custom-op", "DELEGATE"])
    fake_dpkg(RECORDED)
    runner = LiteRTRunner(gender_tflite, delegate="edgetpu", delegate_library="libedgetpu.so.1")
    assert runner.backend.ok and runner.backend.detail == "libedgetpu: libedgetpu1-std 16.0"
    assert runner.backend.to_dict()["detail"] == "libedgetpu: libedgetpu1-std 16.0"
