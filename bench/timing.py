"""Shared by the benchmarks: a warm-up call, then the median of repeated timings (the machines are shared and noisy)."""
import os
import statistics
import time


def median_time(fn, repeats: int = 7) -> float:
  fn()
  times = []
  for _ in range(repeats):
    start = time.perf_counter(); fn(); times.append(time.perf_counter() - start)
  return statistics.median(times)


def report(lines: list[str], results_name: str) -> None:
  """Print a benchmark's table and keep it as bench/results/<results_name>."""
  text = "\n".join(lines)
  print(text)
  results = os.path.join(os.path.dirname(__file__), "results")
  os.makedirs(results, exist_ok=True)
  with open(os.path.join(results, results_name), "w") as f: f.write(text + "\n")
