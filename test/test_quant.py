"""Quantized GGUF weights (teenygrad/nn/quant.py) against gguf-py's numpy quantize/dequantize.

For every type: the Tensor-primitive dequantize is bit-identical with gguf-py's, the fused CPU kernels (matvec,
few-row, GEMM paths; the native build, the AVX2 one and the portable scalar C) match numpy's x @ W.T within 1e-5 of
sum |x||w| (where the kernels quantize x: of x rounded as they round it), a row's result is the same bits in any
batch where x is quantized, embedding rows are exact, and malformed input raises a clear error.
"""
from __future__ import annotations

import numpy as np
import pytest

gguf = pytest.importorskip("gguf")

from teenygrad import Tensor  # noqa: E402
from teenygrad.device import Device  # noqa: E402
from teenygrad.engine.realize import ExecItem, capture_kernels  # noqa: E402
from teenygrad.nn import quant  # noqa: E402
from teenygrad.nn.quant import QuantizedTensor  # noqa: E402
from teenygrad.nn.quant_kernels import GEMM_MIN_ROWS, GGML_TYPES, MATVEC_PARALLEL_MIN_BYTES, MC, MS, NC, PARALLEL_MIN_BYTES  # noqa: E402

TYPES = list(GGML_TYPES)
SIMPLE = [t for t in TYPES if not t.endswith("_K")]


def make_blocks(ggml_type: str, n: int, k: int, seed: int = 0) -> np.ndarray:
  """(n, row_bytes) uint8 blocks of a random matrix. gguf-py quantizes the simple types; it has no K-type quantizer,
  so those get random bytes (every bit pattern is a valid block) with finite fp16 scales of both signs."""
  rng = np.random.default_rng(seed)
  if ggml_type in SIMPLE:
    w = rng.standard_normal((n, k), dtype=np.float32) * rng.uniform(0.01, 2.0, size=(n, 1)).astype(np.float32)
    return gguf.quants.quantize(w, gguf.GGMLQuantizationType[ggml_type])
  info = GGML_TYPES[ggml_type]
  blocks = rng.integers(0, 256, size=(n, k // info.block_size, info.type_size), dtype=np.uint8)
  for offset in ((208,) if ggml_type == "Q6_K" else (0, 2)):
    scales = (rng.standard_normal((n, k // info.block_size, 1)) * 0.02).astype(np.float16)
    blocks[:, :, offset:offset + 2] = scales.view(np.uint8)
  return blocks.reshape(n, -1)


def reference(ggml_type: str, blocks: np.ndarray) -> np.ndarray:
  return gguf.quants.dequantize(blocks, gguf.GGMLQuantizationType[ggml_type])


def k_for(ggml_type: str) -> int: return 512 if ggml_type.endswith("_K") else 96


@pytest.mark.parametrize("ggml_type", TYPES)
def test_dequantize_bitwise(ggml_type):
  n, k = 13, k_for(ggml_type)
  blocks = make_blocks(ggml_type, n, k)
  qt = QuantizedTensor.from_gguf_bytes(ggml_type, blocks.reshape(-1), (n, k))
  ours, want = qt.dequantize().numpy(), reference(ggml_type, blocks)
  assert ours.shape == (n, k) and ours.dtype == np.float32
  np.testing.assert_array_equal(ours.view(np.uint32), want.view(np.uint32))
  assert qt.nbytes == blocks.size


def test_dequantize_special_scales():
  """fp16 subnormal, negative zero and largest scales survive the bytes -> float16 -> float32 path exactly."""
  blocks = make_blocks("Q8_0", 4, 64)
  blocks.reshape(4, 2, 34)[:, :, 0:2] = np.array([[1e-7, -0.0], [65504, -2.0 ** -24], [6e-5, 1.0], [-1.0, 0.5]],
                                                  dtype=np.float16).reshape(4, 2, 1).view(np.uint8)
  qt = QuantizedTensor.from_gguf_bytes("Q8_0", blocks, (4, 64))
  np.testing.assert_array_equal(qt.dequantize().numpy().view(np.uint32), reference("Q8_0", blocks).view(np.uint32))
  assert qt.dequantize("float16").dtype.name == "float16"


def cpu_has(*flags: str) -> bool:
  try:
    with open("/proc/cpuinfo") as f: listed = next((line.split(":")[1].split() for line in f if line.startswith("flags")), [])
  except OSError: return False
  return all(flag in listed for flag in flags)


AVX2 = cpu_has("avx2", "fma", "f16c")
ISAS = ["native", "scalar"] + (["avx2"] if AVX2 else [])


def as_kernel_reads(x: np.ndarray, bits: int) -> np.ndarray:
  """x as a linear that quantizes it reads it (quant_kernels' tg_quantize_x8 -- ggml's quantize_row_q8_1 -- and
  tg_quantize_x16): per 32, round(x * top / amax) times amax / top with top = 2^(bits-1) - 1, in float32 ops of the
  kernel's order (np.rint rounds half to even, as the kernel does). bits 32: x itself."""
  if bits == 32: return x
  top = np.float32(2 ** (bits - 1) - 1)
  blocks = x.astype(np.float32).reshape(-1, 32)
  amax = np.abs(blocks).max(axis=1, keepdims=True)
  inverse = np.where(amax != 0, top / np.where(amax != 0, amax, np.float32(1)), np.float32(0)).astype(np.float32)
  return (np.rint(blocks * inverse) * (amax / top)).reshape(x.shape)


def kernel_reads(qt: QuantizedTensor, x: np.ndarray) -> np.ndarray:
  """x as qt.linear's kernels on qt's device read it (as_kernel_reads at their x_bits)."""
  return as_kernel_reads(x, getattr(quant._fused_kernels(qt.device, qt.ggml_type), "x_bits", 32))


def _check_linear(qt: QuantizedTensor, want_w: np.ndarray, rows: int, seed: int = 1, fn=None, x: np.ndarray | None = None) -> None:
  """The kernel's x @ W.T against float64 numpy, within 1e-5 of sum |x||w| (fp32 accumulation). Where the matvec
  quantizes x (AVX2: Q4_0/Q4_1 to 8 bits, Q8_0 to 16, every row count), numpy gets that same quantized x: a kernel
  that rounded x any other way (or not at all: ~1e-3 off at 8 bits) fails."""
  if x is None: x = np.random.default_rng(seed).standard_normal((rows, qt.shape[1]), dtype=np.float32)
  got = (fn or qt.linear)(Tensor(x)).numpy()
  seen = kernel_reads(qt, x)
  want = seen.astype(np.float64) @ want_w.T.astype(np.float64)
  scale = np.abs(seen).astype(np.float64) @ np.abs(want_w.T).astype(np.float64) + 1e-30
  assert got.shape == (rows, qt.shape[0])
  assert np.max(np.abs(got - want) / scale) < 1e-5, f"rows={rows}"


def _use_isa(monkeypatch, isa: str) -> None:
  """The CPU kernels built for one ISA. Under another DEV the tensors are not on the CPU: the native case still runs
  (that device's kernels), the ISA-specific ones skip."""
  if Device.DEFAULT != "CPU" and isa != "native": pytest.skip(f"the CPU's {isa} build; DEV={Device.DEFAULT}")
  monkeypatch.setitem(quant.FUSED_KERNELS, "CPU", lambda device, t: quant._cpu_kernels(device, t, isa))


@pytest.mark.parametrize("ggml_type", TYPES)
@pytest.mark.parametrize("isa", ISAS)
def test_linear_all_paths(ggml_type, isa, monkeypatch):
  """One row (matvec), a few rows, and enough rows for the GEMM with edge tiles on both sides (N not a multiple of
  the panel, M not a multiple of the microkernel), in the native build, the AVX2 one and the portable scalar one."""
  _use_isa(monkeypatch, isa)
  n, k = NC + 37, k_for(ggml_type) * 2
  blocks = make_blocks(ggml_type, n, k, seed=2)
  qt = QuantizedTensor.from_gguf_bytes(ggml_type, blocks, (n, k))
  want = reference(ggml_type, blocks)
  for rows in (1, 3, GEMM_MIN_ROWS, MC + 17):
    _check_linear(qt, want, rows)
  ids = np.array([[0, n - 1, 5], [7, 7, 0]])
  np.testing.assert_array_equal(qt.embedding(Tensor(ids)).numpy().view(np.uint32), want[ids].view(np.uint32))


def awkward_x(k: int, seed: int) -> np.ndarray:
  """One row of x whose 32s hit the quantizer's edges: an all-zero 32, one where a single huge value sets the
  scale (the rest round to small integers or 0), one of equal values (every element at +-127), mixed signs."""
  x = np.random.default_rng(seed).standard_normal((1, k), dtype=np.float32)
  x[0, :32] = 0
  if k >= 64: x[0, 32:64] *= 1e-3; x[0, 40] = 50.0
  if k >= 96: x[0, 64:96] = np.where(np.arange(32) % 3, -2.5, 2.5)
  return x


@pytest.mark.skipif(not AVX2, reason="the CPU has no AVX2")
@pytest.mark.parametrize("ggml_type, x_bits", [("Q4_0", 8), ("Q4_1", 8), ("Q8_0", 16)])
@pytest.mark.parametrize("n, k", [(1, 32), (7, 96), (NC + 37, 544), (257, 1568)])
def test_avx2_integer_matvec(ggml_type, x_bits, n, k, monkeypatch):
  """The AVX2 integer dots: x quantized per 32 (as_kernel_reads is its model), blocks as byte or word dot products.
  Odd block counts (the two-block loop's tail), K not a multiple of 256, a single weight row, x at the quantizer's
  edges; Q8_0 with -128 weights (the one byte whose negation overflows); every row count rounds x the same way (odd
  counts: the two-row loop's tail; past 64: the second pass over W)."""
  _use_isa(monkeypatch, "avx2")
  blocks = make_blocks(ggml_type, n, k, seed=n + k)
  if ggml_type == "Q8_0": blocks.reshape(n, k // 32, 34)[:, ::3, 2:6] = 0x80
  qt = QuantizedTensor.from_gguf_bytes(ggml_type, blocks, (n, k))
  assert quant._fused_kernels(qt.device, ggml_type).x_bits == x_bits
  want = reference(ggml_type, blocks)
  _check_linear(qt, want, 1, x=awkward_x(k, seed=k))
  _check_linear(qt, want, 1, seed=3)
  for rows in (2, 5, GEMM_MIN_ROWS + 1, 67):
    _check_linear(qt, want, rows, x=np.concatenate([awkward_x(k, seed=k + r) for r in range(rows)]))


@pytest.mark.skipif(not AVX2, reason="the CPU has no AVX2")
@pytest.mark.parametrize("ggml_type", ["Q4_0", "Q4_1", "Q8_0"])
@pytest.mark.parametrize("threads", [1, 2])
def test_rows_bit_identical_in_any_batch(ggml_type, threads, monkeypatch):
  """Batch invariance where the kernels quantize x (AVX2 build): a row of x gives the same bits alone, in a decode
  batch of 2..64 rows, a prefill of 130, at any position in it, on one thread or split over two (a server's batched
  greedy streams then pick their solo tokens). Before, one row rounded x to int8 and more rows kept it float."""
  from teenygrad.helpers import config
  _use_isa(monkeypatch, "avx2")
  monkeypatch.setattr(config, "threads", threads)
  n, k = 1200, 576   # ~430 KB of Q4_1: over the pool's threshold
  qt = QuantizedTensor.from_gguf_bytes(ggml_type, make_blocks(ggml_type, n, k, seed=5), (n, k))
  x = np.random.default_rng(6).standard_normal((130, k), dtype=np.float32)
  probes = (0, 1, 2, 12, 63, 64, 129)   # rows of x checked in every batch that holds them
  alone = {i: qt.linear(Tensor(x[i:i + 1])).numpy()[0] for i in probes}
  for start, rows in ((0, 2), (0, 3), (0, 13), (0, 64), (64, 66), (0, 130)):
    batch = qt.linear(Tensor(x[start:start + rows])).numpy()
    for i in (i for i in probes if start <= i < start + rows):
      np.testing.assert_array_equal(batch[i - start].view(np.uint32), alone[i].view(np.uint32), err_msg=f"row {i} of {start}:{start + rows}")


@pytest.mark.parametrize("ggml_type", ["Q4_0", "Q5_K"])
def test_linear_tall_x(ggml_type):
  """More rows of x than one GEMM task holds (MS), with N small enough that tasks narrow to one panel."""
  n, k = 45, k_for(ggml_type)
  blocks = make_blocks(ggml_type, n, k, seed=7)
  _check_linear(QuantizedTensor.from_gguf_bytes(ggml_type, blocks, (n, k)), reference(ggml_type, blocks), MS + 29)


def test_threaded_matvec_and_rows():
  """A weight big enough for the threaded matvec and row gather (when the machine config allows threads)."""
  n, k = 3600, 576
  blocks = make_blocks("Q4_1", n, k, seed=11)
  assert blocks.size >= PARALLEL_MIN_BYTES
  qt = QuantizedTensor.from_gguf_bytes("Q4_1", blocks, (n, k))
  want = reference("Q4_1", blocks)
  _check_linear(qt, want, 1)
  ids = np.random.default_rng(12).integers(0, n, size=n)
  np.testing.assert_array_equal(qt.embedding(ids).numpy().view(np.uint32), want[ids].view(np.uint32))


@pytest.mark.parametrize("ggml_type", ["Q4_1", "Q8_0", "Q4_K"])
def test_pool_matvec_equals_one_thread(ggml_type, monkeypatch):
  """The matvec's rows split by the CPU pool (device/cpu_pool.py): each row's dot is the same code on any thread, so
  four threads give one thread's bits, over many back-to-back jobs of varying size (a worker that read a stale job,
  or a join that returned early, would write wrong or missing rows)."""
  from teenygrad.helpers import config
  rng = np.random.default_rng(21)
  k = 512
  weights = []
  for n in (MATVEC_PARALLEL_MIN_BYTES // (k // 32 * GGML_TYPES[ggml_type].type_size) + 1, 3000, 257):
    weights.append(QuantizedTensor.from_gguf_bytes(ggml_type, make_blocks(ggml_type, n, k, seed=n), (n, k)))
  xs = [Tensor(rng.standard_normal((1, k), dtype=np.float32)).realize() for _ in range(4)]
  def run_all() -> list[np.ndarray]: return [qt.linear(x).numpy() for _ in range(10) for qt in weights for x in xs]
  monkeypatch.setattr(config, "threads", 1)
  serial = run_all()
  monkeypatch.setattr(config, "threads", 4)
  for got, want in zip(run_all(), serial): np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32))


@pytest.mark.parametrize("ggml_type", ["Q4_1", "Q6_K"])
def test_backend_without_fused_kernel(ggml_type, monkeypatch):
  """What backends without an entry in FUSED_KERNELS run: x @ dequantize().T, and rows gathered on the device."""
  for backend in list(quant.FUSED_KERNELS): monkeypatch.delitem(quant.FUSED_KERNELS, backend)   # CPU's and CUDA's
  n, k = 19, k_for(ggml_type)
  blocks = make_blocks(ggml_type, n, k, seed=3)
  qt = QuantizedTensor.from_gguf_bytes(ggml_type, blocks, (n, k))
  with capture_kernels() as items: _check_linear(qt, reference(ggml_type, blocks), 5)
  assert items and all(isinstance(item, ExecItem) for item in items)   # generated kernels only, no custom op
  np.testing.assert_array_equal(qt.embedding([3, 0, 18]).numpy(), reference(ggml_type, blocks)[[3, 0, 18]])
  with pytest.raises(IndexError, match="out of range"): qt.embedding([19])

  from teenygrad.engine.jit import jit
  @jit
  def embed(ids: Tensor) -> Tensor: return qt.embedding(ids) * 1
  for step in range(5):   # replays from the third call: the rows must follow the new ids, not the captured ones
    ids = np.array([step, n - 1 - step])
    np.testing.assert_array_equal(embed(Tensor(ids)).numpy(), reference(ggml_type, blocks)[ids])


def test_linear_batched_lazy_input_and_grad():
  """x of shape (B, T, K) built lazily (elementwise work the custom kernel cannot inline), and the gradient of x."""
  n, k = 40, 64
  blocks = make_blocks("Q4_0", n, k, seed=4)
  w = reference("Q4_0", blocks)
  qt = QuantizedTensor.from_gguf_bytes("Q4_0", blocks, (n, k))
  x = np.random.default_rng(5).standard_normal((2, 3, k), dtype=np.float32)
  tx = Tensor(x, requires_grad=True)
  out = qt.linear(tx * 2 + 1)
  assert out.shape == (2, 3, n)
  np.testing.assert_allclose(out.numpy(), kernel_reads(qt, 2 * x + 1) @ w.T, rtol=1e-4, atol=1e-4)
  g = np.random.default_rng(6).standard_normal((2, 3, n), dtype=np.float32)
  (out * Tensor(g)).sum().backward()
  np.testing.assert_allclose(tx.grad.numpy(), 2 * (g @ w), rtol=1e-4, atol=1e-4)
  transposed = Tensor(np.ascontiguousarray(x[0].T)).T   # a view: the kernel must read it laid out row-major
  np.testing.assert_allclose(qt.linear(transposed).numpy(), kernel_reads(qt, x[0]) @ w.T, rtol=1e-4, atol=1e-4)


def test_embedding_errors_and_shapes():
  qt = QuantizedTensor.from_gguf_bytes("Q8_0", make_blocks("Q8_0", 10, 32), (10, 32))
  assert qt.embedding([[1, 2, 3]]).shape == (1, 3, 32)
  for bad in ([0, 10], [-1]):
    with pytest.raises(IndexError, match="out of range"): qt.embedding(bad).numpy()
  with pytest.raises(TypeError, match="integers"): qt.embedding(Tensor([0.5]))


def test_from_memmap(tmp_path):
  blocks = make_blocks("Q4_1", 8, 64)
  path = tmp_path / "w.bin"
  path.write_bytes(b"hdr!" + blocks.tobytes())
  mm = np.memmap(path, dtype=np.uint8, mode="r", offset=4, shape=(blocks.size,))
  qt = QuantizedTensor.from_gguf_bytes("Q4_1", mm, (8, 64))
  np.testing.assert_array_equal(qt.dequantize().numpy(), reference("Q4_1", blocks))


@pytest.mark.parametrize("args, message", [
  (("Q4_2", 32 * 18 // 32, (1, 32)), "unknown or unsupported GGML type 'Q4_2'"),
  (("Q4_0", 17, (1, 32)), "raw holds 17 bytes but a Q4_0 tensor of shape \\(1, 32\\) needs 18"),
  (("Q4_0", 18, (1, 48)), "in_features 48 is not a multiple of the Q4_0 block size 32"),
  (("Q6_K", 210, (1, 128)), "in_features 128 is not a multiple of the Q6_K block size 256"),
  (("Q8_0", 34, (34,)), "shape must be \\(out_features, in_features\\)"),
  (("Q8_0", 0, (0, 32)), "positive sizes"),
  (("Q8_0", 34, (1, 32), np.float32), "uint8"),
  (("Q8_0", 1 << 10, (1 << 40, 1 << 40)), "needs"),
])
def test_malformed_input(args, message):
  ggml_type, nbytes, shape, *dtype = args
  raw = np.zeros(nbytes, dtype=dtype[0] if dtype else np.uint8)
  with pytest.raises(ValueError, match=message):
    QuantizedTensor.from_gguf_bytes(ggml_type, raw, shape)


def test_linear_shape_errors():
  qt = QuantizedTensor.from_gguf_bytes("Q8_0", make_blocks("Q8_0", 4, 64), (4, 64))
  with pytest.raises(ValueError, match="in_features 64"): qt.linear(Tensor(np.zeros((2, 32), dtype=np.float32)))
  assert qt.linear(Tensor(np.zeros((0, 64), dtype=np.float32))).shape == (0, 4)


def test_linear_and_embedding_under_the_jit():
  """Each op is one launch the JIT records and replays with new inputs: linear records its kernel's own launch (a
  replay calls the program), embedding on the CPU the whole custom op (a replay calls run(), which checks the ids);
  CUDA's and Vulkan's gathers record their own launches too, so a decode step stays one graph (only eager calls check the ids)."""
  from teenygrad.engine.jit import jit
  from teenygrad.engine.realize import CustomExecItem
  n, k = 24, 64
  blocks = make_blocks("Q4_1", n, k, seed=8)
  w = reference("Q4_1", blocks)
  qt = QuantizedTensor.from_gguf_bytes("Q4_1", blocks, (n, k))
  with capture_kernels() as items: qt.linear(Tensor(np.ones((1, k), dtype=np.float32))).realize()
  assert [type(item) for item in items] == [ExecItem]
  with capture_kernels() as items: qt.embedding(Tensor(np.array([1, 2]))).realize()
  recorded_launch = qt.device.partition(":")[0] in ("CUDA", "VULKAN")
  assert [type(item) for item in items if isinstance(item, (ExecItem, CustomExecItem))][-1] is (ExecItem if recorded_launch else CustomExecItem)

  @jit
  def step(ids: Tensor, x: Tensor) -> Tensor: return qt.linear(qt.embedding(ids) + x)
  for i in range(4):
    x = np.random.default_rng(10 + i).standard_normal((2, k), dtype=np.float32)
    ids = np.array([i, n - 1 - i])
    np.testing.assert_allclose(step(Tensor(ids), Tensor(x)).numpy(), kernel_reads(qt, w[ids] + x) @ w.T, rtol=1e-4, atol=1e-4)


def test_linear_with_residual():
  """linear(x, residual) is x @ W.T + residual, whether the backend's kernel adds it or a kernel after it does."""
  n, k = 24, 64
  blocks = make_blocks("Q4_1", n, k, seed=13)
  qt = QuantizedTensor.from_gguf_bytes("Q4_1", blocks, (n, k))
  rng = np.random.default_rng(14)
  x, residual = rng.standard_normal((2, 3, k), dtype=np.float32), rng.standard_normal((2, 3, n), dtype=np.float32)
  got = qt.linear(Tensor(x), residual=Tensor(residual)).numpy()
  np.testing.assert_allclose(got, qt.linear(Tensor(x)).numpy() + residual, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("ggml_type", ["Q4_0", "Q4_1"])
def test_repack_layout(ggml_type):
  """quant_kernels_packed.repack: per group of 8 rows and block, the rows' fp16 halves side by side, then chunk c =
  bytes 4c..4c+3 of each row's nibbles; the last group's missing rows are zero."""
  from teenygrad.nn.quant_kernels_packed import PACKED_TYPES, packed_nbytes, repack
  n, k = 13, 96
  header, nb = PACKED_TYPES[ggml_type], k // 32
  blocks = make_blocks(ggml_type, n, k, seed=8).reshape(n, nb, header + 16)
  packed = repack(ggml_type, blocks, n, k)
  assert packed.size == packed_nbytes(ggml_type, n, k) == 2 * 8 * nb * (header + 16)
  groups = packed.reshape(2, nb, 8 * (header + 16))
  for g in range(2):
    for b in range(nb):
      rec = groups[g, b]
      for j in range(8):
        row = 8 * g + j
        want = blocks[row, b] if row < n else np.zeros(header + 16, np.uint8)
        for h in range(0, header, 2): np.testing.assert_array_equal(rec[8 * h + 2 * j:8 * h + 2 * j + 2], want[h:h + 2])
        for c in range(4): np.testing.assert_array_equal(rec[8 * header + 32 * c + 4 * j:8 * header + 32 * c + 4 * j + 4], want[header + 4 * c:header + 4 * c + 4])


@pytest.mark.parametrize("ggml_type", ["Q4_1", "Q8_0", "Q4_K"])
@pytest.mark.parametrize("isa", ISAS)
def test_linear_residual_is_the_add(ggml_type, isa, monkeypatch):
  """The residual added in the kernel (in the packed tile's store for Q4_0/Q4_1 on AVX2, after the product
  elsewhere) gives the bits of the product plus the residual, for a last group of 8 rows that is partly filled."""
  _use_isa(monkeypatch, isa)
  n, k = 13, k_for(ggml_type)
  qt = QuantizedTensor.from_gguf_bytes(ggml_type, make_blocks(ggml_type, n, k, seed=9), (n, k))
  rng = np.random.default_rng(10)
  for rows in (1, 5, GEMM_MIN_ROWS + 1):
    x, residual = rng.standard_normal((rows, k), dtype=np.float32), rng.standard_normal((rows, n), dtype=np.float32)
    want = residual + qt.linear(Tensor(x)).numpy()
    got = qt.linear(Tensor(x), residual=Tensor(residual)).numpy()
    np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32), err_msg=f"rows={rows}")
