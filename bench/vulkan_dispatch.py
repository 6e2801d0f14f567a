"""Host cost of a Vulkan dispatch: one eager launch, and one launch inside a JIT replay with a symbolic size.

  python bench/vulkan_dispatch.py [--kernels 600] [--steps 15]

Kernels are tiny (16 floats), so the figures are mostly fixed costs per dispatch. "issue" is the host time to hand
the dispatches over (descriptor sets, size arguments, ctypes calls: what this backend controls); "total" adds the
submit and running them (on lavapipe the kernels run on the host CPU too, so that part is the CPU's). The JIT line is
what a decode step pays per kernel (a SmolLM2 step is ~600 of them). Medians of several runs; the machine may be shared.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
import teenygrad as tg  # noqa: E402
from teenygrad.device import Device  # noqa: E402
from teenygrad.engine.realize import capture_kernels, run_exec_item  # noqa: E402


def issue_and_total(issue, finish, repeats: int = 7) -> tuple[float, float]:
  """Median seconds of issue() alone and of issue() then finish() (after one warm-up)."""
  issue(); finish()
  issued, totals = [], []
  for _ in range(repeats):
    start = time.perf_counter(); issue(); middle = time.perf_counter(); finish(); end = time.perf_counter()
    issued.append(middle - start); totals.append(end - start)
  return statistics.median(issued), statistics.median(totals)


def eager_dispatch(count: int) -> tuple[float, float]:
  """One recorded kernel launched `count` times on the same buffers, one submit at the end: seconds per launch."""
  device = Device["VULKAN"]
  small = tg.Tensor(np.ones(16, dtype=np.float32), device="VULKAN")
  with capture_kernels() as launched: (small + 1).realize()
  device.synchronize()
  def issue():
    for _ in range(count): run_exec_item(launched[0])
  issued, total = issue_and_total(issue, device.synchronize)
  return issued / count, total / count


def jit_dispatch(kernels: int, steps: int) -> tuple[float, float, int]:
  """A jitted chain of small kernels, each reading a slice of symbolic length (a decode position), replayed at `steps`
  positions: seconds per recorded kernel, and the number recorded."""
  length = 16
  pos = tg.Variable("pos", 0, length - 1)

  @tg.jit
  def chain(x: tg.Tensor, p) -> tg.Tensor:
    for _ in range(kernels):
      x = (x * 0.5 + x._shrink(((0, p + 1),)).sum()).realize()   # depends on the position: one capture, every p
    return x

  x = tg.Tensor(np.ones(length, dtype=np.float32), device="VULKAN")
  for p in range(3): chain(x, pos.bind(p)).numpy()   # run, capture, first replay
  issued, total = [], []
  for p in range(steps):
    start = time.perf_counter(); out = chain(x, pos.bind(p % length)); middle = time.perf_counter(); out.numpy()
    issued.append(middle - start); total.append(time.perf_counter() - start)
  count = chain.kernel_count
  return statistics.median(issued) / count, statistics.median(total) / count, count


def main() -> None:
  parser = argparse.ArgumentParser()
  parser.add_argument("--kernels", type=int, default=600)   # about a SmolLM2 decode step
  parser.add_argument("--steps", type=int, default=15)
  args = parser.parse_args()
  device = Device["VULKAN"]
  print(f"device: {device.device_name}")
  issued, total = eager_dispatch(200)
  print(f"eager launch: issue {issued * 1e6:7.1f} us, total {total * 1e6:7.1f} us per dispatch (one kernel launched 200 times, one submit)")
  issued, total, count = jit_dispatch(args.kernels, args.steps)
  print(f"JIT replay:   issue {issued * 1e6:7.1f} us, total {total * 1e6:7.1f} us per dispatch ({count} kernels a step at a "
        f"symbolic position, a read-back each, median of {args.steps} steps)")


if __name__ == "__main__":
  main()
