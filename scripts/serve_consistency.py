"""The serving engine's greedy answers against the one-sequence generator's, for N chat prompts decoding together
(a diagnostic for the GPU machine: which prompts differ, and from which token).

  DEV=CUDA python scripts/serve_consistency.py [--model PATH] [--prompts 64] [--tokens 16] [--max-batch 64] [--prefill-rows 16]
"""
from __future__ import annotations

import argparse
import os
import sys
import threading

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))


def main() -> int:
  parser = argparse.ArgumentParser()
  parser.add_argument("--model")
  parser.add_argument("--prompts", type=int, default=64)
  parser.add_argument("--tokens", type=int, default=16)
  parser.add_argument("--max-batch", type=int, default=64)
  parser.add_argument("--prefill-rows", type=int, default=None)
  args = parser.parse_args()
  from teenygrad.llm.chat import ChatTemplate
  from teenygrad.llm.generate import Generator
  from teenygrad.llm.load import default_model_path, load_model
  from teenygrad.llm.sampling import SamplingParams
  from teenygrad.serve.engine import DoneEvent, Engine, ErrorEvent, Sequence, TokenEvent
  model, tokenizer = load_model(args.model or default_model_path())
  template = ChatTemplate(tokenizer.chat_template, "", "")
  prompts = [tokenizer.encode(template.render([{"role": "user", "content": f"Write one sentence about the number {i}."}],
                                              add_generation_prompt=True), add_bos=False) for i in range(args.prompts)]
  params = SamplingParams(temperature=0, max_tokens=args.tokens)
  expected = [Generator(model, tokenizer).generate_ids([p], params)[0].generated for p in prompts]
  engine = Engine(model, tokenizer, max_batch=args.max_batch, max_len=1024, prefill_rows=args.prefill_rows)
  engine.warmup()
  engine.start()
  got: list[list[int]] = [[] for _ in prompts]
  finished = threading.Semaphore(0)
  def emitter(i):
    def emit(event):
      if isinstance(event, TokenEvent): got[i].append(event.token_id)
      elif isinstance(event, (DoneEvent, ErrorEvent)):
        if isinstance(event, ErrorEvent): print(f"prompt {i}: error {event.message}")
        finished.release()
    return emit
  try:
    for i, p in enumerate(prompts): engine.submit(Sequence(p, SamplingParams(temperature=0, max_tokens=args.tokens), emitter(i)))
    for _ in prompts:
      if not finished.acquire(timeout=600): print("timed out"); return 1
  finally: engine.shutdown()
  bad = 0
  for i, (want, have) in enumerate(zip(expected, got)):
    if want != have:
      bad += 1
      at = next((t for t, (a, b) in enumerate(zip(want, have)) if a != b), min(len(want), len(have)))
      print(f"prompt {i}: differs from token {at} (generator {len(want)} tokens, engine {len(have)})")
  print(f"{bad} of {len(prompts)} prompts differ (max_batch {args.max_batch}, prefill_rows {engine.prefill_rows}, {args.tokens} tokens)")
  return 0


if __name__ == "__main__":
  sys.exit(main())
