"""`bench export RUN... --format parquet|csv -o DIR`: the runs' entry, speed, rate and environment rows as tables.

Writes DIR/runs.<ext>, entries.<ext>, speed.<ext>, rates.<ext> and environment.<ext>: one row per run (board,
target, provenance real/emulated/imported, fingerprint summary and sha256) / entry / entry / rate row / fingerprint
key; the identification tables and search_speed (the watchlist search timed on the board, per entry, dataset and
gallery size); with the columns of the PostgreSQL store's tables (harness/results/rows.py), for pandas
(`pd.read_parquet`) or DuckDB (`SELECT * FROM 'DIR/rates.parquet'`). Parquet needs pyarrow (the `store` extra).
Runs come from the results store (--store / $BENCH_STORE, default the local results folder).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from harness.errors import EXIT_OK, UnavailableError
from harness.results.rows import COLUMNS, RUN_COLS, rows_for, run_row
from harness.results.uri import store_from_args


def register(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = subparsers.add_parser("export", help="export runs' run, entry, speed, rate and identification rows as Parquet or CSV",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", metavar="RUN", help="run ids (or unique prefixes)")
    p.add_argument("--format", choices=("parquet", "csv"), default="parquet")
    p.add_argument("-o", "--output", type=Path, required=True, metavar="DIR", help="folder for the table files")
    p.set_defaults(func=run)
    return p


def frames(runs) -> dict[str, pd.DataFrame]:
    """One DataFrame per table over all `runs` (loaded Run objects): the runs table, then the store's tables."""
    rows: dict[str, list[tuple]] = {t: [] for t in COLUMNS}
    for run in runs:
        for table, part in rows_for(run.doc).items():
            rows[table] += part
    return {"runs": pd.DataFrame.from_records([run_row(r.doc) for r in runs], columns=list(RUN_COLS)),
            **{t: pd.DataFrame.from_records(rows[t], columns=list(COLUMNS[t])) for t in COLUMNS}}


def run(args: argparse.Namespace) -> int:
    with store_from_args(args) as store:
        runs = [store.load(ref) for ref in args.runs]
    if args.format == "parquet":
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            raise UnavailableError("--format parquet needs pyarrow: pip install 'edge-fair-bench[store]' "
                                   "(or use --format csv)") from None
    args.output.mkdir(parents=True, exist_ok=True)
    for table, df in frames(runs).items():
        out = args.output / f"{table}.{args.format}"
        if args.format == "parquet":
            df.to_parquet(out, index=False)
        else:
            df.to_csv(out, index=False)
        print(f"wrote {out} ({len(df)} rows)", file=sys.stderr)
    return EXIT_OK
