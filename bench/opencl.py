"""OpenCL benchmarks: matmul, a fused elementwise kernel and the work-group reductions, against numpy and teenygrad's
CPU backend in the same run.

  python bench/opencl.py        # prints a table and writes bench/results/opencl_<device>.txt
On PoCL the "GPU" is this CPU, so numpy/the CPU backend are the peers and the copy bandwidth is the ceiling.
Medians over repeated runs; the machine is shared, so quote ratios."""
from __future__ import annotations

import os
import re
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from timing import median_time as _median_time  # noqa: E402


def median_time(fn, repeats: int = 5) -> float: return _median_time(fn, repeats)


import teenygrad as tg  # noqa: E402
from teenygrad.device import Device  # noqa: E402
from teenygrad.engine.realize import _kernel_cache  # noqa: E402


def on(device: str, fn):
  """Time fn's kernels on `device`, waiting for them to finish."""
  def run():
    fn().realize()
    Device[device].synchronize()
  return run


def row(name: str, unit: str, ours: dict[str, float], peers: dict[str, float], ceiling: float) -> str:
  best = max(peers.values())
  ours_txt = "  ".join(f"{k} {v:8.2f}" for k, v in ours.items())
  peer_txt = "  ".join(f"{k} {v:8.2f}" for k, v in peers.items())
  return (f"{name:24s} {unit:7s} {ours_txt}  | {peer_txt}  ceiling {ceiling:8.1f}  "
          f"OPENCL/best-peer {ours['OPENCL'] / best:5.2f}")


def np_softmax(m: np.ndarray) -> np.ndarray:
  e = np.exp(m - m.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def main() -> None:
  rng = np.random.default_rng(0)
  backend = Device["OPENCL"]
  a = np.ones(1 << 24, dtype=np.float32); b = np.empty_like(a)
  copy_gbs = 2 * a.nbytes / median_time(lambda: np.copyto(b, a)) / 1e9
  lines = [f"device: {backend.device_name} (driver {backend.driver_version}); host {os.cpu_count()} cores; "
           f"numpy copy bandwidth {copy_gbs:.1f} GB/s; load average {os.getloadavg()[0]:.1f} (a shared machine: compare within a row)"]
  for n in (256, 512, 1024):
    x, y = rng.standard_normal((n, n), dtype=np.float32), rng.standard_normal((n, n), dtype=np.float32)
    flops = 2 * n ** 3
    # (the CPU backend's GEMM is measured by bench/ops.py)
    tx, ty = tg.Tensor(x, device="OPENCL"), tg.Tensor(y, device="OPENCL")
    ours = {"OPENCL": flops / median_time(on("OPENCL", lambda: tx @ ty), 3) / 1e9}
    # the same product as a plain reduce loop per output (no tiled GEMM), compiled afresh
    tx, ty = tg.Tensor(x, device="OPENCL"), tg.Tensor(y, device="OPENCL")
    _kernel_cache.clear()
    backend.gemm_kernel = lambda *args: None
    ours["OPENCL-naive"] = flops / median_time(on("OPENCL", lambda: tx @ ty), 3) / 1e9
    del backend.gemm_kernel
    _kernel_cache.clear()
    peers = {"numpy": flops / median_time(lambda: x @ y, 3) / 1e9}
    lines.append(row(f"matmul fp32 {n}", "GFLOP/s", ours, peers, float("nan")))
  n = 1 << 22
  x, y, z = (rng.standard_normal(n, dtype=np.float32) for _ in range(3))
  nbytes = 4 * n * 4
  ours = {}
  for dev in ("OPENCL", "CPU"):
    tx, ty, tz = (tg.Tensor(v, device=dev) for v in (x, y, z))
    ours[dev] = nbytes / median_time(on(dev, lambda: (tx * ty + tz).relu())) / 1e9
  peers = {"numpy": nbytes / median_time(lambda: np.maximum(x * y + z, 0)) / 1e9}
  lines.append(row("fused (x*y+z).relu()", "GB/s", ours, peers, copy_gbs))
  for name, shape, fn, np_fn in (
      ("softmax 8x32768", (8, 32768), lambda t: t.softmax(-1), np_softmax),
      ("softmax 4096x1024", (4096, 1024), lambda t: t.softmax(-1), np_softmax),
      ("sum 16M", (1 << 24,), lambda t: t.sum(), lambda m: m.sum())):
    m = rng.standard_normal(shape, dtype=np.float32)
    nbytes = m.nbytes * (2 if len(shape) > 1 else 1)
    ours = {}
    for dev in ("OPENCL", "CPU"):
      tm = tg.Tensor(m, device=dev)
      ours[dev] = nbytes / median_time(on(dev, lambda: fn(tm))) / 1e9
    peers = {"numpy": nbytes / median_time(lambda: np_fn(m)) / 1e9}
    lines.append(row(name, "GB/s", ours, peers, copy_gbs))
  text = "\n".join(lines)
  print(text)
  slug = re.sub(r"[^a-z0-9]+", "_", backend.device_name.lower()).strip("_")[:40]
  path = os.path.join(os.path.dirname(__file__), "results", f"opencl_{slug}.txt")
  with open(path, "w") as f: f.write("python bench/opencl.py\n" + text + "\n")


if __name__ == "__main__":
  main()
