"""A Hopper GEMM on warpgroup MMA (wgmma.mma_async, sm_90a): the default for fp16/bf16 matmuls on sm_90 where it fits.

Scope: fp16/bf16, A k-contiguous, B k-contiguous (`x @ w.T`, nn.Linear's layout) or n-contiguous (`a @ b`), M and
N multiples of 128, K a multiple of 64. A block of two warpgroups computes a 128 x 128 tile (each warpgroup
m64n128); 64-deep k slices of A and B land through cp.async in shared memory in the 128-byte swizzled layouts wgmma
reads through matrix descriptors, STAGES slices deep. Swizzle atoms are 8 rows of 128 bytes (1024 bytes), the
16-byte chunk c of atom row r stored at chunk c ^ r:
- K-major (A; B of x @ w.T): a row is 64 k values of one i (or j); atoms of 8 rows stacked 1024 bytes apart (SBO);
  the k16 step moves the start address 32 bytes inside the row.
- MN-major (B of a @ b, tnspB = 1): a row is 64 j values of one k; 64-wide j blocks are 64 rows = 8192 bytes apart
  (LBO), 8-k groups 1024 bytes apart (SBO); the k16 step moves the start address 2048 bytes.
No TMA and no producer/consumer warp specialization yet: every thread issues cp.async. In the plain configs each k
slice waits for its wgmmas (wait_group 0) before the ring moves on, which is why they stay under half of cuBLAS
(0.36-0.40x at 8192 on an H200). The "+overlap" configs keep one slice's wgmmas in flight while the threads issue
the next slice's copies: issue slice kt, wait until slice kt-1's wgmmas are done (wait_group 1), a barrier (both
warpgroups are past slice kt-1, whose stage the copies refill), then the copies.
"""
from __future__ import annotations

from teenygrad.renderer.cuda_gemm import render_tile_order


BM, BK, STAGES = 128, 64, 4
THREADS = 256
# config name -> (BN: the warpgroups' m64nBNk16, whether the copies of the next slice overlap the wgmmas in flight)
CONFIGS = {"wgmma": (128, False), "wgmma256": (256, False), "wgmma+overlap": (128, True), "wgmma256+overlap": (256, True)}


def _wgmma_asm(kind: str, transpose_b: int, BN: int) -> str:
  """tg_wgmma(d[BN/2], desc_a, desc_b, accumulate): one m64nBNk16 on the warpgroup (B MN-major when transpose_b)."""
  count = BN // 2
  regs = ", ".join(f"%{i}" for i in range(count))
  outs = ", ".join(f'"+f"(d[{i}])' for i in range(count))
  return (f"__device__ __forceinline__ void tg_wgmma(float* d, unsigned long long desc_a, unsigned long long desc_b, int accumulate) {{\n"
          f"  asm volatile(\"{{\\n.reg .pred p;\\nsetp.ne.b32 p, %{count + 2}, 0;\\n\"\n"
          f"    \"wgmma.mma_async.sync.aligned.m64n{BN}k16.f32.{kind}.{kind} {{{regs}}}, \"\n"
          f"    \"%{count}, %{count + 1}, p, 1, 1, 0, {transpose_b};\\n}}\\n\"\n"
          f"    : {outs}\n"
          f"    : \"l\"(desc_a), \"l\"(desc_b), \"r\"(accumulate));\n}}\n")


WGMMA_PREAMBLE = r"""
__device__ __forceinline__ unsigned tg_smem(const void* p) { return (unsigned)__cvta_generic_to_shared(p); }
__device__ __forceinline__ void tg_cp16(void* dst, const void* src) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" :: "r"(tg_smem(dst)), "l"(src));
}
__device__ __forceinline__ void tg_cp_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N> __device__ __forceinline__ void tg_cp_wait() { asm volatile("cp.async.wait_group %0;\n" :: "n"(N)); }
/* 128-byte swizzle descriptor: start address, leading and stride byte offsets (in 16-byte units) */
__device__ __forceinline__ unsigned long long tg_desc(const void* p, unsigned lbo, unsigned sbo) {
  return (unsigned long long)((tg_smem(p) & 0x3FFFF) >> 4) | ((unsigned long long)(lbo >> 4) << 16) |
         ((unsigned long long)(sbo >> 4) << 32) | (1ull << 62);
}
"""


def wgmma_applicable(spec, a_layout: str, b_layout: str, config: str = "wgmma") -> bool:
  return a_layout == "MK" and b_layout in ("NK", "KN") and spec.M % BM == 0 and spec.N % CONFIGS[config][0] == 0 and spec.K % BK == 0


def render_wgmma_gemm(name: str, params: str, spec, a_name: str, b_name: str, a_offset: int, b_offset: int, epilogue: str,
                      kind: str, b_layout: str, config: str = "wgmma") -> tuple[str, dict]:
  BN, overlap = CONFIGS[config]
  STAGE_BYTES = (BM + BN) * BK * 2
  M, N, K, batch = spec.M, spec.N, spec.K, spec.batch
  sab, sai, _ = spec.a_strides
  sbb, sbk, sbj = spec.b_strides
  mn_major = b_layout == "KN"
  tiles_m, tiles_n, k_tiles = M // BM, N // BN, K // BK
  if mn_major:   # B rows are k: BN/8 chunks of 8 j values each; each 64-wide j block is an atom column 8192 bytes on
    b_src = f"b_ptr + (long long)((k0) + kr) * {sbk} + n0 + cn * 8"
    b_dst = "stage + 16384 + (cn >> 3) * 8192 + kr * 128 + (((cn & 7) ^ (kr & 7)) << 4)"
    b_index = f"const int kr = (c - 1024) / {BN // 8}, cn = (c - 1024) % {BN // 8};"
  else:
    b_src = f"b_ptr + (long long)(n0 + row - {BM}) * {sbj} + (k0) + chunk * 8"
    b_dst = "stage + row * 128 + ((chunk ^ (row & 7)) << 4)"
    b_index = ""
  load = f"""      {{
        unsigned char* stage = smem + (st) * {STAGE_BYTES};
        #pragma unroll
        for (int q = 0; q < {(BM + BN) * BK // 8 // THREADS}; q++) {{
          const int c = threadIdx.x + q * {THREADS};   /* 16-byte chunk: the first 1024 fill A, the rest B */
          const int row = (c >> 3), chunk = c & 7;
          if (c < 1024) tg_cp16(stage + row * 128 + ((chunk ^ (row & 7)) << 4), a_ptr + (long long)(m0 + row) * {sai} + (k0) + chunk * 8);
          else {{ {b_index} tg_cp16({b_dst}, {b_src}); }}
        }}
      }}"""
  refill = f"""    {{ const int next = kt + {STAGES - 1};   /* the stage slice kt-1 used */
      if (next < {k_tiles}) {{ const int st = next % {STAGES}, k0 = next * {BK};
{load}
      }}
      tg_cp_commit();
    }}"""
  b_desc = "tg_desc(stage + 16384 + kk * 2048, 8192, 1024)" if mn_major else "tg_desc(stage + 16384 + kk * 32, 16, 1024)"
  src = f"""{WGMMA_PREAMBLE}{_wgmma_asm(kind, int(mn_major), BN)}
/* {batch}x{M}x{N}x{K} {kind} wgmma: A MK, B {b_layout}, tile {BM}x{BN}x{BK}, {STAGES} stages{", copies overlap the wgmmas" if overlap else ""} */
extern "C" __global__ void __launch_bounds__({THREADS}, 1) {name}({params}) {{
  extern __shared__ __align__(1024) unsigned char tg_smem_raw[];
  unsigned char* smem = (unsigned char*)(((unsigned long long)tg_smem_raw + 1023) & ~1023ull);
  const int bi = blockIdx.z;
  const unsigned short* a_ptr = (const unsigned short*){a_name} + {a_offset} + (long long)bi * {sab};
  const unsigned short* b_ptr = (const unsigned short*){b_name} + {b_offset} + (long long)bi * {sbb};
{render_tile_order(tiles_m, tiles_n)}  const int m0 = tm * {BM}, n0 = tn * {BN};
  const int wg = threadIdx.x >> 7, lane = threadIdx.x & 31, warp = (threadIdx.x >> 5) & 3;
  float d[{BN // 2}];
  #pragma unroll
  for (int i = 0; i < {BN // 2}; i++) d[i] = 0.0f;
  #pragma unroll
  for (int s = 0; s < {STAGES - 1}; s++) {{
    if (s < {k_tiles}) {{ const int st = s, k0 = s * {BK};
{load}
    }}
    tg_cp_commit();
  }}
  for (int kt = 0; kt < {k_tiles}; kt++) {{
    tg_cp_wait<{STAGES - 2}>();
    asm volatile("fence.proxy.async.shared::cta;\\n" ::: "memory");   /* cp.async writes, seen by the async proxy */
    __syncthreads();
{refill if not overlap else ""}
    unsigned char* stage = smem + (kt % {STAGES}) * {STAGE_BYTES};
    asm volatile("wgmma.fence.sync.aligned;\\n" ::: "memory");
    #pragma unroll
    for (int kk = 0; kk < {BK // 16}; kk++)
      tg_wgmma(d, tg_desc(stage + wg * 8192 + kk * 32, 16, 1024), {b_desc}, kt > 0 || kk > 0);
    asm volatile("wgmma.commit_group.sync.aligned;\\n" ::: "memory");
    asm volatile("wgmma.wait_group.sync.aligned {1 if overlap else 0};\\n" ::: "memory");
{"    __syncthreads();   /* every warpgroup is done with slice kt-1: its stage can be refilled */" + chr(10) + refill if overlap else ""}
  }}
  asm volatile("wgmma.wait_group.sync.aligned 0;\\n" ::: "memory");
  tg_cp_wait<0>();
  #pragma unroll
  for (int j = 0; j < {BN // 8}; j++)
    #pragma unroll
    for (int q = 0; q < 4; q++) {{
      const int i = m0 + wg * 64 + warp * 16 + (lane >> 2) + (q >> 1) * 8;
      const int jj = n0 + j * 8 + (lane & 3) * 2 + (q & 1);
      long long ep_bi = bi, ep_i = i, ep_j = jj; float ep_acc = d[j * 4 + q];
      (void)ep_bi; (void)ep_i; (void)ep_j;
      {epilogue}
    }}
}}
"""
  return src, {"block": (THREADS, 1, 1), "grid": (tiles_m * tiles_n, 1, batch), "shared": STAGES * STAGE_BYTES + 1024}


__all__ = ["render_wgmma_gemm", "wgmma_applicable"]
