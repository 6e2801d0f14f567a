"""CUDA C for NVIDIA GPUs: the C-family renderer with CUDA's spellings and a grid mapping of the loop program.

Grid mapping (the loop program has one flattened outermost output loop L0, with everything else nested in it):
- thread mode: each thread computes whole L0 iterations, in a grid-stride loop; used for elementwise kernels and
  for kernels whose per-iteration work is small (or whose L0 alone fills the GPU).
- block mode: each block computes whole L0 iterations (a softmax row, a layernorm row); the loops directly inside
  L0 are split across the block's threads (thread-strided), and a reduce split that way is finished with warp
  shuffles and shared memory (tg_block_reduce), its result broadcast to every thread. Statements at L0's own level
  run redundantly in every thread (they are cheap, and this needs no broadcast); a store there is done by thread 0.
Half and bfloat16 stay storage types (unsigned short) converted with PTX cvt instructions, so kernels need no CUDA
headers: NVRTC from the pip wheel compiles them as they are.
"""
from __future__ import annotations

from teenygrad.codegen.lower import Loop, LoopProgram, Stmt
from teenygrad.dtype import DType, dtypes
from teenygrad.helpers import ceildiv
from teenygrad.ir.ops import REDUCE_IDENTITY, Ops
from teenygrad.ir.symbolic import evaluate, vmax
from teenygrad.ir.symbolic import render as render_sint
from teenygrad.renderer.cstyle import CStyleRenderer

CUDA_PREAMBLE = r"""#define INFINITY __int_as_float(0x7f800000)
#define NAN __int_as_float(0x7fffffff)
typedef unsigned short tg_half;
typedef unsigned short tg_bf16;
__device__ __forceinline__ float tg_h2f(unsigned short h) { float f; asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h)); return f; }
__device__ __forceinline__ unsigned short tg_f2h(float f) { unsigned short h; asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f)); return h; }
__device__ __forceinline__ float tg_b2f(unsigned short b) { return __uint_as_float(((unsigned int)b) << 16); }
__device__ __forceinline__ unsigned short tg_f2b(float f) { unsigned short b; asm("cvt.rn.bf16.f32 %0, %1;" : "=h"(b) : "f"(f)); return b; }
__device__ __forceinline__ long long floordiv_i(long long a, long long b) {
  long long q = a / b; return (a % b != 0 && ((a < 0) != (b < 0))) ? q - 1 : q;
}
__device__ __forceinline__ long long floormod_i(long long a, long long b) {
  long long m = a % b; return (m != 0 && ((m < 0) != (b < 0))) ? m + b : m;
}
template <typename D, typename S> __device__ __forceinline__ D tg_bitcast(S s) { D d; memcpy(&d, &s, sizeof(d)); return d; }
template <typename T> __device__ __forceinline__ T tg_shfl(T v, int mask) { return __shfl_xor_sync(0xffffffffu, v, mask); }
template <> __device__ __forceinline__ bool tg_shfl<bool>(bool v, int mask) { return __shfl_xor_sync(0xffffffffu, (int)v, mask) != 0; }
template <> __device__ __forceinline__ signed char tg_shfl<signed char>(signed char v, int mask) { return (signed char)__shfl_xor_sync(0xffffffffu, (int)v, mask); }
template <> __device__ __forceinline__ unsigned char tg_shfl<unsigned char>(unsigned char v, int mask) { return (unsigned char)__shfl_xor_sync(0xffffffffu, (int)v, mask); }
template <> __device__ __forceinline__ short tg_shfl<short>(short v, int mask) { return (short)__shfl_xor_sync(0xffffffffu, (int)v, mask); }
template <> __device__ __forceinline__ unsigned short tg_shfl<unsigned short>(unsigned short v, int mask) { return (unsigned short)__shfl_xor_sync(0xffffffffu, (int)v, mask); }
template <typename T> __device__ __forceinline__ T tg_sum(T a, T b) { return a + b; }
template <> __device__ __forceinline__ bool tg_sum<bool>(bool a, bool b) { return a || b; }
template <typename T> __device__ __forceinline__ T tg_max(T a, T b) { return (a != a || a > b) ? a : b; }
/* every thread of the block passes its partial value and gets the block's total; scratch holds 32 values of T */
template <typename T, T (*OP)(T, T)> __device__ __forceinline__ T tg_block_reduce(T v, T identity, T* scratch) {
  for (int m = 16; m > 0; m >>= 1) v = OP(v, tg_shfl(v, m));
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = (blockDim.x + 31) >> 5;
  __syncthreads();  /* an earlier reduce may still be reading scratch */
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  if (warp == 0) {
    v = lane < warps ? scratch[lane] : identity;
    for (int m = 16; m > 0; m >>= 1) v = OP(v, tg_shfl(v, m));
    if (lane == 0) scratch[0] = v;
  }
  __syncthreads();
  return scratch[0];
}
"""


class StoreText(str):
  """A rendered store: in block mode only thread 0 runs a store that sits at the block's own level."""


# a block-mode kernel needs at least this many iterations in a loop directly inside L0 ...
BLOCK_MODE_MIN_INNER = 32
# ... and L0 must not alone fill the GPU with threads (132 SMs x 2048 threads on an H100)
BLOCK_MODE_MAX_OUTER = 1 << 18
THREADS_PER_BLOCK = 256
MAX_GRID = 1 << 20


class CUDARenderer(CStyleRenderer):
  kernel_prefix = 'extern "C" __global__ '
  buffer_qualifier = ""
  index_type = "long long"

  def __init__(self, arch: str = "sm_90"):
    super().__init__(threads=1, check_bounds=False)
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

  def render_store(self, buf, index: str, value: str) -> str:
    return StoreText(super().render_store(buf, index, value))

  def render_cast(self, value: str, src: DType, dst: DType, bitcast: bool) -> str:
    if bitcast:
      narrowed = self._narrow(src, value) if src in (dtypes.float16, dtypes.bfloat16) else value
      raw = f"tg_bitcast<{self.storage_type(dst)}, {self.storage_type(src)}>({narrowed})"
      return self._widen(dst, raw)
    if dst == dtypes.bool: return f"({value} != 0)"
    if dst == dtypes.float16: return f"tg_h2f(tg_f2h((float)({value})))"
    if dst == dtypes.bfloat16: return f"tg_b2f(tg_f2b((float)({value})))"
    return f"({self.compute_type(dst)})({value})"

  def render_params(self, program: LoopProgram) -> list[str]:
    params = []
    for buf in program.buffers:
      const = "" if buf.is_output else "const "
      params.append(f"{const}{self.storage_type(buf.dtype)}* __restrict__ {buf.name}")
    return params + [f"long long {v.name}" for v in program.variables]

  # ---- grid mapping ----
  def block_mode(self, program: LoopProgram) -> bool:
    """Whole blocks per L0 iteration when L0 holds a sizable loop and L0 alone would not fill the GPU."""
    if not program.root_loops: return True
    outer = program.root_loops[0]
    inner = [item for _, item in outer.items if isinstance(item, Loop)]
    return bool(inner) and max(vmax(lp.size) for lp in inner) >= BLOCK_MODE_MIN_INNER and vmax(outer.size) <= BLOCK_MODE_MAX_OUTER

  def threads_per_block(self, program: LoopProgram) -> int:
    if not self.block_mode(program): return THREADS_PER_BLOCK
    items = program.root_loops[0].items if program.root_loops else program.prologue
    inner = max((vmax(item.size) for _, item in items if isinstance(item, Loop)), default=32)
    threads = 32
    while threads < min(inner, 1024 if not program.root_loops else 512): threads *= 2
    return threads

  def launch_dims(self, program: LoopProgram) -> dict:
    """Block size, and a function of the kernel's variable values giving the grid size."""
    block = self.threads_per_block(program)
    if not program.root_loops: return {"block": (block, 1, 1), "grid": lambda vals: (1, 1, 1)}
    size, variables, per_block = program.root_loops[0].size, program.variables, 1 if self.block_mode(program) else block

    def grid(vals: tuple[int, ...]) -> tuple[int, int, int]:
      n = evaluate(size, dict(zip(variables, vals))) if not isinstance(size, int) else size
      return (max(1, min(ceildiv(n, per_block), MAX_GRID)), 1, 1)
    return {"block": (block, 1, 1), "grid": grid}

  def _needs_64bit(self, program: LoopProgram) -> bool:
    sizes = [vmax(b.size) for b in program.buffers]
    def loops(items):
      for _, item in items:
        if isinstance(item, Loop):
          sizes.append(vmax(item.size)); loops(item.items)
    loops(program.prologue + [(0, lp) for lp in program.root_loops])
    return max(sizes, default=0) >= (1 << 31) - MAX_GRID * 1024

  def render_block_items(self, items: list, indent: int, program: LoopProgram) -> list[str]:
    """Items that every thread of a block runs together: direct child loops are split across the threads."""
    lines: list[str] = []
    pad = "  " * indent
    for _, item in sorted(items, key=lambda it: it[0]):
      if isinstance(item, Stmt):
        lines.append(pad + (f"if (threadIdx.x == 0) {item.text}" if isinstance(item.text, StoreText) else item.text))
        continue
      var = item.var.name
      lines.append(f"{pad}for ({self.index_type} {var} = threadIdx.x; {var} < {render_sint(item.size)}; {var} += blockDim.x) {{")
      lines += self.render_items(item.items, indent + 1, program, True)
      lines.append(pad + "}")
      if item.kind == "reduce":
        acc, op, dtype = item.reduce_acc
        ctype = self.compute_type(dtype)
        identity = self.render_const(REDUCE_IDENTITY[op](dtype), dtype)
        fn = "tg_sum" if op is Ops.SUM else "tg_max"
        lines.append(f"{pad}{acc} = tg_block_reduce<{ctype}, {fn}<{ctype}>>({acc}, ({ctype}){identity}, ({ctype}*)tg_scratch);")
    return lines

  def render_kernel(self, program: LoopProgram) -> str:
    self.index_type = "long long" if self._needs_64bit(program) else "int"
    block = self.block_mode(program)
    # the prologue (work no output index depends on, such as the sum in x / x.sum()) runs before the grid loop, so
    # every block computes it with all its threads together, whatever the mode
    lines = ["  __shared__ unsigned long long tg_scratch[32];"]
    lines += self.render_block_items(program.prologue, 1, program)
    for outer in program.root_loops:
      var, size = outer.var.name, render_sint(outer.size)
      if block:
        lines.append(f"  for ({self.index_type} {var} = blockIdx.x; {var} < {size}; {var} += gridDim.x) {{")
        lines += self.render_block_items(outer.items, 2, program)
      else:
        lines.append(f"  for ({self.index_type} {var} = ({self.index_type})blockIdx.x * blockDim.x + threadIdx.x; {var} < {size}; "
                     f"{var} += ({self.index_type})gridDim.x * blockDim.x) {{")
        lines += self.render_items(outer.items, 2, program, True)
      lines.append("  }")
    params = ", ".join(self.render_params(program))
    bounds = f"__launch_bounds__({self.threads_per_block(program)}) "
    return CUDA_PREAMBLE + f"{self.kernel_prefix}{bounds}void {program.name}({params}) {{\n" + "\n".join(lines) + "\n}\n"


__all__ = ["CUDARenderer", "CUDA_PREAMBLE", "StoreText"]
