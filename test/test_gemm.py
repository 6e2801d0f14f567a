"""The CPU gemm generator (teenygrad/codegen/gemm.py) against numpy: shapes, edge tiles, strides, batches, epilogues.

Every case is rendered into its own C function; all of them go into one shared library, compiled once by gcc, so
the whole file runs in seconds.
"""
from __future__ import annotations

import ctypes
import math
import mmap
import os
import shutil
import subprocess
import tempfile
import zlib
from dataclasses import dataclass
from collections.abc import Callable

import numpy as np
import pytest

from teenygrad.codegen.gemm import (GEMM_PREAMBLE, PARALLEL_MIN_FMAS, SMALL_MAX_FMAS, TILES, GemmSpec,
                                    render_gemm_body)

pytestmark = pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc")

CFLAGS = ["-O3", "-march=native", "-fopenmp", "-shared", "-fPIC", "-std=gnu11", "-Wall", "-Wextra", "-Werror",
          "-Wno-unused-parameter"]


@dataclass(frozen=True)
class Case:
  """A (batch, M, K) @ (batch, K, N) product; `a_view` / `b_view` turn a contiguous array into the operand's view."""
  name: str
  batch: int
  M: int
  N: int
  K: int
  a_view: str = "contiguous"  # contiguous | transposed | strided | broadcast_batch | broadcast_rows | flipped
  b_view: str = "contiguous"
  ctype: str = "float"
  epilogue: str = "plain"     # plain | bias_relu
  threads: int = 2


def _view(kind: str, batch: int, rows: int, cols: int, dtype: np.dtype, rng: np.random.Generator) -> np.ndarray:
  """A (batch, rows, cols) view of random data with the memory layout `kind`, its storage ending at a guard page."""
  def rand(*shape: int) -> np.ndarray: return _guarded(rng.standard_normal(shape).astype(dtype))
  if kind == "contiguous": return rand(batch, rows, cols)
  if kind == "transposed": return rand(batch, cols, rows).transpose(0, 2, 1)
  if kind == "strided": return rand(batch, 2 * rows + 1, 3 * cols)[:, 1::2, ::3]
  if kind == "broadcast_batch": return np.broadcast_to(rand(1, rows, cols), (batch, rows, cols))
  if kind == "broadcast_rows": return np.broadcast_to(rand(batch, 1, cols), (batch, rows, cols))
  if kind == "flipped": return rand(batch, rows, cols)[:, ::-1, ::-1]
  raise ValueError(kind)


PAGE = mmap.PAGESIZE
_guard_pages: list[mmap.mmap] = []  # kept alive for the whole session


def _guarded(arr: np.ndarray) -> np.ndarray:
  """A copy of `arr` placed so that its last byte is followed by an inaccessible page: reading past the end of
  an operand (a padding row or column packed from memory instead of zeros) crashes instead of passing unnoticed."""
  data_pages = -(-arr.nbytes // PAGE)
  region = mmap.mmap(-1, (data_pages + 1) * PAGE)
  _guard_pages.append(region)
  address = ctypes.addressof(ctypes.c_char.from_buffer(region))
  libc = ctypes.CDLL(None, use_errno=True)
  libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
  assert libc.mprotect(address + data_pages * PAGE, PAGE, 0) == 0  # PROT_NONE
  offset = data_pages * PAGE - arr.nbytes
  copy = np.frombuffer(region, dtype=arr.dtype, count=arr.size, offset=offset).reshape(arr.shape)
  copy[...] = arr
  return copy


# sizes around multiples of every microkernel's tile (12x32 and 6x16) hit the edge tiles of each
MR, NR = math.lcm(*(t.mr for t in TILES)), math.lcm(*(t.nr for t in TILES))

CASES = [
  Case("1x1x1", 1, 1, 1, 1),
  Case("k1", 1, 37, 45, 1),
  Case("primes", 1, 7, 13, 29),
  Case("primes_t", 1, 7, 13, 29, a_view="transposed", b_view="transposed"),
  Case("65x33x17", 1, 65, 17, 33),
  Case("edge_tiles", 1, MR * 5 + 1, NR * 3 + 1, 67),
  Case("exact_tiles", 1, MR * 4, NR * 2, 64),
  Case("one_row", 1, 1, 300, 200),
  Case("one_col", 1, 300, 1, 200),
  Case("n10", 1, 128, 10, 512),
  Case("mlp", 1, 128, 512, 784),
  Case("mlp_dw", 1, 784, 512, 128, a_view="transposed"),
  Case("mlp_dx", 1, 128, 784, 512, b_view="transposed"),
  Case("im2col", 1, 2000, 64, 288),
  Case("deep_k", 1, 50, 70, 1500),
  Case("big_edges", 1, 301, 517, 403),
  Case("batch3", 3, 40, 50, 60),
  Case("batch_bcast_b", 4, 33, 65, 70, b_view="broadcast_batch"),
  Case("batch_bcast_a", 4, 33, 65, 70, a_view="broadcast_batch"),
  Case("bcast_rows", 2, 30, 40, 50, a_view="broadcast_rows"),
  Case("strided", 2, 45, 70, 90, a_view="strided", b_view="strided"),
  Case("flipped", 1, 60, 70, 80, a_view="flipped", b_view="flipped"),
  Case("small_strided", 2, 5, 6, 7, a_view="strided", b_view="transposed"),
  # split-K: a tiny output over a huge K (conv weight gradients), operands contiguous in k as im2col leaves them
  Case("split_k", 1, 32, 9, 86528, a_view="contiguous", b_view="transposed"),
  Case("split_k_edges", 2, 13, 45, 9001, a_view="strided", b_view="broadcast_batch"),
  Case("split_k_one_thread", 1, 70, 20, 8200, threads=1),
  Case("one_thread", 1, 200, 200, 200, threads=1),
  Case("many_threads", 2, 100, 300, 100, threads=5),
  Case("bias_relu", 1, 130, 70, 90, epilogue="bias_relu"),
  Case("bias_relu_swapped", 1, 200, 9, 90, epilogue="bias_relu"),
  Case("double", 2, 37, 41, 43, ctype="double", a_view="transposed"),
  Case("double_big", 1, 100, 90, 110, ctype="double", b_view="strided"),
]


def _store(case: Case) -> Callable[[str, str, str, str], str]:
  def store(acc: str, bi: str, i: str, j: str) -> str:
    out = f"out[{bi} * {case.M * case.N} + {i} * {case.N} + {j}]"
    if case.epilogue == "bias_relu":
      return f"{out} = ({acc} + bias[{j}]) > 0 ? ({acc} + bias[{j}]) : 0;"
    return f"{out} = {acc};"
  return store


def _elem_strides(arr: np.ndarray) -> tuple[int, int, int]:
  return tuple(s // arr.itemsize for s in arr.strides)  # type: ignore[return-value]


def _operands(case: Case) -> tuple[np.ndarray, np.ndarray]:
  rng = np.random.default_rng(zlib.crc32(case.name.encode()))
  dtype = np.dtype(np.float32 if case.ctype == "float" else np.float64)
  return (_view(case.a_view, case.batch, case.M, case.K, dtype, rng),
          _view(case.b_view, case.batch, case.K, case.N, dtype, rng))


# each microkernel (AVX-512 12x32, AVX2 6x16, the portable fallback), whatever the machine: one this CPU cannot run
# is still compiled (so a change that breaks it fails here), and its cases are skipped
ISA_FLAGS = {"avx512": ["-mavx512f"], "avx2": ["-mno-avx512f", "-mavx2", "-mfma"],
             "portable": ["-mno-avx512f", "-mno-avx2", "-mno-fma"]}
ISA_CPU_FLAGS = {"avx512": {"avx512f"}, "avx2": {"avx2", "fma"}, "portable": set()}


def _cpu_flags() -> set[str]:
  try:
    with open("/proc/cpuinfo") as f:
      return {flag for line in f if line.startswith("flags") for flag in line.split(":", 1)[1].split()}
  except OSError: return set()


@pytest.fixture(scope="module", params=list(ISA_FLAGS))
def library(request):
  """Every case compiled into one shared library: `gemm_<index>(out, a, b, bias)`."""
  functions = []
  for index, case in enumerate(CASES):
    a, b = _operands(case)
    spec = GemmSpec(case.batch, case.M, case.N, case.K, _elem_strides(a), _elem_strides(b), case.ctype)
    body = render_gemm_body(spec, "a", "b", _store(case), case.threads)
    t = case.ctype
    functions.append(f"void gemm_{index}({t}* restrict out, const {t}* restrict a, const {t}* restrict b, "
                     f"const {t}* restrict bias) {body}\n")
  source = GEMM_PREAMBLE + "\n".join(functions)
  with tempfile.TemporaryDirectory() as tmp:
    src, lib = os.path.join(tmp, "gemm.c"), os.path.join(tmp, "gemm.so")
    with open(src, "w") as f: f.write(source)
    subprocess.run(["gcc", *CFLAGS, *ISA_FLAGS[request.param], src, "-o", lib], check=True)
    if not ISA_CPU_FLAGS[request.param] <= _cpu_flags(): pytest.skip(f"compiled; this CPU cannot run {request.param}")
    yield ctypes.CDLL(lib)


@pytest.mark.parametrize("index", range(len(CASES)), ids=[case.name for case in CASES])
def test_gemm_matches_numpy(library, index: int):
  case = CASES[index]
  a, b = _operands(case)
  dtype = a.dtype
  bias = np.random.default_rng(1).standard_normal(case.N).astype(dtype)
  out = np.full((case.batch, case.M, case.N), np.nan, dtype=dtype)
  pointer = lambda arr: ctypes.c_void_p(arr.ctypes.data)  # noqa: E731 -- the address of element (0, 0, 0)
  getattr(library, f"gemm_{index}")(pointer(out), pointer(a), pointer(b), pointer(bias))
  expected = np.matmul(a.astype(np.float64), b.astype(np.float64))
  if case.epilogue == "bias_relu": expected = np.maximum(expected + bias, 0)
  # float32 sums of K products of unit normals: error grows like sqrt(K) * eps * |terms|
  atol, rtol = (1e-5 * np.sqrt(case.K) * 4, 1e-5) if case.ctype == "float" else (1e-12 * case.K, 1e-12)
  np.testing.assert_allclose(out, expected, atol=atol, rtol=rtol)


def _render_square(n: int, threads: int) -> str:
  return render_gemm_body(GemmSpec(1, n, n, n, (0, n, 1), (0, n, 1)), "a", "b",
                          lambda acc, bi, i, j: f"o[{i}*{n}+{j}] = {acc};", threads)


def test_paths_and_thread_threshold():
  """The loop nest below SMALL_MAX_FMAS, the packed kernel above it, threads only from PARALLEL_MIN_FMAS on."""
  small = round(SMALL_MAX_FMAS ** (1 / 3))
  assert "tg_gemm_micro_f32" not in _render_square(small, 2)
  below_threshold = int((PARALLEL_MIN_FMAS - 1) ** (1 / 3))
  packed = _render_square(below_threshold, 2)
  assert "tg_gemm_micro_f32" in packed and "#pragma omp" not in packed
  assert "#pragma omp parallel num_threads(2)" in _render_square(512, 2)
  assert "#pragma omp" not in _render_square(512, 1)
  assert "tg_" not in render_gemm_body(GemmSpec(1, 0, 5, 5, (0, 5, 1), (0, 5, 1)), "a", "b", lambda *_: "x;", 2)


def test_tiny_output_deep_k_splits_k():
  """32x9 over K = 86528 is one or two blocks: parallel over slices of K instead; a large output is not split."""
  def body(M: int, N: int, K: int) -> str:
    return render_gemm_body(GemmSpec(1, M, N, K, (0, K, 1), (0, 1, K)), "a", "b", lambda *_: "x;", 2)
  assert "split-K" in body(32, 9, 86528)
  assert "split-K" not in body(512, 512, 86528) and "split-K" not in body(32, 9, 2000)


def test_one_row_block_packs_b_in_its_tasks():
  """M=8 against a 4096x4096 B: each B panel is read by one task, which packs it (no 64 MiB packed copy of B);
  conv's forward 64x50176x288 stays direct for it despite 11% more padding."""
  def body(M: int, N: int, K: int) -> str:
    return render_gemm_body(GemmSpec(1, M, N, K, (0, K, 1), (0, N, 1)), "a", "b", lambda *_: "x;", 2)
  assert "B packed per task" in body(8, 4096, 4096) and "B packed per task" not in body(512, 512, 512)
  assert "transposed" not in body(64, 50176, 288)


def test_small_n_is_computed_transposed():
  """N=10 would pad every tile to 32 columns; C^T = B^T A^T pads 10 rows to 12 instead."""
  body = render_gemm_body(GemmSpec(1, 128, 10, 512, (0, 512, 1), (0, 10, 1)), "a", "b",
                          lambda acc, bi, i, j: f"o[{i}*10+{j}] = {acc};", 2)
  assert "computed transposed" in body


@pytest.mark.parametrize("isa", ["sse", "scalar"])
def test_pack_rows_transposes(isa: str):
  """tg_gemm_pack_rows_f32 (operands contiguous in k, 4x4 SSE transposes, or scalar without SSE) against numpy for
  every tile's panel widths (MR and NR of both microkernels, so the AVX-512 shapes run on any machine), edge
  groups of 1-3 rows, k not a multiple of 4, and rows 4 KiB apart; it must write only its n x kc entries."""
  cases = [(kc, n, ld) for tile in TILES for ld in (tile.mr, tile.nr) for n in sorted({ld, ld - 1, ld - 2, ld - 3, 1})
           if n > 0 for kc in (1, 3, 4, 7, 64, 384)]
  stride = 1024 + 3   # rows longer than kc, not aligned; and 1024 (all rows in one L1 set) below
  calls = "\n".join(f"  tg_gemm_pack_rows_f32(dst + {i * 32 * 384}, src, {kc}, {n}, {ld}, {s});"
                    for i, ((kc, n, ld), s) in enumerate((case, s) for case in cases for s in (stride, 1024)))
  source = GEMM_PREAMBLE + f"void pack_all(float* restrict dst, const float* restrict src) {{\n{calls}\n}}\n"
  flags = ["-mno-sse2", "-mno-avx", "-mno-avx2", "-mno-fma", "-mno-avx512f"] if isa == "scalar" else ["-mno-avx512f", "-mavx2", "-mfma"]
  with tempfile.TemporaryDirectory() as tmp:
    src, lib = os.path.join(tmp, "pack.c"), os.path.join(tmp, "pack.so")
    with open(src, "w") as f: f.write(source)
    result = subprocess.run(["gcc", *CFLAGS, *flags, src, "-o", lib], capture_output=True, text=True)
    if isa == "scalar" and result.returncode != 0: pytest.skip(f"no non-SSE build here: {result.stderr[:200]}")
    assert result.returncode == 0, result.stderr
    library = ctypes.CDLL(lib)
  rows = np.random.default_rng(0).standard_normal(32 * stride).astype(np.float32)
  pairs = [(case, s) for case in cases for s in (stride, 1024)]
  dst = np.full(len(pairs) * 32 * 384, np.nan, dtype=np.float32)
  library.pack_all(ctypes.c_void_p(dst.ctypes.data), ctypes.c_void_p(rows.ctypes.data))
  for i, ((kc, n, ld), s) in enumerate(pairs):
    got = dst[i * 32 * 384:(i + 1) * 32 * 384]
    expected = np.full(32 * 384, np.nan, dtype=np.float32)
    source_rows = np.lib.stride_tricks.as_strided(rows, (n, kc), (4 * s, 4))       # (c, k)
    expected[:kc * ld].reshape(kc, ld)[:, :n] = source_rows.T
    np.testing.assert_array_equal(got, expected, err_msg=f"kc={kc} n={n} ld={ld} stride={s}")
