"""Batch-1 decode's matvecs on CUDA at Llama-3-8B's shapes: the rate each reads its weights at, against HBM bandwidth.

  DEV=CUDA python bench/matvec_cuda.py [--kinds Q4_0,F16] [--sweep] [--shapes smollm2]

A row per (weight kind, shape, kernel configuration): microseconds per launch inside a CUDA graph and GB/s of weight
bytes (plus x and out), as a share of the H200's device copy (4.27 TB/s, bench/results/llm_gpu_h200.txt). Each
launch reads another copy of the weight (enough copies for 256 MB), so the weights come from HBM and not from the
50 MB L2. Kernel times come from CUDA events around a graph of back-to-back launches. The quantized kinds run three
ways: "default" (from 4M weights x rounded to int8, nn/quant_cuda_dp4a.py), "float x" (nn/quant_cuda_packed.py's
kernel) and "GGUF blocks" (nn/quant_cuda.py's); "down+swiglu" rows time the down projection with silu(gate) * up
folded into the matvec against an elementwise kernel and the matvec (two launches). `--sweep` also tries other rows
per warp and load batches (module constants: "rows 2/4 ahead 8/2" is float rows per warp / packed rows per warp,
float steps / packed steps of loads in flight; "dp4a w16 r2 a2 c16" the int8-x kernel's warps per block, rows per warp
steps of loads in flight and steps of x quantized into shared memory at a time): the numbers to pick them by.
"""
from __future__ import annotations

import argparse
import itertools
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
# SmolLM2-135M's (--shapes smollm2): 30 layers of these are a launch-bound decode step; 16 copies of one fit in L2
SMOLLM2_SHAPES = [("qkv", 960, 576), ("o", 576, 576), ("gate_up", 3072, 576), ("down", 576, 1536)]


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


QUANT_KINDS = ("Q4_0", "Q4_1", "Q8_0")


def weight_copies(kind: str, n: int, k: int, rng, cache: dict) -> tuple[list, int]:
  """Copies of a random (n, k) weight, enough for 256 MB, made once per kind and shape (the configurations share them,
  and the repacked copies with them), and the bytes of one."""
  if (kind, n, k) not in cache:
    first, nbytes = make_weight(kind, n, k, rng)
    cache[kind, n, k] = [first] + [make_weight(kind, n, k, rng)[0] for _ in range(min(15, (256 << 20) // nbytes))], nbytes
  return cache[kind, n, k]


def time_per_weight(run, weights, launches: int) -> float:
  """Seconds per weight of run(w) over the weights: compiled (and the weights repacked) outside the capture, then
  `launches` launches per weight captured and replayed."""
  for w in weights: run(w).realize()
  with capture_kernels() as items:
    for w in weights: run(w).realize()
  if len(items) != launches * len(weights):
    raise RuntimeError(f"{len(items)} launches for {len(weights)} weights: {sorted({i.kernel.name for i in items})}")
  return time_launches(items) * launches


def measure(kind: str, n: int, k: int, rng, cache: dict) -> tuple[float, float]:
  """(us per launch, GB/s) of fused_linear on a (1, k) x through copies of a (n, k) weight."""
  from teenygrad.llm.fused_linear import fused_linear
  weights, nbytes = weight_copies(kind, n, k, rng, cache)
  x = Tensor(rng.standard_normal((1, k), dtype=np.float32), device="CUDA").realize()
  seconds = time_per_weight(lambda w: fused_linear(x, w), weights, 1)
  return seconds * 1e6, (nbytes + 4 * (k + n)) / seconds / 1e9


def measure_swiglu(kind: str, n: int, k: int, rng, cache: dict, folded: bool) -> tuple[float, float]:
  """(us, GB/s) of the down projection of silu(gate) * up of a (1, 2k) x: folded into the matvec (past
  SWIGLU_FOLD_MAX, which fused_linear keeps to) or an elementwise kernel and then the matvec."""
  from teenygrad.llm.fused_linear import fused_linear
  from teenygrad.nn import matvec_cuda
  weights, nbytes = weight_copies(kind, n, k, rng, cache)
  x = Tensor(rng.standard_normal((1, 2 * k), dtype=np.float32), device="CUDA").realize()
  fold_max = matvec_cuda.CUDA_SWIGLU_FOLD_MAX
  try:
    if folded:
      matvec_cuda.CUDA_SWIGLU_FOLD_MAX = n * k
      seconds = time_per_weight(lambda w: fused_linear(x, w, swiglu=True), weights, 1)
    else:
      seconds = time_per_weight(lambda w: fused_linear((x[:, :k].silu() * x[:, k:]).contiguous(), w), weights, 2)
  finally: matvec_cuda.CUDA_SWIGLU_FOLD_MAX = fold_max
  return seconds * 1e6, (nbytes + 4 * (2 * k + n)) / seconds / 1e9


def measure_glu(kind: str, n: int, k: int, rng, cache: dict, epilogue: bool) -> tuple[float, float]:
  """(us, GB/s) of a gate/up projection followed by silu(gate) * up: in the matvec's glu epilogue (one launch) or
  the matvec and then the elementwise kernel (two)."""
  from teenygrad.llm.fused_linear import fused_linear
  weights, nbytes = weight_copies(kind, n, k, rng, cache)
  x = Tensor(rng.standard_normal((1, k), dtype=np.float32), device="CUDA").realize()
  def two(w):
    y = fused_linear(x, w)
    return (y[:, :n // 2].silu() * y[:, n // 2:]).contiguous()
  seconds = time_per_weight(lambda w: fused_linear(x, w, glu=True), weights, 1) if epilogue else time_per_weight(two, weights, 2)
  return seconds * 1e6, (nbytes + 4 * (k + n)) / seconds / 1e9


def configurations(sweep: bool):
  """(label, setter, kinds it applies to or None for all); each setter sets the kernels' tuning constants and the
  fusion parts (the others back to their defaults), and forgets compiled programs."""
  from teenygrad.helpers import config
  from teenygrad.nn import matvec_cuda, quant_cuda_dp4a, quant_cuda_packed
  knobs = [(matvec_cuda, "ROWS_PER_WARP"), (matvec_cuda, "LOADS_AHEAD"), (quant_cuda_packed, "rows_per_warp"),
           (quant_cuda_packed, "LOADS_AHEAD"), (quant_cuda_dp4a, "WARPS"), (quant_cuda_dp4a, "ROWS_PER_WARP"),
           (quant_cuda_dp4a, "LOADS_AHEAD"), (quant_cuda_dp4a, "CHUNK_STEPS"), (config, "decode_fusion"), (config, "matvec_early_loads")]
  defaults = [(owner, name, getattr(owner, name)) for owner, name in knobs]
  def setter(*changes):
    def apply():
      for owner, name, value in defaults + list(changes): setattr(owner, name, value)
      matvec_cuda._float_matvecs.clear()
      quant_cuda_packed._packed.clear()
    return apply
  float_x = (config, "decode_fusion", "linear,norm,swiglu,float,repack,rope")   # all but dp4a
  yield "default", setter(), None
  yield "loads after wait", setter((config, "matvec_early_loads", False)), None
  yield "float x", setter(float_x), QUANT_KINDS
  # the quantized weights in their GGUF blocks (nn/quant_cuda.py's matvec): what the packed layout is measured against
  yield "GGUF blocks", setter((config, "decode_fusion", "linear,norm,swiglu,float,rope")), QUANT_KINDS
  if sweep:
    for rows, ahead, packed, packed_ahead in [(1, 8, 1, 1), (2, 4, 2, 2), (4, 8, 4, 1), (2, 16, 2, 4)]:
      yield (f"rows {rows}/{packed} ahead {ahead}/{packed_ahead}",
             setter((matvec_cuda, "ROWS_PER_WARP", rows), (matvec_cuda, "LOADS_AHEAD", ahead),
                    (quant_cuda_packed, "rows_per_warp", lambda m, n, r=packed: r), (quant_cuda_packed, "LOADS_AHEAD", packed_ahead),
                    float_x), None)
    for warps, rows, ahead, chunk in itertools.product((8, 16), (1, 2), (2, 4), (16,)):
      yield (f"dp4a w{warps} r{rows} a{ahead} c{chunk}",
             setter((quant_cuda_dp4a, "WARPS", warps), (quant_cuda_dp4a, "ROWS_PER_WARP", rows), (quant_cuda_dp4a, "LOADS_AHEAD", ahead),
                    (quant_cuda_dp4a, "CHUNK_STEPS", chunk)), QUANT_KINDS)
  setter()()


def main() -> None:
  parser = argparse.ArgumentParser()
  parser.add_argument("--kinds", default="Q4_0,Q8_0,float16,bfloat16")
  parser.add_argument("--sweep", action="store_true", help="try other rows per warp, warps per block and load batches too")
  parser.add_argument("--shapes", choices=("llama8b", "smollm2"), default="llama8b")
  args = parser.parse_args()
  shapes = SMOLLM2_SHAPES if args.shapes == "smollm2" else SHAPES
  rng, cache = np.random.default_rng(0), {}
  print(f"{'kind':9s} {'matrix':18s} {'config':22s} {'us':>8s} {'GB/s':>8s} {'of HBM':>7s}")
  best: dict[tuple[str, str], tuple[float, str]] = {}
  def row(kind: str, matrix: str, label: str, us: float, gbps: float) -> None:
    print(f"{kind:9s} {matrix:18s} {label:22s} {us:8.1f} {gbps:8.0f} {gbps / HBM_GBPS:7.1%}", flush=True)
    best[kind, matrix] = max(best.get((kind, matrix), (0.0, "")), (gbps, label))
  for label, apply, kinds in configurations(args.sweep):
    apply()
    for kind in args.kinds.split(","):
      if kinds is not None and kind not in kinds: continue
      cases = [(f"{name} {n}x{k}", label, lambda n=n, k=k: measure(kind, n, k, rng, cache)) for name, n, k in shapes]
      if label in ("default", "float x") and kind in QUANT_KINDS:
        name, n, k = shapes[-1]
        cases += [(f"{name}+swiglu {n}x{k}", f"{label}, {'folded' if folded else '2 launches'}",
                   lambda folded=folded: measure_swiglu(kind, n, k, rng, cache, folded)) for folded in (True, False)]
      if label == "default":
        name, n, k = shapes[2]   # gate_up
        cases += [(f"{name}+glu {n}x{k}", f"{label}, {'epilogue' if epilogue else '2 launches'}",
                   lambda epilogue=epilogue: measure_glu(kind, n, k, rng, cache, epilogue)) for epilogue in (True, False)]
      for matrix, case_label, run in cases:
        try: row(kind, matrix, case_label, *run())
        except Exception as e:   # one failing configuration must not cost the rest of a GPU session's sweep
          print(f"{kind:9s} {matrix:18s} {case_label:22s} failed: {type(e).__name__}: {str(e)[:300]}", flush=True)
  print("\nfastest per kind and matrix:")
  for (kind, matrix), (gbps, label) in best.items(): print(f"{kind:9s} {matrix:18s} {label:22s} {gbps:8.0f} {gbps / HBM_GBPS:7.1%}")


if __name__ == "__main__":
  main()
