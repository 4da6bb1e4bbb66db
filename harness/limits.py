"""Limits on untrusted input read from the environment: one rule for every such setting (a whole number >= 1;
anything else is a usage error, exit 2, naming the variable). The settings and their defaults are documented where
they apply (docs/datasets.md, docs/remote.md "Trust")."""

from __future__ import annotations

import os
from collections.abc import Mapping

from harness.errors import UsageError
from harness.names import shown


def positive_int(var: str, default: int | None = None, environ: Mapping[str, str] = os.environ) -> int | None:
    """The value of environment variable `var` as a whole number >= 1, or `default` when it is unset or empty."""
    raw = environ.get(var)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        hint = f" (default {default})" if default is not None else ""
        raise UsageError(f"{var}={shown(raw)}: must be a whole number >= 1{hint}")
    return value
