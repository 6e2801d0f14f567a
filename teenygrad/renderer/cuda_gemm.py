"""CUDA matrix multiplies with the kernel's epilogue fused: C[bi, i, j] = epilogue(sum_k A[bi, i, k] * B[bi, k, j]).

fp16 / bf16 operands: tensor cores through inline PTX (mma.sync.m16n8k16 with fp32 accumulation). A block computes a
BM x BN tile with 8 warps (2 x 4, a 64 x 32 tile each); BK-deep slices of A and B go through a STAGES-deep ring of
shared-memory buffers filled by cp.async (16-byte copies that bypass registers, zero-filled past the edges), and
ldmatrix gathers the mma fragments. Rows are padded by 16 bytes so ldmatrix's eight 16-byte rows hit distinct banks.
An operand whose k axis (or i/j axis) is contiguous takes the 16-byte path, stored k-major (ldmatrix) or i/j-major
(ldmatrix.trans); any other strides go through a scalar loader into the k-major layout.

fp32 operands: on sm_80 and later, tensor cores at fp32 accuracy (3xTF32, renderer/cuda_tf32.py: one tf32 product
would miss the fp32 error bound, relative 1e-5, by two orders of magnitude); elsewhere, and for operands without a
contiguous axis, a SIMT kernel (128 x 128 tile, 8 x 8 outputs per thread, operands staged through shared memory) of
exact fp32 fused multiply-adds.

Sizes and strides are compile-time constants in the rendered source (one kernel per shape, like the CPU GEMM).
"""
from __future__ import annotations

from teenygrad.codegen.gemm_match import match_gemm
from teenygrad.dtype import dtypes
from teenygrad.helpers import ceildiv

# tensor-core tiles for mma.sync: block BM x BN, k slice BK, 8 warps as WARPS_M x WARPS_N (each 64 x WN), ring of
# STAGES k slices. On sm_90 "auto" (the default) takes the wgmma kernels of renderer/cuda_wgmma.py where their layout
# fits (TMA-fed 128x256 tiles, then 128x128), else mma.sync 128x128x32. The mma.sync and cp.async wgmma kernels,
# measured in one run on an H100 (fp16, TFLOP/s; cuBLAS 757-768), bench/results/gpu_h100.txt:
#                 a @ b 4096   8192    x @ w.T 4096   8192
#   128x128x32        262     282           260     267
#   128x128x64        276     292
#   128x256x32        232     254
#   wgmma n128        278     302           281     304
#   wgmma n256        275     307           333     371
BM = 128
TC_CONFIGS = {
  "128x128x32": {"BN": 128, "WN": 32, "BK": 32, "STAGES": 4, "BLOCKS_PER_SM": 2},
  "128x128x64": {"BN": 128, "WN": 32, "BK": 64, "STAGES": 3, "BLOCKS_PER_SM": 2},
  "128x256x32": {"BN": 256, "WN": 64, "BK": 32, "STAGES": 3, "BLOCKS_PER_SM": 1},
}
TC_DEFAULT = "auto"   # or a TC_CONFIGS name, "wgmma" or "wgmma256" to force one (tests and bench/gpu.py do)
WARPS_M, WARPS_N = 2, 4
THREADS = 32 * WARPS_M * WARPS_N
PAD = 8   # halves of padding per shared-memory row (16 bytes)
GROUP_M = 8   # blocks walk GROUP_M tile rows at a time so neighbouring blocks share A and B in L2
# below this many multiply-adds the generic loop kernel is as good (and compiles faster)
MIN_FMAS = 1 << 15


def render_tile_order(tiles_m: int, tiles_n: int) -> str:
  """C lines setting tm, tn (this block's tile) from blockIdx.x in grouped order: GROUP_M tile rows walk their B
  columns together, so neighbouring blocks share A and B while they are hot in L2."""
  per_group = GROUP_M * tiles_n
  return (f"  const int tile = blockIdx.x, first_m = tile / {per_group} * {GROUP_M}, group_rows = min({tiles_m} - first_m, {GROUP_M});\n"
          f"  const int tm = first_m + (tile % {per_group}) % group_rows, tn = (tile % {per_group}) / group_rows;\n")

def render_copy_ring(load: str, stages: int, k_tiles: int, bk: int) -> str:
  """The cp.async ring of the tensor-core GEMMs: `load` (statements filling stage `st` with the k slice at `k0`) for
  the first stages - 1 slices, then the k-slice loop opened, each turn waiting for its slice and refilling the stage
  the turn before used; leaves `st`, this slice's stage, for the loop body the caller writes (and closes)."""
  return f"""  #pragma unroll
  for (int s = 0; s < {stages - 1}; s++) {{
    if (s < {k_tiles}) {{
      const int st = s, k0 = s * {bk};
{load}
    }}
    tg_cp_commit();
  }}
  for (int kt = 0; kt < {k_tiles}; kt++) {{
    tg_cp_wait<{stages - 2}>();
    __syncthreads();   /* slice kt has landed for every thread, and slice kt-1's buffer is free to refill */
    {{
      const int next = kt + {stages - 1};
      if (next < {k_tiles}) {{
        const int st = next % {stages}, k0 = next * {bk};
{load}
      }}
      tg_cp_commit();
    }}
    const int st = kt % {stages};"""


TC_PREAMBLE = r"""
__device__ __forceinline__ unsigned tg_smem(const void* p) { return (unsigned)__cvta_generic_to_shared(p); }
__device__ __forceinline__ void tg_cp16(void* dst, const void* src, bool valid) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" :: "r"(tg_smem(dst)), "l"(src), "r"(valid ? 16 : 0));
}
__device__ __forceinline__ void tg_cp_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N> __device__ __forceinline__ void tg_cp_wait() { asm volatile("cp.async.wait_group %0;\n" :: "n"(N)); }
__device__ __forceinline__ void tg_ldm_x4(unsigned* r, const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(tg_smem(p)));
}
__device__ __forceinline__ void tg_ldm_x4_t(unsigned* r, const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(tg_smem(p)));
}
"""


def _mma(kind: str) -> str:
  return (f"__device__ __forceinline__ void tg_mma(float* d, const unsigned* a, const unsigned* b) {{\n"
          f"  asm volatile(\"mma.sync.aligned.m16n8k16.row.col.f32.{kind}.{kind}.f32 {{%0,%1,%2,%3}}, {{%4,%5,%6,%7}}, {{%8,%9}}, "
          f"{{%0,%1,%2,%3}};\\n\"\n"
          f"    : \"+f\"(d[0]), \"+f\"(d[1]), \"+f\"(d[2]), \"+f\"(d[3])\n"
          f"    : \"r\"(a[0]), \"r\"(a[1]), \"r\"(a[2]), \"r\"(a[3]), \"r\"(b[0]), \"r\"(b[1]));\n}}\n")


def _layouts(spec, a_offset: int, b_offset: int) -> tuple[str, str]:
  """How each operand reaches shared memory: 'MK'/'KM' (A) and 'NK'/'KN' (B) take 16-byte copies, 'gMK'/'gNK' scalar
  loads. A 16-byte copy needs 8 contiguous elements along the copied axis and every other stride 8-aligned."""
  sab, sai, sak = spec.a_strides
  sbb, sbk, sbj = spec.b_strides
  def aligned(*xs): return all(x % 8 == 0 for x in xs)
  if sak == 1 and spec.K % 8 == 0 and aligned(sab, sai, a_offset): a = "MK"
  elif sai == 1 and spec.M % 8 == 0 and aligned(sab, sak, a_offset): a = "KM"
  else: a = "gMK"
  if sbj == 1 and spec.N % 8 == 0 and aligned(sbb, sbk, b_offset): b = "KN"
  elif sbk == 1 and spec.K % 8 == 0 and aligned(sbb, sbj, b_offset): b = "NK"
  else: b = "gNK"
  return a, b


def _tc_loader(operand: str, layout: str, rows: int, stride_rows: int, stride_k: int, stride_batch: int, limit_rows: int,
               K: int, BK: int) -> str:
  """Statements filling stage `st` of operand A (rows = i) or B (rows = j) for the k slice starting at k0."""
  smem = f"s{operand}[st]"
  # a tile that never overhangs the matrix needs no bounds check
  rows_fit, k_fits = limit_rows % rows == 0, K % BK == 0
  in_bounds = " && ".join(c for c, fits in ((f"gr < {limit_rows}", rows_fit), (f"gk < {K}", k_fits)) if not fits) or "true"
  base = f"({operand.lower()}_ptr + (long long)bi * {stride_batch})"
  chunks = rows * BK // 8
  if layout in ("MK", "NK"):   # k contiguous: 4 chunks of 8 along k per row
    return f"""    for (int c = threadIdx.x; c < {chunks}; c += {THREADS}) {{
      int r = c / {BK // 8}, kc = (c % {BK // 8}) * 8;
      int gr = {operand.lower()}0 + r, gk = k0 + kc;
      bool ok = {in_bounds};
      tg_cp16(&{smem}[r * {BK + PAD} + kc], {base} + (ok ? (long long)gr * {stride_rows} + gk : 0), ok);
    }}"""
  if layout in ("KM", "KN"):   # rows contiguous: a [BK][rows] tile
    per_row = rows // 8
    return f"""    for (int c = threadIdx.x; c < {chunks}; c += {THREADS}) {{
      int kr = c / {per_row}, rc = (c % {per_row}) * 8;
      int gr = {operand.lower()}0 + rc, gk = k0 + kr;
      bool ok = {in_bounds};
      tg_cp16(&{smem}[kr * {rows + PAD} + rc], {base} + (ok ? (long long)gk * {stride_k} + gr : 0), ok);
    }}"""
  return f"""    for (int e = threadIdx.x; e < {rows * BK}; e += {THREADS}) {{
      int r = e / {BK}, kk = e % {BK};
      int gr = {operand.lower()}0 + r, gk = k0 + kk;
      {smem}[r * {BK + PAD} + kk] = ({in_bounds}) ? {base}[(long long)gr * {stride_rows} + (long long)gk * {stride_k}] : (unsigned short)0;
    }}"""


def render_tensor_core_gemm(name: str, params: str, spec, a_name: str, b_name: str, a_offset: int, b_offset: int,
                            epilogue: str, kind: str, config_name: str | None = None) -> tuple[str, dict]:
  M, N, K, batch = spec.M, spec.N, spec.K, spec.batch
  sab, sai, sak = spec.a_strides
  sbb, sbk, sbj = spec.b_strides
  config = TC_CONFIGS.get(config_name or TC_DEFAULT, TC_CONFIGS["128x128x32"])   # "auto" and wgmma fall back here
  BN, WN, BK, STAGES = config["BN"], config["WN"], config["BK"], config["STAGES"]
  NI = WN // 8
  a_layout, b_layout = _layouts(spec, a_offset, b_offset)
  a_tile = BK * (BM + PAD) if a_layout == "KM" else BM * (BK + PAD)
  b_tile = BK * (BN + PAD) if b_layout == "KN" else BN * (BK + PAD)
  shared = STAGES * (a_tile + b_tile) * 2
  tiles_m, tiles_n = ceildiv(M, BM), ceildiv(N, BN)
  k_tiles = ceildiv(K, BK)
  load_a = _tc_loader("A", a_layout, BM, sai, sak, sab, M, K, BK)
  load_b = _tc_loader("B", b_layout, BN, sbj, sbk, sbb, N, K, BK)
  # fragment addresses (see the ldmatrix lane maps in the module notes)
  if a_layout == "KM":
    a_frag = f"tg_ldm_x4_t(af[mi], &sA[st][(kk + (lane & 7) + (lane >> 4) * 8) * {BM + PAD} + wm * 64 + mi * 16 + ((lane >> 3) & 1) * 8]);"
  else:
    a_frag = f"tg_ldm_x4(af[mi], &sA[st][(wm * 64 + mi * 16 + (lane & 15)) * {BK + PAD} + kk + (lane >> 4) * 8]);"
  if b_layout == "KN":
    b_frag = (f"tg_ldm_x4_t(&bf[2 * nj][0], &sB[st][(kk + (lane & 7) + ((lane >> 3) & 1) * 8) * {BN + PAD} + wn * {WN} + nj * 16 "
              f"+ (lane >> 4) * 8]);")
  else:
    b_frag = (f"tg_ldm_x4(&bf[2 * nj][0], &sB[st][(wn * {WN} + nj * 16 + (lane & 7) + (lane >> 4) * 8) * {BK + PAD} + kk "
              f"+ ((lane >> 3) & 1) * 8]);")
  src = f"""{TC_PREAMBLE}{_mma(kind)}
/* {batch}x{M}x{N}x{K} {kind}: A {a_layout}, B {b_layout}, tile {BM}x{BN}x{BK}, {STAGES} stages */
extern "C" __global__ void __launch_bounds__({THREADS}, {config["BLOCKS_PER_SM"]}) {name}({params}) {{
  extern __shared__ __align__(16) unsigned short tg_smem_pool[];
  unsigned short (*sA)[{a_tile}] = (unsigned short (*)[{a_tile}])tg_smem_pool;
  unsigned short (*sB)[{b_tile}] = (unsigned short (*)[{b_tile}])(tg_smem_pool + {STAGES * a_tile});
  const unsigned short* a_ptr = (const unsigned short*){a_name} + {a_offset};
  const unsigned short* b_ptr = (const unsigned short*){b_name} + {b_offset};
  const int bi = blockIdx.z;
{render_tile_order(tiles_m, tiles_n)}  const int a0 = tm * {BM}, b0 = tn * {BN};
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, wm = warp / {WARPS_N}, wn = warp % {WARPS_N};
  float acc[4][{NI}][4];
  #pragma unroll
  for (int mi = 0; mi < 4; mi++)
    #pragma unroll
    for (int ni = 0; ni < {NI}; ni++)
      #pragma unroll
      for (int q = 0; q < 4; q++) acc[mi][ni][q] = 0.0f;
{render_copy_ring(load_a + chr(10) + load_b, STAGES, k_tiles, BK)}
    #pragma unroll
    for (int kk = 0; kk < {BK}; kk += 16) {{
      unsigned af[4][4], bf[{NI}][2];
      #pragma unroll
      for (int mi = 0; mi < 4; mi++) {a_frag}
      #pragma unroll
      for (int nj = 0; nj < {NI // 2}; nj++) {b_frag}
      #pragma unroll
      for (int mi = 0; mi < 4; mi++)
        #pragma unroll
        for (int ni = 0; ni < {NI}; ni++) tg_mma(acc[mi][ni], af[mi], bf[ni]);
    }}
  }}
  tg_cp_wait<0>();
  #pragma unroll
  for (int mi = 0; mi < 4; mi++)
    #pragma unroll
    for (int ni = 0; ni < {NI}; ni++)
      #pragma unroll
      for (int q = 0; q < 4; q++) {{
        const int i = a0 + wm * 64 + mi * 16 + (lane >> 2) + (q >> 1) * 8;
        const int j = b0 + wn * {WN} + ni * 8 + (lane & 3) * 2 + (q & 1);
        if ({"true" if M % BM == 0 and N % BN == 0 else f"i < {M} && j < {N}"}) {{
          long long ep_bi = bi, ep_i = i, ep_j = j; float ep_acc = acc[mi][ni][q];
          (void)ep_bi; (void)ep_i; (void)ep_j;
          {epilogue}
        }}
      }}
}}
"""
  return src, {"block": (THREADS, 1, 1), "grid": (tiles_m * tiles_n, 1, batch), "shared": shared}


# fp32 SIMT tile: 128 x 128 outputs, 256 threads as 16 x 16, each 8 x 8 (two 4-row and two 4-column halves 64 apart)
SB, SK = 128, 8


def render_simt_gemm(name: str, params: str, spec, a_name: str, b_name: str, a_offset: int, b_offset: int, epilogue: str,
                     blocks_per_sm: int = 2) -> tuple[str, dict]:
  M, N, K, batch = spec.M, spec.N, spec.K, spec.batch
  sab, sai, sak = spec.a_strides
  sbb, sbk, sbj = spec.b_strides
  tiles_m, tiles_n = ceildiv(M, SB), ceildiv(N, SB)
  # bounds checks stay even where the tiles fit: without them ptxas spills more here (60 bytes, against 48)
  a_check, b_check = f"gi < {M} && gk < {K}", f"gj < {N} && gk < {K}"
  # each thread loads 4 elements of each operand per k slice; consecutive threads walk the contiguous axis
  a_map = "int r = e % 128, kk = e / 128;" if sai == 1 and sak != 1 else "int r = e / 8, kk = e % 8;"
  b_map = "int r = e % 128, kk = e / 128;" if sbj == 1 and sbk != 1 else "int r = e / 8, kk = e % 8;"
  src = f"""
/* {batch}x{M}x{N}x{K} fp32 SIMT */
extern "C" __global__ void __launch_bounds__(256, {blocks_per_sm}) {name}({params}) {{
  __shared__ __align__(16) float sA[2][{SK}][{SB}];
  __shared__ __align__(16) float sB[2][{SK}][{SB}];
  const float* a_ptr = {a_name} + {a_offset} + (long long)blockIdx.z * {sab};
  const float* b_ptr = {b_name} + {b_offset} + (long long)blockIdx.z * {sbb};
{render_tile_order(tiles_m, tiles_n)}  const int m0 = tm * {SB}, n0 = tn * {SB};
  const int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
  float acc[8][8];
  #pragma unroll
  for (int r = 0; r < 8; r++)
    #pragma unroll
    for (int c = 0; c < 8; c++) acc[r][c] = 0.0f;
  float ra[4], rb[4];
  #define TG_LOAD(k0) \\
    _Pragma("unroll") for (int q = 0; q < 4; q++) {{ int e = threadIdx.x + q * 256; {{ {a_map} int gi = m0 + r, gk = (k0) + kk; \\
      ra[q] = ({a_check}) ? a_ptr[(long long)gi * {sai} + (long long)gk * {sak}] : 0.0f; }} \\
      {{ {b_map} int gj = n0 + r, gk = (k0) + kk; rb[q] = ({b_check}) ? b_ptr[(long long)gk * {sbk} + (long long)gj * {sbj}] : 0.0f; }} }}
  #define TG_STORE(buf) \\
    _Pragma("unroll") for (int q = 0; q < 4; q++) {{ int e = threadIdx.x + q * 256; \\
      {{ {a_map} sA[buf][kk][r] = ra[q]; }} {{ {b_map} sB[buf][kk][r] = rb[q]; }} }}
  TG_LOAD(0)
  TG_STORE(0)
  __syncthreads();
  const int k_tiles = {ceildiv(K, SK)};
  for (int kt = 0; kt < k_tiles; kt++) {{
    const int buf = kt & 1;
    if (kt + 1 < k_tiles) {{ TG_LOAD((kt + 1) * {SK}) }}
    #pragma unroll
    for (int kk = 0; kk < {SK}; kk++) {{
      float4 a_lo = *(const float4*)&sA[buf][kk][ty * 4], a_hi = *(const float4*)&sA[buf][kk][64 + ty * 4];
      float4 b_lo = *(const float4*)&sB[buf][kk][tx * 4], b_hi = *(const float4*)&sB[buf][kk][64 + tx * 4];
      float av[8] = {{a_lo.x, a_lo.y, a_lo.z, a_lo.w, a_hi.x, a_hi.y, a_hi.z, a_hi.w}};
      float bv[8] = {{b_lo.x, b_lo.y, b_lo.z, b_lo.w, b_hi.x, b_hi.y, b_hi.z, b_hi.w}};
      #pragma unroll
      for (int r = 0; r < 8; r++)
        #pragma unroll
        for (int c = 0; c < 8; c++) acc[r][c] = fmaf(av[r], bv[c], acc[r][c]);
    }}
    if (kt + 1 < k_tiles) {{ TG_STORE(buf ^ 1) }}
    __syncthreads();
  }}
  #undef TG_LOAD
  #undef TG_STORE
  #pragma unroll
  for (int r = 0; r < 8; r++)
    #pragma unroll
    for (int c = 0; c < 8; c++) {{
      const int i = m0 + (r < 4 ? ty * 4 + r : 64 + ty * 4 + r - 4), j = n0 + (c < 4 ? tx * 4 + c : 64 + tx * 4 + c - 4);
      if (i < {M} && j < {N}) {{
        long long ep_bi = blockIdx.z, ep_i = i, ep_j = j; float ep_acc = acc[r][c];
        (void)ep_bi; (void)ep_i; (void)ep_j;
        {epilogue}
      }}
    }}
}}
"""
  return src, {"block": (256, 1, 1), "grid": (tiles_m * tiles_n, 1, batch)}


def cuda_gemm_kernel(root, target, is_boundary, renderer, max_shared: int = 48 * 1024) -> tuple | None:
  """(name, buffers, source, launch sizes) of the CUDA GEMM for a kernel that is a matmul (with anything elementwise
  after it), or None."""
  from teenygrad.codegen.lower import LoopProgram
  from teenygrad.renderer.cuda import CUDA_PREAMBLE
  match = match_gemm(root, target, is_boundary, renderer, (dtypes.float32, dtypes.float16, dtypes.bfloat16))
  if match is None: return None
  spec = match.spec
  if spec.batch * spec.M * spec.N * spec.K < MIN_FMAS or spec.batch > 65535 or spec.K == 0: return None
  if max(spec.M, spec.N, spec.K) >= 1 << 30: return None
  params = ", ".join(renderer.render_params(LoopProgram("gemm", match.buffers, [], [], [], set(), 0, 0)))
  name = f"gemm_{match.operand_dtype.name}_{spec.batch}_{spec.M}_{spec.N}_{spec.K}"
  if match.operand_dtype in (dtypes.float16, dtypes.bfloat16):
    kind = "f16" if match.operand_dtype == dtypes.float16 else "bf16"
    from teenygrad.renderer.cuda_wgmma import CONFIGS as WGMMA_CONFIGS, TMA_CONFIGS
    if getattr(renderer, "arch", "") == "sm_90":   # warpgroup MMA: Hopper only (an sm_90a cubin)
      from teenygrad.renderer.cuda_wgmma import render_wgmma_gemm, render_wgmma_tma_gemm, wgmma_applicable
      layouts = _layouts(spec, match.a_offset, match.b_offset)
      # the TMA kernels first (591-684 TFLOP/s at 4096-8192 on an H200), then the cp.async ones for what they cannot
      # take (their descriptors' shared memory: none so far); bench/results/gpu_h200.txt
      auto = ("wgmma-tma", "wgmma-tma128", "wgmma")
      known = (*WGMMA_CONFIGS, *TMA_CONFIGS)
      wgmma_configs = auto if TC_DEFAULT == "auto" else (TC_DEFAULT,) if TC_DEFAULT in known else ()
      for config in wgmma_configs:
        if not wgmma_applicable(spec, *layouts, config): continue
        if config in TMA_CONFIGS:   # the TMA descriptors name the operands by their place among the kernel's buffers
          a_index, b_index = (next(i for i, b in enumerate(match.buffers) if b is operand) for operand in (match.a, match.b))
          src, launch = render_wgmma_tma_gemm(name, params, spec, a_index, b_index, match.a_offset, match.b_offset, match.epilogue, kind,
                                              layouts[1], config)
        else:
          src, launch = render_wgmma_gemm(name, params, spec, match.a.name, match.b.name, match.a_offset, match.b_offset, match.epilogue,
                                          kind, layouts[1], config)
        if launch["shared"] <= max_shared: return name, match.buffers, CUDA_PREAMBLE + src, launch
    src, launch = render_tensor_core_gemm(name, params, spec, match.a.name, match.b.name, match.a_offset, match.b_offset, match.epilogue, kind)
    if launch["shared"] > max_shared: return None
  else:
    from teenygrad.renderer import cuda_tf32
    layouts = cuda_tf32.tf32_layouts(spec, match.a_offset, match.b_offset)
    arch = getattr(renderer, "arch", "")
    config = cuda_tf32.FP32_DEFAULT
    if config in cuda_tf32.TF32_CONFIGS and layouts is not None and arch.startswith("sm_") and int(arch[3:]) >= 80:
      src, launch = cuda_tf32.render_tf32x3_gemm(name, params, spec, match.a.name, match.b.name, match.a_offset, match.b_offset,
                                                 match.epilogue, layouts, config)
      if launch["shared"] <= max_shared: return name, match.buffers, CUDA_PREAMBLE + src, launch
    src, launch = render_simt_gemm(name, params, spec, match.a.name, match.b.name, match.a_offset, match.b_offset, match.epilogue,
                                   1 if config == "simt-1block" else 2)
  return name, match.buffers, CUDA_PREAMBLE + src, launch


__all__ = ["cuda_gemm_kernel", "render_tensor_core_gemm", "render_simt_gemm"]
