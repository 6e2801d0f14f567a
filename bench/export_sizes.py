"""Sizes of exported libraries: flash (code + constant weights), RAM (arena + mutable state), the arena next to its
lower bound (the most intermediate bytes live at once), code per target; and the digits training step run 10 times
under QEMU on a Cortex-M4 with 64 KB of RAM, its loss against teenygrad's on the CPU.

  python bench/export_sizes.py            # prints, and writes bench/results/export_sizes.txt

Goals (issue 8): arena within 10% of the lower bound; MLP code (without weights) under 8 KB on Cortex-M4; the digits
training step within 64 KB of RAM. No peer (TFLite Micro, onnx2c) is installed here to measure against.
"""
from __future__ import annotations

import os
import platform
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from teenygrad import Tensor  # noqa: E402
from teenygrad.export import to_c  # noqa: E402
from teenygrad.export import examples  # noqa: E402
from teenygrad.export.targets import build_and_run, missing_tools, section_sizes  # noqa: E402

TARGETS = ["cortex-m3", "cortex-m4", "host"]


def measure(label: str, made: dict, workdir: Path, quantize=None) -> tuple[list[str], object]:
  extra = {k: made[k] for k in ("weights", "input_names", "output_names") if k in made}
  lib = to_c(made["fn"], made["inputs"], name=label, quantize=quantize, **extra)
  _, source = lib.write(workdir / label)
  lines = [f"== {label} =="]
  for target in TARGETS:
    if missing_tools(target): lines.append(f"{target}: not measured ({missing_tools(target)})"); continue
    sizes = section_sizes(target, source)
    lib.report.code_bytes[target] = sizes["text"]
  lines += lib.report.lines()
  return lines, lib


def digits_on_device(workdir: Path) -> list[str]:
  images, labels, source = examples.load_digits()
  batch, steps = 32, 10
  xs = [images[i * batch:(i + 1) * batch] for i in range(steps)]
  ys = [labels[i * batch:(i + 1) * batch] for i in range(steps)]
  made = examples.mlp_train_step((64, 32, 10), batch, 0.5, xs[0], ys[0])
  lines, lib = measure("digits_step", made, workdir)
  lines.insert(1, f"data: {source}, batch {batch}, SGD lr 0.5")
  step = made["fn"]
  cpu_losses = [None] + [float(step(Tensor(xs[i]), Tensor(ys[i])).numpy()) for i in range(1, steps)]
  if missing_tools("cortex-m4"):
    return lines + [f"not run on the device: {missing_tools('cortex-m4')}"]
  res = build_and_run(lib, "cortex-m4", [[x, y] for x, y in zip(xs, ys)], workdir / "digits_run", ram_bytes=64 * 1024)
  device = [float(o[0]) for o in res.outputs]
  lines.append(f"linked into 64 KB of RAM (data + bss + 8 KB stack) on mps2-an386 (Cortex-M4F) and ran {steps} steps under QEMU")
  lines.append("loss per step on the device: " + " ".join(f"{v:.6f}" for v in device))
  lines.append(f"loss after step {steps}: device {device[-1]:.7f}, teenygrad CPU {cpu_losses[-1]:.7f}, "
               f"relative difference {abs(device[-1] - cpu_losses[-1]) / abs(cpu_losses[-1]):.2e}")
  for name, want in ((f"digits_step_{n}", p.numpy()) for n, p in made["weights"].items()):
    lines.append(f"{name}: max |device - teenygrad| = {np.abs(res.state[name] - want).max():.2e}")
  return lines


def main() -> None:
  out = [f"# bench/export_sizes.py on {platform.machine()} {platform.system()}, python {platform.python_version()}",
         "# sizes in bytes; code = .text of the library alone (-Os), weights excluded; flash total adds constant weights and the",
         "# initial image of the mutable state; RAM = arena + mutable state (the caller's input/output buffers not included)"]
  with tempfile.TemporaryDirectory() as tmp:
    work = Path(tmp)
    for label, made, quantize in (("mnist_mlp", examples.mnist_mlp(), None), ("mnist_mlp_int8", examples.mnist_mlp(), "int8"),
                                  ("small_cnn", examples.small_cnn(), None)):
      out += measure(label, made, work, quantize)[0] + [""]
    out += digits_on_device(work)
  text = "\n".join(out) + "\n"
  print(text)
  results = Path(__file__).parent / "results" / "export_sizes.txt"
  results.parent.mkdir(parents=True, exist_ok=True)
  tmp_path = results.with_suffix(".tmp")
  with open(tmp_path, "w") as f:
    f.write(text); f.flush(); os.fsync(f.fileno())
  os.replace(tmp_path, results)


if __name__ == "__main__": main()
