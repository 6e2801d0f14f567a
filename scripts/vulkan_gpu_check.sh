#!/usr/bin/env bash
# The Vulkan backend on a GPU machine: runs the op table with DEV=VULKAN (every module through spirv-val when it
# is installed) and, if bench/llm.py exists, prints SmolLM2 decode tok/s on VULKAN (and CUDA, for the ratio).
#
# The GPU machine may have NVIDIA's Vulkan driver but no loader. Prepare one here (network) and carry it along:
#   scripts/vulkan_gpu_check.sh --prepare         # unpacks Debian's libvulkan1 into build/vulkan-loader
#   run(command="scripts/vulkan_gpu_check.sh", carry=["build/vulkan-loader"])
set -uo pipefail
cd "$(dirname "$0")/.."
LOADER_DIR="${VULKAN_LOADER_DIR:-build/vulkan-loader}"

if [ "${1:-}" = "--prepare" ]; then
  rm -rf "$LOADER_DIR" && mkdir -p "$LOADER_DIR"
  (cd "$LOADER_DIR" && apt-get download libvulkan1 && dpkg -x libvulkan1_*.deb . && rm libvulkan1_*.deb)
  find "$LOADER_DIR" -name 'libvulkan.so.1*' | head -1
  exit 0
fi

# a loader: the system's, else the unpacked one
if ! ldconfig -p 2>/dev/null | grep -q 'libvulkan.so.1'; then
  lib=$(find "$LOADER_DIR" -name 'libvulkan.so.1' 2>/dev/null | head -1)
  if [ -z "$lib" ]; then echo "no Vulkan loader: install libvulkan1 or run '$0 --prepare' and carry $LOADER_DIR"; exit 2; fi
  export LD_LIBRARY_PATH="$(dirname "$lib")${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
fi
# NVIDIA's ICD manifest, written if the driver's libraries are there but the manifest isn't
if ! ls /usr/share/vulkan/icd.d/nvidia_icd*.json /etc/vulkan/icd.d/nvidia_icd*.json >/dev/null 2>&1; then
  for candidate in libEGL_nvidia.so.0 libGLX_nvidia.so.0; do   # EGL's first: the headless one (scripts/vulkan_env.sh)
    if ldconfig -p 2>/dev/null | grep -q "$candidate"; then
      manifest="$(mktemp -d)/nvidia_icd.json"
      printf '{"file_format_version": "1.0.0", "ICD": {"library_path": "%s", "api_version": "1.3.0"}}\n' "$candidate" > "$manifest"
      export VK_ICD_FILENAMES="$manifest" VK_DRIVER_FILES="$manifest"
      break
    fi
  done
fi

export TEENYGRAD_CACHE="${TEENYGRAD_CACHE:-$(mktemp -d)/teenygrad-cache}"
if command -v spirv-val >/dev/null; then export TEENYGRAD_SPIRV_VAL=1; fi
python -c "from teenygrad.device import Device; d = Device['VULKAN']; print('VULKAN device:', d.device_name, '| subgroup', d.subgroup_size, '| features', d.features)" || exit 1

start=$(date +%s)
DEV=VULKAN python -m pytest -q -n "${JOBS:-4}" test/test_ops.py test/test_ops_semantics.py test/test_vulkan.py
status=$?
echo "op table on VULKAN: exit $status in $(( $(date +%s) - start )) s"

if [ -f bench/llm.py ]; then
  for dev in VULKAN CUDA; do
    echo "== bench/llm.py DEV=$dev"
    DEV=$dev python bench/llm.py 2>&1 | grep -iE "tok/s|error" || echo "(no tok/s line from bench/llm.py on $dev)"
  done
else
  echo "bench/llm.py not present: no decode tok/s"
fi
exit $status
