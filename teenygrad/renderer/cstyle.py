"""Loop program to C-family source. C (CPU), CUDA and OpenCL differ only in the attributes set on a subclass.

Half and bfloat16 are storage types: values are widened to float on load, computed in float, and rounded on
store and on casts. Integer division and modulo never trap (a zero divisor gives 0): a kernel must not be able
to crash the interpreter.
"""
from __future__ import annotations

import math

from teenygrad.codegen.lower import BufferArg, Loop, LoopProgram, Stmt
from teenygrad.dtype import DType, dtypes
from teenygrad.ir.ops import Ops
from teenygrad.ir.symbolic import render as render_sint


class CStyleRenderer:
  kernel_prefix = ""
  buffer_qualifier = ""
  index_type = "long long"
  has_half = True
  float_suffix = "f"

  def __init__(self, threads: int = 1, check_bounds: bool = False):
    self.threads, self.check_bounds = threads, check_bounds

  # ---- types ----
  def storage_type(self, dtype: DType) -> str:
    if dtype == dtypes.bfloat16: return "unsigned short"
    if dtype == dtypes.bool: return "_Bool"
    return dtype.ctype

  def compute_type(self, dtype: DType) -> str:
    if dtype in (dtypes.float16, dtypes.bfloat16): return "float"
    return self.storage_type(dtype)

  # ---- values ----
  def render_const(self, value, dtype: DType) -> str:
    if dtype.is_float:
      value = float(value)
      if math.isnan(value): return "NAN"
      if math.isinf(value): return "INFINITY" if value > 0 else "(-INFINITY)"
      suffix = "" if dtype == dtypes.float64 else self.float_suffix
      return f"{value!r}{suffix}" if "e" in repr(value) or "." in repr(value) else f"{value!r}.0{suffix}"
    if dtype.is_bool: return "1" if value else "0"
    value = int(value)
    if dtype == dtypes.int64: return f"{value}LL" if value != -(1 << 63) else "(-9223372036854775807LL-1)"
    if dtype == dtypes.uint32: return f"{value}u"
    return str(value) if value != -(1 << 31) else "(-2147483647-1)"

  def render_index(self, expr) -> str: return render_sint(expr)

  def render_name(self, name: str, dtype: DType) -> str:
    """How a defined value is referred to later (SPIR-V renderers return a handle instead)."""
    return name

  def render_define(self, dtype: DType, name: str, expr: str, mutable: bool = False) -> str:
    return f"{self.compute_type(dtype)} {name} = {expr};"

  def _widen(self, dtype: DType, expr: str) -> str:
    if dtype == dtypes.bfloat16: return f"bf16_to_f32({expr})"
    if dtype == dtypes.float16: return f"(float)({expr})"
    return expr

  def _narrow(self, dtype: DType, expr: str) -> str:
    if dtype == dtypes.bfloat16: return f"f32_to_bf16({expr})"
    if dtype == dtypes.float16: return f"(_Float16)({expr})"
    if dtype == dtypes.bool: return f"(_Bool)({expr})"
    return expr

  def render_load(self, buf: BufferArg, index: str, valid: str | None) -> str:
    load = self._widen(buf.dtype, f"{buf.name}[{index}]")
    if self.check_bounds:
      load = self._widen(buf.dtype, f"{buf.name}[checked_index({index}, {render_sint(buf.size)}, err)]")
    zero = self.render_const(0, buf.dtype)
    return f"({valid} ? {load} : {zero})" if valid is not None else load

  def render_store(self, buf: BufferArg, index: str, value: str) -> str:
    if self.check_bounds: index = f"checked_index({index}, {render_sint(buf.size)}, err)"
    return f"{buf.name}[{index}] = {self._narrow(buf.dtype, value)};"

  def render_cast(self, value: str, src: DType, dst: DType, bitcast: bool) -> str:
    if bitcast:
      src_storage, dst_storage = self.storage_type(src), self.storage_type(dst)
      narrowed = self._narrow(src, value) if src in (dtypes.float16, dtypes.bfloat16) else value
      raw = f"({{ {src_storage} s_ = {narrowed}; {dst_storage} d_; __builtin_memcpy(&d_, &s_, sizeof d_); d_; }})"
      return self._widen(dst, raw)
    if dst == dtypes.bool: return f"({value} != 0)"
    if dst == dtypes.float16: return f"(float)(_Float16)({value})"
    if dst == dtypes.bfloat16: return f"bf16_to_f32(f32_to_bf16((float)({value})))"
    if (wrapped := self.float_to_unsigned(value, src, dst)) is not None: return wrapped
    return f"({self.compute_type(dst)})({value})"

  def float_to_unsigned(self, value: str, src: DType, dst: DType) -> str | None:
    """A float to uint8/16/32 through a signed 64-bit integer and the storage type, so negative values wrap as torch's
    do on x86 (the plain cast is undefined: GCC's vectorizer kept the sign through a following widening cast, PoCL
    saturates to 0); None for other casts."""
    if not (src.is_float and dst.is_int and not dst.signed and dst.itemsize < 8): return None
    return f"({self.compute_type(dst)})({self.storage_type(dst)})({self.compute_type(dtypes.int64)})({value})"

  def render_alu(self, op: Ops, args: list[str], dtype: DType) -> str:
    a = args[0]
    b = args[1] if len(args) > 1 else None
    f = "" if dtype == dtypes.float64 else "f"
    if op is Ops.EXP2: return f"exp2{f}({a})"
    if op is Ops.LOG2: return f"log2{f}({a})"
    if op is Ops.SIN: return f"sin{f}({a})"
    if op is Ops.SQRT: return f"sqrt{f}({a})"
    if op is Ops.RECIPROCAL: return f"(1.0{f if f else ''}/{a})"
    if op is Ops.ADD: return f"({a}+{b})"
    if op is Ops.MUL: return f"({a}*{b})"
    if op is Ops.MAX:
      if dtype.is_float: return f"(({a}!={a}||{a}>{b}) ? {a} : {b})"
      return f"(({a}>{b}) ? {a} : {b})"
    if op is Ops.IDIV: return f"(({b})==0 ? 0 : ({a})/({b}))"
    if op is Ops.MOD: return f"(({b})==0 ? 0 : ({a})%({b}))"
    if op is Ops.CMPLT: return f"({a}<{b})"
    if op is Ops.CMPNE: return f"({a}!={b})"
    if op is Ops.AND: return f"({a}&{b})"
    if op is Ops.OR: return f"({a}|{b})"
    if op is Ops.XOR: return f"({a}^{b})"
    if op is Ops.SHL: return f"({a}<<{b})"
    if op is Ops.SHR: return f"({a}>>{b})"
    if op is Ops.WHERE: return f"({a} ? {b} : {args[2]})"
    raise NotImplementedError(f"no C rendering for {op}")

  def render_accumulate(self, op: Ops, acc: str, value: str, dtype: DType) -> str:
    if op is Ops.SUM:
      return f"{acc} = {acc} || {value};" if dtype.is_bool else f"{acc} += {value};"
    return f"{acc} = {self.render_alu(Ops.MAX, [acc, value], dtype)};"

  # ---- whole kernels ----
  def render_params(self, program: LoopProgram) -> list[str]:
    params = []
    for buf in program.buffers:
      const = "" if buf.is_output else "const "
      params.append(f"{self.buffer_qualifier}{const}{self.storage_type(buf.dtype)}* restrict {buf.name}")
    params += [f"long long {v.name}" for v in program.variables]
    if self.check_bounds: params.append("int* restrict err")
    return params

  def render_items(self, items: list, indent: int, program: LoopProgram, in_parallel: bool) -> list[str]:
    lines: list[str] = []
    for _, item in sorted(items, key=lambda it: it[0]):
      if isinstance(item, Stmt): lines.append("  " * indent + item.text)
      else: lines += self.render_loop(item, indent, program, in_parallel)
    return lines

  def render_loop(self, loop: Loop, indent: int, program: LoopProgram, in_parallel: bool) -> list[str]:
    pad = "  " * indent
    lines = []
    pragma = self.loop_pragma(loop, program, in_parallel)
    if pragma: lines.append(pad + pragma)
    var = loop.var.name
    lines.append(f"{pad}for ({self.index_type} {var} = 0; {var} < {render_sint(loop.size)}; {var}++) {{")
    lines += self.render_items(loop.items, indent + 1, program, in_parallel or bool(pragma and "parallel" in pragma))
    lines.append(pad + "}")
    return lines

  def loop_pragma(self, loop: Loop, program: LoopProgram, in_parallel: bool) -> str:
    return ""

  def render_kernel(self, program: LoopProgram) -> str:
    body = self.render_items(program.prologue + [(float("inf"), lp) for lp in program.root_loops], 1, program, False)
    params = ", ".join(self.render_params(program))
    return f"{self.kernel_prefix}void {program.name}({params}) {{\n" + "\n".join(body) + "\n}\n"
