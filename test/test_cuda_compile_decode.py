"""Decode's fused CUDA kernels without a GPU: each compiles with NVRTC for sm_90, and its C++ runs on the CPU, a warp
as 32 real threads whose shuffles meet at a barrier, against numpy references (the primitive ops' meaning).

Covers nn/matvec_cuda.py (float16/bfloat16 matvecs, the norm and swiglu prologues), the prologues of
nn/quant_cuda.py's quantized matvec, nn/quant_cuda_packed.py's repacked one, and llm/attention_cuda.py's RoPE +
KV-cache write + attention. test_cuda.py runs the same kernels on a GPU against the primitive-op path."""
from __future__ import annotations

import ctypes
import hashlib
import shutil
import subprocess

import numpy as np
import pytest

from helpers import quantize_q8_1, reference_prologue

from teenygrad.renderer.cuda import CUDA_PREAMBLE

# a block's threads run at once (a warp's shuffles meet at its own barrier, __syncthreads at the block's); blocks run
# one after another, so one static array serves as each block's shared memory
_WARP_EMULATION = r"""
#include <algorithm>
#include <barrier>
#include <cmath>
#include <cstring>
#include <memory>
#include <thread>
#include <vector>
#define __global__
#define __device__
#define __forceinline__ inline
#define __launch_bounds__(n)
#define __restrict__
#define __align__(n) __attribute__((aligned(n)))
#define __shared__ static   /* blocks run one after another: one array serves each block's threads */
using std::min;
using std::max;
struct float4 { float x, y, z, w; };
static float4 make_float4(float x, float y, float z, float w) { return {x, y, z, w}; }
struct float2 { float x, y; };
struct uint4 { unsigned int x, y, z, w; };
struct Index { unsigned int x; };
static thread_local Index threadIdx;
static Index blockIdx, gridDim;
#define TG_GRID_WAIT()                                      /* one kernel at a time: nothing to wait for */
static void tg_prefetch_l2(const void*, unsigned int) {}   /* no L2 to warm */
static std::barrier<>* warp_barriers[32];   /* one per warp of the block */
static std::barrier<>* block_barrier;
static float exchange[32][32];
static int __float2int_rn(float v) { return (int)std::nearbyint(v); }   /* the default rounding: halves to even */
static int __dp4a(int a, int b, int c) {
  for (int i = 0; i < 32; i += 8) c += (signed char)(a >> i) * (signed char)(b >> i);
  return c;
}
static unsigned int __byte_perm(unsigned int x, unsigned int y, unsigned int s) {   /* byte i: byte (s >> 4 i) & 7 of y:x */
  const unsigned long long v = ((unsigned long long)y << 32) | x;
  unsigned int r = 0;
  for (int i = 0; i < 4; i++) r |= (unsigned int)((v >> (8 * ((s >> (4 * i)) & 7))) & 255) << (8 * i);
  return r;
}
static float rsqrtf(float v) { return 1.0f / std::sqrt(v); }
static float __uint_as_float(unsigned int u) { float f; memcpy(&f, &u, 4); return f; }
static float tg_h2f(unsigned short h) {   /* IEEE half to float, subnormals included */
  unsigned int sign = (h >> 15) << 31, exp = (h >> 10) & 31, mant = h & 1023, bits;
  if (exp == 31) bits = sign | 0x7f800000u | (mant << 13);
  else if (exp) bits = sign | ((exp + 112) << 23) | (mant << 13);
  else { float f = (float)mant * (1.0f / 16777216.0f); memcpy(&bits, &f, 4); bits |= sign; }
  return __uint_as_float(bits);
}
template <typename F> static float combine(float v, F f) {
  float* lanes = exchange[threadIdx.x >> 5];
  std::barrier<>& warp = *warp_barriers[threadIdx.x >> 5];
  lanes[threadIdx.x & 31] = v;
  warp.arrive_and_wait();
  float r = lanes[0];
  for (int i = 1; i < 32; i++) r = f(r, lanes[i]);
  warp.arrive_and_wait();
  return r;
}
static float tg_warp_sum(float v) { return combine(v, [](float a, float b) { return a + b; }); }
static float __shfl_xor_sync(unsigned int, float v, int mask) {
  float* lanes = exchange[threadIdx.x >> 5];
  std::barrier<>& warp = *warp_barriers[threadIdx.x >> 5];
  lanes[threadIdx.x & 31] = v;
  warp.arrive_and_wait();
  const float r = lanes[(threadIdx.x & 31) ^ mask];
  warp.arrive_and_wait();
  return r;
}
static int __shfl_xor_sync(unsigned int, int v, int mask) {
  float f; memcpy(&f, &v, 4);
  const float r = __shfl_xor_sync(0u, f, mask);
  int i; memcpy(&i, &r, 4);
  return i;
}
static void __syncwarp() { warp_barriers[threadIdx.x >> 5]->arrive_and_wait(); }
static void __syncthreads() { block_barrier->arrive_and_wait(); }
static float tg_warp_max(float v) { return combine(v, [](float a, float b) { return std::fmax(a, b); }); }
/* blocks run one after another: a block's atomics and fences meet no other block's */
static unsigned int atomicAdd(unsigned int* p, unsigned int v) { const unsigned int old = *p; *p += v; return old; }
static void __threadfence() {}
static float __ldcg(const float* p) { return *p; }
"""

_C_TYPES = {np.float32: "float*", np.uint8: "unsigned char*", np.uint16: "unsigned short*", np.int32: "int*", np.uint32: "unsigned int*",
            np.int64: "long long*"}


def _nvrtc_compiles(src: str) -> None:
  from teenygrad.device import cuda_bindings
  try: cuda_bindings.libnvrtc()
  except RuntimeError as e: pytest.skip(f"NVRTC not installed (pip install '.[cuda]'): {e}")
  from teenygrad.device.cuda import NVRTCCompiler
  assert NVRTCCompiler("sm_90").compile(src)[:4] == b"\x7fELF"


def emulate(tmp_path, src: str, name: str, args: list, blocks: int, threads: int) -> None:
  """Run kernel `name` of CUDA source `src` on the CPU over `blocks` x `threads`; args are numpy arrays (pointers,
  written in place) or ints (long long)."""
  if shutil.which("g++") is None: pytest.skip("no g++")
  assert src.startswith(CUDA_PREAMBLE) and threads % 32 == 0
  params = [f"{_C_TYPES[a.dtype.type]} a{i}" if isinstance(a, np.ndarray) else f"long long a{i}" for i, a in enumerate(args)]
  names = ", ".join(f"a{i}" for i in range(len(args)))
  driver = f"""
extern "C" void run({", ".join(params)}) {{
  std::vector<std::unique_ptr<std::barrier<>>> warps;
  for (int w = 0; w < {threads // 32}; w++) {{ warps.push_back(std::make_unique<std::barrier<>>(32)); warp_barriers[w] = warps.back().get(); }}
  std::barrier<> block({threads});
  block_barrier = &block;
  gridDim.x = {blocks};
  for (blockIdx.x = 0; blockIdx.x < {blocks}; blockIdx.x++) {{
    std::vector<std::thread> threads;
    for (unsigned int t = 0; t < {threads}; t++) threads.emplace_back([=] {{ threadIdx.x = t; {name}({names}); }});
    for (auto& thread : threads) thread.join();
  }}
}}
"""
  code = _WARP_EMULATION + src[len(CUDA_PREAMBLE):] + driver
  # a library per source: the loader keeps a loaded one by path, and rewriting it under a live mapping crashes
  stem = tmp_path / f"kernel_{hashlib.sha256(code.encode()).hexdigest()[:16]}"
  if not stem.with_suffix(".so").exists():
    stem.with_suffix(".cpp").write_text(code)
    subprocess.run(["g++", "-std=c++20", "-O1", "-shared", "-fPIC", "-pthread", "-o", str(stem.with_suffix(".so")), str(stem.with_suffix(".cpp"))],
                   check=True, capture_output=True)
  lib = ctypes.CDLL(str(stem.with_suffix(".so")))
  lib.run(*[a.ctypes.data_as(ctypes.c_void_p) if isinstance(a, np.ndarray) else ctypes.c_longlong(a) for a in args])


def _inputs(rng, m: int, k: int, n: int, prologue: str):
  width = 2 * k if prologue == "swiglu" else k
  x = rng.standard_normal((m, width), dtype=np.float32)
  norm = rng.uniform(0.5, 1.5, k).astype(np.float32)
  residual = rng.standard_normal((m, n), dtype=np.float32)
  return x, norm, residual


def _check(out, x, norm, residual, weight64, prologue, eps):
  want = reference_prologue(x, prologue, norm, eps) @ weight64.T
  scale = np.abs(reference_prologue(x, prologue, norm, eps)) @ np.abs(weight64.T) + 1e-30
  assert np.max(np.abs(out - residual - want) / scale) < 1e-5


def _emulate_matvec(tmp_path, src: str, name: str, grid: int, weight: np.ndarray, weight64: np.ndarray, inputs: tuple,
                    prologue: str, eps: float) -> None:
  """Run a matvec kernel's C++ on the CPU (a warp of threads per block) on `inputs` = (x, norm, residual), check it
  against the float64 reference, and compile it with NVRTC."""
  x, norm, residual = inputs
  out = np.full((x.shape[0], residual.shape[-1]), np.nan, np.float32)
  args = [out, x, weight] + ([norm] if prologue == "norm" else []) + [residual]
  from teenygrad.nn.matvec_cuda import WARPS
  emulate(tmp_path, src, name, args, grid, 32 * WARPS)
  _check(out, x, norm, residual, weight64, prologue, eps)
  _nvrtc_compiles(src)


@pytest.mark.parametrize("dtype_name", ["float16", "bfloat16"])
@pytest.mark.parametrize("prologue", ["", "norm", "swiglu"])
@pytest.mark.parametrize("k,m,n", [(264, 1, 13), (512, 10, 8), (2312, 2, 5)])
def test_float_matvec_on_the_cpu(dtype_name, prologue, k, m, n, tmp_path):
  """float16/bfloat16 weights: a K that leaves the last step ragged (264), or not (512), or leaves the last batch of
  loads short and its last step ragged (2312: 10 steps of 256), a ragged last warp of W rows (13, 5), two groups of x
  rows (10), every prologue, a residual."""
  from teenygrad.nn.matvec_cuda import float_grid, float_matvec_name, render_float_matvec
  rng = np.random.default_rng(k + m + n)
  eps = 1e-5
  weight = rng.standard_normal((n, k), dtype=np.float32)
  if dtype_name == "float16":
    bits = weight.astype(np.float16).view(np.uint16)
    weight64 = bits.view(np.float16).astype(np.float64)
  else:
    bits = (weight.view(np.uint32) >> 16).astype(np.uint16)   # truncated: any bfloat16 values will do
    weight64 = (bits.astype(np.uint32) << 16).view(np.float32).astype(np.float64)
  src = render_float_matvec(dtype_name, k, m, n, prologue, residual=True, eps=eps)
  _emulate_matvec(tmp_path, src, float_matvec_name(dtype_name, k, m, n, prologue, True), float_grid(m, n), bits, weight64,
                  _inputs(rng, m, k, n, prologue), prologue, eps)


@pytest.mark.parametrize("ggml_type", ["Q4_0", "Q4_1", "Q8_0"])
@pytest.mark.parametrize("prologue", ["norm", "swiglu"])
def test_quant_matvec_prologues_on_the_cpu(ggml_type, prologue, tmp_path):
  """The quantized matvec with its input normalized (RMSNorm folded in) or read as silu(gate) * up, against gguf-py's
  dequantize; 10 rows of x (two groups), 13 rows of W (a ragged last block)."""
  gguf = pytest.importorskip("gguf")
  from teenygrad.nn.quant_cuda import WARPS, _groups, matvec_name, render_matvec
  rng = np.random.default_rng(7)
  m, k, n, eps = 10, 320, 13, 1e-6
  blocks = gguf.quants.quantize(rng.standard_normal((n, k), dtype=np.float32), gguf.GGMLQuantizationType[ggml_type])
  weight64 = gguf.quants.dequantize(blocks, gguf.GGMLQuantizationType[ggml_type]).astype(np.float64)
  x, norm, residual = _inputs(rng, m, k, n, prologue)
  out = np.full((m, n), np.nan, np.float32)
  src = render_matvec(ggml_type, k, m, residual=True, prologue=prologue, eps=eps)
  args = [out, x, np.ascontiguousarray(blocks)] + ([norm] if prologue == "norm" else []) + [residual, n]
  emulate(tmp_path, src, matvec_name(ggml_type, k, m, True, prologue), args, -(-n // WARPS) * _groups(m), 32 * WARPS)
  _check(out, x, norm, residual, weight64, prologue, eps)
  _nvrtc_compiles(src)


@pytest.mark.parametrize("kernel,interleaved,masked,D", [("split", i, m, d) for d in (16, 64) for i in (True, False) for m in (False, True)]
                         + [("split", False, True, 128), ("wide", True, True, 64), ("wide", False, False, 128),
                            ("narrow", True, True, 8), ("narrow", False, False, 12)])
def test_rope_attention_on_the_cpu(kernel, interleaved, masked, D, tmp_path):
  """RoPE, the k/v cache write and attention in one kernel, against the model's primitive apply_rope (on the CPU) and
  numpy's softmax attention over the written cache: two sequences, grouped-query heads, positions at both ends of the
  cache and in the middle (splits with several keys and splits with none), and one past it (writes nothing, attends
  the whole cache unrotated). Each kernel: keys split over blocks (what d = 16..128 runs), a block of warps per head,
  a lane per key."""
  from teenygrad import Tensor
  from teenygrad.llm import attention_cuda
  from teenygrad.llm.attention_cuda import rope_attention_name, rope_attention_splits
  from teenygrad.llm.model import LlamaConfig, apply_rope, rope_frequencies
  B, H, KVH, L = 2, 6, 2, 80
  config = LlamaConfig(vocab_size=8, dim=H * D, n_layers=1, n_heads=H, n_kv_heads=KVH, hidden_dim=8, head_dim=D, max_seq_len=L)
  angles = np.outer(np.arange(L, dtype=np.float64), rope_frequencies(config))
  cos, sin = np.cos(angles).astype(np.float32), np.sin(angles).astype(np.float32)
  render = {"split": attention_cuda.render_rope_attention_split, "wide": attention_cuda.render_rope_attention_wide,
            "narrow": attention_cuda.render_rope_attention}[kernel]
  assert (kernel == "split") == bool(rope_attention_splits(D, L)) or kernel == "wide"
  src = render(D, H, KVH, L, L, interleaved, masked)
  splits = rope_attention_splits(D, L) if kernel == "split" else 1
  threads = {"split": attention_cuda.SPLIT_THREADS, "wide": 32 * attention_cuda.ROPE_WARPS, "narrow": 32}[kernel]
  scratch = [np.full(B * H * splits * (D + 2), np.nan, np.float32), np.zeros(B * H, np.uint32)] if kernel == "split" else []
  rng = np.random.default_rng(3)
  for start in (0, 1, 44, L - 1, L):
    qkv = rng.standard_normal((B, (H + 2 * KVH) * D), dtype=np.float32)
    keys, values = rng.standard_normal((2, B, KVH, L, D), dtype=np.float32)
    mask = np.where(rng.random((B, L)) < 0.3, -1e9, 0.0).astype(np.float32)
    mask[:, min(start, L - 1)] = 0.0   # every row keeps a key
    want_keys, want_values = keys.copy(), values.copy()
    out = np.full((B, H, 1, D), np.nan, np.float32)
    emulate(tmp_path, src, rope_attention_name(D, H, KVH, L, interleaved, masked),
            [out, qkv, cos, sin, np.array([start], np.int32), keys, values] + ([mask] if masked else []) + scratch, B * H * splits, threads)
    if scratch: assert not scratch[1].any()   # the merging blocks reset the arrivals for the next launch
    q = qkv[:, :H * D].reshape(B, H, 1, D)
    if start < L:
      c, s = Tensor(cos[start:start + 1]), Tensor(sin[start:start + 1])
      q = apply_rope(Tensor(q), c, s, interleaved).numpy()
      want_keys[:, :, start:start + 1] = apply_rope(Tensor(qkv[:, H * D:(H + KVH) * D].reshape(B, KVH, 1, D)), c, s, interleaved).numpy()
      want_values[:, :, start] = qkv[:, (H + KVH) * D:].reshape(B, KVH, D)
    np.testing.assert_allclose(keys, want_keys, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(values, want_values)
    count = min(start + 1, L)
    k64 = np.repeat(want_keys, H // KVH, axis=1)[:, :, :count].astype(np.float64)
    v64 = np.repeat(want_values, H // KVH, axis=1)[:, :, :count].astype(np.float64)
    scores = (q.astype(np.float64) @ k64.transpose(0, 1, 3, 2)) / np.sqrt(D)
    if masked: scores = scores + mask[:, None, None, :count]
    weights = np.exp(scores - scores.max(-1, keepdims=True))
    np.testing.assert_allclose(out, (weights / weights.sum(-1, keepdims=True)) @ v64, rtol=1e-5, atol=1e-5)
  _nvrtc_compiles(src)


@pytest.mark.parametrize("ggml_type", ["Q4_0", "Q4_1", "Q8_0"])
@pytest.mark.parametrize("prologue,m,k,rows", [("", 1, 2048, 4), ("norm", 10, 2048, 2), ("swiglu", 3, 3072, 1)])
def test_packed_matvec_on_the_cpu(ggml_type, prologue, m, k, rows, tmp_path, monkeypatch):
  """Weights repacked for CUDA (nn/quant_cuda_packed.py) and the matvec reading them, against gguf-py's dequantize of
  the original blocks: two or three warp steps per row (three leave the last batch of loads short), 13 rows of W (a
  ragged last warp) at 4, 2 and 1 rows per warp, 1, 3 and 10 rows of x (two groups), every prologue."""
  gguf = pytest.importorskip("gguf")
  from teenygrad.nn import quant_cuda_packed
  from teenygrad.nn.quant_cuda_packed import packed_grid, packed_name, render_packed_matvec, repack
  monkeypatch.setattr(quant_cuda_packed, "rows_per_warp", lambda m, n: rows)   # the real choice needs thousands of rows
  rng = np.random.default_rng(11)
  n, eps = 13, 1e-5
  blocks = gguf.quants.quantize(rng.standard_normal((n, k), dtype=np.float32), gguf.GGMLQuantizationType[ggml_type])
  weight64 = gguf.quants.dequantize(blocks, gguf.GGMLQuantizationType[ggml_type]).astype(np.float64)
  packed = repack(ggml_type, blocks, n, k)
  assert packed.nbytes == blocks.nbytes
  src = render_packed_matvec(ggml_type, k, m, n, prologue, residual=True, eps=eps)
  _emulate_matvec(tmp_path, src, packed_name(ggml_type, k, m, n, prologue, True), packed_grid(m, n), packed, weight64,
                  _inputs(rng, m, k, n, prologue), prologue, eps)


@pytest.mark.parametrize("ggml_type", ["Q4_0", "Q4_1", "Q8_0"])
def test_repack_in_tensor_ops_equals_numpy(ggml_type):
  """The device repack (Tensor ops, what the model runs) gives numpy's repack byte for byte, and its kernels compile
  for CUDA."""
  from teenygrad import Tensor
  from teenygrad.nn.quant_cuda_packed import _BLOCK_BYTES, repack, repack_tensor
  n, k = 5, 2048
  blocks = np.random.default_rng(2).integers(0, 256, size=(n, k // 32 * _BLOCK_BYTES[ggml_type]), dtype=np.uint8)
  packed = repack_tensor(ggml_type, Tensor(blocks), n, k)
  np.testing.assert_array_equal(packed.numpy(), repack(ggml_type, blocks, n, k))
  from test_cuda_compile import render_cuda   # and its kernels, as CUDA renders them, compile
  for name, src, _ in render_cuda(repack_tensor(ggml_type, Tensor(blocks), n, k).contiguous()): _nvrtc_compiles(src)


def _libm_silu_product(x: np.ndarray) -> np.ndarray:
  """silu(gate) * up in float32 with the C library's expf, as the emulated kernel computes it."""
  expf = ctypes.CDLL("libm.so.6").expf
  expf.restype, expf.argtypes = ctypes.c_float, [ctypes.c_float]
  gate, up = np.split(x, 2, axis=-1)
  e = np.vectorize(lambda v: expf(-v), otypes=[np.float32])(gate)
  return gate / (np.float32(1) + e) * up


@pytest.mark.parametrize("ggml_type", ["Q4_0", "Q4_1", "Q8_0"])
@pytest.mark.parametrize("prologue,m,k,rows,warps,ahead,chunk", [("", 1, 2048, 4, 4, 2, 4), ("norm", 10, 3072, 2, 2, 1, 2),
                                                                   ("swiglu", 3, 4096, 1, 4, 1, 2)])
def test_dp4a_matvec_on_the_cpu(ggml_type, prologue, m, k, rows, warps, ahead, chunk, tmp_path, monkeypatch):
  """The int8-x matvec (nn/quant_cuda_dp4a.py) on the packed layout against numpy's model of x's rounding
  (test/helpers.quantize_q8_1) times gguf-py's dequantize of the weight, in float64: 1, 3 and 10 rows of x (two
  groups), 13 rows of W (a ragged last warp) at 4, 2 and 1 rows per warp, 4 and 2 warps per block, rows of 2, 3 and
  4 steps in one chunk of x or two (the last one short), load batches of 1 and 2 steps (the last one short), every
  prologue, a block of x all zeros; and the last row of x computed alone gives the same bits as in its batch."""
  gguf = pytest.importorskip("gguf")
  from teenygrad.nn import quant_cuda_dp4a
  from teenygrad.nn.quant_cuda_dp4a import dp4a_grid, dp4a_name, render_dp4a_matvec
  from teenygrad.nn.quant_cuda_packed import repack
  monkeypatch.setattr(quant_cuda_dp4a, "ROWS_PER_WARP", rows)
  monkeypatch.setattr(quant_cuda_dp4a, "WARPS", warps)
  monkeypatch.setattr(quant_cuda_dp4a, "LOADS_AHEAD", ahead)
  monkeypatch.setattr(quant_cuda_dp4a, "CHUNK_STEPS", chunk)
  rng = np.random.default_rng(5)
  n, eps = 13, 1e-5
  blocks = gguf.quants.quantize(rng.standard_normal((n, k), dtype=np.float32), gguf.GGMLQuantizationType[ggml_type])
  weight64 = gguf.quants.dequantize(blocks, gguf.GGMLQuantizationType[ggml_type]).astype(np.float64)
  packed = repack(ggml_type, blocks, n, k)
  x, norm, residual = _inputs(rng, m, k, n, prologue)
  x[0, :32] = 0.0   # a block of zeros: scale 0, values 0
  def run(rows_of_x: slice) -> np.ndarray:
    xs, rs = np.ascontiguousarray(x[rows_of_x]), np.ascontiguousarray(residual[rows_of_x])
    out = np.full((xs.shape[0], n), np.nan, np.float32)
    src = render_dp4a_matvec(ggml_type, k, xs.shape[0], n, prologue, residual=True, eps=eps)
    args = [out, xs, packed] + ([norm] if prologue == "norm" else []) + [rs]
    emulate(tmp_path, src, dp4a_name(ggml_type, k, xs.shape[0], n, prologue, True), args, dp4a_grid(xs.shape[0], n, k), 32 * warps)
    return out, src
  out, src = run(slice(None))
  # what the kernel quantizes: x through the prologue's float32 arithmetic, RMSNorm's row scale applied after the sum
  read = x * norm if prologue == "norm" else _libm_silu_product(x) if prologue == "swiglu" else x
  row_scale = 1.0 / np.sqrt((x.astype(np.float64) ** 2).mean(-1, keepdims=True) + eps) if prologue == "norm" else 1.0
  xq = quantize_q8_1(read) * row_scale
  scale = np.abs(xq) @ np.abs(weight64.T) + 1e-30
  assert np.max(np.abs(out - residual - xq @ weight64.T) / scale) < 1e-5
  exact = reference_prologue(x, prologue, norm, eps)   # and x's rounding is all that moves it from the float result
  assert np.max(np.abs(out - residual - exact @ weight64.T) / (np.abs(exact) @ np.abs(weight64.T))) < 1e-2
  alone, _ = run(slice(m - 1, m))
  np.testing.assert_array_equal(alone.view(np.uint32), out[m - 1:].view(np.uint32))
  _nvrtc_compiles(src)


def test_int8_x_only_for_large_weights():
  """The packed matvec rounds x to int8 from DP4A_MIN_WEIGHTS weights (an 8B model's projections), not below (a
  small model's launch-bound ones) nor with the dp4a part of TEENYGRAD_DECODE_FUSION off (int8_x=False); and the
  profile tells the two apart."""
  from teenygrad.nn.quant_cuda_dp4a import DP4A_MIN_WEIGHTS
  from teenygrad.nn.quant_cuda_packed import _render_for
  for n, k, int8_x, dp4a in [(4096, 4096, True, True), (4096, 14336, True, True), (DP4A_MIN_WEIGHTS // 1024 - 1, 1024, True, False),
                             (4096, 4096, False, False)]:
    name, src, launch, label = _render_for("Q4_0", k, 1, n, "", False, 0.0, int8_x)
    assert ("dp4a" in name) == ("__dp4a" in src) == ("dp4a" in label) == dp4a, (n, k, int8_x)
    assert launch["grid"][0] * launch["block"][0] // 32 >= n // 4   # every weight row has a warp


# ---- the glu epilogue: silu(gate) * up of a fused gate/up projection's two halves, in the matvec ----

def _check_glu(out: np.ndarray, product: np.ndarray, magnitude: np.ndarray) -> None:
  """out (m, n / 2) against silu(gate) * up of product (m, n) (float64), each error relative to how far its inputs'
  rounding can move it (magnitude: |x| @ |W.T|, the products' own scale)."""
  gate, up = np.split(product, 2, axis=-1)
  gate_scale, up_scale = np.split(magnitude, 2, axis=-1)
  silu = gate / (1 + np.exp(-gate))
  want = silu * up
  bound = 1.1 * np.abs(up) * gate_scale + np.abs(silu) * up_scale + 1e-30
  assert out.shape == want.shape and np.max(np.abs(out - want) / bound) < 1e-5


def _glu_inputs(rng, m: int, k: int, prologue: str):
  x, norm, _ = _inputs(rng, m, k, 1, prologue)
  return x, norm, reference_prologue(x, prologue, norm, 1e-5)


@pytest.mark.parametrize("prologue", ["", "norm"])
@pytest.mark.parametrize("dtype_name", ["float16", "bfloat16"])
def test_float_matvec_glu_on_the_cpu(dtype_name, prologue, tmp_path):
  """The float16/bfloat16 matvec's glu epilogue: 14 rows of W (7 gate/up pairs: a ragged last block), 3 rows of x,
  a ragged last step, with and without the norm."""
  from teenygrad.nn.matvec_cuda import WARPS, float_grid, float_matvec_name, render_float_matvec
  rng = np.random.default_rng(21)
  m, k, n, eps = 3, 264, 14, 1e-5
  weight = rng.standard_normal((n, k), dtype=np.float32)
  bits = weight.astype(np.float16).view(np.uint16) if dtype_name == "float16" else (weight.view(np.uint32) >> 16).astype(np.uint16)
  widened = bits.view(np.float16) if dtype_name == "float16" else (bits.astype(np.uint32) << 16).view(np.float32)
  weight64 = widened.astype(np.float64)
  x, norm, read = _glu_inputs(rng, m, k, prologue)
  out = np.full((m, n // 2), np.nan, np.float32)
  src = render_float_matvec(dtype_name, k, m, n, prologue, eps=eps, glu=True)
  emulate(tmp_path, src, float_matvec_name(dtype_name, k, m, n, prologue, glu=True), [out, x, bits] + ([norm] if prologue else []),
          float_grid(m, n), 32 * WARPS)
  _check_glu(out, read @ weight64.T, np.abs(read) @ np.abs(weight64.T))
  _nvrtc_compiles(src)


@pytest.mark.parametrize("ggml_type", ["Q4_0", "Q4_1", "Q8_0"])
def test_quant_matvec_glu_on_the_cpu(ggml_type, tmp_path):
  """The quantized matvec on GGUF blocks (SmolLM2's gate/up projection) with the norm and the glu epilogue: 14 rows
  of W, 10 rows of x (two groups)."""
  gguf = pytest.importorskip("gguf")
  from teenygrad.nn.quant_cuda import WARPS, _groups, matvec_name, render_matvec
  rng = np.random.default_rng(22)
  m, k, n, eps = 10, 320, 14, 1e-5
  blocks = gguf.quants.quantize(rng.standard_normal((n, k), dtype=np.float32), gguf.GGMLQuantizationType[ggml_type])
  weight64 = gguf.quants.dequantize(blocks, gguf.GGMLQuantizationType[ggml_type]).astype(np.float64)
  x, norm, read = _glu_inputs(rng, m, k, "norm")
  out = np.full((m, n // 2), np.nan, np.float32)
  src = render_matvec(ggml_type, k, m, prologue="norm", eps=eps, glu=True)
  emulate(tmp_path, src, matvec_name(ggml_type, k, m, False, "norm", glu=True), [out, x, np.ascontiguousarray(blocks), norm, n],
          -(-(n // 2) // WARPS) * _groups(m), 32 * WARPS)
  _check_glu(out, read @ weight64.T, np.abs(read) @ np.abs(weight64.T))
  _nvrtc_compiles(src)


@pytest.mark.parametrize("ggml_type", ["Q4_0", "Q4_1"])
@pytest.mark.parametrize("rows", [1, 2])
def test_packed_and_dp4a_matvec_glu_on_the_cpu(ggml_type, rows, tmp_path, monkeypatch):
  """The repacked matvec (float x) and the int8-x one with the norm and the glu epilogue: rows per warp of 1 (made 2,
  a pair) and 2, 14 rows of W, 3 rows of x, two steps a row in two chunks of x; the int8-x kernel's first batch of
  loads issued before the grid wait (the early path)."""
  gguf = pytest.importorskip("gguf")
  from teenygrad.helpers import config
  from teenygrad.nn import quant_cuda_dp4a, quant_cuda_packed
  from teenygrad.nn.matvec_cuda import WARPS
  from teenygrad.nn.quant_cuda_packed import packed_grid, packed_name, render_packed_matvec, repack
  monkeypatch.setattr(quant_cuda_packed, "rows_per_warp", lambda m, n: rows)
  monkeypatch.setattr(quant_cuda_dp4a, "ROWS_PER_WARP", rows)
  monkeypatch.setattr(quant_cuda_dp4a, "WARPS", 2)
  monkeypatch.setattr(quant_cuda_dp4a, "CHUNK_STEPS", 1)
  monkeypatch.setattr(quant_cuda_dp4a, "LOADS_AHEAD", 1)
  monkeypatch.setattr(config, "matvec_prefetch", 0)   # every weight "large": the early loads are rendered
  rng = np.random.default_rng(23)
  m, k, n, eps = 3, 2048, 14, 1e-5
  blocks = gguf.quants.quantize(rng.standard_normal((n, k), dtype=np.float32), gguf.GGMLQuantizationType[ggml_type])
  weight64 = gguf.quants.dequantize(blocks, gguf.GGMLQuantizationType[ggml_type]).astype(np.float64)
  packed = repack(ggml_type, blocks, n, k)
  x, norm, read = _glu_inputs(rng, m, k, "norm")
  out = np.full((m, n // 2), np.nan, np.float32)
  src = render_packed_matvec(ggml_type, k, m, n, "norm", eps=eps, glu=True)
  emulate(tmp_path, src, packed_name(ggml_type, k, m, n, "norm", glu=True), [out, x, packed, norm], packed_grid(m, n, glu=True), 32 * WARPS)
  _check_glu(out, read @ weight64.T, np.abs(read) @ np.abs(weight64.T))
  _nvrtc_compiles(src)
  out = np.full((m, n // 2), np.nan, np.float32)
  src = quant_cuda_dp4a.render_dp4a_matvec(ggml_type, k, m, n, "norm", eps=eps, glu=True)
  assert src.index("TG_GRID_WAIT();") > src.index("quants[")   # the first loads come before the wait
  emulate(tmp_path, src, quant_cuda_dp4a.dp4a_name(ggml_type, k, m, n, "norm", glu=True), [out, x, packed, norm],
          quant_cuda_dp4a.dp4a_grid(m, n, k, glu=True), 32 * 2)
  row_scale = 1.0 / np.sqrt((x.astype(np.float64) ** 2).mean(-1, keepdims=True) + eps)
  xq = quantize_q8_1(x * norm) * row_scale
  _check_glu(out, xq @ weight64.T, np.abs(xq) @ np.abs(weight64.T))
  _nvrtc_compiles(src)


@pytest.mark.parametrize("n", [49152, 1003])
def test_argmax_rows_on_the_cpu(n, tmp_path):
  """Greedy decoding's row argmax (llm/argmax_cuda.py) against numpy's: random rows, a row with its maximum tied at
  three places (the first wins), a row with NaNs (the first NaN wins, as torch's argmax), a row of -inf (index 0),
  a row whose maximum is the last element; n a multiple of 4 (float4 loads) and not."""
  from teenygrad.llm.argmax_cuda import THREADS, argmax_name, render_argmax
  rng = np.random.default_rng(0)
  rows = rng.standard_normal((5, n)).astype(np.float32)
  rows[1, [7, n // 2, n - 1]] = 9.0
  rows[2, [n - 5, 11]] = np.nan
  rows[3] = -np.inf
  rows[4, n - 1] = 50.0
  out = np.full(5, -1, np.int32)
  src = render_argmax(n)
  emulate(tmp_path, src, argmax_name(n), [out, rows], 5, THREADS)
  want = [int(np.argmax(rows[0])), 7, 11, 0, n - 1]
  assert out.tolist() == want
  _nvrtc_compiles(src)
