"""Face-image quality per image, measured on the face the detector chose (ISO/IEC 29794-5 names these components;
OFIQ, its reference implementation, computes them with its own models).

- brightness: median luma (BT.601 Y) over skin pixels of the face box, the measure Wu et al. ("Face recognition
  accuracy across demographics: shining a light into the problem", CVPR-W 2023) use to show that face-region
  brightness, not skin tone alone, drives error; skin by the YCrCb rule of Chai & Ngan (1999):
  133 <= Cr <= 173, 77 <= Cb <= 127 (the whole box when fewer than 5% of its pixels pass);
- contrast: RMS contrast, the standard deviation of luma over the face box;
- sharpness: variance of the Laplacian of luma over the face box (Pech-Pacheco et al. 2000);
- iod_px: distance between the eyes in pixels of the captured image.
OFIQ's unified score comes from the `ofiq` Python package with its model files when installed; otherwise it is
reported as unavailable with the reason, never estimated.
"""

from __future__ import annotations

import cv2
import numpy as np

MIN_SKIN_SHARE = 0.05


def _ofiq_reason() -> str:
    try:
        import ofiq  # noqa: F401  (python-ofiq; needs its model files)
    except ImportError:
        return "unavailable: the ofiq package is not installed"
    return "unavailable: the ofiq package is installed but this harness does not load its models yet"


OFIQ = _ofiq_reason()


def measure(img: np.ndarray, box: np.ndarray, eyes: np.ndarray | None) -> dict:
    """Quality of the face in `box` ([x0, y0, x1, y1] in image pixels) of RGB uint8 `img`."""
    h, w = img.shape[:2]
    x0, y0, x1, y1 = (int(round(v)) for v in box)
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
    if x1 - x0 < 2 or y1 - y0 < 2:
        return {"brightness": None, "contrast": None, "sharpness": None, "skin_share": None,
                "iod_px": None, "ofiq": OFIQ, "reason": "face box outside the image"}
    face = img[y0:y1, x0:x1]
    ycrcb = cv2.cvtColor(face, cv2.COLOR_RGB2YCrCb)
    y, cr, cb = ycrcb[..., 0], ycrcb[..., 1], ycrcb[..., 2]
    skin = (cr >= 133) & (cr <= 173) & (cb >= 77) & (cb <= 127)
    share = float(skin.mean())
    luma = y[skin] if share >= MIN_SKIN_SHARE else y.ravel()
    iod = float(np.linalg.norm(np.asarray(eyes[0], float) - np.asarray(eyes[1], float))) if eyes is not None else None
    return {"brightness": float(np.median(luma)), "contrast": float(y.std()),
            "sharpness": float(cv2.Laplacian(y, cv2.CV_64F).var()), "skin_share": share, "iod_px": iod,
            "ofiq": OFIQ}
