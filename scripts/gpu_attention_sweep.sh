#!/usr/bin/env bash
# The split RoPE attention's settings (TEENYGRAD_SPLIT_THREADS / KEY_THREADS) swept on the GPU machine: for each, the
# replayed decode step of SmolLM2 Q4_1 and the Llama-3-8B body Q4_0 (bench/graph_knockout.py --whole) and the 8B's
# decode (bench/llm.py). Run after scripts/gpu_verify.sh in the same call (it installs the wheels, writes the GGUFs).
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 TEENYGRAD_CACHE=${TEENYGRAD_CACHE:-/tmp/tgc} DEV=CUDA
for setting in ${SETTINGS:-128,4 128,8 256,4 256,8}; do
  export TEENYGRAD_SPLIT_THREADS=${setting%,*} TEENYGRAD_KEY_THREADS=${setting#*,}
  echo "-- split threads $TEENYGRAD_SPLIT_THREADS, key threads $TEENYGRAD_KEY_THREADS"
  timeout 60 $PY bench/graph_knockout.py --model /tmp/models/smollm2_q4_1.gguf --whole 2>&1 | tail -1
  timeout 90 $PY bench/graph_knockout.py --model /tmp/models/llama8b_q4_0.gguf --whole --replays 50 --rounds 5 2>&1 | tail -1
  timeout 90 $PY bench/llm.py --model /tmp/models/llama8b_q4_0.gguf --prefill 32 --decode 64 2>&1 | tail -1
done
