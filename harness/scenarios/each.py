"""`bench run --pool FILTER --each`: the same plan on every matching board, one run per board (the procurement
comparison: `bench compare` / `bench report --devices` over the runs), the host's acquisition made once.

Each board's run is an ordinary one-board run on its labgrid place (`--place NAME`, so a `--resume RUN` of one of
them continues on that board), one after the other; the first run decodes, detects and aligns the faces, the others
take them from it (orchestrate.run_benchmark's `shared`: the same data and settings give the same faces). A board
that fails (unhealthy, lost, infrastructure failures) does not stop the others: its error is one line and the exit
code is the worst of the runs'. Out-of-service places are skipped, saying so.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from harness.errors import EXIT_INTERRUPTED, BenchError, UnavailableError
from harness.launchers.session import Where


def matching_places(where: Where, log: Callable[[str], None]) -> list[str]:
    """The names of the labgrid places whose tags match `--pool` and that are in service, in name order."""
    from harness.launchers.pool import Pool, parse_filters, place_matches

    pool = Pool(where.coordinator)
    filters = parse_filters(where.pool)
    names = []
    for p in pool.places():
        if not place_matches(p.name, p.tags, filters):
            continue
        if p.out_of_service:
            log(f"--each: labgrid place {p.name} is out of service ({p.out_of_service}): skipped")
            continue
        names.append(p.name)
    if not names:
        raise UnavailableError(f"--each: no labgrid place in service matches {where.pool} at {pool.address} "
                               "(bench pool lists them)")
    return names


def run_each(cfg, where: Where, *, cache: Path, data_root: Path, results_root: Path, log: Callable[[str], None],
             progress, store=None) -> tuple[list[Path], int]:
    """One run of `cfg` per matching place; (the run folders that finished, the worst exit code: 0 when all did).
    `where`: the --pool selection (kind pool). `store`: written through as `bench run --store` (None: the results
    folder)."""
    import dataclasses

    from harness.scenarios.orchestrate import run_benchmark

    if where.kind != "pool":
        raise ValueError(f"run_each: a {where.kind} selection is no labgrid pool")
    places = matching_places(where, log)
    log(f"--each: {len(places)} board{'s' if len(places) != 1 else ''}: {', '.join(places)}")
    shared: dict = {}
    done, worst, lines = [], 0, []
    for name in places:
        one = dataclasses.replace(where, kind="place", place=name, pool=None, boards=None)
        try:  # the board's run records its place as settings.remote (so --resume RUN continues on that board)
            run_dir = run_benchmark(dataclasses.replace(cfg, sources=dict(cfg.sources)), cache=cache,
                                    data_root=data_root, results_root=results_root, remote=one.remote(), log=log,
                                    progress=progress, shared=shared, store=store)
        except BenchError as exc:
            from harness.names import shown

            if exc.exit_code == EXIT_INTERRUPTED:  # Ctrl-C stops every board's run, not just this one
                raise
            worst = max(worst, exc.exit_code)
            lines.append(f"board {name}: exit {exc.exit_code}: {shown(exc.message)}")
            log(f"bench: error: board {name}: {shown(exc.message)}")
            continue
        done.append(run_dir)
        lines.append(f"board {name}: run {run_dir.name} complete")
    for line in lines:
        log(f"--each: {line}")
    return done, worst
