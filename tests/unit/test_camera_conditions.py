"""Capture conditions on real pixels (the shared London faces) and on constructed images where the physics gives
an exact answer: signal-dependent noise, PSF lengths, scale, codec rate order, the Planckian locus."""

from __future__ import annotations

import numpy as np
import pytest

from harness.camera import conditions as C
from harness.camera import quality
from harness.errors import UnavailableError, UsageError


@pytest.fixture(scope="module")
def face(data_root):
    from harness.data.images import decode

    path = sorted((data_root / "london-frl").rglob("*.jpg"))[0]
    return decode(path)


def one(spec: str, seed: int = 0) -> C.Condition:
    (c,) = C.parse(spec, seed=seed)
    return c


def test_parse_levels_sweeps_and_errors():
    assert [c.level for c in C.parse("exposure:0,-2,-4")] == [0.0, -2.0, -4.0]
    assert one("h264:1000").label == "h264:1000"
    for bad, msg in [("fog:1", "unknown condition 'fog'"), ("exposure", "give a level"),
                     ("exposure:dark", "not a number"), ("exposure:9", "outside -8..4"), ("jpeg:nan", "outside")]:
        with pytest.raises(UsageError, match=msg):
            C.parse(bad)


def test_reference_levels_are_the_unmodified_image(face):
    assert one("exposure:0").apply(face, key="k") is face
    assert one("wb:6504").apply(face, key="k") is face
    assert one("exposure:0").to_dict()["is_reference"] and not one("exposure:-2").to_dict()["is_reference"]


def test_exposure_is_seeded_per_image_and_per_run(face):
    a = one("exposure:-3").apply(face, key="img-1")
    assert np.array_equal(a, one("exposure:-3").apply(face, key="img-1"))
    assert not np.array_equal(a, one("exposure:-3").apply(face, key="img-2"))
    assert not np.array_equal(a, one("exposure:-3", seed=1).apply(face, key="img-1"))


def test_underexposure_divides_light_and_noise_is_poisson_plus_read():
    flat = np.full((256, 256, 3), 128, np.uint8)
    ev = -1.0
    out = one(f"exposure:{ev:g}").apply(flat, key="flat")
    electrons = C._srgb_to_linear(out) * C.FULL_WELL_E
    expected_mean = C._srgb_to_linear(flat).mean() * 2 ** ev * C.FULL_WELL_E
    assert electrons.mean() == pytest.approx(expected_mean, rel=0.01)
    # Poisson-Gaussian: variance = mean + read noise^2 (8-bit quantisation adds about 2%)
    assert electrons.var() == pytest.approx(expected_mean + C.READ_NOISE_E ** 2, rel=0.10)


def test_overexposure_clips_at_full_well(face):
    out = one("exposure:2").apply(face, key="k")
    assert (out == 255).mean() > (face == 255).mean() + 0.1


def test_motion_blur_spreads_a_vertical_edge_over_its_length_only():
    img = np.zeros((40, 80, 3), np.uint8)
    img[:, 40:] = 255
    out = one("motion:9").apply(img, key="k")
    row = out[20, :, 0].astype(int)
    ramp = np.flatnonzero((row > 0) & (row < 255))
    assert len(ramp) == 8  # a 9-px box turns a step into 8 intermediate values
    assert np.array_equal(out[:, :, 0].min(axis=0), out[:, :, 0].max(axis=0))  # rows unchanged vertically


def test_defocus_keeps_light_and_loses_sharpness(face):
    out = one("defocus:4").apply(face, key="k")
    assert out.mean() == pytest.approx(face.mean(), abs=0.5)
    box = np.array([0, 0, face.shape[1], face.shape[0]], float)
    assert quality.measure(out, box, None)["sharpness"] < 0.5 * quality.measure(face, box, None)["sharpness"]


def test_distance_places_the_face_at_the_asked_eye_distance():
    img = np.zeros((400, 400, 3), np.uint8)
    eyes = np.array([[150.0, 200.0], [250.0, 200.0]])  # 100 px apart
    for x, y in eyes.astype(int):
        img[y - 4:y + 4, x - 4:x + 4] = 255
    out = one("distance:25").apply(img, key="k", eyes=eyes)
    assert out.shape == (C.CAMERA_FRAME[1], C.CAMERA_FRAME[0], 3)
    ys, xs = np.nonzero(out[..., 0] > 160)  # the dots, not the mid-grey frame
    left, right = xs[xs < out.shape[1] // 2], xs[xs >= out.shape[1] // 2]
    assert right.mean() - left.mean() == pytest.approx(25, abs=1.0)
    with pytest.raises(C.ConditionNeedsEyes):
        one("distance:25").apply(img, key="k")


def test_jpeg_and_h264_cost_rises_as_the_rate_falls(face):
    err = lambda c: float(np.abs(one(c).apply(face, key="k").astype(int) - face).mean())  # noqa: E731
    assert err("jpeg:10") > err("jpeg:90") > 0
    pytest.importorskip("av")
    assert err("h264:300") > err("h264:8000") > 0


def test_codec_without_pyav_is_unavailable(face, monkeypatch):
    import builtins

    real = builtins.__import__

    def no_av(name, *a, **k):
        if name == "av":
            raise ImportError("no av")
        return real(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_av)
    with pytest.raises(UnavailableError, match="PyAV is not installed"):
        one("h264:1000").apply(face, key="k")


def test_planckian_locus_and_white_balance_direction(face):
    x, y = C.planckian_xy(2856)  # CIE illuminant A is a 2856 K black body: x 0.44757, y 0.40745
    assert (x, y) == pytest.approx((0.44757, 0.40745), abs=2e-3)
    r, g, b = C.wb_gains(3000)
    assert r > 1.0 == g > b  # tungsten under a D65 balance: warmer
    r, g, b = C.wb_gains(12000)
    assert r < 1.0 == g < b
    warm = one("wb:3000").apply(face, key="k").astype(float)
    assert warm[..., 0].mean() / warm[..., 2].mean() > face[..., 0].mean() / face[..., 2].mean()


def test_quality_tracks_brightness_and_iod(face):
    box = np.array([0, 0, face.shape[1], face.shape[0]], float)
    eyes = np.array([[10.0, 10.0], [40.0, 10.0]])
    bright = quality.measure(face, box, eyes)
    dark = quality.measure(one("exposure:-3").apply(face, key="k"), box, eyes)
    assert dark["brightness"] < bright["brightness"]
    assert bright["iod_px"] == 30.0
    if quality.ofiq_engine()[0] is None:  # without OFIQ's models: no OFIQ fields, and the run says why
        assert "ofiq" not in bright and quality.ofiq_status().startswith("unavailable: ")
