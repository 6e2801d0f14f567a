"""Training-step benchmark on the CPU: an MNIST-shaped CNN and a 3-layer MLP (batch 128, Adam), teenygrad against
torch measured in the same run.

  python bench/train.py              # prints a table and writes bench/results/train_cpu.txt
  python bench/train.py --profile    # also lists where teenygrad's step time goes, kernel by kernel

A step is zero_grad, forward, cross-entropy, backward, optimizer step and reading the loss (so the work is done);
"teenygrad+jit" is the same step under teenygrad.jit (launches replayed, no Python graph building or scheduling).
Medians over repeated steps on random data of MNIST's shape; the machine is shared, so quote the ratio."""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections import defaultdict

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
import teenygrad as tg  # noqa: E402
import teenygrad.optim as optim  # noqa: E402

BATCH = 128


def cnn(lib):
  m = lib.nn
  return m.Sequential(m.Conv2d(1, 32, 3), m.ReLU(), m.MaxPool2d(2), m.Conv2d(32, 64, 3), m.ReLU(), m.MaxPool2d(2), m.Flatten(),
                      m.Linear(64 * 5 * 5, 128), m.ReLU(), m.Linear(128, 10))


def mlp(lib):
  m = lib.nn
  return m.Sequential(m.Flatten(), m.Linear(784, 512), m.ReLU(), m.Linear(512, 256), m.ReLU(), m.Linear(256, 10))


def forward_flops(kind: str) -> int:
  """Multiply-adds x 2 of the forward pass; a training step is about 3x this."""
  if kind == "cnn":
    conv1 = 26 * 26 * 32 * 9
    conv2 = 11 * 11 * 64 * 32 * 9
    return 2 * BATCH * (conv1 + conv2 + 1600 * 128 + 128 * 10)
  return 2 * BATCH * (784 * 512 + 512 * 256 + 256 * 10)


def data(steps: int):
  rng = np.random.default_rng(0)
  return [(rng.standard_normal((BATCH, 1, 28, 28), dtype=np.float32), rng.integers(0, 10, BATCH)) for _ in range(steps)]


def teenygrad_step(model, opt):
  def step(x, y):
    opt.zero_grad()
    loss = model(tg.Tensor(x)).cross_entropy(tg.Tensor(y))
    loss.backward()
    opt.step()
    return loss.item()
  return step


def teenygrad_jit_step(model, opt):
  @tg.jit
  def train(x, y):
    loss = model(x).cross_entropy(y)
    opt.zero_grad()
    loss.backward()
    opt.step()
    return loss
  return lambda x, y: train(tg.Tensor(x), tg.Tensor(y)).item()


def torch_step(torch, model, opt):
  def step(x, y):
    opt.zero_grad()
    loss = torch.nn.functional.cross_entropy(model(torch.from_numpy(x)), torch.from_numpy(y))
    loss.backward()
    opt.step()
    return loss.item()
  return step


def time_steps(step, batches, warmup: int = 3) -> float:
  for x, y in batches[:warmup]: step(x, y)
  times = []
  for x, y in batches[warmup:]:
    start = time.perf_counter(); step(x, y); times.append(time.perf_counter() - start)
  return statistics.median(times)


def profile(kind: str, model, opt, batches) -> list[str]:
  """Re-launch each kernel of one captured step alone, timed, and sum by kernel name; the rest is Python overhead."""
  from teenygrad.engine.realize import capture_kernels, run_exec_item
  from teenygrad.helpers import config
  step = teenygrad_step(model, opt)
  x, y = batches[0]
  step(x, y)
  start = time.perf_counter()
  with capture_kernels() as launched: step(x, y)
  total = time.perf_counter() - start
  by_name: dict[str, list[float]] = defaultdict(list)
  previous, config.debug = config.debug, 2
  try:
    for item in launched:
      t0 = time.perf_counter()
      import contextlib
      import io
      with contextlib.redirect_stdout(io.StringIO()): run_exec_item(item)
      by_name[item.kernel.name].append(time.perf_counter() - t0)
  finally: config.debug = previous
  kernel_time = sum(sum(v) for v in by_name.values())
  lines = [f"profile {kind}: step {total * 1e3:.1f} ms wall, {len(launched)} kernels, {kernel_time * 1e3:.1f} ms in kernels, "
           f"{(total - kernel_time) * 1e3:.1f} ms elsewhere (scheduling, Python, host copies)"]
  for name, times in sorted(by_name.items(), key=lambda kv: -sum(kv[1]))[:12]:
    lines.append(f"  {name:40s} x{len(times):<3d} {sum(times) * 1e3:8.2f} ms")
  return lines


def main() -> None:
  parser = argparse.ArgumentParser()
  parser.add_argument("--steps", type=int, default=15)
  parser.add_argument("--profile", action="store_true")
  parser.add_argument("--threads", type=int, default=0, help="threads for both libraries (default: every usable core)")
  parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "train_cpu.txt"))
  args = parser.parse_args()
  import torch
  from teenygrad.helpers import config
  threads = args.threads or len(os.sched_getaffinity(0))
  torch.set_num_threads(threads)
  config.threads = threads
  batches = data(args.steps)
  lines = [f"machine: {len(os.sched_getaffinity(0))} cores usable (of {os.cpu_count()}); teenygrad {config.threads} threads; torch {torch.__version__} with {torch.get_num_threads()} threads; batch {BATCH}, Adam lr 1e-3; "
           f"median of {args.steps - 3} steps after 3 warm-up steps"]
  profiles = []
  for kind, build in (("cnn", cnn), ("mlp", mlp)):
    torch.manual_seed(0)
    t_model = build(torch)
    g_model = build(tg)
    g_model.load_state_dict(t_model.state_dict())
    j_model = build(tg)
    j_model.load_state_dict(t_model.state_dict())
    t_opt, g_opt = torch.optim.Adam(t_model.parameters(), lr=1e-3), optim.Adam(g_model.parameters(), lr=1e-3)
    j_opt = optim.Adam(j_model.parameters(), lr=1e-3)
    ours = time_steps(teenygrad_step(g_model, g_opt), batches)
    jitted = time_steps(teenygrad_jit_step(j_model, j_opt), batches)
    theirs = time_steps(torch_step(torch, t_model, t_opt), batches)
    gflops = 3 * forward_flops(kind) / 1e9
    lines.append(f"{kind:4s} train step  teenygrad {ours * 1e3:8.1f} ms ({gflops / ours:6.1f} GFLOP/s)  teenygrad+jit {jitted * 1e3:8.1f} ms "
                 f"({gflops / jitted:6.1f} GFLOP/s)  torch {theirs * 1e3:8.1f} ms ({gflops / theirs:6.1f} GFLOP/s)  "
                 f"teenygrad/torch time {ours / theirs:5.2f}x, with jit {jitted / theirs:5.2f}x  (goal <= 1.0x)")
    if args.profile: profiles += profile(kind, g_model, g_opt, batches)
  text = "\n".join(lines + profiles)
  print(text)
  os.makedirs(os.path.dirname(args.out), exist_ok=True)
  tmp = args.out + ".tmp"
  with open(tmp, "w") as f:
    f.write(text + "\n"); f.flush(); os.fsync(f.fileno())
  os.replace(tmp, args.out)


if __name__ == "__main__":
  main()
