"""Shared by the benchmarks: a warm-up call, then the median of repeated timings (the machines are shared and noisy)."""
import statistics
import time


def median_time(fn, repeats: int = 7) -> float:
  fn()
  times = []
  for _ in range(repeats):
    start = time.perf_counter(); fn(); times.append(time.perf_counter() - start)
  return statistics.median(times)
