"""Hopper GEMMs on warpgroup MMA (wgmma.mma_async, sm_90a): the default for fp16/bf16 matmuls on sm_90 where they fit.

Scope: fp16/bf16, A k-contiguous, B k-contiguous (`x @ w.T`, nn.Linear's layout) or n-contiguous (`a @ b`), M a
multiple of 128, N of the tile width, K of 64. 64-deep k slices of A and B sit in shared memory in the 128-byte
swizzled layouts wgmma reads through matrix descriptors. Swizzle atoms are 8 rows of 128 bytes (1024 bytes), the
16-byte chunk c of atom row r stored at chunk c ^ r:
- K-major (A; B of x @ w.T): a row is 64 k values of one i (or j); atoms of 8 rows stacked 1024 bytes apart (SBO);
  the k16 step moves the start address 32 bytes inside the row.
- MN-major (B of a @ b, tnspB = 1): a row is 64 j values of one k; 64-wide j blocks are 64 rows = 8192 bytes apart
  (LBO), 8-k groups 1024 bytes apart (SBO); the k16 step moves the start address 2048 bytes.

The default, `render_wgmma_tma_gemm` ("wgmma-tma": 128 x 256 tiles; "wgmma-tma128": 128 x 128), is warp-specialized:
one thread of a producer warpgroup loads each slice with TMA (the tensor maps' 128-byte swizzle writes exactly the
layouts above) into a ring of 4 stages, and two consumer warpgroups (m64n256 each, 232 registers a thread through
setmaxnreg) multiply; stages change hands through mbarriers. On an H200: 591-684 TFLOP/s at 4096-8192, 0.79-0.97x
cuBLAS (bench/results/gpu_h200.txt).

`render_wgmma_gemm` is the first version, kept as a measured reference: every thread issues cp.async and then
multiplies, so copies and wgmmas take turns (0.36-0.55x cuBLAS). In its plain configs each k slice waits for its
wgmmas (wait_group 0) before the ring moves on; the "+overlap" configs keep one slice's wgmmas in flight while the
threads issue the next slice's copies (issue slice kt, wait until slice kt-1's wgmmas are done, a barrier, the copies).
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


def _stage_load(spec, BN: int, mn_major: bool) -> str:
  """Statements issuing the cp.async copies of the k slice at k0 into stage `st` (A then B, in the swizzled layouts
  above), spread over the block's threads."""
  sai, sbk, sbj = spec.a_strides[1], spec.b_strides[1], spec.b_strides[2]
  if mn_major:   # B rows are k: BN/8 chunks of 8 j values each; each 64-wide j block is an atom column 8192 bytes on
    b_src = f"b_ptr + (long long)((k0) + kr) * {sbk} + n0 + cn * 8"
    b_dst = "stage + 16384 + (cn >> 3) * 8192 + kr * 128 + (((cn & 7) ^ (kr & 7)) << 4)"
    b_index = f"const int kr = (c - 1024) / {BN // 8}, cn = (c - 1024) % {BN // 8};"
  else:
    b_src = f"b_ptr + (long long)(n0 + row - {BM}) * {sbj} + (k0) + chunk * 8"
    b_dst = "stage + row * 128 + ((chunk ^ (row & 7)) << 4)"
    b_index = ""
  stage_bytes = (BM + BN) * BK * 2
  return f"""      {{
        unsigned char* stage = smem + (st) * {stage_bytes};
        #pragma unroll
        for (int q = 0; q < {(BM + BN) * BK // 8 // THREADS}; q++) {{
          const int c = threadIdx.x + q * {THREADS};   /* 16-byte chunk: the first 1024 fill A, the rest B */
          const int row = (c >> 3), chunk = c & 7;
          if (c < 1024) tg_cp16(stage + row * 128 + ((chunk ^ (row & 7)) << 4), a_ptr + (long long)(m0 + row) * {sai} + (k0) + chunk * 8);
          else {{ {b_index} tg_cp16({b_dst}, {b_src}); }}
        }}
      }}"""


def _epilogue(BN: int, warpgroup: str, epilogue: str) -> str:
  """The accumulator tile of one warpgroup (its 64 rows `warpgroup` * 64 on) through the fused epilogue, element by
  element in the m64nBN fragment order: d[j * 4 + q] is row lane / 4 (+8 for q >= 2) of the warp's 16, column
  j * 8 + (lane % 4) * 2 (+1 for odd q)."""
  return f"""  #pragma unroll
  for (int j = 0; j < {BN // 8}; j++)
    #pragma unroll
    for (int q = 0; q < 4; q++) {{
      const int i = m0 + ({warpgroup}) * 64 + warp * 16 + (lane >> 2) + (q >> 1) * 8;
      const int jj = n0 + j * 8 + (lane & 3) * 2 + (q & 1);
      long long ep_bi = bi, ep_i = i, ep_j = jj; float ep_acc = d[j * 4 + q];
      (void)ep_bi; (void)ep_i; (void)ep_j;
      {epilogue}
    }}
"""


def wgmma_applicable(spec, a_layout: str, b_layout: str, config: str = "wgmma") -> bool:
  BN = CONFIGS[config][0] if config in CONFIGS else TMA_CONFIGS[config]
  return a_layout == "MK" and b_layout in ("NK", "KN") and spec.M % BM == 0 and spec.N % BN == 0 and spec.K % BK == 0


def render_wgmma_gemm(name: str, params: str, spec, a_name: str, b_name: str, a_offset: int, b_offset: int, epilogue: str,
                      kind: str, b_layout: str, config: str = "wgmma") -> tuple[str, dict]:
  BN, overlap = CONFIGS[config]
  STAGE_BYTES = (BM + BN) * BK * 2
  M, N, K, batch = spec.M, spec.N, spec.K, spec.batch
  sab, sai, _ = spec.a_strides
  sbb, sbk, sbj = spec.b_strides
  mn_major = b_layout == "KN"
  tiles_m, tiles_n, k_tiles = M // BM, N // BN, K // BK
  load = _stage_load(spec, BN, mn_major)
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
{_epilogue(BN, "wg", epilogue)}}}
"""
  return src, {"block": (THREADS, 1, 1), "grid": (tiles_m * tiles_n, 1, batch), "shared": STAGES * STAGE_BYTES + 1024}


WS_THREADS = 384   # warpgroup 0 loads, warpgroups 1 and 2 multiply (64 rows of the 128-row tile each)
PRODUCER_REGS, CONSUMER_REGS = 40, 232   # setmaxnreg: the producers give their registers to the m64n256 accumulators

MBARRIER_PREAMBLE = r"""
__device__ __forceinline__ void tg_mbar_init(unsigned long long* bar, unsigned count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" :: "r"(tg_smem(bar)), "r"(count));
}
__device__ __forceinline__ void tg_mbar_arrive(unsigned long long* bar) {
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" :: "r"(tg_smem(bar)) : "memory");
}
__device__ __forceinline__ void tg_mbar_wait(unsigned long long* bar, unsigned parity) {
  asm volatile("{\n.reg .pred done;\nTG_WAIT:\n"
               "mbarrier.try_wait.parity.shared::cta.b64 done, [%0], %1;\n"
               "@!done bra TG_WAIT;\n}\n" :: "r"(tg_smem(bar)), "r"(parity) : "memory");
}
"""


# TMA configs: name -> BN (the consumers' m64nBNk16)
TMA_CONFIGS = {"wgmma-tma": 256, "wgmma-tma128": 128}

TMA_PREAMBLE = r"""
struct __align__(64) TgTensorMap { unsigned long long opaque[16]; };
/* one box of a 3-d tensor (x innermost) into shared memory, counted on the barrier's transaction bytes when it lands */
__device__ __forceinline__ void tg_tma_load(void* dst, const TgTensorMap* map, int x, int y, int z, unsigned long long* bar) {
  asm volatile("cp.async.bulk.tensor.3d.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3, %4}], [%5];\n"
               :: "r"(tg_smem(dst)), "l"((unsigned long long)map), "r"(x), "r"(y), "r"(z), "r"(tg_smem(bar)) : "memory");
}
__device__ __forceinline__ void tg_mbar_expect(unsigned long long* bar, unsigned bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" :: "r"(tg_smem(bar)), "r"(bytes) : "memory");
}
"""


def tma_maps(spec, a_index: int, b_index: int, a_offset: int, b_offset: int, BN: int, mn_major: bool) -> list:
  """The launch's TMA descriptors (buffer index, element offset, dims innermost first, byte strides, box): A as
  (k, i, batch) in 64 x 128 boxes; B as (k, j, batch) in 64 x BN boxes, or n-major as (j, k, batch) in 64 x 64."""
  sab, sai, _ = spec.a_strides
  sbb, sbk, sbj = spec.b_strides
  def batch_dim(stride: int, outer_bytes: int) -> tuple[int, int]:   # a broadcast batch reads batch 0 (z = 0)
    return (spec.batch, 2 * stride) if spec.batch > 1 and stride != 0 else (1, outer_bytes)
  a_batch, a_stride = batch_dim(sab, 2 * sai * spec.M)
  a_map = (a_index, a_offset, (spec.K, spec.M, a_batch), (2 * sai, a_stride), (BK, BM, 1))
  if mn_major:
    b_batch, b_stride = batch_dim(sbb, 2 * sbk * spec.K)
    b_map = (b_index, b_offset, (spec.N, spec.K, b_batch), (2 * sbk, b_stride), (64, BK, 1))
  else:
    b_batch, b_stride = batch_dim(sbb, 2 * sbj * spec.N)
    b_map = (b_index, b_offset, (spec.K, spec.N, b_batch), (2 * sbj, b_stride), (BK, BN, 1))
  return [a_map, b_map]


def render_wgmma_tma_gemm(name: str, params: str, spec, a_index: int, b_index: int, a_offset: int, b_offset: int, epilogue: str,
                          kind: str, b_layout: str, config: str = "wgmma-tma") -> tuple[str, dict]:
  """The TMA variant of the warp-specialized kernel: one producer thread loads each k slice as two (n-major B: five)
  TMA boxes, which land in the same swizzled layouts (the tensor maps' 128-byte swizzle is the XOR above) and count
  their bytes on the slice's full barrier (expect_tx); no thread waits for a copy, and no proxy fence is needed (TMA
  and wgmma both go through the async proxy). A consumer releases a stage as soon as its wgmmas are done: releasing it
  one slice later, with that slice's wgmmas left in flight, gave wrong sums (~3e-2 relative) in a run on an H200."""
  BN = TMA_CONFIGS[config]
  STAGE_BYTES = (BM + BN) * BK * 2
  stages = min(STAGES, (227 * 1024 - 2048) // STAGE_BYTES)
  M, N, K, batch = spec.M, spec.N, spec.K, spec.batch
  mn_major = b_layout == "KN"
  tiles_m, tiles_n, k_tiles = M // BM, N // BN, K // BK
  maps = tma_maps(spec, a_index, b_index, a_offset, b_offset, BN, mn_major)
  za = "bi" if maps[0][2][2] > 1 else "0"
  zb = "bi" if maps[1][2][2] > 1 else "0"
  if mn_major:
    b_loads = "".join(f"\n        tg_tma_load(stage + 16384 + {i * 8192}, &tma_b, n0 + {i * 64}, k0, {zb}, &full[st]);" for i in range(BN // 64))
  else:
    b_loads = f"\n        tg_tma_load(stage + 16384, &tma_b, k0, n0, {zb}, &full[st]);"
  b_desc = "tg_desc(stage + 16384 + kk * 2048, 8192, 1024)" if mn_major else "tg_desc(stage + 16384 + kk * 32, 16, 1024)"
  params = f"{params}, const __grid_constant__ TgTensorMap tma_a, const __grid_constant__ TgTensorMap tma_b"
  src = f"""{WGMMA_PREAMBLE}{MBARRIER_PREAMBLE}{TMA_PREAMBLE}{_wgmma_asm(kind, int(mn_major), BN)}
/* {batch}x{M}x{N}x{K} {kind} wgmma, TMA loads, warp-specialized: A MK, B {b_layout}, tile {BM}x{BN}x{BK}, {stages} stages */
extern "C" __global__ void __launch_bounds__({WS_THREADS}, 1) {name}({params}) {{
  extern __shared__ __align__(1024) unsigned char tg_smem_raw[];
  unsigned char* smem = (unsigned char*)(((unsigned long long)tg_smem_raw + 1023) & ~1023ull);
  unsigned long long* full = (unsigned long long*)(smem + {stages * STAGE_BYTES});
  unsigned long long* empty = full + {stages};
  const int bi = blockIdx.z;
{render_tile_order(tiles_m, tiles_n)}  const int m0 = tm * {BM}, n0 = tn * {BN};
  const int wg = threadIdx.x >> 7, lane = threadIdx.x & 31, warp = (threadIdx.x >> 5) & 3;
  if (threadIdx.x == 0) {{
    for (int s = 0; s < {stages}; s++) {{ tg_mbar_init(&full[s], 1); tg_mbar_init(&empty[s], 256); }}
    asm volatile("fence.mbarrier_init.release.cluster;\\n" ::: "memory");
  }}
  __syncthreads();
  if (wg == 0) {{
    asm volatile("setmaxnreg.dec.sync.aligned.u32 {PRODUCER_REGS};\\n");
    if (threadIdx.x == 0) {{
      for (int kt = 0; kt < {k_tiles}; kt++) {{
        const int st = kt % {stages}, k0 = kt * {BK};
        if (kt >= {stages}) tg_mbar_wait(&empty[st], ((kt / {stages}) + 1) & 1);   /* the consumers are done with its last use */
        unsigned char* stage = smem + st * {STAGE_BYTES};
        tg_mbar_expect(&full[st], {STAGE_BYTES});
        tg_tma_load(stage, &tma_a, k0, m0, {za}, &full[st]);{b_loads}
      }}
    }}
  }} else {{
    asm volatile("setmaxnreg.inc.sync.aligned.u32 {CONSUMER_REGS};\\n");
    const int cw = wg - 1;
    float d[{BN // 2}];
    #pragma unroll
    for (int i = 0; i < {BN // 2}; i++) d[i] = 0.0f;
    for (int kt = 0; kt < {k_tiles}; kt++) {{
      const int st = kt % {stages};
      tg_mbar_wait(&full[st], (kt / {stages}) & 1);
      unsigned char* stage = smem + st * {STAGE_BYTES};
      asm volatile("wgmma.fence.sync.aligned;\\n" ::: "memory");
      #pragma unroll
      for (int kk = 0; kk < {BK // 16}; kk++)
        tg_wgmma(d, tg_desc(stage + cw * 8192 + kk * 32, 16, 1024), {b_desc}, kt > 0 || kk > 0);
      asm volatile("wgmma.commit_group.sync.aligned;\\n" ::: "memory");
      asm volatile("wgmma.wait_group.sync.aligned 0;\\n" ::: "memory");
      tg_mbar_arrive(&empty[st]);   /* its wgmmas have read the stage */
    }}
    asm volatile("wgmma.wait_group.sync.aligned 0;\\n" ::: "memory");
{_epilogue(BN, "cw", epilogue)}  }}
}}
"""
  launch = {"block": (WS_THREADS, 1, 1), "grid": (tiles_m * tiles_n, 1, batch), "shared": stages * STAGE_BYTES + 1024 + 16 * stages,
            "tensor_maps": maps}
  return src, launch


__all__ = ["render_wgmma_gemm", "render_wgmma_tma_gemm", "wgmma_applicable"]
