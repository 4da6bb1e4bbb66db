"""`bench worker JOB --out DIR`: run one job on this machine (the device side; see harness/device/)."""

from __future__ import annotations


def register(sub) -> None:
    from harness.device.main import add_arguments

    p = sub.add_parser("worker", help="run one benchmark job on this device (launched by bench run; rarely by hand)",
                       description="Run one job (job.json and the files it names) and write result.json, raw "
                                   "outputs and timings under --out, nowhere else. Needs only numpy, psutil and one "
                                   "runtime.")
    add_arguments(p)
    p.set_defaults(func=_worker)


def _worker(args) -> int:
    from harness.device.main import run

    return run(args)
