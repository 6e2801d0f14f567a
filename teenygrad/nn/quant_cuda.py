"""CUDA kernels for decode's weights: the quantized matvec, dequantizing in registers, and embedding row gathers.

    tg_qmatvec_<type>_<K>_<M>(out, x, w, N)        out (M, N) = x (M, K) @ W.T, W = N rows of K/32 blocks
    tg_qrows_<type>_<K>(out, ids, w, err, count, N) out (count, K) = W[ids] (int32 ids), dequantized
    tg_rows_<dtype>_<D>(out, ids, table, count, V)  out (count, D) = table[ids] (int32 ids) as float32

A gather reads only its rows, where the primitive reference (a one-hot sum over the vocabulary) reads the whole
table per token. An id out of range gives a zero row (and err[0] = 1 for the quantized one); the callers check
the ids on the host too, outside JIT replays.

The matvec: one warp per output row. Four lanes share each 32-weight block (a lane takes a quarter: 8 weights and their
scale), so a warp walks 8 consecutive blocks of its row per step and its loads cover them contiguously; x is
read as float4 through the read-only cache, where every warp of the grid finds it. The lanes' partial sums
meet in a warp shuffle, so there is no shared memory and no barrier. K and M are compile-time constants (one
cubin per shape, disk-cached), so the block loop unrolls and every load of a row is in flight at once.

Only a few rows of x: each row of W is dotted with up to GROUP_ROWS rows of x per warp. Past that (a batched decode
step of a server), each group of GROUP_ROWS rows is a slice of the grid of its own, the groups of one block of W rows
next to each other so that they read W from L2 rather than memory. More than MAX_ROWS rows (prefill) go through the
reference, `x @ dequantize().T`, whose matmul is the tiled GEMM.

Arithmetic: per block, sum(q * x) in float32, then times the fp16 scale (and plus min * sum(x) for Q4_1), as
llama.cpp does; the result differs from the reference's rounding by float32 reassociation only.
"""
from __future__ import annotations

from teenygrad.device import Buffer, Device
from teenygrad.dtype import dtypes
from teenygrad.ir.symbolic import Variable
from teenygrad.nn.matvec_cuda import kernel_params, no_norm_weight, render_weight_prefetch, render_x_reader, row_scale
from teenygrad.renderer.cuda import CUDA_PREAMBLE
from teenygrad.renderer.gpu import LaunchDims

WARPS = 4        # output rows per thread block (a warp each)
LANES_PER_BLOCK = 4
GROUP_ROWS = 8   # rows of x one warp holds accumulators for; more rows run as several groups of the grid
MAX_ROWS = 64    # rows of x the matvec takes (a server's decode batch); more go through the reference GEMM

# per type: type_size, and the body that adds this lane's quarter of block `blk` (bytes) against x block `xb`
# (floats, row m at xb + m * K) into acc[m]. `sub` is the lane's quarter (0..3).
_BLOCKS = {
  # d (fp16), 16 bytes of nibbles: byte i holds weights i (low nibble) and i + 16 (high), each minus 8
  "Q4_0": (18, r"""
    const unsigned short* h = (const unsigned short*)blk;
    const float d = tg_h2f(h[0]);
    const unsigned int q = (unsigned int)h[1 + 2 * sub] | ((unsigned int)h[2 + 2 * sub] << 16);
    #pragma unroll
    for (int m = 0; m < M_ROWS; m++) if (m < rows_here) {
      const float4 lo = tg_x4(x, g, m, col + 4 * sub, sq[m]), hi = tg_x4(x, g, m, col + 16 + 4 * sub, sq[m]);
      const float s = (float)((int)(q & 15) - 8) * lo.x + (float)((int)((q >> 8) & 15) - 8) * lo.y
                    + (float)((int)((q >> 16) & 15) - 8) * lo.z + (float)((int)((q >> 24) & 15) - 8) * lo.w
                    + (float)((int)((q >> 4) & 15) - 8) * hi.x + (float)((int)((q >> 12) & 15) - 8) * hi.y
                    + (float)((int)((q >> 20) & 15) - 8) * hi.z + (float)((int)(q >> 28) - 8) * hi.w;
      acc[m] += d * s;
    }"""),
  # d and m (fp16), 16 bytes of nibbles as Q4_0, unsigned: w = d * q + m. 20-byte blocks keep every field 4-aligned
  "Q4_1": (20, r"""
    const unsigned int* u = (const unsigned int*)blk;
    const unsigned int dm = u[0], q = u[1 + sub];
    const float d = tg_h2f((unsigned short)(dm & 0xffff)), mn = tg_h2f((unsigned short)(dm >> 16));
    #pragma unroll
    for (int m = 0; m < M_ROWS; m++) if (m < rows_here) {
      const float4 lo = tg_x4(x, g, m, col + 4 * sub, sq[m]), hi = tg_x4(x, g, m, col + 16 + 4 * sub, sq[m]);
      const float s = (float)(q & 15) * lo.x + (float)((q >> 8) & 15) * lo.y + (float)((q >> 16) & 15) * lo.z
                    + (float)((q >> 24) & 15) * lo.w + (float)((q >> 4) & 15) * hi.x + (float)((q >> 12) & 15) * hi.y
                    + (float)((q >> 20) & 15) * hi.z + (float)(q >> 28) * hi.w;
      const float xs = (lo.x + lo.y) + (lo.z + lo.w) + (hi.x + hi.y) + (hi.z + hi.w);
      acc[m] += d * s + mn * xs;
    }"""),
  # d (fp16), 32 int8 weights: this lane's 8 are bytes 2 + 8 * sub onwards (2-aligned: four 16-bit loads)
  "Q8_0": (34, r"""
    const unsigned short* h = (const unsigned short*)blk;
    const float d = tg_h2f(h[0]);
    const unsigned short q0 = h[1 + 4 * sub], q1 = h[2 + 4 * sub], q2 = h[3 + 4 * sub], q3 = h[4 + 4 * sub];
    #pragma unroll
    for (int m = 0; m < M_ROWS; m++) if (m < rows_here) {
      const float4 a = tg_x4(x, g, m, col + 8 * sub, sq[m]), b = tg_x4(x, g, m, col + 8 * sub + 4, sq[m]);
      const float s = (float)(signed char)(q0 & 0xff) * a.x + (float)(signed char)(q0 >> 8) * a.y
                    + (float)(signed char)(q1 & 0xff) * a.z + (float)(signed char)(q1 >> 8) * a.w
                    + (float)(signed char)(q2 & 0xff) * b.x + (float)(signed char)(q2 >> 8) * b.y
                    + (float)(signed char)(q3 & 0xff) * b.z + (float)(signed char)(q3 >> 8) * b.w;
      acc[m] += d * s;
    }"""),
}

CUDA_QUANT_TYPES = tuple(_BLOCKS)


def _groups(m: int) -> int: return -(-m // GROUP_ROWS)


def matvec_name(ggml_type: str, k: int, m: int, residual: bool = False, prologue: str = "", glu: bool = False) -> str:
  return f"tg_qmatvec_{ggml_type.lower()}_{k}_{m}{'_' + prologue if prologue else ''}{'_r' if residual else ''}{'_glu' if glu else ''}"


def render_matvec(ggml_type: str, k: int, m: int, residual: bool = False, prologue: str = "", eps: float = 0.0, glu: bool = False) -> str:
  """CUDA C of the matvec of one GGML type for x of m rows of k (k a multiple of 32); with `residual`, the kernel
  takes a last buffer (m, n) added to the product (a transformer's residual connection, without a kernel). A
  prologue (nn/matvec_cuda.py: "norm" takes the RMSNorm weight as the fourth buffer, "swiglu" reads x as gate | up)
  is applied to x as it is read. With `glu` (nn/matvec_cuda.py's epilogue) W's n rows are gate then up and out is
  (m, n / 2): a warp walks gate row p and up row n / 2 + p side by side and stores silu(gate) * up."""
  assert not (glu and residual), "the glu epilogue takes no residual"
  type_size, body = _BLOCKS[ggml_type]
  threads, nb, per_step = 32 * WARPS, k // 32, 32 // LANES_PER_BLOCK
  steps, groups = -(-nb // per_step), _groups(m)
  outputs = "(n / 2)" if glu else "n"
  # the up row's products: the same body on its own block pointer, accumulators and (unused) squares
  up_body = (f"\n    {{\n    const unsigned char* blk = wr_up + b * {type_size};" + body.replace("acc[m]", "acc_up[m]").replace("sq[m]", "sq_up[m]")
             + "\n    }") if glu else ""
  store = ("const float up = tg_warp_sum(acc_up[m]) * scale;   /* every lane: a shuffle */\n"
           "    if (lane == 0) out[m_out * (n / 2) + row] = total / (1.0f + expf(-total)) * up;" if glu else
           f"if (lane == 0) out[m_out * n + row] = total{' + residual[m_out * n + row]' if residual else ''};")
  return CUDA_PREAMBLE + render_x_reader(prologue, k) + f"""#define M_ROWS {min(m, GROUP_ROWS)}
extern "C" __global__ void __launch_bounds__({threads}) {matvec_name(ggml_type, k, m, residual, prologue, glu)}(float* __restrict__ out,
    const float* __restrict__ x, const unsigned char* __restrict__ w{kernel_params(prologue, residual)}, long long n) {{
{render_weight_prefetch(f"n * {nb * type_size}")}{no_norm_weight(prologue)}  const int lane = threadIdx.x & 31, sub = lane % {LANES_PER_BLOCK};
  /* block b: W rows of block b / {groups}, x rows of group b % {groups} (M_ROWS each, the last one ragged) */
  const int m0 = (int)(blockIdx.x % {groups}) * M_ROWS, rows_here = min(M_ROWS, {m} - m0);
  const long long row = (long long)(blockIdx.x / {groups}) * {WARPS} + (threadIdx.x >> 5);
  if (row >= {outputs}) return;   /* whole warps leave: the shuffles below see all 32 lanes */
  x += (long long)m0 * X_STRIDE;
  const unsigned char* wr = w + row * {nb * type_size}LL;
{f"  const unsigned char* wr_up = w + (n / 2 + row) * {nb * type_size}LL;{chr(10)}  float acc_up[M_ROWS], sq_up[M_ROWS];{chr(10)}" if glu else ""}\
  float acc[M_ROWS], sq[M_ROWS];
  #pragma unroll
  for (int m = 0; m < M_ROWS; m++) {{ acc[m] = sq[m] = 0.0f;{" acc_up[m] = sq_up[m] = 0.0f;" if glu else ""} }}
  /* a constant trip count, so the loop unrolls whole and all of the row's loads are issued together */
  #pragma unroll
  for (int step = 0; step < {steps}; step++) {{
    const int b = step * {per_step} + lane / {LANES_PER_BLOCK};
    if (b >= {nb}) break;
    const unsigned char* blk = wr + b * {type_size};
    const int col = b * 32;{body}{up_body}
  }}
  #pragma unroll
  for (int m = 0; m < M_ROWS; m++) if (m < rows_here) {{
    const int m_out = m0 + m;
    const float scale = {row_scale(prologue, eps)};
    const float total = tg_warp_sum(acc[m]) * scale;
    {store}
  }}
}}
"""


# ---- embedding rows ----
# one thread per output element; each weight is computed as nn/quant.py's reference computes it (the scale times
# the integer, then plus the min, without a fused multiply-add), so the rows are bit-identical with it

_ROW_VALUES = {
  "Q4_0": (18, "__fmul_rn(tg_h2f(h[0]), (float)((int)(l < 16 ? (blk[2 + l] & 15) : (blk[2 + l - 16] >> 4)) - 8))"),
  "Q4_1": (20, "__fadd_rn(__fmul_rn(tg_h2f(h[0]), (float)(l < 16 ? (blk[4 + l] & 15) : (blk[4 + l - 16] >> 4))), tg_h2f(h[1]))"),
  "Q8_0": (34, "__fmul_rn((float)(signed char)blk[2 + l], tg_h2f(h[0]))"),
}
ROWS_THREADS = 256


def rows_name(ggml_type: str, k: int) -> str: return f"tg_qrows_{ggml_type.lower()}_{k}"


def render_rows(ggml_type: str, k: int) -> str:
  """CUDA C gathering dequantized rows of k weights of one GGML type."""
  type_size, value = _ROW_VALUES[ggml_type]
  return CUDA_PREAMBLE + f"""extern "C" __global__ void __launch_bounds__({ROWS_THREADS}) {rows_name(ggml_type, k)}(float* __restrict__ out,
    const int* __restrict__ ids, const unsigned char* __restrict__ w, int* __restrict__ err, long long count, long long n) {{
  const long long i = (long long)blockIdx.x * {ROWS_THREADS} + threadIdx.x;
  if (i >= count * {k}) return;
  const long long id = ids[i / {k}];
  if (id < 0 || id >= n) {{ out[i] = 0.0f; err[0] = 1; return; }}
  const int j = (int)(i % {k}), l = j % 32;
  const unsigned char* blk = w + id * {k // 32 * type_size}LL + (j / 32) * {type_size};
  const unsigned short* h = (const unsigned short*)blk;
  out[i] = {value};
}}
"""


_FLOAT_LOADS = {"float32": ("float", "{v}"), "float16": ("unsigned short", "tg_h2f({v})"), "bfloat16": ("unsigned short", "tg_b2f({v})")}


def float_rows_name(dtype_name: str, d: int) -> str: return f"tg_rows_{dtype_name}_{d}"


def render_float_rows(dtype_name: str, d: int) -> str:
  """CUDA C gathering rows of d elements of a float32/float16/bfloat16 table as float32."""
  storage, widen = _FLOAT_LOADS[dtype_name]
  return CUDA_PREAMBLE + f"""extern "C" __global__ void __launch_bounds__({ROWS_THREADS}) {float_rows_name(dtype_name, d)}(float* __restrict__ out,
    const int* __restrict__ ids, const {storage}* __restrict__ table, long long count, long long n) {{
  const long long i = (long long)blockIdx.x * {ROWS_THREADS} + threadIdx.x;
  if (i >= count * {d}) return;
  const long long id = ids[i / {d}];
  out[i] = (id < 0 || id >= n) ? 0.0f : {widen.format(v=f"table[id * {d}LL + i % {d}]")};
}}
"""


def _rows_launch(width: int) -> LaunchDims:
  """A thread per element of `count` rows of `width`: the launch values are (count, table rows)."""
  count, n = Variable("count", 1, 1 << 31), Variable("n", 1, 1 << 40)
  return LaunchDims((count * width + ROWS_THREADS - 1) // ROWS_THREADS, ROWS_THREADS, (count, n))


_float_rows: dict[tuple[str, str, int], object] = {}


def float_rows(out: Buffer, ids: Buffer, table: Buffer, count: int, n: int, d: int) -> None:
  """out (count, d) float32 = table (n, d)[ids] for int32 ids on a CUDA device: one launch, recorded for the JIT (the
  kernel reads the ids from their buffer, so a replay gathers the new rows)."""
  from teenygrad.nn.quant import _launch
  key = (table.device, table.dtype.name, d)
  if key not in _float_rows:
    backend = Device[table.device]
    binary = backend.compiler.compile_cached(render_float_rows(table.dtype.name, d))
    _float_rows[key] = backend.program(float_rows_name(table.dtype.name, d), binary, _rows_launch(width=d))
  _launch(f"rows_{table.dtype.name}", _float_rows[key], [out, ids, table], (count, n), count * d, table.device, record=True)


FLOAT_ROW_DTYPES = tuple(_FLOAT_LOADS)


class CUDAQuantKernels:
  """The fused kernels of one GGML type on a CUDA device, shaped like nn/quant.py's CPUQuantKernels: `linear`
  for up to MAX_ROWS rows of x (a residual added in the kernel), `rows` for embeddings."""
  max_rows = MAX_ROWS
  fuses_residual = True
  ids_dtype = dtypes.int32   # the tokens' own type: the embedding needs no cast kernel

  def __init__(self, device: str, ggml_type: str):
    self.device, self.ggml_type = device, ggml_type
    self._programs: dict[tuple[int, int, bool], object] = {}

  def _program(self, k: int, m: int, residual: bool, prologue: str = "", eps: float = 0.0, glu: bool = False):
    key = (k, m, residual, prologue, eps, glu)
    if key not in self._programs:
      backend = Device[self.device]
      n = Variable("n", 1, 1 << 31)
      outputs = n // 2 if glu else n   # with glu a warp per gate/up pair of rows
      launch = LaunchDims((outputs + WARPS - 1) // WARPS * _groups(m), 32 * WARPS, (n,))
      binary = backend.compiler.compile_cached(render_matvec(self.ggml_type, k, m, residual, prologue, eps, glu))
      self._programs[key] = backend.program(matvec_name(self.ggml_type, k, m, residual, prologue, glu), binary, launch)
    return self._programs[key]

  def linear(self, out: Buffer, x: Buffer, w: Buffer, m: int, n: int, k: int, residual: Buffer | None = None,
             norm: Buffer | None = None, eps: float = 0.0, swiglu: bool = False, glu: bool = False) -> None:
    """out (m, n) = prologue(x) (m, k) @ W.T (+ residual (m, n)) for W (n, k) in blocks; m <= MAX_ROWS. The prologue
    (nn/matvec_cuda.py) is an RMSNorm of x by `norm` (k,), or with `swiglu` x is (m, 2k) and the product reads
    silu(gate) * up; with `glu` out is (m, n / 2) = silu(gate) * up of W's halves."""
    from teenygrad.nn.quant import _launch
    prologue = "norm" if norm is not None else "swiglu" if swiglu else ""
    buffers = [out, x, w] + ([norm] if norm is not None else []) + ([residual] if residual is not None else [])
    _launch(f"qmatvec_{self.ggml_type.lower()}", self._program(k, m, residual is not None, prologue, eps, glu), buffers, (n,), m * n * k,
            self.device, record=True)

  def rows(self, out: Buffer, ids: Buffer, w: Buffer, err: Buffer, count: int, n: int, k: int) -> None:
    """out (count, k) = W[ids] for int32 ids; an id outside [0, n) gives a zero row and sets err[0]. Recorded: a JIT
    replay (one CUDA graph) gathers the rows of its new ids, and only run() outside replays reads err."""
    from teenygrad.nn.quant import _launch
    key = ("rows", k)
    if key not in self._programs:
      backend = Device[self.device]
      binary = backend.compiler.compile_cached(render_rows(self.ggml_type, k))
      self._programs[key] = backend.program(rows_name(self.ggml_type, k), binary, _rows_launch(width=k))
    _launch(f"qrows_{self.ggml_type.lower()}", self._programs[key], [out, ids, w, err], (count, n), count * k, self.device, record=True)


_cache: dict[tuple[str, str], CUDAQuantKernels] = {}


def cuda_kernels(device: str, ggml_type: str) -> CUDAQuantKernels | None:
  """The CUDA kernels of a type, or None where there are none (the caller runs the reference)."""
  if ggml_type not in _BLOCKS: return None
  key = (device, ggml_type)
  if key not in _cache: _cache[key] = CUDAQuantKernels(device, ggml_type)
  return _cache[key]


__all__ = ["CUDAQuantKernels", "CUDA_QUANT_TYPES", "FLOAT_ROW_DTYPES", "cuda_kernels", "float_rows", "matvec_name", "render_float_rows",
           "render_matvec", "render_rows", "rows_name"]
