"""Core op benchmarks on the CPU: achieved rate, the ceiling, and the ratio to numpy and torch in the same run.

  python bench/ops.py            # prints a table and writes bench/results/ops_cpu.txt
Medians over repeated runs; the machine is shared, so quote ratios."""
from __future__ import annotations

import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from timing import median_time, median_times, report  # noqa: E402
import teenygrad as tg  # noqa: E402

try:
  import torch
  torch.set_num_threads(os.cpu_count() or 1)
except ImportError:
  torch = None


def copy_bandwidth(n: int = 1 << 24) -> float:
  a = np.ones(n, dtype=np.float32); b = np.empty_like(a)
  return 2 * a.nbytes / median_time(lambda: np.copyto(b, a))


FMA_PEAK_SRC = r"""
#include <omp.h>
/* the widest vector the machine has: 16 floats with AVX-512, else 8 (AVX2) */
#ifdef __AVX512F__
#define LANES 16
#else
#define LANES 8
#endif
typedef float v16 __attribute__((vector_size(LANES * 4)));
int fma_lanes(void) { return LANES; }
#define CHAINS(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7) X(8) X(9) X(10) X(11)
/* 12 independent multiply-add chains per thread keep every FMA unit busy: the machine's fp32 peak */
double fma_peak(long iters, int threads) {
  double start = omp_get_wtime();
  #pragma omp parallel num_threads(threads)
  {
    v16 m = {0}, x = {0};
    for (int i = 0; i < LANES; i++) { m[i] = 0.999999f; x[i] = 1e-7f * (float)i; }
    #define INIT(c) v16 a##c = x + (float)c;
    CHAINS(INIT)
    for (long i = 0; i < iters; i++) {
      #define STEP(c) a##c = a##c * m + x;
      CHAINS(STEP)
      __asm__ volatile("" : "+v"(a0), "+v"(a1), "+v"(a2), "+v"(a3), "+v"(a4), "+v"(a5), "+v"(a6), "+v"(a7), "+v"(a8), "+v"(a9), "+v"(a10), "+v"(a11));
    }
    #define SUM(c) + a##c[0]
    if ((0 CHAINS(SUM)) == 12345.f) __builtin_trap();   /* keeps the work alive */
  }
  return omp_get_wtime() - start;
}
"""


def fma_peak_gflops(threads: int) -> float:
  """fp32 GFLOP/s of back-to-back vector FMAs on every core, compiled with the CPU backend's own compiler and flags."""
  import ctypes
  from teenygrad.device.cpu import CPUProgram, ClangCompiler
  compiler = ClangCompiler()
  compiler.flags = tuple(f for f in compiler.flags if f != "-ffp-contract=off") + ("-ffp-contract=fast",)   # a*m+x is one FMA
  binary = compiler.compile(FMA_PEAK_SRC)
  program = CPUProgram("fma_peak", binary)
  program.fn.restype, program.fn.argtypes = ctypes.c_double, [ctypes.c_long, ctypes.c_int]
  lanes_fn = CPUProgram("fma_lanes", binary).fn
  lanes_fn.restype = ctypes.c_int
  lanes = lanes_fn()
  iters = 20_000_000
  seconds = min(program.fn(iters, threads) for _ in range(5))
  return iters * 12 * lanes * 2 * threads / seconds / 1e9


def row(name, unit, ours, peers, ceiling):
  best = max(peers.values()) if peers else float("nan")
  peer_txt = "  ".join(f"{k} {v:8.1f}" for k, v in peers.items())
  return f"{name:28s} {unit:7s} teenygrad {ours:8.1f}  {peer_txt}  ceiling {ceiling:8.1f}  ratio-to-best {ours / best:5.2f}"


def main() -> None:
  rng = np.random.default_rng(0)
  lines = [f"machine: {os.cpu_count()} cores; copy bandwidth {copy_bandwidth() / 1e9:.1f} GB/s (numpy copy)"]
  copy_gbs = copy_bandwidth() / 1e9
  peak = fma_peak_gflops(os.cpu_count() or 1)
  lines.append(f"fp32 FMA peak {peak:.0f} GFLOP/s (measured, {os.cpu_count()} threads)")
  for n in (512, 1024, 2048, 4096):
    a, b = rng.standard_normal((n, n), dtype=np.float32), rng.standard_normal((n, n), dtype=np.float32)
    ta, tb = tg.Tensor(a), tg.Tensor(b)
    flops = 2 * n ** 3
    # small products take a few ms: more samples, so the median is not one noisy neighbour's time slice; the three
    # take turns over three rounds (median_times), so a busy spell on the shared machine falls on all of them
    repeats, rounds = (33, 3) if n <= 512 else (9, 3) if n < 4096 else (3, 1)
    fns = {"teenygrad": lambda: (ta @ tb).realize(), "numpy": lambda: a @ b}
    if torch is not None:
      xa, xb = torch.from_numpy(a), torch.from_numpy(b)
      fns["torch"] = lambda: xa @ xb
    seconds = median_times(fns, repeats, rounds)
    ours = flops / seconds.pop("teenygrad") / 1e9
    peers = {name: flops / s / 1e9 for name, s in seconds.items()}
    lines.append(row(f"gemm fp32 {n}", "GFLOP/s", ours, peers, peak))
  n = 1 << 24
  x, y, z = (rng.standard_normal(n, dtype=np.float32) for _ in range(3))
  tx, ty, tz = tg.Tensor(x), tg.Tensor(y), tg.Tensor(z)
  nbytes = 4 * n * 4
  ours = nbytes / median_time(lambda: (tx * ty + tz).relu().realize()) / 1e9
  peers = {"numpy": nbytes / median_time(lambda: np.maximum(x * y + z, 0)) / 1e9}
  if torch is not None:
    px, py, pz = map(torch.from_numpy, (x, y, z))
    peers["torch"] = nbytes / median_time(lambda: (px * py + pz).relu()) / 1e9
  lines.append(row("fused (x*y+z).relu()", "GB/s", ours, peers, copy_gbs))
  m = rng.standard_normal((4096, 1024), dtype=np.float32)
  tm = tg.Tensor(m)
  nbytes = 2 * m.nbytes
  for name, ours_fn, torch_fn in (("softmax 4096x1024", lambda: tm.softmax(-1).realize(), lambda pm: pm.softmax(-1)),
                                  ("layernorm 4096x1024", lambda: tm.layer_norm(1024).realize(),
                                   lambda pm: torch.nn.functional.layer_norm(pm, (1024,)))):
    ours = nbytes / median_time(ours_fn) / 1e9
    peers = {}
    if torch is not None:
      pm = torch.from_numpy(m)
      peers["torch"] = nbytes / median_time(lambda: torch_fn(pm)) / 1e9
    lines.append(row(name, "GB/s", ours, peers, copy_gbs))
  # conv2d forward + backward (an MNIST-sized layer)
  xs, ws = rng.standard_normal((64, 32, 28, 28), dtype=np.float32), rng.standard_normal((64, 32, 3, 3), dtype=np.float32)
  def ours_conv():
    tx, tw = tg.Tensor(xs, requires_grad=True), tg.Tensor(ws, requires_grad=True)
    tx.conv2d(tw, padding=1).relu().sum().backward()   # relu: the forward values are needed, as in training
    tw.grad.realize(); tx.grad.realize()
  flops = 3 * 2 * 64 * 64 * 32 * 9 * 28 * 28
  ours = flops / median_time(ours_conv, 7) / 1e9
  peers = {}
  if torch is not None:
    def torch_conv():
      px, pw = torch.from_numpy(xs).requires_grad_(), torch.from_numpy(ws).requires_grad_()
      torch.nn.functional.conv2d(px, pw, padding=1).relu().sum().backward()
    peers["torch"] = flops / median_time(torch_conv, 7) / 1e9
  lines.append(row("conv2d 3x3 fwd+bwd", "GFLOP/s", ours, peers, peak))
  start = time.perf_counter()
  import subprocess
  out = subprocess.run([sys.executable, "-c", "import time; s=time.perf_counter(); import teenygrad; print(time.perf_counter()-s)"],
                       capture_output=True, text=True, cwd=os.path.join(os.path.dirname(__file__), ".."))
  lines.append(f"import teenygrad: {float(out.stdout.strip()) * 1000:.0f} ms")
  del start
  report(lines, "ops_cpu.txt")


if __name__ == "__main__":
  main()
