#!/usr/bin/env bash
# Sets up (scripts/setup.sh --test) and runs the whole test suite: every test on the CPU, then the op table and the
# golden training and SmolLM2 tests on the OpenCL (PoCL) and Vulkan (lavapipe, every SPIR-V module through spirv-val)
# backends.
set -euxo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --test
. .venv/bin/activate
python -m pytest -q -n 2
GOLDEN="test/test_train_golden.py test/test_llm_golden.py"
DEV=OPENCL python -m pytest -q -n 2 test/test_ops.py test/test_ops_semantics.py test/test_fusion.py $GOLDEN
DEV=VULKAN TEENYGRAD_SPIRV_VAL=1 python -m pytest -q -n 2 test/test_ops.py test/test_ops_semantics.py test/test_vulkan.py $GOLDEN
