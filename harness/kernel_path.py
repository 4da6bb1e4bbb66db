"""The CPU's int8/fp16 kernel path: which instruction-set features a run had, and which int8 GEMM kernels
onnxruntime's MLAS picks from them.

One int8 pack gives different outputs on two CPUs of the same ISA when the runtime dispatches different kernels:
on x86-64 MLAS multiplies U8 activations by S8 weights with VPMADDUBSW on AVX2 and on AVX-512 without VNNI, which
adds two u8*s8 products into a *saturating* int16 before widening, while AVX512-VNNI / AVX-VNNI (VPDPBUSD) and AMX
(TDPBUSD) accumulate in int32 and do not saturate. onnxruntime's quantization guide says so and names
`reduce_range` (7-bit weights) or U8U8 as the remedies
(https://onnxruntime.ai/docs/performance/model-optimizations/quantization.html, "When and why do I need to try
U8U8?"). On aarch64 MLAS uses plain NEON widening multiplies, the dot-product instructions (UDOT/SDOT, `asimddp`)
or the int8 matrix-multiply instructions (UMMLA/SMMLA, `i8mm`; Linux only).

`int8_path` follows MLAS's platform dispatch (onnxruntime/core/mlas/lib/platform.cpp, `MLAS_PLATFORM::MLAS_PLATFORM`;
read at onnxruntime 1.2x/1.3x): on x86-64, in order, AVX2+FMA -> U8S8 `MlasGemmU8S8KernelAvx2` (VPMADDUBSW) and U8U8
`MlasGemmU8U8KernelAvx2` (VPMADDWD on zero-extended 16-bit values, no saturation); AVX-VNNI -> U8S8 AvxVnni;
AVX512F+BW+DQ+VL ("AVX512 core") -> U8S8/U8U8 Avx512Core (VPMADDUBSW again, overriding AVX-VNNI); AVX512-VNNI ->
U8S8 Avx512Vnni; AVX-VNNI-INT8 -> U8U8/S8S8 Avx2Vnni; AMX-TILE+AMX-INT8 with the OS's tile state -> U8S8 AMX.
On aarch64: NEON, then UDOT/SDOT when `asimddp`, then UMMLA/SMMLA when `i8mm`.

The features come from /proc/cpuinfo (`flags` on x86, `Features` on ARM): the kernel's view of CPUID / HWCAP,
which already hides what the OS does not enable (AVX-512 without its XSAVE state, AMX without tile permission).
The path is DERIVED from those flags, never observed: onnxruntime exposes no kernel choice (`get_build_info`,
`get_ep_devices` report none; checked with onnxruntime 1.31) and neither does LiteRT/XNNPACK, so the block says
"not reported by the runtime". XNNPACK (LiteRT) has its own per-ISA microkernels; the same features select them,
but this module names only MLAS's choice.

Standard library only: the device side (harness/device/) records this too.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

UNKNOWN = "unknown"
RUNTIME_REPORTED = "not reported by the runtime"
LABEL = "int8 kernel path (derived from CPU flags per onnxruntime MLAS dispatch)"
SOURCE = ("onnxruntime/core/mlas/lib/platform.cpp (MLAS_PLATFORM dispatch); "
          "https://onnxruntime.ai/docs/performance/model-optimizations/quantization.html")

# /proc/cpuinfo names of the features that select int8 / fp16 kernels.
X86_FEATURES = ("avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512dq", "avx512vl", "avx512_vnni", "avx_vnni",
                "avx_vnni_int8", "avx512_fp16", "avx512_bf16", "amx_tile", "amx_int8", "amx_bf16")
ARM_FEATURES = ("asimd", "asimddp", "asimdhp", "fphp", "i8mm", "sve", "sve2", "bf16")
X86_ARCHS = ("x86_64", "amd64", "i686", "i386", "x86")
ARM_ARCHS = ("aarch64", "arm64")

# Stable ids (what comparisons key on) -> what each means.
PATHS: dict[str, dict[str, Any]] = {
    "x86-amx": {"label": "x86 AMX (TDPBUSD tiles)", "u8s8": "MlasGemmU8S8DispatchAmx", "saturates": False},
    "x86-avx512-vnni": {"label": "x86 AVX512-VNNI (VPDPBUSD)", "u8s8": "MlasGemmU8S8KernelAvx512Vnni",
                        "saturates": False},
    "x86-avx512bw-vpmaddubsw": {"label": "x86 AVX-512 U8S8 via VPMADDUBSW (can saturate)",
                                "u8s8": "MlasGemmU8S8KernelAvx512Core", "saturates": True},
    "x86-avx-vnni": {"label": "x86 AVX-VNNI (VEX VPDPBUSD)", "u8s8": "MlasGemmU8S8KernelAvxVnni",
                     "saturates": False},
    "x86-avx2-vpmaddubsw": {"label": "x86 AVX2 U8S8 via VPMADDUBSW (can saturate)",
                            "u8s8": "MlasGemmU8S8KernelAvx2", "saturates": True},
    "x86-sse": {"label": "x86 SSE (no AVX2)", "u8s8": "MlasGemmU8X8DispatchSse/Sse41", "saturates": False},
    "aarch64-i8mm": {"label": "aarch64 I8MM (UMMLA/SMMLA)", "u8s8": "MlasGemmU8X8DispatchUmmla", "saturates": False},
    "aarch64-dot": {"label": "aarch64 SDOT/UDOT (asimddp)", "u8s8": "MlasGemmU8X8DispatchUdot", "saturates": False},
    "aarch64-neon": {"label": "aarch64 plain NEON (no dot product)", "u8s8": "MlasGemmX8S8DispatchNeon",
                     "saturates": False},
    UNKNOWN: {"label": "unknown (CPU flags or architecture not recorded)", "u8s8": UNKNOWN, "saturates": None},
}


def _family(arch: str) -> str | None:
    a = (arch or "").lower()
    return "x86" if a in X86_ARCHS else "arm" if a in ARM_ARCHS else None


def features(flags: Iterable[str] | str | None, arch: str) -> dict[str, bool] | str:
    """Each kernel-selecting feature of the architecture's family -> present, or "unknown" without flags."""
    family = _family(arch)
    if family is None or not flags or isinstance(flags, str):
        return UNKNOWN
    have = set(flags)
    return {f: f in have for f in (X86_FEATURES if family == "x86" else ARM_FEATURES)}


def int8_path(feats: Mapping[str, bool] | str, arch: str) -> str:
    """The id (a PATHS key) of the int8 GEMM kernel MLAS dispatches for U8S8 with these features."""
    family = _family(arch)
    if family is None or not isinstance(feats, Mapping):
        return UNKNOWN
    f = feats.get
    if family == "arm":
        return "aarch64-i8mm" if f("i8mm") else "aarch64-dot" if f("asimddp") else "aarch64-neon"
    if not (f("avx2") and f("fma")):
        return "x86-sse"
    if f("amx_tile") and f("amx_int8"):
        return "x86-amx"
    if f("avx512f") and all(f(x) for x in ("avx512bw", "avx512dq", "avx512vl")):
        return "x86-avx512-vnni" if f("avx512_vnni") else "x86-avx512bw-vpmaddubsw"
    return "x86-avx-vnni" if f("avx_vnni") else "x86-avx2-vpmaddubsw"


def u8u8_kernel(feats: Mapping[str, bool] | str, arch: str) -> str:
    """MLAS's U8U8 GEMM for these features (the saturation-free format the quantization guide suggests)."""
    family = _family(arch)
    if family is None or not isinstance(feats, Mapping):
        return UNKNOWN
    f = feats.get
    if family == "arm":
        return ("MlasGemmU8X8DispatchUmmla" if f("i8mm") else "MlasGemmU8X8DispatchUdot" if f("asimddp")
                else "MlasGemmU8X8DispatchNeon")
    if not (f("avx2") and f("fma")):
        return "MlasGemmU8X8DispatchSse"
    if f("avx_vnni_int8"):
        return "MlasGemmU8U8DispatchAvx2Vnni"
    if f("avx512f") and all(f(x) for x in ("avx512bw", "avx512dq", "avx512vl")):
        return "MlasGemmU8U8KernelAvx512Core"
    return "MlasGemmU8U8KernelAvx2"


def fp16_arithmetic(feats: Mapping[str, bool] | str, arch: str) -> bool | str:
    """Whether the CPU computes in fp16 (ARM `asimdhp`/`fphp`, x86 AVX512-FP16); F16C is conversion only."""
    family = _family(arch)
    if family is None or not isinstance(feats, Mapping):
        return UNKNOWN
    return bool(feats.get("asimdhp") or feats.get("fphp")) if family == "arm" else bool(feats.get("avx512_fp16"))


def kernel_path(flags: Iterable[str] | str | None, arch: str) -> dict[str, Any]:
    """The run.json `kernel_path` block for a CPU with these /proc/cpuinfo flags and this machine architecture."""
    feats = features(flags, arch)
    path = int8_path(feats, arch)
    info = PATHS[path]
    return {"arch": arch or UNKNOWN, "features": feats, "int8": path, "int8_label": info["label"],
            "int8_u8s8_kernel": info["u8s8"],
            "int8_u8u8_kernel": u8u8_kernel(feats, arch), "int8_can_saturate": info["saturates"],
            "fp16_arithmetic": fp16_arithmetic(feats, arch), "label": LABEL, "source": SOURCE,
            "runtime_reported": RUNTIME_REPORTED}


def of_environment(env: Mapping[str, Any] | None) -> dict[str, Any]:
    """A run's kernel path from its environment block, derived here from the recorded CPU flags and arch (so runs
    recorded before the block existed still compare, and a board's own labels are never trusted: everything a
    board sends back is data). Without flags, the recorded block's path id if it is one this module knows."""
    env = env if isinstance(env, Mapping) else {}
    cpu = env.get("cpu") if isinstance(env.get("cpu"), Mapping) else {}
    flags, arch = cpu.get("flags"), str(cpu.get("arch") or UNKNOWN)
    if isinstance(flags, list) and all(isinstance(f, str) for f in flags):
        return kernel_path(flags, arch)
    block = env.get("kernel_path")
    recorded = block.get("int8") if isinstance(block, Mapping) else None
    out = kernel_path(None, arch)
    if isinstance(recorded, str) and recorded in PATHS:
        info = PATHS[recorded]
        out.update({"int8": recorded, "int8_label": info["label"], "int8_u8s8_kernel": info["u8s8"],
                    "int8_can_saturate": info["saturates"]})
    return out


def of_run(doc: Mapping[str, Any]) -> dict[str, Any]:
    """The kernel path of the machine that ran a run's models: the device's own fingerprint when a board ran them
    (run.json `device_environment`), else the host's (`environment`)."""
    return of_environment(doc.get("device_environment") or doc.get("environment"))


def describe(block: Mapping[str, Any]) -> str:
    """One line for consoles and reports: "x86 AVX2 U8S8 via VPMADDUBSW (can saturate) [x86-avx2-vpmaddubsw]"."""
    return f"{block.get('int8_label', UNKNOWN)} [{block.get('int8', UNKNOWN)}]"
