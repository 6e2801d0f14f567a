"""Decode attention on the CPU in one C kernel: scores, softmax and the weighted sum of values for one query row per
head.

    tg_cpu_decode_attention_<D>_<H>_<KVH>_<L>[_mask](out, q, keys, values, start[, mask], threads)

The primitive path (llm/model.py) takes five kernels per layer for this (scores, max, exp-sum, probabilities, the
weighted sum): five launches, and a scores kernel that redoes the query's rotation for every key (the rotation is
inlined into it). This is one launch that does the reference's arithmetic in the reference's order, per query head:
scores q.k * 1/sqrt(D) (+ mask) over the keys [0, start] (the position comes from its buffer, so a JIT replay attends
over the new length), their max, exp as exp2(x * log2 e) (what Tensor.exp lowers to), the sum, probabilities
exp / sum, then the probabilities times the value rows. Grouped-query heads share their kv head (h // (H / KVH)).
Sizes are compiled in (one library per model shape and cache length, disk-cached); the cache is float32
(B, KVH, L, D) and `mask` an optional additive (B, L) float32 (the left padding of batched prompts). Heads split
over threads only for long contexts: a decode step's attention over a few hundred keys is microseconds of work.
"""
from __future__ import annotations

import math

from teenygrad.device import Buffer, Device
from teenygrad.helpers import config
from teenygrad.renderer.c import VECTOR_MATH_DECLARATIONS

# query heads x keys x head_dim multiply-adds (scores plus values) from which heads split over threads
PARALLEL_MIN_WORK = 1 << 19


def attention_name(d: int, h: int, kvh: int, length: int, mask: bool) -> str:
  return f"tg_cpu_decode_attention_{d}_{h}_{kvh}_{length}{'_mask' if mask else ''}"


def render_attention(d: int, h: int, kvh: int, length: int, mask: bool, vector_math: bool) -> str:
  """C of decode attention for head_dim d, h query heads over kvh kv heads, a cache of `length` rows."""
  assert h % kvh == 0
  scale = repr(float(1.0 / math.sqrt(d)))   # the reference's scale, rounded to float32 as the reference's constant is
  log2e = repr(float(1.0 / math.log(2.0)))
  mask_param = ", const float* restrict mask" if mask else ""
  mask_add = f" + mask[b * {length} + s]" if mask else ""
  return "#include <math.h>\n#include <stdlib.h>\n" + (VECTOR_MATH_DECLARATIONS if vector_math else "") + f"""
#define HEAD_DIM {d}
/* one query head: scores into p[0, count), then p becomes the probabilities and out their weighted sum of values */
static void tg_attend(float* restrict o, const float* restrict qh, const float* restrict k_head, const float* restrict v_head,
                      float* restrict p, long count{mask_param}, long b) {{
  for (long s = 0; s < count; s++) {{
    const float* k_row = k_head + s * HEAD_DIM;
    float dot = 0.0f;
    #pragma omp simd reduction(+:dot)
    for (int i = 0; i < HEAD_DIM; i++) dot += qh[i] * k_row[i];
    p[s] = dot * {scale}f{mask_add};
  }}
  float best = -INFINITY, total = 0.0f;
  for (long s = 0; s < count; s++) best = p[s] > best ? p[s] : best;
  #pragma omp simd reduction(+:total)
  for (long s = 0; s < count; s++) {{ p[s] = exp2f((p[s] - best) * {log2e}f); total += p[s]; }}
  float inverse = 1.0f / total;
  for (int i = 0; i < HEAD_DIM; i++) o[i] = 0.0f;
  for (long s = 0; s < count; s++) {{
    float weight = p[s] * inverse;
    const float* v_row = v_head + s * HEAD_DIM;
    #pragma omp simd
    for (int i = 0; i < HEAD_DIM; i++) o[i] += weight * v_row[i];
  }}
}}

void {attention_name(d, h, kvh, length, mask)}(float* restrict out, const float* restrict q, const float* restrict keys,
    const float* restrict values, const int* restrict start{mask_param}, long long batch, long long threads) {{
  long count = (long)start[0] + 1 < {length} ? (long)start[0] + 1 : {length};   /* keys [0, start]: this step's row is written */
  if (count < 1) count = 1;
  int par = threads > 1 && batch * {h} * count * HEAD_DIM * 2 >= {PARALLEL_MIN_WORK};
  #pragma omp parallel num_threads((int)threads) if(par)
  {{
    float* p = (float*)malloc((size_t)count * sizeof(float));
    #pragma omp for schedule(static)
    for (long bh = 0; bh < batch * {h}; bh++) {{
      long b = bh / {h}, rows = (b * {kvh} + (bh % {h}) / {h // kvh}) * {length} * HEAD_DIM;
      tg_attend(out + bh * HEAD_DIM, q + bh * HEAD_DIM, keys + rows, values + rows, p, count{", mask" if mask else ""}, b);
    }}
    free(p);
  }}
}}
"""


class CPUDecodeAttention:
  """Launches the kernel for one model shape (recorded: a JIT replay is the launch itself)."""
  def __init__(self, device: str):
    self.device = device
    self._programs: dict[tuple, object] = {}

  def __call__(self, out: Buffer, q: Buffer, keys: Buffer, values: Buffer, start: Buffer, mask: Buffer | None,
               batch: int, h: int, kvh: int, length: int, d: int) -> None:
    from teenygrad.device.cpu import has_vector_math
    from teenygrad.engine.realize import CompiledKernel, ExecItem, launch
    key = (d, h, kvh, length, mask is not None)
    if key not in self._programs:
      backend = Device[self.device]
      binary = backend.compiler.compile_cached(render_attention(d, h, kvh, length, mask is not None, has_vector_math()))
      self._programs[key] = backend.program(attention_name(d, h, kvh, length, mask is not None), binary)
    kernel = CompiledKernel("decode_attention", self._programs[key], [], [], "", batch * h * length * d * 2, False)
    buffers = [out, q, keys, values, start] + ([mask] if mask is not None else [])
    launch(ExecItem(kernel, buffers, (batch, max(config.threads, 1)), self.device))


_kernels: dict[str, CPUDecodeAttention] = {}


def cpu_decode_attention(device: str) -> CPUDecodeAttention:
  if device not in _kernels: _kernels[device] = CPUDecodeAttention(device)
  return _kernels[device]


__all__ = ["CPUDecodeAttention", "attention_name", "cpu_decode_attention", "render_attention"]
