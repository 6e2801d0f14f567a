"""Serving throughput: aggregate generated tok/s and time to first token with 1, 8, 32 (and 64) concurrent streams.

    python bench/serve.py [--concurrency 1 8 32 64] [--max-tokens 32] [--device CUDA] [--model M.gguf] [--out FILE]

Starts `teenygrad serve` (SmolLM2-135M-Instruct Q4_1, warmed up) on a loopback port and, when llama-cpp-python
with its server extra is importable, llama.cpp's server on the same GGUF file as the peer. Every stream is a greedy
chat completion of its own prompt; a prompt's answer must be the same at every concurrency (nothing dropped,
duplicated or mixed between streams), and the tokens counted are the ones the server reports in `usage`.
The ceiling printed is the single-stream decode bound of the device's memory bandwidth (weights read once per
step: a host copy on the CPU, a device copy elsewhere); batching lets the aggregate rate go past it. llama.cpp's
server is only the peer on the CPU (the wheel here is a CPU build).
"""
from __future__ import annotations

import argparse
import asyncio
import os
import platform
import socket
import subprocess
import sys
import time

import numpy as np

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO_ROOT)


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def wait_up(proc: subprocess.Popen, url: str, timeout: float = 1200) -> None:
  import httpx2
  deadline = time.time() + timeout
  while time.time() < deadline:
    if proc.poll() is not None: raise RuntimeError(f"server exited with {proc.returncode}")
    try:
      if httpx2.get(url, timeout=2).status_code == 200: return
    except httpx2.HTTPError: pass
    time.sleep(0.5)
  raise RuntimeError(f"{url} did not come up")


def start_teenygrad(model: str, max_batch: int, device: str) -> tuple[subprocess.Popen, str, str]:
  port = free_port()
  # the repository first, then whatever the caller had (a --target folder of wheels on the GPU machine)
  env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (REPO_ROOT, os.environ.get("PYTHONPATH")) if p)}
  proc = subprocess.Popen([sys.executable, "-m", "teenygrad.cli", "serve", "--model", model, "--port", str(port), "--model-name", "model",
                           "--device", device, "--max-batch", str(max_batch), "--max-context", "1024"], env=env)
  wait_up(proc, f"http://127.0.0.1:{port}/health")
  return proc, f"http://127.0.0.1:{port}/v1", "model"


def start_llama_cpp(model: str, max_batch: int, device: str) -> tuple[subprocess.Popen, str, str]:
  port = free_port()
  # llama-cpp-python's server runs one request at a time (its lock serializes them); by default a new request interrupts
  # the running one's stream, which would cut every stream but the last
  proc = subprocess.Popen([sys.executable, "-m", "llama_cpp.server", "--model", model, "--port", str(port), "--n_ctx", "2048",
                           "--interrupt_requests", "False",
                           "--model_alias", "model", "--n_threads", str(os.cpu_count())], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
  wait_up(proc, f"http://127.0.0.1:{port}/v1/models")
  return proc, f"http://127.0.0.1:{port}/v1", "model"


async def one_stream(client, model: str, prompt: str, max_tokens: int, started: float) -> tuple[str, float | None, int]:
  stream = await client.chat.completions.create(model=model, messages=[{"role": "user", "content": prompt}], max_tokens=max_tokens,
                                                temperature=0, stream=True, stream_options={"include_usage": True})
  text, first, tokens, pieces = "", None, None, 0
  async for chunk in stream:
    if chunk.choices and chunk.choices[0].delta.content:
      if first is None: first = time.perf_counter() - started
      text += chunk.choices[0].delta.content
      pieces += 1
    if getattr(chunk, "usage", None): tokens = chunk.usage.completion_tokens
  return text, first, tokens if tokens is not None else pieces   # llama-cpp-python sends no usage: one chunk per token


async def run_level(base: str, model: str, prompts: list[str], max_tokens: int) -> tuple[list, float]:
  import openai
  client = openai.AsyncOpenAI(base_url=base, api_key="none", max_retries=0, timeout=3600)
  started = time.perf_counter()
  try: results = await asyncio.gather(*[one_stream(client, model, p, max_tokens, started) for p in prompts])
  finally: await client.close()
  return results, time.perf_counter() - started


def measure(name: str, base: str, model: str, levels: list[int], max_tokens: int) -> dict[int, dict]:
  prompts = [f"Write one sentence about the number {i}." for i in range(max(levels))]
  answers: dict[str, str] = {}
  out = {}
  asyncio.run(run_level(base, model, prompts[:1], 4))   # first request: nothing to compile on the measured ones
  for c in levels:
    results, wall = asyncio.run(run_level(base, model, prompts[:c], max_tokens))
    mismatched = 0
    for p, (text, _, _) in zip(prompts, results):
      if answers.setdefault(p, text) != text: mismatched += 1
    ttft = [r[1] for r in results if r[1] is not None]
    tokens = sum(r[2] for r in results)
    out[c] = {"tok_s": tokens / wall, "tokens": tokens, "wall": wall, "p50": float(np.percentile(ttft, 50)) if ttft else float("nan"),
              "p99": float(np.percentile(ttft, 99)) if ttft else float("nan"), "mismatched": mismatched}
    print(f"{name:10s} {c:3d} streams: {out[c]['tok_s']:8.1f} tok/s aggregate ({tokens} tokens in {wall:.1f} s), TTFT p50 {out[c]['p50']:.2f} s "
          f"p99 {out[c]['p99']:.2f} s, answers differing from other concurrencies: {mismatched}", flush=True)
  return out


def bandwidth_ceiling(model_path: str, device: str) -> tuple[float, float]:
  """(GB/s of a large copy on device, single-stream tok/s if each step reads the weights once at that rate)."""
  if device == "CPU":
    a = np.ones(64 << 20 >> 3)
    b = np.empty_like(a)
    best = min((lambda t0: (np.copyto(b, a), time.perf_counter() - t0)[1])(time.perf_counter()) for _ in range(5))
    nbytes = 2 * a.nbytes
  else:   # a device copy kernel, chained 8 times so that the one read back to the host (a single element) is noise
    from teenygrad import Tensor
    a = Tensor.ones(256 << 20 >> 2, device=device).contiguous().realize()
    def copies():
      t0, x = time.perf_counter(), a
      for _ in range(8): x = (x + 1).realize()
      x[:1].numpy()
      return time.perf_counter() - t0
    copies()
    best, nbytes = min(copies() for _ in range(3)), 8 * 2 * a.numel() * a.element_size()
  gbs = nbytes / best / 1e9
  return gbs, gbs * 1e9 / os.path.getsize(model_path)


def main() -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--model", help="a GGUF file (default: SmolLM2-135M-Instruct Q4_1)")
  parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32, 64])
  parser.add_argument("--max-tokens", type=int, default=32)
  parser.add_argument("--device", default=os.environ.get("DEV", "CPU").upper(), help="the server's device (default: $DEV or CPU)")
  parser.add_argument("--out", help="where the summary goes (default: bench/results/serve_cpu.txt, or serve_<device>.txt)")
  parser.add_argument("--no-peer", action="store_true")
  args = parser.parse_args()
  from teenygrad.llm.load import default_model_path
  model_path = args.model or default_model_path()
  out = args.out or os.path.join(REPO_ROOT, "bench", "results", f"serve_{args.device.partition(':')[0].lower()}.txt")
  gbs, ceiling = bandwidth_ceiling(model_path, args.device)
  lines = [f"bench/serve.py on {platform.machine()} with {os.cpu_count()} cores, DEV={args.device}, {os.path.basename(model_path)}, greedy chat "
           f"streams of {args.max_tokens} tokens; {args.device} memory copy {gbs:.1f} GB/s -> single-stream ceiling ~{ceiling:.0f} tok/s"]
  print(lines[0], flush=True)
  servers = [("teenygrad", start_teenygrad)]
  if not args.no_peer and args.device == "CPU":
    try:
      import llama_cpp.server.app  # noqa: F401
      servers.append(("llama.cpp", start_llama_cpp))
    except ImportError as e: lines.append(f"llama.cpp peer: not measured ({e})")
  results = {}
  for name, start in servers:
    proc, base, model = start(model_path, max(args.concurrency), args.device)
    try: results[name] = measure(name, base, model, args.concurrency, args.max_tokens)
    finally:
      proc.terminate()
      proc.wait(timeout=60)
  for c in args.concurrency:
    ours = results["teenygrad"][c]
    line = (f"{c:3d} streams: teenygrad {ours['tok_s']:7.1f} tok/s, TTFT p50 {ours['p50']:6.2f} s p99 {ours['p99']:6.2f} s, "
            f"mismatched {ours['mismatched']}")
    if "llama.cpp" in results:
      peer = results["llama.cpp"][c]
      line += (f" | llama.cpp server {peer['tok_s']:7.1f} tok/s, TTFT p50 {peer['p50']:6.2f} s p99 {peer['p99']:6.2f} s"
               f" | ratio {ours['tok_s'] / max(peer['tok_s'], 1e-9):.2f}x")
    lines.append(line)
  single = results["teenygrad"].get(1)
  if single:
    for c in args.concurrency:
      if c > 1: lines.append(f"scaling: {c} streams = {results['teenygrad'][c]['tok_s'] / single['tok_s']:.1f}x the single-stream rate")
  text = "\n".join(lines) + "\n"
  print(text)
  os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
  tmp = out + ".tmp"
  with open(tmp, "w") as f:
    f.write(text); f.flush(); os.fsync(f.fileno())
  os.replace(tmp, out)
  return 0


if __name__ == "__main__":
  sys.exit(main())
