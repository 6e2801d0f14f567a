#!/usr/bin/env bash
# Decode-step variants on the GPU machine in one call: for each of VARIANTS (space-separated; each a comma-separated
# list of VAR=VALUE, "-" for the defaults), bench/llm_profile.py's replayed SmolLM2 step and its top kernels, then
# bench/llm.py end to end for the variants in LLM_VARIANTS. Models: SmolLM2-shaped GGUFs with random weights
# (MODELS: q4_1 f16). Logs in $OUT/sweep.txt.
#   OUT=$OUT VARIANTS="- TEENYGRAD_ROPE_WARPS=8" LLM_VARIANTS="-" bash scripts/gpu_sweep.sh
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu_sweep}
PY=${PYTHON:-python3}
mkdir -p "$OUT" /tmp/models
$PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/gguf*.whl .whl/pyyaml*.whl .whl/tqdm*.whl 2>&1 | tail -2
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 TEENYGRAD_CACHE=${TEENYGRAD_CACHE:-/tmp/tgc} DEV=CUDA
for model in ${MODELS:-q4_1 f16}; do
  qtype=$([ $model = q4_1 ] && echo keep || echo F16)
  [ -f /tmp/models/smollm2_$model.gguf ] || $PY .gpucarry/synth_gguf.py write .gpucarry/smollm2_recipe.json /tmp/models/smollm2_$model.gguf --qtype $qtype > /dev/null
done
# MATVEC_ARGS: bench/matvec_cuda.py first (e.g. "--shapes smollm2 --kinds Q4_1,float16")
[ -z "${MATVEC_ARGS:-}" ] || timeout 120 $PY bench/matvec_cuda.py $MATVEC_ARGS 2>&1 | tee -a "$OUT/sweep.txt"
with_env() { local spec=$1; shift; if [ "$spec" = - ]; then "$@"; else env ${spec//,/ } "$@"; fi; }
for model in ${MODELS:-q4_1 f16}; do
  for v in ${VARIANTS:--}; do
    echo "== $model $v" | tee -a "$OUT/sweep.txt"
    with_env "$v" timeout 60 $PY bench/llm_profile.py --model /tmp/models/smollm2_$model.gguf --prompt ${PROMPT:-128} --steps 2 --top ${TOP:-5} 2>&1 \
      | grep -v "^(" | tee -a "$OUT/sweep.txt"
  done
  for v in ${LLM_VARIANTS:-}; do
    echo "== llm.py $model $v" | tee -a "$OUT/sweep.txt"
    with_env "$v" timeout 90 $PY bench/llm.py --model /tmp/models/smollm2_$model.gguf --prefill 128 --decode 128 2>&1 | tail -3 | tee -a "$OUT/sweep.txt"
  done
done
