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

    tg_rope_attention_<D>_<H>_<KVH>_<L>_<pairs|halves>[_mask](out, qkv, cos, sin, start, keys, values[, mask])

The same attention straight from the fused q/k/v projection's output, for which the primitive path first takes a
kernel per rotation, one to copy v out of the projection's rows and one per cache write: each warp rotates its query
and the new key itself, scores the cache's rows [0, start) and then the new row (from qkv, not the cache: another
warp may not have written it yet), and one warp per kv head writes the new key and value into row `start`. Where the head dim is a multiple of 32
(every Llama), a block of ROPE_WARPS warps takes a head instead (`render_rope_attention_wide`): each warp every
ROPE_WARPS-th key, each lane D / 32 elements of a row, the warps' softmaxes merged through shared memory; the
lane-per-key kernel spilled at d = 128 and left most lanes idle at a decode's short lengths.
"""
from __future__ import annotations

import math
import os

from teenygrad.device import Buffer, Device
from teenygrad.renderer.cuda import CUDA_PREAMBLE

# of a kv head's keys (and of its values) asked into L2 before the grid-dependency wait; past it the kernel streams
# them at full rate anyway
PREFETCH_CACHE_BYTES = 1 << 20


# One key of an online softmax (Milakov & Gimelshein 2018), shared by every CUDA attention kernel: a lane's running
# max `best`, sum `total` and weighted values `acc` take the key's score and its value row. `value_weight` is 0 for
# a key that must count in the sum but add no value (serve's slot outside the pool, read as zeros).
SOFTMAX_STEP_CUDA = r"""
template <int D> __device__ __forceinline__ float tg_dot_row4(const float* query, const float4* row) {
  float dot = 0.0f;
  #pragma unroll
  for (int i = 0; i < D / 4; i++) {
    const float4 k = row[i];
    dot += query[4 * i] * k.x + query[4 * i + 1] * k.y + query[4 * i + 2] * k.z + query[4 * i + 3] * k.w;
  }
  return dot;
}
template <int D> __device__ __forceinline__ void tg_softmax_step(float score, const float4* value, float value_weight,
                                                                 float* acc, float& best, float& total) {
  const float grown = fmaxf(best, score);
  const float rescale = expf(best - grown), weight = expf(score - grown);   /* exp(-inf) = 0 on the first key */
  total = total * rescale + weight;
  const float w = weight * value_weight;
  #pragma unroll
  for (int i = 0; i < D / 4; i++) {
    const float4 v = value[i];
    acc[4 * i] = acc[4 * i] * rescale + w * v.x;
    acc[4 * i + 1] = acc[4 * i + 1] * rescale + w * v.y;
    acc[4 * i + 2] = acc[4 * i + 2] * rescale + w * v.z;
    acc[4 * i + 3] = acc[4 * i + 3] * rescale + w * v.w;
  }
  best = grown;
}
"""


def attention_name(d: int, h: int, kvh: int, length: int, mask: bool) -> str:
  return f"tg_decode_attention_{d}_{h}_{kvh}_{length}{'_mask' if mask else ''}"


def render_attention(d: int, h: int, kvh: int, length: int, mask: bool) -> str:
  """CUDA C of decode attention for head_dim d, h query heads over kvh kv heads, a cache of `length` rows."""
  assert d % 4 == 0 and h % kvh == 0
  scale = repr(float(1.0 / math.sqrt(d)))   # the reference's scale, rounded to float32 as the reference's constant is
  mask_param = ", const float* __restrict__ mask" if mask else ""
  mask_add = f" + mask[(long long)b * {length} + s]" if mask else ""
  return CUDA_PREAMBLE + SOFTMAX_STEP_CUDA + f"""#define HEAD_DIM {d}
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
    const float* k_row = k_head + (long long)s * HEAD_DIM;
    const float score = tg_dot_row4<HEAD_DIM>(query, (const float4*)k_row) * {scale}f{mask_add};
    tg_softmax_step<HEAD_DIM>(score, (const float4*)(v_head + (long long)s * HEAD_DIM), 1.0f, acc, best, total);
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


def rope_attention_name(d: int, h: int, kvh: int, length: int, interleaved: bool, mask: bool) -> str:
  return f"tg_rope_attention_{d}_{h}_{kvh}_{length}{'_pairs' if interleaved else '_halves'}{'_mask' if mask else ''}"


def _rope_attention_opening(d: int, h: int, kvh: int, length: int, rope_rows: int, interleaved: bool, mask: bool,
                            threads: int, split: bool = False) -> str:
  """What both RoPE + attention kernels open with: HEAD_DIM, HALF, tg_rope_at, the signature, and each block's
  (sequence, head), its cache rows and qkv rows, and this step's position: whether its row is stored (inside the
  cache and the tables), the rotation (cos_row and sin_row, null where nothing rotates) and the cache rows before it."""
  mask_param = ", const float* __restrict__ mask" if mask else ""
  split_params = ", float* __restrict__ partials, unsigned int* __restrict__ arrivals" if split else ""
  mask_row = f"mask + (long long)b * {length}" if mask else "nullptr"
  pair, first = ("i / 2", "(i & 1) == 0") if interleaved else ("i % HALF", "i < HALF")
  pair_of_i = "(i) / 2" if interleaved else "(i) % HALF"
  partner = "i ^ 1" if interleaved else "(i + HALF) % HEAD_DIM"
  return f"""#define HEAD_DIM {d}
#define HALF {d // 2}
#define TG_ROPE_PAIR(i) ({pair_of_i})
/* element i of a head's row src rotated by the angle (c, sn) of its pair */
__device__ __forceinline__ float tg_rope_by(const float* __restrict__ src, int i, float c, float sn) {{
  const float own = src[i], other = src[{partner}];
  return {first} ? own * c - other * sn : other * sn + own * c;
}}
/* the same with the angle read from the tables' rows (cos_row and sin_row null: not rotated) */
__device__ __forceinline__ float tg_rope_at(const float* __restrict__ src, int i, const float* __restrict__ cos_row,
                                            const float* __restrict__ sin_row) {{
  const int p = {pair};
  return tg_rope_by(src, i, cos_row ? cos_row[p] : 1.0f, cos_row ? sin_row[p] : 0.0f);
}}
extern "C" __global__ void __launch_bounds__({threads}) {rope_attention_name(d, h, kvh, length, interleaved, mask)}(float* __restrict__ out,
    const float* __restrict__ qkv, const float* __restrict__ cos_table, const float* __restrict__ sin_table,
    const int* __restrict__ start, float* __restrict__ keys, float* __restrict__ values{mask_param}{split_params}) {{
  const int bh = blockIdx.x{" / SPLITS" if split else ""}, b = bh / {h}, head = bh % {h}, kv = head / {h // kvh};
  const long long rows = ((long long)b * {kvh} + kv) * {length} * HEAD_DIM;
  const float* k_head = keys + rows;
  const float* v_head = values + rows;
  const float* row = qkv + (long long)b * {(h + 2 * kvh) * d};
  const float* q_new = row + head * HEAD_DIM;
  const float* k_new = row + ({h} + kv) * HEAD_DIM;
  const float* v_new = row + ({h + kvh} + kv) * HEAD_DIM;
  const float* mask_row = {mask_row};
  const int s0 = start[0];
  /* the step's own row comes from qkv, and is written to the cache for the steps after; a position outside the
     cache (or the tables) writes nothing and attends the cache's rows [0, min(start + 1, L)) unrotated */
  const bool stored = s0 >= 0 && s0 < {min(length, rope_rows)};
  const float* cos_row = stored ? cos_table + (long long)s0 * HALF : nullptr;
  const float* sin_row = stored ? sin_table + (long long)s0 * HALF : nullptr;
  const int cached = stored ? s0 : min(s0 + 1, {length});
"""


def _prefetch_rows(first: str, end: str, who: str) -> str:
  """C lines asking for the cache rows [first, end) of the block's kv head (keys and values) in L2, by threads 0 and
  1 where `who` holds, then the grid-dependency wait: those rows were written by earlier steps, not by the kernel
  before this one, so their latency overlaps that kernel's end."""
  return f"""  if (({who}) && threadIdx.x < 2 && ({first}) < ({end})) {{
    const unsigned int bytes = (unsigned int)min((long long)(({end}) - ({first})) * HEAD_DIM * 4, {PREFETCH_CACHE_BYTES}LL) & ~15u;
    if (bytes) tg_prefetch_l2((threadIdx.x == 0 ? k_head : v_head) + (long long)({first}) * HEAD_DIM, bytes);
  }}
  TG_GRID_WAIT();
"""


def render_rope_attention(d: int, h: int, kvh: int, length: int, rope_rows: int, interleaved: bool, mask: bool) -> str:
  """CUDA C of decode attention straight from the fused q/k/v projection's rows qkv (b, (h + 2 kvh) d): RoPE on q and
  the new k, the new k and v written into row `start` of the cache, attention over rows [0, start]. cos/sin are
  (rope_rows, d / 2) tables; `interleaved` rotates pairs (2i, 2i + 1), else halves (i, i + d / 2). Where d is a
  multiple of 32 a block of warps works on each head (render_rope_attention_wide); else a warp, a lane per key. Where
  d is a multiple of 16 up to 128 (every Llama), the keys are split over several blocks per head instead
  (render_rope_attention_split), and the kernel takes two more buffers (rope_attention_scratch)."""
  if rope_attention_splits(d, length): return render_rope_attention_split(d, h, kvh, length, rope_rows, interleaved, mask)
  if d % 32 == 0: return render_rope_attention_wide(d, h, kvh, length, rope_rows, interleaved, mask)
  assert d % 4 == 0 and h % kvh == 0
  scale = repr(float(1.0 / math.sqrt(d)))   # the reference's scale, rounded to float32 as the reference's constant is
  opening = _rope_attention_opening(d, h, kvh, length, rope_rows, interleaved, mask, 32)
  opening += _prefetch_rows("0", "cached", f"head % {h // kvh} == 0")
  return CUDA_PREAMBLE + SOFTMAX_STEP_CUDA + opening + f"""  const int lane = threadIdx.x;
  if (stored && head % {h // kvh} == 0)   /* one warp per kv head writes the new row; no warp here reads it from the cache */
    for (int i = lane; i < HEAD_DIM; i += 32) {{
      keys[rows + (long long)s0 * HEAD_DIM + i] = tg_rope_at(k_new, i, cos_row, sin_row);
      values[rows + (long long)s0 * HEAD_DIM + i] = v_new[i];
    }}
  float query[HEAD_DIM], acc[HEAD_DIM];
  #pragma unroll
  for (int i = 0; i < HEAD_DIM; i++) {{ query[i] = tg_rope_at(q_new, i, cos_row, sin_row); acc[i] = 0.0f; }}
  float best = -INFINITY, total = 0.0f;
  for (int s = lane; s < cached; s += 32) {{
    const float* k_row = k_head + (long long)s * HEAD_DIM;
    const float score = tg_dot_row4<HEAD_DIM>(query, (const float4*)k_row) * {scale}f + (mask_row ? mask_row[s] : 0.0f);
    tg_softmax_step<HEAD_DIM>(score, (const float4*)(v_head + (long long)s * HEAD_DIM), 1.0f, acc, best, total);
  }}
  /* merge the lanes' softmaxes: each is rescaled to the warp's max (a lane without keys weighs nothing) */
  float top = tg_warp_max(best);
  float share = best == -INFINITY ? 0.0f : expf(best - top);
  float new_weight = 0.0f;
  if (stored) {{   /* the new row, scored by the whole warp, joins as one more key */
    float dot = 0.0f;
    #pragma unroll
    for (int i = 0; i < HEAD_DIM; i++)   /* constant indices keep query in registers */
      if ((i & 31) == lane) dot += query[i] * tg_rope_at(k_new, i, cos_row, sin_row);
    const float score = tg_warp_sum(dot) * {scale}f + (mask_row ? mask_row[s0] : 0.0f);
    const float grown = fmaxf(top, score);
    share = top == -INFINITY ? 0.0f : share * expf(top - grown);
    new_weight = expf(score - grown);
  }}
  const float norm = 1.0f / (tg_warp_sum(total * share) + new_weight);
  /* the lanes' weighted values summed through shared memory: a warp sum per element (HEAD_DIM of them, five
     dependent shuffles each) took about as long as the rest of the kernel (H200, 2026-12-02); the padding column
     puts a lane's row in banks of its own */
  __shared__ float partial[32][HEAD_DIM + 1];
  #pragma unroll
  for (int i = 0; i < HEAD_DIM; i++) partial[lane][i] = acc[i] * share;
  __syncwarp();
  for (int i = lane; i < HEAD_DIM; i += 32) {{
    float value = 0.0f;
    #pragma unroll
    for (int l = 0; l < 32; l++) value += partial[l][i];
    out[(long long)bh * HEAD_DIM + i] = (value + new_weight * (stored ? v_new[i] : 0.0f)) * norm;
  }}
}}
"""


# warps per (sequence, head) in the wide kernel, each taking every ROPE_WARPS-th key, and the keys a warp loads before
# scoring them (so their rows' latencies overlap); the environment overrides them for a sweep on the GPU machine
ROPE_WARPS = int(os.environ.get("TEENYGRAD_ROPE_WARPS", 4))
KEYS_AT_ONCE = int(os.environ.get("TEENYGRAD_KEYS_AT_ONCE", 4))


# threads per block of the split kernel: TILE_KEYS keys at a time, KEY_THREADS threads per key; the environment
# overrides them for a sweep on the GPU machine (KEY_THREADS a power of two up to head_dim / 4)
SPLIT_THREADS = int(os.environ.get("TEENYGRAD_SPLIT_THREADS", 128))
KEY_THREADS = int(os.environ.get("TEENYGRAD_KEY_THREADS", 4))
MAX_SPLITS = int(os.environ.get("TEENYGRAD_MAX_SPLITS", 16))   # blocks per head at most: 9 heads x 16 is about one wave of an H200's 132 SMs


def rope_attention_splits(d: int, length: int) -> int:
  """Blocks per (sequence, head) of the split kernel for head_dim d and a cache of `length` rows; 0 where the split
  kernel does not apply (d not a multiple of 16, or over 128)."""
  if d % 16 or d > SPLIT_THREADS: return 0
  return max(1, min(MAX_SPLITS, length // 32))


def rope_attention_threads(d: int, length: int = 0) -> int:
  """Threads per block of the RoPE + attention kernel for head_dim d (and a cache of `length` rows)."""
  if rope_attention_splits(d, length): return SPLIT_THREADS
  return 32 * ROPE_WARPS if d % 32 == 0 else 32


def rope_attention_blocks(b: int, h: int, d: int, length: int) -> int:
  return b * h * max(1, rope_attention_splits(d, length))


def render_rope_attention_split(d: int, h: int, kvh: int, length: int, rope_rows: int, interleaved: bool, mask: bool) -> str:
  """The kernel of render_rope_attention with the keys of a head split over SPLITS blocks (flash-decoding): at a
  decode's lengths one block per head is a chain of dependent loads and shuffles for a handful of heads, while most
  SMs idle (9 heads of SmolLM2 on 132 SMs). Block (sequence, head, split) takes the split's share of the keys [0,
  count): it scores TILE_KEYS keys at a time (KEY_THREADS threads per key, a quarter of the row each), keeps an
  online softmax over its tiles (Milakov & Gimelshein 2018) with each thread summing one dimension of the values over
  part of the tile, and writes its (max, sum, weighted values) to `partials`. The last of a head's blocks to arrive
  (an atomic count in `arrivals`, reset by that block) merges the splits in split order, so the result does not
  depend on which block came last. Each block asks for its own rows in L2 before the grid-dependency wait."""
  assert d % 16 == 0 and d <= SPLIT_THREADS and h % kvh == 0
  splits = rope_attention_splits(d, length)
  scale = repr(float(1.0 / math.sqrt(d)))
  threads, tile = SPLIT_THREADS, SPLIT_THREADS // KEY_THREADS
  opening = _rope_attention_opening(d, h, kvh, length, rope_rows, interleaved, mask, threads, split=True) + """\
  const int split = blockIdx.x % SPLITS, tid = threadIdx.x;
  const int count = cached + (stored ? 1 : 0);   /* keys: the cache's rows [0, cached), then the new row */
  const int chunk = (count + SPLITS - 1) / SPLITS;
  const int first = min(split * chunk, count), last = min(first + chunk, count);
"""
  # before the wait: what earlier steps wrote (the cache rows of the split's first tile, straight into registers)
  # and the rotation's angle; only q and the new row come from the kernel before this one
  opening += """\
  const int part = tid % KEY_THREADS, slot = tid / KEY_THREADS;   /* scoring: key `slot` of a tile, quarter `part` */
  const int dim = tid % HEAD_DIM, half = tid / HEAD_DIM;           /* values: dimension `dim`, keys half, half + HALVES, ... */
  const int stop = min(last, cached);                              /* the split's rows read from the cache */
  float4 k_tile[EPT / 4];
  float v_tile[TILE / HALVES];
  tg_load_tile(k_tile, v_tile, k_head, v_head, first, stop, slot, part, dim, half);
  float c = 1.0f, sn = 0.0f;
  if (tid < HEAD_DIM && cos_row) { c = cos_row[TG_ROPE_PAIR(tid)]; sn = sin_row[TG_ROPE_PAIR(tid)]; }
"""
  opening += _prefetch_rows("first + TILE", "stop", "true")
  return CUDA_PREAMBLE + f"""#define SPLITS {splits}
#define THREADS {threads}
#define KEY_THREADS {KEY_THREADS}
#define TILE {tile}
#define EPT {d // KEY_THREADS}
#define HALVES {threads // d}
/* a tile's cache rows [t0, t0 + TILE) below `stop` into a thread's registers: its quarter of key t0 + slot, and
   dimension dim of values t0 + half, t0 + half + HALVES, ... (rows at or past stop: zeros, never used) */
__device__ __forceinline__ void tg_load_tile(float4* k_tile, float* v_tile, const float* __restrict__ k_head,
    const float* __restrict__ v_head, int t0, int stop, int slot, int part, int dim, int half) {{
  const int j = t0 + slot;
  #pragma unroll
  for (int e = 0; e < EPT / 4; e++)
    k_tile[e] = j < stop ? ((const float4*)(k_head + (long long)j * {d} + part * EPT))[e] : make_float4(0.f, 0.f, 0.f, 0.f);
  #pragma unroll
  for (int u = 0; u < TILE / HALVES; u++) {{
    const int jj = t0 + half + u * HALVES;
    v_tile[u] = jj < stop ? v_head[(long long)jj * {d} + dim] : 0.0f;
  }}
}}
""" + opening + f"""\
  __shared__ __align__(16) float q_s[HEAD_DIM], k_s[HEAD_DIM], v_s[HEAD_DIM];
  __shared__ float score_s[TILE], prob_s[TILE], acc_s[HALVES][HEAD_DIM];
  __shared__ bool merges;
  if (tid < HEAD_DIM) {{   /* THREADS >= HEAD_DIM: one element each */
    const int i = tid;
    q_s[i] = tg_rope_by(q_new, i, c, sn);
    if (stored) {{
      const float k_rot = tg_rope_by(k_new, i, c, sn), v = v_new[i];
      k_s[i] = k_rot; v_s[i] = v;
      if (split == 0 && head % {h // kvh} == 0) {{   /* one block per kv head writes the new row; no block reads it from the cache */
        keys[rows + (long long)s0 * HEAD_DIM + i] = k_rot;
        values[rows + (long long)s0 * HEAD_DIM + i] = v;
      }}
    }}
  }}
  __syncthreads();
  float q[EPT];
  #pragma unroll
  for (int e = 0; e < EPT; e++) q[e] = q_s[part * EPT + e];
  float best = -INFINITY, total = 0.0f, acc = 0.0f;
  for (int t0 = first; t0 < last; t0 += TILE) {{
    const int j = t0 + slot;
    float dot = 0.0f;
    if (j < last) {{
      #pragma unroll
      for (int e = 0; e < EPT / 4; e++) {{   /* the new row (j = cached) from shared memory, the cache's from registers */
        const float4 k = j < cached ? k_tile[e] : ((const float4*)(k_s + part * EPT))[e];
        dot += q[4 * e] * k.x + q[4 * e + 1] * k.y + q[4 * e + 2] * k.z + q[4 * e + 3] * k.w;
      }}
    }}
    #pragma unroll
    for (int o = 1; o < KEY_THREADS; o <<= 1) dot += __shfl_xor_sync(0xffffffffu, dot, o);   /* a key's threads are neighbours */
    if (part == 0) score_s[slot] = j < last ? dot * {scale}f + (mask_row ? mask_row[j] : 0.0f) : -INFINITY;
    __syncthreads();
    float top = best;
    #pragma unroll
    for (int u = 0; u < TILE; u++) top = fmaxf(top, score_s[u]);
    if (tid < TILE) prob_s[tid] = score_s[tid] == -INFINITY ? 0.0f : expf(score_s[tid] - top);
    const float rescale = best == -INFINITY ? 0.0f : expf(best - top);
    __syncthreads();
    float tile_sum = 0.0f;
    #pragma unroll
    for (int u = 0; u < TILE; u++) tile_sum += prob_s[u];
    total = total * rescale + tile_sum;
    acc *= rescale;
    #pragma unroll
    for (int u = 0; u < TILE / HALVES; u++) {{
      const int jj = t0 + half + u * HALVES;
      if (jj < last) acc += prob_s[half + u * HALVES] * (jj < cached ? v_tile[u] : v_s[dim]);
    }}
    best = top;
    if (t0 + TILE < stop) tg_load_tile(k_tile, v_tile, k_head, v_head, t0 + TILE, stop, slot, part, dim, half);
    __syncthreads();   /* the next tile's scores overwrite score_s and prob_s */
  }}
  acc_s[half][dim] = acc;
  __syncthreads();
  float* mine = partials + ((long long)bh * SPLITS + split) * (HEAD_DIM + 2);
  if (tid < HEAD_DIM) {{
    float value = 0.0f;
    #pragma unroll
    for (int g = 0; g < HALVES; g++) value += acc_s[g][tid];
    mine[2 + tid] = value;
  }}
  if (tid == 0) {{ mine[0] = best; mine[1] = total; }}   /* a split without keys: -inf, 0 and zeros */
  __threadfence();
  __syncthreads();
  if (tid == 0) merges = atomicAdd(arrivals + bh, 1u) == SPLITS - 1;
  __syncthreads();
  if (!merges) return;
  __threadfence();   /* the other splits' partials, written before their arrivals, are visible from here on */
  const float* head_parts = partials + (long long)bh * SPLITS * (HEAD_DIM + 2);
  float top = -INFINITY;
  for (int p = 0; p < SPLITS; p++) top = fmaxf(top, __ldcg(head_parts + p * (HEAD_DIM + 2)));
  if (tid < HEAD_DIM) {{
    float value = 0.0f, sum = 0.0f;
    for (int p = 0; p < SPLITS; p++) {{   /* in split order: the same sums whichever block merges */
      const float m = __ldcg(head_parts + p * (HEAD_DIM + 2));
      const float share = m == -INFINITY ? 0.0f : expf(m - top);
      sum += __ldcg(head_parts + p * (HEAD_DIM + 2) + 1) * share;
      value += __ldcg(head_parts + p * (HEAD_DIM + 2) + 2 + tid) * share;
    }}
    out[(long long)bh * HEAD_DIM + tid] = value / sum;
  }}
  if (tid == 0) arrivals[bh] = 0u;   /* every split has arrived: ready for the next launch */
}}
"""


def render_rope_attention_wide(d: int, h: int, kvh: int, length: int, rope_rows: int, interleaved: bool, mask: bool) -> str:
  """The kernel of render_rope_attention for d a multiple of 32, with the work of a head spread over a block: the
  block rotates the query and the new key into shared memory, its ROPE_WARPS warps take every ROPE_WARPS-th key (the
  new row last, from shared memory), each lane D / 32 elements of a row (a warp reads a row in one coalesced load and
  sums its dot through shuffles), and the warps' softmaxes merge through shared memory. The lane-per-key kernel keeps
  a whole query and value sum per lane: at d = 128 that spills, and at a decode's short lengths most lanes idle."""
  assert d % 32 == 0 and h % kvh == 0
  scale = repr(float(1.0 / math.sqrt(d)))
  epl = d // 32
  vec = {1: "float", 2: "float2", 4: "float4"}.get(epl)
  fields = ["x", "y", "z", "w"][:epl]
  def load_row(dst: str, src: str) -> str:
    """C statements loading a lane's epl elements of row src into dst[]."""
    if vec is None: return f"for (int e = 0; e < EPL; e++) {dst}[e] = ({src})[lane * EPL + e];"
    if epl == 1: return f"{dst}[0] = ({src})[lane];"
    return f"{{ const {vec} t = ((const {vec}*)({src}))[lane]; " + " ".join(f"{dst}[{i}] = t.{f};" for i, f in enumerate(fields)) + " }"
  opening = _rope_attention_opening(d, h, kvh, length, rope_rows, interleaved, mask, 32 * ROPE_WARPS)
  opening += _prefetch_rows("0", "cached", f"head % {h // kvh} == 0")
  return CUDA_PREAMBLE + f"#define EPL {epl}\n#define WARPS {ROPE_WARPS}\n#define AT_ONCE {KEYS_AT_ONCE}\n" + opening + f"""\
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int count = cached + (stored ? 1 : 0);   /* keys: the cache's rows [0, cached), then the new row */
  __shared__ __align__(16) float q_s[HEAD_DIM], k_s[HEAD_DIM], v_s[HEAD_DIM];
  __shared__ __align__(16) float part_acc[WARPS][HEAD_DIM];
  __shared__ float part_best[WARPS], part_total[WARPS];
  for (int i = tid; i < HEAD_DIM; i += {32 * ROPE_WARPS}) {{
    q_s[i] = tg_rope_at(q_new, i, cos_row, sin_row);
    if (stored) {{
      const float k_rot = tg_rope_at(k_new, i, cos_row, sin_row), v = v_new[i];
      k_s[i] = k_rot; v_s[i] = v;
      if (head % {h // kvh} == 0) {{   /* one block per kv head writes the new row; no block reads it from the cache */
        keys[rows + (long long)s0 * HEAD_DIM + i] = k_rot;
        values[rows + (long long)s0 * HEAD_DIM + i] = v;
      }}
    }}
  }}
  __syncthreads();
  float q[EPL], acc[EPL];
  #pragma unroll
  for (int e = 0; e < EPL; e++) {{ q[e] = q_s[lane * EPL + e]; acc[e] = 0.0f; }}
  float best = -INFINITY, total = 0.0f;
  for (int first = warp * AT_ONCE; first < count; first += WARPS * AT_ONCE) {{
    float kr[AT_ONCE][EPL], vr[AT_ONCE][EPL], score[AT_ONCE];
    #pragma unroll
    for (int u = 0; u < AT_ONCE; u++) {{   /* a key past the end reads the new row (or row 0) and weighs nothing */
      const int s = first + u;
      const float* k_row = s < cached ? k_head + (long long)s * HEAD_DIM : stored ? k_s : k_head;
      const float* v_row = s < cached ? v_head + (long long)s * HEAD_DIM : stored ? v_s : v_head;
      {load_row("kr[u]", "k_row")}
      {load_row("vr[u]", "v_row")}
    }}
    #pragma unroll
    for (int u = 0; u < AT_ONCE; u++) {{
      float dot = 0.0f;
      #pragma unroll
      for (int e = 0; e < EPL; e++) dot += q[e] * kr[u][e];
      const int s = first + u;
      const float dot_sum = tg_warp_sum(dot);   /* s is the same for the whole warp: every lane sums */
      score[u] = s < count ? dot_sum * {scale}f + (mask_row ? mask_row[s] : 0.0f) : -INFINITY;
    }}
    #pragma unroll
    for (int u = 0; u < AT_ONCE; u++) {{   /* the online softmax (Milakov & Gimelshein 2018), key by key */
      if (score[u] == -INFINITY && best == -INFINITY) continue;
      const float grown = fmaxf(best, score[u]);
      const float rescale = expf(best - grown), weight = expf(score[u] - grown);
      total = total * rescale + weight;
      #pragma unroll
      for (int e = 0; e < EPL; e++) acc[e] = acc[e] * rescale + weight * vr[u][e];
      best = grown;
    }}
  }}
  if (lane == 0) {{ part_best[warp] = best; part_total[warp] = total; }}
  #pragma unroll
  for (int e = 0; e < EPL; e++) part_acc[warp][lane * EPL + e] = acc[e];
  __syncthreads();
  float top = -INFINITY;
  #pragma unroll
  for (int w = 0; w < WARPS; w++) top = fmaxf(top, part_best[w]);
  for (int i = tid; i < HEAD_DIM; i += {32 * ROPE_WARPS}) {{   /* the warps' softmaxes rescaled to the block's max */
    float value = 0.0f, sum = 0.0f;
    #pragma unroll
    for (int w = 0; w < WARPS; w++) {{
      const float share = part_best[w] == -INFINITY ? 0.0f : expf(part_best[w] - top);
      value += part_acc[w][i] * share;
      sum += part_total[w] * share;
    }}
    out[(long long)bh * HEAD_DIM + i] = value / sum;
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



class CUDARopeAttention:
  """Launches the RoPE + cache write + attention kernel for one model shape (recorded: a JIT replay is the launch)."""
  def __init__(self, device: str):
    self.device = device
    self._programs: dict[tuple, object] = {}

  def __call__(self, out: Buffer, qkv: Buffer, cos: Buffer, sin: Buffer, start: Buffer, keys: Buffer, values: Buffer,
               mask: Buffer | None, b: int, h: int, kvh: int, d: int, length: int, rope_rows: int, interleaved: bool) -> None:
    from teenygrad.engine.realize import CompiledKernel, ExecItem, launch
    key = (d, h, kvh, length, rope_rows, interleaved, mask is not None, b)
    if key not in self._programs:
      backend = Device[self.device]
      binary = backend.compiler.compile_cached(render_rope_attention(d, h, kvh, length, rope_rows, interleaved, mask is not None))
      grid = {"block": (rope_attention_threads(d, length), 1, 1), "grid": (rope_attention_blocks(b, h, d, length), 1, 1)}
      program = backend.program(rope_attention_name(d, h, kvh, length, interleaved, mask is not None), binary, grid)
      self._programs[key] = program, rope_attention_scratch(self.device, b, h, d, length)
    program, scratch = self._programs[key]
    kernel = CompiledKernel("rope_attention", program, [], [], "", b * h * length * d * 2, False)
    buffers = [out, qkv, cos, sin, start, keys, values] + ([mask] if mask is not None else []) + scratch
    launch(ExecItem(kernel, buffers, (), self.device))


def rope_attention_scratch(device: str, b: int, h: int, d: int, length: int) -> list[Buffer]:
  """The split kernel's own buffers (none for the others): each split's (max, sum, weighted values), and per head the
  count of splits arrived, zero between launches (the merging block resets it). One pair per kernel shape serves
  every layer: the layers' launches run one after another."""
  from teenygrad.dtype import dtypes
  import numpy as np
  splits = rope_attention_splits(d, length)
  if not splits: return []
  arrivals = Buffer(device, b * h, dtypes.uint32).copyin(np.zeros(b * h, np.uint32))
  return [Buffer(device, b * h * splits * (d + 2), dtypes.float32), arrivals]


_kernels: dict[str, CUDADecodeAttention] = {}
_rope_kernels: dict[str, CUDARopeAttention] = {}


def cuda_decode_attention(device: str) -> CUDADecodeAttention:
  if device not in _kernels: _kernels[device] = CUDADecodeAttention(device)
  return _kernels[device]


def cuda_rope_attention(device: str) -> CUDARopeAttention:
  if device not in _rope_kernels: _rope_kernels[device] = CUDARopeAttention(device)
  return _rope_kernels[device]


__all__ = ["CUDADecodeAttention", "CUDARopeAttention", "ROPE_WARPS", "attention_name", "cuda_decode_attention", "cuda_rope_attention",
           "render_attention", "render_rope_attention", "render_rope_attention_split", "render_rope_attention_wide", "rope_attention_blocks",
           "rope_attention_name", "rope_attention_scratch", "rope_attention_splits", "rope_attention_threads"]
