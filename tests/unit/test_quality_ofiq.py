"""OFIQ in the face-quality measures (harness/camera/quality.py), across the process boundary.

- With the real python-ofiq wheel and no model files: the exact "models not found" line, no OFIQ fields, nothing
  raised (python-ofiq's constructor raises ofiq.ConfigError for an empty data directory).
- BOUNDARY TEST with a FAKE `ofiq` module (tests/unit/test_quality_ofiq.py writes it to a temporary folder put first
  on PYTHONPATH): it mimics python-ofiq 0.3.1's documented API (OFIQ(config_dir), vector_quality(rgb) ->
  {"UnifiedQualityScore": ..., "<Measure>": ... or None}, the OFIQError / ConfigError / QualityError /
  FaceDetectionError classes, resolve_data_dir()) because the real models (~400 MB) cannot be downloaded here. It
  checks what the harness does with what OFIQ returns, not OFIQ's scores.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[2]

PROBE = textwrap.dedent("""
    import json, numpy as np
    from harness.camera import quality
    from harness.scenarios.entry import record
    img = np.full((120, 100, 3), 150, np.uint8)
    dark = np.zeros((120, 100, 3), np.uint8)
    box = np.array([10, 10, 90, 110], float)
    q1, q2 = quality.measure(img, box, None), quality.measure(dark, box, None)
    quality.measure(img, box, None)
    sample = {"sample_id": "s", "dataset": "d", "image": "i.jpg", "subject": "p1", "attrs": {"group": "a"},
              "times": {}, "quality": q1, "decoded": True, "acquired": True, "fta_reason": None}
    import sys
    built = getattr(sys.modules.get("ofiq"), "BUILT", None)
    print(json.dumps({"status": quality.ofiq_status(), "q1": q1, "q2": q2, "built": built,
                      "record": record(sample, "verification")}))
""")


def _probe(env_extra: dict, pythonpath: list[Path]) -> dict:
    env = {**os.environ, **env_extra, "PYTHONPATH": os.pathsep.join(str(p) for p in [*pythonpath, ROOT])}
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_real_wheel_without_models_says_exactly_why(tmp_path):
    pytest.importorskip("ofiq", reason="python-ofiq (the quality extra) is not installed")
    empty = tmp_path / "ofiq-data"
    empty.mkdir()
    got = _probe({"OFIQ_DATA_DIR": str(empty)}, [])
    assert got["status"] == f"unavailable: OFIQ models not found in {empty} (python-ofiq setup downloads them)"
    assert not any(k.startswith("ofiq") for k in got["q1"]) and got["q1"]["brightness"] == 150.0
    assert not any(k.startswith("q_ofiq") for k in got["record"])


def test_real_wheel_constructor_raises_config_error_on_empty_dir(tmp_path):
    ofiq = pytest.importorskip("ofiq", reason="python-ofiq (the quality extra) is not installed")
    with pytest.raises(ofiq.ConfigError, match="ofiq_config.jaxn"):
        ofiq.OFIQ(str(tmp_path))


FAKE_OFIQ = textwrap.dedent('''
    """FAKE ofiq for a boundary test: python-ofiq 0.3.1's documented API, no models, made-up scores."""
    import os
    import numpy as np

    BUILT = 0
    __version__ = "0.3.1-fake"
    __ofiq_version__ = "1.1.2-fake"

    class OFIQError(Exception): ...
    class ConfigError(OFIQError): ...
    class QualityError(OFIQError): ...
    class FaceDetectionError(QualityError): ...

    def resolve_data_dir():
        return os.path.expanduser(os.environ.get("OFIQ_DATA_DIR", "~/.ofiq/data"))

    class OFIQ:
        def __init__(self, config_dir="", config_file="ofiq_config.jaxn"):
            global BUILT
            if not os.path.isfile(os.path.join(config_dir, config_file)):
                raise ConfigError("Initialization failed: MissingConfigFileError")
            if os.path.exists(os.path.join(config_dir, "BROKEN")):
                raise ConfigError("Initialization failed: model file damaged")
            BUILT += 1

        def vector_quality(self, image_rgb, include_raw=False):
            assert image_rgb.dtype == np.uint8 and image_rgb.ndim == 3 and image_rgb.shape[2] == 3
            if image_rgb.max() == 0:
                raise FaceDetectionError("no face")
            m = float(image_rgb.mean())
            return {"UnifiedQualityScore": m / 2.55, "Sharpness": 40.0, "UnderExposurePrevention": 100.0,
                    "HeadPoseYaw": None, "CompressionArtifacts": float("nan"), "../<b>x</b>": 1.0}
''')


@pytest.fixture
def fake_ofiq(tmp_path) -> Path:
    pkg = tmp_path / "fake" / "ofiq"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text(FAKE_OFIQ)
    return tmp_path / "fake"


def _models(tmp_path: Path, broken: bool = False) -> Path:
    data = tmp_path / "ofiq-data"
    (data / "models").mkdir(parents=True)
    (data / "ofiq_config.jaxn").write_text("{}")
    if broken:
        (data / "BROKEN").write_text("")
    return data


def test_boundary_fake_ofiq_present_scores_every_sample_once_built(tmp_path, fake_ofiq):
    data = _models(tmp_path)
    got = _probe({"OFIQ_DATA_DIR": str(data)}, [fake_ofiq])
    assert got["status"] == f"OFIQ 1.1.2-fake (python-ofiq 0.3.1-fake), models in {data}"
    assert got["built"] == 1  # once per process, for three images
    q1 = got["q1"]
    assert q1["ofiq"] == pytest.approx(150 / 2.55)
    assert q1["ofiq_sharpness"] == 40.0 and q1["ofiq_under_exposure_prevention"] == 100.0
    assert q1["ofiq_head_pose_yaw"] is None and q1["ofiq_compression_artifacts"] is None  # None and NaN: absent
    assert not any("<" in k or "/" in k for k in q1)  # a name from OFIQ is data: markup or a path is dropped
    assert got["q2"]["ofiq"] is None and got["q2"]["ofiq_error"] == "FaceDetectionError"
    rec = got["record"]
    assert rec["q_ofiq"] == pytest.approx(150 / 2.55) and rec["q_ofiq_sharpness"] == 40.0
    assert "q_ofiq_error" not in rec


def test_boundary_fake_ofiq_models_that_do_not_load(tmp_path, fake_ofiq):
    data = _models(tmp_path, broken=True)
    got = _probe({"OFIQ_DATA_DIR": str(data)}, [fake_ofiq])
    assert got["status"] == (f"unavailable: OFIQ could not load its models from {data}: "
                             "Initialization failed: model file damaged")
    assert "ofiq" not in got["q1"]


def test_boundary_fake_ofiq_without_models(tmp_path, fake_ofiq):
    got = _probe({"OFIQ_DATA_DIR": str(tmp_path / "none")}, [fake_ofiq])
    assert got["status"] == (f"unavailable: OFIQ models not found in {tmp_path / 'none'} "
                             "(python-ofiq setup downloads them)")


def test_ofiq_scores_summarised_per_group_like_the_other_measures():
    from harness.scoring import _quality_stats

    df = pd.DataFrame({"group": ["a", "a", "b", "b"], "q_brightness": [100.0, 120.0, 60.0, 70.0],
                       "q_ofiq": [80.0, 70.0, None, 40.0], "q_ofiq_sharpness": [50.0, 52.0, 30.0, 31.0]})
    stats = _quality_stats(df, ["group"])
    assert stats["ofiq"]["n"] == 3 and stats["ofiq"]["by_group"]["a"] == {"n": 2, "median": 75.0}
    assert stats["ofiq"]["by_group"]["b"] == {"n": 1, "median": 40.0}
    assert stats["ofiq_sharpness"]["by_group"]["b"]["median"] == pytest.approx(30.5)
    assert np.isfinite(stats["brightness"]["median"])
