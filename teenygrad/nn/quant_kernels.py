"""C kernels for GGUF-quantized weights on the CPU: the weights stay in their GGML blocks and are dequantized in
registers inside the matmul.

One shared library per GGML type, compiled by the CPU backend's compiler (disk-cached), exporting:

    tg_qlinear_<type>(out, x, w, M, N, K, threads)      out (M, N) = x (M, K) @ W.T, W = N rows of K/BS blocks
    tg_qlinear_residual_<type>(out, x, w, residual, M, N, K, threads)   the same plus residual (M, N)
    tg_qrows_<type>(out, ids, w, err, n, N, K, threads) out (n, K) = W[ids]; an id outside [0, N) gives a zero row
                                                        and err[0] = 1
    tg_qlinear_x_bits_<type>()                          8 or 16 where tg_qlinear quantizes x (below), else 32
    tg_qlinear_packed_rows_<type>()                     8 where tg_qlinear's w is the packed layout (below), else 0

How `tg_qlinear` runs:
- AVX2, Q4_0 / Q4_1 / Q8_0, any number of rows M of x: what llama.cpp does. Each row of x is quantized on its own,
  to int8 per 32 for Q4_0 / Q4_1 (ggml's Q8_1: the result is W . x8, within ~1e-3 of W . x) and to int16 per 32 for
  Q8_0 (within ~1e-5), and each block's dot product is formed on bytes (vpmaddubsw) or words (vpmaddwd). Each output
  is formed by the same operations for every M, so a row's result is the same bits whatever batch it is in: a decode
  step of one stream, a server's batch of 64, a prefill chunk. Q4_0 / Q4_1 read W repacked once, 8 rows interleaved
  per block (quant_kernels_packed.py: tiles of 8 rows of W by 4 of x, as llama.cpp's repacked CPU weights); Q8_0
  streams its GGUF rows once per 64 rows of x.
- Otherwise, by M:
  - M == 1 (decode): a matvec that streams W once, so the only memory traffic is the quantized bytes. With AVX-512
    each block is dequantized into zmm registers and multiplied with x right there.
  - M < GEMM_MIN_ROWS: each W row is dequantized once into an L1 buffer and dotted with every row of x.
  - otherwise (prefill): a GotoBLAS-style GEMM with the microkernel of codegen/gemm.py, where packing B is
    dequantizing a KC x 32 slice of W (transposed) into the L1-resident panel, so every weight is dequantized once
    per task and reused across all MC rows of x in that task.
  These keep float x (logits within 1e-3 of transformers'), and a row's bits can differ between the three paths
  by float32 rounding (~1e-6).
The W rows of a product of fewer than GEMM_MIN_ROWS rows of x (decode) split over threads through
device/cpu_pool.py; bigger ones (prefill) use OpenMP, like the kernels around them.

Block layouts follow ggml (ggml-common.h / gguf-py quants.py); the per-element arithmetic is done in the same
order as gguf-py's numpy dequantize (fp16 scale widened to fp32, separate multiply and add: the compiler runs
with -ffp-contract=off), so `tg_qrows` is bit-exact with it. Every type has a scalar path too (no AVX-512 or AVX2,
or TG_QUANT_SCALAR defined) that gives the same bits; TG_QUANT_AVX2 picks the AVX2 code on an AVX-512 machine.
"""
from __future__ import annotations

from dataclasses import dataclass

from teenygrad.codegen.gemm import GEMM_PREAMBLE, TILES
from teenygrad.nn.quant_kernels_packed import packed, render_packed


@dataclass(frozen=True)
class GGMLType:
  name: str
  block_size: int   # weights per block
  type_size: int    # bytes per block


GGML_TYPES: dict[str, GGMLType] = {t.name: t for t in (
  GGMLType("Q4_0", 32, 18), GGMLType("Q4_1", 32, 20), GGMLType("Q5_0", 32, 22), GGMLType("Q5_1", 32, 24),
  GGMLType("Q8_0", 32, 34), GGMLType("Q4_K", 256, 144), GGMLType("Q5_K", 256, 176), GGMLType("Q6_K", 256, 210))}

GEMM_MIN_ROWS = 12         # from this many rows of x the packed GEMM beats per-row dots (measured on 4096x4096 Q4_1)
KC = 256                   # depth of one packed slice: a multiple of every block size; 32 x KC floats = 32 KiB
NC = 64                    # W rows per GEMM task at most (2 or 4 panels of NR): their KC slice, dequantized, stays in L1/L2
MC = 144                   # x rows packed at a time (12 or 24 panels of MR), in L2
MS = 1020                  # x rows per GEMM task at most (a multiple of MR): bounds the task's C block to MS x NC floats
# few-row products and row gathers over fewer weight bytes stay on one thread: a fork/join costs microseconds on a
# quiet machine but a scheduler time slice (~10-20 ms, measured) whenever the cores are shared and the worker is not
# running
PARALLEL_MIN_BYTES = 1 << 20
# the matvec splits from here: a 128 KiB matvec is ~16 us of work on one core (8 GB/s), a fork/join ~1-2 us to a
# spinning worker, so every SmolLM2 layer matrix (207-1106 KB) splits
MATVEC_PARALLEL_MIN_BYTES = 128 << 10
# the matvec's rows go out in this many dynamic chunks per thread: a worker the (shared) cores run late finds the
# chunks taken by the others instead of holding the join for a static half, and the halves stay within a chunk of even
MATVEC_CHUNKS_PER_THREAD = 8

# ---- per type: scalar dequantize of one block into y[BS], and the AVX-512 one into v[BS / 16] ----
# Both compute each weight with the same float operations in the same order, so they give the same bits.

_SCALAR = {
  "Q4_0": """
  float d = tg_half(b);
  for (int l = 0; l < 16; l++) {
    y[l] = d * (float)((b[2 + l] & 15) - 8);
    y[l + 16] = d * (float)((b[2 + l] >> 4) - 8);
  }""",
  "Q4_1": """
  float d = tg_half(b), m = tg_half(b + 2);
  for (int l = 0; l < 16; l++) {
    y[l] = d * (float)(b[4 + l] & 15) + m;
    y[l + 16] = d * (float)(b[4 + l] >> 4) + m;
  }""",
  "Q5_0": """
  float d = tg_half(b);
  uint32_t qh = tg_u32(b + 2);
  for (int l = 0; l < 16; l++) {
    y[l] = d * (float)((int)((b[6 + l] & 15) | (((qh >> l) & 1) << 4)) - 16);
    y[l + 16] = d * (float)((int)((b[6 + l] >> 4) | (((qh >> (l + 16)) & 1) << 4)) - 16);
  }""",
  "Q5_1": """
  float d = tg_half(b), m = tg_half(b + 2);
  uint32_t qh = tg_u32(b + 4);
  for (int l = 0; l < 16; l++) {
    y[l] = d * (float)((b[8 + l] & 15) | (((qh >> l) & 1) << 4)) + m;
    y[l + 16] = d * (float)((b[8 + l] >> 4) | (((qh >> (l + 16)) & 1) << 4)) + m;
  }""",
  "Q8_0": """
  float d = tg_half(b);
  for (int l = 0; l < 32; l++) y[l] = (float)(int8_t)b[2 + l] * d;""",
  "Q4_K": """
  float d = tg_half(b), dmin = tg_half(b + 2);
  uint8_t sc[8], mn[8];
  tg_scale_min_k4(b + 4, sc, mn);
  for (int s = 0; s < 8; s++) {
    float dl = d * (float)sc[s], ml = dmin * (float)mn[s];
    const uint8_t* q = b + 16 + 32 * (s / 2);
    for (int l = 0; l < 32; l++) y[32 * s + l] = dl * (float)((s & 1) ? q[l] >> 4 : q[l] & 15) - ml;
  }""",
  "Q5_K": """
  float d = tg_half(b), dmin = tg_half(b + 2);
  uint8_t sc[8], mn[8];
  tg_scale_min_k4(b + 4, sc, mn);
  const uint8_t* qh = b + 16;
  for (int s = 0; s < 8; s++) {
    float dl = d * (float)sc[s], ml = dmin * (float)mn[s];
    const uint8_t* q = b + 48 + 32 * (s / 2);
    for (int l = 0; l < 32; l++)
      y[32 * s + l] = dl * (float)(((s & 1) ? q[l] >> 4 : q[l] & 15) | (((qh[l] >> s) & 1) << 4)) - ml;
  }""",
  "Q6_K": """
  float d = tg_half(b + 208);
  for (int h = 0; h < 2; h++) {
    const uint8_t* ql = b + 64 * h;
    const uint8_t* qh = b + 128 + 32 * h;
    const int8_t* sc = (const int8_t*)(b + 192 + 8 * h);
    for (int g = 0; g < 4; g++)
      for (int l = 0; l < 32; l++) {
        int lo = (g & 1) ? ql[l + 32] : ql[l];
        lo = (g & 2) ? lo >> 4 : lo & 15;
        int q = (lo | (((qh[l] >> (2 * g)) & 3) << 4)) - 32;
        y[128 * h + 32 * g + l] = (d * (float)sc[2 * g + l / 16]) * (float)q;
      }
  }""",
}

_SIMD = {
  "Q4_0": """
  __m512 d = _mm512_set1_ps(tg_half(b));
  __m512i q = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i*)(b + 2))), eight = _mm512_set1_epi32(8);
  v[0] = _mm512_mul_ps(d, _mm512_cvtepi32_ps(_mm512_sub_epi32(_mm512_and_si512(q, _mm512_set1_epi32(15)), eight)));
  v[1] = _mm512_mul_ps(d, _mm512_cvtepi32_ps(_mm512_sub_epi32(_mm512_srli_epi32(q, 4), eight)));""",
  "Q4_1": """
  __m512 d = _mm512_set1_ps(tg_half(b)), m = _mm512_set1_ps(tg_half(b + 2));
  __m512i q = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i*)(b + 4)));
  v[0] = _mm512_add_ps(_mm512_mul_ps(d, _mm512_cvtepi32_ps(_mm512_and_si512(q, _mm512_set1_epi32(15)))), m);
  v[1] = _mm512_add_ps(_mm512_mul_ps(d, _mm512_cvtepi32_ps(_mm512_srli_epi32(q, 4))), m);""",
  "Q5_0": """
  __m512 d = _mm512_set1_ps(tg_half(b));
  __m512i qh = _mm512_set1_epi32((int)tg_u32(b + 2)), one = _mm512_set1_epi32(1), sixteen = _mm512_set1_epi32(16);
  __m512i lanes = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  __m512i q = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i*)(b + 6)));
  __m512i hi0 = _mm512_slli_epi32(_mm512_and_si512(_mm512_srlv_epi32(qh, lanes), one), 4);
  __m512i hi1 = _mm512_slli_epi32(_mm512_and_si512(_mm512_srlv_epi32(qh, _mm512_add_epi32(lanes, sixteen)), one), 4);
  __m512i q0 = _mm512_or_si512(_mm512_and_si512(q, _mm512_set1_epi32(15)), hi0);
  __m512i q1 = _mm512_or_si512(_mm512_srli_epi32(q, 4), hi1);
  v[0] = _mm512_mul_ps(d, _mm512_cvtepi32_ps(_mm512_sub_epi32(q0, sixteen)));
  v[1] = _mm512_mul_ps(d, _mm512_cvtepi32_ps(_mm512_sub_epi32(q1, sixteen)));""",
  "Q5_1": """
  __m512 d = _mm512_set1_ps(tg_half(b)), m = _mm512_set1_ps(tg_half(b + 2));
  __m512i qh = _mm512_set1_epi32((int)tg_u32(b + 4)), one = _mm512_set1_epi32(1);
  __m512i lanes = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  __m512i q = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i*)(b + 8)));
  __m512i hi0 = _mm512_slli_epi32(_mm512_and_si512(_mm512_srlv_epi32(qh, lanes), one), 4);
  __m512i hi1 = _mm512_slli_epi32(_mm512_and_si512(_mm512_srlv_epi32(qh, _mm512_add_epi32(lanes, _mm512_set1_epi32(16))), one), 4);
  v[0] = _mm512_add_ps(_mm512_mul_ps(d, _mm512_cvtepi32_ps(_mm512_or_si512(_mm512_and_si512(q, _mm512_set1_epi32(15)), hi0))), m);
  v[1] = _mm512_add_ps(_mm512_mul_ps(d, _mm512_cvtepi32_ps(_mm512_or_si512(_mm512_srli_epi32(q, 4), hi1))), m);""",
  "Q8_0": """
  __m512 d = _mm512_set1_ps(tg_half(b));
  v[0] = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i*)(b + 2)))), d);
  v[1] = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i*)(b + 18)))), d);""",
  "Q4_K": """
  float d = tg_half(b), dmin = tg_half(b + 2);
  uint8_t sc[8], mn[8];
  tg_scale_min_k4(b + 4, sc, mn);
  __m512i low4 = _mm512_set1_epi32(15);
  for (int s = 0; s < 8; s++) {
    __m512 dl = _mm512_set1_ps(d * (float)sc[s]), ml = _mm512_set1_ps(dmin * (float)mn[s]);
    for (int half = 0; half < 2; half++) {
      __m512i q = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i*)(b + 16 + 32 * (s / 2) + 16 * half)));
      q = (s & 1) ? _mm512_srli_epi32(q, 4) : _mm512_and_si512(q, low4);
      v[2 * s + half] = _mm512_sub_ps(_mm512_mul_ps(dl, _mm512_cvtepi32_ps(q)), ml);
    }
  }""",
  "Q5_K": """
  float d = tg_half(b), dmin = tg_half(b + 2);
  uint8_t sc[8], mn[8];
  tg_scale_min_k4(b + 4, sc, mn);
  __m512i low4 = _mm512_set1_epi32(15), one = _mm512_set1_epi32(1);
  __m512i qh0 = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i*)(b + 16)));
  __m512i qh1 = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i*)(b + 32)));
  for (int s = 0; s < 8; s++) {
    __m512 dl = _mm512_set1_ps(d * (float)sc[s]), ml = _mm512_set1_ps(dmin * (float)mn[s]);
    for (int half = 0; half < 2; half++) {
      __m512i q = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i*)(b + 48 + 32 * (s / 2) + 16 * half)));
      q = (s & 1) ? _mm512_srli_epi32(q, 4) : _mm512_and_si512(q, low4);
      __m512i hbit = _mm512_and_si512(_mm512_srli_epi32(half ? qh1 : qh0, s), one);
      q = _mm512_or_si512(q, _mm512_slli_epi32(hbit, 4));
      v[2 * s + half] = _mm512_sub_ps(_mm512_mul_ps(dl, _mm512_cvtepi32_ps(q)), ml);
    }
  }""",
  "Q6_K": """
  float d = tg_half(b + 208);
  __m512i low4 = _mm512_set1_epi32(15), three = _mm512_set1_epi32(3), bias = _mm512_set1_epi32(32);
  for (int h = 0; h < 2; h++) {
    const uint8_t* ql = b + 64 * h;
    const uint8_t* qh = b + 128 + 32 * h;
    const int8_t* sc = (const int8_t*)(b + 192 + 8 * h);
    for (int half = 0; half < 2; half++) {
      __m512i hb = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i*)(qh + 16 * half)));
      __m512i l0 = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i*)(ql + 16 * half)));
      __m512i l1 = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i*)(ql + 32 + 16 * half)));
      for (int g = 0; g < 4; g++) {
        __m512i lo = (g & 1) ? l1 : l0;
        lo = (g & 2) ? _mm512_srli_epi32(lo, 4) : _mm512_and_si512(lo, low4);
        __m512i hi = _mm512_slli_epi32(_mm512_and_si512(_mm512_srli_epi32(hb, 2 * g), three), 4);
        __m512i q = _mm512_sub_epi32(_mm512_or_si512(lo, hi), bias);
        __m512 dl = _mm512_set1_ps(d * (float)sc[2 * g + half]);
        v[8 * h + 2 * g + half] = _mm512_mul_ps(dl, _mm512_cvtepi32_ps(q));
      }
    }
  }""",
}

# ---- per type, AVX-512: the dot product of one block with x, scales factored out of the inner products ----
# sum_l (d q_l + m) x_l = d (sum_l q_l x_l) + m (sum_l x_l): the block's q.x is formed on small integers converted
# to float, scaled once per block, and the min term uses per-32 sums of x computed once per call (xs). This costs
# ~30% fewer vector ops per weight than dequantizing first. Updates acc0/acc1 (vectors) and accm (scalar).
_DOT = {
  "Q4_0": """
  __m512i q = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i*)(b + 2))), eight = _mm512_set1_epi32(8);
  __m512 t = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(_mm512_and_si512(q, _mm512_set1_epi32(15)), eight)), _mm512_loadu_ps(xb));
  t = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_sub_epi32(_mm512_srli_epi32(q, 4), eight)), _mm512_loadu_ps(xb + 16), t);
  *acc0 = _mm512_fmadd_ps(_mm512_set1_ps(tg_half(b)), t, *acc0);""",
  "Q4_1": """
  __m512i q = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i*)(b + 4)));
  __m512 t = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_and_si512(q, _mm512_set1_epi32(15))), _mm512_loadu_ps(xb));
  t = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_srli_epi32(q, 4)), _mm512_loadu_ps(xb + 16), t);
  *acc0 = _mm512_fmadd_ps(_mm512_set1_ps(tg_half(b)), t, *acc0);
  *accm += tg_half(b + 2) * xs[0];""",
  "Q8_0": """
  __m512 t = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i*)(b + 2)))), _mm512_loadu_ps(xb));
  t = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i*)(b + 18)))), _mm512_loadu_ps(xb + 16), t);
  *acc0 = _mm512_fmadd_ps(_mm512_set1_ps(tg_half(b)), t, *acc0);""",
  "Q4_K": """
  float d = tg_half(b), dmin = tg_half(b + 2);
  uint8_t sc[8], mn[8];
  tg_scale_min_k4(b + 4, sc, mn);
  __m512i low4 = _mm512_set1_epi32(15);
  for (int s = 0; s < 8; s += 2) {
    __m512i q0 = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i*)(b + 16 + 16 * s)));
    __m512i q1 = _mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i*)(b + 32 + 16 * s)));
    __m512 t = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_and_si512(q0, low4)), _mm512_loadu_ps(xb + 32 * s));
    t = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_and_si512(q1, low4)), _mm512_loadu_ps(xb + 32 * s + 16), t);
    __m512 u = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_srli_epi32(q0, 4)), _mm512_loadu_ps(xb + 32 * s + 32));
    u = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_srli_epi32(q1, 4)), _mm512_loadu_ps(xb + 32 * s + 48), u);
    *acc0 = _mm512_fmadd_ps(_mm512_set1_ps(d * (float)sc[s]), t, *acc0);
    *acc1 = _mm512_fmadd_ps(_mm512_set1_ps(d * (float)sc[s + 1]), u, *acc1);
    *accm -= dmin * (float)mn[s] * xs[s] + dmin * (float)mn[s + 1] * xs[s + 1];
  }""",
}

# ---- per type, AVX2 (machines without AVX-512): the block's dot product on small integers ----
# Q4_0 / Q4_1 run on weights repacked 8 rows at a time (quant_kernels_packed.py), with x rounded to int8 per 32 like
# ggml's Q8_1 activations (tg_quantize_x8). Q8_0 dots one row of W at a time:

# one fp16 scale d times dx: the integer dot's scale (no offset term)
_AVX2_SCALE_ONLY = """
  __m128 sc = _mm_mul_ss(_mm_cvtph_ps(_mm_cvtsi32_si128((int)b[0] | ((int)b[1] << 8))), _mm_load_ss(sx));
  *acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(p), _mm256_broadcastss_ps(sc), *acc);"""

# Q8_0 keeps x at 16 bits (int16 per 32, dx = max |x| / 32767; tg_quantize_x16): its byte weights widen to int16 in
# one instruction each, so the 8-bit dot measured no faster (SmolLM2's 30 MB Q8_0 head is bandwidth-bound at 8.5
# GB/s on one Zen 3 core either way), and x rounded to 8 bits would double the error of 8-bit weights: the head's
# logits stay within 1e-3 of transformers'
_DOT_AVX2_X16 = {
  "Q8_0": """
  __m256i q0 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i*)(b + 2)));
  __m256i q1 = _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i*)(b + 18)));
  __m256i p = _mm256_add_epi32(_mm256_madd_epi16(q0, _mm256_loadu_si256((const __m256i*)xq)),
                               _mm256_madd_epi16(q1, _mm256_loadu_si256((const __m256i*)(xq + 16))));""" + _AVX2_SCALE_ONLY,
}

_COMMON = r"""
#include <stdint.h>
#include <string.h>
#if defined(__AVX512F__) && defined(__F16C__) && !defined(TG_QUANT_SCALAR) && !defined(TG_QUANT_AVX2)
#include <immintrin.h>
#define TG_Q_SIMD 1
#define TG_Q_AVX2 0
#elif defined(__AVX2__) && defined(__FMA__) && defined(__F16C__) && !defined(TG_QUANT_SCALAR)
#include <immintrin.h>
#define TG_Q_SIMD 0
#define TG_Q_AVX2 1
#else
#define TG_Q_SIMD 0
#define TG_Q_AVX2 0
#endif

static inline uint32_t tg_u32(const uint8_t* p) { uint32_t v; memcpy(&v, p, 4); return v; }  /* little endian */

/* an IEEE half (little endian bytes) widened to float: exact */
static inline float tg_half(const uint8_t* p) {
  uint16_t h = (uint16_t)(p[0] | (p[1] << 8));
#if TG_Q_SIMD || TG_Q_AVX2
  return _cvtsh_ss(h);
#else
  uint32_t sign = (uint32_t)(h & 0x8000) << 16, exponent = (h >> 10) & 31, mantissa = h & 1023, bits;
  if (exponent == 0) {
    float f = (float)mantissa * 5.9604644775390625e-8f;   /* subnormal: mantissa * 2^-24, exact */
    return sign ? -f : f;
  }
  bits = exponent == 31 ? (sign | 0x7F800000u | (mantissa << 13)) : (sign | ((exponent + 112) << 23) | (mantissa << 13));
  float f;
  memcpy(&f, &bits, 4);
  return f;
#endif
}

#if TG_Q_AVX2
static inline float tg_hsum256(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  return _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)));
}

static inline float tg_hmax256(__m256 v) {
  __m128 s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_max_ps(s, _mm_movehl_ps(s, s));
  return _mm_cvtss_f32(_mm_max_ss(s, _mm_movehdup_ps(s)));
}
#endif

/* the 6-bit scales and mins of Q4_K / Q5_K: 8 of each packed into 12 bytes */
static inline void tg_scale_min_k4(const uint8_t* s, uint8_t* sc, uint8_t* mn) {
  for (int j = 0; j < 4; j++) { sc[j] = s[j] & 63; mn[j] = s[j + 4] & 63; }
  for (int j = 4; j < 8; j++) {
    sc[j] = (s[j + 4] & 15) | ((s[j - 4] >> 6) << 4);
    mn[j] = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
  }
}
"""

_GENERIC = r"""
/* one row of W (nb blocks) dequantized into y */
static inline void tg_deq_row(const uint8_t* restrict w, float* restrict y, long nb) {
  for (long i = 0; i < nb; i++) {
#if TG_Q_SIMD
    __m512 v[TG_VPB];
    tg_deq_v(w + i * TG_TS, v);
    for (int j = 0; j < TG_VPB; j++) _mm512_storeu_ps(y + i * TG_BS + 16 * j, v[j]);
#else
    tg_deq_s(w + i * TG_TS, y + i * TG_BS);
#endif
  }
}

/* sum_k W[row, k] * x[k], dequantizing in registers; xs holds the sums of x over each 32 (TG_DOT types only) */
static inline float tg_dot_row(const uint8_t* restrict w, const float* restrict x, const float* restrict xs, long nb) {
#if TG_Q_SIMD && defined(TG_HAS_DOT)
  __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
  float accm = 0.0f;
  long i = 0;
  for (; i + 1 < nb; i += 2) {   /* two blocks per step into separate accumulators: no dependency chain */
    tg_dot_block(w + i * TG_TS, x + i * TG_BS, xs + i * (TG_BS / 32), &acc0, &acc1, &accm);
    tg_dot_block(w + (i + 1) * TG_TS, x + (i + 1) * TG_BS, xs + (i + 1) * (TG_BS / 32), &acc1, &acc0, &accm);
  }
  if (i < nb) tg_dot_block(w + i * TG_TS, x + i * TG_BS, xs + i * (TG_BS / 32), &acc0, &acc1, &accm);
  return _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1)) + accm;
#elif TG_Q_SIMD
  (void)xs;
  __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
  for (long i = 0; i < nb; i++) {
    __m512 v[TG_VPB];
    tg_deq_v(w + i * TG_TS, v);
    const float* xb = x + i * TG_BS;
    for (int j = 0; j < TG_VPB; j += 2) {
      acc0 = _mm512_fmadd_ps(v[j], _mm512_loadu_ps(xb + 16 * j), acc0);
      acc1 = _mm512_fmadd_ps(v[j + 1], _mm512_loadu_ps(xb + 16 * j + 16), acc1);
    }
  }
  return _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1));
#else
  (void)xs;
  float y[TG_BS], acc = 0.0f;
  for (long i = 0; i < nb; i++) {
    tg_deq_s(w + i * TG_TS, y);
    for (int j = 0; j < TG_BS; j++) acc += y[j] * x[i * TG_BS + j];
  }
  return acc;
#endif
}

#if TG_Q_AVX2 && (defined(TG_PACKED) || defined(TG_HAS_DOT16))
/* 32 floats of x into v[4], and their largest |x| (what both x quantizers scale by) */
static inline float tg_load32_amax(const float* restrict x, __m256 v[4]) {
  const __m256 sign = _mm256_set1_ps(-0.0f);
  __m256 m = _mm256_setzero_ps();
  for (int j = 0; j < 4; j++) {
    v[j] = _mm256_loadu_ps(x + 8 * j);
    m = _mm256_max_ps(m, _mm256_andnot_ps(sign, v[j]));
  }
  return tg_hmax256(m);
}

/* round(v * inv) to int32, to nearest even */
static inline __m256i tg_round_scaled(__m256 v, __m256 inv) {
  return _mm256_cvtps_epi32(_mm256_round_ps(_mm256_mul_ps(v, inv), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
}
#endif

#if TG_Q_AVX2 && defined(TG_PACKED)
static inline int tg_hsum256_epi32(__m256i v) {
  __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  s = _mm_add_epi32(s, _mm_unpackhi_epi64(s, s));
  return _mm_cvtsi128_si32(_mm_add_epi32(s, _mm_shuffle_epi32(s, 1)));
}

/* x (K) as ggml's Q8_1 activations (llama.cpp's quantize_row_q8_1): xq[l] = round(x[l] * 127 / amax) per 32, amax
   its largest |x|; sx[2i] = dx = amax / 127, sx[2i + 1] = TG_X_SUM(dx, the sum of its xq) (Q4_1: Q8_1's s) */
static inline void tg_quantize_x8(const float* restrict x, int8_t* restrict xq, float* restrict sx, long K) {
  for (long i = 0; i < K / 32; i++) {
    __m256 v[4];
    float amax = tg_load32_amax(x + 32 * i, v);
    __m256 inv = _mm256_set1_ps(amax != 0.0f ? 127.0f / amax : 0.0f);
    __m256i q[4];
    for (int j = 0; j < 4; j++) q[j] = tg_round_scaled(v[j], inv);
    __m256i sum = _mm256_add_epi32(_mm256_add_epi32(q[0], q[1]), _mm256_add_epi32(q[2], q[3]));
    /* the packs work per 128-bit lane: the permute puts the 32-bit groups back in order */
    __m256i packed = _mm256_packs_epi16(_mm256_packs_epi32(q[0], q[1]), _mm256_packs_epi32(q[2], q[3]));
    _mm256_storeu_si256((__m256i*)(xq + 32 * i), _mm256_permutevar8x32_epi32(packed, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7)));
    float dx = amax / 127.0f;
    sx[2 * i] = dx;
    sx[2 * i + 1] = TG_X_SUM(dx, tg_hsum256_epi32(sum));
  }
}

#endif

#if TG_Q_AVX2 && defined(TG_HAS_DOT16)
/* x (K) to int16 per 32: xq[l] = round(x[l] * 32767 / amax), amax the 32's largest |x|; dx[i] = amax / 32767 */
static inline void tg_quantize_x16(const float* restrict x, int16_t* restrict xq, float* restrict dx, long K) {
  for (long i = 0; i < K / 32; i++) {
    __m256 v[4];
    float amax = tg_load32_amax(x + 32 * i, v);
    __m256 inv = _mm256_set1_ps(amax != 0.0f ? 32767.0f / amax : 0.0f);
    for (int j = 0; j < 4; j += 2) {
      __m256i a = tg_round_scaled(v[j], inv), c = tg_round_scaled(v[j + 1], inv);
      /* packs works per 128-bit lane: put the 64-bit quarters back in order */
      _mm256_storeu_si256((__m256i*)(xq + 32 * i + 8 * j), _mm256_permute4x64_epi64(_mm256_packs_epi32(a, c), 0xD8));
    }
    dx[i] = amax / 32767.0f;
  }
}

static inline float tg_dot_row16(const uint8_t* restrict w, const int16_t* restrict xq, const float* restrict dx, long nb) {
  __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
  long i = 0;
  for (; i + 1 < nb; i += 2) {   /* two blocks per step into separate accumulators: no dependency chain */
    tg_dot_block16(w + i * TG_TS, xq + 32 * i, dx + i, &acc0);
    tg_dot_block16(w + (i + 1) * TG_TS, xq + 32 * (i + 1), dx + i + 1, &acc1);
  }
  if (i < nb) tg_dot_block16(w + i * TG_TS, xq + 32 * i, dx + i, &acc0);
  return tg_hsum256(_mm256_add_ps(acc0, acc1));
}
#endif

static inline float tg_dot_f32(const float* restrict a, const float* restrict b, long n) {
#if TG_Q_SIMD
  __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
  long k = 0;
  for (; k + 32 <= n; k += 32) {
    acc0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + k), _mm512_loadu_ps(b + k), acc0);
    acc1 = _mm512_fmadd_ps(_mm512_loadu_ps(a + k + 16), _mm512_loadu_ps(b + k + 16), acc1);
  }
  float acc = _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1));
  for (; k < n; k++) acc += a[k] * b[k];   /* K is a multiple of 32: never runs */
  return acc;
#elif TG_Q_AVX2
  __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
  long k = 0;
  for (; k + 16 <= n; k += 16) {
    acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + k), _mm256_loadu_ps(b + k), acc0);
    acc1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + k + 8), _mm256_loadu_ps(b + k + 8), acc1);
  }
  float acc = tg_hsum256(_mm256_add_ps(acc0, acc1));
  for (; k < n; k++) acc += a[k] * b[k];
  return acc;
#else
  float acc = 0.0f;
  for (long k = 0; k < n; k++) acc += a[k] * b[k];
  return acc;
#endif
}

/* b_panel[k][c] = W[j0 + c, k0 + k] for c < ncols (zero above), k < kc: the GEMM's B = W.T, dequantized */
static inline void tg_pack_b_quant(float* restrict b_panel, const uint8_t* restrict w, long row_bytes, long j0,
                                   long ncols, long k0, long kc, float* restrict row) {
  if (ncols < TG_GEMM_NR) memset(b_panel, 0, (size_t)kc * TG_GEMM_NR * sizeof(float));
  for (long c = 0; c < ncols; c++) {
    tg_deq_row(w + (j0 + c) * row_bytes + (k0 / TG_BS) * TG_TS, row, kc / TG_BS);
    for (long k = 0; k < kc; k++) b_panel[k * TG_GEMM_NR + c] = row[k];
  }
}

/* the matvec's rows split over threads by the CPU pool (device/cpu_pool.py): the caller never waits for a thread
   the shared cores have not run yet; weak, so a library loaded without the pool runs its matvecs on one thread */
extern void tg_pool_for(void (*body)(void*, long, long), void* ctx, long n, long chunk, int threads) __attribute__((weak));

/* x as the block dots read it. Where the integer dots quantize x (AVX2: TG_PACKED, Q4_0 / Q4_1 on int8 x in tiles of
   8 rows of W; TG_HAS_DOT16, Q8_0 on int16 x row by row) they do so for every row count: each row of x is quantized on
   its own and each output is formed by the same operations whatever the tile or thread, so a row's result is the same
   bits whatever batch it is in (a server's decode batch gives each stream its solo tokens) */
#if TG_Q_AVX2 && defined(TG_PACKED)
#define TG_X_QUANTIZED 1
typedef int8_t tg_xq_t;
#define TG_SX_PER_32 2                       /* dx and TG_X_SUM(dx, the sum of its xq) */
#define tg_quantize_x tg_quantize_x8
#elif TG_Q_AVX2 && defined(TG_HAS_DOT16)
#define TG_X_QUANTIZED 1
typedef int16_t tg_xq_t;
#define TG_SX_PER_32 1                       /* dx */
#define tg_quantize_x tg_quantize_x16
#define tg_dot_xq tg_dot_row16
#else
#define TG_X_QUANTIZED 0
#endif
#ifndef TG_PACKED
#define TG_PACKED 0
#define TG_PACK_ROWS 1
#endif
/* rows of quantized x dotted per pass over a W chunk: 64 rows of K = 1536 bytes stay in L2 with the chunk */
#define TG_XQ_ROWS 64

/* one product: out (M, N) = x (M, K) @ W.T (+ residual, where the packed tile adds it), x either quantized (xq with
   sx per 32, every M) or float (M == 1, sx the sums of x per 32 for the float block dots); begin, end count rows of W,
   or groups of TG_PACK_ROWS rows in the packed layout */
struct tg_matvec { float* out; const uint8_t* w; const float* x; void* xq; float* sx; const float* residual; long row_bytes, nb, M, N; };

static void tg_matvec_rows(void* job_, long begin, long end) {
  const struct tg_matvec* job = (const struct tg_matvec*)job_;
#if TG_PACKED
  tg_packed_groups(job->w, (const int8_t*)job->xq, job->sx, job->out, job->residual, job->nb, job->M, job->N, begin, end);
#elif TG_X_QUANTIZED
  long K = job->nb * TG_BS;
  for (long m0 = 0; m0 < job->M; m0 += TG_XQ_ROWS) {
    long m1 = job->M - m0 < TG_XQ_ROWS ? job->M : m0 + TG_XQ_ROWS;
    for (long n = begin; n < end; n++)
      for (long m = m0; m < m1; m++)
        job->out[m * job->N + n] = tg_dot_xq(job->w + n * job->row_bytes, (const tg_xq_t*)job->xq + m * K,
                                             job->sx + m * (K / 32) * TG_SX_PER_32, job->nb);
  }
#else
  for (long n = begin; n < end; n++) job->out[n] = tg_dot_row(job->w + n * job->row_bytes, job->x, job->sx, job->nb);
#endif
}

/* out = x @ W.T, + residual where given: the add the model's residual connection would otherwise launch as a kernel
   of its own (the same float adds, so the same bits) */
static void tg_linear(float* restrict out, const float* restrict x, const uint8_t* restrict w, const float* restrict residual,
                      long long M, long long N, long long K, long long threads) {
  long nb = K / TG_BS, row_bytes = nb * TG_TS;
  int nthreads = threads > 1 ? (int)threads : 1;
  if (TG_X_QUANTIZED || M == 1) {
    int threads_used = nthreads > 1 && M * N * row_bytes >= TG_MATVEC_PARALLEL_MIN_BYTES ? nthreads : 1;
    long units = (N + TG_PACK_ROWS - 1) / TG_PACK_ROWS;   /* what the threads split: W rows, or groups of them */
    long chunk = (units + (long)threads_used * TG_MATVEC_CHUNKS_PER_THREAD - 1) / ((long)threads_used * TG_MATVEC_CHUNKS_PER_THREAD);
    struct tg_matvec job = {out, w, x, 0, 0, TG_PACKED ? residual : 0, row_bytes, nb, M, N};
#if TG_X_QUANTIZED
    job.xq = tg_gemm_alloc((size_t)(M * K) * sizeof(tg_xq_t));
    job.sx = (float*)tg_gemm_alloc((size_t)(M * (K / 32) * TG_SX_PER_32) * sizeof(float));
#define TG_QUANTIZE_ROW(m) tg_quantize_x(x + (m) * K, (tg_xq_t*)job.xq + (m) * K, job.sx + (m) * (K / 32) * TG_SX_PER_32, K)
#else
    job.sx = (float*)tg_gemm_alloc((size_t)(K / 32) * sizeof(float));
    for (long i = 0; i < K / 32; i++) {
      float s = 0.0f;
      for (int l = 0; l < 32; l++) s += x[32 * i + l];
      job.sx[i] = s;
    }
#define TG_QUANTIZE_ROW(m) (void)(m)
#endif
    if (threads_used > 1 && M >= TG_GEMM_MIN_ROWS) {
      /* a prefill's products: OpenMP, like the kernels around them, whose team is still spinning (the pool's worker
         would be a third spinning thread on two cores); both threads quantize x first */
      long chunks = (units + chunk - 1) / chunk;
      #pragma omp parallel num_threads(threads_used)
      {
        #pragma omp for schedule(static)
        for (long m = 0; m < M; m++) TG_QUANTIZE_ROW(m);
        #pragma omp for schedule(dynamic, 1)
        for (long c = 0; c < chunks; c++) tg_matvec_rows(&job, c * chunk, (c + 1) * chunk < units ? (c + 1) * chunk : units);
      }
    } else {
      for (long m = 0; m < M; m++) TG_QUANTIZE_ROW(m);
      if (tg_pool_for && threads_used > 1) tg_pool_for(tg_matvec_rows, &job, units, chunk, threads_used);
      else tg_matvec_rows(&job, 0, units);
    }
#undef TG_QUANTIZE_ROW
    free(job.xq); free(job.sx);
    if (residual && !TG_PACKED) for (long i = 0; i < M * N; i++) out[i] = residual[i] + out[i];
    return;
  }
  if (M < TG_GEMM_MIN_ROWS) {
    int par = nthreads > 1 && M * N * row_bytes >= TG_PARALLEL_MIN_BYTES;
    #pragma omp parallel num_threads(nthreads) if(par)
    {
      float* row = (float*)tg_gemm_alloc((size_t)K * sizeof(float));
      #pragma omp for schedule(static)
      for (long n = 0; n < N; n++) {
        tg_deq_row(w + n * row_bytes, row, nb);
        for (long m = 0; m < M; m++) out[m * N + n] = tg_dot_f32(row, x + m * K, K);
      }
      free(row);
    }
    if (residual) for (long i = 0; i < M * N; i++) out[i] = residual[i] + out[i];
    return;
  }
  /* a task is NC W rows x up to TG_MS rows of x: its slice of W is dequantized once per k-chunk and reused by every
     MC-row block of x; fewer, narrower column blocks when N is small, so both threads get work */
  long nc = TG_NC;
  while (nc > TG_GEMM_NR && (N + nc - 1) / nc < 4 * nthreads) nc -= TG_GEMM_NR;
  long n_blocks = (N + nc - 1) / nc, m_chunks = (M + TG_MS - 1) / TG_MS;
  int par = nthreads > 1 && M * N * K >= (1L << 20);
  #pragma omp parallel num_threads(nthreads) if(par)
  {
    long rows_max = M < TG_MS ? M : TG_MS;
    float* a_packed = (float*)tg_gemm_alloc((size_t)TG_MC * TG_KC * sizeof(float));
    float* b_packed = (float*)tg_gemm_alloc((size_t)TG_NC * TG_KC * sizeof(float));
    float* c_block = (float*)tg_gemm_alloc((size_t)(rows_max + TG_GEMM_MR) * TG_NC * sizeof(float));
    float* row = (float*)tg_gemm_alloc((size_t)TG_KC * sizeof(float));
    #pragma omp for schedule(dynamic, 1)
    for (long t = 0; t < n_blocks * m_chunks; t++) {
      long j0 = (t % n_blocks) * nc, ncols = N - j0 < nc ? N - j0 : nc;
      long m0 = (t / n_blocks) * TG_MS, mrows = M - m0 < TG_MS ? M - m0 : TG_MS;
      for (long k0 = 0; k0 < K; k0 += TG_KC) {
        long kc = K - k0 < TG_KC ? K - k0 : TG_KC;
        for (long c = 0; c < ncols; c += TG_GEMM_NR)
          tg_pack_b_quant(b_packed + (c / TG_GEMM_NR) * kc * TG_GEMM_NR, w, row_bytes, j0 + c,
                          ncols - c < TG_GEMM_NR ? ncols - c : TG_GEMM_NR, k0, kc, row);
        for (long i0 = 0; i0 < mrows; i0 += TG_MC) {
          long nrows = mrows - i0 < TG_MC ? mrows - i0 : TG_MC;
          tg_gemm_pack_a_f32(a_packed, x + (m0 + i0) * K + k0, nrows, kc, K, 1);
          for (long c = 0; c < ncols; c += TG_GEMM_NR)
            for (long r = 0; r < nrows; r += TG_GEMM_MR)
              tg_gemm_micro_f32(kc, a_packed + r * kc, b_packed + (c / TG_GEMM_NR) * kc * TG_GEMM_NR,
                                c_block + (i0 + r) * TG_NC + c, TG_NC, k0 > 0);
        }
      }
      for (long r = 0; r < mrows; r++) memcpy(out + (m0 + r) * N + j0, c_block + r * TG_NC, (size_t)ncols * sizeof(float));
    }
    free(a_packed); free(b_packed); free(c_block); free(row);
  }
  if (residual) for (long i = 0; i < M * N; i++) out[i] = residual[i] + out[i];
}

/* w: the GGUF blocks, or where TG_PACKED_ROWS() is not 0 the packed layout (quant_kernels_packed.py) */
void TG_LINEAR(float* restrict out, const float* restrict x, const uint8_t* restrict w, long long M, long long N,
               long long K, long long threads) {
  tg_linear(out, x, w, 0, M, N, K, threads);
}

void TG_LINEAR_RESIDUAL(float* restrict out, const float* restrict x, const uint8_t* restrict w, const float* restrict residual,
                        long long M, long long N, long long K, long long threads) {
  tg_linear(out, x, w, residual, M, N, K, threads);
}

/* rows of W per group of the packed layout tg_qlinear reads (8), or 0 where it reads the GGUF blocks */
int TG_PACKED_ROWS(void) { return TG_PACKED ? TG_PACK_ROWS : 0; }

/* the precision tg_qlinear reads x at, whatever the row count: 8 or 16 where it quantizes x for integer block dots,
   else 32 */
int TG_X_BITS(void) {
#if TG_X_QUANTIZED
  return (int)(8 * sizeof(tg_xq_t));
#else
  return 32;
#endif
}

void TG_ROWS(float* restrict out, const long long* restrict ids, const uint8_t* restrict w, int* restrict err,
             long long n, long long N, long long K, long long threads) {
  long nb = K / TG_BS, row_bytes = nb * TG_TS;
  int nthreads = threads > 1 ? (int)threads : 1;
  int par = nthreads > 1 && n * row_bytes >= TG_PARALLEL_MIN_BYTES;
  int bad = 0;
  #pragma omp parallel for schedule(static) num_threads(nthreads) if(par) reduction(|:bad)
  for (long i = 0; i < n; i++) {
    long long id = ids[i];
    if (id < 0 || id >= N) { memset(out + i * K, 0, (size_t)K * sizeof(float)); bad = 1; continue; }
    tg_deq_row(w + id * row_bytes, out + i * K, nb);
  }
  if (bad) err[0] = 1;
}
"""


def linear_name(ggml_type: str) -> str: return f"tg_qlinear_{ggml_type.lower()}"
def linear_residual_name(ggml_type: str) -> str: return f"tg_qlinear_residual_{ggml_type.lower()}"
def rows_name(ggml_type: str) -> str: return f"tg_qrows_{ggml_type.lower()}"
def x_bits_name(ggml_type: str) -> str: return f"tg_qlinear_x_bits_{ggml_type.lower()}"
def packed_rows_name(ggml_type: str) -> str: return f"tg_qlinear_packed_rows_{ggml_type.lower()}"


# which code the library runs: the best the compiler's target has, or (tests) the AVX2 or the portable scalar one
ISAS = {"native": [], "avx2": ["#define TG_QUANT_AVX2 1"], "scalar": ["#define TG_QUANT_SCALAR 1"]}


def render_quant_source(ggml_type: str, isa: str = "native") -> str:
  """The C source of one type's library, for one of ISAS."""
  t = GGML_TYPES[ggml_type]
  defines = [f"#define TG_BS {t.block_size}", f"#define TG_TS {t.type_size}", f"#define TG_VPB {t.block_size // 16}",
             f"#define TG_KC {KC}", f"#define TG_NC {NC}", f"#define TG_MC {MC}", f"#define TG_MS {MS}", f"#define TG_GEMM_MIN_ROWS {GEMM_MIN_ROWS}",
             f"#define TG_PARALLEL_MIN_BYTES {PARALLEL_MIN_BYTES}L", f"#define TG_MATVEC_PARALLEL_MIN_BYTES {MATVEC_PARALLEL_MIN_BYTES}L",
             f"#define TG_MATVEC_CHUNKS_PER_THREAD {MATVEC_CHUNKS_PER_THREAD}", f"#define TG_LINEAR {linear_name(ggml_type)}",
             f"#define TG_LINEAR_RESIDUAL {linear_residual_name(ggml_type)}",
             f"#define TG_ROWS {rows_name(ggml_type)}", f"#define TG_X_BITS {x_bits_name(ggml_type)}",
             f"#define TG_PACKED_ROWS {packed_rows_name(ggml_type)}"]
  assert all(NC % t.nr == 0 and MC % t.mr == 0 and MS % t.mr == 0 for t in TILES) and KC % 256 == 0
  scalar = f"static inline void tg_deq_s(const uint8_t* restrict b, float* restrict y) {{{_SCALAR[ggml_type]}\n}}\n"
  vector = f"#if TG_Q_SIMD\nstatic inline void tg_deq_v(const uint8_t* restrict b, __m512* v) {{{_SIMD[ggml_type]}\n}}\n"
  if ggml_type in _DOT:
    vector += ("#define TG_HAS_DOT 1\nstatic inline void tg_dot_block(const uint8_t* restrict b, const float* restrict xb, "
               f"const float* restrict xs, __m512* acc0, __m512* acc1, float* accm) {{{_DOT[ggml_type]}\n}}\n")
  vector += "#endif\n"
  if packed(ggml_type): vector += render_packed(ggml_type)
  if ggml_type in _DOT_AVX2_X16:
    vector += ("#if TG_Q_AVX2\n#define TG_HAS_DOT16 1\n"
               "static inline void tg_dot_block16(const uint8_t* restrict b, const int16_t* restrict xq, const float* restrict sx, "
               f"__m256* acc) {{{_DOT_AVX2_X16[ggml_type]}\n}}\n#endif\n")
  return "\n".join(ISAS[isa] + defines) + "\n" + _COMMON + GEMM_PREAMBLE + scalar + vector + _GENERIC
