#!/usr/bin/env bash
# One nightly lane: benchmark TARGET (on this machine or on a board), resume it once if it was cut short, gate it
# against the baseline measured on the same board, write the reports. Called by the steps of nightly-hil.yml
# (docs/ci-nightly.md); run it by hand the same way. Needs `bench` on PATH (the venv activated).
#
# Settings (environment; word lists are split on spaces):
#   TARGET        target id (required): cpu, cuda, jetson, rpi, ...
#   BOARD         where the jobs run: empty = this machine; "--device NAME|USER@HOST" or "--pool target=rpi" (labgrid)
#   RESUME_BOARD  where a cut-short run is resumed (default: BOARD; a pool hands out any free matching board)
#   PLAN_ARGS     what is measured, shared with the reference run: --model/--dataset/--limit/--seed ...
#   RUN_ARGS      lane-only flags: --variant, --min-count, --threads, --pool-wait ...
#   REFERENCE     "auto" (default): on an x86_64 host, a lane on a board or on a target other than cpu first runs
#                 the fp32 reference here (target cpu), so precision loss is measured against x86 fp32, not the
#                 device's own; a run id: use that run; "none": no reference run
#   BASELINE_DIR  folder of accepted baseline run directories for this lane, one or more per board
#                 (examples/nightly/accept-baseline.sh puts them there); the gate takes the one from this run's board
#   POLICY        gate policy (default examples/policy.toml)
#   OUT           folder for run.out, gate-TARGET.xml, report-TARGET.html/.md, run-id (default: ./nightly-out)
#   BENCH_RESULTS, BENCH_DATA, BENCH_CACHE, BENCH_INVENTORY, LG_COORDINATOR: read by bench itself (README)
# Exit status: the run's when it did not complete (3 board unavailable/lost twice, 130 interrupted, ...), else the
# gate's (0, 2 no/mismatched baseline, 10/11/12 regressions), else the report's. Every step's status is printed.
set -euo pipefail

: "${TARGET:?set TARGET (the target id of this lane)}"
here=$(cd "$(dirname "$0")" && pwd)
POLICY=${POLICY:-$here/../policy.toml}
OUT=${OUT:-nightly-out}
REFERENCE=${REFERENCE:-auto}
read -r -a board <<< "${BOARD:-}"
read -r -a resume_board <<< "${RESUME_BOARD:-${BOARD:-}}"
read -r -a plan_args <<< "${PLAN_ARGS:-}"
read -r -a run_args <<< "${RUN_ARGS:-}"
mkdir -p "$OUT"

say() { echo "night: $*" >&2; }

# The newest run of TARGET created at or after $1 (an ISO time), from the results store (never `ls results`: the
# folder also holds the SQLite index and other runs).
newest_run_since() {
  bench runs --json --target "$TARGET" --since "$1" |
    python3 -c 'import json, sys; rows = json.load(sys.stdin); print(max(rows, key=lambda r: (r["created_utc"], r["run_id"]))["run_id"] if rows else "")'
}

# 1. The x86 fp32 reference, for a lane whose jobs run on a board or on another target than cpu.
reference_args=()
if [ "$REFERENCE" = auto ] && { [ ${#board[@]} -gt 0 ] || [ "$TARGET" != cpu ]; } && [ "$(uname -m)" != x86_64 ]; then
  say "reference: this host is $(uname -m), not x86_64: no x86 reference here (set REFERENCE=RUN from a shared store)"
elif [ "$REFERENCE" = auto ] && { [ ${#board[@]} -gt 0 ] || [ "$TARGET" != cpu ]; }; then
  say "reference: fp32 on this x86_64 host over the same data"
  set +e
  bench run --target cpu --variant onnx-fp32 "${plan_args[@]}" | tee "$OUT/reference.out"
  code=${PIPESTATUS[0]}
  set -e
  if [ "$code" != 0 ]; then say "reference run failed (exit $code)"; exit "$code"; fi
  ref_dir=$(tail -n1 "$OUT/reference.out")
  reference_args=(--reference "$(basename "$ref_dir")")
elif [ "$REFERENCE" != auto ] && [ "$REFERENCE" != none ]; then
  reference_args=(--reference "$REFERENCE")
fi

# 2. The benchmark. Exit 3 (board lost mid-run), 130 (interrupted) or a kill (137/143) leave a partial run: resume
#    it once, on RESUME_BOARD. Other exits are not retried.
started=$(date -u +%Y-%m-%dT%H:%M:%S)
set +e
bench run --target "$TARGET" "${board[@]}" "${reference_args[@]}" "${plan_args[@]}" "${run_args[@]}" | tee "$OUT/run.out"
run_code=${PIPESTATUS[0]}
set -e
say "bench run: exit $run_code"
RUN_ID=""
if [ "$run_code" = 0 ]; then
  RUN_ID=$(basename "$(tail -n1 "$OUT/run.out")")   # the last stdout line is the run directory
else
  RUN_ID=$(newest_run_since "$started" || true)
  case "$run_code" in
    3|130|137|143)
      if [ -n "$RUN_ID" ]; then
        say "resuming $RUN_ID once${RESUME_BOARD:+ on $RESUME_BOARD}"
        set +e
        bench run --resume "$RUN_ID" "${resume_board[@]}" | tee "$OUT/run.out"
        run_code=${PIPESTATUS[0]}
        set -e
        say "bench run --resume: exit $run_code"
      fi ;;
  esac
fi
if [ -z "$RUN_ID" ]; then
  say "no run was recorded (exit $run_code): nothing to gate or report"
  exit "$run_code"
fi
echo "$RUN_ID" > "$OUT/run-id"
[ -n "${GITHUB_ENV:-}" ] && echo "RUN_ID=$RUN_ID" >> "$GITHUB_ENV"

# 3. The gate, against the baseline(s) of this lane: bench gate takes the one measured on this run's board and
#    refuses any other (exit 2, naming both).
gate_code=0
baselines=()
if [ -n "${BASELINE_DIR:-}" ] && [ -d "$BASELINE_DIR" ]; then
  for d in "$BASELINE_DIR"/*/; do
    [ -f "$d/run.json" ] && baselines+=(--baseline "${d%/}")
  done
fi
[ ${#baselines[@]} -eq 0 ] && say "no baseline in ${BASELINE_DIR:-(BASELINE_DIR unset)}: accept a run with examples/nightly/accept-baseline.sh"
if [ "$run_code" = 0 ]; then
  bench gate --policy "$POLICY" "${baselines[@]}" "$RUN_ID" --junit "$OUT/gate-$TARGET.xml" || gate_code=$?
  say "bench gate: exit $gate_code"
else
  say "the run did not complete (exit $run_code): not gated"
fi

# 4. Reports, also for a run that did not complete (what was measured is shown).
report_code=0
bench report "$RUN_ID" -o "$OUT/report-$TARGET.html" || report_code=$?
bench report "$RUN_ID" -o "$OUT/report-$TARGET.md" || report_code=$?
if [ -n "${GITHUB_STEP_SUMMARY:-}" ] && [ -f "$OUT/report-$TARGET.md" ]; then
  cat "$OUT/report-$TARGET.md" >> "$GITHUB_STEP_SUMMARY"
fi
say "run $RUN_ID: run exit $run_code, gate exit $gate_code, report exit $report_code"

[ "$run_code" != 0 ] && exit "$run_code"
[ "$gate_code" != 0 ] && exit "$gate_code"
exit "$report_code"
