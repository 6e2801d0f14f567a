"""Quantized GGUF weights (teenygrad/nn/quant.py) against gguf-py's numpy quantize/dequantize.

For every type: the Tensor-primitive dequantize is bit-identical with gguf-py's, the fused CPU kernels (matvec,
few-row, GEMM paths; the SIMD build and the portable scalar C) match numpy's x @ W.T within 4e-5 of sum |x||w|, embedding rows
are exact, and malformed input raises a clear error.
"""
from __future__ import annotations

import numpy as np
import pytest

gguf = pytest.importorskip("gguf")

from teenygrad import Tensor  # noqa: E402
from teenygrad.engine.realize import ExecItem, capture_kernels  # noqa: E402
from teenygrad.nn import quant  # noqa: E402
from teenygrad.nn.quant import QuantizedTensor  # noqa: E402
from teenygrad.nn.quant_kernels import GEMM_MIN_ROWS, GGML_TYPES, MC, MS, NC, PARALLEL_MIN_BYTES  # noqa: E402

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


def _check_linear(qt: QuantizedTensor, want_w: np.ndarray, rows: int, seed: int = 1, fn=None) -> None:
  x = np.random.default_rng(seed).standard_normal((rows, qt.shape[1]), dtype=np.float32)
  got = (fn or qt.linear)(Tensor(x)).numpy()
  want = x.astype(np.float64) @ want_w.T.astype(np.float64)
  scale = np.abs(x).astype(np.float64) @ np.abs(want_w.T).astype(np.float64) + 1e-30
  assert got.shape == (rows, qt.shape[0])
  # 4e-5, not fp32's ~1e-6: the AVX2 matvec rounds x to 16 bits per 32 (each element within 2^-16 of its block's
  # largest |x|), which a numpy model of that rounding puts at up to ~1.3e-5 of sum |x||w| on these shapes
  assert np.max(np.abs(got - want) / scale) < 4e-5, f"rows={rows}"


@pytest.mark.parametrize("ggml_type", TYPES)
@pytest.mark.parametrize("simd", [True, False], ids=["avx512", "scalar"])
def test_linear_all_paths(ggml_type, simd, monkeypatch):
  """One row (matvec), a few rows, and enough rows for the GEMM with edge tiles on both sides (N not a multiple of
  the panel, M not a multiple of the microkernel), in the SIMD build and the portable scalar build."""
  monkeypatch.setitem(quant.FUSED_KERNELS, "CPU", lambda device, t: quant._cpu_kernels(device, t, simd))
  n, k = NC + 37, k_for(ggml_type) * 2
  blocks = make_blocks(ggml_type, n, k, seed=2)
  qt = QuantizedTensor.from_gguf_bytes(ggml_type, blocks, (n, k))
  want = reference(ggml_type, blocks)
  for rows in (1, 3, GEMM_MIN_ROWS, MC + 17):
    _check_linear(qt, want, rows)
  ids = np.array([[0, n - 1, 5], [7, 7, 0]])
  np.testing.assert_array_equal(qt.embedding(Tensor(ids)).numpy().view(np.uint32), want[ids].view(np.uint32))


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
  np.testing.assert_allclose(out.numpy(), (2 * x + 1) @ w.T, rtol=1e-4, atol=1e-4)
  g = np.random.default_rng(6).standard_normal((2, 3, n), dtype=np.float32)
  (out * Tensor(g)).sum().backward()
  np.testing.assert_allclose(tx.grad.numpy(), 2 * (g @ w), rtol=1e-4, atol=1e-4)
  transposed = Tensor(np.ascontiguousarray(x[0].T)).T   # a view: the kernel must read it laid out row-major
  np.testing.assert_allclose(qt.linear(transposed).numpy(), x[0] @ w.T, rtol=1e-4, atol=1e-4)


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
    np.testing.assert_allclose(step(Tensor(ids), Tensor(x)).numpy(), (w[ids] + x) @ w.T, rtol=1e-4, atol=1e-4)


def test_linear_with_residual():
  """linear(x, residual) is x @ W.T + residual, whether the backend's kernel adds it or a kernel after it does."""
  n, k = 24, 64
  blocks = make_blocks("Q4_1", n, k, seed=13)
  qt = QuantizedTensor.from_gguf_bytes("Q4_1", blocks, (n, k))
  rng = np.random.default_rng(14)
  x, residual = rng.standard_normal((2, 3, k), dtype=np.float32), rng.standard_normal((2, 3, n), dtype=np.float32)
  got = qt.linear(Tensor(x), residual=Tensor(residual)).numpy()
  np.testing.assert_allclose(got, qt.linear(Tensor(x)).numpy() + residual, rtol=1e-6, atol=1e-6)
