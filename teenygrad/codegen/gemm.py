"""C source for a CPU matrix multiply with a fused epilogue: C[bi, i, j] = store(sum_k A[bi, i, k] * B[bi, k, j]).

The design follows GotoBLAS / BLIS (Goto and van de Geijn, "Anatomy of High-Performance Matrix Multiplication",
ACM TOMS 2008): B is packed once into column panels of NR columns, A is packed per task into row panels of MR rows,
and a register-blocked MR x NR microkernel runs over the packed panels. Packing reads A and B through arbitrary
element strides, so transposed or broadcast operands cost only the packing.

Loop nest of one call (all sizes are compile-time constants in the rendered body):

    pack B: every (distinct batch, NR-column panel), in parallel          -> b_packed[bb][panel][k][NR]
    for task (bi, MC-row block, NC-column block), in parallel:            thread-local c_block[MC][NC] in L2
      for k0 in K step KC:
        pack A rows of the block, k0..k0+KC                               -> a_packed[panel][k][MR], in L2
        for NR-panel of the block:  (its KC x NR slice of b_packed stays in L1)
          for MR-panel of the block: microkernel(KC) into c_block
      epilogue: store(c_block[r][c], bi, i, j) for every valid element of the block

The output never goes through the hot loop: the caller's store statement (bias, activation, a strided write) runs
once per element over the finished c_block. Edge tiles are computed padded (packing writes zeros), so the
microkernel has a single fixed shape.
"""
from __future__ import annotations

from dataclasses import dataclass
from collections.abc import Callable



@dataclass(frozen=True)
class Tile:
  """A microkernel's shape (MR rows x NR columns of C held in registers) and the cache blocking tuned for it:
  KC x NR of packed B stays in L1, MC x KC of packed A in L2, and a task's MC x NC c_block is streamed through L2."""
  mr: int
  nr: int
  kc: int
  mc: int
  nc: int
  guard: str  # the C preprocessor condition under which GEMM_PREAMBLE compiled this shape


# AVX-512: 24 zmm accumulators, 2 B loads and 12 broadcasts per k. Blocking tuned on a 2-core Zen 5 (48 KiB L1d,
# 1 MiB L2): KC 256..512, MC 96..192 and NC 512..1024 all measured within noise of each other at 2048^3
AVX512_TILE = Tile(mr=12, nr=32, kc=384, mc=144, nc=512, guard="TG_GEMM_NR == 32")
# AVX2 (and the portable fallback): 12 ymm accumulators, 2 B loads and 6 broadcasts per k, the shape of BLIS's and
# OpenBLAS's Haswell/Zen sgemm kernels; 16 ymm registers leave no room for more. On a 2-core Zen 3 (32 KiB L1d,
# 512 KiB L2) the AVX-512 blocking measured within a few percent of KC 256, NC 256 and MC 96 / NC 1024 at 512..4096^3
AVX2_TILE = Tile(mr=6, nr=16, kc=384, mc=144, nc=512, guard="TG_GEMM_NR == 16")
TILES = (AVX512_TILE, AVX2_TILE)
# task costs in multiply-add equivalents (measured): packing one element of A from memory, streaming one element of
# packed B through the cache hierarchy, and starting a task (its epilogue, scheduling)
PACK_A_COST, READ_B_COST, TASK_COST = 16, 4, 20000
# below this many multiply-adds the call stays on one thread: a fork/join costs a few microseconds, and on a busy
# machine a descheduled worker stalls the join (128x512x10: 128 GFLOP/s on 2 threads when idle, 49 when loaded, 90 on 1)
PARALLEL_MIN_FMAS = 1 << 20
# below this many multiply-adds (or for ctypes other than float) a plain loop nest is used
SMALL_MAX_FMAS = 24 * 24 * 24
# split-K: an output of fewer than SPLIT_K_TILES_PER_THREAD blocks per thread over a K of at least 2 slices is cut
# along K into slices of at least SPLIT_K_MIN_DEPTH, about SPLIT_K_TASKS_PER_THREAD tasks per thread (a conv weight
# gradient, 32x9 over K = 86528, was one or two tasks that packed an 11 MB B panel first)
SPLIT_K_TILES_PER_THREAD, SPLIT_K_TASKS_PER_THREAD, SPLIT_K_MIN_DEPTH = 2, 8, 2048

StoreFn = Callable[[str, str, str, str], str]


@dataclass(frozen=True)
class GemmSpec:
  """A batched matrix multiply: for every (bi, i, j), sum over k of A[bi, i, k] * B[bi, k, j].

  Strides are in elements and may be 0 (broadcast) or anything else (transposed and sliced views)."""
  batch: int
  M: int
  N: int
  K: int
  a_strides: tuple[int, int, int]  # (batch, i, k)
  b_strides: tuple[int, int, int]  # (batch, k, j)
  ctype: str = "float"


def _avx512_microkernel(tile: Tile) -> str:
  """c_tile (row stride ldc) = or += a_panel[kc][MR] @ b_panel[kc][NR], in zmm registers."""
  mr, nr, vecs = tile.mr, tile.nr, tile.nr // 16
  accs = ", ".join(f"c{r}_{v} = zero" for r in range(mr) for v in range(vecs))
  loads = " ".join(f"tg_v16 b{v} = *(const tg_v16*)(b_panel + k * {nr} + {16 * v});" for v in range(vecs))
  fmas = "\n".join(f"      {{ float a = a_panel[k * {mr} + {r}]; "
                   + " ".join(f"c{r}_{v} += a * b{v};" for v in range(vecs)) + " }" for r in range(mr))
  stores = "\n".join(f"    c_row = (tg_v16*)(c_tile + {r} * ldc); "
                     + " ".join(f"c_row[{v}] = accumulate ? c_row[{v}] + c{r}_{v} : c{r}_{v};" for v in range(vecs))
                     for r in range(mr))
  return f"""typedef float tg_v16 __attribute__((vector_size(64), aligned(64)));
/* c_tile must be 64-byte aligned and ldc a multiple of 16; gcc turns `a * b + c` into vfmadd with a broadcast */
static inline void tg_gemm_micro_f32(long kc, const float* restrict a_panel, const float* restrict b_panel,
                                     float* restrict c_tile, long ldc, int accumulate) {{
  const tg_v16 zero = {{0}};
  tg_v16 {accs};
  #pragma GCC unroll 2
  for (long k = 0; k < kc; k++) {{
    {loads}
{fmas}
  }}
  tg_v16* c_row;
{stores}
}}"""


def _avx2_microkernel(tile: Tile) -> str:
  """The same contract in ymm registers: MR x NR/8 accumulators, NR/8 B loads and MR broadcasts per k. FMAs are
  intrinsics because the library compiles with -ffp-contract=off."""
  mr, nr, vecs = tile.mr, tile.nr, tile.nr // 8
  accs = ", ".join(f"c{r}_{v} = _mm256_setzero_ps()" for r in range(mr) for v in range(vecs))
  loads = " ".join(f"__m256 b{v} = _mm256_load_ps(b_panel + {8 * v});" for v in range(vecs))
  fmas = "\n".join(f"    {{ __m256 a = _mm256_broadcast_ss(a_panel + {r}); "
                   + " ".join(f"c{r}_{v} = _mm256_fmadd_ps(a, b{v}, c{r}_{v});" for v in range(vecs)) + " }"
                   for r in range(mr))
  prefetch_c = " ".join(f"_mm_prefetch((const char*)(c_tile + {r} * ldc), _MM_HINT_T0);" for r in range(mr))
  stores = "\n".join(" ".join(f"_mm256_store_ps(c_tile + {r} * ldc + {8 * v}, accumulate ? "
                              f"_mm256_add_ps(_mm256_load_ps(c_tile + {r} * ldc + {8 * v}), c{r}_{v}) : c{r}_{v});"
                              for v in range(vecs)) for r in range(mr))
  return f"""#include <immintrin.h>
/* c_tile and b_panel must be 32-byte aligned and ldc a multiple of 8. The C tile is prefetched at the start (it
   lives in the task's c_block in L2), and the k loop is unrolled 4x so the pointer updates and the loop test are
   spread over 48 FMAs */
static inline void tg_gemm_micro_f32(long kc, const float* restrict a_panel, const float* restrict b_panel,
                                     float* restrict c_tile, long ldc, int accumulate) {{
  {prefetch_c}
  __m256 {accs};
  #pragma GCC unroll 4
  for (long k = 0; k < kc; k++) {{
    {loads}
{fmas}
    a_panel += {mr};
    b_panel += {nr};
  }}
{stores}
}}"""


_PORTABLE_MICROKERNEL = """/* portable fallback: the same contract, left to the auto-vectorizer */
static inline void tg_gemm_micro_f32(long kc, const float* restrict a_panel, const float* restrict b_panel,
                                     float* restrict c_tile, long ldc, int accumulate) {
  float acc[TG_GEMM_MR][TG_GEMM_NR] = {{0}};
  for (long k = 0; k < kc; k++)
    for (int r = 0; r < TG_GEMM_MR; r++)
      for (int c = 0; c < TG_GEMM_NR; c++) acc[r][c] += a_panel[k * TG_GEMM_MR + r] * b_panel[k * TG_GEMM_NR + c];
  for (int r = 0; r < TG_GEMM_MR; r++)
    for (int c = 0; c < TG_GEMM_NR; c++)
      c_tile[r * ldc + c] = accumulate ? c_tile[r * ldc + c] + acc[r][c] : acc[r][c];
}"""


def _tile_defines(tile: Tile) -> str: return f"#define TG_GEMM_MR {tile.mr}\n#define TG_GEMM_NR {tile.nr}"


# The microkernel, and with it the tile shape, is picked by the compiler's target macros; the rendered GEMM bodies
# test TG_GEMM_NR (each Tile's guard) to use the blocking computed for that shape
_MICROKERNEL = f"""#if defined(__AVX512F__)
{_tile_defines(AVX512_TILE)}
{_avx512_microkernel(AVX512_TILE)}
#elif defined(__AVX2__) && defined(__FMA__)
{_tile_defines(AVX2_TILE)}
{_avx2_microkernel(AVX2_TILE)}
#else
{_tile_defines(AVX2_TILE)}
{_PORTABLE_MICROKERNEL}
#endif
"""


GEMM_PREAMBLE = f"""#include <stdlib.h>
#include <string.h>
#ifdef __linux__
#include <sys/mman.h>
#endif
{_MICROKERNEL}
/* dst[k * ld + c] = src[c * stride_c + k] for c < n, k < kc, where each source row is contiguous in k: a transpose.
   With SSE, four rows at a time as 4x4 register transposes (conv's 64x288x50176 weight gradient packs 14M such
   elements: one scalar store per element was a quarter of its time); only four rows are live, so rows a multiple
   of 4 KiB apart (all in one L1 set) do not evict each other. Without SSE, scalar in runs of 64 along k: read
   k-outer, such rows map to a few L1 sets and evict each other on every load (1024^3 on one core: 35 -> 53
   GFLOP/s) */
#if defined(__SSE2__)
#include <immintrin.h>
/* the low `lanes` (1..4) floats of v */
static inline void tg_gemm_store_lanes(float* restrict dst, __m128 v, long lanes) {{
  if (lanes == 4) {{ _mm_storeu_ps(dst, v); return; }}
  if (lanes & 2) {{ _mm_storel_pi((__m64*)dst, v); if (lanes == 3) _mm_store_ss(dst + 2, _mm_movehl_ps(v, v)); }}
  else _mm_store_ss(dst, v);
}}
static inline void tg_gemm_pack_rows_f32(float* restrict dst, const float* restrict src, long kc, long n, long ld,
                                         long stride_c) {{
  for (long c0 = 0; c0 < n; c0 += 4) {{
    long rows = n - c0 < 4 ? n - c0 : 4;
    /* a group of fewer than four rows reads its last row again, and stores only its own lanes */
    const float* restrict r0 = src + c0 * stride_c;
    const float* restrict r1 = src + (c0 + (rows > 1 ? 1 : 0)) * stride_c;
    const float* restrict r2 = src + (c0 + (rows > 2 ? 2 : rows - 1)) * stride_c;
    const float* restrict r3 = src + (c0 + rows - 1) * stride_c;
    float* restrict out = dst + c0;
    long k = 0;
    for (; k + 4 <= kc; k += 4) {{
      __m128 x0 = _mm_loadu_ps(r0 + k), x1 = _mm_loadu_ps(r1 + k), x2 = _mm_loadu_ps(r2 + k), x3 = _mm_loadu_ps(r3 + k);
      _MM_TRANSPOSE4_PS(x0, x1, x2, x3);
      tg_gemm_store_lanes(out + k * ld, x0, rows);
      tg_gemm_store_lanes(out + (k + 1) * ld, x1, rows);
      tg_gemm_store_lanes(out + (k + 2) * ld, x2, rows);
      tg_gemm_store_lanes(out + (k + 3) * ld, x3, rows);
    }}
    for (long tail = 0; tail < (kc & 3); tail++)   /* the last kc % 4 values of each row */
      for (long c = 0; c < rows; c++) out[(k + tail) * ld + c] = src[(c0 + c) * stride_c + k + tail];
  }}
}}
#else
static inline void tg_gemm_pack_rows_f32(float* restrict dst, const float* restrict src, long kc, long n, long ld,
                                         long stride_c) {{
  for (long k0 = 0; k0 < kc; k0 += 64) {{
    long run = kc - k0 < 64 ? kc - k0 : 64;
    for (long c = 0; c < n; c++) {{
      const float* restrict row = src + c * stride_c + k0;
      for (long k = 0; k < run; k++) dst[(k0 + k) * ld + c] = row[k];
    }}
  }}
}}
#endif

/* b_panel[k][NR] = B[k, j] for k < kc and j < ncols, zero for the padding columns. Rows of B far apart (im2col
   columns: 200 KB) make every row of a panel a cache miss, which the packing waits for one after another: each row
   is prefetched two panels ahead while this one is copied, so the lines arrive while the microkernels run (conv
   forward 64x50176x288 on 2 Zen 3 cores, 6x16 tiles: 26.7 ms, one panel ahead 24.2, two ahead 19.6) */
static inline void tg_gemm_pack_b_f32(float* restrict b_panel, const float* restrict b, long kc, long ncols,
                                      long stride_k, long stride_j) {{
  if (stride_j == 1 && ncols == TG_GEMM_NR) {{
    for (long k = 0; k < kc; k++) {{
      __builtin_prefetch(b + k * stride_k + 2 * TG_GEMM_NR, 0, 2);
      memcpy(b_panel + k * TG_GEMM_NR, b + k * stride_k, TG_GEMM_NR * sizeof(float));
    }}
    return;
  }}
  if (ncols < TG_GEMM_NR) memset(b_panel, 0, (size_t)kc * TG_GEMM_NR * sizeof(float));
  if (stride_k == 1) {{
    tg_gemm_pack_rows_f32(b_panel, b, kc, ncols, TG_GEMM_NR, stride_j);
    return;
  }}
  /* k outer: the writes stay contiguous and the reads are ncols sequential streams (3x faster than j outer) */
  if (ncols == TG_GEMM_NR) {{
    for (long k = 0; k < kc; k++)
      #pragma GCC unroll 32
      for (long j = 0; j < TG_GEMM_NR; j++) b_panel[k * TG_GEMM_NR + j] = b[k * stride_k + j * stride_j];
  }} else {{
    for (long k = 0; k < kc; k++)
      for (long j = 0; j < ncols; j++) b_panel[k * TG_GEMM_NR + j] = b[k * stride_k + j * stride_j];
  }}
}}

/* a_packed[panel][k][MR] = A[panel * MR + r, k] for rows < nrows and k < kc, zero for the padding rows */
static inline void tg_gemm_pack_a_f32(float* restrict a_packed, const float* restrict a, long nrows, long kc,
                                      long stride_i, long stride_k) {{
  for (long p = 0; p < nrows; p += TG_GEMM_MR) {{
    float* restrict panel = a_packed + p * kc;
    long rows = nrows - p < TG_GEMM_MR ? nrows - p : TG_GEMM_MR;
    const float* restrict src = a + p * stride_i;
    if (rows < TG_GEMM_MR) memset(panel, 0, (size_t)kc * TG_GEMM_MR * sizeof(float));
    if (stride_i == 1 && rows == TG_GEMM_MR) {{
      for (long k = 0; k < kc; k++) memcpy(panel + k * TG_GEMM_MR, src + k * stride_k, TG_GEMM_MR * sizeof(float));
    }} else if (stride_k == 1) {{
      tg_gemm_pack_rows_f32(panel, src, kc, rows, TG_GEMM_MR, stride_i);
    }} else if (rows == TG_GEMM_MR) {{
      /* k outer, as for B: contiguous writes, MR sequential read streams */
      for (long k = 0; k < kc; k++)
        #pragma GCC unroll 12
        for (long r = 0; r < TG_GEMM_MR; r++) panel[k * TG_GEMM_MR + r] = src[r * stride_i + k * stride_k];
    }} else {{
      for (long k = 0; k < kc; k++)
        for (long r = 0; r < rows; r++) panel[k * TG_GEMM_MR + r] = src[r * stride_i + k * stride_k];
    }}
  }}
}}

/* A slice of packed operand shared by the threads, packed by whichever gets to it first; *state is 0 (free), 1 (being
   packed) or 2 (ready). tg_gemm_claim returns 1 when the caller is to pack it (and then call tg_gemm_ready), 0 once
   it is ready (waiting while another thread packs it). */
static inline int tg_gemm_claim(int* state) {{
  if (__atomic_load_n(state, __ATOMIC_ACQUIRE) == 2) return 0;
  int free_state = 0;
  if (__atomic_compare_exchange_n(state, &free_state, 1, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) return 1;
  while (__atomic_load_n(state, __ATOMIC_ACQUIRE) != 2) {{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
  }}
  return 0;
}}
static inline void tg_gemm_ready(int* state) {{ __atomic_store_n(state, 2, __ATOMIC_RELEASE); }}

/* 64-byte aligned scratch; large buffers on 2 MiB pages where the kernel allows (fewer page faults and TLB misses) */
static inline void* tg_gemm_alloc(size_t bytes) {{
#ifdef __linux__
  if (bytes >= ((size_t)4 << 20)) {{
    size_t huge = (size_t)2 << 20;
    void* buffer = aligned_alloc(huge, (bytes + huge - 1) / huge * huge);
    if (buffer) madvise(buffer, (bytes + huge - 1) / huge * huge, MADV_HUGEPAGE);
    return buffer;
  }}
#endif
  return aligned_alloc(64, (bytes + 63) / 64 * 64);
}}
"""


def _ceil_div(a: int, b: int) -> int: return -(-a // b)


@dataclass(frozen=True)
class _Blocking:
  """How one call is cut into tasks, and how many threads run them."""
  tile: Tile
  mc: int  # rows per task, a multiple of MR
  nc: int  # columns per task, a multiple of NR
  kc: int  # depth of one packed slice
  threads: int
  k_splits: int = 1  # split-K: the number of K slices, each reduced into a partial block of its own
  k_slice: int = 0   # split-K: the depth of one slice, a multiple of kc


def _choose_blocking(tile: Tile, batch: int, M: int, N: int, K: int, threads: int) -> _Blocking:
  """Pick task sizes that keep every thread busy (simulated greedy schedule) with the fewest, largest tasks."""
  MR, NR, MC_MAX, NC_MAX, KC_MAX = tile.mr, tile.nr, tile.mc, tile.nc, tile.kc
  k_steps = _ceil_div(K, KC_MAX)
  kc = _ceil_div(K, k_steps)
  fmas = batch * M * N * K
  threads = 1 if fmas < PARALLEL_MIN_FMAS else max(1, threads)
  row_panels, col_panels = _ceil_div(M, MR), _ceil_div(N, NR)
  # split-K: the largest blocks (each operand element packed once), parallel over slices of K instead
  m_blocks, n_blocks = _ceil_div(row_panels, MC_MAX // MR), _ceil_div(col_panels, NC_MAX // NR)
  tiles = batch * m_blocks * n_blocks
  if tiles < SPLIT_K_TILES_PER_THREAD * threads and K >= 2 * SPLIT_K_MIN_DEPTH:
    splits = min(K // SPLIT_K_MIN_DEPTH, _ceil_div(SPLIT_K_TASKS_PER_THREAD * threads, tiles))
    steps_per_slice = _ceil_div(k_steps, splits)
    return _Blocking(tile, mc=_ceil_div(row_panels, m_blocks) * MR, nc=_ceil_div(col_panels, n_blocks) * NR, kc=kc,
                     threads=threads, k_splits=_ceil_div(k_steps, steps_per_slice), k_slice=steps_per_slice * kc)
  # the MC x KC block of A is what has to stay in L2: a short K allows all of M in one row block, whose tasks then
  # pack B themselves (conv column gradient 288x50176x64, 2 loaded Zen 3 cores, best of 9: 44-56 -> 35-48 ms)
  mc_max = row_panels * MR if row_panels * MR * kc <= MC_MAX * KC_MAX else MC_MAX
  best: tuple[float, int, int, int] | None = None
  for mp in range(1, min(row_panels, mc_max // MR) + 1):
    for np_ in range(1, min(col_panels, NC_MAX // NR) + 1):
      def cost(rows: int, cols: int) -> float:
        return rows * cols * MR * NR * K + rows * MR * K * PACK_A_COST + cols * NR * K * READ_B_COST + TASK_COST
      m_full, m_edge = divmod(row_panels, mp)
      n_full, n_edge = divmod(col_panels, np_)
      sizes = [(r, c, cnt) for r, rc in ((mp, m_full), (m_edge, 1 if m_edge else 0))
               for c, cc in ((np_, n_full), (n_edge, 1 if n_edge else 0)) if (cnt := rc * cc * batch)]
      tasks = sum(cnt for _, _, cnt in sizes)
      total = sum(cost(r, c) * cnt for r, c, cnt in sizes)
      if threads == 1: makespan = total
      else:
        # dynamic scheduling hands tasks out in order; the worst case is the largest task arriving last
        makespan = total / threads + max(cost(r, c) for r, c, _ in sizes) * (1 - 1 / threads) if tasks >= threads \
          else max(cost(r, c) for r, c, _ in sizes)
      key = (makespan, -mp * np_, mp, np_)
      if best is None or key < best: best = key
  assert best is not None
  _, _, mp, np_ = best
  return _Blocking(tile, mc=mp * MR, nc=np_ * NR, kc=kc, threads=threads)


def render_gemm_body(spec: GemmSpec, a: str, b: str, store: StoreFn, threads: int) -> str:
  """A braced C block (a function body) computing acc = sum_k A[bi, i, k] * B[bi, k, j] for every output element and
  running `store(acc, bi, i, j)` once per element, after the full sum. Needs GEMM_PREAMBLE before the function.

  Args:
    spec: sizes and element strides of A and B.
    a, b: C expressions of type `const ctype*` pointing at A[0, 0, 0] and B[0, 0, 0].
    store: maps C expressions (acc, bi, i, j) to a statement; it may be called from several threads at once,
      always on distinct (bi, i, j).
    threads: the most OpenMP threads to use; 1 renders no parallel region.
  """
  if spec.batch <= 0 or spec.M <= 0 or spec.N <= 0: return "{ /* empty gemm */ }\n"
  fmas = spec.batch * spec.M * spec.N * spec.K
  if spec.ctype != "float" or fmas <= SMALL_MAX_FMAS or spec.K == 0:
    return _render_simple(spec, a, b, store, threads)
  # one body per microkernel shape: the preamble's choice (by the compiler's target) decides which one is compiled
  bodies = [f"#{'if' if index == 0 else 'elif'} {tile.guard}\n{_render_tiled(tile, spec, a, b, store, threads)}"
            for index, tile in enumerate(TILES)]
  return "{\n" + "\n".join(bodies) + "\n#else\n#error unknown TG_GEMM_NR\n#endif\n}\n"


def _render_tiled(tile: Tile, spec: GemmSpec, a: str, b: str, store: StoreFn, threads: int) -> str:
  """render_gemm_body for one microkernel shape."""
  MR, NR = tile.mr, tile.nr
  # a batch of A rows against one shared B (a Linear layer on (batch, M, K) input) is one taller product
  if spec.batch > 1 and spec.b_strides[0] == 0 and spec.a_strides[0] == spec.M * spec.a_strides[1]:
    M = spec.M
    folded = GemmSpec(1, spec.batch * M, spec.N, spec.K, (0, spec.a_strides[1], spec.a_strides[2]), spec.b_strides,
                      spec.ctype)
    return _render_tiled(tile, folded, a, b, lambda acc, bi, i, j: store(acc, f"({i}) / {M}", f"({i}) % {M}", j),
                         threads)
  # C = A B and C^T = B^T A^T are the same work; transposing pays when it pads clearly fewer tiles (12x32: N=10 pads
  # to 32 columns but only 12 rows), while the direct one keeps the epilogue's writes contiguous, and more so when it
  # packs B inside its tasks (conv forward 64x50176x288, 11% less padding transposed: direct 22 ms, transposed
  # 26 ms on 2 Zen 3 cores)
  def padded(m: int, n: int) -> int: return _ceil_div(m, MR) * MR * _ceil_div(n, NR) * NR
  direct = _choose_blocking(tile, spec.batch, spec.M, spec.N, spec.K, threads)
  keeps_direct = 0.85 if direct.k_splits == 1 and _task_packs_b(spec, direct) else 0.9
  if padded(spec.N, spec.M) < keeps_direct * padded(spec.M, spec.N):
    swapped = GemmSpec(spec.batch, spec.N, spec.M, spec.K, (spec.b_strides[0], spec.b_strides[2], spec.b_strides[1]),
                       (spec.a_strides[0], spec.a_strides[2], spec.a_strides[1]), spec.ctype)
    return _render_packed(tile, swapped, b, a, lambda acc, bi, i, j: store(acc, bi, j, i), threads, transposed=True)
  return _render_packed(tile, spec, a, b, store, threads, transposed=False)


def _task_packs_b(spec: GemmSpec, blk: _Blocking) -> bool:
  """Whether every B panel is read by one task only (split-K, or one row block and a B per batch), so that the
  tasks pack B themselves."""
  one_b_per_batch = spec.batch == 1 or spec.b_strides[0] != 0
  return blk.k_splits > 1 or (_ceil_div(spec.M, blk.mc) == 1 and one_b_per_batch)


def _render_packed(tile: Tile, spec: GemmSpec, a: str, b: str, store: StoreFn, threads: int, transposed: bool) -> str:
  M, N, K = spec.M, spec.N, spec.K
  MR, NR = tile.mr, tile.nr
  blk = _choose_blocking(tile, spec.batch, M, N, K, threads)
  sa_b, sa_i, sa_k = spec.a_strides
  sb_b, sb_k, sb_j = spec.b_strides
  b_batches = 1 if sb_b == 0 or spec.batch == 1 else spec.batch  # a broadcast B is packed once
  if _task_packs_b(spec, blk): return _render_task_packed_b(spec, a, b, store, blk, transposed)
  col_panels = _ceil_div(N, NR)
  m_blocks, n_blocks, k_steps = _ceil_div(M, blk.mc), _ceil_div(N, blk.nc), _ceil_div(K, blk.kc)
  parallel = blk.threads > 1
  omp = (lambda s: s) if parallel else (lambda s: "")
  epilogue = _epilogue_loops(transposed)
  stmt = store("tg_acc", "tg_bi", "tg_i", "tg_j")
  note = " (computed transposed)" if transposed else ""
  b_batch = "tg_bi" if b_batches > 1 else "0"
  return f"""{{
  /* gemm {spec.batch}x{M}x{N}x{K}{note}: {MR}x{NR} tiles, mc={blk.mc} nc={blk.nc} kc={blk.kc} threads={blk.threads} */
  const float* restrict tg_a = ({a});
  const float* restrict tg_b = ({b});
  float* tg_b_packed = (float*)tg_gemm_alloc((size_t){b_batches * col_panels * K * NR} * sizeof(float));
  /* B is packed by the first task that needs a (batch, column block, k step) slice of it, not in a phase of its
     own: no barrier, so a thread that a busy machine holds back delays no one (0 free, 1 being packed, 2 ready) */
  int* tg_b_state = (int*)calloc({b_batches * n_blocks * k_steps}, sizeof(int));
  {omp(f"#pragma omp parallel num_threads({blk.threads})")}
  {{
    float* tg_a_packed = (float*)tg_gemm_alloc((size_t){blk.mc * blk.kc} * sizeof(float));
    float* tg_c_block = (float*)tg_gemm_alloc((size_t){blk.mc * blk.nc} * sizeof(float));
    {omp("#pragma omp for schedule(dynamic, 1)")}
    for (long tg_t = 0; tg_t < {spec.batch * m_blocks * n_blocks}; tg_t++) {{
      long tg_bi = tg_t / {m_blocks * n_blocks};
      long tg_i0 = (tg_t / {n_blocks}) % {m_blocks} * {blk.mc}, tg_j0 = tg_t % {n_blocks} * {blk.nc};
      long tg_nrows = {M} - tg_i0 < {blk.mc} ? {M} - tg_i0 : {blk.mc};
      long tg_ncols = {N} - tg_j0 < {blk.nc} ? {N} - tg_j0 : {blk.nc};
      float* tg_b_block = tg_b_packed + {b_batch} * {col_panels * K * NR} + (tg_j0 / {NR}) * {K * NR};
      for (long tg_k0 = 0, tg_ks = 0; tg_k0 < {K}; tg_k0 += {blk.kc}, tg_ks++) {{
        long tg_kc = {K} - tg_k0 < {blk.kc} ? {K} - tg_k0 : {blk.kc};
        int* tg_state = tg_b_state + ({b_batch} * {n_blocks} + tg_j0 / {blk.nc}) * {k_steps} + tg_ks;
        if (tg_gemm_claim(tg_state)) {{
          for (long tg_c = 0; tg_c < tg_ncols; tg_c += {NR})
            tg_gemm_pack_b_f32(tg_b_block + (tg_c / {NR}) * {K * NR} + tg_k0 * {NR},
                               tg_b + {b_batch} * {sb_b} + tg_k0 * {sb_k} + (tg_j0 + tg_c) * {sb_j}, tg_kc,
                               tg_ncols - tg_c < {NR} ? tg_ncols - tg_c : {NR}, {sb_k}, {sb_j});
          tg_gemm_ready(tg_state);
        }}
        tg_gemm_pack_a_f32(tg_a_packed, tg_a + tg_bi * {sa_b} + tg_i0 * {sa_i} + tg_k0 * {sa_k}, tg_nrows, tg_kc,
                           {sa_i}, {sa_k});
        for (long tg_c = 0; tg_c < tg_ncols; tg_c += {NR})
          for (long tg_r = 0; tg_r < tg_nrows; tg_r += {MR})
            tg_gemm_micro_f32(tg_kc, tg_a_packed + tg_r * tg_kc, tg_b_block + (tg_c / {NR}) * {K * NR} + tg_k0 * {NR},
                              tg_c_block + tg_r * {blk.nc} + tg_c, {blk.nc}, tg_k0 > 0);
      }}
      {epilogue}
          float tg_acc = tg_c_block[tg_r * {blk.nc} + tg_c];
          long tg_i = tg_i0 + tg_r, tg_j = tg_j0 + tg_c;
          (void)tg_i; (void)tg_j;  /* the store may not need every index */
          {stmt}
        }}
    }}
    free(tg_a_packed);
    free(tg_c_block);
  }}
  free(tg_b_state);
  free(tg_b_packed);
}}
"""


def _epilogue_loops(transposed: bool) -> str:
  """The loops over one finished block: the caller's output is contiguous along its own j, so walk it that way."""
  if transposed:
    return """for (long tg_c = 0; tg_c < tg_ncols; tg_c++)
        for (long tg_r = 0; tg_r < tg_nrows; tg_r++) {"""
  return """for (long tg_r = 0; tg_r < tg_nrows; tg_r++)
        for (long tg_c = 0; tg_c < tg_ncols; tg_c++) {"""


def _render_task_packed_b(spec: GemmSpec, a: str, b: str, store: StoreFn, blk: _Blocking, transposed: bool) -> str:
  """For a B panel that only one task reads (one row block, or split-K): each task packs B one KC x NR panel at a
  time right before use, so no whole packed B is written, read back and waited for (a barrier).

  Split-K: task (block, slice) reduces its slice of K into a partial block of its own; after a barrier each block's
  partials are summed in slice order (the result does not depend on the schedule) and stored. Without a split the
  task accumulates into a thread-local block and stores it itself."""
  M, N, K = spec.M, spec.N, spec.K
  MR, NR = blk.tile.mr, blk.tile.nr
  sa_b, sa_i, sa_k = spec.a_strides
  sb_b, sb_k, sb_j = spec.b_strides
  m_blocks, n_blocks = _ceil_div(M, blk.mc), _ceil_div(N, blk.nc)
  tiles, splits, block = spec.batch * m_blocks * n_blocks, blk.k_splits, blk.mc * blk.nc
  split = splits > 1
  k_slice = blk.k_slice if split else K
  omp = (lambda s: s) if blk.threads > 1 else (lambda s: "")
  note = " (computed transposed)" if transposed else ""
  tile_coords = f"""long tg_bi = tg_tile / {m_blocks * n_blocks};
      long tg_i0 = (tg_tile / {n_blocks}) % {m_blocks} * {blk.mc}, tg_j0 = tg_tile % {n_blocks} * {blk.nc};
      long tg_nrows = {M} - tg_i0 < {blk.mc} ? {M} - tg_i0 : {blk.mc};
      long tg_ncols = {N} - tg_j0 < {blk.nc} ? {N} - tg_j0 : {blk.nc};"""
  epilogue = f"""{_epilogue_loops(transposed)}
          float tg_acc = tg_c_block[tg_r * {blk.nc} + tg_c];
          long tg_i = tg_i0 + tg_r, tg_j = tg_j0 + tg_c;
          (void)tg_i; (void)tg_j;  /* the store may not need every index */
          {store("tg_acc", "tg_bi", "tg_i", "tg_j")}
        }}"""
  reduce_and_store = f"""{omp("#pragma omp for schedule(dynamic, 1)")}
    for (long tg_tile = 0; tg_tile < {tiles}; tg_tile++) {{
      {tile_coords}
      (void)tg_bi;
      float* restrict tg_c_block = tg_partials + tg_tile * {splits * block};
      for (long tg_s = 1; tg_s < {splits}; tg_s++) {{
        const float* restrict tg_part = tg_c_block + tg_s * {block};
        for (long tg_r = 0; tg_r < tg_nrows; tg_r++)
          for (long tg_c = 0; tg_c < tg_ncols; tg_c++) tg_c_block[tg_r * {blk.nc} + tg_c] += tg_part[tg_r * {blk.nc} + tg_c];
      }}
      {epilogue}
    }}""" if split else ""
  header = f"{MR}x{NR} tiles, mc={blk.mc} nc={blk.nc} kc={blk.kc} threads={blk.threads} B packed per task"
  if split: header += f" split-K {splits}x{k_slice}"
  return f"""{{
  /* gemm {spec.batch}x{M}x{N}x{K}{note}: {header} */
  const float* restrict tg_a = ({a});
  const float* restrict tg_b = ({b});
  {f"float* tg_partials = (float*)tg_gemm_alloc((size_t){tiles * splits * block} * sizeof(float));" if split else ""}
  {omp(f"#pragma omp parallel num_threads({blk.threads})")}
  {{
    float* tg_a_packed = (float*)tg_gemm_alloc((size_t){blk.mc * blk.kc} * sizeof(float));
    float* tg_b_panel = (float*)tg_gemm_alloc((size_t){blk.kc * NR} * sizeof(float));
    {"" if split else f"float* tg_c_block = (float*)tg_gemm_alloc((size_t){block} * sizeof(float));"}
    {omp("#pragma omp for schedule(dynamic, 1)")}
    for (long tg_t = 0; tg_t < {tiles * splits}; tg_t++) {{
      long tg_tile = tg_t / {splits}, tg_k_begin = tg_t % {splits} * {k_slice};
      long tg_k_end = tg_k_begin + {k_slice} < {K} ? tg_k_begin + {k_slice} : {K};
      {tile_coords}
      {"float* tg_c_block = tg_partials + tg_t * " + str(block) + ";" if split else ""}
      for (long tg_k0 = tg_k_begin; tg_k0 < tg_k_end; tg_k0 += {blk.kc}) {{
        long tg_kc = tg_k_end - tg_k0 < {blk.kc} ? tg_k_end - tg_k0 : {blk.kc};
        tg_gemm_pack_a_f32(tg_a_packed, tg_a + tg_bi * {sa_b} + tg_i0 * {sa_i} + tg_k0 * {sa_k}, tg_nrows, tg_kc,
                           {sa_i}, {sa_k});
        for (long tg_c = 0; tg_c < tg_ncols; tg_c += {NR}) {{
          tg_gemm_pack_b_f32(tg_b_panel, tg_b + tg_bi * {sb_b} + tg_k0 * {sb_k} + (tg_j0 + tg_c) * {sb_j}, tg_kc,
                             tg_ncols - tg_c < {NR} ? tg_ncols - tg_c : {NR}, {sb_k}, {sb_j});
          for (long tg_r = 0; tg_r < tg_nrows; tg_r += {MR})
            tg_gemm_micro_f32(tg_kc, tg_a_packed + tg_r * tg_kc, tg_b_panel, tg_c_block + tg_r * {blk.nc} + tg_c,
                              {blk.nc}, tg_k0 > tg_k_begin);
        }}
      }}
      {"" if split else epilogue}
    }}
    free(tg_a_packed);
    free(tg_b_panel);
    {"" if split else "free(tg_c_block);"}
    {reduce_and_store}
  }}
  {"free(tg_partials);" if split else ""}
}}
"""


def _render_simple(spec: GemmSpec, a: str, b: str, store: StoreFn, threads: int) -> str:
  """A plain loop nest (any ctype): one output row at a time, accumulated in a local row of J_BLOCK columns."""
  t = spec.ctype
  sa_b, sa_i, sa_k = spec.a_strides
  sb_b, sb_k, sb_j = spec.b_strides
  j_block = min(spec.N, 256)
  fmas = spec.batch * spec.M * spec.N * spec.K
  parallel = threads > 1 and fmas >= PARALLEL_MIN_FMAS
  pragma = f"#pragma omp parallel for num_threads({threads}) schedule(static)" if parallel else ""
  stmt = store("tg_acc", "tg_bi", "tg_i", "tg_j")
  return f"""{{
  /* gemm {spec.batch}x{spec.M}x{spec.N}x{spec.K}: plain loops */
  const {t}* restrict tg_a = (const {t}*)({a});
  const {t}* restrict tg_b = (const {t}*)({b});
  {pragma}
  for (long tg_row = 0; tg_row < {spec.batch * spec.M}; tg_row++) {{
    long tg_bi = tg_row / {spec.M}, tg_i = tg_row % {spec.M};
    (void)tg_i;
    for (long tg_j0 = 0; tg_j0 < {spec.N}; tg_j0 += {j_block}) {{
      {t} tg_row_acc[{j_block}] = {{0}};
      long tg_ncols = {spec.N} - tg_j0 < {j_block} ? {spec.N} - tg_j0 : {j_block};
      for (long tg_k = 0; tg_k < {spec.K}; tg_k++) {{
        {t} tg_a_ik = tg_a[tg_bi * {sa_b} + tg_i * {sa_i} + tg_k * {sa_k}];
        const {t}* tg_b_k = tg_b + tg_bi * {sb_b} + tg_k * {sb_k} + tg_j0 * {sb_j};
        for (long tg_c = 0; tg_c < tg_ncols; tg_c++) tg_row_acc[tg_c] += tg_a_ik * tg_b_k[tg_c * {sb_j}];
      }}
      for (long tg_c = 0; tg_c < tg_ncols; tg_c++) {{
        {t} tg_acc = tg_row_acc[tg_c];
        long tg_j = tg_j0 + tg_c;
        (void)tg_j;
        {stmt}
      }}
    }}
  }}
}}
"""
