"""fp32 matmuls on tensor cores at fp32 accuracy: 3xTF32 (sm_80 and later).

A tf32 operand keeps 10 of fp32's 23 mantissa bits, so one tf32 product misses the fp32 error bound (relative 1e-5)
by two orders of magnitude. Split each operand into a big part, x rounded to tf32, and a small part, the rest
(x - big, exact in fp32) rounded to tf32; then

    a * b  ~=  a_small * b_big + a_big * b_small + a_big * b_big

drops only a_small * b_small (about 2^-22 of the product) and the small parts' own rounding (as much again): fp32's
accuracy, with fp32 accumulation, from three mma.sync.m16n8k8 tf32 per product where the SIMT kernel's fused
multiply-adds run at a sixteenth of the tensor cores' tf32 rate.

A block computes a 128 x 128 tile with 8 warps (2 x 4, 64 x 32 each); BK-deep k slices of A and B land through
cp.async (16 bytes = 4 floats, zero-filled past the edges) in a STAGES-deep ring, each operand stored with its
contiguous axis as the shared-memory row, so the copies stay 16 bytes wide for both layouts of each operand. The
fragments are read with 32-bit shared loads; rows are padded so one warp's 32 reads hit 32 banks: a k-contiguous row
holds BK + 4 floats (row g of eight lands 4g banks on), an i/j-contiguous row BM + 8 (k row t lands 8t banks on).
Each fragment is split once and used by every mma of the warp's tile that reads it.
"""
from __future__ import annotations

from teenygrad.helpers import ceildiv
from teenygrad.renderer.cuda_gemm import TC_PREAMBLE, render_copy_ring, render_tile_order

BM = BN = 128
WARPS_M, WARPS_N = 2, 4   # each warp 64 x 32: 4 m16 rows of fragments by 4 n8 columns
THREADS = 32 * WARPS_M * WARPS_N
# name -> k slice, ring depth, blocks per SM (the register budget: 2 blocks cap a thread at 128 registers)
# (the partial sums need 64 more registers than the accumulators alone, so one block per SM; on an H200, 4096 and
# 8192, bench/results/gpu_h200.txt: BK 64 1.00-1.02x cuBLAS, BK 32 0.96-0.98x, BK 16 0.88-0.90x)
TF32_CONFIGS = {
  "tf32x3": {"BK": 64, "STAGES": 2, "BLOCKS_PER_SM": 1},
  "tf32x3-k32": {"BK": 32, "STAGES": 3, "BLOCKS_PER_SM": 1},
  "tf32x3-k16": {"BK": 16, "STAGES": 4, "BLOCKS_PER_SM": 1},
}
# the default, or another TF32_CONFIGS name, or "simt" / "simt-1block" for the exact fused multiply-add kernel (at 2 or
# 1 blocks per SM: at 2 ptxas spills 48 bytes, at 1 it runs at 0.47x cuBLAS against 0.64x)
FP32_DEFAULT = "tf32x3"
FP32_CONFIGS = ("simt", "simt-1block", *TF32_CONFIGS)

TF32_PREAMBLE = r"""
/* x as big + small, each rounded to tf32 (big: x to nearest, small: the exact remainder to nearest) */
__device__ __forceinline__ void tg_split(float x, unsigned& big, unsigned& small) {
  asm("cvt.rna.tf32.f32 %0, %1;\n" : "=r"(big) : "f"(x));
  const float rest = x - __uint_as_float(big);
  asm("cvt.rna.tf32.f32 %0, %1;\n" : "=r"(small) : "f"(rest));
}
__device__ __forceinline__ void tg_mma_tf32(float* d, const unsigned* a, const unsigned* b) {
  asm volatile("mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
    : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
    : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}
"""


def tf32_layouts(spec, a_offset: int, b_offset: int) -> tuple[str, str] | None:
  """'MK' or 'KM' for A and 'NK' or 'KN' for B (which axis is contiguous), or None where an operand can't take
  16-byte copies: 4 contiguous floats along the copied axis, every other stride and the offset 4-aligned."""
  sab, sai, sak = spec.a_strides
  sbb, sbk, sbj = spec.b_strides
  def aligned(*xs): return all(x % 4 == 0 for x in xs)
  if sak == 1 and spec.K % 4 == 0 and aligned(sab, sai, a_offset): a = "MK"
  elif sai == 1 and spec.M % 4 == 0 and aligned(sab, sak, a_offset): a = "KM"
  else: return None
  if sbk == 1 and spec.K % 4 == 0 and aligned(sbb, sbj, b_offset): b = "NK"
  elif sbj == 1 and spec.N % 4 == 0 and aligned(sbb, sbk, b_offset): b = "KN"
  else: return None
  return a, b


def _row_floats(layout: str, rows: int, BK: int) -> tuple[int, int]:
  """(floats per shared-memory row, floats per stage) of one operand's tile."""
  if layout in ("MK", "NK"): return BK + 4, rows * (BK + 4)
  return rows + 8, BK * (rows + 8)


def _loader(operand: str, layout: str, rows: int, stride_rows: int, stride_k: int, stride_batch: int, limit_rows: int,
            K: int, BK: int) -> str:
  """Statements filling stage `st` of operand A (rows = i) or B (rows = j) for the k slice starting at k0."""
  row, _ = _row_floats(layout, rows, BK)
  base = f"({operand.lower()}_ptr + (long long)bi * {stride_batch})"
  checks = [c for c, fits in ((f"gr < {limit_rows}", limit_rows % rows == 0), (f"gk < {K}", K % BK == 0)) if not fits]
  in_bounds = " && ".join(checks) or "true"
  first = operand.lower() + "0"
  if layout in ("MK", "NK"):   # k contiguous: BK / 4 chunks along k per row
    split = f"int r = c / {BK // 4}, kc = (c % {BK // 4}) * 4; int gr = {first} + r, gk = k0 + kc;"
    src, dst = f"(long long)gr * {stride_rows} + gk", f"r * {row} + kc"
  else:                        # rows contiguous: rows / 4 chunks along i (or j) per k
    split = f"int kr = c / {rows // 4}, rc = (c % {rows // 4}) * 4; int gr = {first} + rc, gk = k0 + kr;"
    src, dst = f"(long long)gk * {stride_k} + gr", f"kr * {row} + rc"
  return f"""    for (int c = threadIdx.x; c < {rows * BK // 4}; c += {THREADS}) {{
      {split}
      bool ok = {in_bounds};
      tg_cp16(&s{operand}[st * {_row_floats(layout, rows, BK)[1]} + {dst}], {base} + (ok ? {src} : 0), ok);
    }}"""


def _fragment(operand: str, layout: str, rows: int, BK: int, first_row: str, k: str) -> str:
  """C expression of the float at (row first_row, column k) of stage st's tile of an operand."""
  row, stage = _row_floats(layout, rows, BK)
  at = f"({first_row}) * {row} + ({k})" if layout in ("MK", "NK") else f"({k}) * {row} + ({first_row})"
  return f"s{operand}[st * {stage} + {at}]"


def render_tf32x3_gemm(name: str, params: str, spec, a_name: str, b_name: str, a_offset: int, b_offset: int, epilogue: str,
                       layouts: tuple[str, str], config_name: str = FP32_DEFAULT) -> tuple[str, dict]:
  M, N, K, batch = spec.M, spec.N, spec.K, spec.batch
  sab, sai, sak = spec.a_strides
  sbb, sbk, sbj = spec.b_strides
  config = TF32_CONFIGS[config_name]
  BK, STAGES = config["BK"], config["STAGES"]
  a_layout, b_layout = layouts
  a_stage, b_stage = _row_floats(a_layout, BM, BK)[1], _row_floats(b_layout, BN, BK)[1]
  shared = STAGES * (a_stage + b_stage) * 4
  tiles_m, tiles_n, k_tiles = ceildiv(M, BM), ceildiv(N, BN), ceildiv(K, BK)
  load = (_loader("A", a_layout, BM, sai, sak, sab, M, K, BK) + "\n" + _loader("B", b_layout, BN, sbj, sbk, sbb, N, K, BK))
  # fragment maps of mma.m16n8k8 tf32 (g = lane / 4, t = lane % 4): A a0 (g, t), a1 (g+8, t), a2 (g, t+4), a3 (g+8, t+4);
  # B b0 (k t, n g), b1 (k t+4, n g); the accumulator c0..c3 (g, 2t), (g, 2t+1), (g+8, 2t), (g+8, 2t+1)
  a_frag = _fragment("A", a_layout, BM, BK, "wm * 64 + mi * 16 + g + (q & 1) * 8", "kk + t + (q >> 1) * 4")
  b_frag = _fragment("B", b_layout, BN, BK, "wn * 32 + ni * 8 + g", "kk + t + q * 4")
  src = f"""{TC_PREAMBLE}{TF32_PREAMBLE}
/* {batch}x{M}x{N}x{K} fp32 as 3xTF32: A {a_layout}, B {b_layout}, tile {BM}x{BN}x{BK}, {STAGES} stages */
extern "C" __global__ void __launch_bounds__({THREADS}, {config["BLOCKS_PER_SM"]}) {name}({params}) {{
  extern __shared__ __align__(16) float tg_smem_f32[];
  float* sA = tg_smem_f32;
  float* sB = tg_smem_f32 + {STAGES * a_stage};
  const float* a_ptr = {a_name} + {a_offset};
  const float* b_ptr = {b_name} + {b_offset};
  const int bi = blockIdx.z;
{render_tile_order(tiles_m, tiles_n)}  const int a0 = tm * {BM}, b0 = tn * {BN};
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, wm = warp / {WARPS_N}, wn = warp % {WARPS_N};
  const int g = lane >> 2, t = lane & 3;
  float acc[4][4][4];
  #pragma unroll
  for (int mi = 0; mi < 4; mi++)
    #pragma unroll
    for (int ni = 0; ni < 4; ni++)
      #pragma unroll
      for (int q = 0; q < 4; q++) acc[mi][ni][q] = 0.0f;
{render_copy_ring(load, STAGES, k_tiles, BK)}
    /* the slice's products sum into part, which joins acc through fp32 adds (rounded to nearest): the tensor cores
       sum their products and the accumulator with truncation, so summing all of K in acc drifts by K / 8 units in the
       last place (2.9e-5 relative at K = 4096 on an H200), a slice's part by BK / 8 */
    float part[4][4][4];
    #pragma unroll
    for (int mi = 0; mi < 4; mi++)
      #pragma unroll
      for (int ni = 0; ni < 4; ni++)
        #pragma unroll
        for (int q = 0; q < 4; q++) part[mi][ni][q] = 0.0f;
    #pragma unroll
    for (int kk = 0; kk < {BK}; kk += 8) {{
      unsigned a_big[4][4], a_small[4][4], b_big[4][2], b_small[4][2];
      #pragma unroll
      for (int mi = 0; mi < 4; mi++)
        #pragma unroll
        for (int q = 0; q < 4; q++) tg_split({a_frag}, a_big[mi][q], a_small[mi][q]);
      #pragma unroll
      for (int ni = 0; ni < 4; ni++)
        #pragma unroll
        for (int q = 0; q < 2; q++) tg_split({b_frag}, b_big[ni][q], b_small[ni][q]);
      /* the small terms first (they are the least significant), each pass 16 independent mmas deep */
      #pragma unroll
      for (int mi = 0; mi < 4; mi++)
        #pragma unroll
        for (int ni = 0; ni < 4; ni++) tg_mma_tf32(part[mi][ni], a_small[mi], b_big[ni]);
      #pragma unroll
      for (int mi = 0; mi < 4; mi++)
        #pragma unroll
        for (int ni = 0; ni < 4; ni++) tg_mma_tf32(part[mi][ni], a_big[mi], b_small[ni]);
      #pragma unroll
      for (int mi = 0; mi < 4; mi++)
        #pragma unroll
        for (int ni = 0; ni < 4; ni++) tg_mma_tf32(part[mi][ni], a_big[mi], b_big[ni]);
    }}
    #pragma unroll
    for (int mi = 0; mi < 4; mi++)
      #pragma unroll
      for (int ni = 0; ni < 4; ni++)
        #pragma unroll
        for (int q = 0; q < 4; q++) acc[mi][ni][q] += part[mi][ni][q];
  }}
  tg_cp_wait<0>();
  #pragma unroll
  for (int mi = 0; mi < 4; mi++)
    #pragma unroll
    for (int ni = 0; ni < 4; ni++)
      #pragma unroll
      for (int q = 0; q < 4; q++) {{
        const int i = a0 + wm * 64 + mi * 16 + g + (q >> 1) * 8;
        const int j = b0 + wn * 32 + ni * 8 + t * 2 + (q & 1);
        if ({"true" if M % BM == 0 and N % BN == 0 else f"i < {M} && j < {N}"}) {{
          long long ep_bi = bi, ep_i = i, ep_j = j; float ep_acc = acc[mi][ni][q];
          (void)ep_bi; (void)ep_i; (void)ep_j;
          {epilogue}
        }}
      }}
}}
"""
  return src, {"block": (THREADS, 1, 1), "grid": (tiles_m * tiles_n, 1, batch), "shared": shared}


__all__ = ["FP32_CONFIGS", "FP32_DEFAULT", "TF32_CONFIGS", "render_tf32x3_gemm", "tf32_layouts"]
