"""OpenCL C 1.2 from the shared GPU renderer.

Half is a storage type everywhere (as on the CPU): values are read with vload_half and written with
vstore_half_rte, which need no cl_khr_fp16, so devices without fp16 arithmetic (PoCL) run fp16 kernels too.
bfloat16 lives in ushort. float64 needs cl_khr_fp64; without it a kernel that uses it is refused by name.
"""
from __future__ import annotations

from teenygrad.codegen.lower import BufferArg, LoopProgram
from teenygrad.dtype import DType, dtypes
from teenygrad.ir.ops import Ops
from teenygrad.renderer.gpu import GPURenderer, StoreText

OPENCL_PREAMBLE = r"""inline float bf16_to_f32(ushort x) { return as_float(((uint)x) << 16); }
inline ushort f32_to_bf16(float f) {
  uint u = as_uint(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return (ushort)((u >> 16) | 64);  /* keep NaN a NaN */
  u += 0x7fffu + ((u >> 16) & 1u);  /* round to nearest even */
  return (ushort)(u >> 16);
}
inline ushort f32_to_f16_bits(float f) { ushort h; vstore_half_rte(f, 0, (half*)&h); return h; }
inline float f16_bits_to_f32(ushort h) { return vload_half(0, (const half*)&h); }
inline float round_f16(float f) { return f16_bits_to_f32(f32_to_f16_bits(f)); }
inline long floordiv_i(long a, long b) { long q = a / b; return (a % b != 0 && ((a < 0) != (b < 0))) ? q - 1 : q; }
inline long floormod_i(long a, long b) { long m = a % b; return (m != 0 && ((m < 0) != (b < 0))) ? m + b : m; }
"""

OPENCL_TYPES = {dtypes.bool: "uchar", dtypes.uint8: "uchar", dtypes.int8: "char", dtypes.int16: "short",
                dtypes.uint16: "ushort", dtypes.int32: "int", dtypes.uint32: "uint", dtypes.int64: "long",
                dtypes.float16: "half", dtypes.bfloat16: "ushort", dtypes.float32: "float", dtypes.float64: "double"}


class OpenCLRenderer(GPURenderer):
  kernel_prefix = "__kernel "
  buffer_qualifier = "__global "
  index_type = "long"
  group_id = "get_group_id(0)"
  local_id = "get_local_id(0)"
  shared_qualifier = "__local"
  barrier = "barrier(CLK_LOCAL_MEM_FENCE);"
  subgroup_lane = "get_sub_group_local_id()"
  subgroup_index = "get_sub_group_id()"
  subgroup_count = "(int)get_num_sub_groups()"

  def __init__(self, *, fp64: bool = True, subgroups: bool = False, device_name: str = "OpenCL device", **limits):
    super().__init__(**limits)
    self.fp64, self.subgroups, self.device_name = fp64, subgroups, device_name
    # cl_khr_subgroups reduces int, uint, long, float (and double with fp64): sums only, since max must keep NaN
    self.subgroup_reduce = {Ops.SUM: "sub_group_reduce_add({value})"} if subgroups else {}

  # ---- types ----
  def storage_type(self, dtype: DType) -> str: return OPENCL_TYPES[dtype]

  def compute_type(self, dtype: DType) -> str:
    if dtype in (dtypes.float16, dtypes.bfloat16): return "float"
    if dtype == dtypes.bool: return "bool"
    return OPENCL_TYPES[dtype]

  def render_const(self, value, dtype: DType) -> str:
    if dtype == dtypes.int64:
      return f"{int(value)}L" if int(value) != -(1 << 63) else "(-9223372036854775807L-1)"
    return super().render_const(value, dtype)

  def _widen(self, dtype: DType, expr: str) -> str:
    if dtype == dtypes.bfloat16: return f"bf16_to_f32({expr})"
    if dtype == dtypes.float16: return f"f16_bits_to_f32({expr})"
    return expr

  def _narrow(self, dtype: DType, expr: str) -> str:
    if dtype == dtypes.bfloat16: return f"f32_to_bf16({expr})"
    if dtype == dtypes.float16: return f"f32_to_f16_bits({expr})"
    if dtype == dtypes.bool: return f"(uchar)(({expr})!=0)"
    return expr

  # ---- memory ----
  def render_load(self, buf: BufferArg, index: str, valid: str | None) -> str:
    load = f"vload_half({index}, {buf.name})" if buf.dtype == dtypes.float16 else self._widen(buf.dtype, f"{buf.name}[{index}]")
    zero = self.render_const(0, buf.dtype)
    return f"({valid} ? {load} : {zero})" if valid is not None else load

  def render_store(self, buf: BufferArg, index: str, value: str) -> StoreText:
    if buf.dtype == dtypes.float16: return StoreText(f"vstore_half_rte({value}, {index}, {buf.name});")
    return StoreText(f"{buf.name}[{index}] = {self._narrow(buf.dtype, value)};")

  # ---- values ----
  def render_cast(self, value: str, src: DType, dst: DType, bitcast: bool) -> str:
    if bitcast:
      half_types = (dtypes.float16, dtypes.bfloat16)
      bits = self._narrow(src, value) if src in half_types else value
      raw = f"as_{'ushort' if dst in half_types else OPENCL_TYPES[dst]}(({'ushort' if src in half_types else OPENCL_TYPES[src]})({bits}))"
      return self._widen(dst, raw) if dst in half_types else raw
    if dst == dtypes.bool: return f"({value} != 0)"
    if dst == dtypes.float16: return f"round_f16((float)({value}))"
    if dst == dtypes.bfloat16: return f"bf16_to_f32(f32_to_bf16((float)({value})))"
    if (wrapped := self.float_to_unsigned(value, src, dst)) is not None: return wrapped
    # OpenCL's plain casts from float to int are undefined out of range; convert_<type>_sat would clamp, C truncates
    return f"({self.compute_type(dst)})({value})"

  def render_alu(self, op: Ops, args: list[str], dtype: DType) -> str:
    # OpenCL's math builtins are overloaded: exp2, not exp2f
    if op is Ops.EXP2: return f"exp2({args[0]})"
    if op is Ops.LOG2: return f"log2({args[0]})"
    if op is Ops.SIN: return f"sin({args[0]})"
    if op is Ops.SQRT: return f"sqrt({args[0]})"
    return super().render_alu(op, args, dtype)

  # ---- whole kernels ----
  def gemm_preamble(self) -> str: return OPENCL_PREAMBLE

  def preamble(self, program: LoopProgram) -> str:
    used = set(program.dtype_used) | {buf.dtype for buf in program.buffers}
    pragmas = ""
    if dtypes.float64 in used:
      if not self.fp64:
        raise TypeError(f"float64 is not supported on {self.device_name} (no cl_khr_fp64); use float32")
      pragmas += "#pragma OPENCL EXTENSION cl_khr_fp64 : enable\n"
    if self.subgroups: pragmas += "#pragma OPENCL EXTENSION cl_khr_subgroups : enable\n"
    return pragmas + OPENCL_PREAMBLE


__all__ = ["OpenCLRenderer", "OPENCL_PREAMBLE"]
