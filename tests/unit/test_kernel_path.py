"""The int8 kernel path from recorded /proc/cpuinfo texts (tests/fixtures/cpuinfo/README.md says where each was
recorded). Nothing here depends on the CPU the tests run on."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness import environment as env
from harness import kernel_path as kp

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "cpuinfo"


def flags_of(name: str) -> list[str]:
    return env.parse_cpuinfo((FIXTURES / name).read_text())["flags"]


@pytest.mark.parametrize("fixture, arch, path, saturates, fp16", [
    ("x86_amd_epyc_avx2.txt", "x86_64", "x86-avx2-vpmaddubsw", True, False),
    ("x86_xeon_8269cy_avx512_vnni.txt", "x86_64", "x86-avx512-vnni", False, False),
    ("x86_amd_epyc_avx512_vnni.txt", "x86_64", "x86-avx512-vnni", False, False),
    ("rpi5_cortex_a76.txt", "aarch64", "aarch64-dot", False, True),
    ("rpi4_cortex_a72.txt", "aarch64", "aarch64-neon", False, False),
])
def test_recorded_cpus(fixture, arch, path, saturates, fp16):
    block = kp.kernel_path(flags_of(fixture), arch)
    assert block["int8"] == path and block["int8_can_saturate"] is saturates and block["fp16_arithmetic"] is fp16
    assert block["int8_label"] == kp.PATHS[path]["label"] and block["runtime_reported"] == kp.RUNTIME_REPORTED
    json.dumps(block)


def test_recorded_features():
    epyc = kp.features(flags_of("x86_amd_epyc_avx2.txt"), "x86_64")
    assert epyc["avx2"] and epyc["f16c"] and not epyc["avx512f"] and not epyc["avx512_vnni"] and not epyc["avx_vnni"]
    xeon = kp.features(flags_of("x86_xeon_8269cy_avx512_vnni.txt"), "x86_64")
    assert xeon["avx512f"] and xeon["avx512bw"] and xeon["avx512_vnni"] and not xeon["amx_tile"]
    pi5 = kp.features(flags_of("rpi5_cortex_a76.txt"), "aarch64")
    assert pi5["asimddp"] and pi5["asimdhp"] and pi5["fphp"] and not pi5["i8mm"] and not pi5["sve"]
    pi4 = kp.features(flags_of("rpi4_cortex_a72.txt"), "aarch64")
    assert pi4["asimd"] and not any(pi4[f] for f in ("asimddp", "asimdhp", "fphp", "i8mm", "sve", "bf16"))
    assert set(pi4) == set(kp.ARM_FEATURES) and set(epyc) == set(kp.X86_FEATURES)


@pytest.mark.parametrize("base, add, drop, path", [
    # MLAS's order (platform.cpp): AMX over AVX512-VNNI over AVX-512 core over AVX-VNNI over AVX2.
    ("x86_xeon_8269cy_avx512_vnni.txt", {"amx_tile", "amx_int8"}, set(), "x86-amx"),
    ("x86_xeon_8269cy_avx512_vnni.txt", {"amx_tile"}, set(), "x86-avx512-vnni"),  # tiles without int8: no AMX
    ("x86_xeon_8269cy_avx512_vnni.txt", set(), {"avx512_vnni"}, "x86-avx512bw-vpmaddubsw"),
    ("x86_xeon_8269cy_avx512_vnni.txt", {"avx_vnni"}, {"avx512_vnni"}, "x86-avx512bw-vpmaddubsw"),
    ("x86_xeon_8269cy_avx512_vnni.txt", set(), {"avx512vl"}, "x86-avx2-vpmaddubsw"),  # no AVX-512 core
    ("x86_amd_epyc_avx2.txt", {"avx_vnni"}, set(), "x86-avx-vnni"),
    ("x86_amd_epyc_avx2.txt", set(), {"avx2"}, "x86-sse"),
    ("x86_amd_epyc_avx2.txt", set(), {"fma"}, "x86-sse"),
    ("rpi5_cortex_a76.txt", {"i8mm"}, set(), "aarch64-i8mm"),
])
def test_dispatch_order(base, add, drop, path):
    flags = (set(flags_of(base)) | add) - drop
    assert kp.kernel_path(sorted(flags), "x86_64" if base.startswith("x86") else "aarch64")["int8"] == path


def test_u8u8_kernels_follow_mlas():
    epyc = kp.features(flags_of("x86_amd_epyc_avx2.txt"), "x86_64")
    assert kp.u8u8_kernel(epyc, "x86_64") == "MlasGemmU8U8KernelAvx2"
    assert kp.u8u8_kernel(epyc | {"avx_vnni_int8": True}, "x86_64") == "MlasGemmU8U8DispatchAvx2Vnni"
    assert kp.u8u8_kernel(kp.features(flags_of("rpi4_cortex_a72.txt"), "aarch64"), "aarch64") == \
        "MlasGemmU8X8DispatchNeon"


@pytest.mark.parametrize("flags, arch", [("unknown", "x86_64"), (None, "aarch64"), (["avx2", "fma"], "unknown"),
                                         (["avx2", "fma"], "riscv64"), ([], "x86_64")])
def test_unknown_without_flags_or_arch(flags, arch):
    block = kp.kernel_path(flags, arch)
    assert block["int8"] == kp.UNKNOWN and block["features"] == kp.UNKNOWN and block["int8_can_saturate"] is None


def test_of_environment_derives_from_flags_and_distrusts_labels():
    flags = flags_of("rpi4_cortex_a72.txt")
    # A board's recorded block says something else: the flags decide, the label is never taken from the board.
    board = {"cpu": {"arch": "aarch64", "flags": flags},
             "kernel_path": {"int8": "x86-amx", "int8_label": "[bold]pwned[/]"}}
    assert kp.of_environment(board)["int8"] == "aarch64-neon"
    assert kp.of_environment(board)["int8_label"] == kp.PATHS["aarch64-neon"]["label"]
    # Without flags, a recorded id this module knows is kept; anything else is unknown.
    assert kp.of_environment({"cpu": {"arch": "aarch64"}, "kernel_path": {"int8": "aarch64-dot"}})["int8"] == \
        "aarch64-dot"
    assert kp.of_environment({"cpu": {"arch": "x86_64"}, "kernel_path": {"int8": "../etc"}})["int8"] == kp.UNKNOWN
    assert kp.of_environment(None)["int8"] == kp.UNKNOWN
    assert kp.of_environment({"cpu": "garbage", "kernel_path": 3})["int8"] == kp.UNKNOWN


def test_of_run_prefers_the_device_fingerprint():
    host = {"cpu": {"arch": "x86_64", "flags": flags_of("x86_amd_epyc_avx2.txt")}}
    board = {"cpu": {"arch": "aarch64", "flags": flags_of("rpi5_cortex_a76.txt")}}
    assert kp.of_run({"environment": host})["int8"] == "x86-avx2-vpmaddubsw"
    assert kp.of_run({"environment": host, "device_environment": board})["int8"] == "aarch64-dot"


def test_fingerprint_records_the_kernel_path_from_a_cpuinfo_file(tmp_path, monkeypatch):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text((FIXTURES / "x86_xeon_8269cy_avx512_vnni.txt").read_text())
    monkeypatch.setattr(env, "CPUINFO", cpuinfo)
    monkeypatch.setattr(env.cpu_info, "__defaults__", (cpuinfo,))
    monkeypatch.setattr(env.platform, "machine", lambda: "x86_64")
    fp = env.fingerprint(runtimes=("numpy",))
    assert fp["cpu"]["model"].startswith("Intel(R) Xeon(R) Platinum 8269CY")
    assert fp["kernel_path"]["int8"] == "x86-avx512-vnni" and fp["kernel_path"]["features"]["avx512_vnni"]


def test_this_machines_fingerprint_is_consistent():
    """Whatever this CPU is, the recorded block is the one its recorded flags give."""
    fp = env.fingerprint(runtimes=("numpy",))
    assert fp["kernel_path"]["int8"] in kp.PATHS
    assert kp.of_environment(fp)["int8"] == fp["kernel_path"]["int8"]


def test_board_health_report_carries_the_kernel_path():
    from harness.device.health import report

    out = report({"backends": []})
    assert out["kernel_path"] == out["fingerprint"]["kernel_path"] and out["kernel_path"]["int8"] in kp.PATHS
