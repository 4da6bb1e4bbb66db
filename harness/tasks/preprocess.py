"""Image -> model input tensor, described by a small `InputSpec` that a model manifest (TOML) can hold.

Every model here takes an RGB uint8 image and wants `(x - mean) * scale` in float32, at a fixed square size,
in NHWC or NCHW. The detector sees the WHOLE image letterboxed (aspect kept, padded to square) so that its
outputs map back to image pixels through the recorded `Letterbox`; aligned chips arrive at the right size
already, where the letterbox is the identity.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from harness.errors import InputError

LAYOUTS = ("NHWC", "NCHW")


@dataclass(frozen=True)
class InputSpec:
    """How to turn an RGB uint8 image into one model input: size (w, h), (x - mean) * scale, layout."""

    size: tuple[int, int]
    mean: tuple[float, float, float]
    scale: float
    layout: str = "NHWC"

    def __post_init__(self) -> None:
        if self.layout not in LAYOUTS:
            raise InputError(f"input spec: layout '{self.layout}' is not one of {', '.join(LAYOUTS)}")
        if len(self.size) != 2 or min(self.size) <= 0:
            raise InputError(f"input spec: size {self.size} must be two positive integers (w, h)")
        if len(self.mean) != 3:
            raise InputError(f"input spec: mean {self.mean} must have 3 values (R, G, B)")

    @classmethod
    def from_mapping(cls, m: Mapping[str, Any], where: str = "input spec") -> "InputSpec":
        """Build from a manifest table: size = [w, h] or n, mean = [r, g, b] or v, scale = float, layout = "NHWC"."""
        try:
            size = m["size"]
            size = (int(size), int(size)) if np.isscalar(size) else (int(size[0]), int(size[1]))
            mean = m.get("mean", 0.0)
            mean = (float(mean),) * 3 if np.isscalar(mean) else tuple(float(v) for v in mean)
            return cls(size=size, mean=mean, scale=float(m.get("scale", 1.0)), layout=str(m.get("layout", "NHWC")))
        except (KeyError, TypeError, ValueError, IndexError) as e:
            raise InputError(f"{where}: bad input spec {dict(m)!r}: {e}") from None


# The three models' documented inputs (docs: /work/shared/MODELS.md).
BLAZEFACE_INPUT = InputSpec(size=(128, 128), mean=(127.5,) * 3, scale=1 / 127.5)          # (x/127.5) - 1
MOBILEFACENET_INPUT = InputSpec(size=(112, 112), mean=(127.5,) * 3, scale=1 / 128)        # (x-127.5)/128
GENDER_DLIB_INPUT = InputSpec(size=(32, 32), mean=(122.78, 117.00, 104.30), scale=1 / 256, layout="NCHW")


@dataclass(frozen=True)
class Letterbox:
    """Image px -> input px: p_in = p_img * (scale_x, scale_y) + (pad_x, pad_y). Kept so detections map back."""

    scale_x: float
    scale_y: float
    pad_x: float
    pad_y: float

    def to_image(self, pts: np.ndarray) -> np.ndarray:
        """Map input-frame points [..., 2] (x, y) back to image pixels."""
        return (np.asarray(pts, dtype=np.float64) - (self.pad_x, self.pad_y)) / (self.scale_x, self.scale_y)


def letterbox(img: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, Letterbox]:
    """Resize keeping the aspect ratio, centre it and pad with black to `size` (w, h), as MediaPipe's FIT mode."""
    import cv2  # here, not at the top: the device side (harness/device/video.py) imports Letterbox without opencv

    h, w = img.shape[:2]
    out_w, out_h = size
    scale = min(out_w / w, out_h / h)
    new_w, new_h = max(1, round(w * scale)), max(1, round(h * scale))
    if (new_w, new_h) != (w, h):
        # INTER_AREA: the detector downscales whole photos (640 -> 128); area averaging avoids aliasing.
        img = cv2.resize(img, (new_w, new_h), interpolation=cv2.INTER_AREA)
    top, left = (out_h - new_h) // 2, (out_w - new_w) // 2
    padded = cv2.copyMakeBorder(img, top, out_h - new_h - top, left, out_w - new_w - left,
                                cv2.BORDER_CONSTANT, value=(0, 0, 0))
    # Per-axis scale after rounding keeps the back-mapping faithful to the pixels the model saw.
    return padded, Letterbox(scale_x=new_w / w, scale_y=new_h / h, pad_x=float(left), pad_y=float(top))


def normalize(img: np.ndarray, mean: tuple[float, ...] = (127.5,) * 3, scale: float = 1 / 127.5) -> np.ndarray:
    """(x - mean) * scale in float32, per channel."""
    return ((img.astype(np.float32) - np.asarray(mean, dtype=np.float32)) * np.float32(scale)).astype(np.float32)


def to_layout(x: np.ndarray, layout: str) -> np.ndarray:
    """HWC or NHWC array -> batched NHWC or NCHW (contiguous, as runtimes want)."""
    if x.ndim == 3:
        x = x[None]
    if layout == "NCHW":
        x = x.transpose(0, 3, 1, 2)
    elif layout != "NHWC":
        raise InputError(f"layout '{layout}' is not one of {', '.join(LAYOUTS)}")
    return np.ascontiguousarray(x)


def preprocess(img: np.ndarray, spec: InputSpec) -> tuple[np.ndarray, Letterbox]:
    """RGB uint8 image (H, W, 3) -> ([1, ...] float32 tensor in spec.layout, image->input transform)."""
    if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
        raise InputError(f"preprocess: expected an RGB uint8 image (H, W, 3), got {img.dtype} {img.shape}")
    boxed, transform = letterbox(img, spec.size)
    return to_layout(normalize(boxed, spec.mean, spec.scale), spec.layout), transform


def preprocess_batch(chips: list[np.ndarray], spec: InputSpec) -> np.ndarray:
    """Several chips already at spec.size -> one [N, ...] tensor (the batched models take aligned chips)."""
    return np.concatenate([preprocess(c, spec)[0] for c in chips], axis=0)
