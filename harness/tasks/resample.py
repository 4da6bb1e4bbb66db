"""Sampling a chip from an image through a chip->image affine map, with the anti-aliasing a recipe names.

`warp_chip(img, chip_to_image, size, antialias)` samples chip pixel (x, y) at image point A @ (x, y, 1):

- "none": one bilinear `cv2.warpAffine` straight from the full image (InsightFace's `norm_crop`). At a large
  downscale (a 6x median on FairFace at 32 px) this is close to nearest-neighbour sampling and aliases.
- "area": the region the chip covers is first shrunk with `cv2.INTER_AREA` (pixel-area averaging) to about one
  image pixel per chip pixel, then sampled bilinearly.
- "pyramid": dlib's `extract_image_chips` (dlib/image_transforms/interpolation.h, dlib 19.x-20.x): crop to the chip's
  bounding box grown by a border, build a `pyramid_down<2>` image pyramid (image_pyramid.h, `pyramid_down_2_1`:
  separable [1 4 6 4 1] filter, every second row and column, integer sums truncated by /256) until one more level
  would leave fewer source pixels than chip pixels, then sample that level with dlib's `interpolate_bilinear`
  (all four neighbours inside, else black; the result truncated to uint8, as dlib's `assign_pixel` does).
  Level coordinates follow dlib's own `point_down(p) = p / 2 - (1.25, 0.75)`, so a chip matches dlib's pixel for
  pixel (tests/unit/test_align_dlib_conformance.py measures it against `dlib.get_face_chip`).

Outside the image every mode gives black, as both upstreams do (dlib's `black_background`, InsightFace's
`borderValue=0`).
"""

from __future__ import annotations

import math

import numpy as np

from harness.errors import InputError

ANTIALIAS = ("none", "area", "pyramid")
INTERPOLATIONS = ("bilinear",)

# pyramid_down_2_1::point_down: level-(k+1) coordinates of a level-k point.
_DLIB_DOWN_OFFSET = np.array([1.25, 0.75])


def _corners(a: np.ndarray, size: int) -> np.ndarray:
    """Image points of the chip's corner pixel centres [4, 2]."""
    s = size - 1
    pts = np.array([[0, 0, 1], [s, 0, 1], [0, s, 1], [s, s, 1]], np.float64)
    return pts @ a.T


def pixel_spacing(a: np.ndarray) -> float:
    """Image pixels per chip pixel of a similarity map (length of its first column)."""
    return float(math.hypot(a[0, 0], a[1, 0]))


def _pyramid_down(img: np.ndarray) -> np.ndarray:
    """dlib `pyramid_down_2_1` on an RGB uint8 image: output (r, c) is the [1 4 6 4 1]^2 / 256 weighted sum of
    input rows 2r..2r+4 and columns 2c..2c+4, truncated; (rows-3)//2 x (cols-3)//2; empty at 8 px or less."""
    rows, cols = img.shape[:2]
    if rows <= 8 or cols <= 8:
        return np.zeros((0, 0, img.shape[2]), np.uint8)
    v = img.astype(np.uint32)
    nc, nr = (cols - 3) // 2, (rows - 3) // 2
    taps = (1, 4, 6, 4, 1)
    row = sum(w * v[:, k:k + 2 * nc:2] for k, w in enumerate(taps))
    col = sum(w * row[k:k + 2 * nr:2] for k, w in enumerate(taps))
    return (col // 256).astype(np.uint8)


def _dlib_bilinear(src: np.ndarray, a: np.ndarray, size: int) -> np.ndarray:
    """dlib `transform_image` with `interpolate_bilinear` and a black background, on a size x size chip."""
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float64)
    px = a[0, 0] * xs + a[0, 1] * ys + a[0, 2]
    py = a[1, 0] * xs + a[1, 1] * ys + a[1, 2]
    left, top = np.floor(px).astype(np.int64), np.floor(py).astype(np.int64)
    h, w = src.shape[:2]
    inside = (left >= 0) & (top >= 0) & (left + 1 < w) & (top + 1 < h)
    out = np.zeros((size, size, src.shape[2]), np.uint8)
    if not inside.any():
        return out
    l, t = left[inside], top[inside]
    fx, fy = (px[inside] - l)[:, None], (py[inside] - t)[:, None]
    s = src.astype(np.float64)
    val = (1 - fy) * ((1 - fx) * s[t, l] + fx * s[t, l + 1]) + fy * ((1 - fx) * s[t + 1, l] + fx * s[t + 1, l + 1])
    out[inside] = np.clip(val, 0, 255).astype(np.uint8)  # truncation, as dlib's static_cast
    return out


def _warp_pyramid(img: np.ndarray, a: np.ndarray, size: int) -> np.ndarray:
    """dlib extract_image_chips for one square chip whose pixels map to the image through `a`."""
    # The chip's extraction rectangle is (spacing * (size - 1) + 1) px wide (dlib drectangle, inclusive). Depth:
    # one rect_down, then one more level per halving that still leaves more source pixels than chip pixels.
    width = pixel_spacing(a) * (size - 1) + 1
    depth, grow = 0, 2.0
    width = (width + 1) / 2
    while width * width > size * size:
        width = (width + 1) / 2
        depth += 1
        grow = grow * 2 + 2
    h, w = img.shape[:2]
    corners = _corners(a, size)
    lo = np.maximum(corners.min(axis=0) - grow, 0.0)
    hi = np.minimum(corners.max(axis=0) + grow, (w - 1.0, h - 1.0))
    if (lo > hi).any():
        return np.zeros((size, size, img.shape[2]), np.uint8)
    x0, y0 = (int(math.floor(v + 0.5)) for v in lo)  # drectangle -> rectangle rounds each side
    x1, y1 = (int(math.floor(v + 0.5)) for v in hi)
    src = img[y0:y1 + 1, x0:x1 + 1]
    local = a.copy()
    local[:, 2] -= (x0, y0)
    # dlib picks the level from the bounding-box-local rectangle; downsamples = level + 1 = depth for a square chip.
    for _ in range(depth):
        src = _pyramid_down(src)
        local = local / 2.0
        local[:, 2] -= _DLIB_DOWN_OFFSET
    return _dlib_bilinear(src, local, size)


def _warp_area(img: np.ndarray, a: np.ndarray, size: int) -> np.ndarray:
    spacing = pixel_spacing(a)
    if spacing <= 1.0:
        return _warp_none(img, a, size)
    h, w = img.shape[:2]
    corners = _corners(a, size)
    x0, y0 = np.maximum(np.floor(corners.min(axis=0)).astype(int) - 2, 0)
    x1, y1 = np.minimum(np.ceil(corners.max(axis=0)).astype(int) + 2, (w - 1, h - 1))
    if x0 > x1 or y0 > y1:
        return np.zeros((size, size, img.shape[2]), np.uint8)
    crop = img[y0:y1 + 1, x0:x1 + 1]
    cw, ch = crop.shape[1], crop.shape[0]
    nw, nh = max(1, round(cw / spacing)), max(1, round(ch / spacing))
    import cv2  # host-side only: specs import this module's recipe names, and the device worker imports specs

    small = cv2.resize(crop, (nw, nh), interpolation=cv2.INTER_AREA)
    # cv2.resize pixel centres: small = (crop + 0.5) * (n / c) - 0.5, per axis.
    fx, fy = nw / cw, nh / ch
    local = a.copy()
    local[:, 2] -= (x0, y0)
    local = np.diag([fx, fy]) @ local
    local[:, 2] += (0.5 * fx - 0.5, 0.5 * fy - 0.5)
    return _warp_none(small, local, size)


def _warp_none(img: np.ndarray, a: np.ndarray, size: int) -> np.ndarray:
    import cv2

    return cv2.warpAffine(img, a, (size, size), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def warp_chip(img: np.ndarray, chip_to_image: np.ndarray, size: int, antialias: str) -> np.ndarray:
    """A size x size uint8 chip: chip pixel (x, y) is the image sampled at chip_to_image @ (x, y, 1)."""
    if img.ndim != 3 or img.dtype != np.uint8:
        raise InputError(f"align: expected an RGB uint8 image (H, W, 3), got {img.dtype} {img.shape}")
    a = np.asarray(chip_to_image, np.float64)
    if antialias == "pyramid":
        return _warp_pyramid(img, a, size)
    if antialias == "area":
        return _warp_area(img, a, size)
    if antialias == "none":
        return _warp_none(img, a, size)
    raise InputError(f"align: antialias '{antialias}' is not one of {', '.join(ANTIALIAS)}")
