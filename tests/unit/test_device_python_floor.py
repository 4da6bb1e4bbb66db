"""The device side runs on the Pythons real boards ship: JetPack 5's 3.8 and Debian bullseye's 3.9 (the host needs
3.10+). Every harness module the worker can import (found by modulefinder, which follows function-level imports
too) must need at most Python 3.8 by vermin's static analysis; the stdlib-only ones are imported for real under
3.8 and 3.9 where those interpreters are installed (pyenv's, here)."""

from __future__ import annotations

import glob
import modulefinder
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DEVICE_ENTRIES = ("harness/device/main.py", "harness/device/health.py", "harness/device/__main__.py",
                  "harness/device/relay.py")
DEVICE_FLOOR = "3.8"
# Imported for real on old interpreters: these need nothing outside the standard library.
STDLIB_ONLY = ("harness.device.health", "harness.jobs", "harness.errors", "harness.device.lifeline",
               "harness.device.relay")


def device_module_files() -> list[str]:
    mf = modulefinder.ModuleFinder(path=[str(REPO)], excludes=["numpy", "psutil", "onnxruntime", "ai_edge_litert",
                                                               "tflite_runtime", "tomli", "tomllib"])
    for entry in DEVICE_ENTRIES:
        mf.run_script(str(REPO / entry))
    # the entry scripts too: modulefinder names each "__main__", and `python -m harness.device` runs __main__.py
    return sorted({m.__file__ for name, m in mf.modules.items() if name.startswith("harness") and m.__file__}
                  | {str(REPO / entry) for entry in DEVICE_ENTRIES})


def test_device_modules_need_at_most_python_3_8():
    pytest.importorskip("vermin")
    vermin = shutil.which("vermin", path=str(Path(sys.executable).parent)) or shutil.which("vermin")
    files = device_module_files()
    assert any(f.endswith("worker.py") for f in files) and any("runners" in f for f in files)
    assert not any(f.endswith(("scoring.py", "cli.py")) for f in files), "host-only modules reached the device"
    done = subprocess.run([vermin, "--no-tips", "--violations", f"-t={DEVICE_FLOOR}-",
                           *files], capture_output=True, text=True, cwd=REPO)
    assert done.returncode == 0, f"device modules need a newer Python than {DEVICE_FLOOR}:\n{done.stdout}{done.stderr}"


def _has_annotations(tree) -> bool:
    import ast

    for node in ast.walk(tree):
        if isinstance(node, ast.AnnAssign):
            return True
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            args = node.args
            if node.returns is not None or any(a.annotation is not None for a in (
                    *args.posonlyargs, *args.args, *args.kwonlyargs, args.vararg, args.kwarg) if a is not None):
                return True
    return False


def test_device_modules_with_annotations_defer_them():
    # vermin reads annotations as unevaluated (its default), so `def main(argv: list[str] | None = None)` passes it
    # but raises TypeError when 3.8/3.9 evaluate it at def time. PEP 563's future import keeps them strings; every
    # device module that annotates must have it (found for real by the bullseye board run: harness/device/__main__.py).
    import ast

    missing = []
    for f in device_module_files():
        tree = ast.parse(Path(f).read_text(), f)
        future = any(isinstance(n, ast.ImportFrom) and n.module == "__future__" and
                     any(a.name == "annotations" for a in n.names) for n in tree.body)
        if _has_annotations(tree) and not future:
            missing.append(str(Path(f).relative_to(REPO)))
    assert not missing, f"device modules annotate without `from __future__ import annotations`: {missing}"


def _interpreter(version: str) -> str | None:
    found = shutil.which(f"python{version}")
    if found and subprocess.run([found, "-c", "pass"], capture_output=True).returncode == 0:
        return found
    pyenv = sorted(glob.glob(str(Path.home() / f".pyenv/versions/{version}.*/bin/python{version}")))
    return pyenv[-1] if pyenv else None


@pytest.mark.parametrize("version", ["3.8", "3.9"])
def test_stdlib_device_modules_import_on_old_pythons(version):
    python = _interpreter(version)
    if python is None:
        pytest.skip(f"no python{version} interpreter on this machine")
    code = "import importlib; [importlib.import_module(m) for m in %r]; print('ok')" % (STDLIB_ONLY,)
    done = subprocess.run([python, "-c", code], capture_output=True, text=True, cwd=REPO,
                          env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    assert done.stdout.strip() == "ok", done.stderr[-2000:]
    compiled = subprocess.run([python, "-c", "import sys; [compile(open(f).read(), f, 'exec') for f in sys.argv[1:]]",
                               *device_module_files()], capture_output=True, text=True)
    assert compiled.returncode == 0, compiled.stderr[-2000:]


def test_device_modules_avoid_str_methods_vermin_cannot_see():
    # vermin cannot tell a str receiver from any other, so it lets str.removeprefix/removesuffix (3.9+) through;
    # on JetPack 5's Python 3.8 they raise AttributeError at run time.
    import re

    used = [f"{f}:{n}" for f in device_module_files() for n, line in enumerate(Path(f).read_text().splitlines(), 1)
            if re.search(r"\.remove(prefix|suffix)\(", line)]
    assert not used, f"str.removeprefix/removesuffix need Python 3.9: {used}"


def test_device_modules_merge_no_dict_literals_with_the_union_operator():
    # `{...} | {...}` (PEP 584) is Python 3.9+; vermin does not see it when one side is a call. Found for real by
    # the Python 3.8 board (tests/remote/test_old_python_board.py): environment.fingerprint() on JetPack 5's 3.8.
    import ast

    found = []
    for f in device_module_files():
        for n in ast.walk(ast.parse(Path(f).read_text(), f)):
            if isinstance(n, (ast.BinOp, ast.AugAssign)) and isinstance(n.op, ast.BitOr):
                sides = (n.left, n.right) if isinstance(n, ast.BinOp) else (n.value,)
                if any(isinstance(s, (ast.Dict, ast.DictComp)) for s in sides):
                    found.append(f"{f}:{n.lineno}")
    assert not found, f"dict union (Python 3.9+) in device modules: {found}"


def test_device_modules_subscript_builtin_types_only_in_annotations():
    # `dict[str, float]` outside an annotation is evaluated at run time and is Python 3.9+ (PEP 585); PEP 563 keeps
    # only annotations as strings. Found for real by the Python 3.8 board: harness/trackers/probe.py's aliases.
    import ast

    builtins = {"list", "dict", "tuple", "set", "frozenset", "type"}
    found = []
    for f in device_module_files():
        tree = ast.parse(Path(f).read_text(), f)
        in_annotations = set()
        for n in ast.walk(tree):
            parts = []
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)):
                a = n.args
                parts = [x.annotation for x in (*a.posonlyargs, *a.args, *a.kwonlyargs, a.vararg, a.kwarg)
                         if x is not None and x.annotation is not None] + ([n.returns] if n.returns else [])
            elif isinstance(n, ast.AnnAssign):
                parts = [n.annotation]
            in_annotations |= {id(x) for part in parts for x in ast.walk(part)}
        found += [f"{f}:{n.lineno}" for n in ast.walk(tree) if isinstance(n, ast.Subscript)
                  and isinstance(n.value, ast.Name) and n.value.id in builtins and id(n) not in in_annotations]
    assert not found, f"builtin generics evaluated at run time (Python 3.9+) in device modules: {found}"
