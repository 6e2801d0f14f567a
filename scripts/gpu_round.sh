#!/usr/bin/env bash
# One device call for a round of decode work (each stage time-boxed, the most telling first): the CUDA tests; the
# replayed SmolLM2 decode step with programmatic dependent launch on and off (TEENYGRAD_PDL); Llama-3-8B-bodied
# decode (LLAMA8B_TYPES, default q4_0); the 8B shapes' matvecs alone (MATVEC_KINDS); then the whole op table.
# Usage (the device tool, carrying .whl and .gpucarry): OUT=$OUT bash scripts/gpu_round.sh
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu_round}
mkdir -p "$OUT" /tmp/models
PY=${PYTHON:-python3}
$PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/gguf*.whl .whl/pyyaml*.whl 2>&1 | tail -2
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 TEENYGRAD_CACHE=${TEENYGRAD_CACHE:-/tmp/tgc} DEV=CUDA
status=0
timeout ${TEST_TIMEOUT:-120} $PY -m pytest -q -x -p no:cacheprovider test/test_cuda.py 2>&1 | tail -6 | tee "$OUT/test_cuda.txt" || status=1
for model in q4_1 f16; do
  qtype=$([ $model = q4_1 ] && echo keep || echo F16)
  [ -f /tmp/models/smollm2_$model.gguf ] || $PY .gpucarry/synth_gguf.py write .gpucarry/smollm2_recipe.json /tmp/models/smollm2_$model.gguf --qtype $qtype
  for pdl in 1 0; do
    echo "== SmolLM2 $model, TEENYGRAD_PDL=$pdl" | tee -a "$OUT/pdl.txt"
    TEENYGRAD_PDL=$pdl timeout 60 $PY bench/llm_profile.py --model /tmp/models/smollm2_$model.gguf --steps 2 --top 4 2>&1 | tail -6 | tee -a "$OUT/pdl.txt"
  done
done
STAGES=llama8b LLAMA8B_TYPES=${LLAMA8B_TYPES:-q4_0} LLM_TIMEOUT=120 PROFILE_TIMEOUT=80 OUT="$OUT" timeout ${LLAMA8B_TIMEOUT:-220} \
  bash scripts/gpu_decode.sh 2>&1 | grep -E "launches|kernel|matvec|rope|E_1|decode |prefill |==|model" | head -24
timeout ${MATVEC_TIMEOUT:-80} $PY bench/matvec_cuda.py --kinds ${MATVEC_KINDS:-Q4_0} 2>&1 | tee "$OUT/matvec.txt" | tail -14
timeout ${OPS_TIMEOUT:-120} $PY -m pytest -q -n ${JOBS:-12} -p no:cacheprovider test/test_ops.py 2>&1 | tail -4 | tee "$OUT/ops_cuda.txt" || status=1
exit $status
