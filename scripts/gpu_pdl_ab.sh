#!/usr/bin/env bash
# A/B of programmatic dependent launch (TEENYGRAD_PDL) and the matvecs' L2 prefetch before their grid-dependency wait
# (TEENYGRAD_MATVEC_PREFETCH bytes) on end-to-end decode (bench/llm.py), SmolLM2 Q4_1 and the Llama-3-8B body Q4_0,
# each combination twice in alternating order. Usage (device tool, carrying .whl and .gpucarry): bash scripts/gpu_pdl_ab.sh
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
$PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/gguf*.whl .whl/pyyaml*.whl 2>&1 | tail -2
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 TEENYGRAD_CACHE=${TEENYGRAD_CACHE:-/tmp/tgc} DEV=CUDA
mkdir -p /tmp/models
[ -f /tmp/models/smollm2_q4_1.gguf ] || $PY .gpucarry/synth_gguf.py write .gpucarry/smollm2_recipe.json /tmp/models/smollm2_q4_1.gguf --qtype keep > /dev/null
[ -f /tmp/models/llama8b_q4_0.gguf ] || $PY .gpucarry/synth_gguf.py write .gpucarry/smollm2_recipe.json /tmp/models/llama8b_q4_0.gguf --body llama8b --qtype Q4_0 > /dev/null
for model in smollm2_q4_1 llama8b_q4_0; do
  args=$([ $model = smollm2_q4_1 ] && echo "--prefill 128 --decode 128" || echo "--prefill 32 --decode 64")
  for round in 1 2; do
    for combo in "0 0" "1 0" "0 8388608" "1 8388608"; do
      set -- $combo
      line=$(TEENYGRAD_PDL=$1 TEENYGRAD_MATVEC_PREFETCH=$2 timeout 120 $PY bench/llm.py --model /tmp/models/$model.gguf $args 2>&1 | grep -E '^(CUDA|decode)' | tail -1)
      echo "$model round $round PDL=$1 prefetch=$2: $line"
    done
  done
done
