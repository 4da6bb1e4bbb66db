"""Plain-text table helpers shared by the Markdown exports."""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import Any


def md_cell(value: Any) -> str:
    # A '|' or newline would break the table, and Markdown renderers pass raw HTML through: escape, don't drop.
    return html.escape(str(value), quote=False).replace("|", "\\|").replace("\n", " ")


def md_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(md_cell(h) for h in headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(md_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)
