"""harness/launchers/trust.py in-process: the checks the hostile-board suite (tests/hostile/test_hostile_board.py)
drives end to end, here on crafted files, including the ones a run cannot produce cheaply (a deflate bomb, a tar
stream with links and `..` members, a transfer larger than its bound read without reading it whole)."""

from __future__ import annotations

import io
import json
import sys
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from device_helpers import job_folder  # noqa: E402

from harness.errors import InfrastructureError, UsageError  # noqa: E402
from harness.jobs import JobResult  # noqa: E402
from harness.launchers import trust  # noqa: E402

W = "board evil"


def test_limits_come_from_the_environment_with_defaults():
    assert trust.limits({}) == trust.Limits()
    lim = trust.limits({"BENCH_MAX_CHUNK_MB": "2", "BENCH_MAX_SAMPLES_PER_JOB": "7", "BENCH_MAX_RESULT_KB": "3"})
    assert (lim.chunk_bytes, lim.samples_per_job, lim.result_bytes) == (2 << 20, 7, 3072)
    with pytest.raises(UsageError, match="BENCH_MAX_TRANSFER_MB=0: must be a whole number >= 1"):
        trust.limits({"BENCH_MAX_TRANSFER_MB": "0"})
    with pytest.raises(UsageError, match="BENCH_MAX_CHUNK_MB=lots"):
        trust.limits({"BENCH_MAX_CHUNK_MB": "lots"})


def _chunk(path: Path, ids=("s0", "s1"), ms=(1.0, 2.0), out=None, compress=False, **extra) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {"sample_ids": np.array(ids), "infer_ms": np.array(ms, np.float64),
              "out0": np.zeros((len(ids), 2), np.float32) if out is None else out, **extra}
    with open(path, "wb") as fh:
        (np.savez_compressed if compress else np.savez)(fh, **arrays)
    return path


def test_a_good_chunk_reads_back(tmp_path):
    c = trust.read_chunk(_chunk(tmp_path / "outputs" / "chunk-00000.npz"), where=W)
    assert c.sample_ids == ("s0", "s1") and c.infer_ms.tolist() == [1.0, 2.0] and c.outputs[0].shape == (2, 2)


@pytest.mark.parametrize("kw, fragment", [
    ({"ids": (1, 2)}, "'sample_ids': is a int64 array"),
    ({"ms": (1.0,)}, "'infer_ms': is a float64 array of shape (1,) for 2 samples"),
    ({"ms": (1.0, float("nan"))}, "'infer_ms': holds a value that is not a finite number"),
    ({"ms": (1.0, -3.0)}, "'infer_ms': holds a value that is not a finite number >= 0"),
    ({"out": np.zeros((3, 2))}, "'out0': is a float64 array of shape (3, 2) for 2 samples"),
    ({"out": np.array([{"a": 1}, {"b": 2}], dtype=object)}, "unreadable"),
    ({"extra": np.zeros(1)}, "unexpected member 'extra.npy'"),
], ids=["int-ids", "short-ms", "nan-ms", "negative-ms", "rows", "object", "extra-member"])
def test_malformed_chunks_are_refused_naming_the_field(tmp_path, kw, fragment):
    extra = {"extra": kw.pop("extra")} if "extra" in kw else {}
    path = tmp_path / "outputs" / "chunk-00000.npz"
    if "out" in kw and kw["out"].dtype == object:
        path.parent.mkdir(parents=True)
        with open(path, "wb") as fh:
            np.savez(fh, sample_ids=np.array(["s0", "s1"]), infer_ms=np.array([1.0, 2.0]), out0=kw["out"])
    else:
        _chunk(path, **kw, **extra)
    with pytest.raises(InfrastructureError, match=None) as exc:
        trust.read_chunk(path, where=W)
    assert exc.value.message.startswith(f"{W}: outputs/chunk-00000.npz") and fragment in exc.value.message


def test_a_deflate_bomb_is_refused_from_the_zip_directory(tmp_path):
    """A 1 MiB-limit chunk that is small on disk but unpacks to 8 MiB: refused before anything is inflated."""
    path = _chunk(tmp_path / "outputs" / "chunk-00000.npz", out=np.zeros((2, 1 << 19), np.float64), compress=True)
    assert path.stat().st_size < 1 << 20
    with pytest.raises(InfrastructureError, match="unpacks to .* over the limit of 1 MiB"):
        trust.read_chunk(path, where=W, lim=trust.Limits(chunk_bytes=1 << 20))


def test_ids_must_be_sent_once(tmp_path):
    c = trust.read_chunk(_chunk(tmp_path / "outputs" / "chunk-00000.npz", ids=("s0", "s0")), where=W)
    with pytest.raises(InfrastructureError, match="returns sample 's0' twice"):
        trust.checked_ids(c, allowed={"s0"}, done=set(), seen=set(), where=W)
    c = trust.read_chunk(_chunk(tmp_path / "outputs" / "chunk-00001.npz"), where=W)
    with pytest.raises(InfrastructureError, match="names sample 's1', which the host did not send"):
        trust.checked_ids(c, allowed={"s0"}, done=set(), seen=set(), where=W)
    # a chunk whose records were all written before its file was removed (an interrupted collection): skipped
    assert trust.checked_ids(c, allowed={"s0", "s1"}, done={"s0", "s1"}, seen=set(), where=W) == []
    with pytest.raises(InfrastructureError, match="twice"):  # ... but not when this collection saw them
        trust.checked_ids(c, allowed={"s0", "s1"}, done={"s0", "s1"}, seen={"s0"}, where=W)
    with pytest.raises(InfrastructureError, match="twice"):  # part done already: a repeat, not a leftover
        trust.checked_ids(c, allowed={"s0", "s1"}, done={"s0"}, seen=set(), where=W)


def test_every_sample_sent_comes_back(tmp_path):
    job, _ = job_folder(tmp_path / "in", n=5)
    trust.check_returned(job, {f"s{i}" for i in range(5)}, where=W)
    with pytest.raises(InfrastructureError, match=r"2 of 5 samples sent did not come back \(first: 's3'\)"):
        trust.check_returned(job, {"s0", "s1", "s2"}, where=W)


def _result(job, **changes) -> dict:
    from harness.environment import fingerprint

    d = json.loads(JobResult(entry=job.entry, status="ok", backend={
        "runtime": "onnxruntime", "version": "1", "requested": "CPUExecutionProvider",
        "active": ["CPUExecutionProvider"], "ok": True, "detail": None}, output_names=("y",), init_ms=1.0,
        first_inference_ms=1.0, timings="timings.npy", single_stream_batch=1, environment=fingerprint()).to_json())
    d.update(changes)
    return d


@pytest.mark.parametrize("changes, fragment", [
    ({"entry": "other"}, "field 'entry'"),
    ({"init_ms": -1}, "field 'init_ms'"),
    ({"timings": "/etc/passwd"}, "field 'timings'"),
    ({"chunks": ["../x.npz"]}, "field 'chunks'"),
    ({"backend": {"runtime": "litert", "requested": "xnnpack", "active": [], "ok": True}}, "field 'backend.runtime'"),
    ({"backend": {"runtime": "onnxruntime", "requested": "CPUExecutionProvider", "active": ["CPU"], "ok": False}},
     "field 'backend.ok'"),
    ({"surprise": 1}, "unknown field(s) surprise"),
    ({"schema_version": 99}, "schema version 99"),
    ({"windows": [1, 2]}, "field 'windows': is not an object"),
    ({"windows": {"clock": "time.time", "timed": [1.7e9, 1.7e9 + 1], "x": 1}}, "field 'windows': has unknown key"),
    ({"windows": {"clock": "monotonic", "timed": [1.7e9, 1.7e9 + 1]}}, "field 'windows.clock'"),
    ({"windows": {"clock": "time.time", "timed": [1.7e9 + 1, 1.7e9]}}, "field 'windows.timed': is [1"),
    ({"windows": {"clock": "time.time", "timed": [5.0, 6.0]}}, "field 'windows.timed': is [5.0, 6.0]"),
    ({"windows": {"clock": "time.time", "timed": [1.7e9, "later"]}}, "field 'windows.timed': is not a pair"),
    ({"windows": {"clock": "time.time", "timed": [1.7e9, 1.7e9 + 1], "idle": [1.7e9 - 1, 1.7e9 + 0.5]}},
     "field 'windows.idle': ends after the timed window starts"),
], ids=["entry", "negative", "timings-path", "chunk-name", "runtime", "not-proven", "unknown-field", "version",
        "windows-type", "windows-key", "windows-clock", "windows-order", "windows-epoch", "windows-string",
        "windows-idle"])
def test_result_claims_are_checked(tmp_path, changes, fragment):
    job, _ = job_folder(tmp_path / "in")
    (tmp_path / "result.json").write_text(json.dumps(_result(job, **changes)))
    with pytest.raises(InfrastructureError) as exc:
        trust.read_result(tmp_path, job, where=W)
    assert exc.value.message.startswith(f"{W}: ") and fragment in exc.value.message


def test_environment_and_health_cross_checks(tmp_path):
    from harness.environment import fingerprint

    job, _ = job_folder(tmp_path / "in")
    (tmp_path / "result.json").write_text(json.dumps(_result(job)))
    assert trust.read_result(tmp_path, job, where=W, environment=fingerprint()).ok
    other = fingerprint() | {"python": {"version": "2.7.18"}}
    with pytest.raises(InfrastructureError, match="field 'environment.python.version'"):
        trust.read_result(tmp_path, job, where=W, environment=other)
    health = {"backends": [{"runtime": "onnxruntime", "requested": "CPUExecutionProvider", "available": False}]}
    with pytest.raises(InfrastructureError, match="field 'backend.active'.*health check found it unavailable"):
        trust.read_result(tmp_path, job, where=W, health=health)


@pytest.mark.parametrize("text, fragment", [
    ('{"a": NaN}', "NaN is not a number JSON allows"),
    ("[" * 100000 + "]" * 100000, "nested too deeply"),
    (b"\xff\xfe{}", "is not UTF-8"),
])
def test_result_json_that_is_not_json(tmp_path, text, fragment):
    job, _ = job_folder(tmp_path / "in")
    (tmp_path / "result.json").write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(InfrastructureError, match=fragment):
        trust.read_result(tmp_path, job, where=W)


def test_strings_from_a_board_are_escaped(tmp_path):
    job, _ = job_folder(tmp_path / "in")
    d = _result(job, status="test-error", reason="\x00\x1b[31mred\x1b[0m\x9b", timings=None)
    (tmp_path / "result.json").write_text(json.dumps(d))
    r = trust.read_result(tmp_path, job, where=W)
    assert r.reason == "\\x00\\x1b[31mred\\x1b[0m\\x9b" and r.reason.isprintable()


def _tar(members: list[tuple[str, bytes | None, bytes]]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data, kind in members:
            info = tarfile.TarInfo(name)
            if kind == tarfile.SYMTYPE:
                info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def test_receive_tar_takes_only_expected_regular_members(tmp_path):
    stream = _tar([("outputs/chunk-00000.npz", b"a", tarfile.REGTYPE), ("../escape.npz", b"x", tarfile.REGTYPE),
                   ("/abs.npy", b"x", tarfile.REGTYPE), ("outputs/chunk-00001.npz", None, tarfile.SYMTYPE),
                   ("timings.npy", b"t", tarfile.REGTYPE), ("result.json", b"{}", tarfile.REGTYPE),
                   ("outputs/../result.json", b"x", tarfile.REGTYPE)])
    out = tmp_path / "out"
    out.mkdir()
    trust.receive_tar(io.BytesIO(stream), out, where=W, final=False)
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file()) == [
        "out/outputs/chunk-00000.npz"]
    trust.receive_tar(io.BytesIO(stream), out, where=W, final=True)
    assert sorted(p.name for p in out.rglob("*") if p.is_file()) == ["chunk-00000.npz", "result.json", "timings.npy"]
    assert not (tmp_path / "escape.npz").exists() and not (out / "outputs" / "chunk-00001.npz").exists()


class _Endless(io.RawIOBase):
    """A board that never stops sending: counts what the host read."""

    def __init__(self, head: bytes):
        self.head, self.n = head, 0

    def readable(self):
        return True

    def readinto(self, b):
        data = (self.head[self.n:self.n + len(b)] if self.n < len(self.head) else b"\0" * len(b))
        b[:len(data)] = data
        self.n += len(data)
        return len(data)


def test_a_transfer_is_read_only_up_to_its_bound(tmp_path):
    header = tarfile.TarInfo("outputs/chunk-00000.npz")
    header.size = 1 << 40  # claims a terabyte
    lim = trust.Limits(transfer_bytes=1 << 20, chunk_bytes=1 << 50)
    stream = _Endless(header.tobuf())
    with pytest.raises(InfrastructureError, match=r"board evil: transfer: is over the limit of 1 MiB "
                                                  r"\(BENCH_MAX_TRANSFER_MB\)"):
        trust.receive_tar(stream, tmp_path, where=W, final=False, lim=lim)
    assert stream.n <= (1 << 20) + (1 << 17)
    assert not any(p.is_file() and not p.name.startswith(".") for p in tmp_path.rglob("*"))
    with pytest.raises(InfrastructureError, match="is 1099511627776 bytes, over the limit of 64 MiB"):
        trust.receive_tar(_Endless(header.tobuf()), tmp_path, where=W, final=False)


def test_outputs_that_are_links_or_special_files_are_not_read(tmp_path):
    import os

    job, _ = job_folder(tmp_path / "in")
    out = tmp_path / "out"
    out.mkdir()
    (out / "result.json").symlink_to(tmp_path / "in" / "job.json")
    with pytest.raises(InfrastructureError, match="result.json: is a symbolic link"):
        trust.read_result(out, job, where=W)
    (out / "result.json").unlink()
    os.mkfifo(out / "result.json")
    with pytest.raises(InfrastructureError, match="result.json: is not a regular file"):
        trust.read_result(out, job, where=W)
    (out / "outputs").symlink_to(tmp_path / "in")
    with pytest.raises(InfrastructureError, match="outputs: is a symbolic link"):
        trust.chunk_paths(out, where=W)


@pytest.mark.parametrize("report, fragment", [
    (b"[1]", "is not a JSON object"),
    (b'{"backends": [{"runtime": "onnxruntime"}]}', "field 'backends'"),
    (b'{"backends": [], "problems": "none"}', "field 'problems'"),
    (b"x" * 2048, "over the limit of 1 KiB (BENCH_MAX_RESULT_KB)"),
])
def test_health_reports_are_checked(report, fragment):
    with pytest.raises(InfrastructureError, match=None) as exc:
        trust.parse_health(report, where=W, lim=trust.Limits(result_bytes=1024))
    assert fragment in exc.value.message
    ok = trust.parse_health(b'{"backends": [{"runtime": "litert", "requested": "xnnpack", "available": true}], '
                            b'"reason": "\\u001b[2J"}', where=W)
    assert ok["reason"] == "\\x1b[2J"
