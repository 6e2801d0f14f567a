"""C99 + OpenMP for the CPU: the C-family renderer plus threading and SIMD pragmas."""
from __future__ import annotations

from teenygrad.codegen.lower import Loop, LoopProgram, Stmt
from teenygrad.dtype import dtypes
from teenygrad.ir.ops import Ops
from teenygrad.renderer.cstyle import CStyleRenderer

C_PREAMBLE = r"""#include <math.h>
#include <stdint.h>
static inline float bf16_to_f32(unsigned short x) {
  unsigned int u = ((unsigned int)x) << 16; float f; __builtin_memcpy(&f, &u, 4); return f;
}
static inline unsigned short f32_to_bf16(float f) {
  unsigned int u; __builtin_memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return (unsigned short)((u >> 16) | 64);  /* keep NaN a NaN */
  u += 0x7fffu + ((u >> 16) & 1u);  /* round to nearest even */
  return (unsigned short)(u >> 16);
}
static inline long long floordiv_i(long long a, long long b) {
  long long q = a / b; return (a % b != 0 && ((a < 0) != (b < 0))) ? q - 1 : q;
}
static inline long long floormod_i(long long a, long long b) {
  long long m = a % b; return (m != 0 && ((m < 0) != (b < 0))) ? m + b : m;
}
static inline long long checked_index(long long i, long long n, int* err) {
  if (i < 0 || i >= n) { *err = 1; return 0; } return i;
}
"""


# SIMD variants of libm's functions (glibc's libmvec, linked with -lmvec): loops calling them vectorize
VECTOR_MATH_DECLARATIONS = "".join(f"#pragma omp declare simd notinbranch\n{t} {fn}({t});\n"
                                   for fn, t in (("exp2f", "float"), ("log2f", "float"), ("sinf", "float"),
                                                 ("exp2", "double"), ("log2", "double"), ("sin", "double")))


class CStore(str):
  """A rendered store that remembers its parts, so a large contiguous output can be streamed (see render_loop)."""
  def __new__(cls, text: str, buf, index: str, value: str):
    obj = super().__new__(cls, text)
    obj.buf, obj.index, obj.value = buf, index, value
    return obj


# Large outputs written once are streamed past the cache: a plain store first reads the line it writes (the CPU
# can't know the whole line will be overwritten), one extra memory pass that copies avoid with non-temporal stores.
# Tiles are computed into an L1 buffer and streamed out 64 bytes at a time.
STREAM_TILE = 2048
STREAM_MIN_BYTES = 1 << 22
STREAM_PREAMBLE = r"""#ifdef __AVX512F__
#include <immintrin.h>
static inline void tg_stream_f32(float* restrict dst, const float* restrict tile, long long n) {
  long long i = 0;
  if (((unsigned long long)dst & 63) == 0) for (; i + 16 <= n; i += 16) _mm512_stream_ps(dst + i, _mm512_load_ps(tile + i));
  for (; i < n; i++) dst[i] = tile[i];
}
#define TG_STREAM_FENCE() _mm_sfence()
#else
static inline void tg_stream_f32(float* restrict dst, const float* restrict tile, long long n) { for (long long i = 0; i < n; i++) dst[i] = tile[i]; }
#define TG_STREAM_FENCE()
#endif
"""


class CRenderer(CStyleRenderer):
  kernel_prefix = ""
  split_unraveled_levels = True   # loops per axis where a flat index would need // and % per element
  index_type = "long long"

  def __init__(self, threads: int = 1, check_bounds: bool = False, parallel_threshold: int = 1 << 15, vector_math: bool = False):
    super().__init__(threads, check_bounds)
    self.parallel_threshold, self.vector_math = parallel_threshold, vector_math

  def loop_pragma(self, loop: Loop, program: LoopProgram, in_parallel: bool) -> str:
    """The outermost loop with enough work runs on every core; innermost sums vectorize."""
    outermost = loop.parent is None and not in_parallel
    worth_threads = outermost and self.threads > 1 and program.work >= self.parallel_threshold
    threads = f"num_threads({self.threads})"
    if loop.kind == "output":
      return f"#pragma omp parallel for {threads} schedule(static)" if worth_threads else ""
    acc, op, dtype = loop.reduce_acc
    summable = op is Ops.SUM and not dtype.is_bool
    if worth_threads and summable: return f"#pragma omp parallel for {threads} reduction(+:{acc})"
    if summable and not any(isinstance(item, Loop) for _, item in loop.items): return f"#pragma omp simd reduction(+:{acc})"
    return ""

  def render_store(self, buf, index: str, value: str) -> str:
    return CStore(super().render_store(buf, index, value), buf, index, value)

  def _streamable(self, loop: Loop, program: LoopProgram) -> CStore | None:
    """The store of a flat loop that writes a big float32 output contiguously, once per iteration."""
    if loop.parent is not None or loop.kind != "output" or self.check_bounds or not isinstance(loop.size, int): return None
    if any(isinstance(item, Loop) for _, item in loop.items): return None
    stores = [item.text for _, item in loop.items if isinstance(item.text, CStore)]
    if len(stores) != 1: return None
    store = stores[0]
    if not store.buf.is_output or store.buf.dtype != dtypes.float32 or store.index != loop.var.name: return None
    return store if loop.size * 4 >= STREAM_MIN_BYTES else None

  def render_loop(self, loop: Loop, indent: int, program: LoopProgram, in_parallel: bool) -> list[str]:
    store = self._streamable(loop, program)
    if store is None: return super().render_loop(loop, indent, program, in_parallel)
    pad, var, n = "  " * indent, loop.var.name, loop.size
    items = [(order, Stmt(f"tg_tile[{var} - tg_base] = {store.value};") if item.text is store else item) for order, item in loop.items]
    threads = f"num_threads({self.threads}) " if self.threads > 1 and program.work >= self.parallel_threshold else ""
    lines = [pad + f"#pragma omp parallel for {threads}schedule(static)" if threads else "",
             f"{pad}for (long long tg_base = 0; tg_base < {n}; tg_base += {STREAM_TILE}) {{",
             f"{pad}  float tg_tile[{STREAM_TILE}] __attribute__((aligned(64)));",
             f"{pad}  long long tg_end = tg_base + {STREAM_TILE} < {n} ? tg_base + {STREAM_TILE} : {n};",
             f"{pad}  for (long long {var} = tg_base; {var} < tg_end; {var}++) {{"]
    lines += self.render_items(items, indent + 2, program, True)
    lines += [f"{pad}  }}", f"{pad}  tg_stream_f32({store.buf.name} + tg_base, tg_tile, tg_end - tg_base);", f"{pad}}}",
              f"{pad}TG_STREAM_FENCE();"]
    return [line for line in lines if line]

  def render_kernel(self, program: LoopProgram) -> str:
    return C_PREAMBLE + STREAM_PREAMBLE + (VECTOR_MATH_DECLARATIONS if self.vector_math else "") + super().render_kernel(program)


__all__ = ["CRenderer", "C_PREAMBLE", "dtypes"]
