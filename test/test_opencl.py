"""The GPU renderer's plans (no device needed) and the OpenCL backend's own behaviour (on PoCL in CI).

The op table (`DEV=OPENCL python -m pytest test/test_ops.py ...`) checks every op's values; this file checks what
the table can't see: which plan a kernel gets, the launch geometry, capability handling and the error messages.
"""
import os
import subprocess
import sys

import numpy as np
import pytest

import teenygrad as tg
from teenygrad.codegen.lower import lower
from teenygrad.dtype import dtypes
from teenygrad.ir.symbolic import BoundVariable
from teenygrad.renderer.opencl import OpenCLRenderer
from teenygrad.schedule import create_schedule

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def lowered(t: tg.Tensor, renderer):
  """The loop program of the last kernel that realizing `t` would run (inputs must be realized already)."""
  items = [it for it in create_schedule([t.lazydata]) if it.kind == "kernel"]
  roots = {it.root.id for it in items}
  root = items[-1].root
  return lower(root, root, lambda b: b.realized is not None or b.id in roots, renderer)


def cpu(shape, dtype=np.float32) -> tg.Tensor:
  return tg.Tensor(np.random.default_rng(0).standard_normal(shape).astype(dtype), device="CPU")


# ---- plans and launch geometry (rendering only) ----

def test_long_rows_get_one_work_group_per_row():
  renderer = OpenCLRenderer()
  program = lowered(cpu((4, 32768)).softmax(-1), renderer)
  assert renderer.plan(program).mode == "group"
  assert renderer.launch_dims(program).sizes() == (4, 256)
  src = renderer.render_kernel(program)
  assert src.count("barrier(CLK_LOCAL_MEM_FENCE)") >= 4 and "__local float shared_" in src
  assert "if (lane == 0) data0[" not in src, "the row is written by every lane, strided"


def test_full_reduction_is_one_work_group():
  renderer = OpenCLRenderer()
  program = lowered(cpu((100_000,)).sum(), renderer)
  plan = renderer.plan(program)
  assert plan.mode == "group" and plan.grid_loops == []
  assert renderer.launch_dims(program).sizes() == (1, 256)
  assert "if (lane == 0) data0[0]" in renderer.render_kernel(program)


def test_matmul_and_elementwise_get_one_work_item_per_output():
  renderer = OpenCLRenderer()
  program = lowered(cpu((64, 32)) @ cpu((32, 48)), renderer)
  assert renderer.plan(program).mode == "grid"
  assert renderer.launch_dims(program).sizes() == (64 * 48 // 128, 128)
  assert "barrier" not in renderer.render_kernel(program)
  program = lowered(cpu((1000,)).exp(), renderer)
  assert renderer.launch_dims(program).sizes() == (8, 128)


def test_launch_follows_symbolic_size():
  renderer = OpenCLRenderer()
  length = BoundVariable("length", 1, 4096, 300)
  window = tg.Tensor(cpu((4096,)).lazydata.shrink(((0, length),)))
  program = lowered(window.exp(), renderer)
  launch = renderer.launch_dims(program)
  assert [v.name for v in launch.variables] == ["length"]
  assert launch.sizes((300,)) == (3, 128) and launch.sizes((4096,)) == (32, 128)


def test_work_group_fits_device_limits():
  renderer = OpenCLRenderer(max_local=100, local_memory=1024)
  program = lowered(cpu((4, 32768)).softmax(-1), renderer)
  groups, local = renderer.launch_dims(program).sizes()
  assert local <= 64 and local & (local - 1) == 0


def test_subgroup_sum_where_the_device_has_them():
  with_subgroups = OpenCLRenderer(subgroups=True).render_kernel(lowered(cpu((65536,)).sum(), OpenCLRenderer(subgroups=True)))
  assert "sub_group_reduce_add(acc" in with_subgroups and "cl_khr_subgroups : enable" in with_subgroups
  # max must keep NaN, which sub_group_reduce_max does not promise: it stays on the shared-memory tree
  renderer = OpenCLRenderer(subgroups=True)
  assert "sub_group_reduce" not in renderer.render_kernel(lowered(cpu((65536,)).max(), renderer))


def test_float64_refused_without_fp64():
  renderer = OpenCLRenderer(fp64=False, device_name="Mali-G610")
  program = lowered(cpu((8,), np.float64) * 2, renderer)
  with pytest.raises(TypeError, match="float64 is not supported on Mali-G610"):
    renderer.render_kernel(program)


# ---- the device ----

def _opencl_available() -> bool:
  try:
    from teenygrad.device import Device
    Device["OPENCL"]
    return True
  except Exception:
    return False


needs_opencl = pytest.mark.skipif(not _opencl_available(), reason="no OpenCL driver (CI installs PoCL)")


@needs_opencl
def test_work_group_reductions_on_device(monkeypatch):
  from teenygrad.device import Device
  # CPU drivers keep rows in one work-item (faster there); force the GPU plan so its barriers run on this device
  monkeypatch.setattr(Device["OPENCL"].renderer, "group_max_outputs", 32768)
  data = np.random.default_rng(1).standard_normal((3, 40000)).astype(np.float32)
  x = tg.Tensor(data, device="OPENCL")
  np.testing.assert_allclose(x.sum().item(), data.astype(np.float64).sum(), rtol=1e-4)
  expected = np.exp(data - data.max(-1, keepdims=True))
  np.testing.assert_allclose(x.softmax(-1).numpy(), expected / expected.sum(-1, keepdims=True), rtol=1e-4, atol=1e-9)
  np.testing.assert_array_equal(x.max(-1).values.numpy(), data.max(-1))
  with_nan = data.copy()
  with_nan[1, 12345] = np.nan
  assert np.isnan(tg.Tensor(with_nan, device="OPENCL").max(-1).values.numpy()[1])


@needs_opencl
def test_half_storage_without_half_arithmetic():
  data = np.linspace(-4, 4, 5000).astype(np.float16)
  x = tg.Tensor(data, device="OPENCL")
  np.testing.assert_array_equal((x * 3).numpy(), (data.astype(np.float32) * 3).astype(np.float16))
  np.testing.assert_allclose(float(x.float().sum().item()), float(data.astype(np.float32).sum()), atol=1e-2)


@needs_opencl
def test_build_failure_shows_the_log():
  from teenygrad.device import Device
  with pytest.raises(RuntimeError, match="OpenCL build failed") as err:
    Device["OPENCL"].compiler.compile("__kernel void broken(__global float* a) { a[0] = undefined_name; }")
  assert "undefined_name" in str(err.value)


@needs_opencl
def test_binaries_are_cached_on_disk(tmp_path, monkeypatch):
  from teenygrad.device import Device
  from teenygrad.helpers import config
  from teenygrad.renderer.gpu import LaunchDims
  monkeypatch.setattr(config, "cache_dir", tmp_path)
  backend = Device["OPENCL"]
  src = "__kernel void twice(__global float* restrict out, __global const float* restrict a) { int i = get_global_id(0); out[i] = 2*a[i]; }"
  binary = backend.compiler.compile_cached(src)
  path = tmp_path / "kernels" / backend.compiler.cache_key(src)
  assert path.read_bytes() == binary
  program = backend.program("twice", path.read_bytes(), LaunchDims(1, 4, ()))
  a, out = backend.allocator.alloc(16), backend.allocator.alloc(16)
  data = np.arange(4, dtype=np.float32)
  backend.allocator.copyin(a, memoryview(data).cast("B"))
  program(out, a, wait=True)
  result = np.empty(4, np.float32)
  backend.allocator.copyout(memoryview(result).cast("B"), out)
  np.testing.assert_array_equal(result, 2 * data)


@needs_opencl
def test_allocation_over_the_limit_is_a_memory_error():
  from teenygrad.device import Device
  backend = Device["OPENCL"]
  with pytest.raises(MemoryError, match="allocation limit"):
    backend.allocator.alloc(backend.max_alloc + 1)


@needs_opencl
def test_no_platform_is_a_clear_error(tmp_path):
  env = dict(os.environ, OCL_ICD_VENDORS=str(tmp_path), PYTHONPATH=REPO_ROOT, DEV="OPENCL")
  script = "import teenygrad as tg\ntg.Tensor([1.0]).numpy()"
  result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
  assert result.returncode != 0
  assert "no OpenCL platform found" in result.stderr, result.stderr[-2000:]


def test_float64_support_is_reported():
  if not _opencl_available(): pytest.skip("no OpenCL driver (CI installs PoCL)")
  from teenygrad.device import Device
  backend = Device["OPENCL"]
  assert backend.supports(dtypes.float64) == ("cl_khr_fp64" in backend.extensions)


def test_float32_matmul_uses_the_tiled_kernel():
  from teenygrad.codegen.gemm_match import match_gemm
  renderer = OpenCLRenderer()
  def gemm(t: tg.Tensor):
    items = [it for it in create_schedule([t.lazydata]) if it.kind == "kernel"]
    root = items[-1].root
    match = match_gemm(root, root, lambda b: b.realized is not None, renderer)
    return renderer.render_gemm(match) if match is not None else None
  name, buffers, src, launch = gemm((cpu((2, 100, 40)) @ cpu((2, 40, 130))).relu())
  assert "__local float a_tile" in src and "barrier(CLK_LOCAL_MEM_FENCE)" in src
  assert launch.sizes() == (2 * 2 * 3, 256)
  assert gemm(cpu((1, 40)) @ cpu((40, 130))) is None, "a matrix-vector product keeps plain loops"


@needs_opencl
@pytest.mark.parametrize("batch,M,N,K,transpose_b", [(1, 64, 64, 64, False), (3, 65, 129, 17, False), (1, 100, 70, 200, True)])
def test_tiled_matmul_on_device(batch, M, N, K, transpose_b):
  rng = np.random.default_rng(2)
  a = rng.standard_normal((batch, M, K)).astype(np.float32)
  b = rng.standard_normal((batch, N, K) if transpose_b else (batch, K, N)).astype(np.float32)
  ta, tb = tg.Tensor(a, device="OPENCL"), tg.Tensor(b, device="OPENCL")
  out = ((ta @ (tb.transpose(1, 2) if transpose_b else tb)) * 0.5 + 1).relu().numpy()
  expected = np.maximum((a.astype(np.float64) @ (b.transpose(0, 2, 1) if transpose_b else b)) * 0.5 + 1, 0)
  np.testing.assert_allclose(out, expected, atol=1e-4 * np.sqrt(K), rtol=1e-4)
