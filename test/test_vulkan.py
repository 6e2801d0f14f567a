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


def test_int8_dequantizing_matmul(validated):
  """x @ W.T with W stored as Q8_0 blocks and dequantized inside the kernel graph (int8 loads, fp16 scales), and by
  the fused Q8_0 matvec."""
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
  # the fused kernel (nn/quant_vulkan.py): int8 weights widened in registers, one launch
  from teenygrad.engine.realize import ExecItem, capture_kernels
  with capture_kernels() as launched: fused = quantized.linear(vk_tensor(x)).numpy()
  np.testing.assert_allclose(fused, x @ reference_w.T, rtol=1e-4, atol=1e-4)
  if validated.subgroup_arithmetic: assert [ei.kernel.name for ei in launched if isinstance(ei, ExecItem)][-1] == "qmatvec_q8_0"


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


def _count_waits(monkeypatch, device) -> list:
  """Submits the host waits for (synchronize with work queued), counted in the list returned."""
  commands, waits = device.commands, []
  real = commands.synchronize
  def counted():
    if commands.queued or commands.current is not None: waits.append(1)
    real()
  monkeypatch.setattr(commands, "synchronize", counted)
  return waits


@pytest.mark.parametrize("mode", ["direct", "staging"])
def test_small_uploads_are_recorded_in_order(validated, monkeypatch, mode):
  """A small copyin (a decode step's token and position) is recorded with the queued work, not waited for, and still
  lands between the kernel queued before it (which reads the old contents) and the one after; a read-back is one wait."""
  from teenygrad.device import Buffer
  from teenygrad.dtype import dtypes
  if mode == "staging": monkeypatch.setattr(validated, "direct_access", False)
  old, new = np.arange(6, dtype=np.float32), np.arange(6, dtype=np.float32) * 10 + 1
  x = vk_tensor(old).realize()
  buffer: Buffer = x.lazydata.base.realized
  waits = _count_waits(monkeypatch, validated)
  before = (x * 2).realize()            # queued, reading the old contents
  buffer.copyin(new)                    # recorded after it
  after = (x * 3).realize()
  odd = Buffer("VULKAN", 3, dtypes.uint8).copyin(np.array([7, 8, 9], dtype=np.uint8))   # padded to whole words
  assert waits == []
  np.testing.assert_array_equal(after.numpy(), new * 3)
  assert len(waits) == 1
  np.testing.assert_array_equal(before.numpy(), old * 2)
  np.testing.assert_array_equal(odd.numpy(), [7, 8, 9])


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


# ---- fused quantized kernels (nn/quant_vulkan.py) ----

QUANT_TYPES = ["Q4_0", "Q4_1", "Q8_0"]


@pytest.fixture
def quant_kernels(validated, monkeypatch):
  """Fresh kernel objects, so every module is built (and validated) inside the test."""
  if not validated.subgroup_arithmetic: pytest.skip(f"{validated.device_name} has no subgroup arithmetic")
  from teenygrad.nn import quant_vulkan
  monkeypatch.setattr(quant_vulkan, "_cache", {})
  return quant_vulkan


def quant_weight(ggml_type: str, n: int, k: int, seed: int):
  """A random (n, k) weight quantized by gguf-py, as a QuantizedTensor on VULKAN."""
  gguf = pytest.importorskip("gguf")
  from teenygrad.nn.quant import QuantizedTensor
  rng = np.random.default_rng(seed)
  w = rng.standard_normal((n, k), dtype=np.float32) * rng.uniform(0.01, 2.0, size=(n, 1)).astype(np.float32)
  blocks = gguf.quants.quantize(w, gguf.GGMLQuantizationType[ggml_type])
  return QuantizedTensor.from_gguf_bytes(ggml_type, blocks, (n, k), device="VULKAN")


def quant_modules(quant_vulkan) -> list[bytes]:
  from teenygrad.renderer.spirv import parse_kernel
  return [parse_kernel(src)[1] for kernels in quant_vulkan._cache.values() for src in kernels.sources.values()]


@pytest.mark.parametrize("ggml_type", QUANT_TYPES)
@pytest.mark.parametrize("n, k, m", [(24, 96, 1), (37, 64, 3), (16, 576, 9), (19, 160, 64)], ids=["matvec", "odd", "ragged", "max_rows"])
def test_quant_linear_matches_reference(quant_kernels, ggml_type, n, k, m):
  """The fused matvec against the primitive-op reference (x @ dequantize().T), with and without a residual; m over
  GROUP_ROWS splits x into groups of the grid (the last one ragged for m = 9)."""
  from teenygrad.engine.realize import ExecItem, capture_kernels
  qt = quant_weight(ggml_type, n, k, seed=n + m)
  rng = np.random.default_rng(m)
  x, residual = rng.standard_normal((m, k), dtype=np.float32), rng.standard_normal((m, n), dtype=np.float32)
  want = qt.linear_reference(vk_tensor(x)).numpy()
  scale = np.abs(x) @ np.abs(qt.dequantize().numpy()).T   # float32 reassociation error grows with sum |x||w|
  with capture_kernels() as launched:
    got = qt.linear(vk_tensor(x)).numpy()
    got_residual = qt.linear(vk_tensor(x), residual=vk_tensor(residual)).numpy()
  assert [ei.kernel.name for ei in launched if isinstance(ei, ExecItem)].count(f"qmatvec_{ggml_type.lower()}") == 2
  np.testing.assert_allclose(got, want, rtol=0, atol=float(scale.max()) * 2e-6)
  np.testing.assert_allclose(got_residual, want + residual, rtol=0, atol=float(scale.max()) * 2e-6 + 1e-6)
  modules = quant_modules(quant_kernels)
  assert modules and all(uses(module, OP_GROUP_FADD) for module in modules)


@pytest.mark.parametrize("ggml_type", QUANT_TYPES)
@pytest.mark.parametrize("prologue", ["norm", "swiglu"])
@pytest.mark.parametrize("m", [1, 9])
def test_fused_linear_prologues_match_the_primitive_path(quant_kernels, ggml_type, prologue, m):
  """llm/fused_linear.py on Vulkan: the RMSNorm or silu(gate) * up folded into the quantized matvec (with and without
  the residual) is one launch and matches the model's primitive path (rms_norm / silu * up, then the reference matmul)."""
  from teenygrad.engine.realize import ExecItem, capture_kernels
  from teenygrad.llm.fused_linear import fused_linear
  from teenygrad.llm.model import rms_norm
  n, k, eps = 40, 96, 1e-5
  qt = quant_weight(ggml_type, n, k, seed=m)
  rng = np.random.default_rng(m)
  x = rng.standard_normal((m, 2 * k if prologue == "swiglu" else k), dtype=np.float32) * 3
  norm, residual = rng.standard_normal(k, dtype=np.float32), rng.standard_normal((m, n), dtype=np.float32)
  tx, tnorm = vk_tensor(x), vk_tensor(norm)
  if prologue == "norm": fed = rms_norm(tx, tnorm, eps)
  else: fed = tx[:, :k].silu() * tx[:, k:]
  want = qt.linear_reference(fed).numpy()
  scale = np.abs(fed.numpy()) @ np.abs(qt.dequantize().numpy()).T
  options = {"norm": tnorm, "eps": eps} if prologue == "norm" else {"swiglu": True}
  with capture_kernels() as launched:
    got = fused_linear(tx, qt, **options).numpy()
    got_residual = fused_linear(tx, qt, residual=vk_tensor(residual), **options).numpy()
  assert [ei.kernel.name for ei in launched if isinstance(ei, ExecItem)] == [f"qmatvec_{ggml_type.lower()}"] * 2
  np.testing.assert_allclose(got, want, rtol=0, atol=float(scale.max()) * 1e-5)
  np.testing.assert_allclose(got_residual, want + residual, rtol=0, atol=float(scale.max()) * 1e-5 + 1e-6)


@pytest.mark.parametrize("ggml_type", QUANT_TYPES)
def test_quant_embedding_rows_are_exact(quant_kernels, ggml_type):
  """The row gather is bit-identical with the reference dequantize; a bad id raises."""
  n, k = 29, 96
  qt = quant_weight(ggml_type, n, k, seed=5)
  want = qt.dequantize().numpy()
  ids = np.array([[0, n - 1, 7], [7, 3, 0]])
  got = qt.embedding(vk_tensor(ids)).numpy()
  np.testing.assert_array_equal(got.view(np.uint32), want[ids].view(np.uint32))
  with pytest.raises(IndexError, match="out of range"): qt.embedding(vk_tensor(np.array([n]))).numpy()
  assert any(key[0] == "rows" for kernels in quant_kernels._cache.values() for key in kernels.sources)


@pytest.mark.parametrize("reported", [1, 4, 64, 128])
def test_quant_kernels_take_any_subgroup_size(quant_kernels, validated, monkeypatch, reported):
  """The device's reported subgroup size only sets the dispatch size (rows per work-group); lanes, rows and strides
  come from the built-ins, so a driver picking another size (or a report that is off) still gets every row right."""
  monkeypatch.setattr(validated, "subgroup_size", reported)
  n, k = 300, 128
  qt = quant_weight("Q4_0", n, k, seed=9)
  x = np.random.default_rng(9).standard_normal((2, k), dtype=np.float32)
  np.testing.assert_allclose(qt.linear(vk_tensor(x)).numpy(), qt.linear_reference(vk_tensor(x)).numpy(), rtol=1e-4, atol=1e-4)
  from teenygrad.renderer.spirv import parse_kernel
  (src,) = [src for kernels in quant_kernels._cache.values() for key, src in kernels.sources.items() if key[0] == "linear"]
  assert parse_kernel(src)[0]["groups"] == -(-n // max(1, 128 // reported))


def test_quant_weights_bound_in_chunks(quant_kernels, validated, monkeypatch):
  """A weight past maxStorageBufferRange is bound as an array of views; a block straddling two views still reads right
  (views of 256 bytes here, so a small weight spans several)."""
  from teenygrad.renderer import spirv_shader
  from teenygrad.renderer.spirv import parse_kernel
  monkeypatch.setattr(spirv_shader, "CHUNK_BYTES", 256)
  monkeypatch.setattr(validated, "max_storage_range", 256)
  for ggml_type in QUANT_TYPES:
    qt = quant_weight(ggml_type, 24, 96, seed=4)
    x = np.random.default_rng(4).standard_normal((3, 96), dtype=np.float32)
    np.testing.assert_allclose(qt.linear(vk_tensor(x)).numpy(), qt.linear_reference(vk_tensor(x)).numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(qt.embedding(vk_tensor(np.array([23, 1]))).numpy(), qt.dequantize().numpy()[[23, 1]])
  metas = [parse_kernel(src)[0] for kernels in quant_kernels._cache.values() for src in kernels.sources.values()]
  assert all(meta["bindings"][2] > 1 and meta["chunk_bytes"] == 256 for meta in metas)   # the weights' binding
  assert all(uses(module, OP_CAPABILITY, CAP_STORAGE_ARRAY_DYNAMIC) for module in quant_modules(quant_kernels))


def test_quant_decode_step_is_one_command_buffer(quant_kernels):
  """An embedding gather and a matvec with its residual, under the JIT: both launches are recorded, so every replay
  is the one recorded command buffer, gathering the rows of its new ids."""
  import teenygrad as tg
  from teenygrad.device.vulkan_graph import VulkanGraph
  n, k = 40, 64
  table, proj = quant_weight("Q8_0", n, k, seed=1), quant_weight("Q4_1", k, k, seed=2)
  table_w, proj_w = table.dequantize().numpy(), proj.dequantize().numpy()

  @tg.jit
  def step(ids):
    h = table.embedding(ids)
    return proj.linear(h, residual=h)
  for i in range(6):
    ids = np.array([i, n - 1 - i])
    h = table_w[ids]
    np.testing.assert_allclose(step(vk_tensor(ids)).numpy(), h @ proj_w.T + h, rtol=1e-4, atol=1e-4)
  assert isinstance(step.capture.graph, VulkanGraph)
  assert step.capture.graph.recordings == 1 and step.capture.graph_launches == 4


def test_quant_without_subgroup_arithmetic_runs_the_reference(validated, monkeypatch):
  """A device without subgroup arithmetic in compute shaders gets no fused kernels: linear and embedding run the reference."""
  from teenygrad.nn import quant_vulkan
  monkeypatch.setattr(validated, "subgroup_arithmetic", False)
  monkeypatch.setattr(quant_vulkan, "_cache", {})
  assert quant_vulkan.vulkan_kernels("VULKAN", "Q4_0") is None
  qt = quant_weight("Q4_0", 8, 64, seed=3)
  x = np.random.default_rng(3).standard_normal((1, 64), dtype=np.float32)
  np.testing.assert_allclose(qt.linear(vk_tensor(x)).numpy(), x @ qt.dequantize().numpy().T, rtol=1e-5, atol=1e-5)


# ---- decode attention (llm/attention_vulkan.py) ----

def _attention_reference(q: np.ndarray, keys: np.ndarray, values: np.ndarray, start: int, mask: np.ndarray | None) -> np.ndarray:
  """numpy's softmax attention (float64) of q (B, H, 1, D) over cache rows [0, start] of keys/values (B, KVH, L, D),
  grouped-query heads sharing their kv head, plus an additive (B, L) mask."""
  D, group = q.shape[-1], q.shape[1] // keys.shape[1]
  k64, v64 = np.repeat(keys, group, axis=1)[:, :, :start + 1].astype(np.float64), np.repeat(values, group, axis=1)[:, :, :start + 1]
  scores = (q.astype(np.float64) @ k64.transpose(0, 1, 3, 2)) / np.sqrt(D)
  if mask is not None: scores = scores + mask[:, None, None, :start + 1]
  weights = np.exp(scores - scores.max(-1, keepdims=True))
  return (weights / weights.sum(-1, keepdims=True)) @ v64


def _assert_subgroup_sums(launchers: dict) -> None:
  """Every module the launchers built sums through subgroup operations."""
  from teenygrad.renderer.spirv import parse_kernel
  modules = [parse_kernel(src)[1] for launcher in launchers.values() for src in launcher.sources.values()]
  assert modules and all(uses(module, OP_GROUP_FADD) for module in modules)


@pytest.mark.parametrize("masked", [False, True], ids=["plain", "mask"])
@pytest.mark.parametrize("start", [3, 44, 79])
def test_decode_attention_matches_numpy(validated, monkeypatch, masked, start):
  """One dispatch against numpy's softmax attention: grouped-query heads, two sequences, positions that leave lanes
  without keys, the last row of the cache, an additive mask."""
  if not validated.subgroup_arithmetic: pytest.skip(f"{validated.device_name} has no subgroup arithmetic")
  from teenygrad.engine.realize import ExecItem, capture_kernels
  from teenygrad.llm import attention_vulkan
  from teenygrad.llm.custom_ops import decode_attention
  monkeypatch.setattr(attention_vulkan, "_kernels", {})
  B, H, KVH, L, D = 2, 6, 2, 80, 16
  rng = np.random.default_rng(start)
  q = rng.standard_normal((B, H, 1, D), dtype=np.float32)
  keys, values = rng.standard_normal((B, KVH, L, D), dtype=np.float32), rng.standard_normal((B, KVH, L, D), dtype=np.float32)
  mask = np.where(rng.random((B, L)) < 0.3, -1e9, 0.0).astype(np.float32) if masked else None
  with capture_kernels() as launched:
    out = decode_attention(vk_tensor(q), vk_tensor(keys), vk_tensor(values), vk_tensor(np.array([start], np.int32)),
                           vk_tensor(mask) if masked else None).numpy()
  assert [ei.kernel.name for ei in launched if isinstance(ei, ExecItem)][-1] == "decode_attention"
  np.testing.assert_allclose(out, _attention_reference(q, keys, values, start, mask), rtol=1e-5, atol=1e-5)
  _assert_subgroup_sums(attention_vulkan._kernels)


@pytest.mark.parametrize("interleaved", [True, False], ids=["pairs", "halves"])
@pytest.mark.parametrize("masked", [False, True], ids=["plain", "mask"])
@pytest.mark.parametrize("start", [0, 44, 79])
def test_rope_attention_matches_the_primitive_path(validated, monkeypatch, interleaved, masked, start):
  """RoPE + the cache write + attention in one dispatch, straight from a fused q/k/v row, against the model's primitive
  path (apply_rope, then numpy's softmax attention over the cache with the new row written): the output and both caches."""
  if not validated.subgroup_arithmetic: pytest.skip(f"{validated.device_name} has no subgroup arithmetic")
  from teenygrad.engine.realize import ExecItem, capture_kernels
  from teenygrad.llm import attention_vulkan
  from teenygrad.llm.custom_ops import rope_attention
  from teenygrad.llm.model import apply_rope
  monkeypatch.setattr(attention_vulkan, "_rope_kernels", {})
  B, H, KVH, L, D, P = 2, 6, 2, 80, 16, 96
  rng = np.random.default_rng(start)
  qkv = rng.standard_normal((B, 1, (H + 2 * KVH) * D), dtype=np.float32)
  angles = np.outer(np.arange(P), 1.0 / 10000 ** (np.arange(D // 2) * 2 / D))
  cos, sin = np.cos(angles).astype(np.float32), np.sin(angles).astype(np.float32)
  keys, values = rng.standard_normal((B, KVH, L, D), dtype=np.float32), rng.standard_normal((B, KVH, L, D), dtype=np.float32)
  mask = np.where(rng.random((B, L)) < 0.3, -1e9, 0.0).astype(np.float32) if masked else None
  tkeys, tvalues = vk_tensor(keys).contiguous().realize(), vk_tensor(values).contiguous().realize()
  with capture_kernels() as launched:
    out = rope_attention(vk_tensor(qkv), vk_tensor(cos), vk_tensor(sin), vk_tensor(np.array([start], np.int32)), tkeys, tvalues,
                         vk_tensor(mask) if masked else None, H, interleaved).numpy()
  assert [ei.kernel.name for ei in launched if isinstance(ei, ExecItem)][-1] == "rope_attention"
  heads = qkv.reshape(B, H + 2 * KVH, 1, D)
  row_cos, row_sin = vk_tensor(cos[start:start + 1]), vk_tensor(sin[start:start + 1])
  q = apply_rope(vk_tensor(heads[:, :H]), row_cos, row_sin, interleaved).numpy()
  keys[:, :, start] = apply_rope(vk_tensor(heads[:, H:H + KVH]), row_cos, row_sin, interleaved).numpy()[:, :, 0]
  values[:, :, start] = heads[:, H + KVH:, 0]
  np.testing.assert_allclose(tkeys.numpy(), keys, rtol=1e-6, atol=1e-6)
  np.testing.assert_array_equal(tvalues.numpy(), values)
  np.testing.assert_allclose(out, _attention_reference(q, keys, values, start, mask), rtol=1e-5, atol=1e-5)
  _assert_subgroup_sums(attention_vulkan._rope_kernels)


def test_decode_attention_without_subgroup_arithmetic_runs_the_reference(validated, monkeypatch):
  from teenygrad.llm import attention_vulkan
  from teenygrad.llm.custom_ops import decode_attention
  monkeypatch.setattr(validated, "subgroup_arithmetic", False)
  monkeypatch.setattr(attention_vulkan, "_kernels", {})
  q, cache = vk_tensor(np.ones((1, 2, 1, 4), np.float32)), vk_tensor(np.ones((1, 1, 8, 4), np.float32))
  assert decode_attention(q, cache, cache, vk_tensor(np.array([2], np.int32)), None) is None


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
def test_float_embedding_rows_are_exact(validated, dtype):
  """llm/custom_ops.embedding_rows gathers rows of a float table in one dispatch (nn/quant_vulkan.float_rows): exact, an
  odd row width (half tables' rows then start mid-word), a bad id raises; under the JIT a replay gathers its new ids."""
  import teenygrad as tg
  from teenygrad.engine.realize import ExecItem, capture_kernels
  from teenygrad.llm.custom_ops import embedding_rows
  V, D = 37, 7
  table = np.random.default_rng(0).standard_normal((V, D), dtype=np.float32)
  t = vk_tensor(table).cast(getattr(tg.dtypes, dtype)).realize()
  want = t.float().numpy()
  ids = np.array([[0, V - 1, 5], [5, 12, 1]], np.int32)
  with capture_kernels() as launched: got = embedding_rows(t, vk_tensor(ids)).numpy()
  np.testing.assert_array_equal(got.view(np.uint32), want[ids].view(np.uint32))
  assert f"rows_{dtype}" in [ei.kernel.name for ei in launched if isinstance(ei, ExecItem)]
  with pytest.raises(IndexError, match="out of range"): embedding_rows(t, vk_tensor(np.array([V], np.int32))).numpy()

  @tg.jit
  def embed(ids): return embedding_rows(t, ids) * 2
  for step in range(4):
    ids = np.array([step, V - 1 - step], np.int32)
    np.testing.assert_array_equal(embed(vk_tensor(ids)).numpy(), want[ids] * 2)
