"""Entry point shared by `bench worker JOB --out DIR` and `python -m harness.device JOB --out DIR`.

Exit codes: 0 the job ran (result.json status ok); 1 the job failed (result.json says why: test-error or
infrastructure-error); 2 the job file is unreadable, of another schema version, or malformed (one line on stderr,
no result.json: there is no job to report on).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from harness.errors import EXIT_FAILURE, EXIT_OK
from harness.jobs import JOB_FILE


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("job", metavar="JOB", help=f"the job file ({JOB_FILE}); the files it names sit beside it")
    parser.add_argument("--out", metavar="DIR", required=True,
                        help="output folder: result.json, outputs/chunk-*.npz, timings.npy (nothing is written "
                             "elsewhere)")
    parser.add_argument("--parent-pid", type=int, metavar="PID",
                        help="exit as soon as process PID (the launcher) is gone (Linux: PR_SET_PDEATHSIG)")
    parser.add_argument("--watch-stdin", action="store_true",
                        help="exit as soon as stdin reaches end of file (the launcher holds it open)")


def run(args: argparse.Namespace) -> int:
    """Raises BenchError (InputError) for an unreadable job; the CLI prints it as one line."""
    from harness.device.lifeline import tie_to_parent

    tie_to_parent(args.parent_pid, watch_stdin=args.watch_stdin)
    from harness.jobs import VideoJob, read_job

    job_path = Path(args.job)
    if job_path.is_dir():
        job_path = job_path / JOB_FILE
    job = read_job(job_path)
    if isinstance(job, VideoJob):
        from harness.device.video import run_video_job as run_job
    else:
        from harness.device.worker import run_job
    result = run_job(job, job_path.parent, Path(args.out))
    return EXIT_OK if result.ok else EXIT_FAILURE
