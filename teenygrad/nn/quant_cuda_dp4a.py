"""The packed Q4_0 / Q4_1 / Q8_0 matvec with x in int8: dp4a on 4 weights at a time, for the bandwidth-bound shapes.

    tg_qmatvec_packed_dp4a_<type>_<K>_<M>_<N>[_norm|_swiglu][_r](out, x, w[, norm][, residual])

nn/quant_cuda_packed.py's matvec meets each 16 bytes of Q4 weights with 128 bytes of float x (8 float4 loads through
L1) and widens every nibble to float: on an H200 an 8B model's projections read 1.03 TB/s of 4.27, bound by loads
and ALU rather than HBM. As llama.cpp's mmvq does, this one first rounds x to int8 per 32 columns (Q8_1: scale
d = amax / 127, values rint(x * 127 / amax)), so a lane's 4 weights of a block meet one 32-bit word of x in one __dp4a:

- each thread block quantizes the rows of x it needs into shared memory, CHUNK_STEPS x 1024 columns at a time (a
  warp per 128 columns, 8 lanes per 32-column block; the prologue, RMSNorm or silu(gate) * up, applied as it reads
  x), so no launch is added, 8 rows of x fit whatever K, and the norm's squares are summed on the way (per lane
  across the chunks, then per warp, then over the block's warps in a fixed order);
- then each warp runs the packed layout's steps (16-byte weight loads, ROWS_PER_WARP rows per warp, so each word of
  x read from shared memory serves that many rows), in two sets of registers of LOADS_AHEAD steps each: one set's
  loads are in flight while the other's products run, and the first while the block quantizes x. Per round t, lane
  l holds weights 128 t + 4 l + i (i < 4) of block 4 t + l / 8, whose x is int word 32 t + l of the step;
- Q4's nibbles become bytes with one __byte_perm; Q4_0's zero point (-8) is a dp4a of x alone, once per x word,
  folded into the integer sum; Q4_1's min multiplies d * (the 4 values' sum).

A row's arithmetic does not depend on the batch it is in (each row of x quantized on its own, the same sums in the
same order), so a row's output is bit-identical at batch 1 and 64. The result is exactly W @ dequantized(x)
up to float32 rounding: x's rounding is the only approximation, as in llama.cpp. Used from DP4A_MIN_WEIGHTS
weights up (`uses_dp4a`): a small matvec is bound by its launch, and there the float-x kernel's shorter start wins.
"""
from __future__ import annotations

from teenygrad.nn.matvec_cuda import (GRID_WAIT, GROUP_ROWS, early_loads, kernel_params, no_norm_weight, render_row_map, render_rows_out,
                                      render_weight_prefetch, render_x_reader)
from teenygrad.nn.quant_cuda_packed import (STEP, UINT4_PARTS, declare_weight_arrays, glu_rows_per_warp, packable, packed_bytes,
                                            render_weight_loads, render_weight_pointers, with_suffix)
from teenygrad.renderer.cuda import CUDA_PREAMBLE

DP4A_MIN_WEIGHTS = 1 << 22   # N * K from which the int8-x kernel is used (an 8B model's projections; not SmolLM2's)
WARPS = 16                   # warps per thread block: they share the block's quantized x (its cost per weight row)
ROWS_PER_WARP = 0            # weight rows a warp computes (each word of x from shared memory serves them all); 0: rows_per_warp
SMS = 132                    # an H200's multiprocessors
LOADS_AHEAD = 2              # steps of weight loads a lane issues before using them
CHUNK_STEPS = 16             # steps of x (16384 columns) quantized into shared memory at a time, as many as fit
SHARED_BYTES = 47 * 1024     # for quantized x, of the 48 KiB of static shared memory a block may declare


def x_row_bytes(columns: int) -> int:
  """Shared memory one quantized row of x takes: its int8 values and a float scale per 32."""
  return columns + 4 * (columns // 32)


def uses_dp4a(n: int, k: int) -> bool: return n * k >= DP4A_MIN_WEIGHTS


def chunk_steps(k: int, m: int = 1) -> int:
  """Steps of x in shared memory at a time: up to CHUNK_STEPS, and fewer where more rows of x (up to GROUP_ROWS)
  would not fit otherwise; a multiple of the two load batches, at most the row. One chunk for a whole row saves the
  block's barriers between chunks: Llama-3-8B's down projection (14 steps) at batch 1 on an H200 read 2255 GB/s
  in one chunk against 1984 in chunks of 4 (bench/matvec_cuda.py, 2026-12-02)."""
  pair = 2 * min(k // STEP, LOADS_AHEAD)
  fits = SHARED_BYTES // (min(m, GROUP_ROWS) * x_row_bytes(STEP))   # steps of every row of x the block holds
  steps = max(pair, min(CHUNK_STEPS, fits) // pair * pair)
  return min(steps, -(-(k // STEP) // pair) * pair)


def dp4a_group_rows(m: int, k: int) -> int:
  """Rows of x per thread block: up to GROUP_ROWS, as many as a chunk of each fits in shared memory."""
  return max(1, min(m, GROUP_ROWS, SHARED_BYTES // x_row_bytes(chunk_steps(k, m) * STEP)))


def dp4a_groups(m: int, k: int) -> int: return -(-m // dp4a_group_rows(m, k))


def rows_per_warp(n: int, glu: bool = False) -> int:
  """Weight rows per warp: 2 where that still leaves more thread blocks than the GPU has multiprocessors, else 1.
  The block's x is quantized once for all its rows, so more rows a block is less of that work per weight byte, but
  fewer blocks than SMs leave SMs idle. Llama-3-8B's shapes on an H200 (bench/matvec_cuda.py --sweep, 16 warps):
  gate_up (28672 rows) 3276 GB/s at 2 against 2939 at 1, qkv (6144) 2096 / 2040; o and down (4096 rows: 128
  blocks at 2) 1746 / 2061 and 1918 / 2287. With glu an even count (gate and up rows in pairs)."""
  rows = ROWS_PER_WARP or (2 if n > 2 * WARPS * SMS else 1)
  return glu_rows_per_warp(rows) if glu else rows


def dp4a_grid(m: int, n: int, k: int, glu: bool = False) -> int: return -(-n // (WARPS * rows_per_warp(n, glu))) * dp4a_groups(m, k)


def dp4a_name(ggml_type: str, k: int, m: int, n: int, prologue: str = "", residual: bool = False, glu: bool = False) -> str:
  return (f"tg_qmatvec_packed_dp4a_{ggml_type.lower()}_{k}_{m}_{n}{'_' + prologue if prologue else ''}{'_r' if residual else ''}"
          f"{'_glu' if glu else ''}")


# 4 values of x (lanes 8 g .. 8 g + 7 hold one 32-column block) -> 4 int8 in a word, and the block's scale
_QUANTIZE = """__device__ __forceinline__ unsigned int tg_q8(float v, float inverse) { return (unsigned int)__float2int_rn(v * inverse) & 255u; }
/* as llama.cpp's Q8_1 (CPU): d = amax / 127 over the 32 columns, each value rint(v * (127 / amax)), 0 where amax is 0
   (one division per 4 values; halves to even, a single conversion) */
__device__ __forceinline__ void tg_quantize(float4 v, int* q, float* d, int lane) {
  float amax = fmaxf(fmaxf(fabsf(v.x), fabsf(v.y)), fmaxf(fabsf(v.z), fabsf(v.w)));
  amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, 4));
  amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, 2));
  amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, 1));
  const float inverse = amax == 0.0f ? 0.0f : 127.0f / amax;
  *q = (int)(tg_q8(v.x, inverse) | (tg_q8(v.y, inverse) << 8) | (tg_q8(v.z, inverse) << 16) | (tg_q8(v.w, inverse) << 24));
  if ((lane & 7) == 0) *d = amax / 127.0f;
}
"""

# per type: what round t needs of x's word xv alone (shared by the rows), then one row's product
_X_TERMS = {
  "Q4_0": "          const int offset = __dp4a((int)0xf8f8f8f8u, xv, 0);   /* -8 x the 4 values' sum: the zero point */",
  "Q4_1": "          const float xs = dx * (float)__dp4a(0x01010101, xv, 0);   /* the 4 values' sum, for the min */",
  "Q8_0": "",
}
# Q4: the word holding rounds t and t + 1 (t even), bytes 2 t' and 2 t' + 1 weights 0, 1 and 2, 3 as nibble pairs
_NIBBLES = """            const unsigned int word = tg_word(q[u][r][0], t / 2);
            const int wv = (int)__byte_perm(word & 0x0f0f0f0fu, (word >> 4) & 0x0f0f0f0fu, t & 1 ? 0x7362 : 0x5140);
"""
_TERMS = {
  "Q4_0": _NIBBLES + "            acc[m][r] += tg_half(d[u][r], t) * dx * (float)__dp4a(wv, xv, offset);",
  "Q4_1": _NIBBLES + "            acc[m][r] += tg_half(d[u][r], t) * dx * (float)__dp4a(wv, xv, 0) + tg_half(mn[u][r], t) * xs;",
  "Q8_0": """            const int wv = (int)tg_word(q[u][r][t / 4], t % 4);
            acc[m][r] += tg_half(d[u][r], t) * dx * (float)__dp4a(wv, xv, 0);""",
}


def _render_quantize_x(prologue: str, last_chunk: bool) -> str:
  """C++ quantizing the chunk of x's rows that starts at step `chunk` into xq and xd; on the last chunk the norm's
  squares, summed across the chunks, go to sq_part (published by the barrier after it)."""
  sums = "      sq_part[m][warp] = tg_warp_sum(sq_lane[m]);\n" if prologue == "norm" else ""
  if sums and not last_chunk: sums = "      if (chunk + CHUNK >= STEPS) " + sums.lstrip()
  return f"""    #pragma unroll
    for (int m = 0; m < M_ROWS; m++) if (m < rows_here) {{
      #pragma unroll 4
      for (int c = chunk * 8 + warp; c < min(chunk + CHUNK, STEPS) * 8; c += WARPS)   /* 128 columns a warp */
        tg_quantize(tg_x4(x, g, m, c * 128 + lane * 4, sq_lane[m]), &xq[m][(c - chunk * 8) * 32 + lane],
                    &xd[m][(c - chunk * 8) * 4 + lane / 8], lane);
{sums}    }}
    __syncthreads();
"""


def _render_products(ggml_type: str, ahead: int, suffix: str, first: str, ragged: bool) -> str:
  """C++ of the products of one batch of loads (arrays named with `suffix`, steps first + u) with the quantized x."""
  return f"""    #pragma unroll
    for (int u = 0; u < {ahead}; u++) {{
      const int step = {first} + u;
{"      if (step >= STEPS) break;" + chr(10) if ragged else ""}      #pragma unroll
      for (int m = 0; m < M_ROWS; m++) if (m < rows_here) {{
        #pragma unroll
        for (int t = 0; t < 8; t++) {{
          /* the lane's columns step * {STEP} + 128 t + 4 lane + i, of block 32 step + 4 t + lane / 8 */
          const int xv = xq[m][(step - chunk) * 256 + t * 32 + lane];
          const float dx = xd[m][(step - chunk) * 32 + t * 4 + lane / 8];
{_X_TERMS[ggml_type]}
          #pragma unroll
          for (int r = 0; r < ROWS_PER_WARP; r++) {{
{with_suffix(_TERMS[ggml_type], suffix)}
          }}
        }}
      }}
    }}
"""


# the loop over chunks of x, or its one pass
_ONE_CHUNK = """  const int chunk = 0;
  {
"""
_CHUNKS = """  #pragma unroll 1
  for (int chunk = 0; chunk < STEPS; chunk += CHUNK) {
    if (chunk > 0) __syncthreads();   /* every warp is done with the last chunk */
"""


def render_dp4a_matvec(ggml_type: str, k: int, m: int, n: int, prologue: str = "", residual: bool = False, eps: float = 0.0,
                       glu: bool = False) -> str:
  """CUDA C of out (m, n) = prologue(x) (m, k) @ W.T (+ residual) for W (n, k) in the packed layout, x rounded to int8
  per 32 columns; with `glu`, out (m, n / 2) = silu(gate) * up of W's two halves (nn/matvec_cuda.py). The first batch
  of weight loads is issued before the grid-dependency wait (nn/matvec_cuda.early_loads)."""
  if not packable(ggml_type, k): raise ValueError(f"no int8-x matvec for {ggml_type} rows of {k} weights (rows of a multiple of {STEP})")
  steps, groups, ahead, chunk = k // STEP, dp4a_groups(m, k), min(k // STEP, LOADS_AHEAD), chunk_steps(k, m)
  ragged = steps % (2 * ahead) != 0
  one_chunk = chunk >= steps
  norm_sums = "  float sq_lane[M_ROWS];   /* the lane's squares of x, over the chunks */\n" + \
              "  __shared__ float sq_part[M_ROWS][WARPS];   /* each warp's */\n" if prologue == "norm" else "  float sq_lane[M_ROWS];\n"
  sq_init = "lane < WARPS ? sq_part[m][lane] : 0.0f" if prologue == "norm" else "0.0f"
  early = early_loads(packed_bytes(ggml_type, n, k))
  return CUDA_PREAMBLE + render_x_reader(prologue, k) + f"""#define M_ROWS {dp4a_group_rows(m, k)}
#define N_OUT {n}
#define ROWS_PER_WARP {rows_per_warp(n, glu)}
#define STEPS {steps}
#define CHUNK {chunk}
#define WARPS {WARPS}
{render_row_map(glu)}{UINT4_PARTS}{_QUANTIZE}extern "C" __global__ void __launch_bounds__({32 * WARPS})
{dp4a_name(ggml_type, k, m, n, prologue, residual, glu)}(float* __restrict__ out, const float* __restrict__ x,
    const unsigned char* __restrict__ w{kernel_params(prologue, residual)}) {{
{render_weight_prefetch(packed_bytes(ggml_type, n, k), wait=not early)}{no_norm_weight(prologue)}\
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  /* block b: W rows of block b / {groups}, x rows of group b % {groups} (M_ROWS each, the last one ragged); a warp
     past the last row computes that row again (it takes part in every barrier), the store skips it */
  const int m0 = (int)(blockIdx.x % {groups}) * M_ROWS, rows_here = min(M_ROWS, {m} - m0);
  const int row0 = ((int)(blockIdx.x / {groups}) * WARPS + warp) * ROWS_PER_WARP;
  x += (long long)m0 * X_STRIDE;
  __shared__ int xq[M_ROWS][CHUNK * 256];   /* a chunk of x: 4 int8 values a word, in column order */
  __shared__ float xd[M_ROWS][CHUNK * 32];  /* and a scale per 32 columns */
{norm_sums}{render_weight_pointers(ggml_type, n, k)}\
  /* two sets of weight registers, a batch of {ahead} steps each: one loading while the other's products run; the
     first batch is in flight while the block quantizes x */
{declare_weight_arrays(ggml_type, ahead)}{declare_weight_arrays(ggml_type, ahead, "_b")}\
{render_weight_loads(ggml_type, ahead, first="0", declare=False)}{GRID_WAIT if early else ""}\
  float acc[M_ROWS][ROWS_PER_WARP], sq[M_ROWS];   /* sq: lane w < WARPS holds warp w's squares */
  #pragma unroll
  for (int m = 0; m < M_ROWS; m++) {{
    sq_lane[m] = 0.0f;
    #pragma unroll
    for (int r = 0; r < ROWS_PER_WARP; r++) acc[m][r] = 0.0f;
  }}
{_ONE_CHUNK if one_chunk else _CHUNKS}\
{_render_quantize_x(prologue, one_chunk)}\
    #pragma unroll 1
    for (int first = chunk; first < min(chunk + CHUNK, STEPS); first += {2 * ahead}) {{
{render_weight_loads(ggml_type, ahead, "_b", f"first + {ahead}", declare=False)}\
{_render_products(ggml_type, ahead, "", "first", ragged)}\
{render_weight_loads(ggml_type, ahead, "", f"first + {2 * ahead}", declare=False)}\
{_render_products(ggml_type, ahead, "_b", f"first + {ahead}", ragged)}\
    }}
  }}
  #pragma unroll
  for (int m = 0; m < M_ROWS; m++) sq[m] = {sq_init};
{render_rows_out(prologue, residual, eps, glu)}}}
"""


__all__ = ["DP4A_MIN_WEIGHTS", "dp4a_grid", "dp4a_group_rows", "dp4a_name", "render_dp4a_matvec", "rows_per_warp", "uses_dp4a"]
