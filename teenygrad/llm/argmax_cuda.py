"""Greedy decoding's argmax on CUDA: each row's index of its largest logit, one block of THREADS threads per row.

    tg_argmax_rows_<N>(out, logits)        out (B,) int32, logits (B, N) float32

The generic reduce takes ~12 us inside a replayed decode graph for a 49152-wide vocabulary on an H200 (it sums over
one row with few threads); here every thread scans a strided share of the row with independent float4 loads, then
the block merges through warp shuffles and shared memory. Ties go to the first index and NaN counts as the largest
value (its first index), as in torch's argmax and the primitive path (Tensor.argmax) this replaces.
"""
from __future__ import annotations

from teenygrad.device import Buffer, Device
from teenygrad.renderer.cuda import CUDA_PREAMBLE

THREADS = 1024


def argmax_name(n: int) -> str: return f"tg_argmax_rows_{n}"


def render_argmax(n: int) -> str:
  """CUDA C of the row argmax over rows of n float32 logits."""
  assert n > 0
  vec = n % 4 == 0   # a row's float4s are aligned where n is a multiple of 4 (the buffer's start is)
  scan = f"""  const float4* row4 = (const float4*)row;
  for (int q = tid; q < {n // 4}; q += THREADS) {{
    const float4 v = row4[q];
    tg_take(v.x, 4 * q, best, index); tg_take(v.y, 4 * q + 1, best, index);
    tg_take(v.z, 4 * q + 2, best, index); tg_take(v.w, 4 * q + 3, best, index);
  }}""" if vec else f"""  for (int i = tid; i < {n}; i += THREADS) tg_take(row[i], i, best, index);"""
  return CUDA_PREAMBLE + f"""#define THREADS {THREADS}
/* whether (v, i) comes before (best, index) in argmax order: NaN first, then larger values, then smaller indices */
__device__ __forceinline__ bool tg_beats(float v, int i, float best, int index) {{
  if (v != v) return best == best || i < index;
  if (best != best) return false;
  return v > best || (v == best && i < index);
}}
__device__ __forceinline__ void tg_take(float v, int i, float& best, int& index) {{
  if (tg_beats(v, i, best, index)) {{ best = v; index = i; }}
}}
extern "C" __global__ void __launch_bounds__(THREADS) {argmax_name(n)}(int* __restrict__ out, const float* __restrict__ logits) {{
  TG_GRID_WAIT();
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const float* row = logits + (long long)blockIdx.x * {n};
  float best = -INFINITY;
  int index = 0x7fffffff;   /* no element yet: any element beats it (-inf at a smaller index, or larger) */
{scan}
  #pragma unroll
  for (int o = 16; o > 0; o >>= 1) tg_take(__shfl_xor_sync(0xffffffffu, best, o), __shfl_xor_sync(0xffffffffu, index, o), best, index);
  __shared__ float warp_best[THREADS / 32];
  __shared__ int warp_index[THREADS / 32];
  if (lane == 0) {{ warp_best[warp] = best; warp_index[warp] = index; }}
  __syncthreads();
  if (warp == 0) {{
    best = lane < THREADS / 32 ? warp_best[lane] : -INFINITY;
    index = lane < THREADS / 32 ? warp_index[lane] : 0x7fffffff;
    #pragma unroll
    for (int o = 16; o > 0; o >>= 1) tg_take(__shfl_xor_sync(0xffffffffu, best, o), __shfl_xor_sync(0xffffffffu, index, o), best, index);
    if (lane == 0) out[blockIdx.x] = index == 0x7fffffff ? 0 : index;
  }}
}}
"""


class CUDAArgmax:
  """Launches the row argmax for one (rows, n) shape (recorded: a JIT replay is the launch itself)."""
  def __init__(self, device: str):
    self.device = device
    self._programs: dict[tuple, object] = {}

  def __call__(self, out: Buffer, logits: Buffer, rows: int, n: int) -> None:
    from teenygrad.engine.realize import CompiledKernel, ExecItem, launch
    key = (rows, n)
    if key not in self._programs:
      backend = Device[self.device]
      binary = backend.compiler.compile_cached(render_argmax(n))
      self._programs[key] = backend.program(argmax_name(n), binary, {"block": (THREADS, 1, 1), "grid": (rows, 1, 1)})
    kernel = CompiledKernel("argmax_rows", self._programs[key], [], [], "", rows * n, False)
    launch(ExecItem(kernel, [out, logits], (), self.device))


_kernels: dict[str, CUDAArgmax] = {}


def cuda_argmax(device: str) -> CUDAArgmax:
  if device not in _kernels: _kernels[device] = CUDAArgmax(device)
  return _kernels[device]


__all__ = ["CUDAArgmax", "THREADS", "argmax_name", "cuda_argmax", "render_argmax"]
