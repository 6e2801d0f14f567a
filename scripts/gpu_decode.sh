#!/usr/bin/env bash
# Batch-1 decode on the GPU machine in one command: the CUDA tests that cover decode, a per-kernel profile of one
# decode step (bench/llm_profile.py) and bench/llm.py, on SmolLM2-shaped GGUFs with random weights (written from the
# carried recipe, as scripts/gpu_llm.sh does). BASELINE=DIR also profiles the teenygrad checkout in DIR (the code
# before a change) on the same models; the stage "nofusion" profiles this checkout with TEENYGRAD_DECODE_FUSION=none
# (the path before decode's fused kernels; a list such as "linear,norm" keeps only those parts: set FUSION to try one).
# The stage "llama8b" writes Llama-3-8B-bodied GGUFs (synth_gguf.py --body llama8b; Q4_0 and F16, or LLAMA8B_TYPES)
# and runs bench/llm.py and a short profile on each: the bandwidth-bound case (ceilings in bench/results/llm_gpu_h200.txt).
# The stage "matvec" runs bench/matvec_cuda.py (the 8B shapes' matvecs alone, GB/s against HBM; MATVEC_ARGS="--sweep"
# tries other rows per warp and load batches, and the int8-x kernel's warps per block, rows per warp and load batches;
# "--sweep --kinds Q4_0" fits one call with MATVEC_TIMEOUT=550).
# Logs land in $OUT: matvec.txt, tests_quick.txt, tests.txt, profile_<tag>_<model>.txt, llm.txt, llm8b.txt, profile8b_<model>.txt.
#   STAGES="quick profile baseline tests bench" (the default) picks what runs, in that order; all of it takes longer
#   than one 300 s call: STAGES="quick profile baseline" and then STAGES="tests bench" fit.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu_decode}
PY=${PYTHON:-python3}
STAGES=${STAGES:-quick profile baseline tests bench}
mkdir -p "$OUT" /tmp/models
export PYTHONUNBUFFERED=1 DEV=CUDA
[ -f .gpucarry/smollm2_recipe.json ] || { echo "no .gpucarry/smollm2_recipe.json: nothing to benchmark"; exit 0; }
for model in q4_1 f16; do
  [ -f /tmp/models/smollm2_$model.gguf ] && continue
  qtype=$([ $model = q4_1 ] && echo keep || echo F16)
  $PY .gpucarry/synth_gguf.py write .gpucarry/smollm2_recipe.json /tmp/models/smollm2_$model.gguf --qtype $qtype
done
status=0
profile() {   # profile TAG PYTHONPATH [FUSION]
  for model in q4_1 f16; do
    PYTHONPATH=$2 TEENYGRAD_DECODE_FUSION=${3:-${FUSION:-all}} timeout ${PROFILE_TIMEOUT:-90} $PY bench/llm_profile.py --model /tmp/models/smollm2_$model.gguf --top 30 \
      > "$OUT/profile_$1_$model.txt" 2>&1 || status=1
    tail -40 "$OUT/profile_$1_$model.txt"
  done
}
for stage in $STAGES; do
  case $stage in
    quick)   # the fused kernels' own tests, before anything slow
      timeout ${TEST_TIMEOUT:-300} $PY -m pytest -q -x test/test_cuda.py -k "quant or graph or fused" 2>&1 | tail -15 > "$OUT/tests_quick.txt" || status=1
      cat "$OUT/tests_quick.txt" ;;
    profile) profile new "${PYTHONPATH:-}:$PWD" ;;
    baseline) [ -n "${BASELINE:-}" ] && profile base "${PYTHONPATH:-}:$BASELINE" ;;
    nofusion) profile nofusion "${PYTHONPATH:-}:$PWD" none ;;
    tests)
      timeout ${TEST_TIMEOUT:-150} $PY -m pytest -q -x test/test_cuda.py test/test_quant.py test/test_llm.py test/test_llm_fused.py 2>&1 | tail -30 > "$OUT/tests.txt" || status=1
      cat "$OUT/tests.txt" ;;
    matvec)
      timeout ${MATVEC_TIMEOUT:-300} $PY bench/matvec_cuda.py ${MATVEC_ARGS:-} 2>&1 | tee "$OUT/matvec.txt" || status=1 ;;
    llama8b)
      for model in ${LLAMA8B_TYPES:-q4_0 f16}; do
        qtype=$([ $model = q4_0 ] && echo Q4_0 || echo F16)
        [ -f /tmp/models/llama8b_$model.gguf ] || $PY .gpucarry/synth_gguf.py write .gpucarry/smollm2_recipe.json \
          /tmp/models/llama8b_$model.gguf --body llama8b --qtype $qtype
        decode=$([ $model = q4_0 ] && echo 32 || echo 16)
        echo "== CUDA Llama-3-8B body $model (random weights), fusion ${FUSION:-all}" | tee -a "$OUT/llm8b.txt"
        TEENYGRAD_DECODE_FUSION=${FUSION:-all} timeout ${LLM_TIMEOUT:-240} $PY bench/llm.py --model /tmp/models/llama8b_$model.gguf \
          --prefill 32 --decode $decode 2>&1 | tail -4 | tee -a "$OUT/llm8b.txt" || status=1
        TEENYGRAD_DECODE_FUSION=${FUSION:-all} timeout ${PROFILE_TIMEOUT:-240} $PY bench/llm_profile.py --model /tmp/models/llama8b_$model.gguf \
          --prompt 8 --steps 2 --replays 16 --top 15 > "$OUT/profile8b_$model.txt" 2>&1 || status=1
        tail -20 "$OUT/profile8b_$model.txt"
      done ;;
    bench)
      for model in q4_1 f16; do
        echo "== CUDA SmolLM2 $model (random weights)" | tee -a "$OUT/llm.txt"
        timeout ${LLM_TIMEOUT:-90} $PY bench/llm.py --model /tmp/models/smollm2_$model.gguf --prefill 128 --decode 64 2>&1 | tail -4 \
          | tee -a "$OUT/llm.txt" || status=1
      done ;;
  esac
done
exit $status
