"""Q4_0 / Q4_1 / Q8_0 weights repacked for CUDA's matvec: every load 16 bytes wide and coalesced across the warp.

    tg_qmatvec_packed_<type>_<K>_<M>_<N>[_norm|_swiglu][_r](out, x, w[, norm][, residual])

GGUF's blocks (18 bytes for Q4_0: a scale, then 16 bytes of nibbles) leave the loads of nn/quant_cuda.py's matvec
2- and 4-byte wide and unaligned, and its warp reads x as float4s 128 bytes apart: an 8B model's Q4_0 projections
read 0.93 TB/s of the H200's 4.27. Repacked once, on the device, for rows of a multiple of STEP (1024) weights:

- a warp step covers STEP weights of a row; lane l takes weights 128 t + 4 l + i (t < 8, i < 4), so each of its eight
  x reads is a float4 the warp reads as 512 contiguous bytes;
- the quants of (row, step) are one array: Q4 32 x 16 bytes, lane l's at 16 l (byte 2 t holds weights i = 0, 1 as low
  and high nibble, byte 2 t + 1 weights 2, 3); Q8 2 x 32 x 16 bytes (half h holds t = 4 h .. 4 h + 3, 4 bytes each);
- the fp16 scales of (row, step) are 4 x 8 halves: the 8 lanes of group l / 8 need those of blocks 32 step + 4 t + l / 8
  for t < 8, one 16-byte load; Q4_1's mins follow the scales in the same layout.

One buffer holds [quants | scales | mins], permuted on the device (repack_tensor; repack is its numpy reference). A
warp computes rows_per_warp(m, n) rows, so each x load serves them all; the prologues (RMSNorm, silu(gate) * up) and the
residual are nn/matvec_cuda.py's. From 4M weights the matvec is nn/quant_cuda_dp4a.py's, on this layout with x
rounded to int8 (`int8_x`). The weight is kept in GGUF blocks as well (prefill's dequantize, the embedding
gather and other backends read those): a second copy in device memory.
"""
from __future__ import annotations

import numpy as np

from teenygrad.device import Buffer, Device
from teenygrad.nn.matvec_cuda import (GROUP_ROWS, WARPS, kernel_params, no_norm_weight, render_row_block, render_row_map,
                                      render_rows_out, render_weight_prefetch, render_x_reader)
from teenygrad.renderer.cuda import CUDA_PREAMBLE
from teenygrad.tensor import Tensor

STEP = 1024          # weights of a row per warp step: 32 lanes x 32
LOADS_AHEAD = 2      # steps of weight loads a lane issues before using them (2 x 4 rows x 32 bytes for Q4)
WARPS_PER_SM = 32    # what an H200 needs resident to keep enough loads in flight (132 SMs)


def rows_per_warp(m: int, n: int) -> int:
  """Rows of W per warp: each x load (the kernel's widest reads, 8x the Q4 weight bytes) serves them all, but fewer
  warps keep fewer loads in flight. Measured on an H200 with 4 rows (bench/results/llm_gpu_h200.txt, 2026-12-02): a
  4096-row Q4_0 weight (1024 warps) read at 23% of HBM, a 28672-row one at 48%; so as many as leave ~32 warps per
  SM, 4 at most, 2 where a warp holds more than 2 rows of x (registers)."""
  return max(1, min(4 if m <= 2 else 2, n // (WARPS_PER_SM * 132)))


def glu_rows_per_warp(rows: int) -> int:
  """Rows per warp with the glu epilogue (nn/matvec_cuda.py): gate and up rows in pairs, so an even count."""
  return rows + rows % 2


PACKED_TYPES = ("Q4_0", "Q4_1", "Q8_0")
_BLOCK_BYTES = {"Q4_0": 18, "Q4_1": 20, "Q8_0": 34}


def packable(ggml_type: str, k: int) -> bool: return ggml_type in PACKED_TYPES and k % STEP == 0


def _quant_bytes(ggml_type: str, n: int, k: int) -> int: return n * k // (1 if ggml_type == "Q8_0" else 2)


def repack(ggml_type: str, blocks: np.ndarray, n: int, k: int) -> np.ndarray:
  """GGUF blocks (n rows of k weights) -> the packed layout (uint8): quants, then scales, then (Q4_1) mins. The
  numpy reference of repack_tensor, which the model uses."""
  assert packable(ggml_type, k)
  steps = k // STEP
  b = np.ascontiguousarray(blocks, dtype=np.uint8).reshape(n, k // 32, _BLOCK_BYTES[ggml_type])
  halves = b[:, :, :4].copy().view(np.uint16)                     # (n, k/32, 2): d, and m for Q4_1
  if ggml_type == "Q8_0":
    q = b[:, :, 2:34].reshape(n, steps, 2, 4, 32, 4)              # weight 1024 j + 128 (4 h + t') + 4 l + i
    quants = q.transpose(0, 1, 2, 4, 3, 5)                        # (n, steps, half, lane, t', i)
  else:
    qs = b[:, :, 2:18] if ggml_type == "Q4_0" else b[:, :, 4:20]
    q = np.concatenate([qs & 15, qs >> 4], axis=-1).reshape(n, steps, 8, 32, 4)   # byte i: weights i and i + 16
    q = q.transpose(0, 1, 3, 2, 4)                                # (n, steps, lane, t, i)
    quants = q[..., 0::2] | (q[..., 1::2] << 4)                   # (n, steps, lane, t, 2 bytes)
  def by_group(values: np.ndarray) -> np.ndarray:                 # block 32 j + 4 t + g -> (n, steps, g, t)
    return values.reshape(n, steps, 8, 4).transpose(0, 1, 3, 2)
  parts = [quants, by_group(halves[:, :, 0])] + ([by_group(halves[:, :, 1])] if ggml_type == "Q4_1" else [])
  return np.concatenate([np.ascontiguousarray(p).view(np.uint8).reshape(-1) for p in parts])


def repack_tensor(ggml_type: str, raw: Tensor, n: int, k: int) -> Tensor:
  """repack() in Tensor ops, on the weight's own device (lazy): a GPU permutes an 8B model's 4 GB in well under a
  second, where numpy on the host took about 12 ms a megabyte plus the copies out and back."""
  assert packable(ggml_type, k)
  steps = k // STEP
  b = raw.reshape(n, k // 32, _BLOCK_BYTES[ggml_type])
  def by_group(half: Tensor) -> Tensor:                          # a half's 2 bytes per block -> (n, steps, g, t, 2)
    return half.reshape(n, steps, 8, 4, 2).permute(0, 1, 3, 2, 4)
  if ggml_type == "Q8_0":
    quants = b[:, :, 2:34].reshape(n, steps, 2, 4, 32, 4).permute(0, 1, 2, 4, 3, 5)   # (n, steps, half, lane, t', i)
  else:
    first = 2 if ggml_type == "Q4_0" else 4
    qs = b[:, :, first:first + 16]
    q = Tensor.cat([qs & 15, qs >> 4], dim=-1).reshape(n, steps, 8, 32, 2, 2)      # weight i = 2 byte + nibble
    q = q.permute(0, 1, 3, 2, 4, 5)                                                 # (n, steps, lane, t, byte, nibble)
    quants = q[..., 0] | (q[..., 1] << 4)
  parts = [quants, by_group(b[:, :, 0:2])] + ([by_group(b[:, :, 2:4])] if ggml_type == "Q4_1" else [])
  return Tensor.cat([p.reshape(-1) for p in parts])


def packed_name(ggml_type: str, k: int, m: int, n: int, prologue: str = "", residual: bool = False, glu: bool = False) -> str:
  return f"tg_qmatvec_packed_{ggml_type.lower()}_{k}_{m}_{n}{'_' + prologue if prologue else ''}{'_r' if residual else ''}{'_glu' if glu else ''}"


def packed_groups(m: int) -> int: return -(-m // GROUP_ROWS)


def packed_rows(m: int, n: int, glu: bool) -> int: return glu_rows_per_warp(rows_per_warp(m, n)) if glu else rows_per_warp(m, n)


def packed_grid(m: int, n: int, glu: bool = False) -> int: return -(-n // (WARPS * packed_rows(m, n, glu))) * packed_groups(m)


# word i of a uint4, and half t of the 8 it holds
UINT4_PARTS = """__device__ __forceinline__ unsigned int tg_word(uint4 v, int i) { return i == 0 ? v.x : i == 1 ? v.y : i == 2 ? v.z : v.w; }
__device__ __forceinline__ float tg_half(uint4 v, int t) { return tg_h2f((unsigned short)(tg_word(v, t / 2) >> (16 * (t & 1)))); }
"""

# per type: the loads of one (row, step) and the product of lane's 4 weights of round t (bits of `word`) with x4
_LOADS = {
  "Q4": """        q[u][r][0] = quants[rs * 32 + lane];
        d[u][r] = scales[rs * 4 + lane / 8];""",
  "Q8": """        q[u][r][0] = quants[rs * 64 + lane];
        q[u][r][1] = quants[rs * 64 + 32 + lane];
        d[u][r] = scales[rs * 4 + lane / 8];""",
}
_TERMS = {
  "Q4_0": """          const unsigned int bits = tg_word(q[u][r][0], t / 2) >> (16 * (t & 1));
          const float s = (float)(bits & 15) * v.x + (float)((bits >> 4) & 15) * v.y + (float)((bits >> 8) & 15) * v.z
                        + (float)((bits >> 12) & 15) * v.w;
          acc[m][r] += tg_half(d[u][r], t) * (s - 8.0f * vs);""",
  "Q4_1": """          const unsigned int bits = tg_word(q[u][r][0], t / 2) >> (16 * (t & 1));
          const float s = (float)(bits & 15) * v.x + (float)((bits >> 4) & 15) * v.y + (float)((bits >> 8) & 15) * v.z
                        + (float)((bits >> 12) & 15) * v.w;
          acc[m][r] += tg_half(d[u][r], t) * s + tg_half(mn[u][r], t) * vs;""",
  "Q8_0": """          const unsigned int bits = tg_word(q[u][r][t / 4], t % 4);
          const float s = (float)(signed char)(bits & 255) * v.x + (float)(signed char)((bits >> 8) & 255) * v.y
                        + (float)(signed char)((bits >> 16) & 255) * v.z + (float)(signed char)(bits >> 24) * v.w;
          acc[m][r] += tg_half(d[u][r], t) * s;""",
}


def packed_bytes(ggml_type: str, n: int, k: int) -> int:
  """Bytes of an (n, k) weight in the packed layout: quants, scales and (Q4_1) mins."""
  return _quant_bytes(ggml_type, n, k) + n * k // 16 * (2 if ggml_type == "Q4_1" else 1)


def render_weight_pointers(ggml_type: str, n: int, k: int) -> str:
  """C++ naming the parts of the packed buffer w: quants, scales and (Q4_1) min_halves, as uint4s."""
  q_bytes, s_bytes = _quant_bytes(ggml_type, n, k), n * k // 16
  mins = f"  const uint4* __restrict__ min_halves = (const uint4*)(w + {q_bytes + s_bytes}LL);\n" if ggml_type == "Q4_1" else ""
  return f"""  const uint4* __restrict__ quants = (const uint4*)w;
  const uint4* __restrict__ scales = (const uint4*)(w + {q_bytes}LL);
{mins}"""


def with_suffix(code: str, suffix: str) -> str:
  """C++ reading the weight arrays q, d, mn renamed q<suffix>, d<suffix>, mn<suffix> (a second set of registers)."""
  return code.replace("q[u]", f"q{suffix}[u]").replace("d[u]", f"d{suffix}[u]").replace("mn[u]", f"mn{suffix}[u]")


def declare_weight_arrays(ggml_type: str, ahead: int, suffix: str = "") -> str:
  slot = f"[{ahead}][ROWS_PER_WARP]"
  return f"""    uint4 q{suffix}{slot}[{2 if ggml_type == "Q8_0" else 1}], d{suffix}{slot}{f", mn{suffix}" + slot if ggml_type == "Q4_1" else ""};
"""


def render_weight_loads(ggml_type: str, ahead: int, suffix: str = "", first: str = "first", declare: bool = True) -> str:
  """C++ of one batch of weight loads: the quants q[u][r], scales d[u][r] (and mins mn[u][r]) of steps first + u
  (u < ahead) of rows row0 + r (r < ROWS_PER_WARP), each a 16-byte load; `suffix` names another set of arrays,
  declared here unless `declare` is off."""
  wide = "Q8" if ggml_type == "Q8_0" else "Q4"
  mins = ggml_type == "Q4_1"
  loads = with_suffix(_LOADS[wide] + ("\n        mn[u][r] = min_halves[rs * 4 + lane / 8];" if mins else ""), suffix)
  declaration = declare_weight_arrays(ggml_type, ahead, suffix) if declare else ""
  return declaration + f"""    /* the loads of {ahead} steps before their products; a ragged last warp reads its last row again and a short last
       batch the last step again rather than branch (the products and the store below skip both) */
    #pragma unroll
    for (int u = 0; u < {ahead}; u++)
      #pragma unroll
      for (int r = 0; r < ROWS_PER_WARP; r++) {{
        const long long rs = (long long)min(TG_ROW(r), N_OUT - 1) * STEPS + min({first} + u, STEPS - 1);
{loads}
      }}
"""


def render_packed_matvec(ggml_type: str, k: int, m: int, n: int, prologue: str = "", residual: bool = False, eps: float = 0.0,
                         glu: bool = False) -> str:
  """CUDA C of out (m, n) = prologue(x) (m, k) @ W.T (+ residual) for W (n, k) in the packed layout; with `glu`, out
  (m, n / 2) = silu(gate) * up of W's two halves (nn/matvec_cuda.py)."""
  assert packable(ggml_type, k)
  steps, groups = k // STEP, packed_groups(m)
  ahead = min(steps, LOADS_AHEAD)
  return CUDA_PREAMBLE + render_x_reader(prologue, k) + f"""#define M_ROWS {min(m, GROUP_ROWS)}
#define N_OUT {n}
#define ROWS_PER_WARP {packed_rows(m, n, glu)}
#define STEPS {steps}
{render_row_map(glu)}{UINT4_PARTS}extern "C" __global__ void __launch_bounds__({32 * WARPS})
{packed_name(ggml_type, k, m, n, prologue, residual, glu)}(float* __restrict__ out,
    const float* __restrict__ x, const unsigned char* __restrict__ w{kernel_params(prologue, residual)}) {{
{render_weight_prefetch(packed_bytes(ggml_type, n, k))}{no_norm_weight(prologue)}  const int lane = threadIdx.x & 31;
{render_row_block(groups, m)}{render_weight_pointers(ggml_type, n, k)}  float acc[M_ROWS][ROWS_PER_WARP], sq[M_ROWS];
  #pragma unroll
  for (int m = 0; m < M_ROWS; m++) {{
    sq[m] = 0.0f;
    #pragma unroll
    for (int r = 0; r < ROWS_PER_WARP; r++) acc[m][r] = 0.0f;
  }}
  #pragma unroll 1
  for (int first = 0; first < STEPS; first += {ahead}) {{
{render_weight_loads(ggml_type, ahead)}    #pragma unroll
    for (int u = 0; u < {ahead}; u++) {{
      const int step = first + u;
{"      if (step >= STEPS) break;" + chr(10) if steps % ahead else ""}      #pragma unroll
      for (int m = 0; m < M_ROWS; m++) if (m < rows_here) {{
        #pragma unroll
        for (int t = 0; t < 8; t++) {{
          const float4 v = tg_x4(x, g, m, step * {STEP} + t * 128 + lane * 4, sq[m]);
          const float vs = (v.x + v.y) + (v.z + v.w);
          #pragma unroll
          for (int r = 0; r < ROWS_PER_WARP; r++) {{
{_TERMS[ggml_type]}
          }}
        }}
      }}
    }}
  }}
{render_rows_out(prologue, residual, eps, glu)}}}
"""


def _render_for(ggml_type: str, k: int, m: int, n: int, prologue: str, residual: bool, eps: float,
                int8_x: bool, glu: bool = False) -> tuple[str, str, dict, str]:
  """(name, CUDA C, launch dims, the profile's name) of the matvec a shape runs: with int8_x, x rounded to int8 and
  dp4a where the weight is large enough to be bandwidth-bound (nn/quant_cuda_dp4a.py), float x otherwise. Every row
  count of x gets the same kind, so a row's result does not depend on its batch."""
  from teenygrad.nn import quant_cuda_dp4a as dp4a   # it renders with this module's pieces: imported on use
  if int8_x and dp4a.uses_dp4a(n, k):
    src = dp4a.render_dp4a_matvec(ggml_type, k, m, n, prologue, residual, eps, glu)
    return (dp4a.dp4a_name(ggml_type, k, m, n, prologue, residual, glu), src,
            {"block": (32 * dp4a.WARPS, 1, 1), "grid": (dp4a.dp4a_grid(m, n, k, glu), 1, 1)}, f"qmatvec_packed_dp4a_{ggml_type.lower()}")
  src = render_packed_matvec(ggml_type, k, m, n, prologue, residual, eps, glu)
  return (packed_name(ggml_type, k, m, n, prologue, residual, glu), src,
          {"block": (32 * WARPS, 1, 1), "grid": (packed_grid(m, n, glu), 1, 1)}, f"qmatvec_packed_{ggml_type.lower()}")


class CUDAPackedMatvec:
  """The packed matvecs of one GGML type on one CUDA device, compiled per shape; each call one recorded launch.
  int8_x: the large shapes round x to int8 (nn/quant_cuda_dp4a.py)."""
  def __init__(self, device: str, ggml_type: str, int8_x: bool = True):
    self.device, self.ggml_type, self.int8_x = device, ggml_type, int8_x
    self._programs: dict[tuple, tuple[object, str]] = {}   # shape and options -> (program, the profile's name for it)

  def __call__(self, out: Buffer, x: Buffer, w: Buffer, m: int, n: int, k: int, residual: Buffer | None = None,
               norm: Buffer | None = None, eps: float = 0.0, swiglu: bool = False, glu: bool = False) -> None:
    from teenygrad.engine.realize import CompiledKernel, ExecItem, launch
    prologue = "norm" if norm is not None else "swiglu" if swiglu else ""
    key = (k, m, n, prologue, residual is not None, eps, glu)
    if key not in self._programs:
      backend = Device[self.device]
      name, src, grid, label = _render_for(self.ggml_type, k, m, n, prologue, residual is not None, eps, self.int8_x, glu)
      self._programs[key] = backend.program(name, backend.compiler.compile_cached(src), grid), label
    program, label = self._programs[key]
    kernel = CompiledKernel(label, program, [], [], "", m * n * k, False)
    buffers = [out, x, w] + ([norm] if norm is not None else []) + ([residual] if residual is not None else [])
    launch(ExecItem(kernel, buffers, (), self.device))


_packed: dict[tuple[str, str, bool], CUDAPackedMatvec] = {}


def cuda_packed_matvec(device: str, ggml_type: str, int8_x: bool = True) -> CUDAPackedMatvec:
  key = (device, ggml_type, int8_x)
  if key not in _packed: _packed[key] = CUDAPackedMatvec(device, ggml_type, int8_x)
  return _packed[key]


__all__ = ["CUDAPackedMatvec", "PACKED_TYPES", "STEP", "cuda_packed_matvec", "packable", "packed_grid", "packed_name",
           "render_packed_matvec", "repack", "repack_tensor"]
