"""A name from a file is data, never a path or markup: one rule for ids that become paths, one for showing names.

`safe_id` is the single check every id passes before it becomes a file or folder name: dataset names in the
registry, run ids in the results store, model and target ids in the specs. It follows the portable filename
character set of POSIX (XBD 3.282: letters, digits, '.', '_', '-'), refuses a leading '.' or '-' (hidden files,
options), '..' anywhere, and bounds the length well below NAME_MAX (255 bytes). So an id can never name a parent,
a hidden folder, an absolute path or a second path component, and is the same on every filesystem.

`shown` turns any user-supplied string (a file name that is not valid UTF-8, a value with control characters or
terminal escapes) into one printable line: undecodable bytes appear as \\xNN, control characters as Python escapes.
Rich markup is a separate matter: see `harness.report.console.user_text`.
"""

from __future__ import annotations

import os
import re

from harness.errors import InputError

MAX_ID_LENGTH = 128
_SAFE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
SAFE_ID_RULE = f"letters, digits, '.', '_', '-'; starting with a letter or digit; no '..'; at most {MAX_ID_LENGTH}"


def id_problem(value: object) -> str | None:
    """Why `value` is not a safe id, or None when it is one."""
    if not isinstance(value, str):
        return f"a {type(value).__name__}, not a string"
    if not value:
        return "empty"
    if len(value) > MAX_ID_LENGTH:
        return f"{len(value)} characters long"
    if "\0" in value or not value.isprintable():
        return "contains a NUL or non-printable character"
    if "/" in value or "\\" in value or os.sep in value or (os.altsep and os.altsep in value):
        return "contains a path separator"
    if ".." in value:
        return "contains '..'"
    if value[0] in ".-":
        return f"starts with '{value[0]}'"
    if not _SAFE_ID.fullmatch(value):
        return "contains characters other than letters, digits, '.', '_', '-'"
    return None


def is_safe_id(value: object) -> bool:
    return id_problem(value) is None


def safe_id(kind: str, value: object, source: object = None) -> str:
    """Return `value` when it may be used as a file or folder name; else InputError (exit 2) naming `source`.

    kind: what the id names ("dataset name", "run id", "model id", "target id"); source: the file it came from, or
    None when the user typed it.
    """
    problem = id_problem(value)
    if problem is None:
        return value  # type: ignore[return-value]
    where = f"{shown(source)}: " if source is not None else ""
    raise InputError(f"{where}{kind} {shown(repr(value) if isinstance(value, str) else value)} is not a safe file "
                     f"name ({problem}); use {SAFE_ID_RULE} characters")


def shown(value: object) -> str:
    """One printable line for any user-supplied string or path.

    Bytes that are not UTF-8 (a file name decoded with surrogateescape, os.fsdecode) appear as \\xNN; newlines,
    tabs, ESC and other control characters as Python escapes, so a hostile name can neither break the one-line
    error contract nor drive the terminal.
    """
    if isinstance(value, bytes):
        text = value.decode("utf-8", "backslashreplace")
    else:
        text = os.fspath(value) if isinstance(value, os.PathLike) else str(value)
        if utf8_problem(text):  # surrogateescape'd bytes -> \xNN; any other lone surrogate -> \udNNN
            try:
                text = text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
            except UnicodeEncodeError:
                text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in text)


def utf8_problem(value: str) -> bool:
    """True when `value` cannot be written as UTF-8 (it carries surrogateescape'd bytes from a non-UTF-8 name)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False
