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


# query rows of one head per tile of the prefill kernel, and keys per step of its score loop (its accumulators: 4 x 16
# floats, 8 AVX2 registers)
PREFILL_ROWS = 4
PREFILL_KEYS = 16


def prefill_attention_name(d: int, h: int, kvh: int, length: int, mask: bool) -> str:
  return f"tg_cpu_prefill_attention_{d}_{h}_{kvh}_{length}{'_mask' if mask else ''}"


def render_prefill_attention(d: int, h: int, kvh: int, length: int, mask: bool, vector_math: bool) -> str:
  """C of causal attention for T query rows at positions start .. start + T - 1 (a prefill): query row t of head h
  sees cache rows [0, start + t] of its kv head. The decode kernel's arithmetic per row (scores q.k * 1/sqrt(D)
  (+ mask), their max, exp2((s - max) log2 e), the sum, probabilities p / sum times the value rows), formed for
  PREFILL_ROWS rows at a time: the scores as a 4 x 16 register tile over the keys transposed once per kv head (D-major,
  so each step is 16 keys times one broadcast query element), the weighted sum as 4 rows x 16 dims over the values.
  Tiles (batch, head, 4 rows) go over threads largest first (causal: later rows see more keys). Out is (B, T, H, D),
  what the output projection reads."""
  assert h % kvh == 0 and d % PREFILL_KEYS == 0
  scale = repr(float(1.0 / math.sqrt(d)))
  log2e = repr(float(1.0 / math.log(2.0)))
  rows, keys = PREFILL_ROWS, PREFILL_KEYS
  padded = -(-length // keys) * keys
  mask_param = ", const float* restrict mask" if mask else ""
  mask_add = f" + mask[b * {length} + (s0 + j < {length} ? s0 + j : {length - 1})]" if mask else ""
  return "#include <math.h>\n#include <stdlib.h>\n#include <string.h>\n" + (VECTOR_MATH_DECLARATIONS if vector_math else "") + f"""
#define HEAD_DIM {d}
#define ROWS {rows}
#define KEYS {keys}
#define PADDED {padded}
/* query rows t0 .. t0 + ROWS - 1 of one head (q: the head's T rows of D floats; past T the last row stands in, its
   results unstored), keys transposed kt (D, PADDED) and values (length, D) of its kv head: out from row t0 (stride
   H * D), probabilities in p (ROWS, PADDED) */
static void tg_prefill_tile(float* restrict out, const float* restrict q, const float* restrict kt, const float* restrict v,
                            float* restrict p, long t0, long T, long start{mask_param}, long b) {{
  long count[ROWS], most = 0;
  const float* qr[ROWS];
  for (int r = 0; r < ROWS; r++) {{
    long t = t0 + r < T ? t0 + r : T - 1;
    qr[r] = q + t * HEAD_DIM;
    count[r] = start + t + 1 < {length} ? start + t + 1 : {length};
    most = count[r] > most ? count[r] : most;
  }}
  for (long s0 = 0; s0 < most; s0 += KEYS) {{
    float acc[ROWS][KEYS];
    for (int r = 0; r < ROWS; r++) for (int j = 0; j < KEYS; j++) acc[r][j] = 0.0f;
    for (int i = 0; i < HEAD_DIM; i++) {{
      const float* k = kt + (long)i * PADDED + s0;
      for (int r = 0; r < ROWS; r++) {{
        float qi = qr[r][i];
        #pragma omp simd
        for (int j = 0; j < KEYS; j++) acc[r][j] = fmaf(qi, k[j], acc[r][j]);
      }}
    }}
    for (int r = 0; r < ROWS; r++)
      for (int j = 0; j < KEYS; j++) p[r * PADDED + s0 + j] = acc[r][j] * {scale}f{mask_add};
  }}
  for (int r = 0; r < ROWS; r++) {{
    float* pr = p + r * PADDED;
    float best = -INFINITY, total = 0.0f;
    #pragma omp simd reduction(max:best)
    for (long s = 0; s < count[r]; s++) best = pr[s] > best ? pr[s] : best;
    #pragma omp simd reduction(+:total)
    for (long s = 0; s < count[r]; s++) {{ pr[s] = exp2f((pr[s] - best) * {log2e}f); total += pr[s]; }}
    float inverse = 1.0f / total;
    #pragma omp simd
    for (long s = 0; s < count[r]; s++) pr[s] = pr[s] * inverse;
    for (long s = count[r]; s < most; s++) pr[s] = 0.0f;
  }}
  for (int i0 = 0; i0 < HEAD_DIM; i0 += KEYS) {{
    float acc[ROWS][KEYS];
    for (int r = 0; r < ROWS; r++) for (int j = 0; j < KEYS; j++) acc[r][j] = 0.0f;
    for (long s = 0; s < most; s++) {{
      const float* vr = v + s * HEAD_DIM + i0;
      for (int r = 0; r < ROWS; r++) {{
        float w = p[r * PADDED + s];
        #pragma omp simd
        for (int j = 0; j < KEYS; j++) acc[r][j] = fmaf(w, vr[j], acc[r][j]);
      }}
    }}
    for (int r = 0; r < ROWS && t0 + r < T; r++)
      for (int j = 0; j < KEYS; j++) out[(long)r * {h} * HEAD_DIM + i0 + j] = acc[r][j];
  }}
}}

void {prefill_attention_name(d, h, kvh, length, mask)}(float* restrict out, const float* restrict q, const float* restrict keys,
    const float* restrict values, const int* restrict start_{mask_param}, long long batch, long long T, long long threads) {{
  long start = (long)start_[0];
  long seen = start + T < {length} ? start + T : {length};   /* cache rows any query sees */
  long tiles = (T + ROWS - 1) / ROWS, tasks = batch * {h} * tiles;
  float* kt = (float*)calloc((size_t)batch * {kvh} * HEAD_DIM * PADDED, sizeof(float));
  int par = threads > 1 && batch * {h} * T * seen * HEAD_DIM >= {PARALLEL_MIN_WORK};
  #pragma omp parallel num_threads((int)threads) if(par)
  {{
    #pragma omp for schedule(static)
    for (long bg = 0; bg < batch * {kvh}; bg++)
      for (long s = 0; s < seen; s++)
        for (int i = 0; i < HEAD_DIM; i++) kt[(bg * HEAD_DIM + i) * PADDED + s] = keys[(bg * {length} + s) * HEAD_DIM + i];
    float* p = (float*)malloc((size_t)ROWS * PADDED * sizeof(float));
    #pragma omp for schedule(dynamic, 1)
    for (long task = 0; task < tasks; task++) {{
      long tile = tiles - 1 - task / (batch * {h}), bh = task % (batch * {h});   /* the longest rows first */
      long b = bh / {h}, hh = bh % {h}, g = b * {kvh} + hh / {h // kvh};
      tg_prefill_tile(out + ((b * T + tile * ROWS) * {h} + hh) * HEAD_DIM, q + bh * T * HEAD_DIM,
                      kt + g * HEAD_DIM * PADDED, values + g * {length} * HEAD_DIM, p, tile * ROWS, T, start{", mask" if mask else ""}, b);
    }}
    free(p);
  }}
  free(kt);
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

  def prefill(self, out: Buffer, q: Buffer, keys: Buffer, values: Buffer, start: Buffer, mask: Buffer | None,
              batch: int, t: int, h: int, kvh: int, length: int, d: int) -> None:
    """out (B, T, H, D) = causal attention of q (B, H, T, D) at positions start.. over the cache (B, KVH, L, D)."""
    from teenygrad.device.cpu import has_vector_math
    from teenygrad.engine.realize import CompiledKernel, ExecItem, launch
    key = ("prefill", d, h, kvh, length, mask is not None)
    if key not in self._programs:
      backend = Device[self.device]
      binary = backend.compiler.compile_cached(render_prefill_attention(d, h, kvh, length, mask is not None, has_vector_math()))
      self._programs[key] = backend.program(prefill_attention_name(d, h, kvh, length, mask is not None), binary)
    kernel = CompiledKernel("prefill_attention", self._programs[key], [], [], "", batch * h * t * length * d * 2, False)
    buffers = [out, q, keys, values, start] + ([mask] if mask is not None else [])
    launch(ExecItem(kernel, buffers, (batch, t, max(config.threads, 1)), self.device))


_kernels: dict[str, CPUDecodeAttention] = {}


def cpu_decode_attention(device: str) -> CPUDecodeAttention:
  if device not in _kernels: _kernels[device] = CPUDecodeAttention(device)
  return _kernels[device]


__all__ = ["CPUDecodeAttention", "attention_name", "cpu_decode_attention", "prefill_attention_name", "render_attention",
           "render_prefill_attention"]
