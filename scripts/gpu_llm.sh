#!/usr/bin/env bash
# SmolLM2-shaped decode on the GPU machine, which has no network and no model files: GGUFs with SmolLM2's metadata,
# tokenizer and tensor layout but random weights are written there from a recipe (made here with
#   python ../shared/tools/synth_gguf.py recipe SmolLM2-135M-Instruct.Q4_1.gguf .gpucarry/smollm2_recipe.json
# and carried in .gpucarry with synth_gguf.py itself; gguf comes as a wheel in .whl), then bench/llm.py runs each on
# CUDA and VULKAN. Results land in $OUT/llm_gpu.txt.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu_llm}
PY=${PYTHON:-python3}
mkdir -p "$OUT" /tmp/models
export PYTHONUNBUFFERED=1
[ -f .gpucarry/smollm2_recipe.json ] || { echo "no .gpucarry/smollm2_recipe.json: nothing to benchmark"; exit 0; }
$PY .gpucarry/synth_gguf.py write .gpucarry/smollm2_recipe.json /tmp/models/smollm2_q4_1.gguf --qtype keep
$PY .gpucarry/synth_gguf.py write .gpucarry/smollm2_recipe.json /tmp/models/smollm2_f16.gguf --qtype F16
status=0
for dev in CUDA VULKAN; do
  for model in q4_1 f16; do
    echo "== $dev SmolLM2 $model (random weights)" | tee -a "$OUT/llm_gpu.txt"
    DEV=$dev timeout ${LLM_TIMEOUT:-120} $PY bench/llm.py --model /tmp/models/smollm2_$model.gguf --prefill 128 --decode 64 2>&1 \
      | tail -4 | tee -a "$OUT/llm_gpu.txt" || status=1
  done
done
exit $status
