"""Markdown tables of a run's watchlist (1:N) rows: per probe group FPIR and FNIR at each threshold, per entry.

    python -m harness.report.watchlist RUN_DIR [DATASET]      # prints the tables docs/metrics.md shows
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def _cell(row: dict | None) -> str:
    if not row or row.get("value") is None:
        return "n/a"
    return f"{row['value']:.3f} [{row['ci_lo']:.3f}, {row['ci_hi']:.3f}] {row['k']}/{row['n']}"


def markdown(doc: dict, dataset: str, *, config: str = "own_gallery") -> str:
    """One table per entry: rows = probe groups, columns = FPIR and FNIR at each threshold (value [95% CI] k/n)."""
    out = []
    for e in doc.get("entries", []):
        sec = ((e.get("metrics") or {}).get("identification") or {}).get(dataset)
        if not sec or config not in sec:
            continue
        rows = sec[config]["rates"]
        groups = list(dict.fromkeys(r["group"] for r in rows if r["metric"] == "fpir"))
        thresholds = sec["thresholds"]
        head = ["group (probe)", "people"] + [f"{m.upper()} @ {t['kind']} {t['value']:.3f}"
                                             for t in thresholds for m in ("fpir", "fnir")]
        out.append(f"**{e['entry']}** ({config.replace('_', ' ')}; gallery {sec['n_gallery']} templates, "
                   f"{sec['n_distractors']} distractors; FNIR at rank {sec['rank_r']})\n")
        out.append("| " + " | ".join(head) + " |")
        out.append("|" + "---|" * len(head))
        for g in groups:
            people = {r["metric"]: r.get("n_subjects") for r in rows if r["group"] == g}
            cells = [g, f"{people.get('fnir') or 0} + {people.get('fpir') or 0}"]
            for t in thresholds:
                for m in ("fpir", "fnir"):
                    cells.append(_cell(next((r for r in rows if r["metric"] == m and r["group"] == g
                                             and r.get("threshold") == t["value"]), None)))
            out.append("| " + " | ".join(cells) + " |")
        out.append("")
    return "\n".join(out)


def main(argv: list[str]) -> int:
    run_dir = Path(argv[0])
    doc = json.loads((run_dir / "run.json").read_text())
    dataset = argv[1] if len(argv) > 1 else "london-frl-views"
    print(markdown(doc, dataset))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
