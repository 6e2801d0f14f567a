"""Time the generated CPU gemm against numpy's `a @ b` (OpenBLAS) on square and training-step shapes.

    python bench/gemm_standalone.py              # every shape, both threads
    python bench/gemm_standalone.py --only 1024  # shapes whose name contains "1024"

Prints the median of several runs in GFLOP/s for each and the ratio ours / numpy. The machine may be shared, so
runs alternate between the two implementations and the median is reported.
"""
from __future__ import annotations

import argparse
import ctypes
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from teenygrad.codegen.gemm import GEMM_PREAMBLE, GemmSpec, render_gemm_body  # noqa: E402

# (name, batch, M, N, K, a_transposed, b_transposed)
SHAPES = [
  ("square 512", 1, 512, 512, 512, False, False),
  ("square 1024", 1, 1024, 1024, 1024, False, False),
  ("square 2048", 1, 2048, 2048, 2048, False, False),
  ("square 4096", 1, 4096, 4096, 4096, False, False),
  ("mlp fwd 128x784 @ 784x512", 1, 128, 512, 784, False, False),
  ("mlp fwd 128x512 @ 512x10", 1, 128, 10, 512, False, False),
  ("mlp dW  (128x784)^T @ 128x512", 1, 784, 512, 128, True, False),
  ("mlp dx  128x512 @ (784x512)^T", 1, 128, 784, 512, False, True),
  ("conv im2col 25088x288 @ 288x64", 1, 25088, 64, 288, False, False),
  ("conv dW (25088x288)^T @ 25088x64", 1, 288, 64, 25088, True, False),
  ("conv dx 25088x64 @ (288x64)^T", 1, 25088, 288, 64, False, True),
  ("batched 8x 256x64 @ 64x256", 8, 256, 256, 64, False, False),
]


def build(shapes: list[tuple], threads: int, tmp: str) -> ctypes.CDLL:
  functions = []
  for index, (_, batch, M, N, K, a_t, b_t) in enumerate(shapes):
    a_strides = (M * K, 1, M) if a_t else (M * K, K, 1)  # a transposed operand is stored (K, M)
    b_strides = (K * N, 1, K) if b_t else (K * N, N, 1)
    spec = GemmSpec(batch, M, N, K, a_strides, b_strides)
    def store(acc: str, bi: str, i: str, j: str, M: int = M, N: int = N) -> str:
      return f"out[{bi} * {M * N} + {i} * {N} + {j}] = {acc};"
    body = render_gemm_body(spec, "a", "b", store, threads)
    functions.append(f"void gemm_{index}(float* restrict out, const float* restrict a, const float* restrict b) {{\n"
                     f"{body}}}\n")
  src, lib = os.path.join(tmp, "gemm.c"), os.path.join(tmp, "gemm.so")
  with open(src, "w") as f: f.write(GEMM_PREAMBLE + "\n".join(functions))
  flags = ["-O3", "-march=native", "-fopenmp", "-shared", "-fPIC", "-std=gnu11"]
  subprocess.run(["gcc", *flags, src, "-o", lib], check=True)
  return ctypes.CDLL(lib)


def median_seconds(fn, min_runs: int = 5, budget_s: float = 1.5) -> float:
  fn()
  times: list[float] = []
  start = time.perf_counter()
  while len(times) < min_runs or (time.perf_counter() - start < budget_s and len(times) < 200):
    t0 = time.perf_counter()
    fn()
    times.append(time.perf_counter() - t0)
  return float(np.median(times))


def main() -> None:
  parser = argparse.ArgumentParser()
  parser.add_argument("--only", default="")
  parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
  parser.add_argument("--rounds", type=int, default=3, help="alternating rounds of ours/numpy; median over rounds")
  args = parser.parse_args()
  shapes = [s for s in SHAPES if args.only in s[0]]
  with tempfile.TemporaryDirectory() as tmp:
    lib = build(shapes, args.threads, tmp)
    print(f"{'shape':36s} {'ours GFLOP/s':>13s} {'numpy GFLOP/s':>14s} {'ratio':>6s}")
    for index, (name, batch, M, N, K, a_t, b_t) in enumerate(shapes):
      rng = np.random.default_rng(0)
      a_store = rng.standard_normal((batch, K, M) if a_t else (batch, M, K)).astype(np.float32)
      b_store = rng.standard_normal((batch, N, K) if b_t else (batch, K, N)).astype(np.float32)
      a = a_store.transpose(0, 2, 1) if a_t else a_store
      b = b_store.transpose(0, 2, 1) if b_t else b_store
      out = np.empty((batch, M, N), np.float32)
      fn = getattr(lib, f"gemm_{index}")
      args_c = [ctypes.c_void_p(x.ctypes.data) for x in (out, a_store, b_store)]
      ours = lambda: fn(*args_c)  # noqa: E731
      theirs = lambda: np.matmul(a, b)  # noqa: E731
      ours()
      np.testing.assert_allclose(out, np.matmul(a, b), atol=1e-3 * np.sqrt(K), rtol=1e-3)
      flops = 2.0 * batch * M * N * K
      budget = 0.5 if flops < 1e9 else 1.5
      rounds = [(median_seconds(ours, budget_s=budget), median_seconds(theirs, budget_s=budget))
                for _ in range(args.rounds)]
      t_ours, t_np = (float(np.median([r[side] for r in rounds])) for side in (0, 1))
      print(f"{name:36s} {flops / t_ours / 1e9:13.1f} {flops / t_np / 1e9:14.1f} {t_np / t_ours:6.2f}", flush=True)


if __name__ == "__main__":
  main()
