"""Fidelity of a built variant against the model's fp32 reference, on the calibration inputs.

What "agrees" means depends on the task, and a failure count alone hides real damage (int8 BlazeFace misses no
face while its keypoints collapse), so detection compares decoded boxes and eye positions, not only found/not found.

Tolerances (a variant outside them is recorded as failed, with the figures):
- verification: mean cosine to the fp32 embedding >= 0.90 and min >= 0.70. Static int8 MobileFaceNet sits at a
  mean of 0.93-0.96 here whatever the recipe (MinMax/percentile/entropy, PReLU kept in float); that is a degraded
  but working embedder whose per-group cost is exactly what the benchmark exists to measure, so it is built and
  measured. A broken one (wrong layout, saturated activations) lands far below 0.7.
- gender: decision agreement >= 0.95.
- detection: found/not-found agreement >= 0.95, median IoU of the chosen face >= 0.80, and mean eye error
  <= 0.10 of the fp32 inter-ocular distance (alignment tolerates about that before chips visibly shift).
Outputs with NaN/inf, or identical for every input ("collapsed"), are a build error regardless of task.
"""

from __future__ import annotations

import numpy as np

from harness.tasks import blazeface
from harness.tasks.boxes import box_iou
from harness.tasks.preprocess import Letterbox
from harness.tasks.select import choose_face
from harness.tasks.verification import l2_normalize

TOLERANCES = {
    "verification": {"mean_cosine_min": 0.90, "min_cosine_min": 0.70},
    "gender": {"agreement_min": 0.95},
    "detection": {"found_agreement_min": 0.95, "median_iou_min": 0.80, "mean_eye_err_max": 0.10},
}

_IDENTITY = Letterbox(1.0, 1.0, 0.0, 0.0)


class Collapsed(Exception):
    """Outputs are not finite or do not depend on the input."""


def check_outputs(outputs: list[list[np.ndarray]]) -> None:
    """outputs[i] is the list of output arrays for input i."""
    for k in range(len(outputs[0])):
        stack = np.stack([np.asarray(o[k], np.float64) for o in outputs])
        if not np.isfinite(stack).all():
            raise Collapsed(f"output {k} has {int((~np.isfinite(stack)).sum())} non-finite values (NaN/inf)")
        if len(outputs) > 1 and float(np.ptp(stack, axis=0).max()) == 0.0:
            raise Collapsed(f"output {k} is identical for all {len(outputs)} inputs (collapsed)")


def _face(outs: list[np.ndarray], size: int = 128):
    dets = blazeface.decode(outs, _IDENTITY, input_size=size)
    return choose_face(dets, (size, size))


def compare(task: str, ref: list[list[np.ndarray]], var: list[list[np.ndarray]]) -> dict:
    """Task-specific agreement of `var` with `ref` (lists of per-input output lists). Adds pass/fail + reason."""
    if task == "verification":
        a = l2_normalize(np.concatenate([o[0] for o in ref]).reshape(-1, np.asarray(ref[0][0]).shape[-1]))
        b = l2_normalize(np.concatenate([o[0] for o in var]).reshape(a.shape))
        cos = (a * b).sum(axis=1)
        res = {"n": int(len(cos)), "mean_cosine": float(cos.mean()), "min_cosine": float(cos.min()),
               "p5_cosine": float(np.percentile(cos, 5))}
        tol = TOLERANCES[task]
        bad = []
        if res["mean_cosine"] < tol["mean_cosine_min"]:
            bad.append(f"mean cosine {res['mean_cosine']:.4f} < {tol['mean_cosine_min']}")
        if res["min_cosine"] < tol["min_cosine_min"]:
            bad.append(f"min cosine {res['min_cosine']:.4f} < {tol['min_cosine_min']}")
    elif task == "gender":
        pa = np.concatenate([np.asarray(o[0]).reshape(-1, 2)[:, 1] for o in ref])
        pb = np.concatenate([np.asarray(o[0]).reshape(-1, 2)[:, 1] for o in var])
        agree = float(((pa >= 0.5) == (pb >= 0.5)).mean())
        res = {"n": int(len(pa)), "decision_agreement": agree, "max_abs_diff": float(np.abs(pa - pb).max()),
               "mean_abs_diff": float(np.abs(pa - pb).mean())}
        bad = [f"decision agreement {agree:.3f} < {TOLERANCES[task]['agreement_min']}"] \
            if agree < TOLERANCES[task]["agreement_min"] else []
    elif task == "detection":
        found_agree, ious, eye_errs = [], [], []
        for r, v in zip(ref, var):
            fr, fv = _face(r), _face(v)
            found_agree.append((fr is None) == (fv is None))
            if fr is not None and fv is not None:
                ious.append(float(box_iou(fr.box, fv.box[None])[0]))
                iod = float(np.linalg.norm(fr.eyes[0] - fr.eyes[1])) or 1.0
                eye_errs.append(float(np.linalg.norm(fr.eyes - fv.eyes, axis=1).mean() / iod))
        res = {"n": len(ref), "found_agreement": float(np.mean(found_agree)),
               "median_iou": float(np.median(ious)) if ious else None,
               "mean_eye_err": float(np.mean(eye_errs)) if eye_errs else None,
               "max_eye_err": float(np.max(eye_errs)) if eye_errs else None}
        tol = TOLERANCES[task]
        bad = []
        if res["found_agreement"] < tol["found_agreement_min"]:
            bad.append(f"found agreement {res['found_agreement']:.3f} < {tol['found_agreement_min']}")
        if res["median_iou"] is not None and res["median_iou"] < tol["median_iou_min"]:
            bad.append(f"median IoU {res['median_iou']:.3f} < {tol['median_iou_min']}")
        if res["mean_eye_err"] is not None and res["mean_eye_err"] > tol["mean_eye_err_max"]:
            bad.append(f"mean eye error {res['mean_eye_err']:.3f} of the eye distance > {tol['mean_eye_err_max']}")
    else:  # pragma: no cover - tasks are validated in specs
        raise ValueError(task)
    res["tolerance"] = TOLERANCES[task]
    res["passed"] = not bad
    res["reason"] = "; ".join(bad) or None
    return res
