"""JIT replay overhead per kernel on the CPU, against eager teenygrad and torch eager in the same run.

  python bench/jit.py            # prints a table and writes bench/results/jit_cpu.txt

A chain of N small dependent elementwise kernels (each output realized, so each is its own launch) is run:
- eager: the function as written (graph building, scheduling, kernel-cache lookups, launches);
- replay: the JIT's replay of the captured launches;
- floor: the same compiled programs called directly from a Python loop (ctypes call + the kernel itself);
- torch: `x = x * a + b` N times in torch eager (one op dispatch each, on the same sizes).
Overhead per kernel = (time per call - floor) / N. Medians over repeats; the machine is shared, so quote ratios.
"""
from __future__ import annotations

import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from timing import median_time as _median_time, report  # noqa: E402


def median_time(fn, repeats: int = 15) -> float: return _median_time(fn, repeats)


import teenygrad as tg  # noqa: E402
import teenygrad.helpers  # noqa: E402,F401

try:
  import torch
except ImportError:
  torch = None

KERNELS = 64


def chain(x: tg.Tensor) -> tg.Tensor:
  for _ in range(KERNELS): x = (x * 0.5 + 1.0).realize()
  return x


def measure(n: int) -> dict[str, float]:
  x = tg.Tensor(np.random.randn(n).astype(np.float32)).realize()
  jitted = tg.jit(chain)
  for _ in range(3): jitted(x)
  assert jitted.kernel_count == KERNELS, jitted.kernel_count
  np.testing.assert_allclose(jitted(x).numpy(), chain(x).numpy(), rtol=1e-5)
  launches = [(launch.item.kernel.program, [jitted.capture.table[s] for s in launch.slots]) for launch in jitted.capture.launches]
  raws = [(program, [b.raw for b in buffers]) for program, buffers in launches]

  def floor():
    for program, bufs in raws: program(*bufs)
  out = {"eager": median_time(lambda: chain(x)), "replay": median_time(lambda: jitted(x)), "floor": median_time(floor)}
  if torch is not None:
    tx = torch.tensor(x.numpy())

    def torch_chain():
      y = tx
      for _ in range(KERNELS): y = y * 0.5 + 1.0   # two ops: eager torch does not fuse them
    out["torch"] = median_time(torch_chain)
  return out


def main() -> None:
  lines = [f"JIT replay overhead, {KERNELS} dependent elementwise kernels per call, {tg.helpers.config.threads} kernel threads on "
           f"{os.cpu_count()} cores (shared machine, load average "
           f"{os.getloadavg()[0]:.1f}), "
           f"time per kernel in microseconds (lower is better)",
           f"{'elements':>9s} {'eager':>9s} {'replay':>9s} {'floor':>9s} {'torch':>9s}   {'replay overhead':>15s} {'eager overhead':>14s}  "
           f"replay/torch"]
  for n in (16, 4096, 1 << 16):
    r = {k: v / KERNELS * 1e6 for k, v in measure(n).items()}
    torch_us = r.get("torch", float("nan"))
    lines.append(f"{n:9d} {r['eager']:9.2f} {r['replay']:9.2f} {r['floor']:9.2f} {torch_us:9.2f}   {r['replay'] - r['floor']:15.2f} "
                 f"{r['eager'] - r['floor']:14.2f}  {r['replay'] / torch_us:12.2f}")
  lines.append("floor: the compiled kernels called from a Python loop; torch: y * 0.5 + 1.0 (two eager ops) per kernel")
  report(lines, "jit_cpu.txt")


if __name__ == "__main__":
  main()
