"""The buyer's page with the 1:N part filled (issue 22 x issue 18): 5 boards, each with a scored watchlist run
(tests/unit/helpers_watchlist.scored_run: the real scorer on synthetic embeddings, fp32 and int8, each timed on the
board at two gallery sizes), judged against examples/watchlist.toml: under 5 s, the page's goal for 5 boards."""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "tests" / "unit")]


def test_buyers_page_5_watchlist_boards(tmp_path, benchmark):
    from helpers_watchlist import scored_run, search_record

    from harness.report import buyers
    from harness.report.procurement import load_policy

    runs = []
    for i, target in enumerate(("cpu", "rpi", "jetson", "coral", "hailo")):
        run = scored_run(tmp_path / f"b{i}")
        run.doc["target"] = {"id": target}
        for x in run.entries:
            x["speed"] = {"search": {"syn": search_record((22, 0.02 * (i + 1), "VALID"), (220, 0.2, "VALID"))}}
        runs.append(run)
    policy = load_policy(REPO / "examples" / "watchlist.toml")
    page = benchmark.pedantic(lambda: buyers.render(runs, policy=policy), rounds=2, iterations=1)
    assert page.count("<h2 id=identification>") == 1 and page.count("FPIR against gallery size at the fp32") == 5
    assert benchmark.stats["max"] < 5.0
