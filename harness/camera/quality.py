"""Face-image quality per image, measured on the face the detector chose (ISO/IEC 29794-5 names these components;
OFIQ, its reference implementation, computes them with its own models).

- brightness: median luma (BT.601 Y) over skin pixels of the face box, the measure Wu et al. ("Face recognition
  accuracy across demographics: shining a light into the problem", CVPR-W 2023) use to show that face-region
  brightness, not skin tone alone, drives error; skin by the YCrCb rule of Chai & Ngan (1999):
  133 <= Cr <= 173, 77 <= Cb <= 127 (the whole box when fewer than 5% of its pixels pass);
- contrast: RMS contrast, the standard deviation of luma over the face box;
- sharpness: variance of the Laplacian of luma over the face box (Pech-Pacheco et al. 2000);
- iod_px: distance between the eyes in pixels of the captured image.
- OFIQ (ISO/IEC 29794-5's reference implementation, BSI-OFIQ/OFIQ-Project, through the `python-ofiq` wheel of
  the `quality` extra): the unified quality score and every component's scalar score (0..100) of
  `OFIQ.vector_quality`, on the whole captured image (OFIQ finds and aligns the face itself). Its models are read
  from `ofiq.resolve_data_dir()` (OFIQ_DATA_DIR, else ~/.ofiq/data; `python-ofiq setup` downloads them); one
  OFIQ per process. Without the wheel or its models every sample's OFIQ fields are absent and the run records
  why ("unavailable: ..."), never an estimate.
"""

from __future__ import annotations

import functools
import math
import os
import re

import cv2
import numpy as np

MIN_SKIN_SHARE = 0.05
OFIQ_CONFIG = "ofiq_config.jaxn"  # what `python-ofiq setup` writes beside models/ (ofiq/setup.py)
OFIQ_UNIFIED = "UnifiedQualityScore"
_MEASURE_NAME = re.compile(r"[A-Z][A-Za-z0-9]{0,63}")  # OFIQ's measure names (CamelCase); anything else is dropped


@functools.lru_cache(maxsize=1)
def ofiq_engine() -> tuple[object | None, str]:
    """(an OFIQ instance, or None; the status line the run records), built once per process.

    python-ofiq's constructor raises ofiq.ConfigError ("Initialization failed: MissingConfigFileError: Invalid path
    to config file: '<dir>/ofiq_config.jaxn'") when its data directory is empty: that, or a directory without
    its config or models/, is "models not found"; any other OFIQError names itself.
    """
    try:
        import ofiq
    except ImportError:
        return None, "unavailable: the ofiq package is not installed (pip install '.[quality]')"
    data_dir = ofiq.resolve_data_dir()
    present = os.path.isfile(os.path.join(data_dir, OFIQ_CONFIG)) and os.path.isdir(os.path.join(data_dir, "models"))
    try:
        engine = ofiq.OFIQ(data_dir)
    except ofiq.OFIQError as exc:
        if not present:
            return None, f"unavailable: OFIQ models not found in {data_dir} (python-ofiq setup downloads them)"
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
        return None, f"unavailable: OFIQ could not load its models from {data_dir}: {first}"
    return engine, (f"OFIQ {getattr(ofiq, '__ofiq_version__', '?')} (python-ofiq "
                    f"{getattr(ofiq, '__version__', '?')}), models in {data_dir}")


def ofiq_status() -> str:
    """The run's OFIQ status line: the version and data directory, or why its scores are absent."""
    return ofiq_engine()[1]


def _snake(name: str) -> str:
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name).lower()


def ofiq_scores(img: np.ndarray) -> dict:
    """OFIQ's scores of RGB uint8 `img`: {"ofiq": unified score, "ofiq_<measure>": component, ...} (scalar scores,
    0..100; a component OFIQ could not compute is None), or {} when OFIQ is unavailable. A face OFIQ does not find
    (its QualityError family) gives {"ofiq": None, "ofiq_error": <the error's class name>}. Measure names are
    OFIQ's output, so only CamelCase names are kept, and only finite numbers."""
    engine, _status = ofiq_engine()
    if engine is None:
        return {}
    import ofiq

    try:
        vec = engine.vector_quality(np.ascontiguousarray(img, dtype=np.uint8))
    except ofiq.QualityError as exc:
        return {"ofiq": None, "ofiq_error": type(exc).__name__}
    out: dict = {"ofiq": None}
    for name, value in (vec or {}).items():
        if not isinstance(name, str) or not _MEASURE_NAME.fullmatch(name):
            continue
        v = float(value) if isinstance(value, (int, float)) and math.isfinite(float(value)) else None
        if name == OFIQ_UNIFIED:
            out["ofiq"] = v
        else:
            out[f"ofiq_{_snake(name)}"] = v
    return out


def measure(img: np.ndarray, box: np.ndarray, eyes: np.ndarray | None) -> dict:
    """Quality of the face in `box` ([x0, y0, x1, y1] in image pixels) of RGB uint8 `img`."""
    h, w = img.shape[:2]
    x0, y0, x1, y1 = (int(round(v)) for v in box)
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
    if x1 - x0 < 2 or y1 - y0 < 2:
        return {"brightness": None, "contrast": None, "sharpness": None, "skin_share": None,
                "iod_px": None, "reason": "face box outside the image", **ofiq_scores(img)}
    face = img[y0:y1, x0:x1]
    ycrcb = cv2.cvtColor(face, cv2.COLOR_RGB2YCrCb)
    y, cr, cb = ycrcb[..., 0], ycrcb[..., 1], ycrcb[..., 2]
    skin = (cr >= 133) & (cr <= 173) & (cb >= 77) & (cb <= 127)
    share = float(skin.mean())
    luma = y[skin] if share >= MIN_SKIN_SHARE else y.ravel()
    iod = float(np.linalg.norm(np.asarray(eyes[0], float) - np.asarray(eyes[1], float))) if eyes is not None else None
    return {"brightness": float(np.median(luma)), "contrast": float(y.std()),
            "sharpness": float(cv2.Laplacian(y, cv2.CV_64F).var()), "skin_share": share, "iod_px": iod,
            **ofiq_scores(img)}
