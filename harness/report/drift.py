"""Within-ISA drift: two runs of the same packs on the same data on two machines (`bench compare A B --drift`).

The same int8 pack on two x86-64 CPUs can decide differently: onnxruntime's MLAS picks its int8 GEMM from the
CPU's features (harness/kernel_path.py), and the U8S8 kernels of AVX2 / AVX-512 without VNNI can saturate where
VNNI's do not. This is cross-ISA precision loss's question asked within one ISA, so it is answered by the same
pure functions (harness/metrics/cross_isa.py: largest output difference, decision flips per group with the exact
McNemar test, embedding cosine, FMR/FNMR per group at run A's fp32 threshold), with run A as the reference side.

Refused (UsageError, exit 2, one line) when the two runs did not measure the same thing: other data (dataset id,
manifest sha256, number evaluated, --limit subset), another face pipeline or --oracle setting (other chips), a
pack that differs for an entry both ran, or no entry ran ok in both.

Two runs under different capture conditions (`bench run --condition`, docs/camera.md) on the same machine are
compared the same way: then the drift is the condition's cost per group, paired image by image (the block says
`conditions_differ` and names both).

The host pipeline (decode, reference detector, alignment) runs on each machine, so chips can differ in the last
bit; the onnx-fp32 rows are therefore the floor against which int8 drift is read.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

from harness.errors import UsageError
from harness.results.store import Run

# Run settings that change what each model is fed (the chips), besides the data records.
_INPUT_SETTINGS = ("pipeline", "oracle", "upstream_detector")


def _data_key(doc: Mapping[str, Any]) -> set[tuple]:
    return {(d["id"], d.get("manifest_sha256"), d.get("n_evaluated"), (d.get("subset") or {}).get("sha256"))
            for d in (doc.get("data") or {}).get("datasets", [])}


def refusal(a: Run, b: Run, *, entries: Collection[str] | None = None) -> str | None:
    """Why runs a and b cannot be compared for drift (one line), or None when they can. `entries`: only these
    entries' packs must match and one of them must have run ok in both (bench trend pairs one entry at a time)."""
    if a.run_id == b.run_id:
        return f"--drift compares two different runs; {a.run_id} was given twice"
    if _data_key(a.doc) != _data_key(b.doc):
        ids = lambda doc: ", ".join(sorted(f"{k[0]} (n={k[2]})" for k in _data_key(doc))) or "none"  # noqa: E731
        return (f"--drift: {a.run_id} and {b.run_id} ran on different data (datasets, manifest sha256 or --limit "
                f"subset): {ids(a.doc)} vs {ids(b.doc)}")
    sa, sb = a.doc.get("settings") or {}, b.doc.get("settings") or {}
    for key in _INPUT_SETTINGS:
        if sa.get(key) != sb.get(key):
            return (f"--drift: {a.run_id} and {b.run_id} fed the models other chips: setting {key} "
                    f"{sa.get(key)!r} vs {sb.get(key)!r}")
    ok_a = {e["entry"]: e for e in a.entries if e.get("status") == "ok"}
    ok_b = {e["entry"]: e for e in b.entries if e.get("status") == "ok"}
    common = sorted(set(ok_a) & set(ok_b) & (set(ok_a) if entries is None else set(entries)))
    if not common:
        return f"--drift: no entry ran ok in both {a.run_id} and {b.run_id}"
    for entry in common:
        if ok_a[entry].get("model_sha256") != ok_b[entry].get("model_sha256"):
            return (f"--drift: {entry} is a different pack in {a.run_id} and {b.run_id} (model sha256 "
                    f"{str(ok_a[entry].get('model_sha256'))[:12]} vs {str(ok_b[entry].get('model_sha256'))[:12]})")
    return None


def drift(a: Run, b: Run) -> dict[str, Any]:
    """Run b against run a (the reference side): the cross_isa_runs block, with both kernel paths and whether
    the comparison is within one ISA. Raises UsageError when the runs cannot be compared (refusal)."""
    from harness.kernel_path import of_run
    from harness.metrics.cross_isa import cross_isa_runs
    from harness.scoring import load_samples

    why = refusal(a, b)
    if why:
        raise UsageError(why)
    block = cross_isa_runs(b.doc, a.doc, lambda entry: load_samples(b.path, entry),
                           lambda entry: load_samples(a.path, entry))
    ka, kb = of_run(a.doc), of_run(b.doc)
    block |= {"run": b.run_id, "within_isa": block["reference_arch"] == block["device_arch"],
              "reference_kernel_path": ka["int8"], "device_kernel_path": kb["int8"],
              "kernel_paths_differ": ka["int8"] != kb["int8"]}
    ca, cb = ((x.doc.get("settings") or {}).get("condition") for x in (a, b))
    block |= {"reference_condition": ca, "device_condition": cb, "conditions_differ": ca != cb}
    return block
