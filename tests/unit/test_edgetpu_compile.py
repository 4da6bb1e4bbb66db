"""Compiled variants (issue 21): the variant id grammar, edgetpu_compiler's report and version parsed from recorded
real output, and the process boundary through a fake `edgetpu_compiler` on PATH that writes a file and such a log."""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
from pathlib import Path

import pytest

from harness import specs
from harness.cli import main
from harness.errors import EXIT_FAILURE, EXIT_UNAVAILABLE, EXIT_USAGE, BuildError, InputError, UnknownIdError
from harness.models import compile as compile_mod
from harness.models.fetch import sha256_file
from harness.models.pack import read_pack, variant_path, variant_status

FIXTURES = Path(__file__).parents[1] / "fixtures" / "edgetpu_compiler"
VERSION = "16.0.384591198"

# What the fake prints and logs: compiler 16.0's layout (tests/fixtures/edgetpu_compiler), with counts of its own.
FAKE = r'''#!{python}
import os, sys
from pathlib import Path

args = sys.argv[1:]
if args == ["--version"]:
    print("Edge TPU Compiler version {version}")
    sys.exit(0)
if os.environ.get("FAKE_EDGETPU_FAIL"):
    print("Edge TPU Compiler version {version}")
    print("Internal compiler error. Aborting!")
    sys.exit(1)
out, src = Path(args[args.index("-o") + 1]), Path(args[-1])
stem = src.stem + "_edgetpu"
(out / (stem + ".tflite")).write_bytes(src.read_bytes() + b"compiled by the fake edgetpu_compiler")
table = """Operator                       Count      Status

CONV_2D                        20         Mapped to Edge TPU
DEPTHWISE_CONV_2D              13         Mapped to Edge TPU
FULLY_CONNECTED                1          Mapped to Edge TPU
LOGISTIC                       1          More than one subgraph is not supported
"""
head = "Edge TPU Compiler version {version}\nInput: %s\nOutput: %s.tflite\n\n" % (src.name, stem)
(out / (stem + ".log")).write_text(head + table)
print("Edge TPU Compiler version {version}\n\nModel compiled successfully in 812 ms.\n")
print("Number of Edge TPU subgraphs: 1\nTotal number of operations: 35\nOperation log: %s.log\n" % stem)
print("Number of operations that will run on Edge TPU: 34\nNumber of operations that will run on CPU: 1\n")
print(table)
'''


# -- the variant id grammar ------------------------------------------------------------------------------------------

def test_variant_ids_parse_in_one_place():
    v = specs.parse_variant("tflite-int8@edgetpu")
    assert (v.format, v.precision, v.compiler, v.base, str(v)) == ("tflite", "int8", "edgetpu", "tflite-int8",
                                                                    "tflite-int8@edgetpu")
    assert specs.parse_variant("onnx-fp16").compiler is None
    assert specs.split_variant("tflite-int8@edgetpu") == ("tflite", "int8")
    for bad in ("onnx-int8@edgetpu", "tflite-fp32@edgetpu", "tflite-int8@", "tflite-int8@hailo", "tflite-int9"):
        with pytest.raises(UnknownIdError, match=r"valid: .*tflite-int8@edgetpu"):
            specs.parse_variant(bad)


def test_a_profile_naming_an_unknown_compiled_variant_names_the_file(tmp_path):
    bad = tmp_path / "toy.toml"
    bad.write_text('id = "toy"\n[[backends]]\nruntime = "litert"\nvariants = ["tflite-fp16@edgetpu"]\n')
    with pytest.raises(InputError, match=r"toy.toml: unknown variant 'tflite-fp16@edgetpu'"):
        specs.load_target(bad)


def test_run_refuses_an_unknown_variant_with_exit_2(capsys, tmp_path):
    code = main(["run", "--target", "cpu", "--variant", "tflite-int8@tpu", "--no-build", "--results-dir",
                 str(tmp_path)])
    err = capsys.readouterr().err.strip()
    assert code == EXIT_USAGE and "unknown variant 'tflite-int8@tpu'" in err and len(err.splitlines()) == 1


def test_the_coral_profile_runs_the_compiled_variant_on_the_delegate():
    coral = specs.get_target("coral")
    assert coral.variants == ("tflite-int8@edgetpu",)
    assert coral.backend_for("tflite-int8@edgetpu").delegate == "edgetpu"


# -- the compiler's report and version, from recorded real output ----------------------------------------------------

def test_version_from_real_output():
    assert compile_mod.parse_version((FIXTURES / "stdout-16.0-head.txt").read_text()) == "16.0.384591198"
    assert compile_mod.parse_version((FIXTURES / "stdout-2.1-partial.txt").read_text()) == "2.1.302470888"
    assert compile_mod.parse_version((FIXTURES / "log-14.1.txt").read_text()) == "14.1.317412892"
    assert compile_mod.parse_version("edgetpu_compiler: command not found") is None
    assert compile_mod.parse_version("Edge TPU Compiler version 16.0; rm -rf /") is None  # not a version


def test_summary_lines_win_over_a_cut_table():
    m = compile_mod.parse_report((FIXTURES / "stdout-2.1-partial.txt").read_text())
    assert (m["ops_edgetpu"], m["ops_cpu"], m["ops"], m["ops_total_reported"]) == (83, 10, 93, 93)
    assert m["share_edgetpu"] == round(83 / 93, 4) and m["counted_from"] == "summary lines"
    assert m["edgetpu_subgraphs"] == 1
    assert m["operators"][1] == {"operator": "ADD", "count": 10, "status": "Mapped to Edge TPU", "mapped": True}


def test_the_operation_log_alone_is_counted_from_its_table():
    m = compile_mod.parse_report((FIXTURES / "log-14.1.txt").read_text())
    assert (m["ops_edgetpu"], m["ops_cpu"]) == (6 + 11 + 2, 1 + 1 + 2 + 1 + 1)
    assert m["counted_from"] == "operator table" and len(m["operators"]) == 8
    assert m["ops_total_reported"] is None
    q = [o for o in m["operators"] if o["operator"] == "QUANTIZE" and not o["mapped"]]
    assert q[0]["status"].startswith("Operation is otherwise supported")


def test_a_report_without_operations_is_refused():
    with pytest.raises(BuildError, match="no operator table"):
        compile_mod.parse_report((FIXTURES / "stdout-16.0-head.txt").read_text())


# -- the process boundary: a fake edgetpu_compiler on PATH -----------------------------------------------------------

@pytest.fixture
def pack_copy(built_packs, tmp_path) -> Path:
    cache = tmp_path / "cache"
    shutil.copytree(Path(built_packs) / "packs" / "gender-dlib", cache / "packs" / "gender-dlib")
    return cache


@pytest.fixture
def fake_compiler(tmp_path, monkeypatch) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    exe = bin_dir / "edgetpu_compiler"
    exe.write_text(FAKE.replace("{python}", sys.executable).replace("{version}", VERSION))
    exe.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return exe


def _walk(node):
    if isinstance(node, dict):
        for k, v in node.items():
            yield k, v
            yield from _walk(v)
    elif isinstance(node, list):
        for v in node:
            yield from _walk(v)


def _files(folder: Path) -> dict:
    return {p.name: sha256_file(p) for p in sorted(folder.iterdir())}


def test_no_compiler_is_exit_3_and_nothing_written(pack_copy, capsys, monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name, *a, **k: None if name == "edgetpu_compiler" else "/usr/bin/x")
    folder = pack_copy / "packs" / "gender-dlib"
    before = _files(folder)
    code = main(["models", "build", "--model", "gender-dlib", "--compile", "edgetpu", "--cache-dir", str(pack_copy)])
    err = capsys.readouterr().err.strip()
    assert code == EXIT_UNAVAILABLE and len(err.splitlines()) == 1
    assert err.startswith("bench: error: edgetpu_compiler: unavailable on this machine")
    assert _files(folder) == before


def test_compile_records_compiler_mapping_and_both_hashes(pack_copy, fake_compiler, capsys):
    code = main(["models", "build", "--model", "gender-dlib", "--compile", "edgetpu", "--cache-dir", str(pack_copy)])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "gender-dlib tflite-int8@edgetpu: compiled, 34 of 35 operations on the Edge TPU" in out
    rec = read_pack(pack_copy, "gender-dlib")["variants"]["tflite-int8@edgetpu"]
    source = variant_path(pack_copy, "gender-dlib", "tflite-int8")
    compiled = variant_path(pack_copy, "gender-dlib", "tflite-int8@edgetpu")
    assert compiled.name == "tflite-int8_edgetpu.tflite" and compiled.with_suffix(".log").is_file()
    assert rec["status"] == "built" and rec["compiler"]["name"] == "edgetpu_compiler"
    assert rec["compiler"]["version"] == VERSION and rec["compiler"]["path"] == str(fake_compiler)
    assert rec["source_sha256"] == sha256_file(source) and rec["sha256"] == sha256_file(compiled)
    assert rec["sha256"] != rec["source_sha256"]
    m = rec["mapping"]
    assert (m["ops_edgetpu"], m["ops_cpu"], m["ops_total_reported"], m["counted_from"]) == (34, 1, 35, "summary lines")
    assert not list((pack_copy / "packs" / "gender-dlib").glob(".*compiling"))  # its temporary folder is gone

    # Listed with the other variants, and the coral plan takes it (the delegate's availability is the board's).
    code = main(["models", "list", "--model", "gender-dlib", "--json", "--cache-dir", str(pack_copy)])
    rows = {r["variant"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["tflite-int8@edgetpu"]["status"] == "built" and rows["tflite-int8@edgetpu"]["mapping"]["ops"] == 35
    from harness.scenarios import orchestrate

    cfg = orchestrate.RunConfig(target="coral", models=("gender-dlib",))
    (e,) = orchestrate.plan_entries(specs.get_target("coral"), cfg, pack_copy, availability=lambda b: (True, None))
    assert e["status"] == "pending" and e["variant"] == "tflite-int8@edgetpu" and e["path"] == str(compiled)
    assert e["model_sha256"] == rec["sha256"] and e["backend_spec"].delegate == "edgetpu"
    # Entry ids name files: the variant in its file-name form, as run.schema.json's entry pattern requires.
    schema = json.loads((Path(orchestrate.__file__).parents[1] / "schema" / "run.schema.json").read_text())
    pattern = next(v for k, v in _walk(schema) if k == "entry" and isinstance(v, dict) and "pattern" in v)["pattern"]
    assert e["entry"] == "gender-dlib--tflite-int8_edgetpu" and re.fullmatch(pattern, e["entry"])

    # A second build keeps it; a rebuilt source variant makes it stale.
    assert main(["models", "build", "--model", "gender-dlib", "--compile", "edgetpu", "--cache-dir",
                 str(pack_copy)]) == 0
    assert "up to date" in capsys.readouterr().out
    pack = read_pack(pack_copy, "gender-dlib")
    pack["variants"]["tflite-int8"]["sha256"] = "0" * 64
    (pack_copy / "packs" / "gender-dlib" / "pack.json").write_text(json.dumps(pack))
    vs = variant_status(pack_copy, specs.get_model("gender-dlib"), "tflite-int8@edgetpu", verify=False)
    assert vs.status == "stale" and "source variant tflite-int8 changed" in vs.reason
    assert "--compile edgetpu" in vs.reason


def test_a_compiler_failure_is_recorded_and_nothing_published(pack_copy, fake_compiler, capsys, monkeypatch):
    monkeypatch.setenv("FAKE_EDGETPU_FAIL", "1")
    code = main(["models", "build", "--model", "gender-dlib", "--compile", "edgetpu", "--cache-dir", str(pack_copy)])
    out = capsys.readouterr().out
    assert code == EXIT_FAILURE
    assert "not compiled: gender-dlib tflite-int8@edgetpu" in out and "Internal compiler error. Aborting!" in out
    rec = read_pack(pack_copy, "gender-dlib")["variants"]["tflite-int8@edgetpu"]
    assert rec["status"] == "failed" and "exit status 1" in rec["reason"]
    assert not variant_path(pack_copy, "gender-dlib", "tflite-int8@edgetpu").exists()
    assert not list((pack_copy / "packs" / "gender-dlib").glob(".*compiling"))


def test_a_coral_run_compiles_what_its_plan_needs(pack_copy, fake_compiler):
    """bench run --target coral (without --no-build) compiles the planned models' tflite-int8@edgetpu when the
    compiler is installed; a run of another target or variant compiles nothing."""
    import io

    from rich.console import Console

    from harness.commands.run import _compile_for_plan

    err = Console(file=io.StringIO())
    model = specs.get_model("gender-dlib")
    _compile_for_plan(specs.get_target("cpu"), [], [model], pack_copy, err)
    _compile_for_plan(specs.get_target("coral"), ["tflite-fp32"], [model], pack_copy, err)
    assert "tflite-int8@edgetpu" not in read_pack(pack_copy, "gender-dlib")["variants"]
    _compile_for_plan(specs.get_target("coral"), [], [model], pack_copy, err)
    assert variant_status(pack_copy, model, "tflite-int8@edgetpu").status == "built"
    assert "compiling gender-dlib for edgetpu" in err.file.getvalue()
