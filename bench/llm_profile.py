"""Where one batch-1 decode step of an LLM spends its time: every kernel of the captured step timed on its own,
aggregated by kernel name, next to the step's time as the JIT really replays it (one device graph on CUDA).

  DEV=CUDA python bench/llm_profile.py --model PATH [--steps 8] [--top 25]
  python bench/llm_profile.py --model PATH --prefill 512     # one 512-token prefill instead, kernel by kernel

The per-kernel times come from engine.realize.timed_launches (what DEBUG=2 prints): each launch is waited for and
timed with device events, so a kernel's time includes its own launch latency but no overlap with its neighbours.
Their sum is an upper bound on the graph's kernel time; the gap to the replayed step is launch and host overhead.
GB/s is the bytes of each launch's buffers (for a matvec: its weights, x and out) over its time: a lower bound on the
rate it reads memory at, to hold against HBM bandwidth (an H200's device copy: 4.27 TB/s).
"""
from __future__ import annotations

import argparse
import inspect
import os
import sys
import time
from collections import defaultdict

import numpy as np

# appended, not prepended: PYTHONPATH picks the teenygrad to profile (scripts/gpu_decode.sh profiles a baseline checkout)
sys.path.append(os.path.join(os.path.dirname(__file__), ".."))


class _printed_timings:
  """What engine.realize.timed_launches collects, read off DEBUG=2's lines: for checkouts that predate it."""
  def __enter__(self) -> list:
    import contextlib
    import io
    from teenygrad.helpers import config
    self.timings, self.text, self.old_debug = [], io.StringIO(), config.debug
    config.debug = 2
    self.redirect = contextlib.redirect_stdout(self.text)
    self.redirect.__enter__()
    return self.timings

  def __exit__(self, *exc) -> None:
    from types import SimpleNamespace
    from teenygrad.helpers import config
    self.redirect.__exit__(*exc)
    config.debug = self.old_debug
    for line in self.text.getvalue().splitlines():
      parts = line.split()
      if len(parts) >= 4 and parts[3] == "us": self.timings.append(SimpleNamespace(name=parts[1], seconds=float(parts[2]) * 1e-6))


def main() -> None:
  parser = argparse.ArgumentParser()
  parser.add_argument("--model", required=True)
  parser.add_argument("--prompt", type=int, default=16, help="prompt tokens before the decode steps")
  parser.add_argument("--steps", type=int, default=8, help="decode steps timed kernel by kernel")
  parser.add_argument("--replays", type=int, default=64, help="decode steps timed as the JIT replays them")
  parser.add_argument("--top", type=int, default=25)
  parser.add_argument("--prefill", type=int, default=0, help="profile one prefill of this many tokens instead of decode")
  args = parser.parse_args()
  try: from teenygrad.engine.realize import timed_launches
  except ImportError: timed_launches = _printed_timings
  from teenygrad.llm.generate import Generator
  from teenygrad.llm.load import load_model
  from teenygrad.llm.sampling import SamplingParams
  model, tokenizer = load_model(args.model)
  if args.prefill: return profile_prefill(model, args.prefill, args.top, timed_launches)
  tokenizer.stop_ids = set()
  rng = np.random.default_rng(0)
  prompt = rng.integers(0, model.config.vocab_size, size=args.prompt).tolist()
  generator = Generator(model, tokenizer)
  generator.generate_ids([prompt], SamplingParams(max_tokens=4))   # compiles, then captures the decode step
  generator.generate_ids([prompt], SamplingParams(max_tokens=args.replays))
  replay_tps = generator.stats.decode_tps
  # greedy decoding takes the argmax on the device (a jitted step of its own), where the checkout has that
  greedy = "greedy" in inspect.signature(generator._step).parameters
  kernels = (generator._decode_greedy if greedy else generator._decode).kernel_count
  # the timed steps call the jitted step directly, so no prefill launch lands among them
  token = np.array([[prompt[-1]]], dtype=np.int32)
  position = len(prompt)
  with timed_launches() as timings:
    for step in range(args.steps): generator._step(token, position + step, None, **({"greedy": True} if greedy else {}))
  per_name: dict[str, list[float]] = defaultdict(list)
  bytes_per_name: dict[str, int] = defaultdict(int)
  for t in timings:
    per_name[t.name].append(t.seconds)
    bytes_per_name[t.name] += getattr(t, "nbytes", 0)   # not in DEBUG=2's lines (checkouts before timed_launches)
  total = sum(t.seconds for t in timings)
  print(f"model {os.path.basename(args.model)} on {model.device or os.environ.get('DEV', 'CPU')}: {kernels} launches per decode step; "
        f"replayed step {1e6 / replay_tps:.0f} us ({replay_tps:.1f} tok/s); kernels timed one by one: "
        f"{total / args.steps * 1e6:.0f} us per step ({len(timings) // args.steps} launches)")
  print_table(per_name, bytes_per_name, args.steps, total, args.top, "per step", "us/step")


def print_table(per_name: dict, bytes_per_name: dict, steps: int, total: float, top: int, count_label: str, time_label: str) -> None:
  print(f"{'kernel':40s} {count_label:>8s} {time_label:>9s} {'us each':>8s} {'share':>7s} {'GB/s':>8s}")
  ranked = sorted(per_name.items(), key=lambda kv: -sum(kv[1]))
  for name, times in ranked[:top]:
    print(f"{name:40s} {len(times) / steps:8.0f} {sum(times) / steps * 1e6:9.1f} {np.mean(times) * 1e6:8.2f} "
          f"{sum(times) / total:7.1%} {bytes_per_name[name] / sum(times) / 1e9:8.1f}")
  rest = ranked[top:]
  if rest:
    seconds = sum(sum(times) for _, times in rest)
    print(f"{f'({len(rest)} other names)':40s} {sum(len(t) for _, t in rest) / steps:8.0f} {seconds / steps * 1e6:9.1f} "
          f"{'':8s} {seconds / total:7.1%}")


def profile_prefill(model, tokens: int, top: int, timed_launches) -> None:
  """One prefill of `tokens` random tokens (after an untimed one that compiles), every launch timed on its own: the
  kernels a prompt's first pass runs, by name (a prefill has no JIT: each launch is the eager one)."""
  from teenygrad.llm.model import KVCache
  prompt = np.random.default_rng(0).integers(100, model.config.vocab_size - 100, size=(1, tokens)).astype(np.int32)
  cache = KVCache(model.config, 1, tokens + 8)
  model(prompt, cache, 0).numpy()   # compile
  t0 = time.perf_counter(); model(prompt, cache, 0).numpy(); untimed = time.perf_counter() - t0
  with timed_launches() as timings: model(prompt, cache, 0).numpy()
  per_name: dict[str, list[float]] = defaultdict(list)
  bytes_per_name: dict[str, int] = defaultdict(int)
  for t in timings:
    per_name[t.name].append(t.seconds)
    bytes_per_name[t.name] += getattr(t, "nbytes", 0)
  total = sum(t.seconds for t in timings)
  print(f"prefill of {tokens} tokens on {model.device or os.environ.get('DEV', 'CPU')}: {untimed * 1e3:.0f} ms untimed "
        f"({tokens / untimed:.1f} tok/s); kernels timed one by one: {total * 1e3:.0f} ms ({len(timings)} launches)")
  print_table(per_name, bytes_per_name, 1, total, top, "launches", "us total")


if __name__ == "__main__":
  t0 = time.perf_counter()
  main()
  print(f"({time.perf_counter() - t0:.0f} s)")
