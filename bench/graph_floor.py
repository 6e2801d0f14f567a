"""The floor under a launch-bound decode step: what one kernel costs inside a replayed device graph when it does
next to nothing, with programmatic dependent launch (TEENYGRAD_PDL) on and off.

  DEV=CUDA python bench/graph_floor.py [--kernels 154]

A chain of N dependent elementwise kernels on a small vector (each output realized, so each is its own launch) is
captured by the JIT and replayed; time per replay / N is the per-node cost of the graph: the floor for a decode step
of N launches (SmolLM2's step is 154 launches). No peer runs this: it is a measurement of the driver and the GPU.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
import teenygrad as tg  # noqa: E402
from teenygrad.device import Device  # noqa: E402
from teenygrad.helpers import config  # noqa: E402


def per_kernel_us(kernels: int, elements: int, replays: int) -> float:
  def chain(x: tg.Tensor) -> tg.Tensor:
    for _ in range(kernels): x = (x * 0.5 + 1.0).realize()
    return x
  x = tg.Tensor(np.random.randn(elements).astype(np.float32)).realize()
  jitted = tg.jit(chain)
  for _ in range(3): jitted(x)
  assert jitted.kernel_count == kernels, jitted.kernel_count
  backend = Device[x.device]
  best = float("inf")
  for _ in range(5):
    backend.synchronize()
    start = time.perf_counter()
    for _ in range(replays): jitted(x)
    backend.synchronize()
    best = min(best, (time.perf_counter() - start) / replays)
  return best / kernels * 1e6


def main() -> None:
  parser = argparse.ArgumentParser()
  parser.add_argument("--kernels", type=int, default=154)
  parser.add_argument("--replays", type=int, default=50)
  args = parser.parse_args()
  print(f"device {os.environ.get('DEV', 'CPU')}: {args.kernels} dependent elementwise kernels per replay, best of 5 x "
        f"{args.replays} replays, microseconds per kernel")
  print(f"{'elements':>9s} {'PDL on':>8s} {'PDL off':>8s}")
  for elements in (576, 1 << 16):
    row = []
    for pdl in (True, False):
      config.grid_dependency = pdl
      row.append(per_kernel_us(args.kernels, elements, args.replays))
    print(f"{elements:9d} {row[0]:8.2f} {row[1]:8.2f}")


if __name__ == "__main__":
  main()
