#!/usr/bin/env bash
# Everything the GPU machine checks, as one command for the device tool: the CUDA tests, the op table and
# bench/gpu.py (scripts/gpu_check.sh); the op table on NVIDIA's Vulkan driver; and
# SmolLM2-shaped decode on CUDA and VULKAN. The Vulkan loader travels as Debian's libvulkan1 in .gl/ (see
# the device tool's README); results land in $OUT. The LLM step is scripts/gpu_llm.sh.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu_final}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
. scripts/vulkan_env.sh
status=0
if [ "${SKIP_CUDA:-0}" != 1 ]; then
  OUT="$OUT" SUITE_TIMEOUT=${SUITE_TIMEOUT:-150} bash scripts/gpu_check.sh || status=1
fi
if [ "${SKIP_VULKAN_OPS:-0}" != 1 ]; then
  DEV=VULKAN timeout ${VULKAN_TIMEOUT:-240} python3 -m pytest -q -n ${JOBS:-12} -p no:cacheprovider test/test_ops.py 2>&1 | tail -40 \
    | tee "$OUT/ops_vulkan.txt" || status=1
fi
OUT="$OUT" bash scripts/gpu_llm.sh || status=1
exit $status
