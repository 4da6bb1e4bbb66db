"""tools/int8_cross_kernel.py's premise, checked on the machine running the tests: the CPUID bits its children read
are the ones /proc/cpuinfo shows, and QEMU's `-cpu Haswell` hides AVX-512 and VNNI from a process under it, so the
same onnxruntime build dispatches its AVX2 int8 kernel there (harness/kernel_path.py's rule). Independent of which
int8 kernel this machine's CPU picks."""

from __future__ import annotations

import importlib.util
import json
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from harness import environment as env
from harness import kernel_path as kp

TOOL = Path(__file__).resolve().parents[2] / "tools" / "int8_cross_kernel.py"
X86 = platform.machine() in ("x86_64", "AMD64")
pytestmark = pytest.mark.skipif(not X86, reason="CPUID is an x86 instruction")


def tool():
    spec = importlib.util.spec_from_file_location("int8_cross_kernel", TOOL)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_cpuid_agrees_with_proc_cpuinfo():
    flags = set(env.parse_cpuinfo(Path("/proc/cpuinfo").read_text())["flags"])
    feats = tool().cpuid_features()
    for name in ("avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni"):
        assert feats[name] == (name in flags), name


def test_qemu_haswell_takes_the_avx2_int8_kernel():
    qemu = shutil.which("qemu-x86_64-static") or shutil.which("qemu-x86_64")
    if qemu is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("qemu-x86_64-static is missing (qemu-user-static): CI must check the emulated AVX2 side")
        pytest.skip("qemu-x86_64-static is not installed (apt-get install qemu-user-static)")
    code = ("import importlib.util, json, sys; s = importlib.util.spec_from_file_location('t', sys.argv[1]); "
            "m = importlib.util.module_from_spec(s); s.loader.exec_module(m); print(json.dumps(m.cpuid_features()))")
    out = subprocess.run([qemu, "-cpu", "Haswell", sys.executable, "-c", code, str(TOOL)], capture_output=True,
                         text=True, timeout=120, check=True).stdout
    feats = json.loads(out.strip().splitlines()[-1])
    assert feats["avx2"] and feats["fma"] and not feats["avx512f"] and not feats["avx512_vnni"]
    assert kp.int8_path(feats, "x86_64") == "x86-avx2-vpmaddubsw"
