"""CUDA benchmarks on the GPU machine, against torch on the same GPU in the same run.

  python bench/gpu.py [--quick] [--out FILE]   # prints a table; writes bench/results/gpu_<gpu>.txt or FILE

Rows: GEMM 4096 and 8192 in fp16, bf16, fp32 (TFLOP/s, ratio to cuBLAS through torch); a fused elementwise chain,
softmax and layernorm (GB/s counting each input read once and the output written once, ratio to a device-to-device
copy); the launch overhead of one kernel, eager and inside a graph replay (what the JIT replays as one CUDA graph).
Kernel times come from CUDA events around a CUDA graph of REPS back-to-back launches (no launch gaps), median of
several; inputs are random (never zeros).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
os.environ.setdefault("DEV", "CUDA")
import torch  # noqa: E402

from teenygrad import Tensor, dtypes  # noqa: E402
from timing import graph_seconds  # noqa: E402
from teenygrad.device import Device  # noqa: E402
from teenygrad.engine.realize import capture_kernels  # noqa: E402


time_items = graph_seconds   # seconds per run of the captured launches, as one device graph


def time_torch(fn, reps: int, trials: int = 5) -> float:
  fn(); torch.cuda.synchronize()
  graph = torch.cuda.CUDAGraph()
  stream = torch.cuda.Stream()
  with torch.cuda.stream(stream):
    fn(); stream.synchronize()
    with torch.cuda.graph(graph, stream=stream):
      for _ in range(reps): fn()
  times = []
  for _ in range(trials):
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record(); graph.replay(); end.record(); end.synchronize()
    times.append(start.elapsed_time(end) / 1e3 / reps)
  return statistics.median(times)


def capture(fn):
  with capture_kernels() as items: out = fn().realize()
  return out, list(items)


def row(name: str, unit: str, ours: float, peer_name: str, peer: float, note: str = "") -> str:
  return f"{name:34s} {unit:8s} teenygrad {ours:9.1f}   {peer_name} {peer:9.1f}   ratio {ours / peer:5.2f}  {note}"


def main() -> None:
  parser = argparse.ArgumentParser()
  parser.add_argument("--quick", action="store_true", help="small sizes only (a smoke test)")
  parser.add_argument("--out", default=None)
  parser.add_argument("--no-experiments", action="store_true", help="only the rows of what the library runs by default")
  parser.add_argument("--only", default=None, help="comma-separated experiment configs: run just those, print, write nothing")
  args = parser.parse_args()
  backend = Device["CUDA"]
  if args.only:
    return experiments(backend, (1024,) if args.quick else (4096, 8192), torch.device("cuda"), print, set(args.only.split(",")))
  gpu = backend.name_string()
  torch_dev = torch.device("cuda")
  rng = np.random.default_rng(0)
  lines = [f"device: {gpu} ({backend.arch}, {backend.multiprocessors} SMs); torch {torch.__version__}; "
           f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}"]
  def emit(line: str) -> None:
    print(line, flush=True); lines.append(line)
  emit(lines.pop())

  # ---- copy bandwidth: the ceiling for memory-bound kernels ----
  n = (1 << 24) if args.quick else (1 << 28)
  src_t, dst_t = torch.randn(n, device=torch_dev), torch.empty(n, device=torch_dev)
  copy_s = time_torch(lambda: dst_t.copy_(src_t), 10)
  torch_copy_gbs = 2 * 4 * n / copy_s / 1e9
  # the driver's own device-to-device copy of the same bytes, timed with events over 10 copies
  from teenygrad.device import Buffer
  src_b, dst_b = Buffer("CUDA", n, dtypes.float32), Buffer("CUDA", n, dtypes.float32)
  for _ in range(2): backend.transfer(dst_b, src_b)
  driver_times = []
  for _ in range(5):
    start, end = backend.new_event(), backend.new_event()
    backend.record(start)
    for _ in range(10): backend.transfer(dst_b, src_b)
    backend.record(end)
    driver_times.append(backend.elapsed(start, end) / 10)
  driver_copy_gbs = 2 * 4 * n / statistics.median(driver_times) / 1e9
  del src_b, dst_b
  copy_gbs = max(torch_copy_gbs, driver_copy_gbs)
  emit(f"{'device-to-device copy':34s} GB/s     torch copy_ {torch_copy_gbs:7.1f}   cuMemcpyDtoD {driver_copy_gbs:7.1f}   "
       f"(bytes read + written, {n * 4 / 2**20:.0f} MiB each way; the larger is the ceiling below)")

  # ---- GEMM ----
  sizes = (1024,) if args.quick else (4096, 8192)
  for dtype_name in ("float16", "bfloat16", "float32"):
    torch_dtype = getattr(torch, dtype_name)
    for size in sizes:
      a_t = torch.randn(size, size, device=torch_dev, dtype=torch_dtype)
      b_t = torch.randn(size, size, device=torch_dev, dtype=torch_dtype)
      flops = 2 * size ** 3
      reps = 3 if size >= 8192 else 10
      peer_s = time_torch(lambda: a_t @ b_t, reps)
      a = Tensor(a_t.float().cpu().numpy()).cast(getattr(dtypes, dtype_name)).realize()
      b = Tensor(b_t.float().cpu().numpy()).cast(getattr(dtypes, dtype_name)).realize()
      out, items = capture(lambda: a @ b)
      names = [ei.kernel.name for ei in items]
      ours_s = time_items(backend, items, reps)
      # correctness of what was timed: relative Frobenius error against torch's product in float64 on a sample
      ref = (a_t[:256].double() @ b_t.double()).cpu().numpy()
      got = out[:256].float().numpy().astype(np.float64)
      err = np.linalg.norm(got - ref) / np.linalg.norm(ref)
      emit(row(f"gemm {dtype_name} {size}", "TFLOP/s", flops / ours_s / 1e12, "cuBLAS", flops / peer_s / 1e12,
               f"rel err {err:.1e}  kernels {names}"))
      # nn.Linear's layout, x @ w.T (B k-major): what a model's projections run
      peer_s = time_torch(lambda: a_t @ b_t.T, reps)
      out, items = capture(lambda: a.linear(b))
      ours_s = time_items(backend, items, reps)
      ref = (a_t[:256].double() @ b_t.double().T).cpu().numpy()
      err = np.linalg.norm(out[:256].float().numpy().astype(np.float64) - ref) / np.linalg.norm(ref)
      emit(row(f"gemm {dtype_name} {size} x @ w.T", "TFLOP/s", flops / ours_s / 1e12, "cuBLAS", flops / peer_s / 1e12,
               f"rel err {err:.1e}  kernels {[ei.kernel.name for ei in items]}"))

  # ---- memory-bound kernels ----
  rows, cols = (1024, 4096) if args.quick else (16384, 8192)
  numel = rows * cols
  x_np = rng.standard_normal(numel, dtype=np.float32)
  y_np = rng.standard_normal(numel, dtype=np.float32)
  x, y = Tensor(x_np).realize(), Tensor(y_np).realize()
  xt, yt = torch.from_numpy(x_np).to(torch_dev), torch.from_numpy(y_np).to(torch_dev)
  _, items = capture(lambda: ((x * 1.5 + y).relu() * 0.5 - x.sigmoid() * y))
  ours = 3 * 4 * numel / time_items(backend, items, 10) / 1e9
  peer = 3 * 4 * numel / time_torch(lambda: (xt * 1.5 + yt).relu() * 0.5 - xt.sigmoid() * yt, 10) / 1e9
  emit(row("fused elementwise (2 in, 1 out)", "GB/s", ours, "copy", copy_gbs, f"torch eager {peer:.0f} GB/s ({peer / copy_gbs:.2f}x copy)"))

  x2, x2t = x.reshape(rows, cols), xt.reshape(rows, cols)
  _, items = capture(lambda: x2.softmax(-1))
  ours = 2 * 4 * numel / time_items(backend, items, 10) / 1e9
  peer = 2 * 4 * numel / time_torch(lambda: torch.softmax(x2t, -1), 10) / 1e9
  emit(row(f"softmax {rows}x{cols}", "GB/s", ours, "copy", copy_gbs, f"torch {peer:.0f} GB/s ({peer / copy_gbs:.2f}x copy); kernels {len(items)}"))

  w_np, b_np = rng.standard_normal(cols, dtype=np.float32), rng.standard_normal(cols, dtype=np.float32)
  w, bias = Tensor(w_np).realize(), Tensor(b_np).realize()
  wt, bt = torch.from_numpy(w_np).to(torch_dev), torch.from_numpy(b_np).to(torch_dev)
  _, items = capture(lambda: x2.layer_norm((cols,), w, bias))
  ours = 2 * 4 * numel / time_items(backend, items, 10) / 1e9
  peer = 2 * 4 * numel / time_torch(lambda: torch.nn.functional.layer_norm(x2t, (cols,), wt, bt), 10) / 1e9
  emit(row(f"layernorm {rows}x{cols}", "GB/s", ours, "copy", copy_gbs, f"torch {peer:.0f} GB/s ({peer / copy_gbs:.2f}x copy); kernels {len(items)}"))

  # ---- launch overhead ----
  from teenygrad.engine.realize import run_exec_item
  tiny = Tensor(np.ones(1, np.float32)).realize()
  _, items = capture(lambda: tiny + 1)
  count = 2000
  backend.synchronize()
  start = time.perf_counter()
  for _ in range(count): run_exec_item(items[0])
  backend.synchronize()
  eager_us = (time.perf_counter() - start) / count * 1e6
  tiny_t = torch.ones(1, device=torch_dev)
  torch.cuda.synchronize()
  start = time.perf_counter()
  for _ in range(count): tiny_t.add_(1)
  torch.cuda.synchronize()
  torch_us = (time.perf_counter() - start) / count * 1e6
  emit(row("launch, eager (1 kernel)", "us", eager_us, "torch eager", torch_us, "host time per launch, launches back to back"))
  graph = backend.graph(items * 100)
  graph(); backend.synchronize()
  start = time.perf_counter()
  for _ in range(20): graph()
  backend.synchronize()
  graph_us = (time.perf_counter() - start) / (20 * 100) * 1e6
  one = backend.graph(items)
  one(); backend.synchronize()
  start = time.perf_counter()
  for _ in range(count): one()
  backend.synchronize()
  one_us = (time.perf_counter() - start) / count * 1e6
  emit(row("launch, in a graph replay", "us", graph_us, "eager", eager_us,
           f"per kernel of a 100-kernel graph; a 1-kernel graph replay costs {one_us:.1f} us end to end"))

  from teenygrad.engine.jit import jit
  @jit
  def one_kernel(t): return t + 1
  @jit
  def hundred_kernels(t):
    for _ in range(100): t = (t * 0.5 + 1).realize()
    return t
  for fn, kernels in ((one_kernel, 1), (hundred_kernels, 100)):
    for _ in range(3): fn(tiny)
    backend.synchronize()
    calls = 2000 // kernels + 20
    start = time.perf_counter()
    for _ in range(calls): fn(tiny)
    backend.synchronize()
    per_call = (time.perf_counter() - start) / calls * 1e6
    graphs = fn.capture.graph_launches if getattr(fn.capture, "graph", None) is not None else 0
    emit(row(f"jit replay, {kernels} kernel(s)", "us", per_call / kernels, "eager", eager_us,
             f"per kernel; {per_call:.1f} us per call (input/output copies and Python included); graph launches {graphs}"))

  out = args.out or os.path.join(os.path.dirname(__file__), "results", f"gpu_{'h200' if 'H200' in gpu else 'h100' if 'H100' in gpu else 'cuda'}.txt")
  header = ["# bench/gpu.py: teenygrad CUDA backend vs torch " + torch.__version__ + " on the same GPU, same run", ""]
  os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)

  def save() -> None:
    with open(out + ".tmp", "w") as f: f.write("\n".join(header + lines) + "\n")
    os.replace(out + ".tmp", out)
  save()   # the main rows are safe before any experiment runs (a faulting kernel ends the CUDA context)
  if args.no_experiments: print(f"wrote {out}"); return
  emit("")
  emit("experiments (not what the library runs by default):")
  experiments(backend, sizes, torch_dev, emit)
  save()
  print(f"wrote {out}")


def experiments(backend, sizes, torch_dev, emit, only: set[str] | None = None) -> None:
  """Other tensor-core tiles on a @ b, the wgmma (sm_90a) kernel against mma.sync on the linear layout x @ w.T, and
  the fp32 kernels (SIMT at 2 or 1 blocks per SM, 3xTF32 configs) on both layouts."""
  import teenygrad.renderer.cuda_gemm as cuda_gemm
  from teenygrad.engine import realize as engine_realize
  from teenygrad.renderer import cuda_tf32

  def with_setting(module, attribute, config, fn):
    default = getattr(module, attribute)
    setattr(module, attribute, config)
    engine_realize._kernel_cache.clear()
    try: return capture(fn)
    finally:
      setattr(module, attribute, default)
      engine_realize._kernel_cache.clear()
  def with_tc_config(config, fn): return with_setting(cuda_gemm, "TC_DEFAULT", config, fn)
  def with_fp32_config(config, fn): return with_setting(cuda_tf32, "FP32_DEFAULT", config, fn)

  wgmma = ("wgmma", "wgmma256", "wgmma+overlap", "wgmma256+overlap", "wgmma-tma", "wgmma-tma128")
  cases = [(config, size, "a @ b") for config in [*cuda_gemm.TC_CONFIGS, *wgmma] if config != cuda_gemm.TC_DEFAULT or only for size in sizes]
  cases += [(config, size, "x @ w.T") for size in sizes for config in ("128x128x32", *wgmma)]
  cases += [(config, size, layout) for config in cuda_tf32.FP32_CONFIGS for size in sizes for layout in ("a @ b", "x @ w.T")]
  for config, size, layout in cases:
    if only is not None and config not in only: continue
    fp32 = config in cuda_tf32.FP32_CONFIGS
    dtype_name = "fp32" if fp32 else "fp16"
    try:
      torch_dtype = torch.float32 if fp32 else torch.float16
      a_t = torch.randn(size, size, device=torch_dev, dtype=torch_dtype)
      b_t = torch.randn(size, size, device=torch_dev, dtype=torch_dtype)
      a, b = (Tensor(t.float().cpu().numpy()) for t in (a_t, b_t))
      a, b = (a.realize(), b.realize()) if fp32 else (a.half().realize(), b.half().realize())
      with_config = with_fp32_config if fp32 else with_tc_config
      if layout == "a @ b": out, items = with_config(config, lambda: a @ b); peer_fn, ref_b = (lambda: a_t @ b_t), b_t.double()
      else: out, items = with_config(config, lambda: a.linear(b)); peer_fn, ref_b = (lambda: a_t @ b_t.T), b_t.double().T
      reps = 3 if size >= 8192 else 10
      ours_s, peer_s = time_items(backend, items, reps), time_torch(peer_fn, reps)
      ref = (a_t[:256].double() @ ref_b).cpu().numpy()
      err = np.linalg.norm(out[:256].float().numpy() - ref) / np.linalg.norm(ref)
      flops = 2 * size ** 3
      emit(row(f"  {config} {dtype_name} {size} {layout}", "TFLOP/s", flops / ours_s / 1e12, "cuBLAS", flops / peer_s / 1e12,
               f"rel err {err:.1e}  kernels {[ei.kernel.name for ei in items]}"))
    except Exception as e:  # noqa: BLE001 -- an experiment that fails is reported, the run goes on
      emit(f"  {config} {dtype_name} {size} {layout} failed: {type(e).__name__}: {str(e)[:300]}")


if __name__ == "__main__":
  main()
