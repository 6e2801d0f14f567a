"""What each kind of kernel costs inside the replayed decode graph: the captured batch-1 step replayed whole, then
without one kind of kernel at a time (knocked out), and that kind alone.

  DEV=CUDA python bench/graph_knockout.py --model PATH [--prompt 192] [--replays 200]

bench/llm_profile.py times each kernel on its own, which counts its launch latency in full and none of the overlap
a graph (and programmatic dependent launch) gives it. Here the difference a kind makes to the whole graph is its
real share of the step: the chain it adds, launch gaps included. The knocked-out graphs compute garbage (a kernel's
readers see whatever its output buffer held), which does not change how long they take: nothing in a decode step
branches on values except the attention's position, which comes from its own buffer, untouched. No peer runs this:
it is a measurement of teenygrad's own step. Medians over rounds: these machines are shared.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from collections import Counter

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))


def replay_us(backend, items: list, replays: int, rounds: int) -> float:
  """Median over rounds of one replay's time, for a graph of `items` (each a launch of the captured step)."""
  graph = backend.graph(items)
  for _ in range(3): graph()
  times = []
  for _ in range(rounds):
    backend.synchronize()
    start = time.perf_counter()
    for _ in range(replays): graph()
    backend.synchronize()
    times.append((time.perf_counter() - start) / replays)
  graph.close()
  return float(np.median(times)) * 1e6


def main() -> None:
  parser = argparse.ArgumentParser()
  parser.add_argument("--model", required=True)
  parser.add_argument("--prompt", type=int, default=192, help="prompt tokens before the captured step (the attention's length)")
  parser.add_argument("--replays", type=int, default=200)
  parser.add_argument("--rounds", type=int, default=7)
  parser.add_argument("--whole", action="store_true", help="time the whole step only (for a sweep of kernel settings)")
  args = parser.parse_args()
  from teenygrad.device import Device
  from teenygrad.engine.realize import ExecItem
  from teenygrad.llm.generate import Generator
  from teenygrad.llm.load import load_model
  from teenygrad.llm.sampling import SamplingParams
  model, tokenizer = load_model(args.model)
  tokenizer.stop_ids = set()
  prompt = np.random.default_rng(0).integers(0, model.config.vocab_size, size=args.prompt).tolist()
  generator = Generator(model, tokenizer)
  generator.generate_ids([prompt], SamplingParams(max_tokens=4))   # compiles, then captures the decode step
  capture = generator._decode_greedy.capture
  if capture is None or not hasattr(capture, "graph_table"): sys.exit("no device graph for this step (a CUDA device is needed)")
  own = capture.graph_table
  launches = [(launch.item.kernel.name, ExecItem(launch.item.kernel, [own[s] for s in launch.slots], tuple(vals), launch.item.device))
              for launch, vals in zip(capture.launches, capture.var_values)]
  backend = Device[launches[0][1].device]
  kinds = Counter(name for name, _ in launches)
  whole = replay_us(backend, [item for _, item in launches], args.replays, args.rounds)
  print(f"model {os.path.basename(args.model)}, {len(launches)} launches, position {args.prompt}: whole step {whole:.1f} us "
        f"(median of {args.rounds} x {args.replays} replays)")
  if args.whole: return
  print(f"{'kernel':40s} {'count':>5s} {'without':>9s} {'its share':>9s} {'per launch':>10s} {'alone':>9s} {'per launch':>10s}")
  for name, count in kinds.most_common():
    if count < 2 and len(kinds) > 12: continue   # one-off kernels (embedding, head) matter less than the per-layer ones
    rest = [item for n, item in launches if n != name]
    alone = [item for n, item in launches if n == name]
    without = replay_us(backend, rest, args.replays, args.rounds) if rest else 0.0
    only = replay_us(backend, alone, args.replays, args.rounds)
    share = whole - without
    print(f"{name:40s} {count:5d} {without:9.1f} {share:9.1f} {share / count:10.2f} {only:9.1f} {only / count:10.2f}")


if __name__ == "__main__":
  main()
