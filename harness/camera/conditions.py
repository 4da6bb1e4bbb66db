"""Capture conditions: named, seeded, documented transforms of the camera image, applied on the host before
detection so that every board sees the same pixels.

`parse("exposure:-2")` -> a Condition; `condition.apply(rgb_uint8, key=sample_id, eyes=...)` -> the image as that
camera would have captured it. Level 0 of exposure and white balance 6504 K are the unmodified image (the
reference), so a sweep's first level is the run everything is compared with. A condition never changes labels.

| name | level (unit) | model |
|---|---|---|
| exposure | EV, -8..+4 | sRGB -> linear light (IEC 61966-2-1), light x 2^EV, sensor electrons with Poisson shot noise plus Gaussian read noise (the Poisson-Gaussian model of Foi et al. 2008; applied in linear light as Brooks et al. 2019 "Unprocessing images for learned raw denoising" do), clipped at full well (overexposure), back through the sRGB tone curve |
| motion | blur length in px, 1..200 | a horizontal line PSF (camera panning), cv2.filter2D |
| defocus | blur radius in px, 0.5..50 | a uniform disk (pillbox) PSF: geometric-optics defocus |
| distance | inter-eye distance in px, 4..500 | the image scaled (area resampling: the sensor integrates light) so the face's eyes are that far apart, then placed in the camera's frame (1920x1080, mid-grey around it): the detector sees the face as small as the camera would |
| jpeg | quality 1..100 | libjpeg through cv2.imencode |
| h264 / h265 | kbit/s, 50..20000 | a real encoder (PyAV's libx264 / libx265), all-intra at 30 fps: each frame gets the bits a 1920x1080 frame would get at that bitrate, scaled to this image's area |
| wb | correlated colour temperature in K, 1700..25000 | a camera white-balanced for D65 (6504 K) under a black-body illuminant: per-channel gains from the Planckian locus (Kim et al. 2002 approximation of CIE xy), XYZ -> linear sRGB, applied in linear light (von Kries), green kept |

Noise is seeded by (run seed, sample key): the same image gets the same noise on every run and every board.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Callable

import cv2
import numpy as np

from harness.errors import UnavailableError, UsageError

CAMERA_FRAME = (1920, 1080)      # body-camera frame (width, height): distance embeds into it, codecs budget by it
FPS = 30.0
FULL_WELL_E = 6000.0             # electrons at saturation: a small-pixel (~1.4 um) CMOS sensor
READ_NOISE_E = 2.5               # electrons rms: same class of sensor
D65_K = 6504.0
BACKGROUND = 128


def _eotf(c: np.ndarray) -> np.ndarray:
    """sRGB code value in [0, 1] -> linear light (IEC 61966-2-1)."""
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)


_LINEAR = _eotf(np.arange(256) / 255.0)                  # every 8-bit code's linear light
_BOUNDS = _eotf((np.arange(255) + 0.5) / 255.0)          # linear light halfway between neighbouring codes


def _srgb_to_linear(u8: np.ndarray) -> np.ndarray:
    return _LINEAR[u8]


def _linear_to_srgb(lin: np.ndarray) -> np.ndarray:
    """Linear light -> the nearest 8-bit sRGB code (the inverse EOTF, rounded): a search among the 255 boundaries
    between codes, the same answer as rounding 255 x OETF(lin) and much faster than a power per pixel."""
    return np.searchsorted(_BOUNDS, np.clip(lin, 0.0, 1.0), side="left").astype(np.uint8)


def _rng(seed: int, key: str) -> np.random.Generator:
    digest = hashlib.sha256(f"{seed}\x00{key}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def exposure(img: np.ndarray, ev: float, rng: np.random.Generator, **_) -> np.ndarray:
    if ev == 0:
        return img
    electrons = _srgb_to_linear(img) * (2.0 ** ev) * FULL_WELL_E
    noisy = rng.poisson(electrons).astype(np.float64) + rng.normal(0.0, READ_NOISE_E, electrons.shape)
    return _linear_to_srgb(np.clip(noisy, 0.0, FULL_WELL_E) / FULL_WELL_E)


def motion(img: np.ndarray, length: float, **_) -> np.ndarray:
    n = max(int(round(length)), 1)
    if n == 1:
        return img
    kernel = np.full((1, n), 1.0 / n, np.float32)
    return cv2.filter2D(img, -1, kernel, borderType=cv2.BORDER_REFLECT)


def defocus(img: np.ndarray, radius: float, **_) -> np.ndarray:
    r = int(np.ceil(radius))
    y, x = np.mgrid[-r:r + 1, -r:r + 1]
    disk = ((x * x + y * y) <= radius * radius).astype(np.float32)
    return cv2.filter2D(img, -1, disk / disk.sum(), borderType=cv2.BORDER_REFLECT)


def distance(img: np.ndarray, iod_px: float, eyes: np.ndarray | None = None, **_) -> np.ndarray:
    if eyes is None:
        raise ConditionNeedsEyes()
    iod = float(np.linalg.norm(np.asarray(eyes[0], float) - np.asarray(eyes[1], float)))
    scale = iod_px / iod if iod > 0 else 1.0
    h, w = img.shape[:2]
    if scale < 1.0:
        small = cv2.resize(img, (max(int(round(w * scale)), 1), max(int(round(h * scale)), 1)),
                           interpolation=cv2.INTER_AREA)
    else:  # the face is already smaller than asked: a camera cannot add detail, keep the pixels
        small = img
    fw, fh = CAMERA_FRAME
    frame = np.full((fh, fw, 3), BACKGROUND, np.uint8)
    sh, sw = small.shape[:2]
    # centre the capture in the frame, cropping its middle if it is larger than the frame
    cy, cx = max((sh - fh) // 2, 0), max((sw - fw) // 2, 0)
    crop = small[cy:cy + fh, cx:cx + fw]
    oy, ox = (fh - crop.shape[0]) // 2, (fw - crop.shape[1]) // 2
    frame[oy:oy + crop.shape[0], ox:ox + crop.shape[1]] = crop
    return frame


def jpeg(img: np.ndarray, quality: float, **_) -> np.ndarray:
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(img, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:  # pragma: no cover - libjpeg does not refuse a uint8 RGB image
        raise UnavailableError("jpeg: OpenCV could not encode the image")
    return cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def _codec(img: np.ndarray, kbps: float, codec: str) -> np.ndarray:
    try:
        import av  # PyAV: FFmpeg's encoders
    except ImportError:
        raise UnavailableError(f"{codec}: PyAV is not installed (pip install av, in the `camera` extra)") from None
    lib = {"h264": "libx264", "h265": "libx265"}[codec]
    if lib not in av.codecs_available:
        raise UnavailableError(f"{codec}: this PyAV build has no {lib} encoder")
    h, w = img.shape[:2]
    h2, w2 = h - h % 2, w - w % 2  # 4:2:0 needs even dimensions
    src = img[:h2, :w2]
    bits_per_frame = kbps * 1000.0 / FPS * (w2 * h2) / (CAMERA_FRAME[0] * CAMERA_FRAME[1])
    ctx = av.CodecContext.create(lib, "w")
    ctx.width, ctx.height, ctx.pix_fmt = w2, h2, "yuv420p"
    from fractions import Fraction

    ctx.time_base = Fraction(1, int(FPS))
    ctx.framerate = Fraction(int(FPS), 1)
    ctx.bit_rate = max(int(bits_per_frame * FPS), 1000)
    ctx.gop_size = 1  # all-intra: every frame carries its own bits, as a camera's I-frame does
    opts = {"x264-params": "keyint=1:nal-hrd=cbr:log-level=none"} if lib == "libx264" else \
        {"x265-params": "keyint=1:log-level=none"}
    ctx.options = {**opts, "preset": "veryfast"}
    frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(src), format="rgb24")
    packets = []
    for i in range(3):  # rate control settles over the first frames; the last one is kept
        frame.pts = i
        packets.extend(ctx.encode(frame))
    packets.extend(ctx.encode(None))
    dec = av.CodecContext.create(codec if codec == "h264" else "hevc", "r")
    decoded = []
    for p in packets:
        decoded.extend(dec.decode(p))
    decoded.extend(dec.decode(None))
    if not decoded:
        raise UnavailableError(f"{codec}: the encoder produced no decodable frame")
    out = img.copy()
    out[:h2, :w2] = decoded[-1].to_ndarray(format="rgb24")
    return out


def h264(img: np.ndarray, kbps: float, **_) -> np.ndarray:
    return _codec(img, kbps, "h264")


def h265(img: np.ndarray, kbps: float, **_) -> np.ndarray:
    return _codec(img, kbps, "h265")


def planckian_xy(kelvin: float) -> tuple[float, float]:
    """CIE 1931 xy of a black body, Kim et al. (2002) cubic approximation (1667-25000 K)."""
    t = float(kelvin)
    if t <= 4000:
        x = -0.2661239e9 / t**3 - 0.2343589e6 / t**2 + 0.8776956e3 / t + 0.179910
    else:
        x = -3.0258469e9 / t**3 + 2.1070379e6 / t**2 + 0.2226347e3 / t + 0.240390
    if t <= 2222:
        y = -1.1063814 * x**3 - 1.34811020 * x**2 + 2.18555832 * x - 0.20219683
    elif t <= 4000:
        y = -0.9549476 * x**3 - 1.37418593 * x**2 + 2.09137015 * x - 0.16748867
    else:
        y = 3.0817580 * x**3 - 5.87338670 * x**2 + 3.75112997 * x - 0.37001483
    return x, y


_XYZ_TO_SRGB = np.array([[3.2406, -1.5372, -0.4986], [-0.9689, 1.8758, 0.0415], [0.0557, -0.2040, 1.0570]])


def illuminant_rgb(kelvin: float) -> np.ndarray:
    x, y = planckian_xy(kelvin)
    xyz = np.array([x / y, 1.0, (1.0 - x - y) / y])
    return _XYZ_TO_SRGB @ xyz


def wb_gains(kelvin: float) -> np.ndarray:
    g = illuminant_rgb(kelvin) / illuminant_rgb(D65_K)
    return g / g[1]


def wb(img: np.ndarray, kelvin: float, **_) -> np.ndarray:
    if abs(kelvin - D65_K) < 1e-9:
        return img
    return _linear_to_srgb(_srgb_to_linear(img) * wb_gains(kelvin))


@dataclass(frozen=True)
class Kind:
    fn: Callable[..., np.ndarray]
    unit: str
    lo: float
    hi: float
    needs_eyes: bool = False
    reference: float | None = None  # the level that is the unmodified image


KINDS: dict[str, Kind] = {
    "exposure": Kind(exposure, "EV", -8.0, 4.0, reference=0.0),
    "motion": Kind(motion, "px", 1.0, 200.0),
    "defocus": Kind(defocus, "px", 0.5, 50.0),
    "distance": Kind(distance, "px between the eyes", 4.0, 500.0, needs_eyes=True),
    "jpeg": Kind(jpeg, "quality", 1.0, 100.0),
    "h264": Kind(h264, "kbit/s", 50.0, 20000.0),
    "h265": Kind(h265, "kbit/s", 50.0, 20000.0),
    "wb": Kind(wb, "K", 1700.0, 25000.0, reference=D65_K),
}


class ConditionNeedsEyes(Exception):
    """The condition needs the face's eye positions in the unmodified image (distance)."""


@dataclass(frozen=True)
class Condition:
    name: str
    level: float
    seed: int = 0
    kind: Kind = field(repr=False, compare=False, default=None)  # type: ignore[assignment]

    @property
    def needs_eyes(self) -> bool:
        return self.kind.needs_eyes

    @property
    def label(self) -> str:
        return f"{self.name}:{self.level:g}"

    def apply(self, img: np.ndarray, *, key: str, eyes: np.ndarray | None = None) -> np.ndarray:
        return self.kind.fn(img, self.level, rng=_rng(self.seed, key), eyes=eyes)

    def to_dict(self) -> dict:
        return {"name": self.name, "level": self.level, "unit": self.kind.unit, "seed": self.seed,
                "label": self.label, "is_reference": self.kind.reference == self.level,
                "model": (self.kind.fn.__doc__ or "").strip() or None,
                "camera_frame": list(CAMERA_FRAME) if self.name in ("distance", "h264", "h265") else None,
                "sensor": {"full_well_e": FULL_WELL_E, "read_noise_e": READ_NOISE_E}
                if self.name == "exposure" else None}


def parse(spec: str, seed: int = 0) -> list[Condition]:
    """'exposure:-2' or the sweep form 'exposure:0,-2,-4' -> Conditions; UsageError (exit 2) naming the problem."""
    name, sep, levels = spec.partition(":")
    name = name.strip().lower()
    if name not in KINDS:
        raise UsageError(f"--condition {spec!r}: unknown condition '{name}'; valid: {', '.join(KINDS)}")
    kind = KINDS[name]
    if not sep or not levels.strip():
        raise UsageError(f"--condition {spec!r}: give a level, e.g. {name}:{kind.lo:g} ({kind.unit})")
    out = []
    for text in levels.split(","):
        try:
            level = float(text)
        except ValueError:
            raise UsageError(f"--condition {spec!r}: level {text.strip()!r} is not a number ({kind.unit})") from None
        if not np.isfinite(level) or not kind.lo <= level <= kind.hi:
            raise UsageError(f"--condition {spec!r}: level {text.strip()} is outside {kind.lo:g}..{kind.hi:g} "
                             f"({kind.unit})")
        out.append(Condition(name=name, level=level, seed=seed, kind=kind))
    return out
