"""The Vulkan backend's rates on whatever Vulkan device is present, against numpy and torch on the host CPU.

  python bench/vulkan.py [--out FILE]   # prints a table; writes bench/results/vulkan_<device>.txt or FILE

On lavapipe (Mesa's Vulkan on the CPU, what CI has) this measures the backend's overheads, not a GPU: the
ceiling quoted is the host's copy bandwidth. Kernel time is a synchronize()d launch, median of several; inputs
are random. The machine may be shared: quote ratios.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from timing import median_time  # noqa: E402
import teenygrad as tg  # noqa: E402
from teenygrad.device import Device  # noqa: E402
from teenygrad.engine.realize import capture_kernels, run_exec_item  # noqa: E402

try: import torch
except ImportError: torch = None


def kernel_time(build) -> float:
  """Seconds for the launches `build` makes, replayed on the same buffers (no scheduling or compiling)."""
  device = Device["VULKAN"]
  with capture_kernels() as launched: build().realize()
  device.synchronize()
  def replay():
    for item in launched: run_exec_item(item)
    device.synchronize()
  return median_time(replay)


def quantized_matvecs(row, rng, copy_bw: float) -> None:
  """The fused quantized matvec (nn/quant_vulkan.py) against the reference it replaces (dequantize, then a matvec),
  in GB/s of weight bytes, at SmolLM2's FFN shape and a slice of its Q8_0 LM head. Needs gguf-py to quantize."""
  try: import gguf
  except ImportError: return
  from teenygrad.nn.quant import QuantizedTensor
  for ggml_type, (n, k) in (("Q4_1", (1536, 576)), ("Q8_0", (4096, 576))):
    blocks = gguf.quants.quantize(rng.standard_normal((n, k), dtype=np.float32), gguf.GGMLQuantizationType[ggml_type])
    weight = QuantizedTensor.from_gguf_bytes(ggml_type, blocks, (n, k), device="VULKAN")
    x = tg.Tensor(rng.standard_normal((1, k), dtype=np.float32), device="VULKAN")
    fused, reference = kernel_time(lambda: weight.linear(x)), kernel_time(lambda: weight.linear_reference(x))
    row(f"{ggml_type} matvec {n}x{k}", "GB/s", weight.nbytes / fused / 1e9, {"reference": weight.nbytes / reference / 1e9}, copy_bw / 1e9)


def main() -> None:
  parser = argparse.ArgumentParser()
  parser.add_argument("--out", default=None)
  args = parser.parse_args()
  device = Device["VULKAN"]
  rng = np.random.default_rng(0)
  lines = []
  def emit(line: str) -> None:
    print(line); lines.append(line)
  big = rng.random(1 << 24, dtype=np.float32)
  copy_bw = 2 * big.nbytes / median_time(lambda: big.copy())
  emit(f"device: {device.device_name}; subgroup {device.subgroup_size}; host copy bandwidth {copy_bw / 1e9:.1f} GB/s (numpy)")

  def row(name: str, unit: str, ours: float, peers: dict[str, float], ceiling: float = float("nan")) -> None:
    best = max(peers.values()) if peers else float("nan")
    peer_text = "  ".join(f"{k} {v:8.2f}" for k, v in peers.items())
    emit(f"{name:28s} {unit:8s} vulkan {ours:8.2f}  {peer_text}  ceiling {ceiling:8.2f}  ratio-to-best {ours / best:5.2f}")

  n = 1 << 22
  x, y, z = (rng.standard_normal(n, dtype=np.float32) for _ in range(3))
  tx, ty, tz = (tg.Tensor(a, device="VULKAN") for a in (x, y, z))
  seconds = kernel_time(lambda: (tx * ty + tz).relu())
  peers = {"numpy": 16 * n / median_time(lambda: np.maximum(x * y + z, 0)) / 1e9}
  if torch is not None:
    a, b, c = (torch.from_numpy(v) for v in (x, y, z))
    peers["torch"] = 16 * n / median_time(lambda: (a * b + c).relu()) / 1e9
  row("fused (x*y+z).relu()", "GB/s", 16 * n / seconds / 1e9, peers, copy_bw / 1e9)

  m = rng.standard_normal((1024, 4096), dtype=np.float32)
  tm = tg.Tensor(m, device="VULKAN")
  seconds = kernel_time(lambda: tm.softmax(-1))
  peers = {"torch": 8 * m.size / median_time(lambda: torch.from_numpy(m).softmax(-1)) / 1e9} if torch is not None else {}
  row("softmax 1024x4096", "GB/s", 8 * m.size / seconds / 1e9, peers, copy_bw / 1e9)
  seconds = kernel_time(lambda: tm.sum())
  row("sum 4M", "GB/s", 4 * m.size / seconds / 1e9, {"numpy": 4 * m.size / median_time(lambda: m.sum()) / 1e9}, copy_bw / 1e9)

  w = rng.standard_normal((2048, 2048), dtype=np.float32)
  v = rng.standard_normal((1, 2048), dtype=np.float32)
  tw, tv = tg.Tensor(w, device="VULKAN"), tg.Tensor(v, device="VULKAN")
  seconds = kernel_time(lambda: tv @ tw.T)
  row("matvec 2048x2048", "GB/s", w.nbytes / seconds / 1e9, {"numpy": w.nbytes / median_time(lambda: v @ w.T) / 1e9}, copy_bw / 1e9)
  quantized_matvecs(row, rng, copy_bw)
  a512 = rng.standard_normal((512, 512), dtype=np.float32)
  ta = tg.Tensor(a512, device="VULKAN")
  seconds = kernel_time(lambda: ta @ ta)
  row("matmul fp32 512", "GFLOP/s", 2 * 512 ** 3 / seconds / 1e9, {"numpy": 2 * 512 ** 3 / median_time(lambda: a512 @ a512) / 1e9})

  small = tg.Tensor(np.ones(16, dtype=np.float32), device="VULKAN")
  with capture_kernels() as launched: (small + 1).realize()
  device.synchronize()
  count = 200
  start = time.perf_counter()
  for _ in range(count): run_exec_item(launched[0])
  device.synchronize()
  emit(f"launch overhead: {(time.perf_counter() - start) / count * 1e6:.1f} us per kernel (recorded in one command buffer, one submit)")

  safe = "".join(c if c.isalnum() else "_" for c in device.device_name.split("(")[0].strip()).lower()
  out = args.out or os.path.join(os.path.dirname(__file__), "results", f"vulkan_{safe}.txt")
  with open(out, "w") as f: f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
  main()
