#!/usr/bin/env bash
# The GPU machine's one command: the CUDA tests and the whole op table with DEV=CUDA, then bench/gpu.py.
# Logs and the results file go to $OUT (default /tmp/gpu_check). Usage: scripts/gpu_check.sh [--quick]
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu_check}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 TEENYGRAD_CACHE=${TEENYGRAD_CACHE:-/tmp/teenygrad_cache}
PY=${PYTHON:-python3}
{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv; $PY -c "import torch, numpy; print('torch', torch.__version__, 'numpy', numpy.__version__)";
  $PY -c "from teenygrad.device.cuda_bindings import nvrtc_version, nvrtc_search_paths; print('nvrtc', nvrtc_version(), nvrtc_search_paths()[:3])"; } 2>&1 | tee "$OUT/env.txt"
status=0
DEV=CUDA $PY -m pytest -q -p no:cacheprovider test/test_cuda.py test/test_cuda_compile.py 2>&1 | tee "$OUT/test_cuda.txt" || status=1
DEV=CUDA timeout ${OPS_TIMEOUT:-300} $PY -m pytest -q -n ${JOBS:-12} -p no:cacheprovider test/test_ops.py 2>&1 | tail -60 | tee "$OUT/ops_cuda.txt" || status=1
# the rest of the suite that runs on any device (informational: some tests count CPU kernels by name)
DEV=CUDA timeout ${SUITE_TIMEOUT:-200} $PY -m pytest -q -n ${JOBS:-12} -p no:cacheprovider test/test_ops_semantics.py test/test_jit.py \
  test/test_nn.py test/test_optim.py test/test_amp.py test/test_random_graphs.py 2>&1 | tail -40 | tee "$OUT/suite_cuda.txt"
$PY bench/gpu.py "$@" --out "$OUT/gpu_bench.txt" 2>&1 | tee "$OUT/bench_log.txt" || status=1
exit $status
