"""`bench data list|add|verify|fetch`: see docs/datasets.md."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from harness.data import layouts, registry
from harness.data.catalog import CATALOG, catalog_entry
from harness.data.dataset import GROUP_SEP, Dataset, load_dataset
from harness.data.fetch import fetch_dataset
from harness.data.images import check_limits
from harness.data.verify import verify_dataset
from harness.errors import EXIT_INTEGRITY, EXIT_OK, InputError
from harness.names import shown
from harness.paths import data_root


def register(sub) -> None:
    p = sub.add_parser("data", help="list, register, verify and fetch datasets",
                       description="Datasets: built-ins under the data root, plus ones registered with `bench data add`.")
    dsub = p.add_subparsers(dest="data_command", metavar="SUBCOMMAND")
    dsub.required = True

    lst = dsub.add_parser("list", help="datasets usable by name")
    lst.add_argument("--json", action="store_true", help="print a JSON array")
    lst.set_defaults(func=run_list)

    add = dsub.add_parser("add", help="register a dataset folder or manifest under a name")
    add.add_argument("path", help="dataset folder, or a CSV/Parquet manifest")
    add.add_argument("--format", default="auto", choices=("auto",) + layouts.LAYOUTS, help="layout (default: detect)")
    add.add_argument("--name", help="dataset id (default: the layout's name, e.g. utkface)")
    add.add_argument("--labels", help="label CSV: per-image (image column) or per-person (subject/name column) for LFW; "
                     "the manifest CSV for --format manifest")
    add.add_argument("--group-by", help="comma-separated attributes for the default grouping, e.g. race,gender")
    add.add_argument("--force", action="store_true", help="replace a dataset registered under the same name")
    add.add_argument("--json", action="store_true", help="print the registered dataset as JSON")
    add.set_defaults(func=run_add)

    ver = dsub.add_parser("verify", help="check every image exists and decodes; counts per group")
    ver.add_argument("name", help="dataset name or path")
    ver.add_argument("--group-by", help="comma-separated attributes (default: the dataset's default grouping)")
    ver.add_argument("--json", action="store_true", help="print the report as JSON")
    ver.set_defaults(func=run_verify)

    fet = dsub.add_parser("fetch", help="download a public dataset whose licence allows it (checksummed, resumable)")
    fet.add_argument("name", help=f"one of: {', '.join(sorted(CATALOG))}")
    fet.add_argument("--dest", help="folder to download into (default: <data root>/<name>)")
    fet.add_argument("--allow-unpinned", action="store_true",
                     help="download files whose sha256 is not pinned yet and print the digest")
    fet.set_defaults(func=run_fetch)


def _root(args) -> Path:
    return data_root(getattr(args, "data_root", None)).path


def _split_list(value: str | None) -> list[str] | None:
    return [v.strip() for v in value.split(",") if v.strip()] if value else None


def _summary(ds: Dataset, kind: str) -> dict[str, Any]:
    return {"name": ds.id, "kind": kind, "layout": ds.card.get("layout", ""), "n": int(len(ds.frame)),
            "subjects": int(ds.frame["subject"].nunique()) if ds.has_subjects else 0,
            "group_columns": list(ds.group_columns), "default_group_by": GROUP_SEP.join(ds.default_group_by),
            "licence": ds.card.get("licence", ""), "root": str(ds.root), "manifest_sha256": ds.manifest_sha256}


def _print_table(title: str, rows: list[dict[str, Any]], columns: list[str]) -> None:
    from rich.console import Console

    from harness.report.console import user_table

    value = lambda v: ", ".join(map(str, v)) if isinstance(v, list) else str(v)  # noqa: E731
    Console().print(user_table(title, columns, [[value(row[c]) for c in columns] for row in rows]))


def run_list(args) -> int:
    root = _root(args)
    rows = []
    for name in layouts.builtin_layouts(root):
        rows.append(_summary(load_dataset(name, root), "built-in"))
    for name in registry.registered_names(root):
        try:
            rows.append(_summary(load_dataset(name, root), "registered"))
        except InputError as exc:  # one broken registration must not hide the others
            rows.append({"name": name, "kind": "registered", "layout": "", "n": 0, "subjects": 0,
                         "group_columns": [], "default_group_by": "", "licence": "", "root": "",
                         "manifest_sha256": "", "error": exc.message})
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        _print_table(f"datasets (data root {root}, registry {registry.registry_dir(root)})", rows,
                     ["name", "kind", "n", "subjects", "default_group_by", "licence"])
    return EXIT_OK


def run_add(args) -> int:
    root = _root(args)
    path = Path(args.path).expanduser()
    layout = layouts.detect_layout(path) if args.format == "auto" else args.format
    read = layouts.read(layout, path, name=args.name, labels=Path(args.labels) if args.labels else None,
                        group_by=_split_list(args.group_by))
    target = registry.register(read.dataset, root, layout=layout, force=args.force)
    info = dict(_summary(read.dataset, "registered"), registry=str(target),
                skipped=[{"file": s.file, "reason": s.reason} for s in read.skipped])
    if args.json:
        print(json.dumps(info, indent=2))
        return EXIT_OK
    print(f"registered {info['name']} ({layout}): {info['n']} images, group by {info['default_group_by'] or '(none)'}"
          f" -> {target}")
    if read.skipped:
        print(f"skipped {len(read.skipped)} file(s):")
        for s in read.skipped[:20]:
            print(f"  {shown(s.file)}: {shown(s.reason)}")
        if len(read.skipped) > 20:
            print(f"  ... and {len(read.skipped) - 20} more (--json lists all)")
    return EXIT_OK


def run_verify(args) -> int:
    check_limits()  # a bad $BENCH_MAX_IMAGE_PIXELS / $BENCH_MAX_IMAGE_BYTES: one line before any image is read
    ds = load_dataset(args.name, _root(args))
    report = verify_dataset(ds, _split_list(args.group_by))
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print(f"{report.dataset}: {report.n_ok}/{report.n} images decode; manifest sha256 {report.manifest_sha256}")
        _print_table(f"per group ({GROUP_SEP.join(report.group_by) or 'all'})", report.by_group,
                     ["group", "n", "ok", "failed"])
        for f in report.failures:
            print(f"FAILED {shown(f['image'])} [{shown(f['group'])}]: {f['reason']}"
                  + (f" ({shown(f['detail'])})" if f["detail"] else ""))
    return EXIT_OK if report.ok else EXIT_INTEGRITY


def run_fetch(args) -> int:
    entry = catalog_entry(args.name)
    dest = Path(args.dest).expanduser() if args.dest else _root(args) / entry.name
    print(f"{entry.title}\nlicence {entry.licence}; cite: {entry.citation}")
    for got in fetch_dataset(entry, dest, allow_unpinned=args.allow_unpinned):
        resumed = f", resumed at {got.resumed_from} bytes" if got.resumed_from else ""
        pin = "" if got.pinned else " (NOT PINNED: add this sha256 to harness/data/catalog.py)"
        print(f"{got.path}: sha256 {got.sha256}{resumed}{pin}")
    if entry.note:
        print(entry.note)
    return EXIT_OK
