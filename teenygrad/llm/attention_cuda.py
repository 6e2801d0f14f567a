"""Decode attention on CUDA in one kernel: scores, softmax and the weighted sum of values for one query row per head.

    tg_decode_attention_<D>_<H>_<KVH>_<L>[_mask](out, q, keys, values, start[, mask])

The primitive path (llm/model.py) takes five kernels per layer for this (scores, max, exp-sum, probabilities, the
weighted sum), each a graph node of its own; this is one. One warp per (sequence, query head): lane j takes keys
j, j + 32, ... of [0, start] (the position comes from its device buffer, so a JIT replay attends over the new
length), keeps an online softmax (running max, sum and weighted values, rescaled when the max grows: Milakov &
Gimelshein 2018, as flash-decoding does), then the lanes merge theirs through warp shuffles. Keys and values are
read as float4 rows; a head's query sits in registers. Grouped-query heads share their kv head (h // (H / KVH)).

Sizes are compiled in (one cubin per model shape and cache length, disk-cached); the cache is float32 (B, KVH, L, D)
and `mask` an optional additive (B, L) float32 (the left padding of batched prompts).
"""
from __future__ import annotations

import math

from teenygrad.device import Buffer, Device
from teenygrad.renderer.cuda import CUDA_PREAMBLE


def attention_name(d: int, h: int, kvh: int, length: int, mask: bool) -> str:
  return f"tg_decode_attention_{d}_{h}_{kvh}_{length}{'_mask' if mask else ''}"


def render_attention(d: int, h: int, kvh: int, length: int, mask: bool) -> str:
  """CUDA C of decode attention for head_dim d, h query heads over kvh kv heads, a cache of `length` rows."""
  assert d % 4 == 0 and h % kvh == 0
  scale = repr(float(1.0 / math.sqrt(d)))   # the reference's scale, rounded to float32 as the reference's constant is
  mask_param = ", const float* __restrict__ mask" if mask else ""
  mask_add = f" + mask[(long long)b * {length} + s]" if mask else ""
  return CUDA_PREAMBLE + f"""#define HEAD_DIM {d}
extern "C" __global__ void __launch_bounds__(32) {attention_name(d, h, kvh, length, mask)}(float* __restrict__ out,
    const float* __restrict__ q, const float* __restrict__ keys, const float* __restrict__ values, const int* __restrict__ start{mask_param}) {{
  const int lane = threadIdx.x, bh = blockIdx.x, b = bh / {h}, head = bh % {h};
  const long long rows = ((long long)b * {kvh} + head / {h // kvh}) * {length} * HEAD_DIM;
  const float* k_head = keys + rows;
  const float* v_head = values + rows;
  const int count = min(start[0] + 1, {length});   /* keys [0, start]: this step's row is written already */
  float query[HEAD_DIM], acc[HEAD_DIM];
  #pragma unroll
  for (int i = 0; i < HEAD_DIM; i++) {{ query[i] = q[(long long)bh * HEAD_DIM + i]; acc[i] = 0.0f; }}
  float best = -INFINITY, total = 0.0f;
  for (int s = lane; s < count; s += 32) {{
    const float4* k_row = (const float4*)(k_head + (long long)s * HEAD_DIM);
    float dot = 0.0f;
    #pragma unroll
    for (int i = 0; i < HEAD_DIM / 4; i++) {{
      const float4 k4 = k_row[i];
      dot += query[4 * i] * k4.x + query[4 * i + 1] * k4.y + query[4 * i + 2] * k4.z + query[4 * i + 3] * k4.w;
    }}
    const float score = dot * {scale}f{mask_add};
    const float grown = fmaxf(best, score);
    const float rescale = expf(best - grown), weight = expf(score - grown);   /* exp(-inf) = 0 on the first key */
    total = total * rescale + weight;
    const float4* v_row = (const float4*)(v_head + (long long)s * HEAD_DIM);
    #pragma unroll
    for (int i = 0; i < HEAD_DIM / 4; i++) {{
      const float4 v4 = v_row[i];
      acc[4 * i] = acc[4 * i] * rescale + weight * v4.x;
      acc[4 * i + 1] = acc[4 * i + 1] * rescale + weight * v4.y;
      acc[4 * i + 2] = acc[4 * i + 2] * rescale + weight * v4.z;
      acc[4 * i + 3] = acc[4 * i + 3] * rescale + weight * v4.w;
    }}
    best = grown;
  }}
  /* merge the lanes' softmaxes: each is rescaled to the warp's max (a lane without keys weighs nothing) */
  const float top = tg_warp_max(best);
  const float share = best == -INFINITY ? 0.0f : expf(best - top);
  const float norm = 1.0f / tg_warp_sum(total * share);
  #pragma unroll
  for (int i = 0; i < HEAD_DIM; i++) {{
    const float value = tg_warp_sum(acc[i] * share);
    if ((i & 31) == lane) out[(long long)bh * HEAD_DIM + i] = value * norm;
  }}
}}
"""


class CUDADecodeAttention:
  """Launches the kernel for one model shape (recorded: a JIT replay is the launch itself)."""
  def __init__(self, device: str):
    self.device = device
    self._programs: dict[tuple, object] = {}

  def __call__(self, out: Buffer, q: Buffer, keys: Buffer, values: Buffer, start: Buffer, mask: Buffer | None,
               batch: int, h: int, kvh: int, length: int, d: int) -> None:
    from teenygrad.engine.realize import CompiledKernel, ExecItem, launch
    key = (d, h, kvh, length, mask is not None, batch)
    if key not in self._programs:
      backend = Device[self.device]
      binary = backend.compiler.compile_cached(render_attention(d, h, kvh, length, mask is not None))
      grid = {"block": (32, 1, 1), "grid": (batch * h, 1, 1)}
      self._programs[key] = backend.program(attention_name(d, h, kvh, length, mask is not None), binary, grid)
    kernel = CompiledKernel("decode_attention", self._programs[key], [], [], "", batch * h * length * d * 2, False)
    buffers = [out, q, keys, values, start] + ([mask] if mask is not None else [])
    launch(ExecItem(kernel, buffers, (), self.device))


_kernels: dict[str, CUDADecodeAttention] = {}


def cuda_decode_attention(device: str) -> CUDADecodeAttention:
  if device not in _kernels: _kernels[device] = CUDADecodeAttention(device)
  return _kernels[device]


__all__ = ["CUDADecodeAttention", "attention_name", "cuda_decode_attention", "render_attention"]
