"""Decode attention straight from the paged KV pool, and the pool write on the CPU: one kernel per layer and step.

    tg_paged_attention(out, q, keys, values, index, lengths)

A decode step (one new token per row) through primitives gathers every row's cache out of the pool into a tensor of
its own (two copies per layer) and then runs five kernels (scores, max, exp-sum, probabilities, weighted sum), with
the rotary embedding of q recomputed inside the scores kernel for every key. This kernel reads each key and value row
where it lies in the pool, through the row's gather index, and keeps an online softmax (a running max, sum and
weighted values, rescaled when the max grows: Milakov & Gimelshein 2018), so q is read once per (row, head).

  q (B, H, D) float32; keys/values pools (P, KVH, D) float32; index (B, WIDTH) int32 pool slots; lengths (B,) int32:
  row b sees its cache positions [0, lengths[b]) (a padding row's 0: it writes zeros). The lengths come from a device
  buffer, not a kernel argument, so a JIT capture serves every step unchanged: a CUDA graph replays with no node
  updated, and each row reads only its own positions, not the longest row's.

A slot outside the pool reads as zeros, as the primitive path's gather does. Grouped-query heads share their kv head
(h // (H / KVH)). CPU: C with OpenMP over (row, head); CUDA: one warp per (row, head), lanes over positions, merged
through warp shuffles. Other backends keep the primitive path (serve.paged.PagedStep.forward).
"""
from __future__ import annotations

import math

from teenygrad.dtype import dtypes
from teenygrad.ir.lazy import LazyBuffer
from teenygrad.llm.custom_ops import InferenceOp
from teenygrad.tensor import Tensor

_CPU_ATTENTION = r"""
#include <math.h>
void tg_paged_attention(float* restrict out, const float* restrict q, const float* restrict keys, const float* restrict values,
                        const int* restrict index, const int* restrict lengths) {
  long long work = 0;
  for (int b = 0; b < BATCH; b++) work += lengths[b];
  #pragma omp parallel for schedule(static) if (work * HEADS * HEAD_DIM > 262144)
  for (long long bh = 0; bh < BATCH * HEADS; bh++) {
    const long long b = bh / HEADS, kv = (bh % HEADS) / (HEADS / KV_HEADS);
    const float* query = q + bh * HEAD_DIM;
    const long long count = lengths[b] < WIDTH ? lengths[b] : WIDTH;
    float acc[HEAD_DIM] = {0}, best = -INFINITY, total = 0.0f;
    for (long long s = 0; s < count; s++) {
      const long long slot = index[b * WIDTH + s];
      const int inside = slot >= 0 && slot < SLOTS;
      const float* k = keys + (inside ? slot : 0) * KV_HEADS * HEAD_DIM + kv * HEAD_DIM;
      float dot = 0.0f;
      #pragma omp simd reduction(+:dot)
      for (int i = 0; i < HEAD_DIM; i++) dot += query[i] * k[i];
      const float score = (inside ? dot : 0.0f) * SCALE;
      const float grown = fmaxf(best, score);
      const float rescale = expf(best - grown), weight = expf(score - grown);   /* exp(-inf) = 0 on the first key */
      total = total * rescale + weight;
      const float* v = values + (inside ? slot : 0) * KV_HEADS * HEAD_DIM + kv * HEAD_DIM;
      const float w = inside ? weight : 0.0f;
      #pragma omp simd
      for (int i = 0; i < HEAD_DIM; i++) acc[i] = acc[i] * rescale + w * v[i];
      best = grown;
    }
    for (int i = 0; i < HEAD_DIM; i++) out[bh * HEAD_DIM + i] = total > 0.0f ? acc[i] / total : 0.0f;
  }
}
"""

_CUDA_ATTENTION = r"""
extern "C" __global__ void __launch_bounds__(32) tg_paged_attention(float* __restrict__ out, const float* __restrict__ q,
    const float* __restrict__ keys, const float* __restrict__ values, const int* __restrict__ index, const int* __restrict__ lengths) {
  const int lane = threadIdx.x;
  const long long bh = blockIdx.x, b = bh / HEADS, kv = (bh % HEADS) / (HEADS / KV_HEADS);
  const long long count = min(lengths[b], WIDTH);
  float query[HEAD_DIM], acc[HEAD_DIM];
  #pragma unroll
  for (int i = 0; i < HEAD_DIM; i++) { query[i] = q[bh * HEAD_DIM + i]; acc[i] = 0.0f; }
  float best = -INFINITY, total = 0.0f;
  for (long long s = lane; s < count; s += 32) {
    const long long slot = index[b * WIDTH + s];
    const bool inside = slot >= 0 && slot < SLOTS;
    const long long row = (inside ? slot : 0) * KV_HEADS * HEAD_DIM + kv * HEAD_DIM;
    const float score = (inside ? tg_dot_row4<HEAD_DIM>(query, (const float4*)(keys + row)) : 0.0f) * SCALE;
    tg_softmax_step<HEAD_DIM>(score, (const float4*)(values + row), inside ? 1.0f : 0.0f, acc, best, total);
  }
  /* merge the lanes' softmaxes, each rescaled to the warp's max (a lane without positions weighs nothing) */
  const float top = tg_warp_max(best);
  const float share = best == -INFINITY ? 0.0f : expf(best - top);
  const float sum = tg_warp_sum(total * share), norm = sum > 0.0f ? 1.0f / sum : 0.0f;   /* a padding row: zeros */
  #pragma unroll
  for (int i = 0; i < HEAD_DIM; i++) {
    const float value = tg_warp_sum(acc[i] * share);
    if ((i & 31) == lane) out[bh * HEAD_DIM + i] = value * norm;
  }
}
"""

_CPU_POOL_WRITE = r"""
#include <string.h>
void tg_pool_write(float* restrict pool, const float* restrict rows, const int* restrict slots) {
  /* pool[slots[n]] = rows[n] where the slot is inside the pool (a padding row's -1 writes nothing) */
  for (long long n = 0; n < COUNT; n++) {
    const long long slot = slots[n];
    if (slot >= 0 && slot < SLOTS) memcpy(pool + slot * ROW, rows + n * ROW, ROW * sizeof(float));
  }
}
"""


def _source(language: str, body: str, sizes: dict) -> str:
  defines = "".join(f"#define {name} {value}\n" for name, value in sizes.items())
  if language == "CUDA":
    from teenygrad.llm.attention_cuda import SOFTMAX_STEP_CUDA
    from teenygrad.renderer.cuda import CUDA_PREAMBLE
    return CUDA_PREAMBLE + SOFTMAX_STEP_CUDA + defines + body
  return defines + body


class _Programs:
  """Compiled programs of one device, one per kernel and shape."""
  def __init__(self, device: str):
    self.device, self.language = device, device.partition(":")[0]
    self._compiled: dict[tuple, object] = {}

  def get(self, name: str, body: str, sizes: dict, variables: list[str], work: int, launch=None):
    from teenygrad.device import Device
    from teenygrad.engine.realize import CompiledKernel
    key = (name, tuple(sorted(sizes.items())))
    if key not in self._compiled:
      src = _source(self.language, body, sizes)
      backend = Device[self.device]
      binary = backend.compiler.compile_cached(src)
      program = backend.program(name, binary) if launch is None else backend.program(name, binary, launch)
      self._compiled[key] = CompiledKernel(name, program, [], variables, src, work, False)
    return self._compiled[key]


_programs: dict[str, _Programs] = {}


def _programs_of(device: str) -> _Programs:
  if device not in _programs: _programs[device] = _Programs(device)
  return _programs[device]


ATTENTION_LANGUAGES = ("CPU", "CUDA")


class PagedAttention(InferenceOp):
  """Custom op: srcs (q (B, H, D), keys pool, values pool, index (B, WIDTH) int32, lengths (B,) int32) -> (B, H, D)."""
  what = "paged attention"

  def __init__(self, batch: int, heads: int, kv_heads: int, head_dim: int, width: int, slots: int):
    self.sizes = {"BATCH": batch, "HEADS": heads, "KV_HEADS": kv_heads, "HEAD_DIM": head_dim, "WIDTH": width, "SLOTS": slots,
                  "SCALE": f"{1.0 / math.sqrt(head_dim)!r}f"}

  def run(self, root: LazyBuffer, buffers: list):
    from teenygrad.device import Buffer
    from teenygrad.engine.realize import ExecItem, launch
    s = self.sizes
    out = Buffer(root.device, s["BATCH"] * s["HEADS"] * s["HEAD_DIM"], dtypes.float32)
    programs = _programs_of(root.device)
    work = s["BATCH"] * s["HEADS"] * s["WIDTH"] * s["HEAD_DIM"] * 2
    if programs.language == "CUDA":
      from teenygrad.renderer.gpu import LaunchDims
      kernel = programs.get("tg_paged_attention", _CUDA_ATTENTION, s, [], work, LaunchDims(s["BATCH"] * s["HEADS"], 32, ()))
    else: kernel = programs.get("tg_paged_attention", _CPU_ATTENTION, s, [], work)
    launch(ExecItem(kernel, [out, *buffers], (), root.device, work))
    return out



def paged_attention(q: Tensor, keys: Tensor, values: Tensor, index: Tensor, lengths: Tensor) -> Tensor | None:
  """softmax(q k / sqrt(D)) v over each row's first lengths[b] cache positions, one query row per (row, head), q
  (B, H, 1, D), reading keys and values from their pools (P, KVH, D) through index (B, WIDTH): (B, H, 1, D)
  float32, or None where the device has no kernel (the caller then runs the primitive path)."""
  B, H, T, D = q.shape
  P, KVH, _ = keys.shape
  if (q.device.partition(":")[0] not in ATTENTION_LANGUAGES or T != 1 or H % KVH or D % 4 or keys.dtype != dtypes.float32
      or values.dtype != dtypes.float32): return None
  op = PagedAttention(B, H, KVH, D, index.shape[1], P)
  srcs = (_buffer(q.float().reshape(B, H, D)), keys, values, _buffer(index), _buffer(lengths.cast(dtypes.int32).reshape(B)))
  out = LazyBuffer.custom(op, tuple(t.lazydata for t in srcs), (B, H, D), dtypes.float32)
  return Tensor(out).reshape(B, H, 1, D)


def _buffer(t: Tensor) -> Tensor:
  """t as a custom op reads it, a buffer in row-major order: a reshape's base is that already, anything else is copied."""
  return t.contiguous() if t.lazydata.is_view and not t.lazydata.reshapes_base else t


def cpu_pool_write(pool, rows, slots, count: int, row: int, pool_slots: int) -> None:
  """The pool write as a CPU kernel (a JIT replay calls it directly, with no Python in between)."""
  from teenygrad.engine.realize import ExecItem, launch
  sizes = {"COUNT": count, "ROW": row, "SLOTS": pool_slots}
  kernel = _programs_of(pool.device).get("tg_pool_write", _CPU_POOL_WRITE, sizes, [], count * row)
  launch(ExecItem(kernel, [pool, rows, slots], (), pool.device, assign=True))


__all__ = ["ATTENTION_LANGUAGES", "PagedAttention", "cpu_pool_write", "paged_attention"]
