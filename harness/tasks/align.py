"""Face alignment: a model's manifest `[align]` recipe -> the chip its authors trained on.

A recipe (`AlignRecipe`, read from the manifest by harness/specs.py) names the points to align, the template they
land on, the padding, the chip size, the interpolation and the anti-aliasing. Two templates, one per upstream:

- "dlib-5pt": dlib's face chip (`dlib.get_face_chip(img, shape, size, padding)`; `get_face_chip_details` and
  `chip_details` in dlib/image_transforms/interpolation.h). dlib fits `find_similarity_transform` (Umeyama 1991)
  from the padded template onto ALL the shape's points (for the 5-point model: the four eye corners and the base of
  the nose; moving the nose point moves the chip), takes the fit's scale and angle, and extracts a
  (size * scale)-wide rectangle centred where the fit sends the chip centre, with chip pixel 0 on the rectangle's
  first pixel and pixel size - 1 on its last. That is slightly larger than the fit itself
  ((size * scale - 1) / (size - 1) image px per chip px) and half a pixel off; we reproduce it, since the gender
  model was trained on such chips. Point names: dlib's five (`right_eye_outer`, `right_eye_inner`,
  `left_eye_outer`, `left_eye_inner`, `nose_base`: parts 0..4, image-right eye first) and the points a detector
  gives in the same unit face frame: `left_eye`/`right_eye` (means of each eye's two corners), `nose_tip` and
  `mouth_centre` (dlib's 68-point mean face, parts 30 and the mean of 48/54, as used by get_face_chip_details).
- "arcface-112": InsightFace's `norm_crop` (insightface/utils/face_align.py): the 5-point ArcFace template at
  112 px, a least-squares similarity from the image points onto it, `cv2.warpAffine` with it. Point names: the
  two eye centres, `nose_tip`, `mouth_centre` (mean of the template's mouth corners). No padding.

Left/right are image sides everywhere (BlazeFace keypoint 0 and the datasets' `left_eye_x` are the eye on the
image's left). The pipeline has BlazeFace's eye centres, nose tip and mouth centre (DETECTOR_POINTS); the dlib
names serve upstream conformance (tests/unit/test_align_dlib_conformance.py).

Which detector points stand in for dlib's five (the gender model's recipe): BlazeFace has no eye corners and no
nose base. Candidates: the eye centres alone (dlib's eye geometry, but none of its vertical anchor), or with the
nose tip and mouth centre placed on dlib's 68-point mean face (the frame the 5-point template comes from). Measured
against dlib's own chips (dlib's 5-point predictor + get_face_chip) on the shared faces, all four points came
closest: chip geometry, pixel difference, and the gender model's decisions (95.4% agreement on FairFace against
92.3% for the eyes alone). docs/metrics.md ("Alignment") has the figures.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Mapping

import numpy as np

from harness.errors import InputError
from harness.tasks.resample import ANTIALIAS, INTERPOLATIONS, warp_chip

# BlazeFace keypoints 0..3, in order (the ears, 4 and 5, are too unstable off-frontal to align on).
DETECTOR_POINTS = ("left_eye", "right_eye", "nose_tip", "mouth_centre")


@dataclass(frozen=True)
class Template:
    """Named points in a template frame. unit=True: dlib's unit face frame (padding applies); else pixels at base."""

    name: str
    points: Mapping[str, tuple[float, float]]
    unit: bool
    base: int = 0  # chip side the pixel template is drawn for (unit templates: 0)

    def at(self, names: tuple[str, ...], size: int, padding: float) -> np.ndarray:
        """[N, 2] chip pixel coordinates of the named points for a size x size chip with this padding."""
        pts = np.array([self.points[n] for n in names], np.float64)
        if self.unit:
            # get_face_chip_details: p = (padding + p) / (2 * padding + 1) * size
            return (padding + pts) / (2 * padding + 1) * size
        return pts * (size / self.base)


# dlib get_face_chip_details, 5-point shape (parts 0..4), unit face frame.
_DLIB5 = {
    "right_eye_outer": (0.8595674595992, 0.2134981538014),
    "right_eye_inner": (0.6460604764104, 0.2289674387677),
    "left_eye_outer": (0.1205750620789, 0.2137274526848),
    "left_eye_inner": (0.3340850613712, 0.2290642403242),
    "nose_base": (0.4901123135679, 0.6277975316475),
}
DLIB_5PT = Template("dlib-5pt", MappingProxyType({
    **_DLIB5,
    "left_eye": tuple(np.mean([_DLIB5["left_eye_outer"], _DLIB5["left_eye_inner"]], axis=0)),
    "right_eye": tuple(np.mean([_DLIB5["right_eye_outer"], _DLIB5["right_eye_inner"]], axis=0)),
    "nose_tip": (0.490127, 0.515625),                               # 68-point mean face, part 30
    "mouth_centre": ((0.254149 + 0.726104) / 2, 0.780233),          # mean of parts 48 and 54
}), unit=True)

# InsightFace arcface_dst (112 x 112): eyes, nose tip, mouth corners.
ARCFACE_112 = Template("arcface-112", MappingProxyType({
    "left_eye": (38.2946, 51.6963),
    "right_eye": (73.5318, 51.5014),
    "nose_tip": (56.0252, 71.7366),
    "mouth_centre": ((41.5493 + 70.7299) / 2, (92.3655 + 92.2041) / 2),
}), unit=False, base=112)

TEMPLATES = {t.name: t for t in (DLIB_5PT, ARCFACE_112)}


@dataclass(frozen=True)
class AlignRecipe:
    """How one model's chip is made (a manifest's [align] table plus its [input] size)."""

    points: tuple[str, ...]
    template: str
    size: int
    padding: float = 0.0
    interpolation: str = "bilinear"
    antialias: str = "none"

    def __post_init__(self) -> None:
        t = TEMPLATES.get(self.template)
        if t is None:
            raise InputError(f"align: template '{self.template}' is not one of {', '.join(TEMPLATES)}")
        unknown = [p for p in self.points if p not in t.points]
        if unknown:
            raise InputError(f"align: template {t.name} has no point(s) {', '.join(unknown)}; "
                             f"it has {', '.join(t.points)}")
        if len(set(self.points)) != len(self.points) or len(self.points) < 2:
            raise InputError(f"align: points must name at least 2 distinct points, got {list(self.points)}")
        if self.size < 2:
            raise InputError(f"align: chip size {self.size} must be at least 2")
        if not t.unit and self.padding != 0:
            raise InputError(f"align: template {t.name} is drawn in pixels and takes no padding (got {self.padding})")
        if self.padding < 0:
            raise InputError(f"align: padding {self.padding} must be >= 0")
        if self.interpolation not in INTERPOLATIONS:
            raise InputError(f"align: interpolation '{self.interpolation}' is not one of {', '.join(INTERPOLATIONS)}")
        if self.antialias not in ANTIALIAS:
            raise InputError(f"align: antialias '{self.antialias}' is not one of {', '.join(ANTIALIAS)}")

    @property
    def target(self) -> np.ndarray:
        """[N, 2] where the recipe's points land in the chip (template frame, before dlib's rectangle rounding)."""
        return TEMPLATES[self.template].at(self.points, self.size, self.padding)


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (rotation, uniform scale, translation) mapping src [N, 2] onto dst [N, 2] -> [2, 3].

    Umeyama (1991) without reflection: the estimator of dlib's find_similarity_transform and of InsightFace's
    norm_crop (skimage SimilarityTransform.estimate); exact for two points.
    """
    src, dst = np.asarray(src, np.float64), np.asarray(dst, np.float64)
    if src.shape != dst.shape or src.ndim != 2 or src.shape[1] != 2 or len(src) < 2:
        raise InputError(f"align: need matching [N>=2, 2] point sets, got {src.shape} and {dst.shape}")
    if not (np.isfinite(src).all() and np.isfinite(dst).all()):
        raise InputError("align: points are not finite")
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


def _invert(m: np.ndarray) -> np.ndarray:
    lin = np.linalg.inv(m[:, :2])
    return np.hstack([lin, (-lin @ m[:, 2])[:, None]])


def chip_to_image(recipe: AlignRecipe, pts: np.ndarray) -> np.ndarray:
    """[2, 3] map from chip pixel (x, y) to the image point it samples, for image points pts [N, 2] in
    recipe.points order."""
    pts = np.asarray(pts, np.float64)
    if pts.shape != (len(recipe.points), 2):
        raise InputError(f"align: recipe takes {len(recipe.points)} points ({', '.join(recipe.points)}), "
                         f"got an array of shape {pts.shape}")
    if not np.isfinite(pts).all():
        raise InputError("align: points are not finite")
    if np.ptp(pts, axis=0).max() < 1e-6:
        raise InputError("align: image points coincide; no transform exists")
    size = recipe.size
    if recipe.template == DLIB_5PT.name:
        # chip_details(chip_points, img_points, dims): fit template -> image; keep its scale, angle and where it
        # sends the chip centre; the chip spans a centred_drect of side size * scale (inclusive corners).
        fit = similarity_transform(recipe.target, pts)
        scale = float(np.hypot(fit[0, 0], fit[1, 0]))
        rot = fit[:, :2] / scale
        centre = fit @ np.array([size / 2, size / 2, 1.0])
        spacing = (size * scale - 1) / (size - 1)
        lin = rot * spacing
        return np.hstack([lin, (centre - lin @ np.full(2, (size - 1) / 2))[:, None]])
    # norm_crop: fit image -> template, warpAffine samples chip pixels through its inverse.
    return _invert(similarity_transform(pts, recipe.target))


def align(img: np.ndarray, pts: np.ndarray, recipe: AlignRecipe) -> np.ndarray:
    """The recipe's size x size uint8 chip from image points pts [N, 2] (recipe.points order)."""
    return warp_chip(img, chip_to_image(recipe, pts), recipe.size, recipe.antialias)


def detector_points(keypoints: np.ndarray, recipe: AlignRecipe) -> np.ndarray:
    """The recipe's points picked from BlazeFace keypoints [>=4, 2] (DETECTOR_POINTS order)."""
    missing = [p for p in recipe.points if p not in DETECTOR_POINTS]
    if missing:
        raise InputError(f"align: the detector gives {', '.join(DETECTOR_POINTS)}, not {', '.join(missing)}")
    return np.asarray(keypoints, np.float64)[[DETECTOR_POINTS.index(p) for p in recipe.points]]
