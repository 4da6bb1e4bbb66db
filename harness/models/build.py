"""`bench models build`: fetch sources, build six variants per model, measure fidelity, write the pack manifest.

Calibration images come from a named, recorded split of the shared data (fairface-sample by default: it has no
identities, so the London set used for verification is never touched); the split id, its sha256 and its
demographic composition go into each pack so that a user can rebuild with another mix and measure what the
calibration data does to each group.

Concurrency: a model's pack is built under its pack lock (harness.models.lock), pack.json updates included, so
two builders into one cache take turns (the second one says whom it waits for); each variant is converted into a
uniquely named temporary file beside its destination and moved into place atomically. Reproducibility: the same
source, recipe and calibration split give the same bytes (tests/unit/test_build_reproducible.py), so a changed
sha256 means a changed model. Each variant records what it was built from (harness.models.pack.built_from); a
variant whose pin or recipe changed in the manifest is stale and rebuilt.

A variant that failed for a reason of the machine, not of the model (disk full, quota, out of memory: see
harness.files.environment_error) is recorded `failed` with `retryable: true` and a reason naming the file; the next
`bench models build` (or a `bench run` that builds) retries it without --force, and the build that met it exits 1
(issue 17, item 10).
"""

from __future__ import annotations

import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from harness import __version__, buildmethods
from harness.errors import BenchError, BuildError, IntegrityError, UnavailableError
from harness.files import environment_error, naming
from harness.models import fidelity
from harness.models.cpu_features import kernel_features
from harness.models.fetch import atomic_copy, fetch_model, publish, sha256_file, temp_beside
from harness.models.lock import DEFAULT_TIMEOUT_S, cache_lock, pack_lock_path
from harness.models.pack import (PACK_VERSION, built_from, empty_pack, read_pack, set_aside, staleness,
                                 variant_path, variant_status, write_pack)
from harness.specs import Backend, ModelSpec, get_model, parse_variant

CPU_ONNX = Backend(runtime="onnxruntime", variants=(), provider="CPUExecutionProvider")
CPU_LITERT = Backend(runtime="litert", variants=(), delegate="xnnpack")


@dataclass(frozen=True)
class CalibrationConfig:
    dataset: str = "fairface-sample"
    size: int = 64
    mix: str = "balanced"
    seed: int = 0


def cpu_runner(path: Path, fmt: str):
    from harness.runners import make_runner

    return make_runner(CPU_ONNX if fmt == "onnx" else CPU_LITERT, path)


@dataclass(frozen=True)
class BuildInputs:
    """Per model id, NHWC float32 samples (one face each): `calibration` from the calibration split (int8 ranges),
    `fidelity` from every other face of the same dataset (the fidelity check, never calibrated on)."""

    calibration: dict[str, list[np.ndarray]]
    fidelity: dict[str, list[np.ndarray]]
    record: dict


def calibration_inputs(cache: Path, data_root: Path, cfg: CalibrationConfig, models: list[ModelSpec],
                       log) -> BuildInputs:
    """The calibration split's faces and the calibration-disjoint fidelity sample, per model, plus their record.

    Every image of the dataset is acquired once with the fp32 detector; the split's faces calibrate, all the others
    (the whole calibration-disjoint sample, 508 faces of fairface-sample at the default split) measure fidelity.
    """
    from harness.data.dataset import load_dataset
    from harness.data.splits import calibration_split
    from harness.pipeline import acquire, model_image
    from harness.tasks.preprocess import normalize

    ds = load_dataset(cfg.dataset, data_root)
    split = calibration_split(ds, seed=cfg.seed, size=cfg.size, mix=cfg.mix)
    in_split = set(split.images)
    det_model = get_model("blazeface")
    fetched = fetch_model(cache, det_model, log=log)
    detector = cpu_runner(fetched["onnx"], "onnx")
    t0 = time.perf_counter()
    acquired = [a for a in acquire(ds, ds.frame, detector) if a.ok]
    acquire_s = time.perf_counter() - t0
    calib = [a for a in acquired if a.image in in_split]
    held_out = [a for a in acquired if a.image not in in_split]
    if len(calib) < max(4, cfg.size // 2):
        raise BuildError(f"calibration split {split.id}: only {len(calib)} of {len(in_split)} images gave a face")
    if len(held_out) < 2:
        raise BuildError(f"dataset {cfg.dataset}: only {len(held_out)} faces outside calibration split {split.id}; "
                         "the fidelity check needs the calibration-disjoint faces (use a larger dataset)")

    def chips(m: ModelSpec, faces) -> list[np.ndarray]:
        return [normalize(model_image(a, m.input.resize), m.input.mean, m.input.scale) for a in faces]

    record = split.to_dict()
    record.update({"dataset": cfg.dataset, "mix": cfg.mix, "seed": cfg.seed, "size_requested": cfg.size,
                   "faces_used": len(calib), "manifest_sha256": ds.manifest_sha256,
                   "fidelity_sample": {"dataset": cfg.dataset, "faces": len(held_out),
                                       "images": len(ds.frame) - len(in_split),
                                       "rule": "every face of the dataset outside the calibration split",
                                       "acquire_s": round(acquire_s, 1)}})
    return BuildInputs({m.id: chips(m, calib) for m in models}, {m.id: chips(m, held_out) for m in models}, record)


def _batches(runner, samples: list[np.ndarray]) -> list[np.ndarray]:
    """Samples -> model-ready input arrays (layout, exact fixed batch), as converters and fidelity need them."""
    b = runner.max_batch(1)
    out = []
    for i in range(0, len(samples) - (len(samples) % b if b > 1 else 0), b):
        out.append(runner.prepare(np.stack(samples[i:i + b]))[0])
    return out


def _outputs(runner, samples: list[np.ndarray]) -> list[list[np.ndarray]]:
    """Per-sample outputs (fixed-batch models are fed in their batch size, outputs split back per sample)."""
    b = runner.max_batch(1)
    per_sample = []
    usable = len(samples) - (len(samples) % b if b > 1 else 0)
    for i in range(0, usable, b):
        outs = runner.run(np.stack(samples[i:i + b]))
        for j in range(min(b, usable - i)):
            per_sample.append([np.asarray(o[j:j + 1]) if o.shape[0] == b else o for o in outs])
    return per_sample


def _convert(method: str, source: str, output: str, src: Path, dst: Path, calib: list[np.ndarray],
             options: dict) -> dict:
    """Run one converter with the libraries' progress bars, warnings and INFO logs kept off the user's terminal."""
    import contextlib
    import io
    import logging
    import warnings

    previous = logging.root.level
    logging.root.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            return _dispatch(method, source, output, src, dst, calib, options)
    finally:
        logging.root.setLevel(previous)


def _dispatch(method: str, source: str, output: str, src: Path, dst: Path, calib: list[np.ndarray],
              options: dict) -> dict:
    """The registered converter of `method` from `source` to `output` format (harness.buildmethods)."""
    m, conv = buildmethods.lookup(method, source, output, f"{dst.name}")
    fn = conv.load()
    return fn(src, dst, calib, **options) if m.calibrated else fn(src, dst, **options)


def build_model(cache: Path, model: ModelSpec, calib_samples: list[np.ndarray], calib_record: dict,
                fidelity_samples: list[np.ndarray], *, force: bool = False, log: Callable = print,
                lock_timeout_s: float = DEFAULT_TIMEOUT_S) -> dict:
    """Build (or keep) every variant of `model` under its pack lock; returns the pack document written to the cache.
    int8 variants are calibrated on `calib_samples`; fidelity is measured on `fidelity_samples` (calibration_inputs:
    the calibration-disjoint faces)."""
    with cache_lock(pack_lock_path(cache, model.id), f"the {model.id} model pack in {cache}", log=log,
                    timeout_s=lock_timeout_s):
        return _build_model_locked(cache, model, calib_samples, calib_record, fidelity_samples, force=force, log=log,
                                   lock_timeout_s=lock_timeout_s)


def _read_or_set_aside(cache: Path, model: ModelSpec, force: bool, log: Callable) -> dict:
    """The pack document; with --force, an unreadable one is moved aside and the pack rebuilt from nothing."""
    try:
        return read_pack(cache, model.id)
    except IntegrityError as exc:
        if not force:
            raise
        aside = set_aside(cache, model.id)
        log(f"{model.id}: {exc.message.split(';')[0]}; moved it to {aside.name} and rebuilding every variant")
        return empty_pack(model.id)


def _build_model_locked(cache: Path, model: ModelSpec, calib_samples: list[np.ndarray], calib_record: dict,
                        fidelity_samples: list[np.ndarray], *, force: bool, log: Callable,
                        lock_timeout_s: float) -> dict:
    sources = fetch_model(cache, model, log=log, lock_timeout_s=lock_timeout_s)
    pack = _read_or_set_aside(cache, model, force, log)
    same_calibration = pack.get("calibration", {}).get("sha256") == calib_record.get("sha256")
    if not same_calibration and pack["variants"]:
        log(f"{model.id}: calibration split changed; rebuilding calibrated variants")
    pack.update({"pack_version": PACK_VERSION, "model": model.id, "task": model.task, "harness_version": __version__,
                 "sources": [{"id": s.id, "package": s.package, "registry": s.registry, "path": s.path,
                              "sha256": s.sha256} for s in model.sources],
                 "calibration": calib_record})
    ref_outputs_cache: dict[str, list] = {}

    fidelity_s = [0.0]  # running the fidelity sample and comparing: what the sample's size costs a build

    def outputs_of(variant: str, path: Path) -> list[list[np.ndarray]]:
        # Cached per build: each variant runs over the fidelity sample once, whatever it is compared with.
        if variant not in ref_outputs_cache:
            t0 = time.perf_counter()
            ref_outputs_cache[variant] = _outputs(cpu_runner(path, variant.split("-")[0]), fidelity_samples)
            fidelity_s[0] += time.perf_counter() - t0
        return ref_outputs_cache[variant]

    changed: set[str] = set()  # variants whose file differs from the one their children were built from
    for variant in model.build_order():
        recipe = model.variants[variant]
        dst = variant_path(cache, model.id, variant)
        previous_sha = pack["variants"].get(variant, {}).get("sha256")
        if not force and recipe.parent not in changed and not _needs_build(cache, model, variant, pack,
                                                                             same_calibration):
            pack["variants"][variant]["rebuilt"] = False
            continue
        t0 = time.perf_counter()
        rec = {"variant": variant, "format": recipe.format, "precision": recipe.precision, "method": recipe.method
               or "source", "options": dict(recipe.options), "rebuilt": True, "built_from": built_from(model, variant)}
        try:
            if recipe.source:
                atomic_copy(sources[recipe.source], dst)
                rec["recipe"] = f"source file {model.source(recipe.source).package}:{model.source(recipe.source).path}"
                parent_path = None
            else:
                parent = pack["variants"].get(recipe.parent, {})
                if parent.get("status") != "built":
                    raise BuildError(f"parent variant {recipe.parent} is not built ({parent.get('reason') or 'missing'})")
                parent_path = variant_path(cache, model.id, recipe.parent)
                parent_format = parse_variant(recipe.parent).format
                calib = _batches(cpu_runner(parent_path, parent_format), calib_samples) \
                    if buildmethods.METHODS[recipe.method].calibrated else []
                with temp_beside(dst) as tmp, naming(dst):
                    facts = _convert(recipe.method, parent_format, recipe.format, parent_path, tmp, calib,
                                     dict(recipe.options))
                    publish(tmp, dst)
                rec.update({k: v for k, v in facts.items() if k not in ("variant",)})
            runner = cpu_runner(dst, recipe.format)
            rec["input"] = {"name": runner.io.input_name, "shape": list(runner.io.input_shape),
                            "layout": runner.io.layout, "dtype": runner.io.dtype}
            fidelity.check_outputs(outputs_of(variant, dst))
            rec["sha256"] = sha256_file(dst)
            rec["size_bytes"] = dst.stat().st_size
            rec.update(status="built", reason=None)
        except fidelity.Collapsed as exc:
            rec.update(status="failed", reason=f"build error: {exc}", collapsed=True)
            dst.unlink(missing_ok=True)
        except (BenchError, ImportError) as exc:
            msg = exc.message if isinstance(exc, BenchError) else f"converter unavailable: {exc}"
            rec.update(status="missing" if isinstance(exc, (UnavailableError, ImportError)) else "failed", reason=msg)
            dst.unlink(missing_ok=True)
        except Exception as exc:  # a converter bug must not take the other variants down; keep the trace
            machine = environment_error(exc)
            if machine is not None:  # disk full and the like: not the model's fault, retried by the next build
                rec.update(status="failed", reason=machine, retryable=True)
            else:
                rec.update(status="failed",
                           reason=f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}",
                           trace=traceback.format_exc(limit=5))
            dst.unlink(missing_ok=True)
        rec["build_s"] = round(time.perf_counter() - t0, 2)
        if rec.get("sha256") != previous_sha:
            changed.add(variant)
        pack["variants"][variant] = rec
        log(f"{model.id} {variant}: {rec['status']}" + (f" ({rec['reason']})" if rec.get("reason") else ""))
        write_pack(cache, model.id, pack)
    before, t0 = fidelity_s[0], time.perf_counter()
    _fidelity_pass(cache, model, pack, outputs_of, log)  # its own time includes the outputs it runs
    pack["fidelity_s"] = round(before + time.perf_counter() - t0, 1)
    write_pack(cache, model.id, pack)
    return pack


def _fidelity_pass(cache: Path, model: ModelSpec, pack: dict, outputs_of: Callable, log: Callable) -> None:
    """Every built variant against the fp32 reference (the reference against what it was converted from).

    Fidelity is a measurement, not a veto: a variant outside tolerance stays built, runnable and benchmarked, with
    its figures and the build host's kernel-selecting CPU features recorded and `within_tolerance` false, which
    `bench models list`, the run summary and the reports show as "flagged" (the same recipe can land either side
    of the line on two CPUs: issue 16). Only a broken variant (NaN/inf or collapsed outputs) is refused, earlier.
    Run after all variants exist, because a converted reference (MobileFaceNet's onnx-fp32 comes from its TFLite
    original) is built after the variant it is compared with.
    """
    host = kernel_features()
    for variant in model.build_order():
        rec = pack["variants"][variant]
        measured = isinstance(rec.get("fidelity"), dict) and "within_tolerance" in rec["fidelity"]
        if rec.get("status") != "built" or (measured and not rec.get("rebuilt")):
            continue  # (a record from an older harness, without within_tolerance, is measured again)
        recipe = model.variants[variant]
        compare_to = recipe.parent if variant == model.reference_variant else model.reference_variant
        if compare_to and pack["variants"].get(compare_to, {}).get("status") == "built":
            path = variant_path(cache, model.id, variant)
            fid = fidelity.compare(model.task, outputs_of(compare_to, variant_path(cache, model.id, compare_to)),
                                   outputs_of(variant, path))
            fid["against"] = compare_to
        elif compare_to:
            fid = {"against": compare_to, "within_tolerance": False,
                   "reason": f"cannot check fidelity: {compare_to} is not built"}
        else:
            fid = {"against": None, "within_tolerance": True, "reason": None, "note": "reference variant (source file)"}
        fid["host"] = host
        rec["fidelity"] = fid
        if not fid["within_tolerance"]:
            log(f"{model.id} {variant}: {fidelity.flag_text(fid)}")


def _needs_build(cache: Path, model: ModelSpec, variant: str, pack: dict, same_calibration: bool) -> bool:
    """Whether `variant` must be (re)built: never built, stale (its source pin or recipe changed), file missing or
    corrupt, or its calibration changed.

    A variant that failed for a reason that would repeat (a converter's refusal, collapsed outputs) is not retried
    on every run; --force retries it. One that failed for a reason of the machine (`retryable`: disk full, out of
    memory) is retried. (A parent rebuilt into a different file also forces its children; the caller checks that,
    since only the current build knows what it changed.)
    """
    rec = pack["variants"].get(variant)
    if rec is None or staleness(model, variant, rec):
        return True
    if model.variants[variant].method == "int8" and not same_calibration:
        return True
    if rec.get("status") == "built":
        return variant_status(cache, model, variant).status != "built"
    if str(rec.get("reason") or "").startswith("fidelity below tolerance"):
        return True  # refused by an older harness; a variant outside tolerance is built (and flagged) now
    return rec.get("status") == "missing" or rec.get("retryable") is True  # a converter not installed, a full disk


def models_needing_build(cache: Path, models: list[ModelSpec]) -> list[ModelSpec]:
    """Models with at least one variant never built, stale, deleted, or corrupt in the cache."""
    out = []
    for m in models:
        pack = read_pack(cache, m.id)
        same = True  # calibration changes are only known once the split is drawn; build() handles them
        if any(_needs_build(cache, m, v, pack, same) for v in m.build_order()):
            out.append(m)
    return out


def build(cache: Path, data_root: Path, models: list[ModelSpec], *, force: bool = False,
          cfg: CalibrationConfig = CalibrationConfig(), log: Callable = print,
          lock_timeout_s: float = DEFAULT_TIMEOUT_S) -> list[dict]:
    from harness.interrupts import held

    try:
        with held():  # an interrupt inside its module init would read as "not installed" (harness/interrupts.py)
            import onnxruntime

        onnxruntime.set_default_logger_severity(3)  # the barracuda export logs unused initializers at load
    except ImportError:
        pass
    for m in [get_model("blazeface")] + models:  # the detector is needed to make calibration chips
        fetch_model(cache, m, log=log, lock_timeout_s=lock_timeout_s)
    inputs = calibration_inputs(cache, data_root, cfg, models, log)
    return [build_model(cache, m, inputs.calibration[m.id], inputs.record, inputs.fidelity[m.id], force=force,
                        log=log, lock_timeout_s=lock_timeout_s)
            for m in models]
