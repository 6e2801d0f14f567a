"""CUDA matvecs for decode: float16/bfloat16 weights, and the input prologues every CUDA matvec shares.

    tg_matvec_<dtype>_<K>_<M>_<N>[_norm|_swiglu][_r](out, x, w[, norm][, residual])   out (M, N) = f(x) (M, K) @ W.T

A prologue is what the matvec does to x as it reads it, so the kernel that would have computed it is not launched
(at batch 1 a launch costs more than recomputing the prologue in every warp):
- "norm": RMSNorm. out = rsqrt(mean(x^2) + eps) * ((x * norm) @ W.T): each lane sums the squares of the x it reads,
  and as a warp reads every element of its row of x once, the warp's sum is the row's.
- "swiglu": x is (M, 2K), gate then up (a fused gate/up projection's output): the product reads silu(gate) * up.
  It costs two special-function operations per weight row per element, so it pays only for small weights
  (`SWIGLU_FOLD_MAX`; on CUDA never, `CUDA_SWIGLU_FOLD_MAX`); past it the elementwise kernel runs instead.

An epilogue, `glu`: W is a fused gate/up projection ([gate | up] rows, N of them) and out (M, N / 2) is
silu(x @ gate.T) * (x @ up.T). A warp's ROWS_PER_WARP (even) rows are then gate rows p .. p + R/2 - 1 and the up rows
N/2 further (TG_ROW), so the product of a pair meets in one warp's registers and the elementwise kernel that would
have read both is not launched.

The float matvec: one warp per ROWS_PER_WARP rows of W. A lane reads 16 bytes (8 weights) of each row per step, the warp
512 contiguous bytes, and the x they meet as two float4s (read through L1, where every warp of the grid finds it),
so a step's x load serves ROWS_PER_WARP rows. fp32 accumulation, a warp-shuffle sum, no shared memory. K, M and N are
compiled in (one cubin per shape, disk-cached); up to GROUP_ROWS rows of x per warp, more rows as groups of the grid
(the groups of one block of W rows side by side, so that they read W from L2).
"""
from __future__ import annotations

from teenygrad.helpers import config
from teenygrad.device import Buffer, Device
from teenygrad.renderer.cuda import CUDA_PREAMBLE

WARPS = 4           # warps per thread block
ROWS_PER_WARP = 2   # rows of W one warp computes: each x load is used this many times
LOADS_AHEAD = 8     # steps of weight loads a lane issues before using them (8 x 2 x 16 bytes in flight)
GROUP_ROWS = 8      # rows of x one warp holds accumulators for
MAX_ROWS = 64       # rows of x the matvec takes; more (prefill) go through the GEMM
SWIGLU_FOLD_MAX = 1 << 22   # weights (N * K) up to which silu(gate) * up is recomputed by every warp
# ... on CUDA: never. SmolLM2's down projection (576 x 1536, Q4_1) in a graph of back-to-back launches on an H200
# (bench/matvec_cuda.py --shapes smollm2, 2026-12-02): 5.6 us folded against 2.2 us for the elementwise kernel and the
# plain matvec together, so the launch the fold saves costs less than its silu in every warp
CUDA_SWIGLU_FOLD_MAX = 0
PROLOGUES = ("", "norm", "swiglu")
FLOAT_DTYPES = ("float16", "bfloat16")


def x_stride(prologue: str, k: int) -> int:
  """Floats between two rows of x: swiglu's x holds gate and up side by side."""
  return 2 * k if prologue == "swiglu" else k


def render_x_reader(prologue: str, k: int) -> str:
  """C++ of tg_x4(x, g, m, col, sq): row m of x at columns [col, col + 4) as the product reads it. "norm" multiplies by
  the norm weight g and adds the squares of the raw x to sq; the row's scale is applied after the sum (tg_row_scale)."""
  head = (f"#define K_IN {k}\n#define X_STRIDE {x_stride(prologue, k)}\n"
          "__device__ __forceinline__ float4 tg_x4(const float* __restrict__ x, const float* __restrict__ g, int m, int col, float& sq) {\n"
          "  const float4 v = *(const float4*)(x + m * X_STRIDE + col);\n")
  if prologue == "":
    return head + "  return v;\n}\n"
  if prologue == "norm":
    return head + """  const float4 s = *(const float4*)(g + col);
  sq += v.x * v.x + v.y * v.y + v.z * v.z + v.w * v.w;
  float4 r; r.x = v.x * s.x; r.y = v.y * s.y; r.z = v.z * s.z; r.w = v.w * s.w;
  return r;
}
"""
  if prologue == "swiglu":
    return head + """  const float4 u = *(const float4*)(x + m * X_STRIDE + K_IN + col);   /* gate at col, up K_IN further */
  float4 r;
  r.x = v.x / (1.0f + expf(-v.x)) * u.x; r.y = v.y / (1.0f + expf(-v.y)) * u.y;
  r.z = v.z / (1.0f + expf(-v.z)) * u.z; r.w = v.w / (1.0f + expf(-v.w)) * u.w;
  return r;
}
"""
  raise ValueError(f"unknown matvec prologue {prologue!r} (one of {PROLOGUES})")


def row_scale(prologue: str, eps: float) -> str:
  """C expression of the factor a row's dot products are multiplied by, given its squares summed over one lane (sq)."""
  if prologue == "norm": return f"rsqrtf(tg_warp_sum(sq[m]) * (1.0f / K_IN) + {float(eps)!r}f)"
  return "1.0f"


def render_row_map(glu: bool) -> str:
  """C macro TG_ROW(r): the W row of a warp's slot r (r < ROWS_PER_WARP) given its first slot row0 = warp *
  ROWS_PER_WARP. With `glu`, slots r < R/2 are gate rows row0 / 2 + r and the others the up rows N_OUT / 2 further."""
  if not glu: return "#define TG_ROW(r) (row0 + (r))\n"
  return ("#define TG_ROW(r) ((r) < ROWS_PER_WARP / 2 ? row0 / 2 + (r) : N_OUT / 2 + row0 / 2 + (r) - ROWS_PER_WARP / 2)\n"
          "static_assert(ROWS_PER_WARP % 2 == 0 && N_OUT % 2 == 0, \"the glu epilogue pairs gate and up rows\");\n")


def render_rows_out(prologue: str, residual: bool, eps: float, glu: bool = False) -> str:
  """The matvecs' last step: each x row's ROWS_PER_WARP sums reduced over the warp, scaled (the norm's factor) and
  stored by lane 0, with the residual added where there is one; with `glu`, silu(gate) * up of each pair of slots
  (TG_ROW) into out (M, N_OUT / 2)."""
  if glu:
    assert not residual, "the glu epilogue takes no residual"
    return f"""  #pragma unroll
  for (int m = 0; m < M_ROWS; m++) if (m < rows_here) {{
    const int m_out = m0 + m;
    const float scale = {row_scale(prologue, eps)};
    #pragma unroll
    for (int j = 0; j < ROWS_PER_WARP / 2; j++) {{
      const int p = row0 / 2 + j;
      const float gate = tg_warp_sum(acc[m][j]) * scale, up = tg_warp_sum(acc[m][j + ROWS_PER_WARP / 2]) * scale;
      if (lane == 0 && p < N_OUT / 2) out[(long long)m_out * (N_OUT / 2) + p] = gate / (1.0f + expf(-gate)) * up;
    }}
  }}
"""
  store = "total" + (" + residual[(long long)m_out * N_OUT + row]" if residual else "")
  return f"""  #pragma unroll
  for (int m = 0; m < M_ROWS; m++) if (m < rows_here) {{
    const int m_out = m0 + m;
    const float scale = {row_scale(prologue, eps)};
    #pragma unroll
    for (int r = 0; r < ROWS_PER_WARP; r++) {{
      const int row = row0 + r;
      const float total = tg_warp_sum(acc[m][r]) * scale;
      if (lane == 0 && row < N_OUT) out[(long long)m_out * N_OUT + row] = {store};
    }}
  }}
"""


GRID_WAIT = "  TG_GRID_WAIT();\n"


def render_weight_prefetch(weight_bytes: int | str, wait: bool = True) -> str:
  """A matvec's opening: where the weight has at most config.matvec_prefetch bytes, each block asks for its share of
  it to be brought into L2 (one bulk prefetch by its first thread); then the block waits for the kernel before it.
  The weight does not depend on that kernel, so with programmatic launch the prefetch overlaps its end: a small,
  latency-bound matvec then finds its weight in L2. A large one streams from HBM at full rate anyway, and prefetching
  part of it only competed with the loads (scripts/gpu_pdl_ab.sh). `weight_bytes` is a number, or a C expression of
  the kernel's runtime arguments (a row count passed at launch). Without `wait` the caller places the wait itself
  (GRID_WAIT), after the loads it issues early (early_loads)."""
  limit, tail = config.matvec_prefetch, GRID_WAIT if wait else ""
  if isinstance(weight_bytes, int):
    total = weight_bytes // 16 * 16 if weight_bytes <= limit else 0
    if total == 0: return tail
    size = f"{total}ull"
  elif limit == 0: return tail
  else: size = "weight_total"
  runtime = "" if isinstance(weight_bytes, int) else (
    f"    const unsigned long long weight_bytes = (unsigned long long)({weight_bytes});\n"
    f"    const unsigned long long weight_total = weight_bytes <= {limit}ull ? weight_bytes & ~15ull : 0ull;\n")
  return f"""  {{
{runtime}    const unsigned long long share = ({size} / gridDim.x + 15) & ~15ull, begin = blockIdx.x * share;
    if (threadIdx.x == 0 && begin < {size}) tg_prefetch_l2((const unsigned char*)w + begin, (unsigned int)min(share, {size} - begin));
  }}
{tail}"""


def early_loads(weight_bytes: int) -> bool:
  """Whether a matvec issues its first weight loads before its grid-dependency wait (config.matvec_early_loads):
  the weight does not depend on the kernel before it, so under programmatic launch they overlap that kernel's end.
  Only where the weight is not prefetched into L2 whole (render_weight_prefetch), which covers it already. The
  int8-x kernel (nn/quant_cuda_dp4a.py) does, into its registers: at Llama-3-8B's shapes on an H200 that is within
  1% either way (bench/matvec_cuda.py, 2026-12-02: its blocks fill the SMs' registers, so the next kernel's cannot
  start early). Asking the float16 matvec's first lines into L2 that way cost 5-13% there, so it does not."""
  return config.matvec_early_loads and weight_bytes > config.matvec_prefetch


def kernel_params(prologue: str, residual: bool) -> str:
  """The optional parameters after (out, x, w): the norm weight, then the residual."""
  return (", const float* __restrict__ g" if prologue == "norm" else "") + (", const float* __restrict__ residual" if residual else "")


def no_norm_weight(prologue: str) -> str:
  """A kernel without a norm weight still names g (tg_x4 takes it and ignores it)."""
  return "" if prologue == "norm" else "  const float* g = nullptr;\n"


def render_row_block(groups: int, m: int) -> str:
  """C lines placing a matvec's block: its group of x rows (m0, rows_here of M_ROWS) and its warp's first W row
  (row0, ROWS_PER_WARP of them), warps past the last row leaving, x moved to the group's first row."""
  return f"""  /* block b: W rows of block b / {groups}, x rows of group b % {groups} (M_ROWS each, the last one ragged) */
  const int m0 = (int)(blockIdx.x % {groups}) * M_ROWS, rows_here = min(M_ROWS, {m} - m0);
  const int row0 = ((int)(blockIdx.x / {groups}) * {WARPS} + (int)(threadIdx.x >> 5)) * ROWS_PER_WARP;
  if (row0 >= N_OUT) return;   /* whole warps leave: the shuffles below see all 32 lanes */
  x += (long long)m0 * X_STRIDE;
"""


# ---- float16 / bfloat16 weights ----

_WIDEN_PAIR = {   # (low element, high element) of a 32-bit word holding two weights
  "float16": ("tg_h2f((unsigned short)(u & 0xffffu))", "tg_h2f((unsigned short)(u >> 16))"),
  "bfloat16": ("__uint_as_float(u << 16)", "__uint_as_float(u & 0xffff0000u)"),
}


def float_matvec_name(dtype_name: str, k: int, m: int, n: int, prologue: str = "", residual: bool = False, glu: bool = False) -> str:
  short = {"float16": "f16", "bfloat16": "bf16"}[dtype_name]
  return f"tg_matvec_{short}_{k}_{m}_{n}{'_' + prologue if prologue else ''}{'_r' if residual else ''}{'_glu' if glu else ''}"


def float_groups(m: int) -> int: return -(-m // GROUP_ROWS)


def float_grid(m: int, n: int) -> int:
  """Thread blocks: one per WARPS * ROWS_PER_WARP rows of W and group of rows of x."""
  return -(-n // (WARPS * ROWS_PER_WARP)) * float_groups(m)


def render_float_matvec(dtype_name: str, k: int, m: int, n: int, prologue: str = "", residual: bool = False, eps: float = 0.0,
                        glu: bool = False) -> str:
  """CUDA C of out (m, n) = prologue(x) (m, k) @ W.T (+ residual) for W (n, k) float16/bfloat16, k a multiple of 8; with
  `glu`, out (m, n / 2) = silu(gate) * up of W's two halves."""
  assert k % 8 == 0 and dtype_name in _WIDEN_PAIR
  low, high = _WIDEN_PAIR[dtype_name]
  steps, groups = -(-k // 256), float_groups(m)
  # the loads of LOADS_AHEAD steps are issued before their products, so that many are in flight per lane
  ahead = min(steps, LOADS_AHEAD)
  ragged = k % 256 != 0 or steps % ahead != 0
  load_col = "min((first + u) * 256 + lane * 8, K_IN - 8)" if ragged else "(first + u) * 256 + lane * 8"
  return CUDA_PREAMBLE + render_x_reader(prologue, k) + f"""#define M_ROWS {min(m, GROUP_ROWS)}
#define N_OUT {n}
#define ROWS_PER_WARP {ROWS_PER_WARP}
{render_row_map(glu)}__device__ __forceinline__ float tg_lo(unsigned int u) {{ return {low}; }}
__device__ __forceinline__ float tg_hi(unsigned int u) {{ return {high}; }}
/* 8 weights (16 bytes) against x's columns [col, col + 8) */
__device__ __forceinline__ float tg_dot8(uint4 w, float4 a, float4 b) {{
  return tg_lo(w.x) * a.x + tg_hi(w.x) * a.y + tg_lo(w.y) * a.z + tg_hi(w.y) * a.w
       + tg_lo(w.z) * b.x + tg_hi(w.z) * b.y + tg_lo(w.w) * b.z + tg_hi(w.w) * b.w;
}}
extern "C" __global__ void __launch_bounds__({32 * WARPS}) {float_matvec_name(dtype_name, k, m, n, prologue, residual, glu)}(float* __restrict__ out,
    const float* __restrict__ x, const unsigned short* __restrict__ w{kernel_params(prologue, residual)}) {{
{render_weight_prefetch(n * k * 2)}{no_norm_weight(prologue)}  const int lane = threadIdx.x & 31;
{render_row_block(groups, m)}  float acc[M_ROWS][ROWS_PER_WARP], sq[M_ROWS];
  #pragma unroll
  for (int m = 0; m < M_ROWS; m++) {{
    sq[m] = 0.0f;
    #pragma unroll
    for (int r = 0; r < ROWS_PER_WARP; r++) acc[m][r] = 0.0f;
  }}
  #pragma unroll 1
  for (int first = 0; first < {steps}; first += {ahead}) {{
    uint4 wv[{ahead}][ROWS_PER_WARP];
    /* a ragged last warp reads its last row again rather than branch, a ragged last step the row's last 8
       columns (the products below skip both) */
    #pragma unroll
    for (int u = 0; u < {ahead}; u++)
      #pragma unroll
      for (int r = 0; r < ROWS_PER_WARP; r++)
        wv[u][r] = *(const uint4*)(w + (long long)min(TG_ROW(r), N_OUT - 1) * K_IN + {load_col});
    #pragma unroll
    for (int u = 0; u < {ahead}; u++) {{
      const int col = (first + u) * 256 + lane * 8;
{"      if (col >= K_IN) break;   /* K_IN % 8 == 0: a lane's 8 columns are all in or all out */" + chr(10) if ragged else ""}      #pragma unroll
      for (int m = 0; m < M_ROWS; m++) if (m < rows_here) {{
        const float4 a = tg_x4(x, g, m, col, sq[m]), b = tg_x4(x, g, m, col + 4, sq[m]);
        #pragma unroll
        for (int r = 0; r < ROWS_PER_WARP; r++) acc[m][r] += tg_dot8(wv[u][r], a, b);
      }}
    }}
  }}
{render_rows_out(prologue, residual, eps, glu)}}}
"""


class CUDAFloatMatvec:
  """The float16/bfloat16 matvecs of one CUDA device, compiled per shape; each call is one recorded launch (a JIT
  replay is the launch itself)."""
  def __init__(self, device: str):
    self.device = device
    self._programs: dict[tuple, object] = {}

  def __call__(self, out: Buffer, x: Buffer, w: Buffer, m: int, n: int, k: int, residual: Buffer | None = None,
               norm: Buffer | None = None, eps: float = 0.0, swiglu: bool = False, glu: bool = False) -> None:
    from teenygrad.engine.realize import CompiledKernel, ExecItem, launch
    prologue = "norm" if norm is not None else "swiglu" if swiglu else ""
    key = (w.dtype.name, k, m, n, prologue, residual is not None, eps, glu)
    if key not in self._programs:
      backend = Device[self.device]
      src = render_float_matvec(w.dtype.name, k, m, n, prologue, residual is not None, eps, glu)
      grid = {"block": (32 * WARPS, 1, 1), "grid": (float_grid(m, n), 1, 1)}
      name = float_matvec_name(w.dtype.name, k, m, n, prologue, residual is not None, glu)
      self._programs[key] = backend.program(name, backend.compiler.compile_cached(src), grid)
    kernel = CompiledKernel(f"matvec_{w.dtype.name}", self._programs[key], [], [], "", m * n * k, False)
    buffers = [out, x, w] + ([norm] if norm is not None else []) + ([residual] if residual is not None else [])
    launch(ExecItem(kernel, buffers, (), self.device))


_float_matvecs: dict[str, CUDAFloatMatvec] = {}


def cuda_float_matvec(device: str) -> CUDAFloatMatvec:
  if device not in _float_matvecs: _float_matvecs[device] = CUDAFloatMatvec(device)
  return _float_matvecs[device]


__all__ = ["CUDAFloatMatvec", "CUDA_SWIGLU_FOLD_MAX", "FLOAT_DTYPES", "MAX_ROWS", "PROLOGUES", "SWIGLU_FOLD_MAX", "cuda_float_matvec",
           "early_loads", "float_matvec_name", "render_row_block", "render_row_map", "render_float_matvec", "render_x_reader", "row_scale"]
