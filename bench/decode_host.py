"""Host time of a batch-1 decode step: what the step costs outside the device's own work, piece by piece.

  DEV=VULKAN python bench/decode_host.py [--model PATH] [--steps 30]

Without --model it writes a SmolLM2-shaped skeleton (30 layers, 4/2 heads of 16, tiny widths, Q4_1) so the kernels
are nearly free and the step is its fixed costs. Each step is cut into: building the two input tensors (token and
position), the jitted call (argument checks, the replay handed to the device), the device running it (a
synchronize), and reading the token back; the host's share is also given as the Python thread's CPU time (its wall
time on a loaded machine includes waiting for a core). "waits" counts the host-device round trips (submits waited
for) per step outside that synchronize, on Vulkan only (--staging takes a discrete GPU's copy path on lavapipe too):
each costs a submit and a fence wait, tens of microseconds on a GPU driver. Medians over the steps.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))


def skeleton_model(path: str, qtype: str) -> None:
  sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "test"))
  from test_llm import write_tiny_gguf
  write_tiny_gguf(path, n_layers=30, dim=64, heads=4, kv_heads=2, hidden=128, vocab=256, qtype=qtype)


def main() -> None:
  parser = argparse.ArgumentParser()
  parser.add_argument("--model")
  parser.add_argument("--qtype", default="Q4_1", help="the skeleton's weight type")
  parser.add_argument("--steps", type=int, default=30)
  parser.add_argument("--staging", action="store_true", help="Vulkan: uploads and read-backs through staging buffers, as on a "
                      "discrete GPU, even where the device's memory is mapped (lavapipe)")
  args = parser.parse_args()
  from teenygrad.device import Device
  from teenygrad.ir.symbolic import BoundVariable
  from teenygrad.llm.generate import Generator
  from teenygrad.llm.load import load_model
  from teenygrad.llm.sampling import SamplingParams
  from teenygrad.tensor import Tensor
  if args.staging: Device[Device.DEFAULT].direct_access = False
  path = args.model or os.path.join(tempfile.mkdtemp(), f"skeleton_{args.qtype}.gguf")
  if not args.model: skeleton_model(path, args.qtype)
  model, tokenizer = load_model(path)
  tokenizer.stop_ids = set()
  generator = Generator(model, tokenizer)
  prompt = list(range(3, 19))
  generator.generate_ids([prompt], SamplingParams(max_tokens=6))   # compiles, captures the greedy decode step
  device = Device[model.device or Device.DEFAULT]
  waits, measuring_device = [0], False
  commands = getattr(device, "commands", None)
  if commands is not None:   # Vulkan: count the submits the host waits for
    real_sync = commands.synchronize
    def counted() -> None:
      if (commands.queued or commands.current is not None) and not measuring_device: waits[0] += 1
      real_sync()
    commands.synchronize = counted
  decode = generator._decode_greedy
  token = np.array([[5]], dtype=np.int32)
  pieces: list[list[float]] = [[], [], [], []]
  host_cpu: list[float] = []
  for step in range(args.steps + 3):
    position = len(prompt) + step
    t0, c0 = time.perf_counter(), time.thread_time()
    inputs = (Tensor(token, device=model.device), Tensor(np.array([position], dtype=np.int32), device=model.device))
    t1 = time.perf_counter()
    out = decode(*inputs, None, BoundVariable("start_pos", 0, generator.cache.max_len - 1, position))
    t2, c2 = time.perf_counter(), time.thread_time()
    measuring_device = True
    device.synchronize()
    measuring_device = False
    t3, c3 = time.perf_counter(), time.thread_time()
    out.numpy()
    t4, c4 = time.perf_counter(), time.thread_time()
    if step == 2: waits[0] = 0
    if step >= 3:
      for piece, seconds in zip(pieces, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)): piece.append(seconds)
      host_cpu.append(c2 - c0 + c4 - c3)   # the Python thread's own CPU time: steadier than wall time on a shared machine
  us = [statistics.median(p) * 1e6 for p in pieces]
  print(f"{os.path.basename(path)} on {device.name}: {decode.kernel_count} launches per step; per step (median us): "
        f"inputs {us[0]:.0f}, jit call {us[1]:.0f}, device {us[2]:.0f}, read-back {us[3]:.0f}; host (all but device) "
        f"{us[0] + us[1] + us[3]:.0f} us wall, {statistics.median(host_cpu) * 1e6:.0f} us CPU"
        + (f"; {waits[0] / args.steps:.1f} waits per step" if commands is not None else ""))


if __name__ == "__main__":
  main()
