"""float64 exp2, log2 and sin in SPIR-V instructions.

GLSL.std.450's Exp2, Log2 and Sin take 16- and 32-bit floats only, and float64 results must match the CPU to
~1e-15, so these are written out: a range reduction to a small interval, then a polynomial (Taylor series,
enough terms for double precision on that interval), then the reduction undone.
"""
from __future__ import annotations

import math

from teenygrad.ir.ops import Ops

LN2 = math.log(2.0)
# pi/2 split so k * part is exact for |k| < 2**20 (Cody-Waite)
PIO2_1, PIO2_2, PIO2_3 = 1.57079632673412561417e+00, 6.07710050630396597660e-11, 2.02226624879595063154e-21


class F64Math:
  def __init__(self, emitter):
    self.e = emitter

  def c(self, value: float) -> int: return self.e.const(value, "f64")
  def f(self, name: str, *args: int) -> int: return self.e.op(name, "f64", *args)

  def horner(self, x: int, coefficients: list[float]) -> int:
    """c0 + x*(c1 + x*(c2 + ...))"""
    acc = self.c(coefficients[-1])
    for coefficient in reversed(coefficients[:-1]): acc = self.f("FAdd", self.f("FMul", acc, x), self.c(coefficient))
    return acc

  def call(self, op: Ops, x: int) -> int:
    if op is Ops.EXP2: return self.exp2(x)
    if op is Ops.LOG2: return self.log2(x)
    return self.sin(x)

  def exp2(self, x: int) -> int:
    e, t = self.e, self.e.type_of("f64")
    clamped = e.m.glsl(t, "FClamp", x, self.c(-1100.0), self.c(1100.0))
    n = e.m.glsl(t, "Floor", self.f("FAdd", clamped, self.c(0.5)))
    y = self.f("FMul", self.f("FSub", clamped, n), self.c(LN2))       # |y| <= ln2/2
    p = self.horner(y, [1.0 / math.factorial(i) for i in range(15)])
    # 2**n in two steps so that neither factor overflows before the product rounds to inf or a subnormal
    n_int = e.op("ConvertFToS", "i32", n)
    half = e.op("SDiv", "i32", n_int, e.const(2, "i32"))
    result = e.m.glsl(t, "Ldexp", e.m.glsl(t, "Ldexp", p, half), e.op("ISub", "i32", n_int, half))
    return e.op("Select", "f64", e.op("IsNan", "bool", x), x, result)

  def log2(self, x: int) -> int:
    e = self.e
    # scale subnormals up so the exponent field tells the truth
    tiny = e.op("FOrdLessThan", "bool", x, self.c(2.0 ** -1000))
    scaled = e.op("Select", "f64", tiny, self.f("FMul", x, self.c(2.0 ** 100)), x)
    bias = e.op("Select", "i64", tiny, e.const(100, "i64"), e.const(0, "i64"))
    bits = e.op("Bitcast", "u64", scaled)
    exponent_field = e.op("BitwiseAnd", "u64", e.op("ShiftRightLogical", "u64", bits, e.const(52, "u64")), e.const(0x7FF, "u64"))
    exponent = e.op("ISub", "i64", e.op("Bitcast", "i64", exponent_field), e.op("IAdd", "i64", e.const(1022, "i64"), bias))
    mantissa_bits = e.op("BitwiseOr", "u64", e.op("BitwiseAnd", "u64", bits, e.const(0x800FFFFFFFFFFFFF, "u64")),
                         e.const(1022 << 52, "u64"))
    m = e.op("Bitcast", "f64", mantissa_bits)                        # [0.5, 1)
    low = e.op("FOrdLessThan", "bool", m, self.c(math.sqrt(0.5)))
    m = e.op("Select", "f64", low, self.f("FMul", m, self.c(2.0)), m)  # [sqrt(.5), sqrt(2))
    exponent = e.op("Select", "i64", low, e.op("ISub", "i64", exponent, e.const(1, "i64")), exponent)
    s = self.f("FDiv", self.f("FSub", m, self.c(1.0)), self.f("FAdd", m, self.c(1.0)))
    s2 = self.f("FMul", s, s)
    series = self.horner(s2, [2.0 / (2 * i + 1) for i in range(12)])   # ln(m) = 2 atanh(s)
    ln_m = self.f("FMul", s, series)
    result = self.f("FAdd", e.op("ConvertSToF", "f64", exponent), self.f("FMul", ln_m, self.c(1.0 / LN2)))
    # the special values: log2(0) = -inf, log2(<0) = nan, log2(inf) = inf, log2(nan) = nan
    result = e.op("Select", "f64", e.op("FOrdEqual", "bool", x, self.c(0.0)), self.c(-math.inf), result)
    result = e.op("Select", "f64", e.op("FOrdEqual", "bool", x, self.c(math.inf)), x, result)
    bad = e.op("LogicalOr", "bool", e.op("FOrdLessThan", "bool", x, self.c(0.0)), e.op("IsNan", "bool", x))
    return e.op("Select", "f64", bad, self.c(math.nan), result)

  def sin(self, x: int) -> int:
    e, t = self.e, self.e.type_of("f64")
    k = e.m.glsl(t, "Floor", self.f("FAdd", self.f("FMul", x, self.c(2.0 / math.pi)), self.c(0.5)))
    r = self.f("FSub", x, self.f("FMul", k, self.c(PIO2_1)))
    r = self.f("FSub", r, self.f("FMul", k, self.c(PIO2_2)))
    r = self.f("FSub", r, self.f("FMul", k, self.c(PIO2_3)))          # |r| <= pi/4
    r2 = self.f("FMul", r, r)
    sin_r = self.f("FMul", r, self.horner(r2, [(-1.0) ** i / math.factorial(2 * i + 1) for i in range(10)]))
    cos_r = self.horner(r2, [(-1.0) ** i / math.factorial(2 * i) for i in range(10)])
    finite = e.op("FOrdLessThan", "bool", e.m.glsl(t, "FAbs", x), self.c(math.inf))
    safe_k = e.op("Select", "f64", finite, k, self.c(0.0))
    quadrant = e.op("BitwiseAnd", "i64", e.op("ConvertFToS", "i64", safe_k), e.const(3, "i64"))
    odd = e.op("IEqual", "bool", e.op("BitwiseAnd", "i64", quadrant, e.const(1, "i64")), e.const(1, "i64"))
    negative = e.op("IEqual", "bool", e.op("BitwiseAnd", "i64", quadrant, e.const(2, "i64")), e.const(2, "i64"))
    value = e.op("Select", "f64", odd, cos_r, sin_r)
    value = e.op("Select", "f64", negative, self.f("FNegate", value), value)
    return e.op("Select", "f64", finite, value, self.c(math.nan))
