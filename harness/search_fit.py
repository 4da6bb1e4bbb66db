"""`bench run --search-sizes`: a gallery size the board cannot hold is refused before the run is created.

The board refuses such a size itself (harness/device/search.py `check_fits`, psutil's available memory), but only
when the search job reaches it: after decoding, detecting, embedding and scoring. Everything that check needs is
known before the run starts: the sizes (the run setting), each embedding entry's storage precision (its variant's,
harness.search_job.precision_of), the embedding dimension (the last axis of the model file's first output, read
from the ONNX graph or the TFLite interpreter's output details) and the board's memory:

Each Session answers `memory()` for the machine its jobs run on (harness/launchers/session.py):
- the local worker (`--target cpu` and other targets run on this machine) and the emulated board (qemu-user runs
  on this host, in this host's memory): psutil's `available` (`host_memory`), the figure the board itself checks
  against;
- a remote board (RemoteSession.memory, harness/launchers/remote.py): its health report's `memory_available_mb` (harness/device/health.py: psutil's `available` on the
  board, the figure its own check reads, when the health check ran), or, from a board whose harness predates that
  field, `fingerprint.memory_total_mb` (harness/environment.py), its total memory: a bound, since a size that does
  not fit in the board's total memory never fits in what it has available. Both are untrusted: a value that is not
  a positive number is not used, and the board's own check then stays the only one.

The bytes are the board's own formula (harness.device.search.gallery_bytes, too_large), so the host refuses
exactly what the board would with that memory. The board's check stays as the last guard.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from harness.errors import GalleryTooLarge


def embedding_dim(path: Path) -> int | None:
    """Components of the embedding a model file outputs: the last axis of its first output, or None where the file
    does not say (a dynamic axis)."""
    path = Path(path)
    if path.suffix == ".onnx":
        import onnx

        out = onnx.load(str(path), load_external_data=False).graph.output[0]
        dims = out.type.tensor_type.shape.dim
        last = dims[-1].dim_value if len(dims) and dims[-1].HasField("dim_value") else 0
    elif path.suffix == ".tflite":
        from ai_edge_litert.interpreter import Interpreter

        shape = Interpreter(model_path=str(path)).get_output_details()[0]["shape"]
        last = int(shape[-1]) if len(shape) else 0
    else:
        return None
    return int(last) if last > 0 else None


def host_memory(emulated: bool = False) -> tuple[float, str]:
    """(MiB, what they are, for the refusal's line) of this machine: the local worker's, and the emulated board's
    (qemu-user runs on this host, in this host's memory). A remote board answers from its health report
    (harness/launchers/remote.py RemoteSession.memory); every Session has `memory()`."""
    import psutil

    where = "this host (the emulated board's memory)" if emulated else "this machine"
    return psutil.virtual_memory().available / float(1 << 20), f"{where} has {{mb}} MiB available"


def refuse_unfit_sizes(sizes: Iterable[int], entries: Iterable[dict], memory: tuple[float, str] | None) -> None:
    """GalleryTooLarge (exit 2, one line) naming the first size that would not fit: for each embedding entry of the
    plan that will run (status pending, with its model file), at its storage precision and its model's dimension.
    Nothing is checked where the memory is unknown."""
    from harness.device.search import too_large
    from harness.search_job import precision_of

    if memory is None:
        return
    have_mb, have = memory
    dims: dict[str, int | None] = {}
    for e in entries:
        if e.get("task") != "verification" or e.get("status") != "pending" or not e.get("path"):
            continue
        path = str(e["path"])
        if path not in dims:
            dims[path] = embedding_dim(Path(path))
        if dims[path] is None:
            continue
        precision = precision_of(e.get("precision"), e.get("variant"))
        for size in sorted(sizes, reverse=True):
            reason = too_large(int(size), dims[path], precision, have_mb, f"--search-sizes {size:,} ({e['entry']})",
                               have)
            if reason is not None:
                raise GalleryTooLarge(reason)
