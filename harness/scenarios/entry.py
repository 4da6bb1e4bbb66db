"""One model x variant, host side: build its Job, and collect its JobResult into the run folder.

The device (harness/device/worker.py) returns raw outputs and raw timings; everything that interprets them runs
here, on the host: BlazeFace decoding and face choice, gender probabilities, embedding normalisation (each
per-sample record keeps its own post_ms, measured here), latency statistics and the validity verdict. So a
LiteRT-only board with numpy alone produces the same records as this machine, and a change to decoding or scoring
never needs a device.

Resume: a worker writes raw outputs in chunks as it goes; `collect_chunks` appends the records of every chunk not
yet collected (samples/<entry>.jsonl is the record of what is done), so chunks left by a killed job are collected
on --resume before the job is launched again with only the samples still to do.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from harness.jobs import (OUTPUTS_DIR, BackendRequest, FileRef, InputArray, Job, JobResult, LatencySettings,
                          OfflineSettings, SteadyState)


# Face-image quality of the chosen face, per sample (harness/camera/quality.py), recorded as q_<name>; with OFIQ
# and its models also q_ofiq (the unified score) and q_ofiq_<component> (its measures' scalar scores).
QUALITY_FIELDS = ("brightness", "contrast", "sharpness", "iod_px")


def _is_ofiq_score(key: str) -> bool:
    return key == "ofiq" or (key.startswith("ofiq_") and key != "ofiq_error")


def _ms_since(t0: int) -> float:
    return (time.perf_counter_ns() - t0) / 1e6


def feedable(sample: dict, task: str) -> bool:
    """A task fed on images (detection judges its own detector) gets every decoded image; the others need a face
    chip (harness/tasks/registry.py `fed_on`)."""
    from harness.tasks.registry import get_task

    return bool(sample["decoded"] if get_task(task).fed_on == "image" else sample["acquired"])


def record(sample: dict, task: str) -> dict:
    """The per-sample record's identity, group attributes, acquisition times and acquisition status."""
    rec = {k: sample[k] for k in ("sample_id", "dataset", "image", "subject")}
    rec.update(sample["attrs"])
    rec.update({k: sample["times"].get(k) for k in ("decode_ms", "condition_ms", "detect_ms", "align_ms")
                if k in sample["times"] or k != "condition_ms"})
    quality = sample.get("quality") or {}
    rec.update({f"q_{k}": quality.get(k) for k in QUALITY_FIELDS if quality})
    rec.update({f"q_{k}": v for k, v in quality.items() if _is_ofiq_score(k)})
    ok = feedable(sample, task)
    rec.update(status="ok" if ok else "fta", fta_reason=None if ok else sample["fta_reason"])
    return rec


def postprocess(task: str, outs: list[np.ndarray], sample: dict, *, score_threshold: float,
                label_column: str = "gender") -> dict:
    """Raw outputs of one sample (each with a leading batch axis of 1) -> the task's record fields."""
    if task == "detection":
        from harness.tasks import blazeface
        from harness.tasks.detection_eval import detection_fields
        from harness.tasks.preprocess import Letterbox
        from harness.tasks.select import choose_face

        lb = Letterbox(*sample["letterbox"])
        dets = blazeface.decode(outs, lb, score_threshold=score_threshold)
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

        return gender_fields(float(prob_male(outs[0])[0]), sample["attrs"].get(label_column))
    from harness.tasks.verification import l2_normalize

    return {"embedding": l2_normalize(outs[0].reshape(1, -1))[0].astype(float).round(6).tolist()}


def build_job(e: dict, samples: list[dict], done: set[str], *, model_file: FileRef, inputs_file: FileRef,
              mean: tuple[float, ...], scale: float, backend: BackendRequest, telemetry: tuple[str, ...],
              latency: LatencySettings, offline: OfflineSettings, steady: SteadyState = SteadyState()) -> Job:
    """The job for entry `e`: only the feedable samples not yet done; every feedable row as the timing pool."""
    task = e["task"]
    return Job(entry=e["entry"], task=task, model=model_file, layout=e["layout"],
               inputs=InputArray(file=inputs_file, mean=tuple(mean), scale=float(scale)), backend=backend,
               samples=tuple((s["sample_id"], s["row"]) for s in samples
                             if feedable(s, task) and s["sample_id"] not in done),
               pool_rows=tuple(s["row"] for s in samples if feedable(s, task)),
               latency=latency, offline=offline, telemetry=telemetry, steady_state=steady)


def write_unfed(writer, eid: str, task: str, samples: list[dict], done: set[str]) -> None:
    """Records for the samples that cannot be fed (failed to acquire): no inference, no post-processing."""
    recs = [record(s, task) | {"infer_ms": None, "post_ms": None}
            for s in samples if not feedable(s, task) and s["sample_id"] not in done]
    if recs:
        writer.append_samples(eid, recs)


def collect_chunks(writer, eid: str, task: str, samples: list[dict], out_dir: Path, *, score_threshold: float,
                   label_column: str = "gender", where: str = "local worker", sent: set[str] | None = None) -> int:
    """Append the records of every raw-output chunk in out_dir not yet in samples/<eid>.jsonl; returns how many.

    Each chunk is read and checked by the trust boundary (harness/launchers/trust.py: regular file, size, no pickle,
    shapes, finite infer_ms, every id one the host sent (`sent`, default: any sample of the entry) and none twice),
    then collected, then deleted, so a chunk is read once even if this is interrupted and run again (a chunk whose
    every record is already written is skipped). A bad chunk raises InfrastructureError naming `where` and the
    field; the records of the chunks before it are kept.
    """
    from harness.errors import InfrastructureError
    from harness.launchers import trust

    by_id = {s["sample_id"]: s for s in samples}
    allowed = set(by_id) if sent is None else set(sent) & set(by_id)
    done = writer.done_sample_ids(eid)
    seen: set[str] = set()
    n = 0
    for path in trust.chunk_paths(out_dir, where=where):
        chunk = trust.read_chunk(path, where=where)
        keep = trust.checked_ids(chunk, allowed=allowed, done=done, seen=seen, where=where)
        records = []
        for j in keep:
            sid = chunk.sample_ids[j]
            t1 = time.perf_counter_ns()
            rec = record(by_id[sid], task)
            try:
                rec.update(postprocess(task, [o[j:j + 1] for o in chunk.outputs], by_id[sid],
                                       score_threshold=score_threshold, label_column=label_column))
            except (ValueError, IndexError, TypeError, KeyError) as exc:  # shapes the task cannot read
                raise InfrastructureError(f"{where}: {OUTPUTS_DIR}/{chunk.name} 'out*': the {task} task cannot read "
                                          f"these outputs ({type(exc).__name__})") from None
            rec.update(infer_ms=float(chunk.infer_ms[j]), post_ms=_ms_since(t1))
            records.append(rec)
        writer.append_samples(eid, records)
        writer.sync()  # the records are on disk before the chunk they came from is gone
        done.update(r["sample_id"] for r in records)
        n += len(records)
        path.unlink()
    return n


def finish(writer, eid: str, task: str, result: JobResult, timings: np.ndarray, *, min_duration_s: float,
           min_count: int, steady: Any = None) -> dict[str, Any]:
    """A successful JobResult and its timings (validated by harness/launchers/trust.py) -> the entry's run.json
    `speed` block; timings (and embeddings) arrays stored. `steady` is the job's SteadyState: what was asked, beside
    what the board says it did (`device_state`, harness/device/steady.py)."""
    import dataclasses

    from harness.device.steady import clean_record as clean_steady
    from harness.metrics.energy import above_idle
    from harness.trackers.contention import clean_record
    from harness.trackers.latency import LatencyStats
    from harness.trackers.validity import assess

    if task == "verification":
        # Rows in samples-file order; failures to acquire are NaN rows, so row i always belongs to record i.
        recs = writer.samples(eid)
        dim = next((len(r["embedding"]) for r in recs if r.get("embedding")), 0)
        writer.write_array("embeddings", eid, np.array(
            [r["embedding"] if r.get("embedding") else [np.nan] * dim for r in recs], np.float32))
    writer.write_array("timings", eid, timings)
    stats = LatencyStats.from_ms(timings)
    backend = dict(result.backend or {})
    telemetry = dict(result.telemetry or {})
    contention = clean_record(result.contention)  # from the board: untrusted, kept only where well-formed
    return {"init_ms": result.init_ms, "first_inference_ms": result.first_inference_ms,
            "single_stream": stats.to_dict() | {"batch": result.single_stream_batch,
                                                "real_faces_per_query": result.real_faces_per_query},
            "cpu_util_pct": result.cpu_util_pct, "telemetry": telemetry,
            "contention": contention,
            "energy_mj_per_inference": result.energy_mj_per_inference,
            # beside the gross figure: the power and energy per inference above the idle board (metrics/energy.py)
            "energy_above_idle": above_idle(telemetry, result.energy_mj_per_inference, int(len(timings))),
            "validity": assess(stats, min_duration_s=min_duration_s, min_count=min_count, telemetry=telemetry,
                               backend_check=backend, contention=contention if isinstance(contention, dict) else None),
            "offline": dict(result.offline or {}), "memory": dict(result.memory or {}),
            "device_state": (clean_steady(result.steady_state) or {})
            | ({"settings": dataclasses.asdict(steady)} if steady is not None else {})}


class ChunkWatcher:
    """While a job runs, count the samples in the raw-output chunks its worker has written under out_dir and pass
    each increase to `advance(n)` (a progress task's advance): the host's view of "samples done" for an entry.

    A daemon thread wakes every `interval_s`, lists OUTPUTS_DIR and reads only the `sample_ids` of chunks it has not
    seen (the worker writes each chunk atomically); during the timed loops no chunk is written, so it only lists a
    folder. Remote launchers bring chunks back when the job ends, so there the count moves at the end.
    """

    def __init__(self, out_dir: Path, advance, *, interval_s: float = 2.0):
        import threading

        self.folder = Path(out_dir) / OUTPUTS_DIR
        self.advance = advance
        self.interval_s = interval_s
        self._seen: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="chunk-watcher", daemon=True)

    def poll(self) -> int:
        """Advance by the samples of chunks not seen before; returns how many."""
        new = 0
        for path in sorted(self.folder.glob("chunk-*.npz")) if self.folder.is_dir() else []:
            if path.name in self._seen:
                continue
            try:
                with np.load(path) as z:
                    new += int(len(z["sample_ids"]))
            except (OSError, ValueError, KeyError):  # collected (deleted) meanwhile, or not a chunk: not counted
                continue
            self._seen.add(path.name)
        if new:
            self.advance(new)
        return new

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.poll()

    def __enter__(self) -> "ChunkWatcher":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.poll()


def link(src: Path, dst: Path) -> None:
    """dst -> src as a symlink (replacing whatever is there): the local launcher's inputs folder costs no copies."""
    dst.unlink(missing_ok=True)
    os.symlink(Path(src).resolve(), dst)
