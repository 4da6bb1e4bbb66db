"""Face alignment: similarity transform from detector (or ground-truth) points to a model's chip template.

Points, in this order everywhere: image-left eye, image-right eye, nose tip, mouth centre (BlazeFace keypoints
0..3). `align` uses the first len(src) template rows, so eyes-only (oracle mode) and 4-point alignment share one
template. The transform is the least-squares similarity (Umeyama 1991, no reflection), the same estimator as
dlib's find_similarity_transform and InsightFace's norm_crop; deterministic, unlike RANSAC/LMEDS, and exact for
two points.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from harness.errors import InputError, UnknownIdError
from harness.tasks.blazeface import Detection

ALIGN_POINTS = 4  # eyes, nose tip, mouth centre; the ears (4, 5) are too unstable off-frontal


@dataclass(frozen=True)
class Template:
    """Where the 4 points land in a chip of size x size pixels."""

    name: str
    size: int
    points: np.ndarray  # [4, 2]: image-left eye, image-right eye, nose tip, mouth centre


def _arcface_112() -> Template:
    # InsightFace's 5-point template; the mouth centre is the mean of its two mouth corners.
    pts = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
                    [(41.5493 + 70.7299) / 2, (92.3655 + 92.2041) / 2]])
    return Template("arcface-112", 112, pts)


# dlib get_face_chip_details (image_transforms/interpolation.h), unit face frame:
# the 5-point model's template: eye corners (outer, inner) per eye, then the bottom of the nose ...
_DLIB_5PT_EYE_CORNERS = np.array([[0.1205750620789, 0.2137274526848], [0.3340850613712, 0.2290642403242],   # image-left
                                  [0.8595674595992, 0.2134981538014], [0.6460604764104, 0.2289674387677]])  # image-right
# ... and the 68-point mean face (same frame) for the points BlazeFace gives instead: nose tip = part 30,
# mouth centre = mean of the mouth corners, parts 48 and 54.
_DLIB_MEAN_NOSE_TIP = np.array([0.490127, 0.515625])
_DLIB_MEAN_MOUTH_CENTRE = np.array([(0.254149 + 0.726104) / 2, (0.780233 + 0.780233) / 2])


def dlib_chip_template(size: int = 32, padding: float = 0.2) -> Template:
    """dlib's 5-point face chip (as dlib.get_face_chip(img, shape, size, padding)) in BlazeFace's 4 points.

    dlib maps unit-frame point p to (padding + p) / (1 + 2 * padding) * size. Eye centres are the means of each
    eye's two corners; at 32 px with padding 0.2 they land at (9.77, 9.63) and (21.78, 9.62).
    """
    unit = np.vstack([_DLIB_5PT_EYE_CORNERS[:2].mean(axis=0), _DLIB_5PT_EYE_CORNERS[2:].mean(axis=0),
                      _DLIB_MEAN_NOSE_TIP, _DLIB_MEAN_MOUTH_CENTRE])
    return Template(f"dlib-chip-{size}-pad{padding:g}", size, (padding + unit) / (1 + 2 * padding) * size)


ARCFACE_112 = _arcface_112()
DLIB_CHIP_32 = dlib_chip_template(32, 0.2)


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (rotation, uniform scale, translation) mapping src [N, 2] onto dst [N, 2] -> [2, 3]."""
    src, dst = np.asarray(src, np.float64), np.asarray(dst, np.float64)
    if src.shape != dst.shape or src.ndim != 2 or src.shape[1] != 2 or len(src) < 2:
        raise InputError(f"align: need matching [N>=2, 2] point sets, got {src.shape} and {dst.shape}")
    mu_s, mu_d = src.mean(axis=0), dst.mean(axis=0)
    s0, d0 = src - mu_s, dst - mu_d
    var_s = (s0 ** 2).sum() / len(src)
    if var_s <= 1e-12:
        raise InputError("align: source points coincide; no transform exists")
    u, sig, vt = np.linalg.svd(d0.T @ s0 / len(src))
    # Force a proper rotation: a reflection would mirror the face.
    fix = np.diag([1.0, np.sign(np.linalg.det(u) * np.linalg.det(vt)) or 1.0])
    rot = u @ fix @ vt
    scale = float(np.trace(np.diag(sig) @ fix)) / var_s
    return np.hstack([scale * rot, (mu_d - scale * rot @ mu_s)[:, None]])


def align(img: np.ndarray, src_pts: np.ndarray, template: Template, size: int | None = None) -> np.ndarray:
    """Warp img so src_pts [N, 2] (N = 2 eyes or 4 points, in template order) land on the template -> chip.

    size: chip side in px; the template is scaled when it differs from template.size.
    """
    src_pts = np.asarray(src_pts, np.float64)
    if not 2 <= len(src_pts) <= len(template.points):
        raise InputError(f"align: {len(src_pts)} points given; template {template.name} takes 2..{len(template.points)}")
    size = size or template.size
    dst = template.points[: len(src_pts)] * (size / template.size)
    m = similarity_transform(src_pts, dst)
    return cv2.warpAffine(img, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def align_detection(img: np.ndarray, det: Detection, template: Template, size: int | None = None) -> np.ndarray:
    """Chip from a BlazeFace detection's eyes, nose tip and mouth centre."""
    return align(img, det.keypoints[:ALIGN_POINTS], template, size)


def align_oracle(img: np.ndarray, left_eye: tuple[float, float], right_eye: tuple[float, float],
                 template: Template, size: int | None = None) -> np.ndarray:
    """Chip from ground-truth eye centres only (image-left eye first), e.g. London labels.csv left_eye_x/y."""
    return align(img, np.array([left_eye, right_eye], np.float64), template, size)


# Manifest [input].resize values that name an alignment ("letterbox" is the detector's, handled by preprocess).
ALIGNMENTS = ("align-arcface", "align-dlib-chip")


def template_for(resize: str, size: int) -> Template:
    """The template a model manifest's [input].resize names, at the model's input size."""
    if resize == "align-arcface":
        return ARCFACE_112 if size == ARCFACE_112.size else Template(
            f"arcface-{size}", size, ARCFACE_112.points * (size / ARCFACE_112.size))
    if resize == "align-dlib-chip":
        return dlib_chip_template(size, 0.2)
    raise UnknownIdError("alignment", resize, ALIGNMENTS)
