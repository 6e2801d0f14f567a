"""CUDA C for NVIDIA GPUs: the shared GPU renderer (renderer/gpu.py: grid and work-group plans) with CUDA's spellings.

blockIdx/threadIdx for the ids, __shared__ and __syncthreads for the work-group, warp shuffles (__shfl_xor_sync)
for the subgroup reduce. Half and bfloat16 stay storage types (unsigned short) converted by libdevice (half) and bit arithmetic (bfloat16),
so kernels need no CUDA headers: NVRTC from the pip wheel (which ships no cuda_fp16.h) compiles them as they are.
Index math is 32-bit when every buffer and loop fits, 64-bit otherwise.
"""
from __future__ import annotations

from teenygrad.codegen.lower import BufferArg, Loop, LoopProgram
from teenygrad.dtype import DType, dtypes
from teenygrad.ir.ops import Ops
from teenygrad.ir.symbolic import vmax
from teenygrad.renderer.gpu import GPURenderer, StoreText

CUDA_PREAMBLE = r"""#define INFINITY __int_as_float(0x7f800000)
#define NAN __int_as_float(0x7fffffff)
/* a kernel that places its own grid-dependency wait (device/cuda.py GRID_DEPENDENCY) calls the macro below where it
   starts to read what the kernel before it wrote: what comes before may overlap that kernel's end. (This comment must
   not spell the call itself: device/cuda.py looks for it to know that a kernel waits by itself.) */
#if __CUDA_ARCH__ >= 900
#define TG_GRID_WAIT() asm volatile("griddepcontrol.wait;\n" ::: "memory"); asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory")
#else
#define TG_GRID_WAIT()
#endif
/* ask for bytes (a multiple of 16) at p (16-byte aligned) to be brought into L2, without waiting */
__device__ __forceinline__ void tg_prefetch_l2(const void* p, unsigned int bytes) {
#if __CUDA_ARCH__ >= 900
  asm volatile("cp.async.bulk.prefetch.L2.global [%0], %1;\n" :: "l"(p), "r"(bytes) : "memory");
#endif
}
/* half and bfloat16 conversions without inline asm, which would stop the compiler from merging neighbouring loads
   and stores into vector ones: libdevice's half conversions (cvt.f32.f16, cvt.rn.f16.f32), bfloat16 by bits */
extern "C" __device__ float __nv_half2float(unsigned short);
extern "C" __device__ unsigned short __nv_float2half_rn(float);
__device__ __forceinline__ float tg_h2f(unsigned short h) { return __nv_half2float(h); }
__device__ __forceinline__ unsigned short tg_f2h(float f) { return __nv_float2half_rn(f); }
__device__ __forceinline__ float tg_b2f(unsigned short b) { return __uint_as_float(((unsigned int)b) << 16); }
__device__ __forceinline__ unsigned short tg_f2b(float f) {
  unsigned int u = __float_as_uint(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return (unsigned short)((u >> 16) | 0x40u);   /* NaN stays a quiet NaN */
  return (unsigned short)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);                 /* round to nearest even */
}
__device__ __forceinline__ long long floordiv_i(long long a, long long b) {
  long long q = a / b; return (a % b != 0 && ((a < 0) != (b < 0))) ? q - 1 : q;
}
__device__ __forceinline__ long long floormod_i(long long a, long long b) {
  long long m = a % b; return (m != 0 && ((m < 0) != (b < 0))) ? m + b : m;
}
template <typename D, typename S> __device__ __forceinline__ D tg_bitcast(S s) { D d; memcpy(&d, &s, sizeof(d)); return d; }
/* warp reductions: every lane gets the warp's total (max keeps NaN, as the renderer's MAX does) */
template <typename T> __device__ __forceinline__ T tg_warp_sum(T v) {
  for (int m = 16; m > 0; m >>= 1) v += __shfl_xor_sync(0xffffffffu, v, m);
  return v;
}
template <typename T> __device__ __forceinline__ T tg_warp_max(T v) {
  for (int m = 16; m > 0; m >>= 1) { T o = __shfl_xor_sync(0xffffffffu, v, m); v = (v != v || v > o) ? v : o; }
  return v;
}
"""

# types __shfl_xor_sync moves (compute types: half and bfloat16 are computed in float)
WARP_DTYPES = (dtypes.float32, dtypes.float64, dtypes.int32, dtypes.uint32, dtypes.int64, dtypes.float16, dtypes.bfloat16)


class CUDARenderer(GPURenderer):
  kernel_prefix = 'extern "C" __global__ '
  index_type = "long long"
  restrict = "__restrict__"
  variable_type = "long long"   # launch arguments stay 64-bit even where index math narrows to int
  group_id = "blockIdx.x"
  local_id = "threadIdx.x"
  shared_qualifier = "__shared__"
  barrier = "__syncthreads();"
  subgroup_reduce = {Ops.SUM: "tg_warp_sum({value})", Ops.REDUCE_MAX: "tg_warp_max({value})"}
  subgroup_lane = "(threadIdx.x & 31)"
  subgroup_index = "(threadIdx.x >> 5)"
  subgroup_count = "(blockDim.x >> 5)"
  subgroup_dtypes = WARP_DTYPES
  vector_bytes = 16   # every buffer argument is a cuMemAlloc base (256-byte aligned): 16-byte loads and stores
  subgroup_width = 32

  def __init__(self, arch: str = "sm_90", max_local: int = 1024, local_memory: int = 48 * 1024):
    # 256 threads per block for elementwise work, 512 to share a row (measured on an H100: softmax and layernorm
    # rows of 8192 floats at 0.84x copy bandwidth)
    super().__init__(max_local=max_local, grid_local=256, group_local=512, local_memory=local_memory)
    self.arch = arch

  # ---- types ----
  def storage_type(self, dtype: DType) -> str:
    if dtype in (dtypes.float16, dtypes.bfloat16): return "unsigned short"
    if dtype == dtypes.bool: return "bool"
    return dtype.ctype

  def _widen(self, dtype: DType, expr: str) -> str:
    if dtype == dtypes.bfloat16: return f"tg_b2f({expr})"
    if dtype == dtypes.float16: return f"tg_h2f({expr})"
    return expr

  def _narrow(self, dtype: DType, expr: str) -> str:
    if dtype == dtypes.bfloat16: return f"tg_f2b({expr})"
    if dtype == dtypes.float16: return f"tg_f2h({expr})"
    if dtype == dtypes.bool: return f"(bool)({expr})"
    return expr

  def render_cast(self, value: str, src: DType, dst: DType, bitcast: bool) -> str:
    if bitcast:
      narrowed = self._narrow(src, value) if src in (dtypes.float16, dtypes.bfloat16) else value
      return self._widen(dst, f"tg_bitcast<{self.storage_type(dst)}, {self.storage_type(src)}>({narrowed})")
    if dst == dtypes.bool: return f"({value} != 0)"
    if dst == dtypes.float16: return f"tg_h2f(tg_f2h((float)({value})))"
    if dst == dtypes.bfloat16: return f"tg_b2f(tg_f2b((float)({value})))"
    if (wrapped := self.float_to_unsigned(value, src, dst)) is not None: return wrapped
    return f"({self.compute_type(dst)})({value})"

  # ---- planning ----
  def _long(self, reduces: list[Loop]) -> bool:
    """A reduce nest is worth a work-group by its total iterations (a full sum over (64, 300) is 19200, not 64)."""
    return any(self._iterations(lp) >= self.group_min_reduce for lp in reduces)

  def render_aligned(self, buf: BufferArg, align: int) -> str:
    pointer = f"{'' if buf.is_output else 'const '}{self.storage_type(buf.dtype)}*"
    return f"  {buf.name} = ({pointer})__builtin_assume_aligned({buf.name}, {align});"

  # ---- whole kernels ----
  def _needs_64bit(self, program: LoopProgram) -> bool:
    sizes = [vmax(b.size) for b in program.buffers]
    def walk(items):
      for _, item in items:
        if isinstance(item, Loop):
          sizes.append(vmax(item.size)); walk(item.items)
    walk(program.prologue + [(0, lp) for lp in program.root_loops])
    return max(sizes, default=0) >= 1 << 30   # index sums stay far from 2^31

  def preamble(self, program: LoopProgram) -> str: return CUDA_PREAMBLE

  def render_kernel(self, program: LoopProgram) -> str:
    self.index_type = "long long" if self._needs_64bit(program) else "int"
    src = super().render_kernel(program)
    # the block size is fixed per kernel: tell ptxas, so it can budget registers for it
    local = self.plan(program).local
    return src.replace(f"{self.kernel_prefix}void ", f"{self.kernel_prefix}__launch_bounds__({local}) void ", 1)


__all__ = ["CUDARenderer", "CUDA_PREAMBLE", "StoreText"]
