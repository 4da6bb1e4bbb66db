"""One model x variant on one target, run inside a child process (see harness/isolation.py).

Order inside the worker: load (init_ms, load RSS delta) -> first inference -> accuracy pass over every sample
(appended to samples/<entry>.jsonl as it goes, so a killed run resumes where it stopped) -> single-stream latency
(with telemetry sampled in the background) -> offline throughput. The child returns a JSON-ready summary; the
parent never imports a runtime, so a runtime that crashes or hangs costs one entry, not the run.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from harness.errors import BenchError
from harness.specs import Backend

# Attributes copied into every per-sample record come from the job; task fields are added per task below.


def _ms_since(t0: int) -> float:
    return (time.perf_counter_ns() - t0) / 1e6


def _task_inputs(job: dict, arrays: dict) -> tuple[np.ndarray, list[int]]:
    """(NHWC float32 inputs for every sample of this entry, indices of the samples that can be fed).

    Each sample's "row" indexes the shared acquisition arrays, which hold every dataset of the run.
    """
    from harness.tasks.preprocess import normalize

    raw = arrays[job["input"]["resize"]]
    mean, scale = job["input"]["mean"], job["input"]["scale"]
    samples = job["samples"]
    feedable = [i for i, s in enumerate(samples) if (s["decoded"] if job["task"] == "detection" else s["acquired"])]
    x = np.zeros((len(samples), *raw.shape[1:]), np.float32)
    if feedable:
        rows = [samples[i]["row"] for i in feedable]
        x[feedable] = normalize(raw[rows], mean, scale)
    return x, feedable


def _record(sample: dict, task: str) -> dict:
    rec = {k: sample[k] for k in ("sample_id", "dataset", "image", "subject")}
    rec.update(sample["attrs"])
    rec.update({k: sample["times"].get(k) for k in ("decode_ms", "detect_ms", "align_ms")})
    if task == "detection":
        # The detection entry judges its own detector: only an unreadable image is a failure before it runs.
        ok = sample["decoded"]
        rec.update(status="ok" if ok else "fta", fta_reason=None if ok else sample["fta_reason"])
    else:
        ok = sample["acquired"]
        rec.update(status="ok" if ok else "fta", fta_reason=None if ok else sample["fta_reason"])
    return rec


def _postprocess(task: str, outs: list[np.ndarray], j: int, sample: dict, job: dict) -> dict:
    if task == "detection":
        from harness.tasks import blazeface
        from harness.tasks.detection_eval import detection_fields
        from harness.tasks.preprocess import Letterbox
        from harness.tasks.select import choose_face

        lb = Letterbox(*sample["letterbox"])
        dets = blazeface.decode([o[j:j + 1] for o in outs], lb, score_threshold=job["score_threshold"])
        face = choose_face(dets, tuple(sample["image_size"]))
        gt = sample.get("gt") or {}
        eyes = np.asarray(gt["gt_eyes"]) if gt.get("gt_eyes") is not None else None
        box = np.asarray(gt["gt_box"]) if gt.get("gt_box") is not None else None
        # Labelled eyes beat a labelled box: London's box is the loose landmark extent (hairline to chin, ear to
        # ear), on which a correct detection reaches IoU 0.5 only 40% of the time; both eyes inside the detected
        # box is the hit rule wherever eyes are labelled, IoU >= 0.5 where only a box is.
        fields = detection_fields(face, eyes, box, hit_rule="eyes" if eyes is not None else "iou")
        if not fields["det_found"]:
            fields.update(status="fta", fta_reason="no_face")
        return fields
    if task == "gender":
        from harness.tasks.gender import gender_fields, prob_male

        return gender_fields(float(prob_male(outs[0][j:j + 1])[0]), sample["attrs"].get(job["label_column"]))
    from harness.tasks.verification import l2_normalize

    return {"embedding": l2_normalize(outs[0][j:j + 1].reshape(1, -1))[0].astype(float).round(6).tolist()}


def run_entry(job: dict) -> dict:
    """The child-process body. Returns the entry's speed/backend summary (JSON-ready)."""
    from harness.results.store import RunWriter
    from harness.runners import make_runner
    from harness.trackers.latency import LatencyStats, measure_loop
    from harness.trackers.memory import CpuWindow, current_rss_mb, peak_rss_mb
    from harness.trackers.validity import assess

    backend = Backend(**{k: v for k, v in job["backend"].items() if k != "variants"}, variants=())
    arrays = dict(np.load(job["acquired_npz"]))
    task = job["task"]
    x, feedable = _task_inputs(job, arrays)

    rss0 = current_rss_mb()
    t0 = time.perf_counter_ns()
    runner = make_runner(backend, Path(job["variant_path"]), layout=job.get("layout"))
    init_ms = _ms_since(t0)
    load_delta_mb = current_rss_mb() - rss0
    result: dict[str, Any] = {"backend": runner.backend.to_dict(), "init_ms": init_ms}
    if not feedable:
        raise BenchError(f"{job['entry']}: no sample could be fed to the model (every image failed to acquire)")

    probe_idx = feedable[0]
    prepared, n_real = runner.prepare(x[probe_idx:probe_idx + 1])
    t0 = time.perf_counter_ns()
    runner.infer(prepared)
    result["first_inference_ms"] = _ms_since(t0)

    # Accuracy pass, one face per call (a fixed-batch graph gets its batch): per-sample infer_ms then measures that
    # face, so processing-time differences between groups (ISO/IEC 19795-10) are not averaged away by batching.
    writer = RunWriter(path=Path(job["run_dir"]), run_id=job["run_id"], index=None)
    done = writer.done_sample_ids(job["entry"])
    batch = runner.max_batch(1)
    todo = [i for i in range(len(job["samples"])) if job["samples"][i]["sample_id"] not in done]
    can_feed = set(feedable)
    fed = [i for i in todo if i in can_feed]
    for i in todo:
        if i not in can_feed:
            writer.append_sample(job["entry"], _record(job["samples"][i], task) | {"infer_ms": None, "post_ms": None})
    for start in range(0, len(fed), batch):
        idx = fed[start:start + batch]
        t0 = time.perf_counter_ns()
        outs = runner.run(x[idx])
        infer_ms = _ms_since(t0) / len(idx)
        records = []
        for j, i in enumerate(idx):
            t1 = time.perf_counter_ns()
            rec = _record(job["samples"][i], task)
            rec.update(_postprocess(task, outs, j, job["samples"][i], job))
            rec.update(infer_ms=infer_ms, post_ms=_ms_since(t1))
            records.append(rec)
        writer.append_samples(job["entry"], records)
    if task == "verification":
        # Rows in samples-file order; failures to acquire are NaN rows, so row i always belongs to record i.
        recs = writer.samples(job["entry"])
        dim = next((len(r["embedding"]) for r in recs if r.get("embedding")), 0)
        writer.write_array("embeddings", job["entry"], np.array(
            [r["embedding"] if r.get("embedding") else [np.nan] * dim for r in recs], np.float32))
    writer.close()

    # Single-stream latency on one real input, telemetry sampled meanwhile.
    from harness.trackers.telemetry import TelemetryWindow

    lat = job["latency"]
    with TelemetryWindow(job["telemetry"]) as tele, CpuWindow() as cpu:
        timings = measure_loop(lambda: runner.infer(prepared), warmup=lat["warmup"],
                               min_duration_s=lat["min_duration_s"], min_count=lat["min_count"],
                               max_duration_s=lat["max_duration_s"])
    writer.write_array("timings", job["entry"], timings)
    stats = LatencyStats.from_ms(timings)
    result["single_stream"] = stats.to_dict() | {"batch": int(prepared.shape[0]), "real_faces_per_query": n_real}
    result["cpu_util_pct"] = cpu.cpu_util_pct
    result["telemetry"] = tele.to_dict()
    result["energy_mj_per_inference"] = tele.energy_mj_per_inference(len(timings))
    result["validity"] = assess(stats, min_duration_s=lat["min_duration_s"], min_count=lat["min_count"],
                                telemetry=result["telemetry"], backend_check=result["backend"])

    # Offline throughput: the largest batch the graph allows (fixed-batch graphs: their batch).
    off_batch = runner.max_batch(job["offline"]["batch"])
    pool = x[feedable]
    reps = int(np.ceil(off_batch / len(pool)))
    big, n_big = runner.prepare(np.concatenate([pool] * reps)[:off_batch])
    off = measure_loop(lambda: runner.infer(big), warmup=2, min_duration_s=job["offline"]["min_duration_s"],
                       min_count=job["offline"]["min_count"], max_duration_s=lat["max_duration_s"])
    result["offline"] = {"throughput_ips": float(n_big * len(off) / (off.sum() / 1e3)), "batch": int(n_big),
                         "threads": backend.threads or "runtime default", "count": int(len(off)),
                         "duration_s": float(off.sum() / 1e3)}
    result["memory"] = {"rss_peak_mb": peak_rss_mb(), "load_delta_mb": load_delta_mb}
    runner.close()
    return result
