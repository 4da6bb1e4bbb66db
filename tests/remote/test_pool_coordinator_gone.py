"""Issue 17, item 13: the labgrid coordinator goes away while a `bench run --pool` is running. The run itself
never needs the coordinator between acquire and release, so it completes: exit 0, one warning line saying the place
was not released and how to free it, no stray `ERROR:root:` line from labgrid's client, no traceback.

Its own lab and coordinator (module scope): the coordinator is killed here, which the other pool tests must not see.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.remote.lab import Labgrid, wait_for_first_chunk
from tests.remote.test_remote_run import ENTRY, RUN, bench, records, run_json

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@pytest.fixture(scope="module")
def doomed(lab, tmp_path_factory):
    pytest.importorskip("labgrid")
    lab.add("gone-a", tags={"target": "gone"})
    lg = Labgrid(tmp_path_factory.mktemp("lg-gone"), lab)
    try:
        yield lab, lg
    finally:
        lg.close()


def test_coordinator_gone_at_release_is_a_warning_and_exit_0(doomed, built_packs, tiny_data, tmp_path):
    lab, lg = doomed
    # The ssh launcher brings chunks back every 5 s (poll_s): the timed windows must outlast the first fetch, or the
    # only chunk arrives with the final one and the run is over before the coordinator can be killed mid-run.
    proc = bench(tmp_path, built_packs, tiny_data, *RUN, "--min-duration", "12", "--pool", "target=gone",
                 "--coordinator", lg.address, "--inventory", str(lab.inventory), wait=False)
    try:
        assert wait_for_first_chunk(proc, tmp_path, ENTRY), proc.communicate()[1]
        for p in (lg.exporter, lg.coordinator):  # the coordinator host goes down mid-run
            p.kill()
            p.wait()
        out, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "Traceback" not in err and "ERROR:root" not in err and "ERROR:" not in err, err
    warnings = [line for line in err.splitlines() if line.startswith("bench: warning:")]
    assert len(warnings) == 1, err
    assert "labgrid place gone-a not released" in warnings[0] and "bench pool release --stale" in warnings[0], err
    assert not any(line.startswith("bench: error:") for line in err.splitlines()), err
    run_dir = Path(out.strip().splitlines()[-1])
    assert run_json(run_dir)["status"] == "complete"
    assert len(records(run_dir)) == 24
