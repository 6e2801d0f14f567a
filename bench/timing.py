"""Shared by the benchmarks: a pause for other libraries' threads to park, a warm-up call, then the median of repeated
timings (the machines are shared and noisy)."""
import os
import statistics
import time


# how long the worker threads of whatever ran before (OpenBLAS, torch's and teenygrad's OpenMP pools) keep spinning
# after their last job: on 2 cores, spinning threads of one library halve the next one's speed
SETTLE_S = 0.3


def median_time(fn, repeats: int = 7) -> float:
  time.sleep(SETTLE_S)
  fn()
  times = []
  for _ in range(repeats):
    start = time.perf_counter(); fn(); times.append(time.perf_counter() - start)
  return statistics.median(times)


def median_times(fns: dict, repeats: int = 7, rounds: int = 3) -> dict:
  """Seconds per call of each of `fns` (name -> function), measured the same way: in `rounds` rounds that take the
  functions in turn (each after the pause and a warm-up call, as median_time), `repeats` timed calls per function in
  all; the median of each function's calls. A neighbour busy for a second or two then slows every function's share
  of that round, instead of all of whichever one was being timed."""
  times: dict = {name: [] for name in fns}
  per_round = [repeats // rounds + (1 if r < repeats % rounds else 0) for r in range(rounds)]
  for count in per_round:
    for name, fn in fns.items():
      time.sleep(SETTLE_S)
      fn()
      for _ in range(count):
        start = time.perf_counter(); fn(); times[name].append(time.perf_counter() - start)
  return {name: statistics.median(samples) for name, samples in times.items()}


def report(lines: list[str], results_name: str) -> None:
  """Print a benchmark's table and keep it as bench/results/<results_name>."""
  text = "\n".join(lines)
  print(text)
  results = os.path.join(os.path.dirname(__file__), "results")
  os.makedirs(results, exist_ok=True)
  with open(os.path.join(results, results_name), "w") as f: f.write(text + "\n")


def graph_seconds(backend, items, reps: int, trials: int = 5) -> float:
  """Seconds per run of the captured launches `items` on a backend with device graphs (CUDA): one graph of `reps`
  copies, timed with the device's events; the median of `trials`."""
  graph = backend.graph(items * reps)
  graph(); backend.synchronize()
  times = []
  for _ in range(trials):
    start, end = backend.new_event(), backend.new_event()
    backend.record(start); graph(); backend.record(end)
    times.append(backend.elapsed(start, end) / reps)
  return statistics.median(times)
