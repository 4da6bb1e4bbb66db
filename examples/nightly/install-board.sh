#!/usr/bin/env bash
# Install this checkout's harness on a board with ONE device extra, over SSH: a wheel built here (no checkout on
# the board), a venv in the board's workdir. The board then only measures (`bench worker`); the host runs the rest.
#   examples/nightly/install-board.sh USER@HOST EXTRA [WORKDIR]
#   EXTRA: device-litert (Raspberry Pi) | device-onnx (an Arm/x86 board with the CPU onnxruntime wheel) |
#          system (Jetson: a venv that sees the system site-packages and installs no runtime, so JetPack's
#          onnxruntime-gpu stays the one in use)
#   WORKDIR: on the board, relative to the user's home (default: bench); prints the venv's python, which is the
#   board's `python` in the inventory (docs/remote.md).
# The board needs python3 with venv and pip, and PyPI (or PIP_INDEX_URL/PIP_FIND_LINKS set for that user) for
# numpy, psutil and the runtime. Not run by the test suite (it installs from a package index).
set -euo pipefail
[ $# -ge 2 ] || { echo "usage: $0 USER@HOST device-litert|device-onnx|system [WORKDIR]" >&2; exit 2; }
dest=$1 extra=$2 workdir=${3:-bench}
case "$extra" in device-litert|device-onnx|system) ;; *) echo "install-board: unknown extra '$extra'" >&2; exit 2 ;; esac
case "$workdir" in *[!A-Za-z0-9._/-]*|/*|*..*) echo "install-board: WORKDIR must be a plain relative path" >&2; exit 2 ;; esac
here=$(cd "$(dirname "$0")/../.." && pwd)
wheels=$(mktemp -d)
trap 'rm -rf "$wheels"' EXIT
python3 -m pip wheel --quiet --no-deps --wheel-dir "$wheels" "$here"
wheel=$(basename "$(ls "$wheels"/*.whl)")
ssh "$dest" "mkdir -p $workdir/wheels"
scp -q "$wheels/$wheel" "$dest:$workdir/wheels/$wheel"
if [ "$extra" = system ]; then
  ssh "$dest" "cd $workdir && python3 -m venv --system-site-packages venv && venv/bin/pip install --quiet --force-reinstall --no-deps wheels/$wheel && venv/bin/pip install --quiet 'numpy' 'psutil'"
else
  # dependencies once; the harness itself always replaced (a new commit keeps the version number)
  ssh "$dest" "cd $workdir && python3 -m venv venv && venv/bin/pip install --quiet 'wheels/$wheel[$extra]' && venv/bin/pip install --quiet --force-reinstall --no-deps wheels/$wheel"
fi
ssh "$dest" "$workdir/venv/bin/python -c 'import harness, sys; print(sys.executable)'"
