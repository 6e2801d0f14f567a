"""The CUDA backend on a GPU (skipped elsewhere; scripts/gpu_check.sh runs it on the GPU machine): matmuls against
torch in float64, the grid mappings at sizes that exercise them, the allocator, errors, copies and graph replay."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from helpers import reference_prologue

from teenygrad import Tensor, dtypes


def _cuda():
  from teenygrad.device import Device
  try: return Device["CUDA"]
  except RuntimeError as e: pytest.skip(f"no CUDA device: {e}")


@pytest.fixture(scope="module")
def cuda():
  return _cuda()


def _rel_error(actual: np.ndarray, expected: np.ndarray) -> float:
  return float(np.linalg.norm(actual.astype(np.float64) - expected) / np.linalg.norm(expected))


def _launched(fn):
  from teenygrad.engine.realize import capture_kernels
  with capture_kernels() as items: out = fn()
  return out, [ei.kernel.name for ei in items]


BOUNDS = {"float32": 1e-5, "float16": 1e-3, "bfloat16": 1e-2}


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
@pytest.mark.parametrize("shape,layout", [((512, 768, 1024), "nn"), ((256, 384, 512), "tn"), ((256, 384, 512), "linear"),
                                          ((100, 77, 130), "nn"), ((3, 64, 96, 80), "batched"),
                                          ((256, 8192, 384), "nn")])   # a long K: where tensor-core sums drift
def test_matmul_matches_torch(cuda, dtype, shape, layout):
  rng = np.random.default_rng(hash((dtype, shape, layout)) % 2**32)
  def make(*s): return rng.standard_normal(s).astype(np.float32)
  if layout == "batched": batch, m, k, n = shape; a_np, b_np = make(batch, m, k), make(batch, k, n)
  else:
    m, k, n = shape
    a_np = make(k, m) if layout == "tn" else make(m, k)
    b_np = make(n, k) if layout == "linear" else make(k, n)
  torch_dtype = getattr(torch, dtype)
  # the reference sees the inputs already rounded to the operand type, and computes in float64
  a_ref, b_ref = (torch.from_numpy(x).to(torch_dtype).double() for x in (a_np, b_np))
  a = Tensor(torch.from_numpy(a_np).to(torch_dtype).float().numpy(), device="CUDA").cast(getattr(dtypes, dtype)).realize()
  b = Tensor(torch.from_numpy(b_np).to(torch_dtype).float().numpy(), device="CUDA").cast(getattr(dtypes, dtype)).realize()
  if layout == "tn": out, names = _launched(lambda: (a.T @ b).float().numpy()); ref = a_ref.T @ b_ref
  elif layout == "linear": out, names = _launched(lambda: a.linear(b).float().numpy()); ref = a_ref @ b_ref.T
  else: out, names = _launched(lambda: (a @ b).float().numpy()); ref = a_ref @ b_ref
  assert any(name.startswith("gemm_") for name in names), f"the GEMM hook was not taken: {names}"
  error = _rel_error(out, ref.numpy())
  # a half output is rounded once more after the fp32 sum
  bound = BOUNDS[dtype] * (4 if dtype != "float32" else 1)
  assert error < bound, f"relative Frobenius error {error:.2e} >= {bound:.0e}"


def test_matmul_epilogue_fused(cuda):
  rng = np.random.default_rng(5)
  a, b, bias = (rng.standard_normal(s).astype(np.float32) for s in ((256, 512), (512, 384), (384,)))
  ta, tb, tbias = (Tensor(x, device="CUDA").realize() for x in (a, b, bias))
  out, names = _launched(lambda: (ta @ tb + tbias).relu().numpy())
  assert len(names) == 1 and names[0].startswith("gemm_float32"), names
  ref = np.maximum(a.astype(np.float64) @ b + bias, 0)
  assert _rel_error(out, ref) < 1e-5


@pytest.mark.parametrize("rows,cols", [(4, 5000), (3000, 37), (1, 100000), (64, 4096)])
def test_softmax_and_layernorm_rows(cuda, rows, cols):
  rng = np.random.default_rng(rows)
  x = rng.standard_normal((rows, cols)).astype(np.float32) * 3
  t = Tensor(x, device="CUDA")
  ref = torch.from_numpy(x).double()
  np.testing.assert_allclose(t.softmax(-1).numpy(), torch.softmax(ref, -1).numpy(), atol=1e-6, rtol=1e-4)
  np.testing.assert_allclose(t.layer_norm((cols,)).numpy(), torch.nn.functional.layer_norm(ref, (cols,)).numpy(), atol=1e-4, rtol=1e-3)
  np.testing.assert_allclose(t.amax(-1).numpy(), x.max(-1))


def test_full_and_column_reductions(cuda):
  rng = np.random.default_rng(3)
  x = rng.standard_normal((777, 1025)).astype(np.float32)
  t = Tensor(x, device="CUDA")
  np.testing.assert_allclose(t.sum().numpy(), x.astype(np.float64).sum(), rtol=1e-4)
  np.testing.assert_allclose(t.sum(0).numpy(), x.astype(np.float64).sum(0), rtol=1e-4, atol=1e-4)
  np.testing.assert_equal(t.argmax(-1).numpy(), x.argmax(-1))
  np.testing.assert_equal((t > 2).any(-1).numpy(), (x > 2).any(-1))


def test_large_elementwise_is_every_element(cuda):
  x = np.random.default_rng(4).standard_normal(3 * (1 << 22) + 7).astype(np.float32)
  np.testing.assert_allclose((Tensor(x, device="CUDA") * 2 + 1).numpy(), x * 2 + 1, rtol=1e-6)


def test_allocator_reuses_freed_blocks(cuda):
  allocator = cuda.allocator
  first = allocator.alloc(1000)
  allocator.free(first, 1000)
  assert allocator.alloc(900) == first   # same 1 KiB bucket
  allocator.free(first, 900)


def test_out_of_memory_is_a_memory_error(cuda):
  from teenygrad.device.cuda import CUDAOutOfMemoryError
  with pytest.raises(MemoryError, match="out of memory") as info:
    cuda.allocator.alloc(1 << 50)
  assert isinstance(info.value, CUDAOutOfMemoryError) and str(1 << 50) in str(info.value)
  Tensor([1.0, 2.0], device="CUDA").numpy()   # the device still works afterwards


def test_copies_between_devices(cuda):
  from teenygrad.device.cuda_bindings import libcuda
  import ctypes
  count = ctypes.c_int()
  libcuda().cuDeviceGetCount(ctypes.byref(count))
  x = np.arange(10, dtype=np.float32)
  t = Tensor(x, device="CUDA")
  np.testing.assert_equal(t.to("cpu").numpy(), x)
  if count.value < 2:
    with pytest.raises(RuntimeError, match="does not exist"):
      t.to("cuda:1").numpy()
  else:
    np.testing.assert_equal((t.to("cuda:1") + 1).numpy(), x + 1)


def test_graph_replays_with_new_input_data(cuda):
  from teenygrad.engine.realize import capture_kernels
  x = Tensor(np.ones(1000, np.float32), device="CUDA").realize()
  with capture_kernels() as items:
    y = (x * 3 + 1).realize()
  graph = cuda.graph(items)
  x.lazydata.realized.copyin(np.full(1000, 2, np.float32))
  graph(items)
  cuda.synchronize()
  np.testing.assert_equal(y.lazydata.realized.numpy(), np.full(1000, 7, np.float32))


def test_half_and_bfloat16_match_the_cpu(cuda):
  """Half types are storage types on both backends: the same kernel gives the same values (torch rounds every
  intermediate to the half type, so it is only a loose reference)."""
  x = np.linspace(-3, 3, 1001).astype(np.float32)
  for dtype, torch_dtype in ((dtypes.float16, torch.float16), (dtypes.bfloat16, torch.bfloat16)):
    def f(device): return ((Tensor(x, device=device).cast(dtype) * 3).exp() + 1).cast(dtype).float().numpy()
    np.testing.assert_allclose(f("CUDA"), f("CPU"), rtol=1e-6)
    ref = ((torch.from_numpy(x).to(torch_dtype) * 3).exp() + 1).float().numpy()
    # torch rounds 3x to bf16 (2^-8 relative) before exp, which multiplies that error by up to 9 (seen: 5%)
    np.testing.assert_allclose(f("CUDA"), ref, rtol=4e-2 if dtype == dtypes.float16 else 1e-1)


def test_jit_replays_as_one_graph(cuda):
  from teenygrad.engine.jit import jit
  rng = np.random.default_rng(9)
  w_np = rng.standard_normal((64, 32)).astype(np.float32)
  w = Tensor(w_np, device="CUDA").realize()

  @jit
  def step(x):
    hidden = (x @ w).relu().realize()   # two launches, so the graph has more than one node
    return hidden * 2 + 1, hidden.sum(-1)

  for _ in range(5):
    x_np = rng.standard_normal((16, 64)).astype(np.float32)
    out, total = step(Tensor(x_np, device="CUDA"))
    ref = np.maximum(x_np.astype(np.float64) @ w_np, 0)
    np.testing.assert_allclose(out.numpy(), ref * 2 + 1, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(total.numpy(), ref.sum(-1), rtol=1e-5, atol=1e-4)
  assert step.capture.graph_launches == 3   # calls 3, 4 and 5 replayed as graphs


def test_jit_graph_serves_every_symbolic_position(cuda):
  """A decode-like step with a symbolic position replays as graph launches of one graph: new positions update the
  graph's nodes (arguments and grids) in place instead of recording a graph per position."""
  from teenygrad.engine.jit import jit
  from teenygrad.ir.symbolic import Variable
  max_len, dim = 300, 8
  cache = Tensor.zeros(max_len, dim, device="CUDA").contiguous().realize()
  pos_var = Variable("pos", 0, max_len - 1)

  @jit
  def decode(k, q, pos):
    row = k.reshape(1, dim)._pad(((pos, max_len - 1 - pos), (0, 0)))
    mask = Tensor.ones(1, dim, dtype=dtypes.bool, device="CUDA")._pad(((pos, max_len - 1 - pos), (0, 0)))
    cache.assign(mask._where(row, cache)).realize()
    window = cache._shrink(((0, pos + 1), (0, dim)))                    # (pos+1, dim)
    weights = (window * q).sum(1).softmax(0)                           # (pos+1,)
    return (weights.reshape(-1, 1) * window).sum(0)                    # (dim,)

  rng = np.random.default_rng(3)
  reference = np.zeros((max_len, dim), np.float64)
  graphs = set()
  for p in list(range(6)) + [100, 299, 7]:
    k, q = rng.standard_normal(dim).astype(np.float32), rng.standard_normal(dim).astype(np.float32)
    out = decode(Tensor(k, device="CUDA"), Tensor(q, device="CUDA"), pos_var.bind(p))
    reference[p] = k
    scores = reference[:p + 1] @ q
    weights = np.exp(scores - scores.max()) / np.exp(scores - scores.max()).sum()
    np.testing.assert_allclose(out.numpy(), weights @ reference[:p + 1], rtol=1e-4, atol=1e-5)
    if decode.capture is not None and getattr(decode.capture, "graph", None) is not None: graphs.add(id(decode.capture.graph))
  assert decode.capture.graph_launches == 7 and len(graphs) == 1


def _quant_weight(ggml_type: str, n: int, k: int, seed: int):
  """(QuantizedTensor on CUDA, its float64 dequantized weight) of a random (n, k) matrix, quantized by gguf-py."""
  gguf = pytest.importorskip("gguf")
  from teenygrad.nn.quant import QuantizedTensor
  rng = np.random.default_rng(seed)
  w = rng.standard_normal((n, k), dtype=np.float32) * rng.uniform(0.01, 2.0, size=(n, 1)).astype(np.float32)
  blocks = gguf.quants.quantize(w, gguf.GGMLQuantizationType[ggml_type])
  want = gguf.quants.dequantize(blocks, gguf.GGMLQuantizationType[ggml_type]).astype(np.float64)
  return QuantizedTensor.from_gguf_bytes(ggml_type, blocks, (n, k), device="CUDA"), want


@pytest.mark.parametrize("ggml_type", ["Q4_0", "Q4_1", "Q8_0"])
@pytest.mark.parametrize("n,k", [(37, 96), (576, 576), (1000, 1536)])
def test_quant_matvec_matches_reference(cuda, ggml_type, n, k):
  """The fused matvec (one warp per row, a warp-ragged last block of rows) against gguf-py's dequantize in float64,
  for 1 to MAX_ROWS rows of x; one row more goes through the reference (dequantize + GEMM) and agrees too."""
  from teenygrad.nn.quant_cuda import MAX_ROWS
  qt, want = _quant_weight(ggml_type, n, k, seed=n + k)
  rng = np.random.default_rng(k)
  for rows in (1, 3, 13, MAX_ROWS, MAX_ROWS + 1):
    x = rng.standard_normal((rows, k), dtype=np.float32)
    got, names = _launched(lambda: qt.linear(Tensor(x, device="CUDA")).numpy())
    fused = f"qmatvec_{ggml_type.lower()}" in names
    assert fused == (rows <= MAX_ROWS), names
    ref = x.astype(np.float64) @ want.T
    scale = np.abs(x).astype(np.float64) @ np.abs(want.T) + 1e-30
    assert np.max(np.abs(got - ref) / scale) < 1e-5, f"rows={rows}"
  residual = rng.standard_normal((2, n), dtype=np.float32)   # added by the kernel itself: one launch
  x = rng.standard_normal((2, k), dtype=np.float32)
  got, names = _launched(lambda: qt.linear(Tensor(x, device="CUDA"), residual=Tensor(residual, device="CUDA")).numpy())
  assert names == [f"qmatvec_{ggml_type.lower()}"], names
  np.testing.assert_allclose(got, x.astype(np.float64) @ want.T + residual, rtol=1e-4, atol=1e-4 * np.abs(x).sum())


def test_quant_matvec_replays_in_the_graph(cuda):
  """A jitted decode-like step with fused quantized matvecs replays as one CUDA graph, on new inputs each call."""
  from teenygrad.engine.jit import jit
  qt1, w1 = _quant_weight("Q4_1", 192, 576, seed=1)
  qt2, w2 = _quant_weight("Q8_0", 576, 192, seed=2)

  @jit
  def step(x):
    return qt2.linear(qt1.linear(x).relu())

  rng = np.random.default_rng(5)
  for _ in range(5):
    x = rng.standard_normal((1, 576), dtype=np.float32)
    ref = np.maximum(x.astype(np.float64) @ w1.T, 0) @ w2.T
    np.testing.assert_allclose(step(Tensor(x, device="CUDA")).numpy(), ref, rtol=1e-4, atol=1e-4)
  assert step.capture.graph_launches == 3


def test_embedding_gathers_replay_in_the_graph(cuda):
  """Quantized and float embeddings gather just their rows with a kernel (no one-hot sum over the table), bit-exact,
  and a JIT graph replays the gathers with the new ids."""
  from teenygrad.engine.jit import jit
  from teenygrad.llm.custom_ops import embedding_rows
  qt, want = _quant_weight("Q4_1", 300, 64, seed=3)
  table_np = np.random.default_rng(6).standard_normal((300, 64)).astype(np.float16)
  table = Tensor(table_np, device="CUDA").realize()
  ids = np.array([0, 299, 17])
  rows, names = _launched(lambda: qt.embedding(Tensor(ids, device="CUDA")).numpy())
  assert "qrows_q4_1" in names
  np.testing.assert_array_equal(rows, want[ids].astype(np.float32))
  with pytest.raises(IndexError, match="out of range"): embedding_rows(table, Tensor(np.array([300]), device="CUDA")).numpy()

  @jit
  def embed(ids):
    return qt.embedding(ids), embedding_rows(table, ids)

  for step in range(5):
    ids = np.array([step, 299 - step, 17])
    quantized, plain = embed(Tensor(ids, device="CUDA"))
    np.testing.assert_array_equal(quantized.numpy(), want[ids].astype(np.float32))
    np.testing.assert_array_equal(plain.numpy(), table_np[ids].astype(np.float32))
  assert embed.capture.graph_launches == 3


# ---- decode's fused kernels (llm/fused_linear.py, nn/matvec_cuda.py, nn/quant_cuda_packed.py, llm/attention_cuda.py) ----

def _fused_weight(kind: str, n: int, k: int, seed: int):
  """(weight on CUDA, its float64 value) for a GGML type or float16/bfloat16."""
  if kind in ("Q4_0", "Q4_1", "Q8_0"): return _quant_weight(kind, n, k, seed)
  w = np.random.default_rng(seed).standard_normal((n, k), dtype=np.float32)
  t = Tensor(w, device="CUDA").cast(getattr(dtypes, kind)).realize()
  return t, t.float().numpy().astype(np.float64)


@pytest.mark.parametrize("kind", ["Q4_0", "Q4_1", "Q8_0", "float16", "bfloat16"])
@pytest.mark.parametrize("prologue", ["", "norm", "swiglu"])
@pytest.mark.parametrize("n,k", [(37, 96), (1000, 1536), (301, 2048)])
def test_fused_linear_matches_reference(cuda, kind, prologue, n, k, monkeypatch):
  """fused_linear (one launch: the norm or silu(gate) * up folded in, the residual added) against float64 numpy for
  1..64 rows of x, ragged shapes, and the primitive path (fusion off) on the same inputs. Rows of 2048 weights take
  the repacked quantized layout (nn/quant_cuda_packed.py), the others GGUF's blocks."""
  from teenygrad.helpers import config
  from teenygrad.llm.fused_linear import fused_linear
  from teenygrad.llm.model import linear
  from teenygrad.nn import matvec_cuda
  weight, want = _fused_weight(kind, n, k, seed=n + k)
  rng = np.random.default_rng(k)
  norm_np = rng.uniform(0.5, 1.5, k).astype(np.float32)
  norm = Tensor(norm_np, device="CUDA").realize() if prologue == "norm" else None
  monkeypatch.setattr(matvec_cuda, "CUDA_SWIGLU_FOLD_MAX", n * k)   # CUDA does not fold silu(gate) * up by default: the fold is tested here
  width = 2 * k if prologue == "swiglu" else k
  # a packable weight is repacked (kernels of its own) on first use: here, not in the captures below
  fused_linear(Tensor(np.ones((1, width), np.float32), device="CUDA"), weight, swiglu=prologue == "swiglu").realize()
  for rows in (1, 13, 64):   # one warp's group of x rows, a ragged second group, the most the kernels take
    x = rng.standard_normal((rows, width), dtype=np.float32)
    residual = rng.standard_normal((rows, n), dtype=np.float32)
    xt, rt = Tensor(x, device="CUDA"), Tensor(residual, device="CUDA")
    def run(xt=xt, rt=rt):
      out = fused_linear(xt, weight, rt, norm, 1e-5, prologue == "swiglu")
      assert out is not None
      return out.numpy()
    got, names = _launched(run)
    packed = kind.startswith("Q") and k % 1024 == 0
    assert len(names) == 1 and ("packed" in names[0]) == packed, names
    xs = reference_prologue(x, prologue, norm_np, 1e-5)
    scale = np.abs(xs) @ np.abs(want.T) + 1e-30
    assert np.max(np.abs(got - residual - xs @ want.T) / scale) < 1e-4, f"rows={rows}"
  old = config.decode_fusion
  try:
    config.decode_fusion = "none"
    primitive = linear(Tensor(x, device="CUDA"), weight, residual=Tensor(residual, device="CUDA"), norm=norm, eps=1e-5,
                       swiglu=prologue == "swiglu").numpy()
  finally: config.decode_fusion = old
  np.testing.assert_allclose(got, primitive, rtol=2e-3, atol=2e-3 * np.abs(xs).max() * np.sqrt(k))


@pytest.mark.parametrize("kind", ["Q4_0", "Q4_1", "Q8_0", "float16", "bfloat16"])
@pytest.mark.parametrize("n,k", [(1000, 1536), (302, 2048), (4100, 1024)])
def test_fused_linear_glu_matches_reference(cuda, kind, n, k):
  """fused_linear's glu epilogue (silu(gate) * up of a gate/up projection's halves, one launch) with the norm folded
  in, against the fused projection followed by the elementwise silu(gate) * up, for 1, 13 and 64 rows of x: GGUF
  blocks (rows of 1536), the repacked layout (2048) and, for the quantized kinds, the int8-x kernel (4M weights);
  each row the same bits alone as in its batch."""
  from teenygrad.llm.fused_linear import fused_linear
  weight, _ = _fused_weight(kind, n, k, seed=n + k + 1)
  rng = np.random.default_rng(n)
  norm = Tensor(rng.uniform(0.5, 1.5, k).astype(np.float32), device="CUDA").realize()
  x = rng.standard_normal((64, k), dtype=np.float32)
  fused_linear(Tensor(x[:1], device="CUDA"), weight, norm=norm, eps=1e-5).realize()   # repacked on first use, not below
  outputs = {}
  for rows in (1, 13, 64):
    xt = Tensor(x[:rows], device="CUDA").realize()
    outputs[rows], names = _launched(lambda: fused_linear(xt, weight, norm=norm, eps=1e-5, glu=True).numpy())
    assert len(names) == 1 and outputs[rows].shape == (rows, n // 2), names
    product = fused_linear(xt, weight, norm=norm, eps=1e-5).numpy().astype(np.float64)
    gate, up = product[:, :n // 2], product[:, n // 2:]
    want = gate / (1 + np.exp(-gate)) * up
    np.testing.assert_allclose(outputs[rows], want, rtol=1e-4, atol=1e-4 * np.abs(want).max())
  for rows in (1, 13):
    np.testing.assert_array_equal(outputs[rows].view(np.uint32), outputs[64][:rows].view(np.uint32))


@pytest.mark.parametrize("kind", ["Q4_0", "Q4_1", "Q8_0"])
@pytest.mark.parametrize("prologue", ["", "norm", "swiglu"])
def test_fused_linear_dp4a_matches_reference(cuda, kind, prologue):
  """A weight of 4M elements takes the int8-x matvec (nn/quant_cuda_dp4a.py): against numpy's model of x's rounding
  (Q8_1 per 32 columns) and float64, for 1, 13 and 64 rows of x (shared memory holds 8 rows: several groups), every
  prologue, a residual; each row gives the same bits alone as in its batch."""
  from helpers import quantize_q8_1
  from teenygrad.llm.fused_linear import fused_linear
  from teenygrad.nn import matvec_cuda
  from teenygrad.nn.quant_cuda_dp4a import DP4A_MIN_WEIGHTS
  n, k = 4099, 1024   # a ragged last block of weight rows
  assert n * k >= DP4A_MIN_WEIGHTS
  weight, want = _quant_weight(kind, n, k, seed=3)
  rng = np.random.default_rng(4)
  norm_np = rng.uniform(0.5, 1.5, k).astype(np.float32)
  norm = Tensor(norm_np, device="CUDA").realize() if prologue == "norm" else None
  width = 2 * k if prologue == "swiglu" else k
  x = rng.standard_normal((64, width), dtype=np.float32)
  residual = rng.standard_normal((64, n), dtype=np.float32)
  def run(rows: int):   # -> (out, the kernels launched)
    xt, rt = Tensor(x[:rows], device="CUDA").realize(), Tensor(residual[:rows], device="CUDA").realize()
    return _launched(lambda: fused_linear(xt, weight, rt, norm, 1e-5, prologue == "swiglu").numpy())
  fold_max = matvec_cuda.CUDA_SWIGLU_FOLD_MAX
  try:
    matvec_cuda.CUDA_SWIGLU_FOLD_MAX = n * k   # fused_linear folds silu(gate) * up up to there
    run(1)   # the weight is repacked on first use: here, not in the captures below
    outputs = {}
    for rows in (1, 13, 64):
      outputs[rows], names = run(rows)
      assert len(names) == 1 and "dp4a" in names[0], names
  finally: matvec_cuda.CUDA_SWIGLU_FOLD_MAX = fold_max
  got = outputs[64] - residual
  read = x * norm_np if prologue == "norm" else x
  if prologue == "swiglu": read = (reference_prologue(x, prologue, None, 0.0)).astype(np.float32)   # the GPU's expf is not numpy's
  row_scale = 1.0 / np.sqrt((x.astype(np.float64) ** 2).mean(-1, keepdims=True) + 1e-5) if prologue == "norm" else 1.0
  xq = quantize_q8_1(read) * row_scale
  scale = np.abs(xq) @ np.abs(want.T)
  # swiglu's silu is computed in float32 on the GPU: a value on a rounding edge may round the other way
  assert np.max(np.abs(got - xq @ want.T) / scale) < (2e-3 if prologue == "swiglu" else 1e-5)
  exact = reference_prologue(x, prologue, norm_np, 1e-5)
  assert np.max(np.abs(got - exact @ want.T) / (np.abs(exact) @ np.abs(want.T))) < 1e-2
  for rows in (1, 13):
    np.testing.assert_array_equal(outputs[rows].view(np.uint32), outputs[64][:rows].view(np.uint32))


@pytest.mark.parametrize("masked", [False, True], ids=["plain", "mask"])
@pytest.mark.parametrize("interleaved", [True, False], ids=["pairs", "halves"])
def test_fused_rope_attention_matches_reference(cuda, interleaved, masked):
  """RoPE + the k/v cache write + attention in one launch against the primitive path on CUDA (apply_rope, the cache
  write kernel, the decode attention kernel; fusion off) at several positions (the first row, lanes with one and with
  several keys, the last row), two sequences, grouped-query heads, an additive mask."""
  from teenygrad.helpers import config
  from teenygrad.llm.custom_ops import cache_write, decode_attention, rope_attention
  from teenygrad.llm.model import apply_rope
  B, H, KVH, D, L = 2, 8, 2, 64, 100
  rng = np.random.default_rng(1)
  angles = rng.uniform(0, 6, (L, D // 2))
  cos, sin = (Tensor(f(angles).astype(np.float32), device="CUDA").realize() for f in (np.cos, np.sin))
  fused_caches = [Tensor(rng.standard_normal((B, KVH, L, D), dtype=np.float32), device="CUDA").realize() for _ in range(2)]
  ref_caches = [Tensor(c.numpy(), device="CUDA").realize() for c in fused_caches]
  for pos in (0, 1, 31, 70, L - 1):
    qkv_np = rng.standard_normal((B, 1, (H + 2 * KVH) * D), dtype=np.float32)
    mask_np = np.where(rng.random((B, L)) < 0.3, -1e9, 0.0).astype(np.float32)
    mask_np[:, pos] = 0.0
    mask = Tensor(mask_np, device="CUDA") if masked else None
    start = Tensor(np.array([pos], np.int32), device="CUDA")
    got, names = _launched(lambda: rope_attention(Tensor(qkv_np, device="CUDA"), cos, sin, start, *fused_caches, mask, H,
                                                  interleaved).numpy())
    assert names == ["rope_attention"], names
    split = qkv_np.reshape(B, H + 2 * KVH, 1, D)
    c, s = Tensor(cos.numpy()[pos:pos + 1], device="CUDA"), Tensor(sin.numpy()[pos:pos + 1], device="CUDA")
    old = config.decode_fusion
    try:
      config.decode_fusion = "none"
      q = apply_rope(Tensor(split[:, :H], device="CUDA"), c, s, interleaved)
      k = apply_rope(Tensor(split[:, H:H + KVH], device="CUDA"), c, s, interleaved)
      keys = cache_write(ref_caches[0], k, start)
      values = cache_write(ref_caches[1], Tensor(split[:, H + KVH:], device="CUDA"), start)
      want = decode_attention(q, keys, values, start, mask).numpy()
    finally: config.decode_fusion = old
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    for fused, ref in zip(fused_caches, ref_caches): np.testing.assert_allclose(fused.numpy(), ref.numpy(), rtol=1e-5, atol=1e-5)


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
  pytest.importorskip("gguf")
  pytest.importorskip("tokenizers")
  from test_llm import write_tiny_gguf
  folder = tmp_path_factory.mktemp("gguf")
  paths = {}
  for qtype in ("Q4_1", "Q8_0", "F16"):
    paths[qtype] = folder / f"tiny_{qtype}.gguf"
    write_tiny_gguf(paths[qtype], qtype=qtype, dim=128, heads=4, kv_heads=2, hidden=256)
  paths["Q4_0 packed"] = folder / "tiny_q4_0_1024.gguf"   # every projection's rows a multiple of 1024: the packed layout
  write_tiny_gguf(paths["Q4_0 packed"], qtype="Q4_0", dim=1024, heads=8, kv_heads=2, hidden=1024)
  return paths


@pytest.mark.parametrize("qtype", ["Q4_1", "Q8_0", "F16", "Q4_0 packed"])
def test_fused_decode_matches_the_primitive_path(cuda, tiny_models, qtype):
  """A whole model's decode on CUDA through the fused kernels against the primitive path (TEENYGRAD_DECODE_FUSION=none)
  on the same GGUF: prefill, then decode steps at symbolic positions; a step is at most 5 launches per layer + 3 (the
  norm + qkv projection, RoPE + attention, the output projection + residual, the norm + gate/up projection with
  silu(gate) * up in its epilogue, the down projection + residual)."""
  from teenygrad.engine.realize import capture_kernels
  from teenygrad.helpers import config
  from teenygrad.ir.symbolic import BoundVariable
  from teenygrad.llm.load import load_model
  from teenygrad.llm.model import KVCache
  tokens = [3, 17, 5, 22, 9, 31, 4]
  def logits(setting: str):
    old = config.decode_fusion
    try:
      config.decode_fusion = setting
      model, _ = load_model(str(tiny_models[qtype]), device="CUDA")
      cache = KVCache(model.config, 1, 16, device="CUDA")
      out = [model(np.array([tokens[:4]], dtype=np.int32), cache, 0).numpy()]
      launches = []
      for pos in range(4, len(tokens)):
        with capture_kernels() as items:
          out.append(model(np.array([[tokens[pos]]], dtype=np.int32), cache, BoundVariable("p", 0, 15, pos)).numpy())
        launches.append(len(items))
      return out, launches, model.config.n_layers
    finally: config.decode_fusion = old
  fused, launches, layers = logits("all")
  primitive, before, _ = logits("none")
  for got, want in zip(fused, primitive): np.testing.assert_allclose(got, want, rtol=2e-3, atol=2e-3)
  assert max(launches) <= 5 * layers + 3 < min(before), (launches, before)


def test_fused_decode_replays_as_one_graph(cuda, tiny_models):
  """The generator's jitted decode step through the fused kernels is one CUDA graph, replayed at every position, and
  generates what the primitive path generates (greedy)."""
  from teenygrad.helpers import config
  from teenygrad.llm.generate import Generator
  from teenygrad.llm.load import load_model
  from teenygrad.llm.sampling import SamplingParams
  def generate(setting: str):
    old = config.decode_fusion
    try:
      config.decode_fusion = setting
      model, tokenizer = load_model(str(tiny_models["Q8_0"]), device="CUDA")
      tokenizer.stop_ids = set()
      generator = Generator(model, tokenizer)
      ids = [r.generated for r in generator.generate_ids([[3, 17, 5, 22, 9]], SamplingParams(max_tokens=8))]
      return ids, generator._decode_greedy.capture   # greedy: the step's argmax is taken on the device
    finally: config.decode_fusion = old
  fused, capture = generate("all")
  assert getattr(capture, "graph", None) is not None and capture.graph_launches >= 4
  assert fused == generate("none")[0]


# last in the file: an experimental kernel that faults would end the process's CUDA context
@pytest.mark.parametrize("config", ["128x128x64", "128x256x32", "wgmma", "wgmma256", "wgmma+overlap", "wgmma256+overlap",
                                    "wgmma-tma", "wgmma-tma128"])
@pytest.mark.parametrize("layout", ["nn", "linear"])
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_tensor_core_tiles_match_torch(cuda, monkeypatch, config, layout, dtype):
  import teenygrad.renderer.cuda_gemm as cuda_gemm
  from teenygrad.engine import realize as engine_realize
  monkeypatch.setattr(cuda_gemm, "TC_DEFAULT", config)
  engine_realize._kernel_cache.clear()
  try:
    rng = np.random.default_rng(17)
    m, k, n = 384, 512, 512   # every config applies (wgmma256 needs n % 256, the others 128)
    torch_dtype = getattr(torch, dtype)
    a_np, b_np = rng.standard_normal((m, k)).astype(np.float32), rng.standard_normal((n, k) if layout == "linear" else (k, n)).astype(np.float32)
    a_ref, b_ref = (torch.from_numpy(x).to(torch_dtype).double() for x in (a_np, b_np))
    a = Tensor(a_ref.float().numpy(), device="CUDA").cast(getattr(dtypes, dtype)).realize()
    b = Tensor(b_ref.float().numpy(), device="CUDA").cast(getattr(dtypes, dtype)).realize()
    fn = (lambda: a.linear(b).float().numpy()) if layout == "linear" else (lambda: (a @ b).float().numpy())
    out, names = _launched(fn)
    ref = (a_ref @ b_ref.T if layout == "linear" else a_ref @ b_ref).numpy()
    assert any(name.startswith("gemm_") for name in names)
    error = _rel_error(out, ref)
    assert error < BOUNDS[dtype] * 4, f"{config} {layout}: relative Frobenius error {error:.2e}"
  finally:
    engine_realize._kernel_cache.clear()


@pytest.mark.parametrize("broadcast", [False, True])
def test_tma_gemm_batched_and_broadcast(cuda, broadcast):
  """The TMA kernel's third tensor-map dimension: a batch of matrices on both sides, or one B shared by every batch
  (stride 0, read as batch 0)."""
  rng = np.random.default_rng(3)
  a_np = rng.standard_normal((3, 256, 128)).astype(np.float32)
  b_np = rng.standard_normal((128, 256) if broadcast else (3, 128, 256)).astype(np.float32)
  a_ref, b_ref = (torch.from_numpy(x).half().double() for x in (a_np, b_np))
  a = Tensor(a_ref.float().numpy(), device="CUDA").half().realize()
  b = Tensor(b_ref.float().numpy(), device="CUDA").half().realize()
  out, names = _launched(lambda: (a @ b).float().numpy())
  assert any(name.startswith("gemm_float16") for name in names)
  assert _rel_error(out, (a_ref @ b_ref).numpy()) < BOUNDS["float16"] * 4


def test_tma_gemm_in_a_jit_replay(cuda):
  """A replayed graph keeps each TMA descriptor with its node, and new inputs copied into the captured buffers are read."""
  from teenygrad.engine.jit import jit
  rng = np.random.default_rng(4)
  w = Tensor(rng.standard_normal((256, 128)).astype(np.float32), device="CUDA").half().realize()
  @jit
  def project(x): return x.linear(w).float()
  for step in range(4):
    x_np = rng.standard_normal((128, 128)).astype(np.float32)
    out = project(Tensor(x_np, device="CUDA").half().realize()).numpy()
    ref = torch.from_numpy(x_np).half().double() @ torch.from_numpy(w.float().numpy()).double().T
    assert _rel_error(out, ref.numpy()) < BOUNDS["float16"] * 4, f"step {step}"
  assert getattr(project.capture, "graph", None) is not None


@pytest.mark.parametrize("rows,n", [(1, 49152), (3, 1003), (2, 151936)])
def test_greedy_tokens_kernel_matches_torch(cuda, rows, n):
  """Greedy decoding's row argmax (llm/argmax_cuda.py, one launch) against torch's argmax: random rows with a tie for
  the maximum (the first index wins) and, in the last row, NaNs (the first NaN wins)."""
  from teenygrad.llm.custom_ops import greedy_tokens
  rng = np.random.default_rng(rows)
  logits = rng.standard_normal((rows, n)).astype(np.float32)
  logits[0, [n // 3, n - 2]] = 20.0
  if rows > 1: logits[-1, [n - 7, 5]] = np.nan
  out, names = _launched(lambda: greedy_tokens(Tensor(logits, device="CUDA").realize()).numpy())
  assert "argmax_rows" in names
  assert out.shape == (rows, 1) and out.dtype == np.int32
  assert out[:, 0].tolist() == torch.from_numpy(logits).argmax(-1).tolist()


def test_read_later_returns_the_buffer_as_it_was_when_asked(cuda):
  """Buffer.read_later on CUDA (a copy queued at once into a pinned buffer of its own, waited for at read time): the
  values are the buffer's when the read was asked even where the buffer is overwritten by work queued after it, two
  reads in flight at once keep their own values, and a finished read's pinned buffer serves the next one."""
  from teenygrad.device import Buffer
  from teenygrad.dtype import dtypes
  a = Buffer("CUDA", 1000, dtypes.int32).copyin(np.arange(1000, dtype=np.int32))
  first = a.read_later()
  a.copyin(np.full(1000, 7, np.int32))   # queued after the read: the read must not see it
  second = a.read_later()
  big = Tensor(np.ones((512, 512), np.float32), device="CUDA")
  (big @ big).realize()                   # work queued behind both reads
  assert first().tolist() == list(range(1000))
  assert (second() == 7).all()
  slots = len(cuda.allocator._readbacks)
  third = a.read_later()
  assert len(cuda.allocator._readbacks) == slots - 1 and (third() == 7).all()
  assert len(cuda.allocator._readbacks) == slots
