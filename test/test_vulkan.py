"""The Vulkan backend on whatever Vulkan device is present (Mesa's lavapipe in CI).

Every module these tests compile goes through spirv-val: a module it rejects fails the test. The op table runs
on VULKAN separately (`DEV=VULKAN pytest test/test_ops.py`); here are the parts it doesn't pin down: which
SPIR-V features a kernel uses (shared memory, subgroups, 16-bit storage), binding splits past
maxStorageBufferRange, the pipeline cache, and an int8 dequantizing matmul.
"""
from __future__ import annotations

import os
import shutil
import struct

import numpy as np
import pytest

from teenygrad.device import vulkan_bindings

try:
  vulkan_bindings.load_library()
  HAVE_VULKAN = True
except vulkan_bindings.VulkanError:
  HAVE_VULKAN = False

pytestmark = [pytest.mark.skipif(not HAVE_VULKAN, reason="no Vulkan loader (apt-get install libvulkan1 mesa-vulkan-drivers)"),
              pytest.mark.skipif(shutil.which("spirv-val") is None, reason="spirv-val missing (apt-get install spirv-tools)")]

# opcodes and capabilities looked for in the modules (SPIR-V spec numbering)
OP_CONTROL_BARRIER, OP_GROUP_FADD, OP_CAPABILITY = 224, 350, 17
CAP_STORAGE16, CAP_STORAGE_ARRAY_DYNAMIC = 4433, 30
STORAGE_WORKGROUP, OP_VARIABLE = 4, 59


@pytest.fixture(autouse=True)
def validated(monkeypatch):
  """Compile every kernel afresh with spirv-val on, whatever the environment says."""
  from teenygrad.device import Device
  from teenygrad.engine import realize
  device = Device["VULKAN"]
  monkeypatch.setattr(device.compiler, "validate", True)
  monkeypatch.setattr(device.compiler, "cache_tag", device.compiler.cache_tag + "\0test")
  monkeypatch.setattr(realize, "_kernel_cache", {})
  yield device


def run_kernels(fn):
  """fn() realized on VULKAN: (its numpy result, the SPIR-V modules of the kernels it launched)."""
  from teenygrad.engine.realize import capture_kernels
  from teenygrad.renderer.spirv import parse_kernel
  with capture_kernels() as launched:
    out = fn().numpy()
  return out, [parse_kernel(ei.kernel.src)[1] for ei in launched]


def instructions(module: bytes):
  words = struct.unpack(f"<{len(module) // 4}I", module)
  i = 5
  while i < len(words):
    count, opcode = words[i] >> 16, words[i] & 0xFFFF
    yield opcode, words[i + 1:i + count]
    i += count


def uses(module: bytes, opcode: int, first_operand: int | None = None, operand_index: int = 0) -> bool:
  return any(op == opcode and (first_operand is None or (len(args) > operand_index and args[operand_index] == first_operand))
             for op, args in instructions(module))


def vk_tensor(array: np.ndarray, dtype=None):
  import teenygrad
  return teenygrad.Tensor(array, device="VULKAN", dtype=dtype)


def test_elementwise_add_validates_and_runs():
  a, b = np.random.rand(1000).astype(np.float32), np.random.rand(1000).astype(np.float32)
  out, modules = run_kernels(lambda: vk_tensor(a) + vk_tensor(b))
  np.testing.assert_array_equal(out, a + b)
  assert len(modules) == 1 and modules[0][:4] == struct.pack("<I", 0x07230203)


def test_row_sum_through_subgroups(validated):
  if not validated.subgroup_arithmetic: pytest.skip(f"{validated.device_name} has no subgroup arithmetic")
  x = np.random.rand(8, 4096).astype(np.float32)
  out, modules = run_kernels(lambda: vk_tensor(x).sum(1))
  np.testing.assert_allclose(out, x.sum(axis=1), rtol=1e-5)
  assert any(uses(m, OP_GROUP_FADD) for m in modules)


def test_full_max_through_shared_memory():
  """A float max can't use the subgroup op (NaN must win): lanes combine through Workgroup memory and barriers."""
  x = np.random.rand(100_003).astype(np.float32)
  x[77_777] = 5.0
  out, modules = run_kernels(lambda: vk_tensor(x).max())
  assert out == 5.0
  assert any(uses(m, OP_VARIABLE, STORAGE_WORKGROUP, 2) and uses(m, OP_CONTROL_BARRIER) for m in modules)
  x[123] = np.nan
  assert np.isnan(vk_tensor(x).max().numpy())


def test_softmax_rows_split_over_lanes():
  import torch
  x = np.random.randn(3, 2000).astype(np.float32)
  out, modules = run_kernels(lambda: vk_tensor(x).softmax(-1))
  np.testing.assert_allclose(out, torch.from_numpy(x).softmax(-1).numpy(), rtol=1e-5, atol=1e-7)
  assert any(uses(m, OP_CONTROL_BARRIER) for m in modules)


def test_fp16_kernel():
  import teenygrad
  import torch
  a, b = np.random.randn(300).astype(np.float16), np.random.randn(300).astype(np.float16)
  out, modules = run_kernels(lambda: (vk_tensor(a) * vk_tensor(b) + 1).exp())
  expected = (torch.from_numpy(a) * torch.from_numpy(b) + 1).exp().numpy()
  np.testing.assert_allclose(out.astype(np.float32), expected.astype(np.float32), rtol=5e-3, atol=1e-3)  # torch rounds a*b to half first
  assert out.dtype == np.float16
  assert all(uses(m, OP_CAPABILITY, CAP_STORAGE16) for m in modules)
  assert vk_tensor(a).dtype == teenygrad.float16


def test_float64_transcendentals_are_double_precision():
  x = np.linspace(-30, 30, 1001)
  np.testing.assert_allclose(vk_tensor(x).sin().numpy(), np.sin(x), rtol=1e-12, atol=1e-14)
  np.testing.assert_allclose(vk_tensor(x).exp2().numpy(), np.exp2(x), rtol=1e-13)
  pos = np.abs(x) + 1e-300
  np.testing.assert_allclose(vk_tensor(pos).log2().numpy(), np.log2(pos), rtol=1e-13, atol=1e-14)
  special = np.array([0.0, -1.0, np.inf, np.nan, 5e-320])
  with np.errstate(divide="ignore", invalid="ignore"):
    np.testing.assert_allclose(vk_tensor(special).log2().numpy(), np.log2(special), rtol=1e-6)


def test_integer_division_by_zero_gives_zero():
  a, b = np.array([7, -7, 5, 0], dtype=np.int32), np.array([2, 2, 0, 0], dtype=np.int32)
  assert vk_tensor(a).__floordiv__(vk_tensor(b)).numpy().tolist()[2:] == [0, 0]


def test_buffer_larger_than_one_binding(validated):
  """A tensor past maxStorageBufferRange is bound as several views of one buffer."""
  n = validated.max_storage_range // 4 + 1_000_003
  x = np.arange(n, dtype=np.int32)
  out, modules = run_kernels(lambda: vk_tensor(x) + 1)
  assert out[0] == 1 and out[-1] == n and out[n // 2] == n // 2 + 1 and np.array_equal(out[-1000:], x[-1000:] + 1)
  assert any(uses(m, OP_CAPABILITY, CAP_STORAGE_ARRAY_DYNAMIC) for m in modules)


@pytest.mark.parametrize("name, fn", [
  ("sum", lambda t: t.sum(1)), ("softmax", lambda t: t.softmax(-1)), ("transpose", lambda t: t.T.contiguous() * 2),
  ("pad_flip", lambda t: t.pad((0, 3, 1, 2)).flip(0) + 1), ("max", lambda t: t.max()), ("cumsum", lambda t: t.cumsum(1))])
def test_64_bit_index_math(validated, monkeypatch, name, fn):
  """Buffers past 2**30 elements switch every index to 64 bits; force that path on small inputs."""
  import teenygrad
  x = np.random.randn(37, 300).astype(np.float32)
  expected = fn(teenygrad.Tensor(x, device="CPU")).numpy()
  monkeypatch.setattr(validated.renderer, "index_bits", 64)
  out = fn(vk_tensor(x)).numpy()
  np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)


def quantize_q8_0(w: np.ndarray) -> np.ndarray:
  """ggml's Q8_0: blocks of 32 as (float16 scale, 32 int8): (rows, blocks, 34) bytes."""
  rows, k = w.shape
  blocks = w.reshape(rows, k // 32, 32)
  scale = (np.abs(blocks).max(axis=-1, keepdims=True) / 127).astype(np.float16)
  q = np.round(blocks / np.where(scale == 0, 1, scale.astype(np.float32))).astype(np.int8)
  return np.concatenate([scale.view(np.uint8), q.view(np.uint8)], axis=-1)


def test_int8_dequantizing_matmul():
  """x @ W.T with W stored as Q8_0 blocks and dequantized inside the kernel graph (int8 loads, fp16 scales)."""
  from teenygrad.dtype import dtypes
  rows, k = 48, 256
  w = np.random.randn(rows, k).astype(np.float32)
  raw = quantize_q8_0(w)
  scale = raw[:, :, :2].copy().view(np.float16).astype(np.float32)
  reference_w = (raw[:, :, 2:].copy().view(np.int8).astype(np.float32) * scale).reshape(rows, k)
  x = np.random.randn(5, k).astype(np.float32)

  def dequant_matmul():
    b = vk_tensor(raw)
    lo, hi = b[:, :, 0:1].cast(dtypes.uint16), b[:, :, 1:2].cast(dtypes.uint16)
    d = (lo | (hi << 8)).bitcast(dtypes.float16).float()
    q = b[:, :, 2:34].bitcast(dtypes.int8).float()
    return vk_tensor(x) @ (q * d).reshape(rows, k).T

  out, modules = run_kernels(dequant_matmul)
  np.testing.assert_allclose(out, x @ reference_w.T, rtol=1e-4, atol=1e-4)
  try: from teenygrad.nn.quant import QuantizedTensor
  except ImportError: return
  quantized = QuantizedTensor.from_gguf_bytes("Q8_0", raw.reshape(-1), (rows, k), device="VULKAN")
  np.testing.assert_allclose(quantized.dequantize().numpy(), reference_w, rtol=0, atol=0)


def test_pipeline_cache_is_saved(validated):
  vk_tensor(np.ones(3, dtype=np.float32)).exp().numpy()
  validated.save_pipeline_cache()
  path = validated._pipeline_cache_path()
  assert path.exists() and path.stat().st_size > 0


def test_spirv_val_rejects_a_broken_module():
  from teenygrad.device.vulkan import validate_spirv
  with pytest.raises(RuntimeError, match="spirv-val rejected"):
    validate_spirv(struct.pack("<5I", 0x07230203, 0x00010300, 0, 1, 0) + struct.pack("<2I", (2 << 16) | 17, 999))


def test_missing_loader_message(monkeypatch):
  import ctypes
  def no_library(name, *args, **kwargs): raise OSError(f"{name}: cannot open shared object file")
  monkeypatch.setattr(ctypes, "CDLL", no_library)
  with pytest.raises(vulkan_bindings.VulkanError, match="libvulkan"):
    vulkan_bindings.load_library()


def test_op_table_device_is_vulkan_when_asked():
  if os.environ.get("DEV", "").upper() != "VULKAN": pytest.skip("run with DEV=VULKAN")
  import teenygrad
  assert teenygrad.Tensor([1.0]).device.upper().startswith("VULKAN")


def test_upload_from_read_only_memory():
  """Weights memory-mapped read-only (GGUF, safetensors) upload without a writable copy."""
  x = np.arange(10, dtype=np.float32)
  x.setflags(write=False)
  np.testing.assert_array_equal((vk_tensor(x) * 2).numpy(), x * 2)


def test_staging_copies(validated, monkeypatch):
  """The path a discrete GPU takes (device memory the CPU can't map): uploads and read-backs through staging buffers."""
  monkeypatch.setattr(validated, "direct_access", False)
  x = np.random.rand(1000).astype(np.float32)
  t = vk_tensor(x)
  assert t.lazydata.base.realized.raw.mapped is None
  np.testing.assert_allclose((t * 3).sum().numpy(), (x * 3).sum(), rtol=1e-5)
  np.testing.assert_array_equal((t + 1).numpy(), x + 1)


def test_more_inputs_than_one_shader_can_bind(validated):
  """A kernel past maxPerStageDescriptorStorageBuffers (32 on lavapipe) is split into kernels that fit."""
  import teenygrad
  n = validated.max_storage_buffers + 9 if validated.max_storage_buffers < 200 else 40
  arrays = [np.random.rand(2, 3).astype(np.float32) for _ in range(n)]
  out, modules = run_kernels(lambda: teenygrad.Tensor.cat([vk_tensor(a) for a in arrays], dim=1))
  np.testing.assert_array_equal(out, np.concatenate(arrays, axis=1))
  bindings = [sum(1 for op, args in instructions(m) if op == 71 and len(args) > 1 and args[1] == 33) for m in modules]
  assert len(modules) > 1 and max(bindings) <= validated.max_storage_buffers


@pytest.mark.parametrize("dtype", ["bool", "uint8", "int8", "int16", "float16", "bfloat16"])
def test_narrow_types_packed_in_words(validated, monkeypatch, dtype):
  """Devices without 8/16-bit storage buffers: narrow types live in 32-bit words (atomic lane stores)."""
  import teenygrad
  from teenygrad.dtype import dtypes
  tg_dtype = getattr(dtypes, dtype)
  x = (np.random.randn(3, 37) * 20).astype(np.float32)
  def fn(t):
    narrow = t.cast(tg_dtype)
    stored = (narrow.flip(1) + narrow).cast(tg_dtype).realize()   # written to a packed buffer, then read back
    return stored.cast(dtypes.float32), narrow[:, ::3].cast(dtypes.float32).sum(1), narrow.cast(dtypes.float32)
  expected = [o.numpy() for o in fn(teenygrad.Tensor(x, device="CPU"))]
  monkeypatch.setattr(validated.renderer, "narrow_storage", False)
  out = [o.numpy() for o in fn(vk_tensor(x))]
  for a, b in zip(out, expected): np.testing.assert_allclose(a.astype(np.float64), b.astype(np.float64), rtol=1e-6)


# ---- JIT replay as one recorded command buffer ----

@pytest.mark.parametrize("mode", ["direct", "staging", "index64"])
def test_jit_replay_is_one_command_buffer_for_every_position(validated, monkeypatch, mode):
  """A decode-like step (write a row of a cache at a symbolic position, attend over the cache up to it): one
  command buffer, recorded once, serves every position; its size arguments come from a buffer the replay rewrites."""
  import teenygrad as tg
  from teenygrad.device.vulkan_graph import VulkanGraph
  if mode == "staging": monkeypatch.setattr(validated, "direct_access", False)   # a discrete GPU's memory
  if mode == "index64": monkeypatch.setattr(validated.renderer, "index_bits", 64)  # sizes as 64-bit arguments
  max_len, dim = 16, 8
  cache = vk_tensor(np.zeros((max_len, dim), np.float32)).contiguous().realize()
  pos_var = tg.Variable("pos", 0, max_len - 1)

  @tg.jit
  def decode(k, q, pos):
    row = k.reshape(1, dim)._pad(((pos, max_len - 1 - pos), (0, 0)))
    mask = tg.ones(1, dim, dtype=tg.bool, device="VULKAN")._pad(((pos, max_len - 1 - pos), (0, 0)))
    cache.assign(tg.where(mask, row, cache)).realize()
    window = cache._shrink(((0, pos + 1), (0, dim)))                    # (pos+1, dim)
    weights = (window * q).sum(1).softmax(0)                           # (pos+1,)
    return (weights.reshape(-1, 1) * window).sum(0)                    # (dim,)

  reference = np.zeros((max_len, dim), np.float32)
  rng = np.random.default_rng(0)
  outputs = []
  for p in range(10):
    k, q = rng.standard_normal(dim, dtype=np.float32), rng.standard_normal(dim, dtype=np.float32)
    out = decode(vk_tensor(k), vk_tensor(q), pos_var.bind(p))
    reference[p] = k
    scores = reference[:p + 1] @ q
    weights = np.exp(scores - scores.max()) / np.exp(scores - scores.max()).sum()
    outputs.append((out, weights @ reference[:p + 1]))
  for out, expected in outputs: np.testing.assert_allclose(out.numpy(), expected, rtol=1e-4, atol=1e-5)   # outputs are fresh
  np.testing.assert_allclose(cache.numpy(), reference)
  graph = decode.capture.graph
  assert isinstance(graph, VulkanGraph)
  assert graph.recordings == 1 and decode.capture.graph_launches == 8   # calls 3..10 replayed one recording


def test_replay_barriers_only_between_dependent_dispatches(validated):
  """Two independent kernels share a barrier-free run; the kernel reading both waits for them (one barrier)."""
  import teenygrad as tg

  @tg.jit
  def f(a, b):
    x, y = (a * 2).realize(), (b + 3).realize()
    return x * y
  a, b = np.arange(6, dtype=np.float32), np.ones(6, dtype=np.float32)
  for _ in range(4): out = f(vk_tensor(a), vk_tensor(b))
  np.testing.assert_array_equal(out.numpy(), (a * 2) * (b + 3))
  assert f.kernel_count == 3 and f.capture.graph.barriers == 1


def test_eager_launches_reuse_descriptor_sets(validated):
  """A launch on buffers seen before writes no descriptor set; destroying a buffer frees the sets that point at it."""
  from teenygrad.device import Buffer
  from teenygrad.dtype import dtypes
  from teenygrad.engine.realize import ExecItem, capture_kernels, run_exec_item
  x = vk_tensor(np.arange(16, dtype=np.float32))
  with capture_kernels() as launched: (x + 1).realize()
  cache = validated.commands.set_cache
  out = Buffer("VULKAN", 16, dtypes.float32)
  item = ExecItem(launched[0].kernel, [out, *launched[0].buffers[1:]], launched[0].var_values, "VULKAN")
  run_exec_item(item)
  before = len(cache)
  for _ in range(5): run_exec_item(item)
  assert len(cache) == before
  np.testing.assert_array_equal(out.numpy(), np.arange(16) + 1)
  raw = out.raw
  assert raw.sets
  del item, out   # the allocator keeps the buffer for reuse, with its descriptor sets
  assert raw.sets and len(cache) == before
  validated.allocator.empty_cache()   # destroyed now: its sets are freed with it
  assert not raw.sets and len(cache) < before


def test_freed_buffers_are_reused(validated):
  """A freed buffer is kept for the next allocation of its size (no vkAllocateMemory per decode step)."""
  from teenygrad.device import Buffer
  from teenygrad.dtype import dtypes
  first = Buffer("VULKAN", 1000, dtypes.float32).copyin(np.zeros(1000, np.float32))
  raw = first.raw
  del first
  second = Buffer("VULKAN", 1000, dtypes.float32).copyin(np.arange(1000, dtype=np.float32))
  assert second.raw is raw
  np.testing.assert_array_equal(second.numpy(), np.arange(1000))


def test_descriptor_pools_fill_up_and_refill(validated, monkeypatch):
  """Pools of two sets: launches past a pool's capacity open new pools (drivers that enforce maxSets, such as NVIDIA's;
  lavapipe allocates past it), and sets freed with their buffers make room again."""
  from teenygrad.device import vulkan_commands
  monkeypatch.setattr(vulkan_commands, "SETS_PER_POOL", 2)
  monkeypatch.setattr(validated.commands, "set_pools", [])   # start from no pool (the cache's entries name their own)
  x = vk_tensor(np.arange(8, dtype=np.float32))
  for i in range(12):
    np.testing.assert_array_equal((x + i).numpy(), np.arange(8) + i)
    validated.allocator.empty_cache()   # destroy the outputs: their sets are freed
  kept = [(x * i).realize() for i in range(6)]
  for i, t in enumerate(kept): np.testing.assert_array_equal(t.numpy(), np.arange(8) * i)
  assert validated.commands.set_pools
