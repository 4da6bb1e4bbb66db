"""Measure each onnx-int8 recipe of onnxruntime's x86 data-type choices on this host: U8S8, U8S8 + reduce_range, U8U8.

    python tools/int8_recipes.py OUT [--model ID ...] [--seed-cache DIR] [--recipe NAME ...]

For every model with an onnx-int8 variant and every recipe, a copy of the harness (harness/, models/, targets/) gets
the recipe written into its models/<model>.toml, builds that model's pack into its own cache (seeded from
--seed-cache, so only onnx-int8 is rebuilt) and runs `bench run --target cpu --variant onnx-fp32 --variant onnx-int8`
on the model's dataset. The build records the fidelity (calibration-disjoint faces, the interval rule of
harness.models.fidelity) and the run the per-group figures with counts and intervals, both exactly as a user's
`bench` computes them. Writes OUT/<model>/<recipe>/{build.log,run.log,results/...} and prints one Markdown table
(the one in docs/metrics.md, "Int8 recipes").

Why these three: onnxruntime's quantization docs ("Data type selection"; "When to use reduce-range and per-channel
quantization", https://onnxruntime.ai/docs/performance/model-optimizations/quantization.html) say U8S8 on AVX2/AVX512
CPUs without VNNI multiplies with VPMADDUBSW, which can saturate, and name reduce_range or U8U8 as the remedies.
Expect several minutes per model and recipe on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RECIPES = {  # manifest lines for [variants.onnx-int8], on top of the model's other int8 options
    "U8S8": {"activation": "uint8", "weight": "int8", "reduce_range": False},
    "U8S8 reduce_range": {"activation": "uint8", "weight": "int8", "reduce_range": True},
    "U8U8": {"activation": "uint8", "weight": "uint8", "reduce_range": False},
}
DATASET = {"gender": "fairface-sample", "verification": "london-frl", "detection": "fairface-sample"}
# Detection on fairface-sample: no ground-truth boxes there, so no recall row; every image holds one face, so the
# found rate is the share of faces detected (the eye error against fp32 is in the build's fidelity figures).
METRICS = {"gender": ("accuracy",), "verification": ("fmr", "fnmr"), "detection": ("recall", "found")}


def _toml_value(v) -> str:
    return "true" if v is True else "false" if v is False else json.dumps(v)


def with_recipe(text: str, recipe: dict) -> str:
    """The manifest text with [variants.onnx-int8]'s activation/weight/reduce_range lines replaced by `recipe`."""
    head, sep, rest = text.partition("[variants.onnx-int8]\n")
    if not sep:
        raise SystemExit("no [variants.onnx-int8] in the manifest")
    nxt = re.search(r"^\[", rest, re.M)
    block, tail = (rest[:nxt.start()], rest[nxt.start():]) if nxt else (rest, "")
    block = "".join(line for line in block.splitlines(keepends=True)
                    if not re.match(r"\s*(activation|weight|reduce_range)\s*=", line))
    lines = "".join(f"{k} = {_toml_value(v)}\n" for k, v in recipe.items())
    return head + sep + lines + block + tail


def tree_for(out: Path, model: str, recipe: dict) -> Path:
    tree = out / "tree"
    if tree.exists():
        shutil.rmtree(tree)
    for part in ("harness", "models", "targets"):
        shutil.copytree(REPO / part, tree / part, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", tree / "pyproject.toml")
    manifest = tree / "models" / f"{model}.toml"
    manifest.write_text(with_recipe(manifest.read_text(), recipe))
    return tree


def bench(tree: Path, env: dict, args: list[str], log: Path) -> float:
    t0 = time.perf_counter()
    with log.open("w") as out, log.with_suffix(".err").open("w") as err:
        proc = subprocess.run([sys.executable, "-m", "harness", *args], cwd=tree, env=env | {"PYTHONPATH": str(tree)},
                              stdout=out, stderr=err)
    if proc.returncode != 0:
        raise SystemExit(f"bench {' '.join(args)} exited {proc.returncode}; see {log} and {log.with_suffix('.err')}")
    return time.perf_counter() - t0


def rows_of(entry: dict, metric: str) -> list[dict]:
    rates = (entry.get("metrics") or {}).get("rates") or []
    return [r for r in rates if r.get("metric") == metric]


def measure(out: Path, model: str, task: str, name: str, recipe: dict, seed_cache: Path, data: Path) -> dict:
    where = out / model / name.replace(" ", "-")
    where.mkdir(parents=True, exist_ok=True)
    tree = tree_for(where, model, recipe)
    cache = where / "cache"
    if not cache.exists():
        shutil.copytree(seed_cache / "sources", cache / "sources")
        if (seed_cache / "packs").exists():  # every pack: the run also needs the reference detector
            shutil.copytree(seed_cache / "packs", cache / "packs", ignore=shutil.ignore_patterns("*.lock"))
    env = dict(os.environ, BENCH_CACHE=str(cache), BENCH_DATA=str(data), BENCH_RESULTS=str(where / "results"))
    build_s = bench(tree, env, ["models", "build", "--model", model], where / "build.log")
    pack = json.loads((cache / "packs" / model / "pack.json").read_text())
    bench(tree, env, ["run", "--target", "cpu", "--model", model, "--variant", "onnx-fp32", "--variant", "onnx-int8",
                      "--dataset", DATASET[task], "--threads", "1"], where / "run.log")
    run_dir = Path((where / "run.log").read_text().strip().splitlines()[-1].strip())
    doc = json.loads((run_dir / "run.json").read_text())
    entries = {e["variant"]: e for e in doc["entries"]}
    rec = pack["variants"]["onnx-int8"]
    return {"model": model, "recipe": name, "build_s": round(build_s, 1), "variant": rec,
            "entries": {v: {"status": e["status"], "p90_ms": ((e.get("speed") or {}).get("single_stream") or {})
                            .get("p90_ms"), "rows": {m: rows_of(e, m) for m in METRICS[task]},
                            "rates": (e.get("metrics") or {}).get("rates") or []}
                        for v, e in entries.items()},
            "run": str(run_dir)}


def _rate(r: dict | None, digits: int = 3) -> str:
    if not r or r.get("value") is None:
        return "-"
    return f"{r['value']:.{digits}f} ({r['k']}/{r['n']})" if "k" in r else f"{r['value']:.{digits}f}"


def _default_rows(rows: list[dict]) -> list[dict]:
    """The rows of the first (default) grouping at the operating threshold (verification: the FMR-tuned one, which
    an int8 entry inherits from fp32), without the fixed cut-offs."""
    rows = [r for r in rows if r.get("threshold_kind", "tuned") == "tuned"]
    first = rows[0]["group_by"] if rows else None
    return [r for r in rows if r["group_by"] == first]


def table(results: list[dict]) -> str:
    """Per model and recipe: fidelity on the calibration-disjoint faces, whether the build flagged it here, and per
    metric the overall fp32 and int8 figures (k/n), the int8 worst group and the largest per-group change."""
    lines = ["| model | recipe | fidelity vs fp32 (calibration-disjoint faces) | flagged | metric | fp32 all | int8 all "
             "| int8 worst group | largest group change (fp32 -> int8) |", "|---|---|---|---|---|---|---|---|---|"]
    for res in results:
        fid = res["variant"].get("fidelity") or {}
        d = fid.get("disagreement") or {}
        head = ", ".join(f"{label} {fid[k]:.3f}" for k, label in (
            ("decision_agreement", "agreement"), ("max_abs_diff", "max abs dP"), ("mean_cosine", "mean cos"),
            ("found_agreement", "found"), ("mean_eye_err", "mean eye err")) if fid.get(k) is not None)
        fig = f"{head}; {d.get('k')}/{d.get('n')} faces differ (95% upper {d.get('ci_hi', 0):.1%})"
        int8, fp32 = res["entries"].get("onnx-int8", {}), res["entries"].get("onnx-fp32", {})
        first = True
        for metric, rows in int8.get("rows", {}).items():
            rows = _default_rows(rows)
            if not rows:
                continue
            ref = {r["group"]: r for r in _default_rows(fp32.get("rows", {}).get(metric, []))}
            groups = [r for r in rows if r["group"] != "all" and r.get("value") is not None and r.get("n", 0) >= 10]
            lower = metric in ("fmr", "fnmr")
            worst = (max if lower else min)(groups, key=lambda r: r["value"]) if groups else None
            changes = [(r["value"] - ref[r["group"]]["value"], r) for r in groups
                       if ref.get(r["group"], {}).get("value") is not None]
            big = max(changes, key=lambda c: abs(c[0])) if changes else None
            digits = 4 if lower else 3
            all_int8 = next((r for r in rows if r["group"] == "all"), None)
            lead = [res["model"], res["recipe"], fig, "yes" if fid.get("within_tolerance") is False else "no"] \
                if first else ["", "", "", ""]
            lines.append("| " + " | ".join(lead + [
                metric, _rate(ref.get("all"), digits), _rate(all_int8, digits),
                f"{worst['group']} {_rate(worst, digits)}" if worst else "-",
                f"{big[1]['group']}: {_rate(ref[big[1]['group']], digits)} -> {_rate(big[1], digits)}" if big else "-",
            ]) + " |")
            first = False
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--table", action="store_true", help="only print the table of the results already in OUT")
    ap.add_argument("--model", action="append")
    ap.add_argument("--recipe", action="append", choices=sorted(RECIPES))
    ap.add_argument("--seed-cache", type=Path, default=Path(os.environ.get("BENCH_CACHE", "~/.cache/edge-fair-bench"))
                    .expanduser())
    ap.add_argument("--data", type=Path, default=Path(os.environ.get("BENCH_DATA", REPO.parent / "shared" / "data")))
    args = ap.parse_args(argv)
    sys.path.insert(0, str(REPO))
    from harness import specs

    results = []
    if args.table:
        for mid in args.model or specs.model_ids():
            for name in args.recipe or RECIPES:
                path = args.out / mid / name.replace(" ", "-") / "result.json"
                if path.exists():
                    results.append(json.loads(path.read_text()))
        print(table(results))
        return 0
    for mid in args.model or specs.model_ids():
        m = specs.get_model(mid)
        if "onnx-int8" not in m.variants:
            continue
        for name in args.recipe or RECIPES:
            res = measure(args.out, mid, m.task, name, RECIPES[name], args.seed_cache, args.data)
            (args.out / mid / name.replace(" ", "-") / "result.json").write_text(json.dumps(res, indent=1))
            results.append(res)
            print(f"{mid} {name}: built in {res['build_s']} s, {res['run']}", file=sys.stderr, flush=True)
    print(table(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
