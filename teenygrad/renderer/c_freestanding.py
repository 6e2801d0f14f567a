"""Portable freestanding C99 for microcontrollers and `-nostdlib` builds (what `teenygrad.export` writes).

Differences from the CPU renderer (renderer/c.py): no OpenMP, no intrinsics, no <math.h> or <stdint.h>, `int`
indices (buffers are far below 2^31 elements on such targets, and 64-bit index math is slow and large on a
Cortex-M), and kernels are `static` functions of one translation unit. The transcendental primitives (EXP2, LOG2,
SIN, SQRT) call the library's own approximations below, within 1 ulp of libm in fp32 on the test grid. Supported:
float32, the integer types, bool, and float64 for optimizer scalars (exp2, log2, sqrt; no sin). An int8 weight with
per-channel scales is dequantized inside the load.
"""
from __future__ import annotations

import re
from collections.abc import Callable

from teenygrad.codegen.lower import BufferArg, LoopProgram
from teenygrad.dtype import DType, dtypes
from teenygrad.ir.ops import Ops
from teenygrad.renderer.cstyle import CStyleRenderer

# float64 for optimizer scalars (lr, Adam's bias corrections), soft-float on a Cortex-M
SUPPORTED_DTYPES = (dtypes.float32, dtypes.float64, dtypes.bool, dtypes.int8, dtypes.uint8, dtypes.int16, dtypes.uint16, dtypes.int32,
                    dtypes.uint32, dtypes.int64)

# The fp32 approximations, each emitted only when a kernel calls it (an unused static function would be a warning).
# Range reduction to a small interval, then a polynomial; NaN, infinities, zeros and subnormals are handled.
MATH_FUNCTIONS = {
  "tg_exp2f": r"""static float tg_exp2f(float x) {
  /* 2^x = 2^k * 2^f with k = round(x), |f| <= 1/2; 2^f by its Taylor series in f*ln2 (truncation error < 6e-9) */
  union { float f; unsigned int u; } scale;
  float k, f, p;
  int n;
  if (x != x) return x;
  if (x >= 128.0f) return __builtin_inff();
  if (x < -151.0f) return 0.0f;
  k = (float)(int)(x >= 0.0f ? x + 0.5f : x - 0.5f);
  f = x - k;
  p = 1.0f + f * (0.693147181f + f * (0.240226507f + f * (0.0555041087f + f * (0.00961812911f + f * (0.00133335581f
      + f * (0.000154035304f + f * 1.52527338e-05f))))));
  n = (int)k;
  if (n > 127) { scale.u = 254u << 23; return p * scale.f * 2.0f; }
  if (n < -126) { scale.u = (unsigned int)(n + 127 + 64) << 23; return p * scale.f * 5.42101086e-20f; }  /* 2^-64 */
  scale.u = (unsigned int)(n + 127) << 23;
  return p * scale.f;
}
""",
  "tg_log2f": r"""static float tg_log2f(float x) {
  /* x = 2^e * m with m in [sqrt(1/2), sqrt(2)); ln m = 2 atanh(s), s = (m-1)/(m+1), |s| < 0.172 */
  union { float f; unsigned int u; } v;
  float m, s, s2, ln_m;
  int e = 0;
  if (x != x || x == __builtin_inff()) return x;
  if (x < 0.0f) return __builtin_nanf("");
  if (x == 0.0f) return -__builtin_inff();
  v.f = x;
  if (v.u < 0x00800000u) { v.f = x * 8388608.0f; e = -23; }   /* subnormal: scale by 2^23 first */
  e += (int)(v.u >> 23) - 127;
  v.u = (v.u & 0x007fffffu) | 0x3f800000u;
  m = v.f;
  if (m > 1.41421356f) { m *= 0.5f; e += 1; }
  s = (m - 1.0f) / (m + 1.0f);
  s2 = s * s;
  ln_m = 2.0f * s * (1.0f + s2 * (0.333333333f + s2 * (0.2f + s2 * (0.142857143f + s2 * 0.111111111f))));
  return (float)e + ln_m * 1.44269504f;
}
""",
  "tg_sqrtf": r"""static float tg_sqrtf(float x) {
  /* a bit-level first guess (within 4%), then Newton steps; each doubles the correct digits */
  union { float f; unsigned int u; } v;
  float y, scale = 1.0f;
  if (x != x || x == 0.0f || x == __builtin_inff()) return x;
  if (x < 0.0f) return __builtin_nanf("");
  if (x < 1.17549435e-38f) { x *= 16777216.0f; scale = 0.000244140625f; }   /* subnormal: x*2^24, result*2^-12 */
  v.f = x;
  v.u = (v.u >> 1) + 0x1fbb4f2eu;
  y = v.f;
  y = 0.5f * (y + x / y);
  y = 0.5f * (y + x / y);
  y = 0.5f * (y + x / y);
  y = 0.5f * (y + x / y);
  return y * scale;
}
""",
  "tg_sinf": r"""static float tg_sinf(float x) {
  /* x = k*pi/2 + r, |r| <= pi/4, with pi/2 in three parts (exact products for |k| < 2^15, so |x| < 5e4 keeps
     fp32 accuracy); then the sine or cosine polynomial of r by the quadrant */
  float k, r, r2, s, c;
  int quadrant;
  if (x != x || x == __builtin_inff() || x == -__builtin_inff()) return __builtin_nanf("");
  k = x * 0.636619772f;
  k = (float)(int)(k >= 0.0f ? k + 0.5f : k - 0.5f);
  r = ((x - k * 1.5703125f) - k * 4.83751297e-04f) - k * 7.54978995e-08f;
  quadrant = (int)k & 3;
  r2 = r * r;
  s = r + r * r2 * (-0.166666667f + r2 * (0.00833333333f + r2 * (-0.000198412698f + r2 * 2.75573192e-06f)));
  c = 1.0f + r2 * (-0.5f + r2 * (0.0416666667f + r2 * (-0.00138888889f + r2 * (2.48015873e-05f - r2 * 2.75573192e-07f))));
  if (quadrant == 0) return s;
  if (quadrant == 1) return c;
  if (quadrant == 2) return -s;
  return -c;
}
""",
  "tg_exp2": r"""static double tg_exp2(double x) {
  /* float64 (optimizer scalars, e.g. Adam's beta^t): as tg_exp2f, Taylor series to degree 13 (error < 2e-17) */
  union { double d; unsigned long long u; } scale;
  double k, f, p;
  int n;
  if (x != x) return x;
  if (x >= 1024.0) return __builtin_inf();
  if (x < -1076.0) return 0.0;
  k = (double)(long long)(x >= 0.0 ? x + 0.5 : x - 0.5);
  f = (x - k) * 0.69314718055994531;
  p = 1.0 + f * (1.0 + f * (1.0 / 2 + f * (1.0 / 6 + f * (1.0 / 24 + f * (1.0 / 120 + f * (1.0 / 720 + f * (1.0 / 5040
      + f * (1.0 / 40320 + f * (1.0 / 362880 + f * (1.0 / 3628800 + f * (1.0 / 39916800 + f * (1.0 / 479001600
      + f * (1.0 / 6227020800.0)))))))))))));
  n = (int)k;
  if (n > 1023) { scale.u = 2046ull << 52; return p * scale.d * 2.0; }
  if (n < -1022) { scale.u = (unsigned long long)(n + 1023 + 128) << 52; return p * scale.d * 2.9387358770557188e-39; }  /* 2^-128 */
  scale.u = (unsigned long long)(n + 1023) << 52;
  return p * scale.d;
}
""",
  "tg_log2": r"""static double tg_log2(double x) {
  /* float64: as tg_log2f, with the atanh series to s^23 (error < 1e-17) */
  union { double d; unsigned long long u; } v;
  double m, s, s2, ln_m;
  int e = 0;
  if (x != x || x == __builtin_inf()) return x;
  if (x < 0.0) return __builtin_nan("");
  if (x == 0.0) return -__builtin_inf();
  v.d = x;
  if (v.u < 0x0010000000000000ull) { v.d = x * 18014398509481984.0; e = -54; }   /* subnormal: scale by 2^54 */
  e += (int)(v.u >> 52) - 1023;
  v.u = (v.u & 0x000fffffffffffffull) | 0x3ff0000000000000ull;
  m = v.d;
  if (m > 1.4142135623730951) { m *= 0.5; e += 1; }
  s = (m - 1.0) / (m + 1.0);
  s2 = s * s;
  ln_m = 2.0 * s * (1.0 + s2 * (1.0 / 3 + s2 * (1.0 / 5 + s2 * (1.0 / 7 + s2 * (1.0 / 9 + s2 * (1.0 / 11 + s2 * (1.0 / 13
         + s2 * (1.0 / 15 + s2 * (1.0 / 17 + s2 * (1.0 / 19 + s2 * (1.0 / 21 + s2 * (1.0 / 23))))))))))));
  return (double)e + ln_m * 1.4426950408889634;
}
""",
  "tg_sqrt": r"""static double tg_sqrt(double x) {
  /* float64: bit-level first guess, then Newton steps */
  union { double d; unsigned long long u; } v;
  double y, scale = 1.0;
  if (x != x || x == 0.0 || x == __builtin_inf()) return x;
  if (x < 0.0) return __builtin_nan("");
  if (x < 2.2250738585072014e-308) { x *= 18014398509481984.0; scale = 7.450580596923828e-09; }  /* x*2^54, result*2^-27 */
  v.d = x;
  v.u = (v.u >> 1) + 0x1ff7a3bea91d9b1bull;
  y = v.d;
  y = 0.5 * (y + x / y);
  y = 0.5 * (y + x / y);
  y = 0.5 * (y + x / y);
  y = 0.5 * (y + x / y);
  y = 0.5 * (y + x / y);
  return y * scale;
}
""",
}

# Where a compiler may call them for a struct copy or a zeroing loop; weak, so a libc linked in later wins.
MEM_FUNCTIONS = r"""#if defined(__clang__)
#define TG_NO_BUILTIN __attribute__((weak, no_builtin))
#elif defined(__GNUC__)
#define TG_NO_BUILTIN __attribute__((weak, optimize("no-tree-loop-distribute-patterns")))
#else
#define TG_NO_BUILTIN
#endif
void *memcpy(void *restrict dst, const void *restrict src, __SIZE_TYPE__ n);
void *memset(void *dst, int value, __SIZE_TYPE__ n);
TG_NO_BUILTIN void *memcpy(void *restrict dst, const void *restrict src, __SIZE_TYPE__ n) {
  unsigned char *d = (unsigned char *)dst;
  const unsigned char *s = (const unsigned char *)src;
  while (n--) *d++ = *s++;
  return dst;
}
TG_NO_BUILTIN void *memset(void *dst, int value, __SIZE_TYPE__ n) {
  unsigned char *d = (unsigned char *)dst;
  while (n--) *d++ = (unsigned char)value;
  return dst;
}
"""

INDEX_HELPERS = r"""static inline int floordiv_i(int a, int b) { int q = a / b; return (a % b != 0 && ((a < 0) != (b < 0))) ? q - 1 : q; }
static inline int floormod_i(int a, int b) { int m = a % b; return (m != 0 && ((m < 0) != (b < 0))) ? m + b : m; }
"""

_BITCASTS = {(dtypes.float32, dtypes.int32), (dtypes.int32, dtypes.float32), (dtypes.float32, dtypes.uint32),
             (dtypes.uint32, dtypes.float32)}


class FreestandingCRenderer(CStyleRenderer):
  """C99 with no library calls. `channel_size(buf)` returns the elements per output channel for an int8 weight
  that is dequantized in its loads (`q[i] * scale[i / channel_size]`), None for a plain buffer."""
  kernel_prefix = "static "
  index_type = "int"
  has_half = False

  def __init__(self, channel_size: Callable[[BufferArg], int | None] | None = None):
    super().__init__(threads=1, check_bounds=False)
    self.channel_size = channel_size or (lambda buf: None)
    self.restrict = True   # off for a kernel whose output is also passed as one of its inputs

  def _check_dtype(self, dtype: DType) -> None:
    if dtype not in SUPPORTED_DTYPES:
      raise NotImplementedError(f"export supports {', '.join(d.name for d in SUPPORTED_DTYPES)}; a kernel uses {dtype.name}")

  def storage_type(self, dtype: DType) -> str:
    self._check_dtype(dtype)
    return super().storage_type(dtype)

  def render_const(self, value, dtype: DType) -> str:
    text = super().render_const(value, dtype)
    if dtype.is_float:   # no <math.h>: the compiler's builtins stand in for its macros
      return {"NAN": "__builtin_nanf(\"\")", "INFINITY": "__builtin_inff()", "(-INFINITY)": "(-__builtin_inff())"}.get(text, text)
    return text

  def render_alu(self, op: Ops, args: list[str], dtype: DType) -> str:
    self._check_dtype(dtype)
    names = {(Ops.EXP2, dtypes.float32): "tg_exp2f", (Ops.LOG2, dtypes.float32): "tg_log2f", (Ops.SIN, dtypes.float32): "tg_sinf",
             (Ops.SQRT, dtypes.float32): "tg_sqrtf", (Ops.EXP2, dtypes.float64): "tg_exp2", (Ops.LOG2, dtypes.float64): "tg_log2",
             (Ops.SQRT, dtypes.float64): "tg_sqrt"}
    if op in (Ops.EXP2, Ops.LOG2, Ops.SIN, Ops.SQRT):
      if (op, dtype) not in names: raise NotImplementedError(f"export has no {op.name} for {dtype.name}")
      return f"{names[(op, dtype)]}({args[0]})"
    return super().render_alu(op, args, dtype)

  def render_cast(self, value: str, src: DType, dst: DType, bitcast: bool) -> str:
    self._check_dtype(src); self._check_dtype(dst)
    if not bitcast: return super().render_cast(value, src, dst, bitcast)
    if (src, dst) not in _BITCASTS: raise NotImplementedError(f"export cannot bitcast {src.name} to {dst.name}")
    return f"tg_bits_{src.name}_{dst.name}({value})"

  def render_load(self, buf: BufferArg, index: str, valid: str | None) -> str:
    channel = self.channel_size(buf)
    if channel is None: return super().render_load(buf, index, valid)
    load = f"((float){buf.name}[{index}] * {buf.name}_scale[({index}) / {channel}])"
    return f"({valid} ? {load} : 0.0f)" if valid is not None else load

  def render_params(self, program: LoopProgram) -> list[str]:
    params = []
    for buf in program.buffers:
      if self.channel_size(buf) is not None:
        params += [f"const signed char* {buf.name}", f"const float* {buf.name}_scale"]
        continue
      const = "" if buf.is_output else "const "
      params.append(f"{const}{self.storage_type(buf.dtype)}*{' restrict' if self.restrict else ''} {buf.name}")
    return params + [f"int {v.name}" for v in program.variables]

  def render_kernel(self, program: LoopProgram) -> str:
    return _drop_unused_values(super().render_kernel(program))


_DEFINE = re.compile(r"^\s*[A-Za-z_][A-Za-z_ ]* (v\d+) = .*;$")


def _drop_unused_values(src: str) -> str:
  """Lowering may define values no statement reads; with -Wall -Werror each would be an error, so drop them
  (definitions are pure expressions) until none is left."""
  lines = src.split("\n")
  while True:
    counts: dict[str, int] = {}
    for name in re.findall(r"\bv\d+\b", src): counts[name] = counts.get(name, 0) + 1
    unused = {i for i, line in enumerate(lines) if (m := _DEFINE.match(line)) and counts.get(m.group(1)) == 1}
    if not unused: return src
    lines = [line for i, line in enumerate(lines) if i not in unused]
    src = "\n".join(lines)


def bitcast_helpers(src: str) -> str:
  """The union-based bitcast functions the kernels in `src` call."""
  out = []
  for a, b in sorted(_BITCASTS, key=lambda p: (p[0].name, p[1].name)):
    name = f"tg_bits_{a.name}_{b.name}"
    if name + "(" in src:
      out.append(f"static {b.ctype} {name}({a.ctype} x) {{ union {{ {a.ctype} from; {b.ctype} to; }} u; u.from = x; return u.to; }}\n")
  return "".join(out)


def support_code(kernels_src: str) -> str:
  """Everything the kernels call, and nothing they don't."""
  parts = [MEM_FUNCTIONS]
  if "floordiv_i(" in kernels_src or "floormod_i(" in kernels_src: parts.append(INDEX_HELPERS)
  parts += [text for name, text in MATH_FUNCTIONS.items() if name + "(" in kernels_src]
  parts.append(bitcast_helpers(kernels_src))
  return "\n".join(p for p in parts if p)


__all__ = ["FreestandingCRenderer", "support_code", "MATH_FUNCTIONS", "SUPPORTED_DTYPES"]
