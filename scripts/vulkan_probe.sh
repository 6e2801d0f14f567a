#!/usr/bin/env bash
# Which of NVIDIA's libraries, named in a Vulkan ICD manifest, gives the loader a vkCreateInstance on this machine:
# the GPU machine's containers have failed with libGLX_nvidia.so.0 (the image's manifest); EGL's library is the
# headless one. Prints the device nodes, each candidate's result, and the one that worked (VK_DRIVER_FILES to use).
# Usage (the device tool, carrying .gl .whl): bash scripts/vulkan_probe.sh
set -uo pipefail
cd "$(dirname "$0")/.."
for f in .gl/*.deb; do [ -e "$f" ] && dpkg -x "$f" /; done
ldconfig
PY=${PYTHON:-python3}
ls -la /dev/nvidia* 2>&1 | head; env | grep -i "^nvidia_" ; ls /usr/share/glvnd/egl_vendor.d /etc/vulkan/implicit_layer.d /usr/share/vulkan/implicit_layer.d 2>&1 | head
for name in libEGL_nvidia.so.0 libGLX_nvidia.so.0; do
  lib=$(ldconfig -p | grep -o "/[^ ]*$name" | head -1)
  echo "== $name: ${lib:-not found}"
  [ -n "$lib" ] || continue
  printf '{"file_format_version": "1.0.0", "ICD": {"library_path": "%s", "api_version": "1.3.0"}}\n' "$lib" > /tmp/probe_icd.json
  VK_DRIVER_FILES=/tmp/probe_icd.json VK_ICD_FILENAMES=/tmp/probe_icd.json VK_LOADER_DEBUG=error timeout 60 $PY -c "
import numpy as np, teenygrad as tg
print((tg.Tensor(np.arange(4, dtype=np.float32), device='VULKAN') * 2).numpy())" 2>&1 | tail -3
done
