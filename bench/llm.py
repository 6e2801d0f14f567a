"""LLM inference speed: prefill (512 tokens) and batch-1 decode tok/s of SmolLM2-135M-Instruct (Q4_1 GGUF).

Prints each rate with its ceiling (bytes of weights read per token over the measured memory bandwidth) and the
ratio to llama.cpp (llama-cpp-python on the same GGUF and thread count) when it is importable.

  python bench/llm.py [--model PATH] [--threads N] [--decode 64] [--prefill 512]
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))


def measure_bandwidth(nbytes: int = 256 << 20, repeats: int = 5) -> float:
  """Read bandwidth in bytes/s: the best of a few numpy sums over a buffer larger than the caches."""
  data = np.ones(nbytes // 4, dtype=np.float32)
  best = float("inf")
  for _ in range(repeats):
    t0 = time.perf_counter(); data.sum(); best = min(best, time.perf_counter() - t0)
  return nbytes / best


def measure_device_bandwidth(device: str, nbytes: int = 512 << 20, repeats: int = 5) -> float:
  """Bandwidth in bytes/s of the device the model runs on: numpy's read bandwidth on the CPU, else the best of a few
  elementwise passes over a buffer larger than the caches (bytes read + written: a copy, which is what a decode
  step's weights see on a GPU)."""
  if device.partition(":")[0] == "CPU": return measure_bandwidth()
  from teenygrad import Tensor
  from teenygrad.device import Device
  x = Tensor.ones(nbytes // 4, device=device).realize()
  backend = Device[device]
  best, passes = float("inf"), 10   # several passes between synchronizations: one pass is ~0.25 ms on an H200
  for _ in range(repeats + 1):
    backend.synchronize()
    t0 = time.perf_counter()
    for _ in range(passes): (x + 1).realize()
    backend.synchronize()
    best = min(best, (time.perf_counter() - t0) / passes)
  return 2 * nbytes / best


def weight_bytes(model) -> int:
  total = 0
  for w in model.weights.values(): total += w.nbytes if hasattr(w, "ggml_type") else w.numel() * w.element_size()
  return total


def bench_teenygrad(path: str, prefill_len: int, decode_len: int) -> tuple[float, float, int]:
  from teenygrad.llm.generate import Generator
  from teenygrad.llm.load import load_model
  from teenygrad.llm.model import KVCache
  from teenygrad.llm.sampling import SamplingParams
  model, tokenizer = load_model(path)
  rng = np.random.default_rng(0)
  prompt = rng.integers(100, model.config.vocab_size - 100, size=prefill_len).astype(np.int32)
  cache = KVCache(model.config, 1, prefill_len + 8)
  model(prompt[None, :], cache, 0).numpy()   # compile
  t0 = time.perf_counter(); model(prompt[None, :], cache, 0).numpy(); prefill = prefill_len / (time.perf_counter() - t0)
  tokenizer.stop_ids = set()   # decode the full count
  generator = Generator(model, tokenizer)
  generator.generate_ids([prompt[:16].tolist()], SamplingParams(max_tokens=8))   # capture the decode step
  generator.generate_ids([prompt[:16].tolist()], SamplingParams(max_tokens=decode_len))
  return prefill, generator.stats.decode_tps, weight_bytes(model)


def bench_llama_cpp(path: str, threads: int, prefill_len: int, decode_len: int) -> tuple[float, float] | None:
  try: import llama_cpp
  except ImportError: return None
  llm = llama_cpp.Llama(model_path=path, n_ctx=prefill_len + decode_len + 32, n_threads=threads, n_threads_batch=threads,
                        n_batch=prefill_len, verbose=False)
  rng = np.random.default_rng(0)
  prompt = rng.integers(100, 49000, size=prefill_len).tolist()
  llm.eval(prompt)
  llm.reset(); t0 = time.perf_counter(); llm.eval(prompt); prefill = prefill_len / (time.perf_counter() - t0)
  llm.reset(); llm.eval(prompt[:16])
  token = prompt[16]
  t0 = time.perf_counter()
  for _ in range(decode_len): llm.eval([token])
  decode = decode_len / (time.perf_counter() - t0)
  return prefill, decode


def main() -> None:
  parser = argparse.ArgumentParser()
  parser.add_argument("--model")
  parser.add_argument("--threads", type=int, default=os.cpu_count())
  parser.add_argument("--prefill", type=int, default=512)
  parser.add_argument("--decode", type=int, default=64)
  args = parser.parse_args()
  os.environ.setdefault("TEENYGRAD_THREADS", str(args.threads))
  from teenygrad.llm.load import default_model_path
  path = args.model or default_model_path()
  from teenygrad.device import Device
  bandwidth = measure_device_bandwidth(Device.DEFAULT)
  prefill, decode, nbytes = bench_teenygrad(path, args.prefill, args.decode)
  peer = bench_llama_cpp(path, args.threads, args.prefill, args.decode)
  ceiling = bandwidth / nbytes
  print(f"model {os.path.basename(path)}: {nbytes / 1e6:.1f} MB of weights read per token; "
        f"{Device.DEFAULT} memory bandwidth {bandwidth / 1e9:.1f} GB/s; threads {args.threads}")
  print(f"{'':8s} {'teenygrad tok/s':>16s} {'ceiling tok/s':>14s} {'of ceiling':>11s} {'llama.cpp tok/s':>16s} {'ratio':>7s}")
  for name, ours, theirs in (("prefill", prefill, peer[0] if peer else None), ("decode", decode, peer[1] if peer else None)):
    # prefill reads the weights once for all its tokens: its bandwidth ceiling is far above the compute one
    cap = ceiling * (args.prefill if name == "prefill" else 1)
    ratio = f"{ours / theirs:6.2f}x" if theirs else "    n/a"
    print(f"{name:8s} {ours:16.1f} {cap:14.1f} {ours / cap:10.1%} {theirs if theirs else float('nan'):16.1f} {ratio}")


if __name__ == "__main__":
  main()
