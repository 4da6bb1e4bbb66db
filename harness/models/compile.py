"""Compiled variants (issue 21): `tflite-int8@edgetpu`, made from a built variant by the vendor's compiler.

`bench models build --compile edgetpu` (and `bench run --target coral`, when the compiler is installed) runs the real
`edgetpu_compiler` on the pack's `tflite-int8.tflite` and keeps its output as the variant `tflite-int8@edgetpu`,
file `tflite-int8_edgetpu.tflite` (the compiler's own naming, coral.ai/docs/edgetpu/compiler "Usage"), beside the
compiler's operation log `tflite-int8_edgetpu.log`. The pack records the compiler and its version, the source
variant's sha256 and the output's sha256, and the share of operations mapped to the Edge TPU parsed from the
compiler's report. A compiled variant whose source variant has been rebuilt since is stale (harness.models.pack).

The compiler runs on x86-64 Debian-based Linux only; where it is not on PATH the command stops with exit 3
("unavailable on this machine") before anything is written. It writes into a private temporary folder in the pack
folder; only a finished, successful compilation is moved into place, under the pack lock.

The report's format, transcribed from edgetpu_compiler 2.1 to 16.0 output (Coral's documentation and the
google-coral/edgetpu issue tracker; fixtures in tests/fixtures/edgetpu_compiler/):

    Edge TPU Compiler version 16.0.384591198
    ...
    Number of Edge TPU subgraphs: 1
    Total number of operations: 93
    Operation log: model2_edgetpu.log
    ...
    Number of operations that will run on Edge TPU: 83     (printed only when some operations stay on the CPU)
    Number of operations that will run on CPU: 10

    Operator                       Count      Status

    ADD                            10         Mapped to Edge TPU
    LOGISTIC                       1          More than one subgraph is not supported
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Callable

from harness.errors import BenchError, BuildError, UnavailableError
from harness.files import naming
from harness.models.fetch import publish, sha256_file
from harness.models.lock import DEFAULT_TIMEOUT_S, cache_lock, pack_lock_path
from harness.models.pack import built_from, read_pack, variant_path, variant_status, write_pack
from harness.names import shown
from harness.paths import packs_dir
from harness.specs import COMPILES, ModelSpec, parse_variant

COMPILER_EXECUTABLES = {"edgetpu": "edgetpu_compiler"}
MAPPED = "Mapped to Edge TPU"
COMPILE_TIMEOUT_S = 600  # the compiler's own per-model timer defaults to 180 s (its --timeout_sec)
_VERSION = re.compile(r"^Edge TPU Compiler version ([0-9][0-9A-Za-z.+_-]{0,63})\s*$", re.M)
_ON_TPU = re.compile(r"^Number of operations that will run on Edge TPU:\s*(\d+)\s*$", re.M)
_ON_CPU = re.compile(r"^Number of operations that will run on CPU:\s*(\d+)\s*$", re.M)
_TOTAL = re.compile(r"^Total number of operations:\s*(\d+)\s*$", re.M)
_SUBGRAPHS = re.compile(r"^Number of Edge TPU subgraphs:\s*(\d+)\s*$", re.M)
_HEADER = re.compile(r"^\s*Operator\s+Count\s+Status\s*$", re.M)
_ROW = re.compile(r"^([A-Z][A-Z0-9_]*)\s+(\d+)\s+(\S.*?)\s*$")


def parse_version(text: str) -> str | None:
    """The version from `edgetpu_compiler --version` (or the first line of its report), e.g. '16.0.384591198'."""
    m = _VERSION.search(text)
    return m.group(1) if m else None


def parse_report(text: str) -> dict:
    """The operations the compiler mapped to the Edge TPU and those left on the CPU, from its report or log.

    Counts come from the "Number of operations that will run on ..." lines where the compiler prints them (only when
    some stay on the CPU); otherwise from the per-operator table (status "Mapped to Edge TPU" or a reason). The share
    is a census of the model's operations, not a sample, so it carries its counts and no interval."""
    operators = []
    header = _HEADER.search(text)
    if header:
        for line in text[header.end():].splitlines():
            if not line.strip():
                continue
            row = _ROW.match(line)
            if not row:
                break
            operators.append({"operator": row.group(1), "count": int(row.group(2)), "status": shown(row.group(3)),
                              "mapped": row.group(3) == MAPPED})
    table_tpu = sum(o["count"] for o in operators if o["mapped"])
    table_cpu = sum(o["count"] for o in operators if not o["mapped"])
    on_tpu, on_cpu = _ON_TPU.search(text), _ON_CPU.search(text)
    tpu = int(on_tpu.group(1)) if on_tpu else table_tpu
    cpu = int(on_cpu.group(1)) if on_cpu else table_cpu
    total = _TOTAL.search(text)
    subgraphs = _SUBGRAPHS.search(text)
    if not operators and not (on_tpu and on_cpu):
        raise BuildError("edgetpu_compiler: its report has no operator table (Operator / Count / Status) and no "
                         "'Number of operations that will run on' lines")
    n = tpu + cpu
    return {"ops_edgetpu": tpu, "ops_cpu": cpu, "ops": n, "share_edgetpu": round(tpu / n, 4) if n else None,
            "ops_total_reported": int(total.group(1)) if total else None,
            "edgetpu_subgraphs": int(subgraphs.group(1)) if subgraphs else None,
            "counted_from": "summary lines" if on_tpu and on_cpu else "operator table", "operators": operators}


def compiler_path(compiler: str) -> str:
    """The compiler's executable on PATH, or UnavailableError (exit 3) saying where it runs and how to install it."""
    exe = COMPILER_EXECUTABLES[compiler]
    found = shutil.which(exe)
    if found is None:
        raise UnavailableError(f"{exe}: unavailable on this machine (not on PATH); it runs on x86-64 Debian-based "
                               f"Linux only: apt-get install edgetpu-compiler (coral.ai/docs/edgetpu/compiler)")
    return found


def _run(args: list[str], timeout_s: float) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(args, capture_output=True, text=True, errors="replace", timeout=timeout_s,
                              stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise BuildError(f"{args[0]}: no answer within {timeout_s:g} s") from None
    except OSError as exc:
        raise UnavailableError(f"{args[0]}: cannot be started ({exc.strerror or exc})") from None


def compiler_version(exe: str) -> str:
    done = _run([exe, "--version"], 60)
    version = parse_version(done.stdout + "\n" + done.stderr)
    if version is None:
        raise BuildError(f"{exe} --version: no 'Edge TPU Compiler version' line in its output "
                         f"({shown((done.stdout + done.stderr).strip()[:200])})")
    return version


def compiled_variants(compiler: str) -> list[str]:
    return [f"{base}@{compiler}" for base in COMPILES[compiler]]


def needs_compile(cache: Path, model: ModelSpec, variant: str, version: str | None = None) -> bool:
    """Whether `variant` (compiled) is not built, stale, corrupt, or made by another compiler version."""
    vs = variant_status(cache, model, variant)
    if vs.status != "built":
        return True
    return version is not None and (vs.info.get("compiler") or {}).get("version") != version


def compile_model(cache: Path, model: ModelSpec, compiler: str, *, force: bool = False, log: Callable = print,
                  lock_timeout_s: float = DEFAULT_TIMEOUT_S) -> dict:
    """Compile every variant `compiler` takes (COMPILES) of `model`'s pack; returns the pack's records of them."""
    exe = compiler_path(compiler)  # before anything is written: exit 3 here leaves the cache untouched
    version = compiler_version(exe)
    out = {}
    with cache_lock(pack_lock_path(cache, model.id), f"the {model.id} model pack in {cache}", log=log,
                    timeout_s=lock_timeout_s):
        for variant in compiled_variants(compiler):
            if not force and not needs_compile(cache, model, variant, version):
                out[variant] = dict(read_pack(cache, model.id)["variants"][variant], rebuilt=False)
                continue
            rec = _compile_one(cache, model, parse_variant(variant), exe, version, log)
            pack = read_pack(cache, model.id)
            pack["variants"][variant] = rec
            write_pack(cache, model.id, pack)
            out[variant] = rec
    return out


def _compile_one(cache: Path, model: ModelSpec, vid, exe: str, version: str, log: Callable) -> dict:
    variant, base = str(vid), vid.base
    rec = {"variant": variant, "format": vid.format, "precision": vid.precision, "method": "compile",
           "compiler": {"name": COMPILER_EXECUTABLES[vid.compiler], "version": version, "path": exe},
           "source_variant": base, "rebuilt": True, "built_from": built_from(model, base)}
    src = variant_status(cache, model, base)
    if src.status != "built":
        return dict(rec, status="failed", reason=f"source variant {base} is {src.status}: {src.reason}")
    rec["source_sha256"] = src.sha256
    rec["input"] = src.info.get("input")
    dst = variant_path(cache, model.id, variant)
    log_dst = dst.with_suffix(".log")
    folder = packs_dir(cache, model.id)
    work = Path(tempfile.mkdtemp(prefix=f".{dst.stem}.", suffix=".compiling", dir=folder))
    try:
        # The compiler names its output after its input: <stem>_edgetpu.tflite and <stem>_edgetpu.log in -o.
        args = [exe, "-s", "-o", str(work), str(src.path)]
        t0 = time.perf_counter()
        done = _run(args, COMPILE_TIMEOUT_S)
        rec["compile_s"] = round(time.perf_counter() - t0, 2)
        rec["compiler"]["args"] = ["-s", "-o", "<temporary folder>", f"{base}.tflite"]
        made = work / f"{Path(src.path).stem}_{vid.compiler}.tflite"
        report = done.stdout + "\n" + done.stderr
        if done.returncode != 0 or not made.is_file():
            last = next((ln for ln in reversed(report.strip().splitlines()) if ln.strip()), "no output")
            why = f"exit status {done.returncode}" if done.returncode != 0 else f"it wrote no {made.name}"
            return dict(rec, status="failed", reason=f"{exe}: {why}: {shown(last.strip()[:300])}")
        op_log = made.with_suffix(".log")
        try:
            rec["mapping"] = parse_report(report)
        except BuildError:
            if not op_log.is_file():
                raise
            rec["mapping"] = parse_report(op_log.read_text(errors="replace"))
        if rec["mapping"]["ops_edgetpu"] == 0:
            log(f"{model.id} {variant}: the compiler mapped no operation to the Edge TPU; it would run on the CPU")
        rec["sha256"] = sha256_file(made)
        rec["size_bytes"] = made.stat().st_size
        with naming(dst):
            if op_log.is_file():
                publish(op_log, log_dst)
            publish(made, dst)
        m = rec["mapping"]
        log(f"{model.id} {variant}: {m['ops_edgetpu']} of {m['ops']} operations on the Edge TPU "
            f"(edgetpu_compiler {version}, {rec['compile_s']:g} s)")
        return dict(rec, status="built", reason=None)
    except BenchError as exc:
        return dict(rec, status="failed", reason=exc.message)
    finally:
        shutil.rmtree(work, ignore_errors=True)
