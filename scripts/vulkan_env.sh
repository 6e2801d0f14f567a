# Sourced by the GPU machine's scripts: the Vulkan loader from Debian's libvulkan1 (carried unpacked in .gl/), and
# an ICD manifest for NVIDIA's driver.
for f in .gl/*.deb; do [ -e "$f" ] && dpkg -x "$f" /; done
ldconfig
# a manifest written for the driver's libEGL_nvidia (the headless one: in the GPU machine's containers of 2026-12-02
# libGLX_nvidia, which the image's manifest names, gave no vkCreateInstance, scripts/vulkan_probe.sh) or else its
# libGLX_nvidia, where the driver has one; else the image's manifest
lib=$(ldconfig -p | grep -o '/[^ ]*libEGL_nvidia\.so\.0' | head -1)
[ -n "$lib" ] || lib=$(ldconfig -p | grep -o '/[^ ]*libGLX_nvidia\.so\.0' | head -1)
if [ -n "$lib" ]; then
  icd=/tmp/nvidia_icd.json
  printf '{"file_format_version": "1.0.0", "ICD": {"library_path": "%s", "api_version": "1.3.0"}}\n' "$lib" > "$icd"
else
  icd=$(ls /usr/local/nvidia/share/vulkan/icd.d/nvidia_icd*.json /usr/share/vulkan/icd.d/nvidia_icd*.json \
           /etc/vulkan/icd.d/nvidia_icd*.json 2>/dev/null | head -1)
fi
echo "Vulkan ICD: ${icd:-none found}"
[ -n "$icd" ] && export VK_DRIVER_FILES="$icd" VK_ICD_FILENAMES="$icd"
