"""Q4_0 / Q4_1 weights repacked for the AVX2 integer linear: 8 rows of W interleaved per block, as llama.cpp's CPU
"repack" buffers do, so one 32-byte load holds 4 weights of each of 8 rows and one vpmaddubsw dots them all with the
same 4 bytes of x.

The layout (`repack`, numpy; the library reads it): W's rows in groups of 8 (the last one padded with zero rows), a
group's blocks one after another, each block 8 x type_size bytes:

    8 fp16 d (row 0..7) | Q4_1: 8 fp16 m | 4 chunks of 32 bytes: chunk c = bytes 4c..4c+3 of each row's 16 nibble bytes

Chunk c's low nibbles are weights 4c..4c+3 of the block, its high nibbles weights 16+4c..16+4c+3 (ggml's order). A
tile of 8 W rows by up to 4 rows of x (x rounded to int8 per 32, ggml's Q8_1, as before) forms, per block and row of
x, the 8 integer dot products in one register: 8 vpmaddubsw (the nibbles against the 4-byte broadcasts of x) summed in
int16 (each lane is two products of a nibble and an int8 of |x| <= 127: 8 x 2 x 15 x 127 < 2^15, no saturation), one
vpmaddwd to 8 int32, exact. Then, per output (row of x, row of W), in block order:

    acc = fma(float(q . xq) [- 8 sum xq for Q4_0], d dx, acc)          (Q4_0's nibbles are q + 8)
    acc = fma(m, dx sum xq, acc)                                        (Q4_1's offset term)

so an output's bits depend only on its own row of x and of W: the same for a decode step's 1 row, a server's batch
or a prefill's 512 (batch invariance), whatever the tile it lands in or the thread that runs it. Against the
previous per-(x row, W row) dots (two rows of x sharing each block's unpacking) the tile loads each x word once per 8
W rows, converts and scales once per 8 outputs and unpacks each weight once per 4 rows of x.
"""
from __future__ import annotations

import numpy as np

PACK_ROWS = 8
PACKED_TYPES = {"Q4_0": 2, "Q4_1": 4}   # type -> bytes of fp16 header (d, or d and m) per block


def packed(ggml_type: str) -> bool: return ggml_type in PACKED_TYPES


def repack(ggml_type: str, blocks: np.ndarray, n: int, k: int) -> np.ndarray:
  """GGUF blocks ((n, row_bytes) uint8) -> the packed layout, ceil(n / 8) groups, as one flat uint8 array."""
  header = PACKED_TYPES[ggml_type]
  type_size, nb, groups = header + 16, k // 32, -(-n // PACK_ROWS)
  b = np.zeros((groups * PACK_ROWS, nb, type_size), dtype=np.uint8)
  b[:n] = np.asarray(blocks, dtype=np.uint8).reshape(n, nb, type_size)
  b = b.reshape(groups, PACK_ROWS, nb, type_size).transpose(0, 2, 1, 3)          # (group, block, row, bytes)
  halves = [b[..., h:h + 2].reshape(groups, nb, 2 * PACK_ROWS) for h in range(0, header, 2)]   # d (and m) of the 8 rows
  quants = b[..., header:].reshape(groups, nb, PACK_ROWS, 4, 4).transpose(0, 1, 3, 2, 4)       # (group, block, chunk, row, 4)
  return np.concatenate(halves + [quants.reshape(groups, nb, 16 * PACK_ROWS)], axis=-1).reshape(-1)


def packed_nbytes(ggml_type: str, n: int, k: int) -> int:
  return -(-n // PACK_ROWS) * PACK_ROWS * (k // 32) * (PACKED_TYPES[ggml_type] + 16)


# the block's float step, per type: `dot` the 8 exact integer dots (as floats), d the 8 rows' scales, sb this row
# of x's (dx, its second value) for the block
_BLOCK_END = {
  "Q4_0": "acc[r] = _mm256_fmadd_ps(_mm256_sub_ps(dot, _mm256_broadcast_ss(sb + 1)), _mm256_mul_ps(d, _mm256_broadcast_ss(sb)), acc[r]);",
  "Q4_1": ("acc[r] = _mm256_fmadd_ps(dot, _mm256_mul_ps(d, _mm256_broadcast_ss(sb)), acc[r]);\n"
           "        acc[r] = _mm256_fmadd_ps(m, _mm256_broadcast_ss(sb + 1), acc[r]);"),
}
# the second value per 32 of x that tg_quantize_x8 stores: Q4_1 dx * sum xq (ggml's Q8_1 s), Q4_0 8 * sum xq (exact)
_X_SUM = {"Q4_0": "8.0f * (float)(sum)", "Q4_1": "(dx) * (float)(sum)"}


def render_packed(ggml_type: str) -> str:
  """The AVX2 tile of the packed layout and the driver over a job's groups (C, inside the type's library)."""
  header = PACKED_TYPES[ggml_type]
  load_m = ("__m256 m = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i*)(blk + 16)));" if ggml_type == "Q4_1" else "")
  return f"""
#if TG_Q_AVX2
#define TG_PACKED 1
#define TG_PACK_ROWS {PACK_ROWS}
#define TG_X_SUM(dx, sum) ({_X_SUM[ggml_type]})
static inline int32_t tg_i32(const int8_t* p) {{ int32_t v; memcpy(&v, p, 4); return v; }}

/* out[r * N + j] (+ residual) for r < R rows of x (xq: K bytes each, sx: 2 floats per 32) and the group's ncols <= 8
   rows of W; R is a constant at every call, so the loops over it unroll and acc, s stay in registers */
static inline __attribute__((always_inline)) void tg_packed_tile(const uint8_t* restrict group, const int8_t* restrict xq,
    const float* restrict sx, long nb, const int R, float* restrict out, long N, const float* restrict residual, long ncols) {{
  const long K = 32 * nb;
  const __m256i low4 = _mm256_set1_epi8(15), ones = _mm256_set1_epi16(1);
  __m256 acc[4];
  for (int r = 0; r < R; r++) acc[r] = _mm256_setzero_ps();
  for (long b = 0; b < nb; b++) {{
    const uint8_t* blk = group + b * (TG_PACK_ROWS * TG_TS);
    __m256 d = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i*)blk));
    {load_m}
    __m256i s[4];
    for (int r = 0; r < R; r++) s[r] = _mm256_setzero_si256();
    for (int c = 0; c < 4; c++) {{
      __m256i raw = _mm256_loadu_si256((const __m256i*)(blk + {header * PACK_ROWS} + 32 * c));
      __m256i lo = _mm256_and_si256(raw, low4), hi = _mm256_and_si256(_mm256_srli_epi16(raw, 4), low4);
      for (int r = 0; r < R; r++) {{
        const int8_t* xb = xq + r * K + 32 * b + 4 * c;
        s[r] = _mm256_add_epi16(s[r], _mm256_maddubs_epi16(lo, _mm256_set1_epi32(tg_i32(xb))));
        s[r] = _mm256_add_epi16(s[r], _mm256_maddubs_epi16(hi, _mm256_set1_epi32(tg_i32(xb + 16))));
        /* kept in order: left free, GCC reassociates the 32 int16 sums of a block into a tree and spills them */
        __asm__("" : "+x"(s[r]));
      }}
    }}
    for (int r = 0; r < R; r++) {{
      const float* sb = sx + r * 2 * nb + 2 * b;
      __m256 dot = _mm256_cvtepi32_ps(_mm256_madd_epi16(s[r], ones));
      {_BLOCK_END[ggml_type]}
    }}
  }}
  for (int r = 0; r < R; r++) {{
    float* o = out + r * N;
    const float* res = residual ? residual + r * N : 0;
    if (ncols == TG_PACK_ROWS) {{
      _mm256_storeu_ps(o, res ? _mm256_add_ps(_mm256_loadu_ps(res), acc[r]) : acc[r]);
    }} else {{
      float t[TG_PACK_ROWS];
      _mm256_storeu_ps(t, acc[r]);
      for (long j = 0; j < ncols; j++) o[j] = res ? res[j] + t[j] : t[j];
    }}
  }}
}}

/* groups [g0, g1) of W against every row of x, 64 rows of x (their int8, ~K * 64 bytes, stays in L2 with the
   groups) per pass, 4 rows per tile */
static void tg_packed_groups(const uint8_t* restrict w, const int8_t* restrict xq, const float* restrict sx,
    float* restrict out, const float* restrict residual, long nb, long M, long N, long g0, long g1) {{
  const long K = 32 * nb;
  for (long m0 = 0; m0 < M; m0 += 64) {{
    long m1 = M - m0 < 64 ? M : m0 + 64;
    for (long g = g0; g < g1; g++) {{
      const uint8_t* group = w + g * nb * (TG_PACK_ROWS * TG_TS);
      long n0 = g * TG_PACK_ROWS, ncols = N - n0 < TG_PACK_ROWS ? N - n0 : TG_PACK_ROWS;
      long m = m0;
      #define TG_TILE(R) tg_packed_tile(group, xq + m * K, sx + m * 2 * nb, nb, R, out + m * N + n0, N, \\
                                        residual ? residual + m * N + n0 : 0, ncols)
      for (; m + 4 <= m1; m += 4) TG_TILE(4);
      switch (m1 - m) {{ case 3: TG_TILE(3); break; case 2: TG_TILE(2); break; case 1: TG_TILE(1); break; default: break; }}
      #undef TG_TILE
    }}
  }}
}}
#endif
"""


__all__ = ["PACK_ROWS", "PACKED_TYPES", "packed", "packed_nbytes", "render_packed", "repack"]
