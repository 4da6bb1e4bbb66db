"""One int8 pack, two x86 kernel paths, one machine: this host's MLAS int8 kernel against the AVX2 one, on the same
inputs. Needs an x86-64 host whose int8 path is not AVX2's (AVX512-VNNI, AVX-VNNI, AMX, AVX-512 core) and Debian's
qemu-user-static.

    python tools/int8_cross_kernel.py OUT [--recipes DIR] [--model ID ...] [--limit N] [--cpu MODEL]

onnxruntime's MLAS picks its int8 GEMM kernel from CPUID at start-up (onnxruntime/core/mlas/lib/platform.cpp): on
AVX2 without AVX-512 it multiplies U8 by S8 with VPMADDUBSW, whose int16 pair sums saturate; VNNI/AMX kernels
accumulate in int32 and do not (docs/metrics.md, "Int8 recipes"). This tool runs every pack twice, in a child
process each: natively, and under QEMU's user-mode emulator with `-cpu Haswell` (AVX2 + FMA + F16C, no AVX-512, no
VNNI: QEMU's TCG implements AVX2 but no AVX-512), so the same onnxruntime build dispatches its AVX2 kernels. Each
child reads the CPUID its own instructions see (leaf 7: AVX2, AVX512F/BW, AVX512_VNNI; leaf 7.1: AVX-VNNI) and the
tool names the kernel path each side took from that, by harness/kernel_path.py's rule. The emulator computes what
the instructions compute, so outputs are what an AVX2 host's kernel gives; its timings mean nothing and none are
taken.

Inputs: each model's calibration-disjoint faces, exactly those of the build's fidelity check (harness.models.build,
`calibration_inputs`: every face of fairface-sample outside the calibration split), made once, natively. Packs:
each model's onnx-fp32 (the float floor: AVX-512 against AVX2 SGEMM) and onnx-int8 from the cache (the shipped
recipe), and every `OUT/<model>/<recipe>/cache` that tools/int8_recipes.py left under --recipes.

Prints, per pack, the faces whose outputs are bit-identical on both paths, the largest output difference, and the
task's agreement between the two paths (harness.models.fidelity.compare: decisions, cosines or eye error, with the
build's interval rule); and per int8 pack its fidelity against fp32 on each path, as the build measures it. Writes
OUT/inputs-<model>.npz, OUT/{native,emulated}.npz and OUT/result.json. A few minutes on 2 cores (the emulated side
is ~10-30x slower than native).
"""

from __future__ import annotations

import argparse
import ctypes
import json
import mmap
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

# x86-64 System V: cpuid(leaf=edi, subleaf=esi, out=rdx) -> out[0..3] = eax, ebx, ecx, edx (rbx callee-saved).
_CPUID = bytes.fromhex("53" "89f8" "89f1" "4989d0" "0fa2" "418900" "41895804" "41894808" "4189500c" "5b" "c3")


def cpuid_features() -> dict[str, bool]:
    """The int8-relevant CPUID bits this process's own instructions see (under QEMU: the emulated CPU's), named as
    /proc/cpuinfo names them. OS enablement (XGETBV) is not read; the kernel path follows from these bits."""
    buf = mmap.mmap(-1, mmap.PAGESIZE, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    buf.write(_CPUID)
    fn = ctypes.CFUNCTYPE(None, ctypes.c_uint32, ctypes.c_uint32, ctypes.POINTER(ctypes.c_uint32))(
        ctypes.addressof(ctypes.c_char.from_buffer(buf)))
    out = (ctypes.c_uint32 * 4)()
    fn(0, 0, out)
    if out[0] < 7:
        return {"avx2": False}
    fn(1, 0, out)
    fma, f16c = bool(out[2] >> 12 & 1), bool(out[2] >> 29 & 1)
    fn(7, 0, out)
    b, c = out[1], out[2]
    feats = {"avx2": bool(b >> 5 & 1), "fma": fma, "f16c": f16c, "avx512f": bool(b >> 16 & 1),
             "avx512dq": bool(b >> 17 & 1), "avx512bw": bool(b >> 30 & 1), "avx512vl": bool(b >> 31 & 1),
             "avx512_vnni": bool(c >> 11 & 1)}
    fn(7, 1, out)
    feats["avx_vnni"] = bool(out[0] >> 4 & 1)
    feats.update(amx_tile=False, amx_int8=False)  # AMX also needs the OS's tile permission; not read here
    return feats


def child(jobs_path: Path, out_path: Path) -> None:
    """Run every job's pack over its model's inputs with the harness's CPU runner; outputs per job and tensor."""
    from harness import kernel_path
    from harness.models.build import _outputs, cpu_runner

    jobs = json.loads(jobs_path.read_text())
    feats = cpuid_features()
    arrays: dict[str, np.ndarray] = {}
    for j in jobs:
        samples = list(np.load(j["inputs"])["x"])
        runner = cpu_runner(Path(j["pack"]), "onnx")
        outs = _outputs(runner, samples)
        runner.close()
        for t in range(len(outs[0])):
            arrays[f"{j['key']}/{t}"] = np.concatenate([np.asarray(o[t]) for o in outs])
    arrays["_cpuid"] = np.frombuffer(json.dumps(
        {"features": feats, "path": kernel_path.int8_path(feats, "x86_64")}).encode(), dtype=np.uint8)
    np.savez(out_path, **arrays)


def packs(cache: Path, recipes: Path | None, models: list[str]) -> list[dict]:
    out = []
    for m in models:
        for v in ("onnx-fp32", "onnx-int8"):
            out.append({"model": m, "recipe": "shipped" if v == "onnx-int8" else "fp32", "variant": v,
                        "pack": str(cache / "packs" / m / f"{v}.onnx")})
        for d in sorted((recipes / m).glob("*/cache/packs")) if recipes else []:
            out.append({"model": m, "recipe": d.parent.parent.name.replace("-", " "), "variant": "onnx-int8",
                        "pack": str(d / m / "onnx-int8.onnx")})
    return [dict(p, key=f"{p['model']}|{p['recipe']}") for p in out if Path(p["pack"]).is_file()]


def per_face(a: dict[str, np.ndarray], b: dict[str, np.ndarray], key: str) -> tuple[int, int, float]:
    """(faces with every output bit-identical, faces, largest absolute output difference)."""
    names = sorted(k for k in a if k.startswith(key + "/"))
    n = len(a[names[0]])
    same = np.ones(n, dtype=bool)
    worst = 0.0
    for k in names:
        x, y = a[k].reshape(n, -1), b[k].reshape(n, -1)
        same &= (x.view(np.uint8).reshape(n, -1) == y.view(np.uint8).reshape(n, -1)).all(axis=1)
        worst = max(worst, float(np.abs(x.astype(np.float64) - y).max()))
    return int(same.sum()), n, worst


def as_outputs(d: dict[str, np.ndarray], key: str) -> list[list[np.ndarray]]:
    names = sorted((k for k in d if k.startswith(key + "/")), key=lambda k: int(k.rsplit("/", 1)[1]))
    n = len(d[names[0]])
    return [[d[k][i:i + 1] for k in names] for i in range(n)]


def summary(task: str, fid: dict) -> str:
    dis = fid["disagreement"]
    head = f"{dis['k']}/{dis['n']} differ (95% upper {dis['ci_hi']:.1%})"
    if task == "gender":
        return f"{head}, agreement {fid['decision_agreement']:.3f}, max abs dP {fid['max_abs_diff']:.3f}"
    if task == "verification":
        return f"{head}, mean cos {fid['mean_cosine']:.4f}, min cos {fid['min_cosine']:.4f}"
    eye = "-" if fid["mean_eye_err"] is None else f"{fid['mean_eye_err']:.3f}"
    return f"{head}, found {fid['found_agreement']:.3f}, mean eye err {eye}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--recipes", type=Path, help="tools/int8_recipes.py's OUT: its recipe packs too")
    ap.add_argument("--model", action="append", help="a model with an onnx-int8 variant (default: all)")
    ap.add_argument("--limit", type=int, default=0, help="the first N faces per model (default: all)")
    ap.add_argument("--cpu", default="Haswell", help="QEMU's -cpu model for the emulated side (default Haswell)")
    ap.add_argument("--child", nargs=2, type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        child(*args.child)
        return 0

    from harness import kernel_path
    from harness.models import fidelity
    from harness.models.build import CalibrationConfig, calibration_inputs
    from harness.paths import cache_root, data_root
    from harness.specs import all_models, get_model

    qemu = shutil.which("qemu-x86_64-static") or shutil.which("qemu-x86_64")
    if platform.machine() not in ("x86_64", "AMD64") or qemu is None:
        print("int8_cross_kernel: needs an x86-64 host and qemu-x86_64 (apt-get install qemu-user-static)",
              file=sys.stderr)
        return 2
    native_path = kernel_path.int8_path(cpuid_features(), "x86_64")
    if native_path == "x86-avx2-vpmaddubsw":
        print("int8_cross_kernel: this host's int8 path is AVX2's already (x86-avx2-vpmaddubsw): both sides would run "
              "the same kernel; run it on a VNNI, AMX or AVX-512 host", file=sys.stderr)
        return 2
    cache = cache_root().path
    ids = args.model or sorted(m.id for m in all_models() if "onnx-int8" in m.variants)
    models = [get_model(i) for i in ids]
    args.out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    inputs = calibration_inputs(cache, data_root().path, CalibrationConfig(), models, log=print)
    for m in models:
        faces = inputs.fidelity[m.id][:args.limit or None]
        np.savez(args.out / f"inputs-{m.id}.npz", x=np.stack(faces))
    print(f"inputs: {', '.join(f'{m.id} {len(inputs.fidelity[m.id][:args.limit or None])} faces' for m in models)} "
          f"({time.perf_counter() - t0:.0f} s)", flush=True)
    jobs = [dict(p, inputs=str(args.out / f"inputs-{p['model']}.npz")) for p in packs(cache, args.recipes, ids)]
    (args.out / "jobs.json").write_text(json.dumps(jobs, indent=1))
    got = {}
    for side, prefix in (("native", []), ("emulated", [qemu, "-cpu", args.cpu])):
        t0 = time.perf_counter()
        cmd = [*prefix, sys.executable, str(Path(__file__).resolve()), str(args.out), "--child", str(args.out / "jobs.json"),
               str(args.out / f"{side}.npz")]
        proc = subprocess.run(cmd, stderr=subprocess.PIPE, text=True,
                              env=dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1"))
        if proc.returncode != 0:
            print(f"int8_cross_kernel: the {side} side exited {proc.returncode}: "
                  f"{proc.stderr.strip().splitlines()[-1:]}", file=sys.stderr)
            return 1
        with np.load(args.out / f"{side}.npz") as z:
            got[side] = {k: z[k] for k in z.files}
        info = json.loads(got[side].pop("_cpuid").tobytes())
        got[side + "_cpu"] = info
        print(f"{side}: int8 path {info['path']} (CPUID {', '.join(k for k, v in info['features'].items() if v)}), "
              f"{time.perf_counter() - t0:.0f} s", flush=True)
    if got["emulated_cpu"]["path"] == got["native_cpu"]["path"]:
        print(f"int8_cross_kernel: both sides took {got['native_cpu']['path']}; nothing to compare", file=sys.stderr)
        return 2
    nat, emu = got["native"], got["emulated"]
    rows = []
    print(f"\n| model | pack | bit-identical faces | largest output difference | {got['native_cpu']['path']} vs "
          f"{got['emulated_cpu']['path']} (fidelity.compare) | vs fp32 on {got['native_cpu']['path']} | vs fp32 on "
          f"{got['emulated_cpu']['path']} |\n|---|---|---|---|---|---|---|")
    for p in jobs:
        task = get_model(p["model"]).task
        same, n, worst = per_face(nat, emu, p["key"])
        across = fidelity.compare(task, as_outputs(nat, p["key"]), as_outputs(emu, p["key"]))
        row = {"model": p["model"], "recipe": p["recipe"], "variant": p["variant"], "faces": n, "bit_identical": same,
               "max_abs_diff": worst, "across_paths": across}
        cells = [summary(task, across)]
        if p["variant"] == "onnx-int8":
            ref = f"{p['model']}|fp32"
            for side, d in (("native", nat), ("emulated", emu)):
                row[f"vs_fp32_{side}"] = fidelity.compare(task, as_outputs(d, ref), as_outputs(d, p["key"]))
                cells.append(summary(task, row[f"vs_fp32_{side}"]))
        else:
            cells += ["-", "-"]
        rows.append(row)
        print(f"| {p['model']} | {p['variant']} {p['recipe']} | {same}/{n} | {worst:.3g} | " + " | ".join(cells) + " |")
    (args.out / "result.json").write_text(json.dumps(
        {"native": got["native_cpu"], "emulated": dict(got["emulated_cpu"], qemu=qemu, cpu=args.cpu),
         "inputs": inputs.record, "rows": rows}, indent=1, default=float))
    return 0


if __name__ == "__main__":
    sys.exit(main())
