"""Fidelity of a built variant against the model's fp32 reference, on the calibration-disjoint faces.

What "agrees" means depends on the task, and a failure count alone hides real damage (int8 BlazeFace misses no
face while its keypoints collapse), so detection compares decoded boxes and eye positions, not only found/not found.

The sample: every face of the calibration dataset outside the calibration split (508 faces of fairface-sample at
the default split; harness.models.build.calibration_inputs). The decision is interval-based (docs/metrics.md,
"Fidelity"): per face, the variant either agrees with fp32 or not, and a variant is within tolerance only when the
one-sided 95% Clopper-Pearson upper bound of its disagreement rate is at most DISAGREEMENT_MAX (5%): the variant
has to show that it is within tolerance. (On 64 faces, 4/64 = 6% disagreement has a two-sided 95% interval of
[1.7%, 15%]: it cannot tell a good variant from a bad one.) Means (cosine, eye error) are decided on their one-sided
95% Student-t bound, the median IoU on its value.

Per task, a face disagrees when:
- verification: its embedding's cosine to the fp32 embedding is below 0.70 (a broken embedding for that face);
  also the mean cosine's lower bound must be >= 0.90. Static int8 MobileFaceNet sits at a mean of 0.93-0.96 here
  whatever the recipe; that is a degraded but working embedder whose per-group cost is exactly what the benchmark
  exists to measure.
- gender: the decision (P(male) >= 0.5) differs.
- detection: found/not-found differs, or the chosen face's mean eye error exceeds 0.10 of the fp32 inter-ocular
  distance (alignment tolerates about that before chips visibly shift); also the median IoU of the chosen face must
  be >= 0.80 and the mean eye error's upper bound <= 0.10.
A variant outside tolerance is still built and benchmarked, recorded with its figures and flagged
(`within_tolerance` false). Outputs with NaN/inf, or identical for every input ("collapsed"), are a build error
regardless of task (check_outputs): such a variant is refused.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import beta
from scipy.stats import t as student_t

from harness.models.cpu_features import describe
from harness.tasks import blazeface
from harness.tasks.boxes import box_iou
from harness.tasks.preprocess import Letterbox
from harness.tasks.select import choose_face
from harness.tasks.verification import l2_normalize

DISAGREEMENT_MAX = 0.05  # per-face disagreement rate a variant must show it stays under
CONFIDENCE = 0.95        # one-sided
TOLERANCES = {
    "verification": {"disagreement_max": DISAGREEMENT_MAX, "face_cosine_min": 0.70, "mean_cosine_min": 0.90},
    "gender": {"disagreement_max": DISAGREEMENT_MAX},
    "detection": {"disagreement_max": DISAGREEMENT_MAX, "face_eye_err_max": 0.10, "median_iou_min": 0.80,
                  "mean_eye_err_max": 0.10},
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


def disagreement_bound(k: int, n: int, confidence: float = CONFIDENCE) -> float:
    """One-sided Clopper-Pearson upper bound of a rate from k of n (Clopper & Pearson 1934, Biometrika 26:404-413):
    the beta quantile beta.ppf(confidence, k + 1, n - k), and 1 at k = n."""
    if n <= 0 or not 0 <= k <= n:
        raise ValueError(f"bad counts k={k}, n={n}")
    return 1.0 if k == n else float(beta.ppf(confidence, k + 1, n - k))


def _mean_bound(values: np.ndarray, side: str, confidence: float = CONFIDENCE) -> float:
    """One-sided Student-t bound of a mean ("upper" or "lower"); the value itself for a single face."""
    m = float(values.mean())
    if len(values) < 2:
        return m
    half = float(student_t.ppf(confidence, len(values) - 1) * values.std(ddof=1) / np.sqrt(len(values)))
    return m + half if side == "upper" else m - half


def _disagreements(flags: list[bool] | np.ndarray, tol: dict) -> tuple[dict, list[str]]:
    flags = np.asarray(flags, bool)
    k, n = int(flags.sum()), int(len(flags))
    bound = disagreement_bound(k, n)
    rec = {"k": k, "n": n, "rate": k / n, "ci_hi": bound, "ci_method": "clopper_pearson_upper",
           "confidence": CONFIDENCE, "max": tol["disagreement_max"]}
    bad = [] if bound <= tol["disagreement_max"] else [
        f"{k} of {n} faces disagree ({k / n:.1%}, 95% upper bound {bound:.1%} > {tol['disagreement_max']:.0%})"]
    return rec, bad


def compare(task: str, ref: list[list[np.ndarray]], var: list[list[np.ndarray]]) -> dict:
    """Task-specific agreement of `var` with `ref` (lists of per-input output lists), with the interval-based
    decision: "within_tolerance" and, when not, "reason" (the figures that missed)."""
    tol = TOLERANCES[task]
    if task == "verification":
        a = l2_normalize(np.concatenate([o[0] for o in ref]).reshape(-1, np.asarray(ref[0][0]).shape[-1]))
        b = l2_normalize(np.concatenate([o[0] for o in var]).reshape(a.shape))
        cos = (a * b).sum(axis=1)
        res = {"n": int(len(cos)), "mean_cosine": float(cos.mean()), "mean_cosine_lo": _mean_bound(cos, "lower"),
               "min_cosine": float(cos.min()), "p5_cosine": float(np.percentile(cos, 5))}
        res["disagreement"], bad = _disagreements(cos < tol["face_cosine_min"], tol)
        if res["mean_cosine_lo"] < tol["mean_cosine_min"]:
            bad.append(f"mean cosine {res['mean_cosine']:.4f} (95% lower bound {res['mean_cosine_lo']:.4f}) < "
                       f"{tol['mean_cosine_min']}")
    elif task == "gender":
        pa = np.concatenate([np.asarray(o[0]).reshape(-1, 2)[:, 1] for o in ref])
        pb = np.concatenate([np.asarray(o[0]).reshape(-1, 2)[:, 1] for o in var])
        flips = (pa >= 0.5) != (pb >= 0.5)
        res = {"n": int(len(pa)), "decision_agreement": float(1 - flips.mean()),
               "max_abs_diff": float(np.abs(pa - pb).max()), "mean_abs_diff": float(np.abs(pa - pb).mean())}
        res["disagreement"], bad = _disagreements(flips, tol)
    elif task == "detection":
        found_agree, ious, eye_errs, flags = [], [], [], []
        for r, v in zip(ref, var):
            fr, fv = _face(r), _face(v)
            found_agree.append((fr is None) == (fv is None))
            eye = None
            if fr is not None and fv is not None:
                ious.append(float(box_iou(fr.box, fv.box[None])[0]))
                iod = float(np.linalg.norm(fr.eyes[0] - fr.eyes[1])) or 1.0
                eye = float(np.linalg.norm(fr.eyes - fv.eyes, axis=1).mean() / iod)
                eye_errs.append(eye)
            flags.append(not found_agree[-1] or (eye is not None and eye > tol["face_eye_err_max"]))
        errs = np.asarray(eye_errs)
        res = {"n": len(ref), "found_agreement": float(np.mean(found_agree)),
               "median_iou": float(np.median(ious)) if ious else None,
               "mean_eye_err": float(errs.mean()) if eye_errs else None,
               "mean_eye_err_hi": _mean_bound(errs, "upper") if eye_errs else None,
               "max_eye_err": float(errs.max()) if eye_errs else None}
        res["disagreement"], bad = _disagreements(flags, tol)
        if res["median_iou"] is not None and res["median_iou"] < tol["median_iou_min"]:
            bad.append(f"median IoU {res['median_iou']:.3f} < {tol['median_iou_min']}")
        if res["mean_eye_err_hi"] is not None and res["mean_eye_err_hi"] > tol["mean_eye_err_max"]:
            bad.append(f"mean eye error {res['mean_eye_err']:.3f} (95% upper bound {res['mean_eye_err_hi']:.3f}) of "
                       f"the eye distance > {tol['mean_eye_err_max']}")
    else:  # pragma: no cover - tasks are validated in specs
        raise ValueError(task)
    res["tolerance"] = tol
    res["within_tolerance"] = not bad
    res["reason"] = "; ".join(bad) or None
    return res


def flagged(fid: dict | None) -> bool:
    """Whether a recorded fidelity says the variant is outside tolerance (built and runnable, but flagged)."""
    return isinstance(fid, dict) and fid.get("within_tolerance") is False


def flag_text(fid: dict | None) -> str | None:
    """'flagged: <figures that missed> (measured on x86_64, avx2, no VNNI)' for a flagged variant, else None."""
    if not flagged(fid):
        return None
    return f"flagged: {fid.get('reason') or 'outside tolerance'} (measured on {describe(fid.get('host'))})"
