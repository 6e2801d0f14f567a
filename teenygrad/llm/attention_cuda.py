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

    tg_rope_cache_<B>_<H>_<KVH>_<D>_<L>_<pairs|halves>(q_out, qkv, cos, sin, start, keys, values)

The launch before it: RoPE on q and k and the write of k and v into row `start` of the cache, straight from the fused
q/k/v projection's output, where the primitive path takes a kernel for each rotation, one to copy v out of the
projection's rows and one per cache write.
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


ROPE_THREADS = 256


def rope_cache_name(b: int, h: int, kvh: int, d: int, length: int, interleaved: bool) -> str:
  return f"tg_rope_cache_{b}_{h}_{kvh}_{d}_{length}{'_pairs' if interleaved else '_halves'}"


def rope_cache_threads(b: int, h: int, kvh: int, d: int) -> int:
  """A thread per rotated pair of q and k, and per element of v."""
  return b * ((h + kvh) * d // 2 + kvh * d)


def render_rope_cache(b: int, h: int, kvh: int, d: int, length: int, rope_rows: int, interleaved: bool) -> str:
  """CUDA C of one decode step's RoPE and KV-cache write: from the fused projection's rows qkv (b, (h + 2 kvh) d),
  q rotated into q_out (b, h, 1, d), k rotated and v copied into row `start` of keys/values (b, kvh, length, d).
  cos/sin are (rope_rows, d / 2) tables; `interleaved` rotates pairs (2i, 2i + 1), else halves (i, i + d / 2)."""
  assert d % 2 == 0
  half, width = d // 2, (h + 2 * kvh) * d
  first, second = ("2 * p", "2 * p + 1") if interleaved else ("p", "p + HALF")
  return CUDA_PREAMBLE + f"""#define HALF {half}
extern "C" __global__ void __launch_bounds__({ROPE_THREADS}) {rope_cache_name(b, h, kvh, d, length, interleaved)}(float* __restrict__ q_out,
    const float* __restrict__ qkv, const float* __restrict__ cos_table, const float* __restrict__ sin_table,
    const int* __restrict__ start, float* __restrict__ keys, float* __restrict__ values) {{
  const int i = blockIdx.x * {ROPE_THREADS} + threadIdx.x;
  if (i >= {rope_cache_threads(b, h, kvh, d)}) return;
  const int seq = i / {rope_cache_threads(1, h, kvh, d)}, j = i % {rope_cache_threads(1, h, kvh, d)}, s = start[0];
  /* a position outside the cache (or the tables) writes nothing there, and q passes unrotated */
  const bool stored = s >= 0 && s < {min(length, rope_rows)};
  const float* row = qkv + (long long)seq * {width};
  if (j < {(h + kvh) * half}) {{   /* pair p of head `head`: the q heads, then the k heads (contiguous in qkv) */
    const int head = j / HALF, p = j % HALF;
    const float c = stored ? cos_table[(long long)s * HALF + p] : 1.0f, sn = stored ? sin_table[(long long)s * HALF + p] : 0.0f;
    const float x0 = row[head * {d} + {first}], x1 = row[head * {d} + {second}];
    const float r0 = x0 * c - x1 * sn, r1 = x0 * sn + x1 * c;
    float* dst;
    if (head < {h}) dst = q_out + ((long long)seq * {h} + head) * {d};
    else if (stored) dst = keys + (((long long)seq * {kvh} + head - {h}) * {length} + s) * {d};
    else return;
    dst[{first}] = r0;
    dst[{second}] = r1;
  }} else if (stored) {{   /* element e of the value heads */
    const int e = j - {(h + kvh) * half};
    values[(((long long)seq * {kvh} + e / {d}) * {length} + s) * {d} + e % {d}] = row[{(h + kvh) * d} + e];
  }}
}}
"""


class CUDARopeCacheWrite:
  """Launches the RoPE + cache write for one model shape (recorded: a JIT replay is the launch itself)."""
  def __init__(self, device: str):
    self.device = device
    self._programs: dict[tuple, object] = {}

  def __call__(self, q_out: Buffer, qkv: Buffer, cos: Buffer, sin: Buffer, start: Buffer, keys: Buffer, values: Buffer,
               b: int, h: int, kvh: int, d: int, length: int, rope_rows: int, interleaved: bool) -> None:
    from teenygrad.engine.realize import CompiledKernel, ExecItem, launch
    key = (b, h, kvh, d, length, rope_rows, interleaved)
    if key not in self._programs:
      backend = Device[self.device]
      binary = backend.compiler.compile_cached(render_rope_cache(*key))
      grid = {"block": (ROPE_THREADS, 1, 1), "grid": (-(-rope_cache_threads(b, h, kvh, d) // ROPE_THREADS), 1, 1)}
      self._programs[key] = backend.program(rope_cache_name(b, h, kvh, d, length, interleaved), binary, grid)
    kernel = CompiledKernel("rope_cache_write", self._programs[key], [], [], "", rope_cache_threads(b, h, kvh, d), False)
    launch(ExecItem(kernel, [q_out, qkv, cos, sin, start, keys, values], (), self.device))


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
_rope_kernels: dict[str, CUDARopeCacheWrite] = {}


def cuda_decode_attention(device: str) -> CUDADecodeAttention:
  if device not in _kernels: _kernels[device] = CUDADecodeAttention(device)
  return _kernels[device]


def cuda_rope_cache_write(device: str) -> CUDARopeCacheWrite:
  if device not in _rope_kernels: _rope_kernels[device] = CUDARopeCacheWrite(device)
  return _rope_kernels[device]


__all__ = ["CUDADecodeAttention", "CUDARopeCacheWrite", "attention_name", "cuda_decode_attention", "cuda_rope_cache_write",
           "render_attention", "render_rope_cache", "rope_cache_name"]
