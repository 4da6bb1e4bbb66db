"""The host's share of a run, made while its boards are acquired and connected: the datasets (calibration images
excluded, --limit subsets, watchlist splits) and the faces (every image decoded, detected and aligned once, on this
host, by the reference detector), in one thread started before `open_session` opens a board's session (a run on this
machine, whose session answers at once, starts it after its plan).

Neither needs a board: which models a run has comes from its settings and the target profile (`planned_models`),
never from a board's health report, which only says whether each entry can run. So the host decodes while the main
thread waits in labgrid's queue, connects, provisions and health-checks.

What the main thread sees does not change with it: a board that cannot be had is still said before any data error,
a refusal that needs only the host's data (`check`) still comes before any face is decoded, one that needs the
board's answer (its memory, its model) as soon as it answers, and stops the decoding; the run is created (`run ID ->
DIR`) from the same datasets, and an interrupt from that line on leaves it resumable (waiting for the faces is
interruptible; the thread stops at its next image: `stop`). The thread's lines are held (`_Held`) and said where the
main thread reached the same point before the overlap: the datasets' lines when it asks for the data, the faces'
progress once it asks for the faces, after `run ID -> DIR`; a run refused before that prints one line, its refusal. Signals reach the main thread only, so a native import
in this thread (dlib, onnxruntime) is never interrupted half-way (harness/interrupts.py).
"""

from __future__ import annotations

import dataclasses
import json
import math
import threading
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from harness import specs
from harness.errors import InputError, UnavailableError, UsageError


@dataclass
class HostData:
    """The run's datasets as evaluated: [(Dataset, frame)] and run.json's `data.datasets` records."""

    datasets: list
    records: list[dict]


@dataclass
class Faces:
    """The acquisition: samples [(tasks, meta)] and Acquired faces in row order; the upstream chipper (None: no
    dlib-chip model, or dlib unavailable) and run.json's `pipeline_sensitivity`; `reused`: the run whose acquisition
    this is (--each's later runs), else None."""

    samples: list
    acquired: list
    chipper: Any
    sensitivity: dict
    key: str
    reused: str | None = None


class Stopped(Exception):
    """The acquisition was stopped (`HostFaces.stop`): the run ended before it needed the faces."""


class _Held:
    """Lines written from the host's thread, held in order until the main thread lets them out (`release`), so a
    run that is refused while its faces are being made says only why. Once `opened`, lines pass straight through."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._held: list[Callable[[], None]] = []
        self._open = False

    def emit(self, write: Callable[[], None]) -> None:
        with self._lock:  # held and passed lines keep one order: a release runs under the same lock
            if self._open:
                write()
            else:
                self._held.append(write)

    def mark(self) -> int:
        """How many lines are held now (a point `release` can let out up to)."""
        with self._lock:
            return len(self._held)

    def release(self, upto: int | None = None) -> None:
        """Let out the held lines up to `upto` (all of them, and every later one as it comes, when None)."""
        with self._lock:
            n = len(self._held) if upto is None else min(upto, len(self._held))
            out, self._held = self._held[:n], self._held[n:]
            for write in out:
                write()
            if upto is None:
                self._open = True

    def log(self, log: Callable[[str], None]) -> Callable[[str], None]:
        return lambda message: self.emit(lambda: log(message))

    def progress(self, progress: Callable[[str, int], Callable[..., None]]) -> Callable[[str, int], Callable[..., None]]:
        def task(description: str, total: int) -> Callable[..., None]:
            real: list[Callable[..., None]] = []
            self.emit(lambda: real.append(progress(description, total)))
            return lambda n=1: self.emit(lambda: real[0](n))
        return task


class HostFaces:
    """The datasets and faces of one run, made in a thread (`start`); `data()` and `faces()` wait for them and raise
    what making them raised; `stop()` ends the thread at its next image and waits for it."""

    def __init__(self, cfg, models: list[str], *, cache: Path, data_root: Path, log: Callable[[str], None],
                 progress: Callable[[str, int], Callable[..., None]], shared: dict | None = None,
                 check: Callable[[HostData], None] = lambda data: None) -> None:
        """`check(data)`: refusals that need only the host's data, made before any face is decoded (raising there
        is what data() and faces() raise)."""
        self._cfg, self._models, self._cache, self._data_root = cfg, models, cache, data_root
        self._check = check
        self._out = _Held()
        self._log, self._progress = self._out.log(log), self._out.progress(progress)
        self._shared = shared
        self._data_lines = 0  # the lines held when the data was made: data() lets them out
        self._data: Future = Future()
        self._faces: Future = Future()
        self._stop = threading.Event()
        self._starting = threading.Lock()
        self._thread = threading.Thread(target=self._work, name="host-faces", daemon=True)

    def start(self) -> "HostFaces":
        """Start the thread (once; a later call does nothing)."""
        with self._starting:
            if not self._thread.is_alive() and self._thread.ident is None:
                self._thread.start()
        return self

    def data(self) -> HostData:
        self.start()
        try:
            return self._data.result()
        finally:
            self._out.release(self._data_lines)

    def faces(self) -> Faces:
        self.start()
        self._out.release()  # from here the faces' progress is said as it comes
        return self._faces.result()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _work(self) -> None:
        try:
            data = load_datasets(self._cfg, self._models, self._cache, self._data_root, self._log)
            self._check(data)
        except BaseException as exc:  # noqa: BLE001 - raised in the main thread, by data() and faces()
            self._data_lines = self._out.mark()
            self._data.set_exception(exc)
            self._faces.set_exception(exc)
            return
        self._data_lines = self._out.mark()
        self._data.set_result(data)
        try:
            self._faces.set_result(self._acquire(data))
        except BaseException as exc:  # noqa: BLE001 - raised in the main thread, by faces()
            self._faces.set_exception(exc)

    def _acquire(self, data: HostData) -> Faces:
        from harness.models.pack import variant_status

        cfg = self._cfg
        det_spec = specs.get_model("blazeface")
        det_ref = variant_status(self._cache, det_spec, det_spec.reference_variant)
        if det_ref.status != "built":
            raise UnavailableError(f"the reference detector blazeface/{det_spec.reference_variant} is "
                                   f"{det_ref.status}: {det_ref.reason}")
        chipper, sensitivity = upstream_chipper(self._models, cfg, self._log)
        key = json.dumps([data.records, cfg.oracle, cfg.condition, cfg.pipeline, chipper is not None],
                         sort_keys=True)
        shared = self._shared
        if shared is not None and shared.get("key") == key:  # --each: the first run's acquisition, the same faces
            return Faces(shared["samples"], shared["acquired"], chipper, sensitivity, key, reused=shared["run_id"])

        def progress(description: str, total: int) -> Callable[..., None]:
            advance = self._progress(description, total)

            def step(n: int = 1) -> None:
                if self._stop.is_set():
                    raise Stopped("the run ended before the acquisition")
                advance(n)
            return step

        samples, acquired = acquire_all(data.datasets, cfg, det_ref, chipper, progress)
        return Faces(samples, acquired, chipper, sensitivity, key)


def load_datasets(cfg, models: list[str], cache: Path, data_root: Path, log: Callable[[str], None]) -> HostData:
    """The run's datasets: a card's distractor set joins its dataset; evaluation excludes every image any model of
    the run was calibrated on (packs may have been built with different calibration splits, e.g. one model
    recalibrated on a single group); --limit keeps whole subjects, balanced; a watchlist card's split is drawn."""
    from harness.data.dataset import load_dataset
    from harness.data.layouts import builtin_layouts
    from harness.data.registry import registered_names
    from harness.data.splits import calibration_split, evaluation_frame
    from harness.data.watchlist import rules_of, watchlist_split
    from harness.models.pack import read_pack

    calibrations = {c["sha256"]: c for m in sorted(set(models)) if (c := read_pack(cache, m).get("calibration"))}
    datasets, records = [], []
    names = list(cfg.datasets)
    for name in names:
        ds = load_dataset(name, data_root)
        rules = rules_of(ds.card, f"dataset {ds.id} card")
        if rules is not None and rules.distractors and rules.distractors not in names:
            if rules.distractors not in builtin_layouts(data_root) and \
                    rules.distractors not in registered_names(data_root):
                raise InputError(f"dataset {ds.id} card: identification.distractors '{rules.distractors}' is not a "
                                 "built-in or registered dataset")
            names.append(rules.distractors)  # the card's protocol: its distractor faces join the run
            log(f"{ds.id}: distractors from {rules.distractors} (its card's identification rules)")
        frame, excluded = ds.frame, []
        for calib in calibrations.values():
            if calib.get("dataset") != ds.id:
                continue
            split = calibration_split(ds, seed=calib["seed"], size=calib["size_requested"], mix=calib["mix"])
            if split.sha256 != calib["sha256"]:
                raise UsageError(f"{ds.id}: the calibration split recorded in the model packs ({calib['id']}) cannot "
                                 "be reproduced from this data; rebuild the packs (bench models build --force)")
            frame = frame[frame["image"].isin(set(evaluation_frame(ds, split)["image"]))]
            excluded.append(split.to_dict())
        subset = None
        if cfg.limit and len(frame) > cfg.limit:  # a small sample (emulated boards): whole subjects, balanced
            sub = calibration_split(dataclasses.replace(ds, frame=frame), seed=cfg.seed, size=cfg.limit)
            frame = frame[frame["image"].isin(set(sub.images))]
            subset = {"limit": cfg.limit, "sha256": sub.sha256, "composition": sub.composition}
        datasets.append((ds, frame))
        watchlist = None if rules is None else watchlist_split(
            ds.id, frame, rules, seed=cfg.seed, group_by=ds.default_group_by, origin=f"dataset {ds.id} card").to_dict()
        records.append({"id": ds.id, "root": str(ds.root), "manifest_sha256": ds.manifest_sha256,
                        "n": int(len(ds.frame)), "n_evaluated": int(len(frame)), "subset": subset,
                        "group_columns": list(ds.group_columns), "default_group_by": list(ds.default_group_by),
                        "groupings": [list(g) for g in ds.groupings],
                        "excluded_calibration_splits": excluded, "identification": watchlist})
    return HostData(datasets, records)


def dlib_chip(model: "specs.ModelSpec") -> bool:
    """A model fed dlib's face chip (its [align] template is dlib's 5-point one): the upstream pipeline applies."""
    return model.align is not None and model.align.template == "dlib-5pt"


def upstream_chipper(models: list[str], cfg, log: Callable[[str], None]) -> tuple[Any, dict]:
    """(The upstream chip maker, run.json's `pipeline_sensitivity`): the chipper when the run has a dlib-chip model
    to feed or to compare, else None, with the section saying why (status and, when ok, the upstream pipeline's
    provenance). --pipeline upstream without the extra installed is an error; a harness-pipeline run without it
    says "unavailable"."""
    from harness.upstream import PIPELINES, UNAVAILABLE, UpstreamChipper, availability

    if cfg.pipeline not in PIPELINES:
        raise UsageError(f"unknown pipeline '{cfg.pipeline}'; valid: {', '.join(PIPELINES)}")
    if not any(dlib_chip(specs.get_model(m)) for m in models):
        return None, {"status": "not_applicable", "reason": "no dlib-chip (gender) model in the run"}
    ok, why = availability()
    if not ok:
        if cfg.pipeline == "upstream":
            raise UnavailableError(f"--pipeline upstream: {why}")
        log(f"pipeline sensitivity unavailable: {UNAVAILABLE}")
        return None, {"status": "unavailable", "reason": UNAVAILABLE}
    chipper = UpstreamChipper(cfg.upstream_detector)
    return chipper, {"status": "ok", "pipeline": cfg.pipeline, "upstream": chipper.provenance, "models": {}}


def tasks_for_dataset(ds, datasets=()) -> set[str]:
    """The model tasks a dataset's samples are fed to (harness/tasks/registry.py): gender needs the card's gender
    mapping, verification subject ids; a watchlist set's distractors (`datasets`: the run's) feed the embedders."""
    from harness.tasks.registry import model_tasks_for

    return model_tasks_for(ds, datasets)


def acquire_all(datasets, cfg, det_ref, chipper, progress) -> tuple[list, list]:
    """The shared front of the pipeline: every image decoded, detected and aligned once on this host (the reference
    detector, onnxruntime CPU fp32); (samples: [(tasks, meta)], acquired: [Acquired])."""
    from harness.models.build import CPU_ONNX
    from harness.pipeline import acquire, ground_truth
    from harness.runners import make_runner

    detector = make_runner(CPU_ONNX, Path(det_ref.path))
    samples, acquired_all = [], []
    advance = progress("decode, detect, align", sum(len(f) for _, f in datasets))
    all_ds = [d for d, _ in datasets]
    for ds, frame in datasets:
        gts = ground_truth(frame)
        labels = _gender_labels(ds)
        acq = acquire(ds, frame, detector, oracle=cfg.oracle, progress=advance, upstream=chipper,
                      condition=(cfg.capture_conditions() or [None])[0])
        for a, (index, row) in zip(acq, frame.iterrows()):
            gt = gts[a.image]
            gt_json = {k: (v.tolist() if v is not None else None) for k, v in gt.items()}
            meta = _sample_meta(a, row, ds, len(acquired_all), a.image_size, gt_json)
            samples.append((tasks_for_dataset(ds, all_ds), meta | {"gender_label": labels.get(index)}))
            acquired_all.append(a)
    return samples, acquired_all


def _sample_meta(acq, row, ds, row_index: int, image_size, gt) -> dict:
    attrs = {c: (None if (isinstance(row.get(c), float) and math.isnan(row.get(c))) else row.get(c))
             for c in ds.group_columns}
    subject = row.get("subject") if "subject" in row.index else None
    return {"row": row_index, "sample_id": acq.sample_id, "dataset": ds.id, "image": acq.image,
            "subject": None if subject is None or (isinstance(subject, float) and math.isnan(subject)) else str(subject),
            "attrs": attrs, "decoded": acq.det_input is not None, "acquired": acq.ok, "fta_reason": acq.fta_reason,
            "times": acq.times, "letterbox": list(acq.letterbox) if acq.letterbox else None,
            "image_size": list(image_size) if image_size else None, "gt": gt, "upstream": acq.upstream,
            "quality": acq.quality}


def _gender_labels(ds) -> dict:
    """Row index -> the card-mapped "female"/"male" (None where unmapped), or {} without a mapping."""
    if not ds.gender_label:
        return {}
    return {i: (v if isinstance(v, str) else None) for i, v in ds.gender_labels().items()}
