"""Batch-1 decode's matvecs on CUDA at Llama-3-8B's shapes: the rate each reads its weights at, against HBM bandwidth.

  DEV=CUDA python bench/matvec_cuda.py [--kinds Q4_0,F16] [--sweep]

A row per (weight kind, shape, kernel configuration): microseconds per launch inside a CUDA graph and GB/s of weight
bytes (plus x and out), as a share of the H200's device copy (4.27 TB/s, bench/results/llm_gpu_h200.txt). Each
launch reads another copy of the weight (enough copies for 256 MB), so the weights come from HBM and not from the
50 MB L2. Kernel times come from CUDA events around a graph of back-to-back launches. `--sweep` also tries other
rows per warp and load batches (module constants of nn/matvec_cuda.py and nn/quant_cuda_packed.py; "rows 2/4 ahead
8/2" is float rows per warp / packed rows per warp, float steps / packed steps of loads in flight): the numbers to
pick them by.
"""
from __future__ import annotations

import argparse
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
os.environ.setdefault("DEV", "CUDA")

from teenygrad import Tensor, dtypes  # noqa: E402
from teenygrad.device import Device  # noqa: E402
from timing import graph_seconds  # noqa: E402
from teenygrad.engine.realize import capture_kernels  # noqa: E402

HBM_GBPS = 4270.0
# (name, N, K) of one Llama-3-8B layer's projections (q/k/v and gate/up concatenated) and its LM head
SHAPES = [("qkv", 6144, 4096), ("o", 4096, 4096), ("gate_up", 28672, 4096), ("down", 4096, 14336)]


def make_weight(kind: str, n: int, k: int, rng):
  """A random weight of `kind` (a GGML type or float16/bfloat16) on CUDA, and its bytes."""
  if kind in ("Q4_0", "Q4_1", "Q8_0"):
    from teenygrad.nn.quant import GGML_TYPES, QuantizedTensor
    info = GGML_TYPES[kind]
    blocks = rng.integers(0, 256, size=(n, k // info.block_size, info.type_size), dtype=np.uint8)
    blocks[:, :, 0:2] = np.frombuffer(np.full(1, 0.01, np.float16).tobytes(), np.uint8)   # finite scales (and Q4_1 mins)
    if kind == "Q4_1": blocks[:, :, 2:4] = blocks[:, :, 0:2]
    weight = QuantizedTensor.from_gguf_bytes(kind, blocks.reshape(-1), (n, k), device="CUDA")
    return weight, blocks.nbytes
  t = Tensor(rng.standard_normal((n, k), dtype=np.float32), device="CUDA").cast(getattr(dtypes, kind)).realize()
  return t, n * k * 2


def time_launches(items, reps: int = 4, trials: int = 5) -> float:
  """Seconds per launch of the captured launches, replayed as one graph `reps` times over, timed with events."""
  return graph_seconds(Device["CUDA"], items, reps, trials) / len(items)


def measure(kind: str, n: int, k: int, rng) -> tuple[float, float]:
  """(us per launch, GB/s) of fused_linear on a (1, k) x through copies of a (n, k) weight."""
  from teenygrad.llm.fused_linear import fused_linear
  first, nbytes = make_weight(kind, n, k, rng)
  weights = [first] + [make_weight(kind, n, k, rng)[0] for _ in range(min(15, (256 << 20) // nbytes))]
  x = Tensor(rng.standard_normal((1, k), dtype=np.float32), device="CUDA").realize()
  for w in weights: fused_linear(x, w).realize()   # compiles, and repacks the quantized weights, outside the capture
  with capture_kernels() as items:
    for w in weights: fused_linear(x, w).realize()
  assert len(items) == len(weights), [getattr(i, "kernel", i) for i in items]
  seconds = time_launches(items)
  return seconds * 1e6, (nbytes + 4 * (k + n)) / seconds / 1e9


def configurations(sweep: bool):
  """(label, setter, kinds it applies to or None for all); each setter sets the kernels' tuning constants and the
  fusion parts, and forgets compiled programs."""
  from teenygrad.helpers import config
  from teenygrad.nn import matvec_cuda, quant_cuda_packed
  defaults = (matvec_cuda.ROWS_PER_WARP, matvec_cuda.LOADS_AHEAD, quant_cuda_packed.rows_per_warp, quant_cuda_packed.LOADS_AHEAD,
              config.decode_fusion)
  def setter(rows: int, ahead: int, packed_rows, packed_ahead: int, fusion: str):
    def apply():
      matvec_cuda.ROWS_PER_WARP, matvec_cuda.LOADS_AHEAD = rows, ahead
      quant_cuda_packed.rows_per_warp, quant_cuda_packed.LOADS_AHEAD = packed_rows, packed_ahead
      config.decode_fusion = fusion
      matvec_cuda._float_matvecs.clear()
      quant_cuda_packed._packed.clear()
    return apply
  yield "default", setter(*defaults), None
  # the quantized weights in their GGUF blocks (nn/quant_cuda.py's matvec): what the packed layout is measured against
  yield "GGUF blocks", setter(*defaults[:4], "linear,norm,swiglu,float,rope"), ("Q4_0", "Q4_1", "Q8_0")
  if sweep:
    for rows, ahead, packed, packed_ahead in [(1, 8, 1, 1), (2, 4, 2, 2), (4, 8, 4, 1), (2, 16, 2, 4)]:
      yield (f"rows {rows}/{packed} ahead {ahead}/{packed_ahead}", setter(rows, ahead, lambda m, n, r=packed: r, packed_ahead, defaults[4]),
             None)
  setter(*defaults)()


def main() -> None:
  parser = argparse.ArgumentParser()
  parser.add_argument("--kinds", default="Q4_0,Q8_0,float16,bfloat16")
  parser.add_argument("--sweep", action="store_true", help="try other rows per warp and load batches too")
  args = parser.parse_args()
  rng = np.random.default_rng(0)
  print(f"{'kind':9s} {'matrix':14s} {'config':22s} {'us':>8s} {'GB/s':>8s} {'of HBM':>7s}")
  for label, apply, kinds in configurations(args.sweep):
    apply()
    for kind in args.kinds.split(","):
      if kinds is not None and kind not in kinds: continue
      for name, n, k in SHAPES:
        us, gbps = measure(kind, n, k, rng)
        print(f"{kind:9s} {f'{name} {n}x{k}':14s} {label:22s} {us:8.1f} {gbps:8.0f} {gbps / HBM_GBPS:7.1%}", flush=True)


if __name__ == "__main__":
  main()
