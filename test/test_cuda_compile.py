"""CUDA without a GPU: the backend imports, a missing driver is a clear error, and every kind of kernel the CUDA
renderer writes (elementwise, reductions, half/bfloat16, tensor-core and SIMT GEMMs) compiles with NVRTC to a cubin
for sm_90, so render errors show up in CI rather than on the GPU machine."""
from __future__ import annotations

import importlib
import os

import numpy as np
import pytest

from teenygrad import Tensor, dtypes
from teenygrad.codegen.lower import NeedsRealize, lower
from teenygrad.schedule import create_schedule


def _nvrtc_or_skip():
  from teenygrad.device import cuda_bindings
  try: cuda_bindings.libnvrtc()
  except RuntimeError as e: pytest.skip(f"NVRTC not installed (pip install '.[cuda]'): {e}")
  return cuda_bindings


def _has_driver() -> bool:
  from teenygrad.device import cuda_bindings
  try: cuda_bindings.libcuda()
  except RuntimeError: return False
  return True


def render_cuda(tensor: Tensor) -> list[tuple[str, str, dict]]:
  """(name, CUDA source, launch sizes) of every kernel that realizing `tensor` would run, without a GPU."""
  from teenygrad.renderer.cuda import CUDARenderer
  from teenygrad.renderer.cuda_gemm import cuda_gemm_kernel
  renderer = CUDARenderer("sm_90")
  outputs = [tensor.lazydata]
  for _ in range(100):
    items = create_schedule(outputs)
    roots = {item.root.id for item in items}
    def is_boundary(base): return base.realized is not None or base.id in roots
    try:
      kernels = []
      for item in items:
        if item.kind != "kernel": continue
        gemm = cuda_gemm_kernel(item.root, item.root, is_boundary, renderer, 227 * 1024)
        if gemm is not None: kernels.append((gemm[0], gemm[2], gemm[3])); continue
        program = lower(item.root, item.root, is_boundary, renderer)
        dims = renderer.launch_dims(program)
        kernels.append((program.name, renderer.render_kernel(program), {"block": (dims.local, 1, 1)}))
      return kernels
    except NeedsRealize as e:
      e.lb.forced = True
  raise AssertionError("the schedule did not settle")


def test_import_without_driver():
  module = importlib.import_module("teenygrad.device.cuda")
  assert hasattr(module, "open_device")
  if _has_driver(): pytest.skip("this machine has the NVIDIA driver")
  from teenygrad.device import Device
  with pytest.raises(RuntimeError, match="libcuda"):
    Device["CUDA"]


def _inputs(seed: int = 0):
  rng = np.random.default_rng(seed)
  def realized(shape, dtype=np.float32): return Tensor(rng.standard_normal(shape).astype(dtype)).realize()
  return rng, realized


def _cases() -> dict:
  rng, realized = _inputs()
  x = realized((64, 300))
  h16 = realized((64, 64), np.float16)
  b16 = realized((64, 64)).cast(dtypes.bfloat16).realize()
  return {
    "elementwise": ((x * 2 + 1).exp().sigmoid(), "thread"),
    "softmax": (x.softmax(-1), "block"),
    "layernorm": (x.layer_norm((300,)), "block"),
    "full_sum": (x.sum(), "block"),
    "column_sum": (x.sum(0), None),
    "argmax": (x.argmax(-1), None),
    "int_math": ((Tensor(np.arange(-12, 12, dtype=np.int64)) // 5) % 3, "thread"),
    "bool_any": ((x > 1).any(-1), None),
    "half_math": ((h16 + 1).sigmoid() * h16, "thread"),
    "bf16_math": (b16.exp() + b16, "thread"),
    "half_sum": (h16.sum(-1), None),
    "bitcast": (x.bitcast(dtypes.int32) if hasattr(x, "bitcast") else x + 0, "thread"),
    "float64": (realized((8, 8), np.float64).exp().sum(-1), None),
    "gemm_fp32": (realized((64, 256)) @ realized((256, 512)), "gemm_float32"),
    "gemm_fp16": (realized((256, 512), np.float16) @ realized((512, 128), np.float16), "wgmma.mma_async.sync.aligned.m64n128k16.f32.f16"),
    "gemm_fp16_wide": (realized((256, 512), np.float16) @ realized((512, 256), np.float16), "m64n256k16.f32.f16.f16"),
    "gemm_bf16_mma_sync": (realized((96, 512), np.float16).cast(dtypes.bfloat16).realize() @ realized((512, 128)).cast(dtypes.bfloat16).realize(),
                           "mma.sync.aligned.m16n8k16.row.col.f32.bf16"),
    "gemm_bf16_linear": (b16.reshape(64, 64).linear(realized((128, 64)).cast(dtypes.bfloat16).realize()).relu(), ".bf16.bf16"),
    "gemm_fp16_transposed": (realized((512, 256), np.float16).T @ realized((512, 128), np.float16), "A KM"),
    "gemm_fp16_odd": (realized((100, 77), np.float16) @ realized((77, 130), np.float16), "A gMK"),
    "gemm_batched_bias": (realized((3, 64, 96)) @ realized((3, 96, 80)) + realized((80,)), "gemm_float32_3"),
  }


CASES = _cases()


@pytest.mark.parametrize("name", sorted(CASES))
def test_kernels_compile_for_sm90(name):
  _nvrtc_or_skip()
  tensor, expect = CASES[name]
  kernels = render_cuda(tensor.contiguous())
  assert kernels, "nothing to compile"
  sources = "\n".join(src for _, src, _ in kernels)
  if expect == "block":
    # a work-group per output: warp sums, and a barrier to combine warps where the group is wider than one
    assert "tg_warp_" in sources
    assert all("__syncthreads();" in src for _, src, launch in kernels if launch["block"][0] > 32)
  elif expect == "thread": assert "__syncthreads" not in sources and "blockIdx.x * 256 + lane" in sources
  elif expect is not None: assert expect in sources, f"expected {expect!r} in the rendered kernels"
  from teenygrad.device.cuda import NVRTCCompiler
  compiler = NVRTCCompiler("sm_90")   # picks sm_90a for wgmma kernels
  for kernel_name, src, launch in kernels:
    cubin = compiler.compile(src)
    assert cubin[:4] == b"\x7fELF", f"{kernel_name}: NVRTC did not give a cubin"
    assert launch["block"][0] % 32 == 0


def _ptx(src: str) -> str:
  from teenygrad.device import cuda_bindings
  return cuda_bindings.nvrtc_compile(src, "k", ["--gpu-architecture=compute_90", "-std=c++17", "--restrict"], output="PTX").decode()


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_large_elementwise_uses_16_byte_loads_and_stores(dtype):
  """A large elementwise kernel gives each thread 16 bytes of its widest buffer; NVRTC must turn them into vector
  loads and stores (inline asm in a half conversion, for one, would stop it)."""
  _nvrtc_or_skip()
  rng = np.random.default_rng(0)
  x = Tensor(rng.standard_normal(1 << 18).astype(dtype)).realize()
  y = Tensor(rng.standard_normal(1 << 18).astype(dtype)).realize()
  (_, src, _), = render_cuda((x * 1.5 + y).relu() - x.sigmoid() * y)
  ptx = _ptx(src)
  # 4 floats, or 8 halves moved as 4 x 32 bits
  assert "ld.global.v4." in ptx and "st.global.v4." in ptx, ptx
  # a size that does not split into 16-byte pieces keeps one element per thread
  (_, odd, _), = render_cuda(Tensor(rng.standard_normal(100003).astype(np.float32)).realize() * 2)
  assert "gbase" not in odd and "v4" not in _ptx(odd)


def test_compile_error_carries_the_log():
  bindings = _nvrtc_or_skip()
  with pytest.raises(RuntimeError, match="undefined_thing"):
    bindings.nvrtc_compile('extern "C" __global__ void k(float* a) { a[0] = undefined_thing; }', "k", ["--gpu-architecture=sm_90"])


def test_cache_key_names_nvrtc_and_arch():
  _nvrtc_or_skip()
  from teenygrad.device.cuda import NVRTCCompiler
  a, b = NVRTCCompiler("sm_90"), NVRTCCompiler("sm_80")
  assert "nvrtc" in a.cache_tag and "sm_90" in a.cache_tag
  assert a.cache_key("x") != b.cache_key("x")


@pytest.mark.skipif(os.environ.get("DEV", "CPU").upper() == "CUDA", reason="the CPU-only check")
def test_cpu_gemm_hook_still_taken():
  from teenygrad.engine.realize import capture_kernels
  _, realized = _inputs(1)
  a, b = realized((64, 256)), realized((256, 512))
  with capture_kernels() as launched: (a @ b).numpy()
  assert [ei.kernel.name for ei in launched] == ["gemm_1_64_512_256"]


@pytest.mark.parametrize("config", ["wgmma", "wgmma256", "wgmma+overlap", "wgmma256+overlap", "wgmma-tma", "wgmma-tma128"])
@pytest.mark.parametrize("layout", ["linear", "nn"])
def test_wgmma_configs_compile_for_sm90a(monkeypatch, config, layout):
  bindings = _nvrtc_or_skip()
  import teenygrad.renderer.cuda_gemm as cuda_gemm
  monkeypatch.setattr(cuda_gemm, "TC_DEFAULT", config)
  _, realized = _inputs(2)
  a = realized((256, 128), np.float16)
  product = a.linear(realized((256, 128), np.float16)) if layout == "linear" else a @ realized((128, 256), np.float16)
  (name, src, _), = render_cuda(product.contiguous())
  width = 128 if config in ("wgmma", "wgmma+overlap", "wgmma-ws128", "wgmma-tma128") else 256
  assert f"wgmma.mma_async.sync.aligned.m64n{width}k16.f32.f16.f16" in src
  assert ("wait_group.sync.aligned 1" in src) == config.endswith("+overlap")
  assert ("setmaxnreg" in src) == ("-tma" in config)
  assert ("cp.async.bulk.tensor" in src) == ("-tma" in config)
  assert bindings.nvrtc_compile(src, name, ["--gpu-architecture=sm_90a", "-std=c++17"])[:4] == b"\x7fELF"


def test_serve_pool_kernels_compile_for_sm90():
  """The paged KV cache's write and gather (serve/paged.py), written once for CUDA and OpenCL, compile as CUDA."""
  bindings = _nvrtc_or_skip()
  from teenygrad.serve import paged
  sizes = {"COUNT": 4, "ROW": 576, "SLOTS": 1024, "BATCH": 8, "WIDTH": 64}
  for name, body in paged._POOL_SOURCES.items():
    defines = {**paged._POOL_MACROS["CUDA"], **{k: str(v) for k, v in sizes.items()}}
    src = "".join(f"#define {k} {v}\n" for k, v in defines.items()) + body
    assert bindings.nvrtc_compile(src, name, ["--gpu-architecture=sm_90", "-std=c++17"])[:4] == b"\x7fELF", name


def test_paged_attention_compiles_for_sm90():
  """The serving engine's decode attention over the paged pool (serve/paged_attention.py) compiles as CUDA, with its
  float4 key and value loads."""
  bindings = _nvrtc_or_skip()
  from teenygrad.serve import paged_attention
  sizes = {"BATCH": 32, "HEADS": 9, "KV_HEADS": 3, "HEAD_DIM": 64, "WIDTH": 1024, "SLOTS": 16384, "SCALE": "0.125f"}
  src = paged_attention._source("CUDA", paged_attention._CUDA_ATTENTION, sizes)
  assert bindings.nvrtc_compile(src, "tg_paged_attention", ["--gpu-architecture=sm_90", "-std=c++17"])[:4] == b"\x7fELF"
  assert "ld.global.v4.f32" in _ptx(src) or "ld.global.nc.v4.f32" in _ptx(src)


@pytest.mark.parametrize("ggml_type", ["Q4_0", "Q4_1", "Q8_0"])
@pytest.mark.parametrize("k,m", [(576, 1), (96, 3), (1536, 8), (576, 32)])
def test_quant_matvec_compiles_for_sm90(ggml_type, k, m):
  _nvrtc_or_skip()
  from teenygrad.device.cuda import NVRTCCompiler
  from teenygrad.nn.quant_cuda import CUDA_QUANT_TYPES, matvec_name, render_matvec
  assert ggml_type in CUDA_QUANT_TYPES
  for residual in (False, True):
    src = render_matvec(ggml_type, k, m, residual)
    assert f"void __launch_bounds__(128) {matvec_name(ggml_type, k, m, residual)}(" in src
    assert NVRTCCompiler("sm_90").compile(src)[:4] == b"\x7fELF"


# The matvec's C++ run on the CPU, one thread of the grid after another: what it can't show without a GPU is only
# the warp shuffle, so tg_warp_sum records each lane's partial sum instead and the harness adds them up.
_EMULATION = r"""
#include <cstring>
#include <cmath>
#define __global__
#define __device__
#define __forceinline__ inline
#define __launch_bounds__(n)
#define __restrict__
struct float4 { float x, y, z, w; };
struct Index { unsigned int x; };
static Index threadIdx, blockIdx, gridDim;
#define TG_GRID_WAIT()                                      /* one kernel at a time: nothing to wait for */
static void tg_prefetch_l2(const void*, unsigned int) {}   /* no L2 to warm */
static unsigned long long min(unsigned long long a, unsigned long long b) { return a < b ? a : b; }
static float* partials;
static long long partial_rows;
static float tg_h2f(unsigned short h) {   /* IEEE half to float, subnormals included */
  unsigned int sign = (h >> 15) << 31, exp = (h >> 10) & 31, mant = h & 1023, bits;
  if (exp == 31) bits = sign | 0x7f800000u | (mant << 13);
  else if (exp) bits = sign | ((exp + 112) << 23) | (mant << 13);
  else { float f = (float)mant * (1.0f / 16777216.0f); memcpy(&bits, &f, 4); bits |= sign; }
  float f; memcpy(&f, &bits, 4); return f;
}
/* expanded where the kernel sums row m_out of x for its W row `row`: both names are in scope there */
#define tg_warp_sum(v) (partials[((long long)m_out * partial_rows + row) * 32 + (threadIdx.x & 31)] = (v), 0.0f)
static int min(int a, int b) { return a < b ? a : b; }
"""


@pytest.mark.parametrize("m", [2, 13])
@pytest.mark.parametrize("ggml_type", ["Q4_0", "Q4_1", "Q8_0"])
def test_quant_matvec_lanes_on_the_cpu(ggml_type, m, tmp_path):
  """Every weight of every row is dequantized once by exactly one lane and met with its own x (2 rows of x, or 13:
  two groups of rows, the second ragged; a row count that leaves the last thread block ragged, a residual), against
  gguf-py's dequantize."""
  gguf = pytest.importorskip("gguf")
  import ctypes
  import shutil
  import subprocess
  from teenygrad.nn.quant_cuda import WARPS, _groups, matvec_name, render_matvec
  if shutil.which("g++") is None: pytest.skip("no g++")
  n, k = 13, 320
  src = render_matvec(ggml_type, k, m, residual=True)
  kernel = src[src.index("#define K_IN"):]
  name = matvec_name(ggml_type, k, m, True)
  driver = f"""
extern "C" void run(float* out, const float* x, const unsigned char* w, const float* residual, long long n, float* lanes) {{
  partials = lanes; partial_rows = n;
  gridDim.x = (n + {WARPS - 1}) / {WARPS} * {_groups(m)};
  for (blockIdx.x = 0; blockIdx.x < (n + {WARPS - 1}) / {WARPS} * {_groups(m)}; blockIdx.x++)
    for (threadIdx.x = 0; threadIdx.x < {32 * WARPS}; threadIdx.x++) {name}(out, x, w, residual, n);
}}
"""
  (tmp_path / "matvec.cpp").write_text(_EMULATION + kernel + driver)
  subprocess.run(["g++", "-O1", "-shared", "-fPIC", "-o", str(tmp_path / "matvec.so"), str(tmp_path / "matvec.cpp")], check=True,
                 capture_output=True)
  lib = ctypes.CDLL(str(tmp_path / "matvec.so"))
  rng = np.random.default_rng(4)
  weights = rng.standard_normal((n, k), dtype=np.float32)
  blocks = gguf.quants.quantize(weights, gguf.GGMLQuantizationType[ggml_type])
  want = gguf.quants.dequantize(blocks, gguf.GGMLQuantizationType[ggml_type]).astype(np.float64)
  x, residual = rng.standard_normal((m, k), dtype=np.float32), rng.standard_normal((m, n), dtype=np.float32)
  out = np.zeros((m, n), np.float32)
  lanes = np.zeros((m, n, 32), np.float32)
  pointer = lambda a: a.ctypes.data_as(ctypes.c_void_p)   # noqa: E731
  lib.run(pointer(out), pointer(x), pointer(np.ascontiguousarray(blocks)), pointer(residual), ctypes.c_longlong(n), pointer(lanes))
  np.testing.assert_array_equal(out, residual)   # lane 0 stored its "total" (0 here: the sum went to `lanes`) + residual
  scale = np.abs(x).astype(np.float64) @ np.abs(want.T)
  assert np.max(np.abs(lanes.sum(-1) - x.astype(np.float64) @ want.T) / scale) < 1e-6


@pytest.mark.parametrize("ggml_type", ["Q4_0", "Q4_1", "Q8_0"])
def test_quant_rows_on_the_cpu(ggml_type, tmp_path):
  """The embedding gather's C++ run thread by thread on the CPU: bit-identical with gguf-py, zero rows and err for
  ids out of range. The float-table gathers compile."""
  gguf = pytest.importorskip("gguf")
  import ctypes
  import shutil
  import subprocess
  from teenygrad.nn.quant_cuda import FLOAT_ROW_DTYPES, ROWS_THREADS, render_float_rows, render_rows, rows_name
  if shutil.which("g++") is None: pytest.skip("no g++")
  n, k = 11, 96
  src = render_rows(ggml_type, k)
  emulation = _EMULATION + "static float __fmul_rn(float a, float b) { return a * b; }\nstatic float __fadd_rn(float a, float b) { return a + b; }\n"
  driver = f"""
extern "C" void run(float* out, const int* ids, const unsigned char* w, int* err, long long count, long long n) {{
  for (blockIdx.x = 0; blockIdx.x < (count * {k} + {ROWS_THREADS - 1}) / {ROWS_THREADS}; blockIdx.x++)
    for (threadIdx.x = 0; threadIdx.x < {ROWS_THREADS}; threadIdx.x++) {rows_name(ggml_type, k)}(out, ids, w, err, count, n);
}}
"""
  from teenygrad.renderer.cuda import CUDA_PREAMBLE
  assert src.startswith(CUDA_PREAMBLE)
  (tmp_path / "rows.cpp").write_text(emulation + src[len(CUDA_PREAMBLE):] + driver)
  subprocess.run(["g++", "-O1", "-ffp-contract=off", "-shared", "-fPIC", "-o", str(tmp_path / "rows.so"), str(tmp_path / "rows.cpp")],
                 check=True, capture_output=True)
  lib = ctypes.CDLL(str(tmp_path / "rows.so"))
  blocks = gguf.quants.quantize(np.random.default_rng(5).standard_normal((n, k), dtype=np.float32), gguf.GGMLQuantizationType[ggml_type])
  want = gguf.quants.dequantize(blocks, gguf.GGMLQuantizationType[ggml_type])
  ids = np.array([3, 0, n - 1, n, -1, 7], dtype=np.int32)
  out, err = np.full((len(ids), k), np.nan, np.float32), np.zeros(1, np.int32)
  pointer = lambda a: a.ctypes.data_as(ctypes.c_void_p)   # noqa: E731
  lib.run(pointer(out), pointer(ids), pointer(np.ascontiguousarray(blocks)), pointer(err), ctypes.c_longlong(len(ids)), ctypes.c_longlong(n))
  np.testing.assert_array_equal(out[[0, 1, 2, 5]].view(np.uint32), want[ids[[0, 1, 2, 5]]].view(np.uint32))
  assert not out[3:5].any() and err[0] == 1
  _nvrtc_or_skip()
  from teenygrad.device.cuda import NVRTCCompiler
  compiler = NVRTCCompiler("sm_90")
  assert compiler.compile(src)[:4] == b"\x7fELF"
  for dtype_name in FLOAT_ROW_DTYPES: assert compiler.compile(render_float_rows(dtype_name, k))[:4] == b"\x7fELF"


# Decode attention's C++ on the CPU: a warp is 32 threads, its shuffles an exchange through memory between barriers
_WARP_EMULATION = r"""
#include <algorithm>
#include <barrier>
#include <cmath>
#include <thread>
#include <vector>
#define __global__
#define __device__
#define __forceinline__ inline
#define __launch_bounds__(n)
#define __restrict__
using std::min;
struct float4 { float x, y, z, w; };
struct Index { unsigned int x; };
static thread_local Index threadIdx;
static Index blockIdx;
static std::barrier<>* warp_barrier;
static float exchange[32];
template <typename F> static float combine(float v, F f) {
  exchange[threadIdx.x] = v;
  warp_barrier->arrive_and_wait();
  float r = exchange[0];
  for (int i = 1; i < 32; i++) r = f(r, exchange[i]);
  warp_barrier->arrive_and_wait();
  return r;
}
static float tg_warp_sum(float v) { return combine(v, [](float a, float b) { return a + b; }); }
static float tg_warp_max(float v) { return combine(v, [](float a, float b) { return std::fmax(a, b); }); }
"""


@pytest.mark.parametrize("masked", [False, True], ids=["plain", "mask"])
def test_decode_attention_on_the_cpu(masked, tmp_path):
  """The fused decode attention run on the CPU with a warp of real threads, against numpy's softmax attention:
  grouped-query heads, two sequences, a position that leaves lanes without keys, an additive mask."""
  import ctypes
  import shutil
  import subprocess
  from teenygrad.llm.attention_cuda import attention_name, render_attention
  from teenygrad.renderer.cuda import CUDA_PREAMBLE
  if shutil.which("g++") is None: pytest.skip("no g++")
  B, H, KVH, L, D, start = 2, 6, 2, 80, 16, 44
  src = render_attention(D, H, KVH, L, masked)
  name = attention_name(D, H, KVH, L, masked)
  mask_arg = ", mask" if masked else ""
  driver = f"""
extern "C" void run(float* out, const float* q, const float* keys, const float* values, const int* start, const float* mask) {{
  std::barrier<> warp(32);
  warp_barrier = &warp;
  for (blockIdx.x = 0; blockIdx.x < {B * H}; blockIdx.x++) {{
    std::vector<std::thread> lanes;
    for (unsigned int t = 0; t < 32; t++) lanes.emplace_back([=] {{ threadIdx.x = t; {name}(out, q, keys, values, start{mask_arg}); }});
    for (auto& lane : lanes) lane.join();
  }}
}}
"""
  (tmp_path / "attention.cpp").write_text(_WARP_EMULATION + src[len(CUDA_PREAMBLE):] + driver)
  subprocess.run(["g++", "-std=c++20", "-O1", "-shared", "-fPIC", "-pthread", "-o", str(tmp_path / "attention.so"),
                  str(tmp_path / "attention.cpp")], check=True, capture_output=True)
  lib = ctypes.CDLL(str(tmp_path / "attention.so"))
  rng = np.random.default_rng(8)
  q = rng.standard_normal((B, H, 1, D), dtype=np.float32)
  keys, values = rng.standard_normal((B, KVH, L, D), dtype=np.float32), rng.standard_normal((B, KVH, L, D), dtype=np.float32)
  mask = np.where(rng.random((B, L)) < 0.3, -1e9, 0.0).astype(np.float32) if masked else np.zeros((B, L), np.float32)
  out = np.full((B, H, 1, D), np.nan, np.float32)
  pointer = lambda a: a.ctypes.data_as(ctypes.c_void_p)   # noqa: E731
  lib.run(pointer(out), pointer(q), pointer(keys), pointer(values), pointer(np.array([start], np.int32)), pointer(mask))
  group = H // KVH
  k64, v64 = np.repeat(keys, group, axis=1)[:, :, :start + 1].astype(np.float64), np.repeat(values, group, axis=1)[:, :, :start + 1]
  scores = (q.astype(np.float64) @ k64.transpose(0, 1, 3, 2)) / np.sqrt(D) + mask[:, None, None, :start + 1]
  weights = np.exp(scores - scores.max(-1, keepdims=True))
  want = (weights / weights.sum(-1, keepdims=True)) @ v64
  np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-5)
  _nvrtc_or_skip()
  from teenygrad.device.cuda import NVRTCCompiler
  assert NVRTCCompiler("sm_90").compile(src)[:4] == b"\x7fELF"


def test_kv_cache_write_compiles_for_sm90():
  """CUDA's one-row KV-cache write (llm/custom_ops.py), which reads the position from its buffer."""
  bindings = _nvrtc_or_skip()
  from teenygrad.llm.custom_ops import CUDA_CACHE_WRITE_SRC
  assert bindings.nvrtc_compile(CUDA_CACHE_WRITE_SRC, "tg_cache_write", ["--gpu-architecture=sm_90", "-std=c++17"])[:4] == b"\x7fELF"


@pytest.mark.parametrize("config", ["tf32x3", "tf32x3-k32", "tf32x3-k16"])
@pytest.mark.parametrize("case", ["nn", "linear", "transposed_a", "ragged", "batched_bias"])
def test_fp32_gemm_takes_3xtf32_and_compiles(monkeypatch, config, case):
  """fp32 matmuls render as 3xTF32 mma.sync for every layout with a contiguous axis (the ragged case zero-fills
  past the edges and checks its stores), and the SIMT kernel where an operand has none."""
  _nvrtc_or_skip()
  from teenygrad.renderer import cuda_tf32
  monkeypatch.setattr(cuda_tf32, "FP32_DEFAULT", config)
  _, realized = _inputs(2)
  product = {"nn": lambda: realized((256, 128)) @ realized((128, 384)),
             "linear": lambda: realized((256, 128)).linear(realized((384, 128))),
             "transposed_a": lambda: realized((128, 256)).T @ realized((128, 384)),
             "ragged": lambda: realized((100, 76)) @ realized((76, 132)),
             "batched_bias": lambda: realized((3, 64, 96)) @ realized((3, 96, 80)) + realized((80,))}[case]()
  (name, src, launch), = render_cuda(product.contiguous())
  assert "mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32" in src and "cvt.rna.tf32.f32" in src
  assert ("if (true)" in src) == (case not in ("ragged", "batched_bias"))   # stores checked only past the edges
  from teenygrad.device.cuda import NVRTCCompiler
  assert NVRTCCompiler("sm_90").compile(src)[:4] == b"\x7fELF", name
  assert launch["shared"] <= 227 * 1024


def test_fp32_gemm_without_a_contiguous_axis_stays_simt():
  _nvrtc_or_skip()
  _, realized = _inputs(2)
  a = realized((64, 77))   # K = 77: no 16-byte row
  (_, src, _), = render_cuda((a @ realized((77, 96))).contiguous())
  assert "fp32 SIMT" in src and "tf32" not in src


def test_kernels_open_with_the_grid_dependency_wait_on_sm90():
  """Every kernel the sm_90 compiler builds waits for the grid before it first (so a graph may chain kernels by
  programmatic dependent launch); an sm_80 build has no such instruction."""
  bindings = _nvrtc_or_skip()
  from teenygrad.device.cuda import NVRTCCompiler, with_grid_dependency
  src = ('extern "C" __global__ void __launch_bounds__(32) first(float* a) { a[threadIdx.x] += 1.0f; }\n'
         'extern "C" __global__ void second(float* a, long long n) { if (threadIdx.x < n) a[threadIdx.x] *= 2.0f; }\n')
  marked = with_grid_dependency(src)
  assert marked.count("griddepcontrol.wait") == 2 and marked.index("griddepcontrol.wait") < marked.index("a[threadIdx.x] += 1.0f")
  ptx = bindings.nvrtc_compile(marked, "k", ["--gpu-architecture=compute_90", "-std=c++17"], output="PTX").decode()
  assert ptx.count("griddepcontrol.wait") == 2 and ptx.count("griddepcontrol.launch_dependents") == 2
  assert NVRTCCompiler("sm_90").grid_dependency and not NVRTCCompiler("sm_80").grid_dependency
  assert NVRTCCompiler("sm_90").compile(src)[:4] == b"\x7fELF"


def test_every_kernel_source_waits_for_the_grid_before_it():
  """Each kind of kernel source teenygrad builds for CUDA (rendered elementwise, reduce and GEMM kernels, which open
  with the preamble, and the hand-written decode and serving kernels) ends up with a grid-dependency wait in every
  kernel entry: one that has none would, under a programmatic graph edge, read its input while the kernel writing it
  still runs (the serving engine's 64-row step gave wrong tokens on an H200 that way, 2026-12-02)."""
  bindings = _nvrtc_or_skip()
  from teenygrad.device.cuda import with_grid_dependency
  from teenygrad.llm.attention_cuda import render_attention, render_rope_attention
  from teenygrad.nn.matvec_cuda import render_float_matvec
  from teenygrad.nn.quant_cuda import render_float_rows, render_matvec, render_rows
  from teenygrad.serve.paged_attention import _CUDA_ATTENTION, _source
  _, realized = _inputs(5)
  x = realized((64, 300))
  sources = {name: src for t in ((x * 2 + 1).exp(), x.sum(1), x @ realized((300, 64))) for name, src, _ in render_cuda(t.contiguous())}
  sources |= {"qmatvec": render_matvec("Q4_1", 576, 8, True, "norm", 1e-5), "float matvec": render_float_matvec("float16", 576, 1, 64),
              "qrows": render_rows("Q8_0", 576), "rows": render_float_rows("float32", 576), "attention": render_attention(64, 4, 2, 64, False),
              "rope attention": render_rope_attention(64, 9, 3, 2048, 2048, False, True),
              "paged attention": _source("CUDA", _CUDA_ATTENTION, {"BATCH": 4, "HEADS": 9, "KV_HEADS": 3, "HEAD_DIM": 64, "WIDTH": 64,
                                                                   "SLOTS": 1024, "SCALE": "0.125f"})}
  for name, src in sources.items():
    ptx = bindings.nvrtc_compile(with_grid_dependency(src), "k", ["--gpu-architecture=compute_90", "-std=c++17"], output="PTX").decode()
    entries = ptx.count(".entry ")
    assert entries and ptx.count("griddepcontrol.wait") >= entries, name
