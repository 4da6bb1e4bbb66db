"""The board's Edge TPU runtime (libedgetpu) version, read on the board beside the delegate it loads (issue 21).

Coral ships libedgetpu as the Debian packages `libedgetpu1-std` and `libedgetpu1-max` (coral.ai/docs/accelerator/
get-started; the same names on Mendel and in google-coral/libedgetpu's debian/control), so `dpkg-query` names the
installed one and its version. Without dpkg (a library built from source) the file the loader resolves gives at
least its ABI version (libedgetpu.so.1 -> libedgetpu.so.1.0). Whatever either says is untrusted text: only a
package of those names and a version of Debian's version characters are taken; anything else is "unknown".

Standard library only: this runs in the device worker (Python 3.8 on older boards).
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path
from typing import Optional

PACKAGES = ("libedgetpu1-std", "libedgetpu1-max")
_VERSION = re.compile(r"[0-9][0-9A-Za-z.+~:-]{0,63}")  # Debian policy 5.6.12 version characters, bounded
_LINE = re.compile(r"(?P<status>[a-zA-Z ]{2,3})\t(?P<package>libedgetpu1-(?:std|max))\t(?P<version>[^\t\n]*)")
_SONAME = re.compile(r"libedgetpu\.so\.([0-9][0-9.]{0,15})")
LIBRARY_DIRS = ("/usr/lib", "/usr/local/lib", "/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu",
                "/usr/lib/arm-linux-gnueabihf")


def parse_dpkg_query(text: str) -> Optional[str]:
    """`libedgetpu1-std 16.0` from dpkg-query -W -f '${db:Status-Abbrev}\\t${Package}\\t${Version}\\n' output:
    the first package installed ("ii"), or None."""
    for line in text.splitlines()[:16]:
        m = _LINE.fullmatch(line)
        if m and m.group("status").startswith("ii") and _VERSION.fullmatch(m.group("version")):
            return f"{m.group('package')} {m.group('version')}"
    return None


def from_dpkg() -> Optional[str]:
    try:
        done = subprocess.run(["dpkg-query", "-W", "-f", "${db:Status-Abbrev}\\t${Package}\\t${Version}\\n",
                               *PACKAGES], capture_output=True, text=True, errors="replace", timeout=20,
                              stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return parse_dpkg_query(done.stdout[:4096])  # exit 1 when one of the two is unknown; the other is still listed


def from_library_file(library: str, dirs=None) -> Optional[str]:
    """`libedgetpu.so.1.0` (the file the loader's name resolves to), from a path or a search of `dirs`."""
    candidates = [Path(library)] if os.sep in library else [Path(d) / library for d in (dirs or LIBRARY_DIRS)]
    for c in candidates:
        try:
            real = Path(os.path.realpath(c))
        except OSError:
            continue
        if real.is_file():
            m = _SONAME.fullmatch(real.name)
            if m:
                return f"{real.name} (file; no dpkg record)"
    return None


def libedgetpu_version(library: str = "libedgetpu.so.1") -> str:
    """What the board says its libedgetpu is, e.g. 'libedgetpu1-std 16.0', or 'unknown'."""
    return from_dpkg() or from_library_file(library) or "unknown"
