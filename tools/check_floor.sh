#!/usr/bin/env bash
# Check the floors pyproject.toml declares: Python 3.10 (tomllib -> tomli) and numpy 1.x (np.trapezoid -> np.trapz).
# Makes (or reuses) a venv for the given interpreter, installs the project with numpy<2, and runs the unit tests that
# reach the version-dependent code (TOML policies/cards, energy integration, metrics, reports) plus the data readers.
# Usage: tools/check_floor.sh [PYTHON] [VENV]   defaults: python3.10, /tmp/edge-fair-bench-floor
# Cost on a 2-core runner: the install about 3-5 min cold (wheels only, no builds); the tests about 40 s.
set -euo pipefail
py=${1:-python3.10}
venv=${2:-/tmp/edge-fair-bench-floor}
repo=$(cd "$(dirname "$0")/.." && pwd)
[ -x "$venv/bin/python" ] || "$py" -m venv "$venv"
"$venv/bin/python" -m pip install -q -e "$repo[cpu,dev]" 'numpy<2'
"$venv/bin/python" -c 'import sys, numpy; print("python", sys.version.split()[0], "numpy", numpy.__version__)'
cd "$repo"
PYTHONPATH="$repo" "$venv/bin/python" -m pytest -q -p no:cacheprovider \
  tests/unit/test_gate.py tests/unit/test_trackers_telemetry.py tests/unit/test_run_settings.py \
  tests/unit/test_specs.py tests/unit/test_metrics_*.py tests/unit/test_report_*.py tests/unit/test_data_*.py
