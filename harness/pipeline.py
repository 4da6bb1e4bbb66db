"""The camera pipeline up to the model inputs: decode -> detect -> choose face -> align.

Every image is decoded and detected once, by the reference detector, and the results (letterboxed detector input,
one chip per model manifest [align] recipe, per-stage times) are shared by every model and variant. Downstream
models are therefore judged on the same faces, so a verification or gender difference between variants is the
variant's own, not a detection difference. Detector variants are evaluated on their own in the detection entries.

Oracle mode aligns from ground-truth eye points where the dataset has them, to measure a stage in isolation: each
recipe is then fitted on the two eyes only (its template's eye points), since nose and mouth are not labelled.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Mapping

import numpy as np
import pandas as pd

from harness.camera import quality
from harness.data.dataset import EYE_COLUMNS, BOX_COLUMNS, Dataset
from harness.data.images import DecodeFailure, decode
from harness.errors import InputError
from harness.runners.base import Runner
from harness.tasks import blazeface
from harness.tasks.align import AlignRecipe, align, detector_points
from harness.tasks.preprocess import letterbox, normalize
from harness.tasks.select import choose_face
from harness.upstream import UPSTREAM_CHIP

DETECTOR_SIZE = (128, 128)
# A model's input image is named by its manifest's [input] resize; one name per image, here and in the npz.
LETTERBOX = "letterbox"
EYES = ("left_eye", "right_eye")


def chip_recipes(models=None) -> dict[str, AlignRecipe]:
    """Chip name (a manifest's [input] resize) -> the [align] recipe that makes it, over `models` (default: every
    model manifest). Two manifests naming one chip must make it the same way."""
    from harness import specs

    recipes: dict[str, AlignRecipe] = {}
    owner: dict[str, str] = {}
    for m in specs.all_models() if models is None else models:
        if m.align is None:
            continue
        name = m.input.resize
        if name in recipes and recipes[name] != m.align:
            raise InputError(f"{m.path}: chip '{name}' is also made by {owner[name]} with a different [align] recipe; "
                             f"give one of them another input.resize name")
        recipes[name], owner[name] = m.align, str(m.path)
    return recipes


def model_image(acq: "Acquired", resize: str) -> np.ndarray | None:
    """The uint8 image a model with this `resize` takes for this sample (None where acquisition failed)."""
    return acq.det_input if resize == LETTERBOX else acq.chips.get(resize)


@dataclass
class Acquired:
    """One sample after the shared front of the pipeline. Arrays are uint8 RGB; None where acquisition failed."""

    sample_id: str
    dataset: str
    image: str
    ok: bool
    fta_reason: str | None
    det_input: np.ndarray | None = None       # letterboxed 128x128 detector input (uint8)
    letterbox: tuple[float, float, float, float] | None = None  # scale_x, scale_y, pad_x, pad_y
    # keyed by the manifests' [input] resize (e.g. "align-arcface" 112x112, "align-dlib-chip" 32x32)
    chips: dict[str, np.ndarray] = field(default_factory=dict)
    det_score: float | None = None
    image_size: tuple[int, int] | None = None  # (width, height) of the decoded image
    times: dict[str, float] = field(default_factory=dict)
    # The upstream pipeline's outcome (harness/upstream.py) when the run makes upstream chips:
    # {"acquired", "fta_reason", "rect_source", "rect"}; its chip is chips[UPSTREAM_CHIP].
    upstream: dict | None = None
    # Face-image quality of the chosen face (harness/camera/quality.py); None when no face was found.
    quality: dict | None = None


def _ms(t0: int) -> float:
    return (time.perf_counter_ns() - t0) / 1e6


def _gt_eyes(row: pd.Series) -> np.ndarray | None:
    if not all(c in row.index for c in EYE_COLUMNS) or row[list(EYE_COLUMNS)].isna().any():
        return None
    return np.array([[row["left_eye_x"], row["left_eye_y"]], [row["right_eye_x"], row["right_eye_y"]]], np.float64)


def _gt_box(row: pd.Series) -> np.ndarray | None:
    if not all(c in row.index for c in BOX_COLUMNS) or row[list(BOX_COLUMNS)].isna().any():
        return None
    return row[list(BOX_COLUMNS)].to_numpy(np.float64)


def detector_input(det_uint8: np.ndarray, mean=(127.5,) * 3, scale=1 / 127.5) -> np.ndarray:
    return normalize(det_uint8, mean, scale)


def acquire(ds: Dataset, frame: pd.DataFrame, detector: Runner, *, oracle: bool = False,
            score_threshold: float = blazeface.SCORE_THRESHOLD, progress=None,
            recipes: Mapping[str, AlignRecipe] | None = None, upstream=None, condition=None) -> list[Acquired]:
    """Decode, detect, choose and align every row of `frame` (rows of dataset `ds`). Never raises on bad images.

    recipes: chip name -> [align] recipe (default: chip_recipes(), every model manifest's).
    upstream: an harness.upstream.UpstreamChipper; when given, each decoded image also gets the upstream chip
    (BlazeFace's chosen box is its fallback rectangle), timed apart as upstream_ms.
    condition: a harness.camera.conditions.Condition applied to each decoded image before detection (timed apart
    as condition_ms); one that needs the eyes (distance) takes them from the ground truth, else from the reference
    detector on the unmodified image.
    """
    recipes = chip_recipes() if recipes is None else recipes
    eye_recipes = {name: replace(r, points=EYES) for name, r in recipes.items()}
    out = []
    for _, row in frame.iterrows():
        image = row["image"]
        acq = Acquired(sample_id=ds.sample_id(image), dataset=ds.id, image=image, ok=False, fta_reason=None)
        t0 = time.perf_counter_ns()
        try:
            img = decode(ds.path(image))
        except DecodeFailure as exc:
            acq.fta_reason = exc.reason
            acq.times["decode_ms"] = _ms(t0)
            if upstream is not None:
                acq.upstream = {"acquired": False, "fta_reason": exc.reason, "rect_source": None, "rect": None}
            out.append(acq)
            if progress:
                progress()
            continue
        acq.times["decode_ms"] = _ms(t0)
        if condition is not None:
            t0 = time.perf_counter_ns()
            img = _apply_condition(condition, img, acq.sample_id, row, detector, score_threshold)
            acq.times["condition_ms"] = _ms(t0)
        acq.image_size = (int(img.shape[1]), int(img.shape[0]))
        t0 = time.perf_counter_ns()
        boxed, lb = letterbox(img, DETECTOR_SIZE)
        dets = blazeface.decode(detector.run(detector_input(boxed)[None]), lb, score_threshold=score_threshold)
        face = choose_face(dets, (img.shape[1], img.shape[0]))
        acq.times["detect_ms"] = _ms(t0)
        acq.det_input = boxed
        acq.letterbox = (lb.scale_x, lb.scale_y, lb.pad_x, lb.pad_y)
        t0 = time.perf_counter_ns()
        eyes = _gt_eyes(row) if oracle else None
        if eyes is not None:
            acq.chips = {name: align(img, eyes, r) for name, r in eye_recipes.items()}
            acq.ok = True
        elif face is not None:
            acq.chips = {name: align(img, detector_points(face.keypoints, r), r) for name, r in recipes.items()}
            acq.quality = quality.measure(img, face.box, face.eyes)
            acq.det_score = float(face.score)
            acq.ok = True
        else:
            acq.fta_reason = "no_face"
        acq.times["align_ms"] = _ms(t0)
        if upstream is not None:
            t0 = time.perf_counter_ns()
            up = upstream(img, face.box if face is not None else None)
            if up.chip is not None:
                acq.chips[UPSTREAM_CHIP] = up.chip
            acq.upstream = {"acquired": up.chip is not None, "fta_reason": up.fta_reason,
                            "rect_source": up.rect_source, "rect": list(up.rect) if up.rect else None}
            acq.times["upstream_ms"] = _ms(t0)
        out.append(acq)
        if progress:
            progress()
    return out


def _apply_condition(condition, img: np.ndarray, key: str, row: pd.Series, detector: Runner,
                     score_threshold: float) -> np.ndarray:
    eyes = None
    if condition.needs_eyes:
        eyes = _gt_eyes(row)
        if eyes is None:  # the face's eyes in the unmodified image, by the same reference detector
            boxed, lb = letterbox(img, DETECTOR_SIZE)
            face = choose_face(blazeface.decode(detector.run(detector_input(boxed)[None]), lb,
                                                score_threshold=score_threshold), (img.shape[1], img.shape[0]))
            if face is None:
                return img  # no face to place at a distance: the sample fails acquisition as it does unmodified
            eyes = face.eyes
    return condition.apply(img, key=key, eyes=eyes)


def ground_truth(frame: pd.DataFrame) -> dict[str, dict]:
    """image -> {"gt_eyes", "gt_box"} for the detection entries."""
    return {row["image"]: {"gt_eyes": _gt_eyes(row), "gt_box": _gt_box(row)} for _, row in frame.iterrows()}


def save_acquired(acquired: list[Acquired], path: Path, recipes: Mapping[str, AlignRecipe] | None = None) -> None:
    """Pack the shared inputs into one .npz so child processes can memory-load them instead of unpickling.

    One uint8 array per image name: the letterboxed detector input and each recipe's chips (zeros where
    acquisition failed)."""
    recipes = chip_recipes() if recipes is None else recipes
    n = len(acquired)
    det = np.zeros((n, *DETECTOR_SIZE[::-1], 3), np.uint8)
    shapes = {name: (r.size, r.size, 3) for name, r in recipes.items()} | {UPSTREAM_CHIP: (32, 32, 3)}
    for a in acquired:
        for name, chip in a.chips.items():
            shapes.setdefault(name, chip.shape)
    chips = {name: np.zeros((n, *shape), np.uint8) for name, shape in shapes.items()}
    lbs = np.full((n, 4), np.nan)
    for i, a in enumerate(acquired):
        if a.det_input is not None:
            det[i], lbs[i] = a.det_input, a.letterbox
        for name, chip in a.chips.items():
            chips[name][i] = chip
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, **{LETTERBOX: det}, **chips, letterbox_transform=lbs)
    tmp.replace(path)
