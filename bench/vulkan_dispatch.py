"""Host cost of a Vulkan dispatch: one eager launch, and one launch inside a JIT replay with a symbolic size.

  python bench/vulkan_dispatch.py [--kernels 64] [--repeats 7]

Kernels are tiny (16 floats), so on lavapipe (kernels run on the CPU) and on a GPU alike the figure is mostly
host-side work per dispatch: building descriptor sets and push constants, ctypes calls, the submit. The JIT line is
what a decode step pays per kernel (a SmolLM2 step is ~600 of them). Median of several runs; the machine may be shared.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from timing import median_time  # noqa: E402
import teenygrad as tg  # noqa: E402
from teenygrad.device import Device  # noqa: E402
from teenygrad.engine.realize import capture_kernels, run_exec_item  # noqa: E402


def eager_dispatch_seconds(count: int) -> float:
  """One recorded kernel launched `count` times on the same buffers, one submit at the end: seconds per launch."""
  device = Device["VULKAN"]
  small = tg.Tensor(np.ones(16, dtype=np.float32), device="VULKAN")
  with capture_kernels() as launched: (small + 1).realize()
  device.synchronize()
  def run():
    for _ in range(count): run_exec_item(launched[0])
    device.synchronize()
  return median_time(run) / count


def jit_dispatch_seconds(kernels: int, steps: int) -> tuple[float, int]:
  """A jitted chain of `kernels` small kernels, each reading a slice of symbolic length (a decode position), replayed
  at `steps` positions with a read-back per step: seconds per kernel, and the kernel count the JIT recorded."""
  length = 16
  pos = tg.Variable("pos", 0, length - 1)

  @tg.jit
  def chain(x: tg.Tensor, p) -> tg.Tensor:
    for _ in range(kernels):
      x = (x * 0.5 + x._shrink(((0, p + 1),)).sum()).realize()   # depends on the position: one capture, every p
    return x

  x = tg.Tensor(np.ones(length, dtype=np.float32), device="VULKAN")
  for p in range(3): chain(x, pos.bind(p)).numpy()   # run, capture, first replay
  def run():
    for p in range(steps): chain(x, pos.bind(p % length)).numpy()
  return median_time(run) / (steps * chain.kernel_count), chain.kernel_count


def main() -> None:
  parser = argparse.ArgumentParser()
  parser.add_argument("--kernels", type=int, default=64)
  parser.add_argument("--steps", type=int, default=8)
  args = parser.parse_args()
  device = Device["VULKAN"]
  print(f"device: {device.device_name}")
  start = time.perf_counter()
  eager = eager_dispatch_seconds(200)
  print(f"eager launch:      {eager * 1e6:7.1f} us per dispatch (one kernel launched 200 times, one submit)")
  replay, count = jit_dispatch_seconds(args.kernels, args.steps)
  print(f"JIT replay:        {replay * 1e6:7.1f} us per dispatch ({count} kernels per step, a symbolic position, "
        f"{args.steps} steps with a read-back each)")
  print(f"({time.perf_counter() - start:.1f} s)")


if __name__ == "__main__":
  main()
