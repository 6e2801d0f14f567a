"""C99 + OpenMP for the CPU: the C-family renderer plus threading and SIMD pragmas."""
from __future__ import annotations

from teenygrad.codegen.lower import Loop, LoopProgram
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

  def render_kernel(self, program: LoopProgram) -> str:
    return C_PREAMBLE + (VECTOR_MATH_DECLARATIONS if self.vector_math else "") + super().render_kernel(program)


__all__ = ["CRenderer", "C_PREAMBLE", "dtypes"]
