"""The board-side TensorRT engine cache: keyed by what determines the engine, outside the job folder, hit or miss
recorded (no GPU here: the keying and bookkeeping are tested; the session itself is onnxruntime's)."""

from __future__ import annotations

from harness.device import artefacts

TRT = artefacts.TRT_PROVIDER


def _prepare(tmp_path, **kw):
    args = dict(provider=TRT, options={"trt_engine_cache_enable": True}, model_sha256="a" * 64)
    args.update(kw)
    return artefacts.prepare(args["provider"], args["options"], args["model_sha256"], ort_version="1.20.1",
                             root=tmp_path, gpu="NVIDIA Jetson Orin Nano Developer Kit", trt_version="8.6.2")


def test_engine_cache_is_keyed_and_kept_outside_the_job(tmp_path):
    opts, art = _prepare(tmp_path)
    assert opts["trt_engine_cache_path"] == art["path"]
    assert art["path"].startswith(str(tmp_path / "tensorrt"))
    assert art["hit"] is False and art["files_before"] == []
    assert art["identity"]["gpu"].startswith("NVIDIA Jetson") and art["identity"]["tensorrt"] == "8.6.2"
    # onnxruntime writes the engine there; the next entry of the same model and options is a hit
    (tmp_path / "tensorrt" / art["key"] / "TensorrtExecutionProvider_TRTKernel_graph_0_0_sm87.engine").write_bytes(b"x")
    _, again = _prepare(tmp_path)
    assert again["key"] == art["key"] and again["hit"] is True
    assert again["files_before"][0]["bytes"] == 1


def test_anything_that_changes_the_engine_changes_the_key(tmp_path):
    base = _prepare(tmp_path)[1]["key"]
    assert _prepare(tmp_path, model_sha256="b" * 64)[1]["key"] != base
    assert _prepare(tmp_path, options={"trt_engine_cache_enable": True, "trt_fp16_enable": True})[1]["key"] != base


def test_no_artefact_for_other_providers_or_an_explicit_path(tmp_path):
    assert _prepare(tmp_path, provider="CPUExecutionProvider")[1] is None
    assert _prepare(tmp_path, options={"trt_engine_cache_enable": False})[1] is None
    opts, art = _prepare(tmp_path, options={"trt_engine_cache_enable": True, "trt_engine_cache_path": "/lab/trt"})
    assert art is None and opts["trt_engine_cache_path"] == "/lab/trt"
