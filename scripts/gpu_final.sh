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
for f in .gl/*.deb; do [ -e "$f" ] && dpkg -x "$f" /; done
ldconfig
# NVIDIA's Vulkan ICD manifest where the image has one, else one written for the driver's libGLX_nvidia
icd=$(ls /usr/local/nvidia/share/vulkan/icd.d/nvidia_icd*.json /usr/share/vulkan/icd.d/nvidia_icd*.json \
         /etc/vulkan/icd.d/nvidia_icd*.json 2>/dev/null | head -1)
if [ -z "$icd" ]; then
  lib=$(ldconfig -p | grep -o '/[^ ]*libGLX_nvidia\.so\.0' | head -1)
  if [ -n "$lib" ]; then
    icd=/tmp/nvidia_icd.json
    printf '{"file_format_version": "1.0.0", "ICD": {"library_path": "%s", "api_version": "1.3.0"}}\n' "$lib" > "$icd"
  fi
fi
echo "Vulkan ICD: ${icd:-none found}"
[ -n "$icd" ] && export VK_DRIVER_FILES="$icd" VK_ICD_FILENAMES="$icd"
status=0
if [ "${SKIP_CUDA:-0}" != 1 ]; then
  OUT="$OUT" SUITE_TIMEOUT=${SUITE_TIMEOUT:-150} bash scripts/gpu_check.sh || status=1
fi
DEV=VULKAN timeout ${VULKAN_TIMEOUT:-240} python3 -m pytest -q -n ${JOBS:-12} -p no:cacheprovider test/test_ops.py 2>&1 | tail -40 \
  | tee "$OUT/ops_vulkan.txt" || status=1
OUT="$OUT" bash scripts/gpu_llm.sh || status=1
exit $status
