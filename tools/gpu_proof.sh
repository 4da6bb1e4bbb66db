#!/usr/bin/env bash
# Prove the CUDA paths on a machine with an NVIDIA GPU: the CUDA EP really runs every ONNX variant, the TensorRT EP is
# refused (not silently replaced by the CPU) when TensorRT is absent, and the same variants on the CPU EP for scale.
# Needs onnxruntime-gpu as the only onnxruntime wheel (pip install -e '.[gpu]'), built packs in BENCH_CACHE and the data
# in BENCH_DATA. Usage: tools/gpu_proof.sh OUTDIR   (writes the three runs and their logs under OUTDIR)
set -uo pipefail
out=${1:?usage: tools/gpu_proof.sh OUTDIR}
mkdir -p "$out"
export BENCH_RESULTS="$out/results" PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$out/gpu.txt"
python3 -c "import onnxruntime as o; print(o.__version__, o.get_available_providers())" | tee -a "$out/gpu.txt"
python3 -m harness targets --json > "$out/targets.json"
python3 -m harness run --target cuda --dataset london-frl --no-build --min-duration 2 --min-count 200 \
  > "$out/run_cuda.out" 2> "$out/run_cuda.log"; echo "cuda: exit $?"
python3 -m harness run --target cuda-trt --dataset london-frl --no-build \
  > "$out/run_trt.out" 2> "$out/run_trt.log"; echo "cuda-trt: exit $?"
python3 -m harness run --target cpu --dataset london-frl --no-build --variant onnx-fp32 --variant onnx-fp16 \
  --variant onnx-int8 --min-duration 2 --min-count 200 > "$out/run_cpu.out" 2> "$out/run_cpu.log"; echo "cpu: exit $?"
python3 -m harness compare $(tail -qn1 "$out"/run_cuda.out "$out"/run_cpu.out) --md > "$out/compare.md"
echo "written: $out"
