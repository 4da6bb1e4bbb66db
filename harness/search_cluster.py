"""The blocked 1:N scorer on a Dask distributed cluster, for a lab that outgrows one host.

Same unit of work and the same merge as in-process (harness/metrics/search.py): each probe block is a task that
searches the whole gallery (scattered once to every worker, as float32 where that is exact: half the bytes) and
returns its SearchPartial (a few hundred kB); the client assembles them.

Where the cluster's time went (issue 18 measured 4.1x in-process; docs/benchmarks.md): not the transfers (the
gallery's scatter took 0.2-0.4 s, the returned partials next to nothing) but the tasks. A fresh worker's first
task imported the scorer and with it scipy.stats and pandas (3-6 s on a loaded 2-core host; harness.metrics now
imports its names on first use), and each probe block then took 1.7-2.5x as long in a worker as in-process: Dask
starts workers with MALLOC_TRIM_THRESHOLD_=65536 (distributed.nanny.pre-spawn-environ), so glibc hands every freed
block-sized temporary back to the kernel and the next block faults in fresh pages; the scorer now reuses one set
of block buffers per probe range (search._Scratch), and runs the same in a worker as in the client.

Scores are exact on the 2^-20 grid, so the rows are identical to the in-process ones whatever the workers, their
BLAS or the order the tasks finish in (tests/unit/test_search_cluster.py starts a real scheduler and two workers on
loopback and checks it).

    search_on_cluster(..., scheduler="tcp://10.0.0.5:8786")   # an existing cluster (`dask scheduler`, `dask worker`)
    search_on_cluster(..., scheduler="local")                 # a LocalCluster of two worker processes on this host

Dask is the `cluster` extra (pip install 'edge-fair-bench[cluster]'); without it, or when the scheduler does not
answer, one line and exit 3.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from harness.errors import UnavailableError
from harness.metrics.search import SearchPartial, SearchSettings, assemble, prepare, probe_range

CONNECT_TIMEOUT_S = 10


def connect(scheduler: str):
    """A distributed Client for `scheduler` ("local": a fresh two-worker LocalCluster), or UnavailableError."""
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        raise UnavailableError("--scheduler needs Dask distributed: pip install 'edge-fair-bench[cluster]'") from None
    if scheduler == "local":
        cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None)
        return Client(cluster)
    try:
        return Client(scheduler, timeout=f"{CONNECT_TIMEOUT_S}s")
    except (OSError, TimeoutError) as exc:
        raise UnavailableError(f"Dask scheduler {scheduler} does not answer within {CONNECT_TIMEOUT_S} s: "
                               f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from None
    except ValueError as exc:
        raise UnavailableError(f"Dask scheduler address {scheduler!r}: {exc}") from None


def search_on_cluster(probes: np.ndarray, gallery: np.ndarray, mate_pos: Sequence[int], probe_group: Sequence[int],
                      n_groups: int, settings: SearchSettings, *, client) -> SearchPartial:
    """The same result as harness.metrics.search.search, computed by the cluster's workers."""
    P, G, mates, groups = prepare(probes, gallery, mate_pos, probe_group)
    if not len(G) or not len(P):
        return assemble([], len(P), len(G), settings.k)
    g = client.scatter(_wire(G), broadcast=True)
    g_norm = float(np.sqrt(np.einsum("ij,ij->i", G, G).max()))  # the screen's bound, once for every task
    futures = []
    for p0 in range(0, len(P), settings.probe_block):
        p1 = min(p0 + settings.probe_block, len(P))
        # each task gets only its probe rows; positions stay global through p0
        futures.append(client.submit(_task, _wire(P[p0:p1]), g, mates[p0:p1], groups[p0:p1], p0, settings,
                                     n_groups, g_norm, pure=False))
    return assemble(client.gather(futures), len(P), len(G), settings.k)


def _wire(Q: np.ndarray) -> np.ndarray:
    """Quantized rows as they travel: float32 when that holds them exactly (components of unit vectors on the
    2^-20 grid need 21 significant bits of float32's 24), half the bytes of float64; float64 otherwise."""
    Q32 = Q.astype(np.float32)
    return Q32 if np.array_equal(Q32, Q) else Q


def _task(P_block, G, mates, groups, p0, settings, n_groups, gallery_norm) -> SearchPartial:
    # rows as they came (float32 where exact): the scorer screens in float32 and re-scores exactly from them
    # one thread: a worker runs as many tasks at once as it has threads, the cluster's parallelism
    part = probe_range(P_block, G, mates, groups, 0, len(P_block), settings, n_groups, gallery_norm=gallery_norm,
                       threads=1)
    part.p0, part.p1 = p0, p0 + len(P_block)
    return part


def searcher(client):
    """A drop-in for harness.metrics.search.search that runs on `client`'s cluster."""
    def run(probes, gallery, mate_pos, probe_group, n_groups, settings):
        return search_on_cluster(probes, gallery, mate_pos, probe_group, n_groups, settings, client=client)
    return run
