"""`bench run`: plan the entries for a target, acquire faces once, run each entry in a child process, score, write.

The parent process never loads a benchmarked model itself; it loads only the host-side reference detector that
makes the shared face chips (onnxruntime CPU, fp32), so every variant and every target sees identical inputs.
"""

from __future__ import annotations

import math
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from harness import specs
from harness.errors import EXIT_INTERRUPTED, BenchError, UnavailableError, UsageError
from harness.models.fetch import sha256_file
from harness.files import remove_owned
from harness.jobs import MAX_GALLERY, MAX_WAIT_S, MAX_WITHIN_C, LatencySettings, SteadyState
from harness.launchers.session import Where, open_session
from harness.models.pack import variant_status
from harness.runners import backend_availability
from harness.scenarios.host_faces import HostFaces, dlib_chip, tasks_for_dataset
from harness.search_job import DEFAULT_SIZES as SEARCH_SIZES

DEFAULT_DATASETS = ("london-frl", "fairface-sample")


class Interrupted(BenchError):
    """Ctrl-C during a run: the run directory stays resumable."""

    exit_code = EXIT_INTERRUPTED


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _count(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


# (setting, check, rule as said to the user). Comparisons are written so that NaN fails them.
def _kernel_paths() -> tuple[str, ...]:
    from harness.kernel_path import PATHS

    return tuple(PATHS)


MAX_SEARCH_SIZES = 16  # gallery sizes one run may time the watchlist search at (--search-sizes)
_RULES: tuple[tuple[str, Callable[[object], bool], str], ...] = (
    ("seed", lambda v: _count(v) and v >= 0, "must be an integer >= 0"),
    ("target_fmr", lambda v: _number(v) and 0 < v < 1, "must be a false match rate strictly between 0 and 1"),
    ("target_fpir", lambda v: _number(v) and 0 < v < 1, "must be a false positive identification rate in (0, 1)"),
    ("cutoffs", lambda v: all(_number(c) and -1 <= c <= 1 for c in v),
     "each cut-off is a cosine similarity in [-1, 1]"),
    ("warmup", lambda v: _count(v) and v >= 0, "must be an integer >= 0"),
    ("min_duration_s", lambda v: _number(v) and v >= 0, "must be >= 0 seconds (0: min_count alone decides)"),
    ("min_count", lambda v: _count(v) and v >= 1, "must be an integer >= 1"),
    ("max_duration_s", lambda v: _number(v) and v > 0, "must be > 0 seconds"),
    ("offline_batch", lambda v: _count(v) and v >= 1, "must be an integer >= 1"),
    ("offline_min_duration_s", lambda v: _number(v) and v >= 0, "must be >= 0 seconds (0: the count alone decides)"),
    ("timeout_s", lambda v: _number(v) and v > 0, "must be > 0 seconds"),
    ("threads", lambda v: v is None or (_count(v) and v >= 0), "must be an integer >= 0 (0 = the runtime's default)"),
    ("reference_kernel_path", lambda v: v is None or v in _kernel_paths(),
     "must be an int8 kernel path id of harness/kernel_path.py: " + ", ".join(_kernel_paths())),
    ("n_boot", lambda v: _count(v) and v >= 1, "must be an integer >= 1"),
    ("datasets", lambda v: len(v) >= 1, "name at least one dataset"),
    ("idle_s", lambda v: _number(v) and 0 <= v <= MAX_WAIT_S, f"must be in [0, {MAX_WAIT_S:g}] seconds"),
    ("soak_s", lambda v: _number(v) and 0 <= v <= MAX_WAIT_S, f"must be in [0, {MAX_WAIT_S:g}] seconds"),
    ("cooldown_s", lambda v: _number(v) and 0 <= v <= MAX_WAIT_S, f"must be in [0, {MAX_WAIT_S:g}] seconds"),
    ("cooldown_within_c", lambda v: v is None or (_number(v) and 0 < v <= MAX_WITHIN_C),
     f"must be in (0, {MAX_WITHIN_C:g}] degrees C"),
    ("search_sizes", lambda v: 1 <= len(v) <= MAX_SEARCH_SIZES and all(_count(s) and 10 <= s <= MAX_GALLERY for s in v)
     and list(v) == sorted(set(v)),
     f"must be 1 to {MAX_SEARCH_SIZES} increasing gallery sizes in [10, {MAX_GALLERY:,}] (the board's search returns "
     "the top 10)"),
)
_FLAGS = {"seed": "--seed", "target_fmr": "--fmr", "target_fpir": "--fpir", "cutoffs": "--cutoff",
          "min_duration_s": "--min-duration", "min_count": "--min-count", "timeout_s": "--timeout",
          "threads": "--threads", "n_boot": "--bootstrap", "idle_s": "--idle-s", "soak_s": "--soak-s",
          "cooldown_s": "--cooldown-s", "cooldown_within_c": "--cooldown-within", "search_sizes": "--search-sizes"}


@dataclass
class RunConfig:
    target: str = "cpu"
    models: tuple[str, ...] = ()
    variants: tuple[str, ...] = ()
    datasets: tuple[str, ...] = DEFAULT_DATASETS
    seed: int = 0
    oracle: bool = False
    target_fmr: float = 1e-3
    target_fpir: float = 1e-2  # the watchlist threshold is tuned on fp32 for this FPIR (harness/watchlist.py)
    cutoffs: tuple[float, ...] = (0.8, 0.95, 0.99)
    warmup: int = 10
    min_duration_s: float = 1.0
    min_count: int = 100
    max_duration_s: float = 60.0
    offline_batch: int = 32
    offline_min_duration_s: float = 1.0
    timeout_s: float = 900.0
    threads: int | None = None  # overrides every backend's profile threads (None: the profile's)
    reference_run: str | None = None
    reference_kernel_path: str | None = None  # take the fp32 reference only from a run with this int8 kernel path
    n_boot: int = 1000
    pipeline: str = "harness"        # which chips the dlib-chip models are fed: harness | upstream (harness/upstream.py)
    upstream_detector: str = "hog"   # the upstream pipeline's dlib detector: hog | cnn
    remote: dict | None = None  # where jobs run: {"device"|"place"|"pool": ...} (harness/launchers/remote.py)
    emulate: str | None = None  # "arm64[:cpu]": the target's entries on the emulated board (launchers/emulated.py)
    limit: int | None = None    # at most this many images per dataset, whole subjects, balanced across groups
    condition: str | None = None  # one capture condition level, "exposure:-2" (harness/camera/conditions.py)
    # Steady state on the board (harness/device/steady.py; defaults from the profile's [steady_state]): idle readings
    # and a thermal soak before each timed window, a cool-down between entries (fixed, or to the idle temperature).
    idle_s: float = 0.0
    soak_s: float = 0.0
    cooldown_s: float = 0.0
    cooldown_within_c: float | None = None
    # gallery sizes the watchlist search is timed at on the board besides the watchlist's own (harness/search_job.py)
    search_sizes: tuple[int, ...] = SEARCH_SIZES
    sources: dict[str, str] = field(default_factory=dict)  # setting -> flag | env | profile | default

    def __post_init__(self) -> None:
        """Refuse impossible settings here, before anything is decoded or launched (UsageError, exit 2)."""
        for name, ok, rule in _RULES:
            value = getattr(self, name)
            if not ok(value):
                flag = _FLAGS.get(name)
                raise UsageError(f"invalid run setting {name}{f' ({flag})' if flag else ''} = {value!r}: {rule}")
        if self.condition is not None and len(self.capture_conditions()) != 1:
            raise UsageError(f"invalid run setting condition (--condition) = {self.condition!r}: one level per run "
                             "(bench run runs a sweep as one run per level)")
        if self.cooldown_within_c is not None and self.cooldown_s <= 0:
            raise UsageError(f"invalid run setting cooldown_within_c (--cooldown-within) = {self.cooldown_within_c!r}: "
                             "needs --cooldown-s, the longest wait (or the profile's cooldown_s)")
        waits = self.idle_s + self.soak_s + self.cooldown_s
        if waits >= self.timeout_s:
            raise UsageError(f"invalid run setting timeout_s (--timeout) = {self.timeout_s!r}: the steady-state waits "
                             f"(--idle-s + --soak-s + --cooldown-s = {waits:g} s) leave an entry no time before its "
                             "worker is killed; raise --timeout")
        if self.max_duration_s < self.min_duration_s:
            raise UsageError(f"invalid run setting min_duration_s (--min-duration) = {self.min_duration_s!r}: must be "
                             f"<= max_duration_s = {self.max_duration_s!r}")

    def capture_conditions(self) -> list:
        """The parsed --condition (harness.camera.conditions.Condition list; empty without one)."""
        if self.condition is None:
            return []
        from harness.camera.conditions import parse

        return parse(self.condition, seed=self.seed)

    def to_dict(self) -> dict:
        d = {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.__dict__.items() if k != "sources"}
        d["sources"] = dict(self.sources)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "RunConfig":
        """The settings a run recorded, so --resume continues with exactly them, whatever the command line says."""
        known = {f for f in cls.__dataclass_fields__}
        kw = {k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items() if k in known}
        kw["sources"] = dict(d.get("sources") or {})
        return cls(**kw)


def entry_id(model: str, variant: str) -> str:
    """model--variant, the variant in its file-name form (tflite-int8@edgetpu -> tflite-int8_edgetpu): entry ids name
    files and folders of the run."""
    return f"{model}--{specs.variant_slug(variant)}"


def plan_entries(target: specs.TargetProfile, cfg: RunConfig, cache: Path,
                 availability: Callable[[specs.Backend], tuple[bool, str | None]] | None = None) -> list[dict]:
    """Every model x variant the target supports, with its pre-run status (ok to run, or why not).

    `availability` answers for the machine that runs the jobs (a remote board answers in its health report; default:
    this machine's backend_availability)."""
    availability = availability or backend_availability
    plan = []
    for m, backend, v in _plan_cells(target, cfg):
        fmt, precision = specs.split_variant(v)
        e = {"entry": entry_id(m.id, v), "model": m.id, "task": m.task, "variant": v, "format": fmt,
             "precision": precision, "status": "pending", "reason": None, "backend_spec": backend}
        ok, why = availability(backend)
        vs = variant_status(cache, m, v)
        if not ok:
            e.update(status="unavailable", reason=why)
        elif vs.status != "built":
            e.update(status="skipped" if vs.status == "missing" else "failed",
                     reason=f"variant {vs.status}: {vs.reason}")
        else:
            e.update(path=vs.path, model_sha256=vs.sha256, layout=(vs.info.get("input") or {}).get("layout"),
                     fidelity=vs.fidelity)
        plan.append(e)
    missing = [e for e in plan if specs.parse_variant(e["variant"]).compiler and e["status"] == "skipped"]
    if missing and len(missing) == len(plan):
        # Nothing to run but compiled variants nobody compiled: say so (exit 3), never an empty run.
        e = missing[0]
        raise UnavailableError(f"{e['model']} {e['variant']}: {e['reason'].removeprefix('variant missing: ')}")
    return plan


def _plan_cells(target: specs.TargetProfile, cfg: RunConfig):
    """(model, backend, variant) for each entry of the run's plan, whatever the machine that runs it can do."""
    models = [specs.get_model(m) for m in cfg.models] if cfg.models else specs.all_models()
    for v in cfg.variants:
        specs.parse_variant(v)  # exit 2 listing the valid ids
    for m in models:
        for backend in target.backends:
            for v in backend.variants:
                if not cfg.variants or v in cfg.variants:
                    yield m, backend, v


def planned_models(target: specs.TargetProfile, cfg: RunConfig) -> list[str]:
    """The models of the run's plan (plan_entries' models: a board's health report changes only their status)."""
    return sorted({m.id for m, _, _ in _plan_cells(target, cfg)})


def mark_not_applicable(plan: list[dict], datasets: list) -> None:
    """Entries whose task no dataset of the run supports are skipped with the reason, before anything is launched
    (a verification entry over FairFace alone has no identities to pair; that is not a failure of the model)."""
    from harness.tasks.registry import get_task

    for e in plan:
        if e["status"] == "pending" and not any(e["task"] in tasks_for_dataset(ds, datasets) for ds in datasets):
            e.update(status="skipped", reason=f"not applicable: {e['task']} needs {get_task(e['task']).needs}; "
                                              f"none in {', '.join(ds.id for ds in datasets)}")


def _no_progress(description: str, total: int) -> Callable[..., None]:
    return lambda n=1: None


def run_benchmark(cfg: RunConfig, *, cache: Path, data_root: Path, results_root: Path, resume: str | None = None,
                  remote: dict | None = None, log: Callable[[str], None] = print,
                  progress: Callable[[str, int], Callable[..., None]] = _no_progress, store=None,
                  shared: dict | None = None) -> Path:
    """Run the benchmark; returns the run directory.

    progress(description, total) starts a progress task and returns its advance(n=1) callable (the CLI draws rich
    bars on a terminal and plain rate-bounded lines otherwise, harness/report/progress.py; library callers get
    none): the acquisition stage, the model variants, and each entry's samples as its worker writes them.
    `remote` runs the jobs on a board (harness/launchers/remote.py), or with `boards` > 1 on several at once (a
    fan-out, harness/scenarios/fanout.py); on --resume without it, the board selection the run recorded is used again
    (a resume may name other boards). `shared`: a dict kept across runs of the same plan and data (`--each`): the
    host's acquisition (decoded, detected, aligned faces) is made by the first and reused by the others.
    `store`: the ResultStore the run is written through and its reference found in (`bench run --store URI`,
    harness/results/pgwrite.py); None: the run directories and SQLite index under `results_root`.
    """
    from harness.results.store import RunStore

    writer, doc = None, None
    if store is not None:  # the reference run is then found through the same store
        results_root = store
    else:
        store = RunStore(results_root)
    if resume:
        writer = store.open_existing(resume)
        doc = writer.read_run_json()
        if doc.get("status") == "complete":
            raise UsageError(f"run {resume} is already complete; nothing to resume")
        cfg = RunConfig.from_dict(doc["settings"])
    if remote:
        cfg.remote = remote
    target = specs.get_target(cfg.target)
    where = Where.from_settings(cfg)
    # The host's datasets and faces are made while the boards are acquired, connected and health-checked
    # (harness/scenarios/host_faces.py); the models, and so the calibration images to leave out, need no board.
    def check(data) -> None:
        if cfg.reference_kernel_path and cfg.reference_run is None and not target.reference:
            # Asked for a reference with this kernel path: refuse before any image is decoded if none has it.
            choose_reference(results_root, data.records, lambda m: None, pipeline=cfg.pipeline,
                             required_kernel_path=cfg.reference_kernel_path)

    host = HostFaces(cfg, planned_models(target, cfg), cache=cache, data_root=data_root, log=log, progress=progress,
                     shared=shared, check=check)
    if not where.at_once:  # a run on this machine has its answer at once: its faces start after the plan
        host.start()
    args = (cfg, target, store, writer, doc, cache, results_root, resume, log, progress)
    try:  # --boards N: the entries spread over up to N boards of one model (harness/scenarios/fanout.py)
        with open_session(where, target, variants=cfg.variants, timeout_s=cfg.timeout_s, cache=cache,
                          log=log) as sessions:
            return _run(*args, sessions=sessions, host=host, fanout=where.fanout, shared=shared)
    finally:
        host.stop()


def _run(cfg, target, store, writer, doc, cache, results_root, resume, log, progress, *, sessions, host,
         fanout=False, shared=None) -> Path:
    """One run on `sessions` (harness/launchers/session.py: one, or several boards with `fanout`), its datasets and
    faces from `host` (a HostFaces, started before the sessions were opened)."""
    from harness.environment import fingerprint
    from harness.models.pack import read_pack
    from harness.pipeline import save_acquired
    from harness.results.store import utc_now
    from harness.scoring import score_run
    from harness.targets import reference_target_id

    session = sessions[0]
    # this machine's target_status; the emulated board's readiness; a board's own health check (device/health.py)
    status = session.health()
    if not status["available"]:
        raise UnavailableError(f"target '{cfg.target}' is unavailable on this machine: {status['reason']}")
    plan = plan_entries(target, cfg, cache, session.availability())

    data = host.data()  # starts the host's thread where the boards did not (a run on this machine)
    datasets, data_records = data.datasets, data.records
    mark_not_applicable(plan, [ds for ds, _ in datasets])
    if any(r["identification"] for r in data_records):  # watchlist searches on the board: refuse sizes it cannot hold
        from harness.search_fit import refuse_unfit_sizes

        for board in sessions:
            refuse_unfit_sizes(cfg.search_sizes, plan, board.memory())

    entries_doc: dict[str, dict] = {}
    if resume:
        entries_doc = {e["entry"]: e for e in doc.get("entries", [])}
        log(f"resuming {resume}: {sum(e['status'] == 'ok' for e in entries_doc.values())} entries already complete")
    else:
        from harness.camera.quality import ofiq_status  # OFIQ's models, or why its scores are absent

        doc = {"target": {"id": target.id, "profile": {"name": target.name, "telemetry": list(target.telemetry),
                                                        "backends": status["backends"],
                                                        "source": specs.target_source(target)}},
               "settings": cfg.to_dict(), "environment": fingerprint(),
               "data": {"datasets": data_records, "oracle": cfg.oracle,
                        "condition": cond[0].to_dict() if (cond := cfg.capture_conditions()) else None,
                        "ofiq": ofiq_status()},
               "reference": {"target": reference_target_id(), "variant": _reference_variants(plan), "run": cfg.reference_run},
               "models": {m: {k: read_pack(cache, m).get(k) for k in ("sources", "calibration")}
                          for m in sorted({e["model"] for e in plan})}}
        writer = store.create(doc)
        doc = writer.read_run_json()
    run_dir = writer.path
    lock = _lock_run(run_dir)  # held until this process exits: one writer per run directory
    try:  # Ctrl-C or SIGTERM from the run's first line on, while decoding, detecting, aligning: it stays resumable
        log(f"run {writer.run_id} -> {run_dir}")
        if session.remote:  # each board's console log into <run>/boards/<board>/ (docs/remote.md, "Console")
            from harness.launchers.console import note_consoles

            note_consoles(doc, sessions, run_dir=run_dir)

        # Shared front of the pipeline, once per run (recomputed on resume: deterministic and cheap), made by the
        # host's thread since before the boards were connected.
        faces = host.faces()
        samples, acquired_all, chipper = faces.samples, faces.acquired, faces.chipper
        doc["pipeline_sensitivity"] = faces.sensitivity
        if faces.reused:  # --each: the first run's acquisition, the same faces
            log(f"faces: the acquisition of run {faces.reused} ({len(samples)} samples; same data and settings)")
        elif shared is not None:
            shared.update(key=faces.key, samples=samples, acquired=acquired_all, run_id=writer.run_id)
        work = run_dir / "work"
        work.mkdir(exist_ok=True)
        npz = work / "acquired.npz"
        save_acquired(acquired_all, npz)
        if chipper is not None:
            pipeline_reference(plan, cache, run_dir, doc, acquired_all, samples, log)
    except KeyboardInterrupt:
        raise _interrupted(writer) from None

    try:
        _run_entries(plan, entries_doc, doc, writer, samples, npz, target, cfg, log, progress, sessions,
                     fanout=fanout)
    except BoardLost:
        writer.close()
        raise
    except KeyboardInterrupt:
        raise _interrupted(writer) from None
    if session.remote:
        from harness.launchers.console import note_consoles

        note_consoles(doc, sessions)
    incomplete = _incomplete(doc, writer)
    if incomplete is not None:
        writer.close()
        raise incomplete

    resolve_reference(cfg, target.reference, doc, results_root, data_records, log)
    from harness.search_job import DeviceSearch

    if fanout:  # a fan-out: the searches on a board still in it
        from harness.scenarios.fanout import live_session

        session = live_session(sessions, doc)
    searcher_on_device = DeviceSearch(
        session.launcher,
        run_dir / "work" / "search", latency=_latency(cfg), seed=cfg.seed, telemetry=tuple(target.telemetry),
        threads=cfg.threads or 0, sizes=cfg.search_sizes, n_boot=cfg.n_boot, log=log)
    doc = score_run(run_dir, doc, cfg, results_root=results_root, device_search=searcher_on_device)
    from harness.launchers.emulated import invalidate_timings

    invalidate_timings(doc)  # an emulated board, here (--emulate) or behind SSH (launcher.emulation): INVALID
    if cfg.emulate:
        doc["cross_isa"] = _cross_isa(doc, run_dir, results_root, log)
    search_failed = _search_incomplete(doc, writer)
    if search_failed is not None:  # as an entry's infrastructure error: scored and kept, but partial, exit 3
        writer.write_run_json(doc)
        writer.close()
        raise search_failed
    if session.remote:  # the consoles' last lines: nothing runs on the boards from here until their release
        from harness.launchers.console import note_consoles

        note_consoles(doc, sessions, stop=True)
    doc["status"] = "complete"
    doc["finished_utc"] = utc_now()
    writer.write_run_json(doc)
    writer.close()
    remove_owned(work, run_dir)
    lock.close()
    return run_dir


def resolve_reference(cfg: RunConfig, is_reference_target: bool, doc: dict, results_root, data_records: list[dict],
                      log: Callable[[str], None]) -> None:
    """Set cfg.reference_run and doc["reference"] (run, kernel_path, kernel_path_choice) for a finished run: the
    run given with --reference, or on a non-reference target the one choose_reference picks knowing this host's
    int8 kernel path; a run on the reference target is its own reference."""
    from harness.kernel_path import of_environment, of_run
    from harness.results.uri import as_store

    if cfg.reference_run is not None:
        ref = as_store(results_root).load(cfg.reference_run)
        doc["reference"] |= {"kernel_path": of_run(ref.doc)["int8"], "kernel_path_choice": "given with --reference"}
    elif not is_reference_target:
        choice = choose_reference(results_root, data_records, log, pipeline=cfg.pipeline,
                                  kernel_path=of_environment(doc.get("environment"))["int8"],
                                  required_kernel_path=cfg.reference_kernel_path, condition=cfg.condition)
        cfg.reference_run = choice["run"]
        doc["reference"] |= {"run": cfg.reference_run, "kernel_path": choice["kernel_path"],
                             "kernel_path_choice": choice["choice"]}


def _reference_variants(plan: list[dict]) -> str:
    """The reference variant named by the models' manifests (`reference_variant`); every shipped model says
    onnx-fp32. Models that differ are listed model=variant."""
    refs = {m: specs.get_model(m).reference_variant for m in sorted({e["model"] for e in plan})}
    kinds = set(refs.values())
    if len(kinds) <= 1:
        return next(iter(kinds), "onnx-fp32")
    return ",".join(f"{m}={v}" for m, v in refs.items())


def _interrupted(writer) -> Interrupted:
    """Close the run's writer; the error that tells the user how to resume the run."""
    writer.close()
    return Interrupted(f"interrupted; {writer.run_id} keeps every sample written so far: resume with "
                       f"bench run --resume {writer.run_id}")


def pipeline_reference(plan: list[dict], cache: Path, run_dir: Path, doc: dict, acquired: list,
                       samples: list[tuple[set, dict]], log: Callable[[str], None]) -> None:
    """Each dlib-chip model's reference variant (host CPU onnxruntime) on the harness and the upstream chips of
    every sample with a label; the per-sample records go to pipeline/<model>.jsonl, scored by harness.scoring."""
    import json

    from harness.models.build import CPU_ONNX
    from harness.files import atomic_write_bytes
    from harness.runners import make_runner
    from harness.upstream import reference_records

    section = doc["pipeline_sensitivity"]
    for model in sorted({e["model"] for e in plan if dlib_chip(specs.get_model(e["model"]))}):
        m = specs.get_model(model)
        vs = variant_status(cache, m, m.reference_variant)
        if vs.status != "built":
            section["models"][model] = {"status": "unavailable", "variant": m.reference_variant,
                                        "reason": f"reference variant {vs.status}: {vs.reason}"}
            continue
        keep = [i for i, (tasks, _) in enumerate(samples) if m.task in tasks]
        runner = make_runner(CPU_ONNX, Path(vs.path), layout=(vs.info.get("input") or {}).get("layout"))
        records = reference_records(runner, m.input, [acquired[i] for i in keep],
                                    [with_gender_label(samples[i][1]) for i in keep], harness_key=m.input.resize,
                                    label_column=LABEL)
        runner.close()
        rel = Path("pipeline") / f"{model}.jsonl"
        (run_dir / rel.parent).mkdir(exist_ok=True)
        atomic_write_bytes(run_dir / rel, "".join(json.dumps(r) + "\n" for r in records).encode())
        section["models"][model] = {"status": "ok", "variant": m.reference_variant, "model_sha256": vs.sha256,
                                    "runtime": "onnxruntime/CPUExecutionProvider", "samples": str(rel)}
        log(f"{model}: reference {m.reference_variant} on harness and upstream chips ({len(records)} samples)")


def _cross_isa(doc: dict, run_dir: Path, results_root: Path, log: Callable[[str], None]) -> dict:
    """The same packs on the same inputs, this run's ISA against the reference run's (harness/metrics/cross_isa.py)."""
    from harness.metrics.cross_isa import cross_isa_runs
    from harness.results.uri import as_store
    from harness.scoring import load_samples

    if not doc["reference"].get("run"):
        return {"reference_run": None, "reason": "no complete cpu run over the same inputs to compare with"}
    ref = as_store(results_root).load_id(doc["reference"]["run"])
    out = cross_isa_runs(doc, ref.doc, lambda entry: load_samples(run_dir, entry),
                         lambda entry: load_samples(ref.path, entry))
    log(f"cross-ISA: {len(out['entries'])} entries compared with run {ref.run_id} "
        f"({out['reference_arch']} vs {out['device_arch']})")
    return out


def find_reference_run(results_root, data_records: list[dict], log: Callable[[str], None], *,
                       pipeline: str = "harness", kernel_path: str | None = None,
                       required_kernel_path: str | None = None, condition: str | None = None) -> str | None:
    """The run id of choose_reference's choice, or None (see there)."""
    return choose_reference(results_root, data_records, log, pipeline=pipeline, kernel_path=kernel_path,
                            required_kernel_path=required_kernel_path, condition=condition)["run"]


def choose_reference(results_root, data_records: list[dict], log: Callable[[str], None], *,
                     pipeline: str = "harness", kernel_path: str | None = None,
                     required_kernel_path: str | None = None, condition: str | None = None) -> dict:
    """The complete run on the reference target (`reference = true`) over the same data and face pipeline
    (harness or upstream chips: a reference fed other chips would count the pipeline's difference as precision
    loss) that a run on another target takes its fp32 reference from, chosen knowing its int8 kernel path.

    Precision loss is measured against fp32 on the reference target; without such a run, each entry is compared
    with this target's own fp32 entry, and run.json says so (reference.run is null).

    Among the candidates (newest first) the one whose int8 kernel path (harness/kernel_path.py) is `kernel_path`
    (this host's) is preferred, else the newest, saying that its path differs; `required_kernel_path`
    (`--reference-kernel-path`) takes only a run with that path and refuses (UsageError) when there is none.
    Returns {"run", "kernel_path", "choice"}: the run id (or None), its kernel path id, and one line saying why.

    `results_root`: a ResultStore, a store URI or a results folder (harness.results.uri.as_store).
    """
    from harness.kernel_path import PATHS, of_run
    from harness.results.uri import as_store
    from harness.targets import reference_target_ids

    references = set(reference_target_ids())
    if required_kernel_path is not None and required_kernel_path not in PATHS:
        raise UsageError(f"--reference-kernel-path: unknown kernel path '{required_kernel_path}'; valid: "
                         f"{', '.join(PATHS)}")
    wanted = {(d["id"], d["manifest_sha256"], d["n_evaluated"], (d.get("subset") or {}).get("sha256"))
              for d in data_records}
    store = as_store(results_root)
    # newest first in the store's own order (seq), never by the runs' dates (harness/results/index.py, "Order")
    rows = sorted((r for t in references for r in store.query(target=t, status="complete")),
                  key=lambda r: (r.seq or 0, r.run_id), reverse=True)
    candidates: list[tuple[str, str, str]] = []  # (run id, target, int8 kernel path), newest first
    for row in rows:
        doc = store.load_id(row.run_id).doc
        if (doc.get("settings") or {}).get("pipeline", "harness") != pipeline:
            continue
        if (doc.get("settings") or {}).get("condition") != condition:
            continue  # a capture condition changes the pixels: fp32 under the same condition is the reference
        have = {(d["id"], d.get("manifest_sha256"), d.get("n_evaluated"), (d.get("subset") or {}).get("sha256"))
                for d in doc["data"]["datasets"]}
        if wanted <= have:
            candidates.append((row.run_id, doc["target"]["id"], of_run(doc)["int8"]))
            if row.future and len(candidates) == 1:
                log(f"reference candidate {row.run_id} is dated {row.created_utc}, ahead of the clock that recorded "
                    f"it ({row.recorded_utc}); ordered by the store's sequence, not its date")
    if not candidates:
        if required_kernel_path is not None:
            raise UsageError(f"--reference-kernel-path {required_kernel_path}: no complete "
                             f"{'/'.join(sorted(references))} run over the same data in the results store")
        log(f"no complete {'/'.join(sorted(references))} run over the same data in the results store: comparing with this target's own fp32")
        return {"run": None, "kernel_path": None, "choice": "no reference run over the same data: own fp32"}
    paths = sorted({c[2] for c in candidates})
    if required_kernel_path is not None:
        match = [c for c in candidates if c[2] == required_kernel_path]
        if not match:
            raise UsageError(f"--reference-kernel-path {required_kernel_path}: no reference run over the same data "
                             f"has it (their kernel paths: {', '.join(paths)})")
        (run_id, target_id, path), why = match[0], f"the newest with --reference-kernel-path {required_kernel_path}"
    else:
        match = [c for c in candidates if kernel_path is not None and c[2] == kernel_path]
        if match:
            (run_id, target_id, path) = match[0]
            why = ("the newest with this host's int8 kernel path" if len(paths) > 1 or match[0] != candidates[0]
                   else "the newest; its int8 kernel path is this host's")
        else:
            (run_id, target_id, path) = candidates[0]
            why = (f"the newest; no candidate has this host's int8 kernel path ({kernel_path or 'unknown'}), "
                   f"so its int8 entries may differ from what this host's kernels give")
    if len(paths) > 1:
        why += f" (candidates' kernel paths: {', '.join(paths)})"
    log(f"reference: fp32 entries of run {run_id} ({target_id}; int8 kernel path {path}: {why})")
    return {"run": run_id, "kernel_path": path, "choice": why}


def _input_key(model: "specs.ModelSpec", cfg: RunConfig) -> str:
    """The name of the input array a model is fed: its manifest's resize, or the upstream chips for a dlib-chip
    model under --pipeline upstream."""
    from harness.upstream import UPSTREAM_CHIP

    return UPSTREAM_CHIP if cfg.pipeline == "upstream" and dlib_chip(model) else model.input.resize


LABEL = "label"  # the attribute the gender task scores: the card-mapped gender ("female"/"male"), not the raw value


def with_gender_label(sample: dict) -> dict:
    """A sample whose attrs carry the card-mapped gender label under LABEL (the dataset's own value stays as is)."""
    return sample | {"attrs": sample["attrs"] | {LABEL: sample.get("gender_label")}}


def _lock_run(run_dir: Path):
    """An exclusive advisory lock on the run directory, so a --resume cannot run beside the run it resumes."""
    import fcntl

    fh = open(run_dir / ".lock", "a+")
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fh.close()
        raise UsageError(f"run {run_dir.name} is being written by another bench process; wait for it or stop it "
                         "first") from None
    return fh


class BoardLost(UnavailableError):
    """The board stopped answering mid-run and no other board can take over: the run stays resumable (exit 3)."""


def _after_infrastructure_error(session, eid, result, entry, entries_doc, doc, plan, writer, log):
    """An entry failed for infrastructure reasons on a board: the launcher for one retry (LAVA: infrastructure errors
    may be retried, test errors never) -- the same board power-cycled when it stopped answering and has a power
    switch (run.json `power_cycles`), else another matching board --, None to record the failure and go on, or
    BoardLost when the board is gone and nothing can replace it (every sample brought back is kept)."""
    board = session.board_name
    log(f"{eid}: infrastructure error on board {board}: {result.reason}")
    answering = session.reachable()
    if not answering:  # it stopped answering: its power switch first, then the same board once more
        n = len(session.power_cycles)
        new = session.power_cycle(result.reason, eid)
        doc.setdefault("power_cycles", []).extend(session.power_cycles[n:])
        if new is not None:
            writer.write_run_json(doc)
            return new
    new = session.failover()
    if new is not None:
        log(f"{eid}: retrying once on board {session.board_name}")
        return new
    if answering:
        return None
    entry.update(status="failed", reason=result.reason, failure="infrastructure", device=board)
    keep_meter(entry, result, session.launcher)
    entries_doc[eid] = entry
    doc["entries"] = [entries_doc[p["entry"]] for p in plan if p["entry"] in entries_doc]
    doc["launcher"] = session.describe()
    writer.write_run_json(doc)
    raise BoardLost(f"board {board} ({session.board_address}) was lost during {eid}: {result.reason}; run "
                    f"{writer.run_id} keeps every sample brought back: resume with bench run --resume "
                    f"{writer.run_id} (add --device/--pool to continue on another board)")


def _checked_outputs(result, job, writer, eid, task, task_samples, out_dir, launcher, threshold):
    """Collect what the device sent back through the trust boundary (harness/launchers/trust.py): the chunks (each
    sample sent, exactly once), and for an ok result every sample back and its timings. (result, timings or None);
    anything that fails the checks turns the result into an infrastructure error naming the device and the field
    (the records of chunks collected before it are kept; the rest of the attempt is discarded, retried on resume)."""
    from harness.errors import InfrastructureError
    from harness.launchers import trust
    from harness.scenarios.entry import collect_chunks

    timings = None
    try:
        collect_chunks(writer, eid, task, task_samples, out_dir, score_threshold=threshold, label_column=LABEL,
                       where=launcher.where, sent={sid for sid, _ in job.samples})
        if result.ok:
            trust.check_returned(job, writer.done_sample_ids(eid), where=launcher.where)
            timings = trust.read_timings(out_dir, result, where=launcher.where)
    except InfrastructureError as exc:
        trust.discard(out_dir)
        meter = (result.telemetry or {}).get("meter") if host_meter_of(launcher) is not None else None
        result = trust.infrastructure_result(job, out_dir, exc.message, result.exit_code, result.wall_s)
        if meter is not None:  # what the host's own meter saw stays: energy null, the job failed
            from harness.launchers.host_meter import failed_block

            result = result.replace(telemetry={"meter": failed_block(meter, result.reason)})
    return result, timings


def host_meter_of(launcher):
    """The HostMeterSpec of a remote board whose meter the host reads (launchers/host_meter.py), or None."""
    return getattr(getattr(launcher, "board", None), "meter", None)


def failed_meter(result, launcher) -> dict | None:
    """The block of the host's meter (HostMeter.failed_entry) in a failed job's `result`, energy null with the
    reason, or None. Only a host meter's: a board's telemetry of a failed job is not recorded."""
    block = (result.telemetry or {}).get("meter") if host_meter_of(launcher) is not None else None
    return block if isinstance(block, dict) and block.get("energy_mj_per_inference", 0) is None else None


def keep_meter(entry: dict, result, launcher) -> None:
    """A failed entry keeps what the host's meter saw (failed_meter): run.json `entries[].meter`."""
    block = failed_meter(result, launcher)
    if block is not None:
        entry["meter"] = block


class InfrastructureIncomplete(UnavailableError):
    """Entries failed for infrastructure reasons: the run is not complete (exit 3) and --resume retries them."""


def _incomplete(doc: dict, writer) -> InfrastructureIncomplete | None:
    """The error that keeps a run partial when any entry failed for infrastructure reasons (issue 17: such a
    failure says nothing about the model, so the run is never marked complete with it), or None."""
    failed = [e for e in doc.get("entries", []) if e.get("status") == "failed" and e.get("failure") == "infrastructure"]
    if not failed:
        return None
    first = failed[0]
    return InfrastructureIncomplete(
        f"{len(failed)} entr{'y' if len(failed) == 1 else 'ies'} failed for infrastructure reasons ({first['entry']}: "
        f"{first.get('reason')}); run {writer.run_id} stays partial and keeps every sample brought back: resume with "
        f"bench run --resume {writer.run_id} (add --device/--pool to continue on another board)")


def _search_incomplete(doc: dict, writer) -> BenchError | None:
    """The error that keeps a run partial when a watchlist search on the board failed or was refused (its record
    `entries[].speed.search.<dataset>` has status "failed", harness/search_job.py), or None. Like an entry's
    infrastructure error (_incomplete) it says nothing about the model: the run keeps its scores, stays partial
    (exit 3), and --resume searches again. When every failure is a gallery size the board refused for its memory
    (kind "gallery-too-large"), the error is a usage error (exit 2): the run's --search-sizes ask too much of it."""
    failed = [(e["entry"], ds, rec) for e in doc.get("entries", [])
              for ds, rec in sorted(((e.get("speed") or {}).get("search") or {}).items())
              if isinstance(rec, dict) and rec.get("status") == "failed"]
    if not failed:
        return None
    entry, dataset, rec = failed[0]
    from harness.search_job import TOO_LARGE

    if all(r.get("kind") == TOO_LARGE for _, _, r in failed):  # a setting this board cannot take: exit 2
        return UsageError(f"--search-sizes: {rec.get('reason')} ({entry} on {dataset}); run {writer.run_id} keeps its "
                          f"scores but stays partial: run again with smaller --search-sizes")
    return InfrastructureIncomplete(
        f"{len(failed)} watchlist search{'' if len(failed) == 1 else 'es'} on the board failed ({entry} on {dataset}: "
        f"{rec.get('kind')}: {rec.get('reason')}); run {writer.run_id} stays partial: resume with "
        f"bench run --resume {writer.run_id} to search again")


def _latency(cfg: RunConfig) -> LatencySettings:
    """The run's single-stream settings, for inference and for the device's search (harness/search_job.py) alike."""
    return LatencySettings(warmup=cfg.warmup, min_duration_s=cfg.min_duration_s, min_count=cfg.min_count,
                           max_duration_s=cfg.max_duration_s)


def _steady(cfg: RunConfig, doc: dict, *, first: bool) -> SteadyState:
    """The job's steady-state settings: the run's, less the cool-down before the first job (nothing ran before it),
    with the run's idle temperature (_note_idle_temperature) for a cool-down to within cooldown_within_c of it."""
    idle = (doc.get("steady_state") or {}).get("idle_temp_c")
    return SteadyState(idle_s=cfg.idle_s, soak_s=cfg.soak_s, cooldown_s=0.0 if first else cfg.cooldown_s,
                       cooldown_within_c=cfg.cooldown_within_c if not first else None,
                       idle_temp_c=idle if cfg.cooldown_within_c is not None and not first else None)


def _note_idle_temperature(doc: dict, eid: str, result) -> None:
    """The run's idle temperature: what the board read at the start of the first job that reported one, before any
    model of the run was loaded there (run.json `steady_state`, kept on resume). Read from the board, so cleaned."""
    from harness.device.steady import clean_record

    if (doc.get("steady_state") or {}).get("idle_temp_c") is not None:
        return
    temp = ((clean_record(result.steady_state) or {}).get("cooldown") or {}).get("temp_before_c")
    if temp is not None:
        doc["steady_state"] = {"idle_temp_c": temp, "from_entry": eid}


def _run_entries(plan, entries_doc, doc, writer, samples, npz, target, cfg, log, progress, sessions,
                 fanout=False) -> None:
    """Each planned entry as a typed Job through the launcher; JobResults collected into the run folder; run.json
    rewritten after every entry (resume reads it).

    The inputs travel once per resize kind (work/inputs/<resize>.npy, uint8, rows = the run's samples); each job
    folder (work/jobs/<entry>/in) links the model file and its input array, and the worker writes only under
    work/jobs/<entry>/out. Chunks a killed worker left there are collected before the entry runs again.
    `sessions`: where the entries run (harness/launchers/session.py); with `fanout` (`--boards N`) they go to the
    boards through a work queue (harness/scenarios/fanout.py) instead of one after the other on the first.
    """
    from harness.jobs import FileRef, OfflineSettings

    session = sessions[0]
    doc["launcher"] = session.describe()
    work = Path(npz).parent
    inputs: dict[str, FileRef] = {}
    with np.load(npz) as arrays:
        for resize in sorted({_input_key(specs.get_model(e["model"]), cfg) for e in plan if e["status"] == "pending"}):
            path = work / "inputs" / f"{resize}.npy"
            path.parent.mkdir(exist_ok=True)
            np.save(path, arrays[resize])
            inputs[resize] = FileRef(path.name, sha256_file(path))
    ctx = _Entries(plan=plan, entries_doc=entries_doc, doc=doc, writer=writer, samples=samples, target=target,
                   cfg=cfg, log=log, progress=progress, work=work, inputs=inputs, latency=_latency(cfg),
                   offline=OfflineSettings(batch=cfg.offline_batch, min_duration_s=cfg.offline_min_duration_s,
                                           min_count=10))
    advance = progress("model variants", len(plan))
    todo = []
    for e in plan:
        prior = entries_doc.get(e["entry"])
        if prior and prior["status"] in ("ok", "unavailable", "skipped"):
            advance()
        elif e["status"] != "pending":
            ctx.record(_entry_record(e), None)
            advance()
        else:
            todo.append(e)
    if fanout:
        from harness.scenarios.fanout import fan_out

        fan_out(ctx, todo, sessions, advance)
        return
    launched = False  # the first job this process launches needs no cool-down: nothing ran before it
    for e in todo:
        def on_infra(result, entry, eid=e["entry"]):
            new = _after_infrastructure_error(session, eid, result, entry, ctx.entries_doc, doc, plan, writer, log)
            return new
        # an infrastructure error is retried on a board (LAVA), recorded as it is on this machine
        launched = ctx.run(e, session.launcher, session, first=not launched,
                           on_infra=on_infra if session.remote else None) or launched
        advance()


def _entry_record(e: dict) -> dict:
    """An entry's run.json record before it runs: its plan, less what only the host needs (the backend spec, the
    pack path and layout)."""
    entry = {k: v for k, v in e.items() if k not in ("backend_spec", "path", "layout")}
    backend = e["backend_spec"]
    entry["backend"] = {"runtime": backend.runtime, "requested": backend.requested}
    return entry


class Requeue(Exception):
    """Raised by a fan-out's infrastructure-error handler: this attempt ends unrecorded; the entry goes back on the
    work queue for another board (harness/scenarios/fanout.py)."""


@dataclass
class _Entries:
    """What every entry of one run shares (the plan, run.json, the writer, the samples, the inputs sent), and how one
    entry runs (`run`) and is recorded (`record`). `lock` guards run.json and the run folder while several boards
    run entries at once (a fan-out): everything but the board's own work (the launch, a power cycle) holds it."""

    plan: list
    entries_doc: dict
    doc: dict
    writer: object
    samples: list
    target: object
    cfg: RunConfig
    log: Callable[[str], None]
    progress: Callable
    work: Path
    inputs: dict
    latency: LatencySettings
    offline: object
    lock: object = None

    def record(self, entry: dict, session) -> None:
        """An entry's record into run.json, rewritten at once (resume reads it)."""
        doc = self.doc
        self.entries_doc[entry["entry"]] = entry
        doc["entries"] = [self.entries_doc[p["entry"]] for p in self.plan if p["entry"] in self.entries_doc]
        self.writer.write_run_json(doc)

    def run(self, e: dict, launcher, session, *, first: bool, on_infra=None, retries: int = 1) -> bool:
        """Run one pending entry on `launcher` (of `session`, harness/launchers/session.py) and record it;
        True once a job was launched. After an infrastructure error `on_infra(result, entry)` gives the launcher
        for a retry (at most `retries`), None to record the failure, or raises Requeue (nothing recorded)."""
        from harness.errors import InfrastructureError
        from harness.jobs import STATUS_INFRA_ERROR, BackendRequest, FileRef
        from harness.scenarios.entry import ChunkWatcher, build_job, collect_chunks, finish, link, write_unfed
        from harness.upstream import UPSTREAM_CHIP

        cfg, doc, writer, log = self.cfg, self.doc, self.writer, self.log
        eid = e["entry"]
        entry = _entry_record(e)
        backend = e["backend_spec"]
        m = specs.get_model(e["model"])
        task, threshold = e["task"], float(m.output.get("score_threshold", 0.5))
        task_samples = [s for tasks, s in self.samples if task in tasks]
        if task == "gender":  # the host scores the card-mapped label, not the dataset's own value
            task_samples = [with_gender_label(s) for s in task_samples]
        resize = _input_key(m, cfg)
        if resize == UPSTREAM_CHIP:  # --pipeline upstream: the authors' chips replace the harness's
            task_samples = [s | {"acquired": s["upstream"]["acquired"], "fta_reason": s["upstream"]["fta_reason"]}
                            for s in task_samples]
        job_dir = self.work / "jobs" / eid
        in_dir, out_dir = job_dir / "in", job_dir / "out"
        in_dir.mkdir(parents=True, exist_ok=True)
        # a killed attempt's outputs first (checked like any output: a bad one is dropped, its samples run again)
        try:
            collect_chunks(writer, eid, task, task_samples, out_dir, score_threshold=threshold,
                           label_column=LABEL, where=launcher.where)
        except InfrastructureError as exc:
            log(f"{eid}: an earlier attempt's outputs are discarded: {exc.message}")
        shutil.rmtree(out_dir, ignore_errors=True)
        done = writer.done_sample_ids(eid)
        write_unfed(writer, eid, task, task_samples, done)
        model_path = Path(e["path"])
        link(model_path, in_dir / model_path.name)
        link(self.work / "inputs" / self.inputs[resize].name, in_dir / self.inputs[resize].name)
        t0 = time.perf_counter()
        request = BackendRequest(runtime=backend.runtime, provider=backend.provider, delegate=backend.delegate,
                                 delegate_library=backend.delegate_library,
                                 threads=backend.threads if cfg.threads is None else cfg.threads,
                                 provider_options=dict(backend.provider_options))
        launched = False
        for attempt in range(retries + 1):  # a retry only after an infrastructure error
            try:
                job = build_job(e, task_samples, writer.done_sample_ids(eid),
                                model_file=FileRef(model_path.name, e["model_sha256"]),
                                inputs_file=self.inputs[resize], mean=m.input.mean, scale=m.input.scale,
                                backend=request, telemetry=tuple(self.target.telemetry), latency=self.latency,
                                offline=self.offline, steady=_steady(cfg, doc, first=first and not launched))
            except ValueError as exc:  # nothing this entry could be fed
                job, result = None, None
                entry.update(status="failed", reason=str(exc))
                break
            log(f"{eid}: running on {backend.runtime}/{backend.requested} via {launcher.name}"
                + (f" {session.board_name}" if self.lock is not None else "")
                + f" ({len(job.samples)} of {len(task_samples)} samples to run)")
            with _unlocked(self.lock), ChunkWatcher(out_dir, self.progress(f"{eid} samples", len(job.samples))):
                result = launcher.launch(job, in_dir, out_dir)
            launched = True
            _note_idle_temperature(doc, eid, result)
            result, timings = _checked_outputs(result, job, writer, eid, task, task_samples, out_dir, launcher,
                                               threshold)
            writer.sync()
            session.note(result.status == STATUS_INFRA_ERROR, result.reason or "")
            if session.remote and result.status == STATUS_INFRA_ERROR:
                note_infrastructure_failure(doc, session.board_name, eid, result.reason,
                                            console_tail=session.console_tail(session.board_name))
            if on_infra is None or result.status != STATUS_INFRA_ERROR or attempt == retries:
                break
            new = on_infra(result, entry)  # may raise Requeue or BoardLost
            if new is None:
                break
            launcher = new
            shutil.rmtree(out_dir, ignore_errors=True)  # its chunks are collected; the retry starts clean
        if session.remote:
            entry["device"] = session.board_name
            if self.lock is not None:  # a fan-out: the board that ran it (run.json boards[] has its fingerprint)
                entry["board"] = session.board_name
            else:
                doc["launcher"] = session.describe()
            doc["settings"]["remote"] = cfg.remote
        if job is not None:
            if result.ok:
                entry["status"] = "ok"
                entry["speed"] = finish(writer, eid, task, result, timings, min_duration_s=cfg.min_duration_s,
                                        min_count=cfg.min_count, steady=job.steady_state)
                entry["backend"] = dict(result.backend)
                doc.setdefault("device_environment", result.environment)
                if self.lock is not None:
                    from harness.scenarios.fanout import note_fingerprint

                    note_fingerprint(doc, session.board_name, result.environment)
            else:
                entry.update(status="failed", reason=result.reason,
                             failure="infrastructure" if result.status == STATUS_INFRA_ERROR else "test")
                if result.backend:
                    entry["backend"] = dict(result.backend)
                keep_meter(entry, result, launcher)
        entry["wall_s"] = round(time.perf_counter() - t0, 2)
        log(f"{eid}: {entry['status']}" + (f" ({entry['reason']})" if entry.get("reason") else ""))
        self.record(entry, session)
        return launched


def note_infrastructure_failure(doc: dict, board: str, entry: str, reason: str | None, *,
                                console_tail: list[str] | None = None) -> None:
    """run.json `infrastructure_failures`: every infrastructure failure on a board (board, entry, reason, time, and
    the board's last console lines where it has a console), kept across resumes, so a lab can count its losses
    (docs/remote.md)."""
    from harness.results.store import utc_now

    record = {"board": board, "entry": entry, "reason": reason, "at_utc": utc_now()}
    if console_tail is not None:
        record["console_tail"] = console_tail
    doc.setdefault("infrastructure_failures", []).append(record)


class _unlocked:
    """Release `lock` (held by this thread) for the length of a block: a board's own work runs beside the others'."""

    def __init__(self, lock):
        self.lock = lock

    def __enter__(self):
        if self.lock is not None:
            self.lock.release()

    def __exit__(self, *exc):
        if self.lock is not None:
            self.lock.acquire()
        return False
