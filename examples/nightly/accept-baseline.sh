#!/usr/bin/env bash
# Accept a complete run as a lane's baseline: copy its directory into BASELINE_DIR/<run id> (never over another).
# `bench gate` (examples/nightly/night.sh) then takes, of the baselines there, the newest one measured on the board
# of the run it judges (policy [baseline] match: the same board by default), so one folder serves a whole pool.
#   examples/nightly/accept-baseline.sh RUN BASELINE_DIR     (RUN: a run id in the results store, or its directory)
set -euo pipefail
[ $# -eq 2 ] || { echo "usage: $0 RUN BASELINE_DIR" >&2; exit 2; }
run=$1 dest=$2
if [ -d "$run" ]; then
  dir=$run
else
  dir=$(bench runs --json | python3 -c 'import json, sys
rows = [r for r in json.load(sys.stdin) if r["run_id"] == sys.argv[1]]
print(rows[0]["path"] if rows else "")' "$run")
fi
[ -n "$dir" ] && [ -f "$dir/run.json" ] || { echo "accept-baseline: $run: no such run" >&2; exit 2; }
status=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["status"])' "$dir/run.json")
[ "$status" = complete ] || { echo "accept-baseline: $run is $status, not complete: not a baseline" >&2; exit 2; }
id=$(basename "$dir")
[ -e "$dest/$id" ] && { echo "accept-baseline: $dest/$id exists already" >&2; exit 2; }
mkdir -p "$dest"
cp -a "$dir" "$dest/.$id.part" && mv "$dest/.$id.part" "$dest/$id"   # hidden until complete
echo "$dest/$id"
