"""The CPU features that select a runtime's int8/fp16 kernels, as recorded beside every fidelity figure.

The same int8 model gives different outputs on two x86 CPUs when one has VNNI and the other does not (onnxruntime's
U8S8 kernels fall back to VPMADDUBSW, which saturates; issue 16), so a fidelity figure means little without the
kernel path it was measured on. Read from /proc/cpuinfo (x86 "flags", ARM "Features"); a field that cannot be read
is "unknown", never an error. Kept to one function so that the run fingerprint's own helper can replace it.
"""

from __future__ import annotations

import platform
from pathlib import Path
from typing import Any

from harness.environment import CPUINFO, UNKNOWN, parse_cpuinfo

# x86: AVX2/AVX-512 widths, the VNNI dot products (AVX512-VNNI, AVX-VNNI) and AMX tiles, which onnxruntime's MLAS
# dispatches int8 GEMM/conv on; ARM: dot product (asimddp), int8 matrix multiply (i8mm), fp16 arithmetic.
KERNEL_FLAGS = ("avx2", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "amx_tile", "amx_int8", "amx_bf16",
                "asimddp", "i8mm", "fphp", "asimdhp", "sve")


def kernel_features(path: Path = CPUINFO) -> dict[str, Any]:
    """{"arch", "model", "features": {flag: bool for the flags of this architecture}, "vnni": bool | "unknown"}."""
    try:
        parsed = parse_cpuinfo(path.read_text())
    except OSError:
        parsed = {}
    arch = platform.machine() or UNKNOWN
    flags = set(parsed.get("flags") or ())
    x86 = arch.lower() in ("x86_64", "amd64", "i686", "i386")
    names = [f for f in KERNEL_FLAGS if (not f.startswith(("asimd", "i8mm", "fphp", "sve"))) == x86]
    features: dict[str, Any] = {f: f in flags for f in names} if flags else {f: UNKNOWN for f in names}
    vnni: Any = (features.get("avx512_vnni") is True or features.get("avx_vnni") is True) if flags and x86 \
        else UNKNOWN
    return {"arch": arch, "model": parsed.get("model", UNKNOWN), "features": features, "vnni": vnni}


def describe(host: dict | None) -> str:
    """'x86_64, avx2, no VNNI' style: the kernel path a figure was measured on, for one line of text."""
    if not isinstance(host, dict):
        return "build host unknown"
    feats = host.get("features") or {}
    have = [f for f, v in feats.items() if v is True]
    parts = [str(host.get("arch", UNKNOWN))] + (have or ["no listed int8/fp16 features"])
    if host.get("vnni") is False:
        parts.append("no VNNI")
    return ", ".join(parts)
