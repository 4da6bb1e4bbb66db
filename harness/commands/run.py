"""`bench run`: benchmark every built variant a target supports, speed and per-group accuracy together."""

from __future__ import annotations

import math
import os
from pathlib import Path

from harness.errors import EXIT_FAILURE, UsageError
from harness.files import ensure_writable_dir
from harness.names import safe_id
from harness.paths import cache_root, data_root, results_root
from harness.scenarios.orchestrate import DEFAULT_DATASETS, RunConfig
from harness.specs import STEADY_KEYS

# Settings that may also come from the environment (flag > env > default); recorded with their source.
_ENV = {"target": ("BENCH_TARGET", str), "seed": ("BENCH_SEED", int), "min_duration_s": ("BENCH_MIN_DURATION_S", float),
        "min_count": ("BENCH_MIN_COUNT", int), "threads": ("BENCH_THREADS", int)}


def register(sub) -> None:
    p = sub.add_parser("run", help="run the benchmark on a target (speed + per-group accuracy)",
                       description="Runs every built model variant the target supports over the datasets, each in a "
                                   "child process, and writes a run directory (path printed last).")
    p.add_argument("--target", help="target profile id (bench targets); env BENCH_TARGET; default cpu")
    p.add_argument("--model", action="append", default=[], metavar="ID", help="only this model (repeatable)")
    p.add_argument("--variant", action="append", default=[], metavar="V",
                   help="only this variant, e.g. onnx-int8 (repeatable)")
    p.add_argument("--dataset", action="append", default=[], metavar="NAME",
                   help=f"dataset name or path (repeatable; default {' + '.join(DEFAULT_DATASETS)})")
    p.add_argument("--seed", type=int, help="seed for every random choice (env BENCH_SEED; default 0)")
    p.add_argument("--oracle", action="store_true",
                   help="align faces from ground-truth eye points where the dataset has them")
    p.add_argument("--fmr", type=float, default=1e-3, help="target false match rate for the threshold (default 1e-3)")
    p.add_argument("--fpir", type=float, default=1e-2,
                   help="target FPIR for the fp32-tuned watchlist threshold (1:N search; default 1e-2)")
    p.add_argument("--cutoff", type=float, action="append", default=[], metavar="S",
                   help="also report FMR/FNMR at this fixed similarity (repeatable; default 0.8 0.95 0.99)")
    p.add_argument("--min-duration", dest="min_duration_s", type=float,
                   help="single-stream minimum seconds (env BENCH_MIN_DURATION_S; default 1.0)")
    p.add_argument("--min-count", dest="min_count", type=int,
                   help="single-stream minimum queries (env BENCH_MIN_COUNT; default 100)")
    p.add_argument("--threads", type=int, metavar="N",
                   help="intra-op threads for every backend, overriding the target profile (env BENCH_THREADS; "
                        "0 = the runtime's default); on a shared host, 1 gives comparable single-stream figures")
    p.add_argument("--search-sizes", dest="search_sizes", metavar="N[,N...]",
                   help="gallery sizes the watchlist search is timed at on the board, besides the watchlist's own "
                        "(seeded synthetic templates drawn on the board pad it; each in [10, 10,000,000]; default "
                        "1000,10000; e.g. 1000,10000,100000,1000000; a size that does not fit in the board's "
                        "available memory is refused; docs/metrics.md \"Identification\")")
    p.add_argument("--idle-s", dest="idle_s", type=float, metavar="S",
                   help="before each entry's timed window the probes sample S seconds with nothing running: idle "
                        "power beside the active power (default: the profile's [steady_state], else 0)")
    p.add_argument("--soak-s", dest="soak_s", type=float, metavar="S",
                   help="thermal soak: run the model untimed for S seconds before each timed window (default: the "
                        "profile's, else 0)")
    p.add_argument("--cooldown-s", dest="cooldown_s", type=float, metavar="S",
                   help="cool-down between entries: wait S seconds before each entry after the first; with "
                        "--cooldown-within the longest wait (default: the profile's, else 0)")
    p.add_argument("--cooldown-within", dest="cooldown_within_c", type=float, metavar="C",
                   help="cool down until the SoC temperature is within C degrees of the idle temperature (read "
                        "before the run's first entry), at most --cooldown-s (default: the profile's, else off)")
    p.add_argument("--bootstrap", dest="n_boot", type=int, default=1000, help="bootstrap resamples (default 1000)")
    p.add_argument("--timeout", type=float, default=900.0, help="seconds before an entry's worker is killed")
    p.add_argument("--pipeline", choices=("harness", "upstream"), default="harness",
                   help="chips for the dlib-chip (gender) models: the harness's own (default) or the model authors' "
                        "dlib pipeline (needs .[upstream]); either way a run with a gender model and the upstream "
                        "extra reports pipeline sensitivity")
    p.add_argument("--upstream-detector", choices=("hog", "cnn"), default="hog",
                   help="the upstream pipeline's dlib face detector (default hog, the authors'; cnn is ~70x slower "
                        "on CPU)")
    p.add_argument("--emulate", metavar="arm64[:CPU][@SUITE]",
                   help="run the target's entries on an emulated aarch64 board (qemu-user + a Debian arm64 rootfs, "
                        "built or restored under the cache; root and qemu-user-static, binfmt-support, mmdebstrap "
                        "needed): real ARM outputs, timings INVALID, cross-ISA table against the newest cpu run; "
                        "CPU cortex-a72 (Pi 4, default) or cortex-a76 (Pi 5); SUITE bookworm (Python 3.11, default) "
                        "or bullseye (Python 3.9, onnxruntime entries only)")
    p.add_argument("--limit", type=int, metavar="N",
                   help="at most N images per dataset (whole subjects, balanced across groups); tens for --emulate")
    p.add_argument("--condition", metavar="NAME:LEVEL[,LEVEL...]",
                   help="capture condition applied to every image before detection, same pixels on every board "
                        "(docs/camera.md): exposure:EV, motion:PX, defocus:PX, distance:IOD_PX, jpeg:Q, h264:KBPS, "
                        "h265:KBPS, wb:KELVIN; several levels run one run per level (a sweep)")
    p.add_argument("--source", metavar="FILE|URL",
                   help="a video file or a stream URL (PyAV, the camera extra): decode, detect, align and embed "
                        "every frame on the target, each stage timed, frames per second end to end (docs/camera.md); "
                        "blazeface + mobilefacenet in --variant (default onnx-fp32); --limit N: at most N frames; "
                        "with --emulate arm64 on the emulated board (the file travels with the job; PyAV's aarch64 "
                        "wheel is fetched once into the cache)")
    p.add_argument("--reference", metavar="RUN", help="run holding the fp32 reference (default: this run, on cpu)")
    p.add_argument("--reference-kernel-path", metavar="PATH", dest="reference_kernel_path",
                   help="take the fp32 reference only from a cpu run with this int8 kernel path (e.g. "
                        "x86-avx512-vnni; harness/kernel_path.py); default: prefer this host's, else the newest")
    p.add_argument("--resume", metavar="RUN", help="resume an interrupted run from its per-sample outputs")
    where = p.add_argument_group("remote boards (docs/remote.md)").add_mutually_exclusive_group()
    where.add_argument("--device", metavar="USER@HOST[:PORT]|NAME",
                       help="run the jobs on this board over SSH (keys only), or a board named in the inventory")
    where.add_argument("--place", metavar="NAME", help="acquire this labgrid place, run on its board, release it")
    where.add_argument("--pool", metavar="KEY=VAL[,KEY=VAL]",
                       help="acquire any free labgrid place whose tags match (e.g. target=rpi), run, release it")
    p.add_argument("--inventory", metavar="FILE",
                   help="boards file (env BENCH_INVENTORY; default ~/.config/edge-fair-bench/boards.toml)")
    p.add_argument("--coordinator", metavar="HOST[:PORT]",
                   help="labgrid coordinator (env LG_COORDINATOR; default 127.0.0.1:20408)")
    p.add_argument("--allow-stale-board", action="store_true",
                   help="run on a provisioned board whose harness version or wheel differs from this host's "
                        "(default: refused, exit 3; bench device provision brings it up to date)")
    p.add_argument("--pool-wait", type=float, default=3600.0, metavar="S",
                   help="seconds to wait for a free place before exit 3 (default 3600)")
    p.add_argument("--boards", type=int, metavar="N",
                   help="--pool: spread the run's entries over up to N matching boards of one model at once (a "
                        "fan-out: each board takes the next entry when free; faces acquired once); fewer free after "
                        "a bounded wait: runs on those, saying so")
    p.add_argument("--each", action="store_true",
                   help="--pool: the same plan on every matching board, one run per board (comparing boards), the "
                        "faces acquired once; prints each run; exit code the worst of the runs")
    p.add_argument("--out-of-service-after", type=int, default=3, metavar="N",
                   help="--pool/--place: a place with N consecutive infrastructure failures is marked out of "
                        "service in the pool (default 3; bench pool return PLACE brings it back)")
    p.add_argument("--no-build", action="store_true", help="do not build missing model packs first")
    p.add_argument("--strict", action="store_true", help="exit 1 if any entry failed")
    p.set_defaults(func=cmd_run)


def _search_sizes(text: str | None, sources: dict) -> dict:
    """--search-sizes "1000,10000,1e6"-style text as {"search_sizes": increasing ints} (RunConfig checks the bounds);
    {} without the flag (RunConfig's default). Anything that is not a list of whole numbers: UsageError, exit 2."""
    if text is None:
        return {}
    sizes = []
    for part in text.split(","):
        try:
            value = float(part.strip().replace("_", ""))
        except ValueError:
            value = math.nan
        if not (math.isfinite(value) and value == int(value)):
            raise UsageError(f"invalid run setting search_sizes (--search-sizes) = {text!r}: {part.strip()!r} is not a "
                             "whole number of templates")
        sizes.append(int(value))
    sources["search_sizes"] = "flag"
    return {"search_sizes": tuple(sorted(set(sizes)))}


def _steady_settings(args, profile, sources: dict) -> dict:
    """--idle-s/--soak-s/--cooldown-s/--cooldown-within: the flag, else the target profile's [steady_state], else
    off; each recorded with its source (flag | profile | default). RunConfig checks the bounds. Under --emulate the
    profile's are not taken (like the short loops there): an emulated board's idle power and temperatures are the
    host's, and its timings INVALID anyway; a flag still wins."""
    out = {}
    for name in STEADY_KEYS:
        value = getattr(args, name, None)
        if value is not None:
            sources[name] = "flag"
        elif name in profile.steady_state and not args.emulate:
            value, sources[name] = profile.steady_state[name], "profile"
        else:
            value, sources[name] = (None if name == "cooldown_within_c" else 0.0), "default"
        out[name] = value
    return out


def _setting(args, name: str, default, sources: dict):
    value = getattr(args, name, None)
    if value is not None:
        sources[name] = "flag"
        return value
    if name in _ENV and os.environ.get(_ENV[name][0]):
        env, cast = _ENV[name]
        try:
            value = cast(os.environ[env])
        except ValueError:
            raise UsageError(f"environment variable {env}={os.environ[env]!r} is not a valid {cast.__name__}") from None
        sources[name] = "env"
        return value
    sources[name] = "default"
    return default


def cmd_run(args) -> int:
    from rich.console import Console

    from harness.scenarios.orchestrate import run_benchmark
    from harness import specs
    from harness.data.images import check_limits

    err = Console(stderr=True)
    cache, data, results = cache_root(args.cache_dir), data_root(args.data_root), results_root(args.results_dir)
    sources = {"cache_dir": cache.source, "data_root": data.source, "results_dir": results.source}
    target = _setting(args, "target", "cpu", sources)
    profile = specs.get_target(target)  # unknown target -> usage error before any work
    check_limits()  # $BENCH_MAX_IMAGE_PIXELS / $BENCH_MAX_IMAGE_BYTES (harness/data/images.py)
    ensure_writable_dir(results.path, "results folder")  # read-only, a file, uncreatable: one line before any work
    if args.source:
        return _video(args, target, cache, results, sources, err)
    if args.resume:
        safe_id("run id", args.resume)  # --resume names a folder under the results root
    store = _write_store(args, results.path)  # a bad --store URI is one line before any work
    if args.limit is not None and args.limit < 1:
        raise UsageError(f"--limit must be at least 1, got {args.limit}")
    models = [specs.get_model(m) for m in args.model] if args.model else specs.all_models()
    # Under emulation every call is 100-500x slower and the timings are INVALID anyway: short loops by default
    # (a flag still wins), so a run of tens of faces takes minutes, not hours.
    short = ({"warmup": 1, "max_duration_s": 5.0, "offline_batch": 4, "offline_min_duration_s": 0.1}
             if args.emulate else {})
    cfg = RunConfig(**short, target=target, models=tuple(m.id for m in models), variants=tuple(args.variant),
                    datasets=tuple(args.dataset) or DEFAULT_DATASETS, seed=_setting(args, "seed", 0, sources),
                    oracle=args.oracle, target_fmr=args.fmr, target_fpir=args.fpir,
                    cutoffs=tuple(args.cutoff) or (0.8, 0.95, 0.99),
                    min_duration_s=_setting(args, "min_duration_s", 0.1 if args.emulate else 1.0, sources),
                    min_count=_setting(args, "min_count", 3 if args.emulate else 100, sources), timeout_s=args.timeout,
                    threads=_setting(args, "threads", None, sources),
                    reference_run=args.reference, reference_kernel_path=args.reference_kernel_path,
                    n_boot=args.n_boot, pipeline=args.pipeline,
                    upstream_detector=args.upstream_detector, emulate=args.emulate,
                    limit=args.limit, **_steady_settings(args, profile, sources),
                    **_search_sizes(args.search_sizes, sources), sources=sources)
    conditions = _conditions(args, cfg)
    remote = remote_selection(args)  # --device/--place/--pool/--boards/--each checked before any build or decode
    where = None
    if not args.resume:  # where the jobs run, with --emulate: one Where (harness/launchers/session.py) or exit 2
        from dataclasses import replace as with_remote

        from harness.launchers.session import Where

        where = Where.from_settings(with_remote(cfg, remote=remote))
    if not args.no_build:
        from harness.models.build import build, models_needing_build

        todo = models_needing_build(cache.path, models)
        if todo:
            err.print(f"[bold]building model packs[/] for {', '.join(m.id for m in todo)} (bench models build)")
            build(cache.path, data.path, todo, log=lambda m: err.print(m, markup=False, highlight=False))
        _compile_for_plan(profile, args.variant, models, cache.path, err)

    worst = [0]

    def run(progress, log):  # one run per --condition level (a sweep), in order
        if args.each:  # one run per matching board, the faces acquired once per level (harness/scenarios/each.py)
            from harness.scenarios.each import run_each

            out = []
            for c in conditions:
                dirs, code = run_each(c, where, cache=cache.path, data_root=data.path, results_root=results.path,
                                      log=log, progress=progress, store=store)
                out += dirs
                worst[0] = max(worst[0], code)
            return out
        return [run_benchmark(c, cache=cache.path, data_root=data.path, results_root=results.path,
                              resume=args.resume, remote=remote, log=log, progress=progress, store=store)
                for c in conditions]

    if err.is_terminal:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      console=err) as bars:
            def progress(description: str, total: int):
                task = bars.add_task(description, total=total)
                return lambda n=1: bars.advance(task, n)

            run_dirs = run(progress, lambda m: bars.console.print(m, markup=False, highlight=False))
    else:  # a file, a pipe, CI: live bars would print nothing, so plain lines at a bounded rate
        from harness.report.progress import LineProgress

        def plain(m: str) -> None:
            err.print(m, markup=False, highlight=False, soft_wrap=True)
            err.file.flush()

        run_dirs = run(LineProgress(plain), plain)
    if store is not None:
        store.close()
    failed = 0
    for run_dir in run_dirs:
        failed += print_summary(run_dir)
        print(run_dir)
    return max(worst[0], EXIT_FAILURE if (args.strict and failed) else 0)


def _write_store(args, results: Path):
    """The store a run is written through: `--store URI` > `$BENCH_STORE` (as every reader, harness/results/uri.py).
    A postgresql:// store gets the run entry by entry (harness/results/pgwrite.py), its reference run found there;
    None for the default, the results folder (a file:// URI naming another folder is refused: --results-dir says
    where runs are written)."""
    from harness.results.files import FileStore
    from harness.results.uri import open_store, store_uri

    uri = store_uri(args.store, str(results))
    store = open_store(uri, results_dir=str(results))
    if isinstance(store, FileStore):
        if store.root.resolve() != results.resolve():
            raise UsageError(f"bench run --store {uri}: a file:// store is a results folder; write there with "
                             f"--results-dir {store.root}")
        return None
    return store


def _video(args, target: str, cache, results, sources: dict, err) -> int:
    """`bench run --source`: the video source (harness/scenarios/video.py); prints its summary, then its folder."""
    from harness.scenarios.video import run_video, summary_lines

    clash = [f for f, on in (("--resume", args.resume), ("--condition", args.condition),
                             ("--device", args.device), ("--place", args.place), ("--pool", args.pool),
                             ("--dataset", args.dataset)) if on]
    if clash:
        raise UsageError(f"--source with {', '.join(clash)}: the video source runs on this machine's local worker "
                         "or the emulated board (--emulate)")
    if len(args.variant) > 1:
        raise UsageError("--source takes one --variant")
    if args.limit is not None and args.limit < 1:
        raise UsageError(f"--limit must be at least 1, got {args.limit}")
    min_count = _setting(args, "min_count", 100, sources)
    min_duration_s = _setting(args, "min_duration_s", 1.0, sources)
    if min_count < 1 or min_duration_s < 0:
        raise UsageError("--min-count must be at least 1 and --min-duration at least 0")
    run_dir = run_video(args.source, target_id=target, models=tuple(args.model),
                        variant=args.variant[0] if args.variant else None, cache=cache.path,
                        results_root=results.path, threads=_setting(args, "threads", None, sources),
                        min_duration_s=min_duration_s, min_count=min_count, max_frames=args.limit,
                        timeout_s=args.timeout, emulate=args.emulate,
                        log=lambda m: err.print(m, markup=False, highlight=False, soft_wrap=True))
    import json

    doc = json.loads((run_dir / "video.json").read_text(encoding="utf-8"))
    for line in summary_lines(doc):
        print(line)
    print(run_dir)
    return 0


def _conditions(args, cfg) -> list:
    """One RunConfig per --condition level (a sweep runs them in order); just `cfg` without --condition."""
    if not args.condition:
        return [cfg]
    if args.resume:
        raise UsageError("--condition with --resume: a resumed run keeps the condition it recorded")
    from dataclasses import replace

    from harness.camera.conditions import parse

    return [replace(cfg, condition=c.label) for c in parse(args.condition, seed=cfg.seed)]


def remote_selection(args) -> dict | None:
    """--device / --place / --pool and their options as the run records them (settings.remote), or None."""
    if (args.boards is not None or args.each) and not args.pool:
        raise UsageError(f"{'--each' if args.each else '--boards'} takes the boards from a labgrid pool: add "
                         "--pool KEY=VAL")
    if args.boards is not None and args.each:
        raise UsageError("--boards with --each: a fan-out spreads one run over boards of one model, --each makes one "
                         "run per board; choose one")
    if args.boards is not None and args.boards < 1:
        raise UsageError(f"--boards {args.boards}: must be at least 1")
    if args.each and args.resume:
        raise UsageError("--each with --resume: resume each board's run by its id (bench run --resume RUN)")
    if not (args.device or args.place or args.pool):
        return None
    if args.out_of_service_after < 1:
        raise UsageError(f"--out-of-service-after {args.out_of_service_after}: must be at least 1")
    return {"device": args.device, "place": args.place, "pool": args.pool, "boards": args.boards,
            "inventory": str(args.inventory) if args.inventory else None, "coordinator": args.coordinator,
            "pool_wait_s": args.pool_wait, "allow_stale_board": bool(args.allow_stale_board),
            "out_of_service_after": args.out_of_service_after}


def _reference_variant(model: str) -> str:
    from harness.scoring import _reference_variant as of

    return of(model)


def print_summary(run_dir) -> int:
    """The compact per-entry table, then a per-group table for each model's reference entry; returns #failed."""
    from rich.console import Console

    from harness.report.console import (fidelity_flags, group_table, kernel_path_lines, search_tables,
                                        sensitivity_section, summary_table)
    from harness.results.store import load_run

    run = load_run(run_dir)
    # the summary lays itself out for the terminal's own width (columns that do not fit continue below, never cut)
    Console().print(summary_table(run))
    out = Console(width=max(Console().width, 140))
    for line in [*kernel_path_lines(run), *fidelity_flags(run)]:
        out.print(line)
    for e in run.entries:
        if e.get("status") == "ok" and e["variant"] == _reference_variant(e["model"]) \
                and e.get("metrics", {}).get("rates"):
            out.print(group_table(run, e["entry"]))
    for table in sensitivity_section(run):
        out.print(table)
    from harness.commands.score import summary_lines

    watchlist = summary_lines(run.doc)  # the 1:N search, overall per threshold (per group: run.json, docs/metrics.md)
    if watchlist:
        out.print("watchlist search (1:N), own gallery, all groups:", markup=False)
        for line in watchlist:
            out.print("  " + line, markup=False, highlight=False)
    for table in search_tables(run):  # the same search on the device: latency per gallery size (harness/search_job.py)
        out.print(table)
    return sum(e.get("status") == "failed" for e in run.entries)


def _compile_for_plan(profile, variants, models, cache, err) -> None:
    """The profile's compiled variants (coral: tflite-int8@edgetpu) are compiled here when their compiler is installed
    (harness/models/compile.py); without it the plan says which are missing and how to make them (exit 3)."""
    import shutil

    from harness import specs
    from harness.models.compile import COMPILER_EXECUTABLES, compile_model, needs_compile

    wanted = [v for v in profile.variants if specs.parse_variant(v).compiler and (not variants or v in variants)]
    for compiler in sorted({specs.parse_variant(v).compiler for v in wanted}):
        if shutil.which(COMPILER_EXECUTABLES[compiler]) is None:
            continue
        todo = [m for m in models if any(needs_compile(cache, m, v) for v in wanted)]
        for m in todo:
            err.print(f"[bold]compiling[/] {m.id} for {compiler} (bench models build --compile {compiler})")
            compile_model(cache, m, compiler, log=lambda msg: err.print(msg, markup=False, highlight=False))
