"""The host's datasets and faces are made while the boards are connected (harness/scenarios/host_faces.py)."""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager

from harness.cli import main
from harness.errors import EXIT_UNAVAILABLE, EXIT_USAGE, UnavailableError
from harness.scenarios import host_faces, orchestrate

RUN = ["run", "--target", "cpu", "--model", "gender-dlib", "--variant", "onnx-fp32", "--dataset", "london-frl",
       "--limit", "8", "--no-build"]


def decoding_until_stopped(started: threading.Event, stopped: threading.Event):
    """An acquisition that never ends by itself: says it started, then steps until HostFaces.stop()."""
    def acquire_all(datasets, cfg, det_ref, chipper, progress):
        step = progress("decode, detect, align", 10 ** 9)
        started.set()
        try:
            while True:
                step()
                time.sleep(0.01)
        except host_faces.Stopped:
            stopped.set()
            raise
    return acquire_all


def test_the_faces_are_decoded_while_the_boards_connect_and_stopped_when_none_can_be_had(
        built_packs, data_root, tmp_path, monkeypatch, capsys):
    started, stopped = threading.Event(), threading.Event()

    @contextmanager
    def connecting(where, target, **kw):
        # a board that takes its time and then cannot be had; before it answers, the host has started decoding
        if not started.wait(120):
            raise AssertionError("no face was decoded while the board was being connected")
        raise UnavailableError("board pi-a (10.0.0.7): unreachable")
        yield  # noqa: unreachable - a generator, as open_session is

    monkeypatch.setattr(host_faces, "acquire_all", decoding_until_stopped(started, stopped))
    monkeypatch.setattr(orchestrate, "open_session", connecting)
    results = tmp_path / "results"
    code = main([*RUN, "--device", "pi-a", "--results-dir", str(results), "--cache-dir", str(built_packs),
                 "--data-root", str(data_root)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == EXIT_UNAVAILABLE, err
    assert err[-1] == "bench: error: board pi-a (10.0.0.7): unreachable"
    assert stopped.is_set()  # the decoding was stopped before bench returned
    assert not results.exists() or not any(results.iterdir())  # no run was created


def test_a_data_error_comes_after_the_board_and_before_the_run(built_packs, data_root, tmp_path, monkeypatch,
                                                               capsys):
    """A dataset that cannot be read fails the host's thread at once; the main thread says it once the board has
    answered (as before the overlap: the board's errors first), and no run is created."""
    opened = []
    real = orchestrate.open_session

    @contextmanager
    def recording(*a, **k):
        with real(*a, **k) as sessions:
            opened.append(time.monotonic())
            yield sessions

    monkeypatch.setattr(orchestrate, "open_session", recording)
    results = tmp_path / "results"
    code = main(["run", "--target", "cpu", "--model", "gender-dlib", "--variant", "onnx-fp32", "--dataset",
                 str(tmp_path / "no-such-folder"), "--no-build", "--results-dir", str(results), "--cache-dir",
                 str(built_packs), "--data-root", str(data_root)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == EXIT_USAGE, err
    assert "no-such-folder" in err[-1]
    assert len(opened) == 1  # the session was opened, then the data error said
    assert not results.exists() or not any(results.iterdir())



def test_a_check_on_the_data_refuses_before_any_face_is_decoded(built_packs, data_root, monkeypatch):
    """`check` (bench run: --reference-kernel-path with no such reference run) runs on the loaded data before the
    acquisition; what it raises is what data() and faces() raise, and nothing is decoded."""
    from harness.errors import UsageError

    def must_not_decode(*a, **k):
        raise AssertionError("faces were decoded before the check refused")

    def refuse(data):
        assert [r["id"] for r in data.records] == ["london-frl"] and data.records[0]["n_evaluated"] == 8
        raise UsageError("--reference-kernel-path x86-amx: no reference run over the same data has it")

    monkeypatch.setattr(host_faces, "acquire_all", must_not_decode)
    cfg = orchestrate.RunConfig(target="cpu", models=("gender-dlib",), datasets=("london-frl",), limit=8)
    faces = host_faces.HostFaces(cfg, ["gender-dlib"], cache=built_packs, data_root=data_root, log=lambda m: None,
                                 progress=lambda d, t: (lambda n=1: None), check=refuse).start()
    try:
        for wait in (faces.data, faces.faces):
            try:
                wait()
            except UsageError as exc:
                assert "x86-amx" in str(exc)
            else:
                raise AssertionError(f"{wait.__name__}() did not raise the check's refusal")
    finally:
        faces.stop()


def test_stop_ends_the_real_acquisition_at_its_next_image(built_packs, data_root, monkeypatch):
    """The real decode/detect/align loop (harness/pipeline.py) lets Stopped through: stop() after the first image
    ends the thread, and faces() raises Stopped, never a half-made acquisition."""
    first = threading.Event()
    done = []
    real = host_faces.acquire_all

    def watched(datasets, cfg, det_ref, chipper, progress):
        def watched_progress(description, total):
            step = progress(description, total)  # the HostFaces step: raises Stopped once stop() was called

            def advance(n=1):
                step(n)
                done.append(n)
                first.set()
                time.sleep(0.2)  # room for stop() to be called before the next image
            return advance
        return real(datasets, cfg, det_ref, chipper, watched_progress)

    monkeypatch.setattr(host_faces, "acquire_all", watched)
    cfg = orchestrate.RunConfig(target="cpu", models=("gender-dlib",), datasets=("london-frl",), limit=24)
    faces = host_faces.HostFaces(cfg, ["gender-dlib"], cache=built_packs, data_root=data_root, log=lambda m: None,
                                 progress=lambda d, t: (lambda n=1: None)).start()
    assert first.wait(120)
    faces.stop()
    try:
        faces.faces()
    except host_faces.Stopped:
        pass
    else:
        raise AssertionError("faces() gave an acquisition after stop()")
    assert 1 <= len(done) < 24


def test_the_threads_lines_are_said_where_the_main_thread_reaches_them():
    """Lines from the host's thread are held: the datasets' lines come out at data(), the faces' progress at
    faces() (after `run ID -> DIR`), in the order written; a run refused in between says none of the faces' lines."""
    said = []
    held = host_faces._Held()
    log = held.log(said.append)
    progress = held.progress(lambda d, t: (lambda n=1: said.append(f"{d} +{n}")))
    log("london-frl: 8 images")
    mark = held.mark()
    step = progress("decode, detect, align", 8)
    step()
    log("pipeline sensitivity unavailable")
    assert said == []
    held.release(mark)
    assert said == ["london-frl: 8 images"]
    held.release()
    assert said == ["london-frl: 8 images", "decode, detect, align +1", "pipeline sensitivity unavailable"]
    step(2)  # once let out, lines pass straight through
    assert said[-1] == "decode, detect, align +2"
