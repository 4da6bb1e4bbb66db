"""How many threads numpy's BLAS will use, read from the loaded library itself (issue 18: `--threads` for the search).

Standard library only (ctypes, /proc/self/maps), Python 3.8: nothing new on the board. The lookup follows
threadpoolctl (github.com/joblib/threadpoolctl, threadpoolctl.py: `_OpenBLASModule.get_num_threads` and
`_MKLModule.get_num_threads`): find the BLAS among the shared libraries this process has loaded, by file name, then
call its own thread getter, `openblas_get_num_threads` with the affixes numpy's and scipy's wheels add
(`scipy_openblas_get_num_threads64_` for numpy >= 2) or MKL's `MKL_Get_Max_Threads`.

Where the library cannot be found or asked (no /proc, a BLAS without a getter, an OpenMP build of OpenBLAS whose
count lives in the OpenMP runtime), the record says so: the count is then only "as requested", never a guess.
"""

from __future__ import annotations

import ctypes
import itertools
from typing import Any, Dict, List, Optional, Tuple

AS_REQUESTED = "as requested"
_OPENBLAS = tuple(f"{p}openblas_get_num_threads{s}" for p, s in itertools.product(("", "scipy_"), ("", "64_", "_64")))
_KINDS = (("openblas", _OPENBLAS), ("mkl_rt", ("MKL_Get_Max_Threads",)))


def loaded_libraries(maps: str = "/proc/self/maps") -> List[str]:
    """Paths of the shared libraries mapped into this process (Linux), in first-mapped order; [] elsewhere."""
    try:
        with open(maps) as fh:
            lines = fh.read().splitlines()
    except OSError:
        return []
    seen: Dict[str, None] = {}
    for line in lines:
        parts = line.split(None, 5)
        if len(parts) == 6 and ".so" in parts[5]:
            seen.setdefault(parts[5].strip(), None)
    return list(seen)


def _ask(path: str, symbols: Tuple[str, ...]) -> Optional[Tuple[str, int]]:
    try:
        lib = ctypes.CDLL(path, mode=getattr(ctypes, "RTLD_NOLOAD", 0) | ctypes.RTLD_GLOBAL)
    except OSError:
        return None
    for name in symbols:
        fn = getattr(lib, name, None)
        if fn is not None:
            fn.restype = ctypes.c_int
            n = int(fn())
            return (name, n) if n > 0 else None
    return None


def threads(requested: int) -> Dict[str, Any]:
    """The record of the BLAS threads: {"requested": n or "runtime default", "used": count or "as requested" /
    "unknown", "source": the library and function read, or why none was}. Call after numpy is imported."""
    req: Any = requested if requested > 0 else "runtime default"
    for path in loaded_libraries():
        base = path.rsplit("/", 1)[-1].lower()
        for kind, symbols in _KINDS:
            if kind in base:
                got = _ask(path, symbols)
                if got is not None:
                    return {"requested": req, "used": got[1], "source": f"{base}: {got[0]}()"}
    return {"requested": req, "used": AS_REQUESTED if requested > 0 else "unknown",
            "source": "no loaded BLAS library answers a thread-count query"}
