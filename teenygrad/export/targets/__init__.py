"""Build an exported library into a program and run it: on the host with -nostdlib, or on Arm Cortex-M under QEMU
(the MPS2 AN385 board with a Cortex-M3, AN386 with a Cortex-M4F), output through semihosting.

A harness (made here from the library and the inputs for each call) calls the entry point and prints every output,
and the state arrays after the last call, as hex bytes, so the values come back bit for bit. Used by the tests,
bench/export_sizes.py and `teenygrad export --run`.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

HERE = Path(__file__).parent
WARNINGS = ("-std=c99", "-ffreestanding", "-nostdlib", "-Wall", "-Wextra", "-Werror", "-Wdouble-promotion")


@dataclass(frozen=True)
class Target:
  name: str
  cc: str
  arch_flags: tuple
  startup: str
  qemu: tuple | None = None     # the emulator command, None to run natively
  size_tool: str = "size"


TARGETS = {
  "host": Target("host", os.environ.get("CC", "gcc"), ("-static", "-fno-pie", "-no-pie", "-fno-stack-protector"), "host/start.c"),
  "cortex-m3": Target("cortex-m3", "arm-none-eabi-gcc", ("-mcpu=cortex-m3", "-mthumb"), "mps2/startup.c",
                      ("qemu-system-arm", "-M", "mps2-an385", "-cpu", "cortex-m3"), "arm-none-eabi-size"),
  "cortex-m4": Target("cortex-m4", "arm-none-eabi-gcc", ("-mcpu=cortex-m4", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv4-sp-d16"),
                      "mps2/startup.c", ("qemu-system-arm", "-M", "mps2-an386", "-cpu", "cortex-m4"), "arm-none-eabi-size"),
}


class BuildError(RuntimeError):
  """The compiler or linker rejected the program (the message has its output)."""


def missing_tools(target: str) -> str | None:
  """Why `target` cannot be built and run here (a missing tool, and the apt package that has it), or None."""
  t = TARGETS[target]
  tools = [t.cc] + ([t.qemu[0], t.size_tool] if t.qemu else [])
  packages = {"arm-none-eabi-gcc": "gcc-arm-none-eabi", "arm-none-eabi-size": "binutils-arm-none-eabi",
              "qemu-system-arm": "qemu-system-arm"}
  for tool in tools:
    if shutil.which(tool) is None: return f"{tool} not found (apt-get install {packages.get(tool, tool)})"
  if target == "host" and os.uname().machine not in ("x86_64", "aarch64"): return "host startup covers x86-64 and aarch64 Linux"
  return None


def _run_tool(cmd: list, what: str) -> str:
  result = subprocess.run(cmd, capture_output=True, text=True)
  if result.returncode != 0: raise BuildError(f"{what} failed ({' '.join(map(str, cmd))}):\n{result.stderr}{result.stdout}")
  return result.stdout


def build(target: str, sources: list, out: Path, opt: str = "-Os", ram_bytes: int | None = None, stack_bytes: int = 8192,
          include_dirs: tuple = ()) -> Path:
  """Compile and link sources with the target's startup code into the program `out`. On the MPS2 boards,
  ram_bytes caps RAM (data + bss + stack): a program that needs more fails to link."""
  t = TARGETS[target]
  cmd = [t.cc, *WARNINGS, opt, *t.arch_flags, f"-I{HERE}", *(f"-I{d}" for d in include_dirs), *map(str, sources), str(HERE / t.startup)]
  if t.qemu:
    script = (HERE / "mps2" / "mps2.ld").read_text()
    script = script.replace("@RAM_LENGTH@", str(ram_bytes or 4 << 20)).replace("@STACK_SIZE@", str(stack_bytes))
    ld = Path(out).with_suffix(".ld")
    ld.write_text(script)
    cmd += ["-T", str(ld), "-lgcc"]   # libgcc: the compiler's own soft-float and 64-bit division helpers, not libc
  _run_tool(cmd + ["-o", str(out)], f"building for {target}")
  return Path(out)


def run(target: str, program: Path, timeout: float = 120.0) -> str:
  """Run the program (under QEMU for the boards); its stdout, or RuntimeError with the exit status."""
  t = TARGETS[target]
  if t.qemu:
    cmd = [*t.qemu, "-display", "none", "-monitor", "none", "-serial", "none",
           "-semihosting-config", "enable=on,target=native,chardev=tg_out", "-chardev", "stdio,id=tg_out", "-kernel", str(program)]
  else: cmd = [str(program)]
  try: result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
  except subprocess.TimeoutExpired as e: raise RuntimeError(f"{program} on {target} did not finish in {timeout} s") from e
  if result.returncode != 0:
    raise RuntimeError(f"{program} on {target} exited with {result.returncode}:\n{result.stdout[-2000:]}{result.stderr[-2000:]}")
  return result.stdout


def section_sizes(target: str, source: Path, opt: str = "-Os", include_dirs: tuple = ()) -> dict[str, int]:
  """Bytes of code (.text), constants (.rodata), initialised data (.data) and zeroed data (.bss) of one source file
  compiled alone for the target."""
  t = TARGETS[target]
  with tempfile.TemporaryDirectory() as tmp:
    obj = Path(tmp) / "lib.o"
    flags = [f for f in t.arch_flags if f not in ("-static", "-no-pie")]
    _run_tool([t.cc, *WARNINGS, opt, *flags, "-ffunction-sections", "-fdata-sections", *(f"-I{d}" for d in include_dirs),
               "-c", str(source), "-o", str(obj)], f"compiling {source} for {target}")
    listing = _run_tool([t.size_tool, "-A", str(obj)], "size")
  sizes = {"text": 0, "rodata": 0, "data": 0, "bss": 0}
  for line in listing.splitlines():
    m = re.match(r"^\.(text|rodata|data|bss)\S*\s+(\d+)", line)
    if m: sizes[m.group(1)] += int(m.group(2))
  return sizes


# ---- the harness ----

def _c_array(name: str, values: np.ndarray, dtype, const: bool) -> str:
  from teenygrad.export.emit import _ctype, format_array
  return f"static {'const ' if const else ''}{_ctype(dtype)} {name}[{max(values.size, 1)}] = {format_array(values, dtype)};"


HARNESS_RUNTIME = r"""
static char tg_line[200];
static int tg_fill;
static void tg_flush(void) { tg_line[tg_fill] = 0; tg_write(tg_line); tg_fill = 0; }
static void tg_put(char c) { tg_line[tg_fill++] = c; if (tg_fill == (int)sizeof tg_line - 1) tg_flush(); }
static void tg_text(const char *s) { while (*s) tg_put(*s++); }
static void tg_number(int n) {
  char digits[12]; int k = 0;
  do { digits[k++] = (char)('0' + n % 10); n /= 10; } while (n);
  while (k) tg_put(digits[--k]);
}
static void tg_hex(const char *label, int index, const void *data, int nbytes) {
  const unsigned char *bytes = (const unsigned char *)data;
  tg_text(label); tg_put(' '); tg_number(index); tg_put(' ');
  for (int i = 0; i < nbytes; i++) { tg_put("0123456789abcdef"[bytes[i] >> 4]); tg_put("0123456789abcdef"[bytes[i] & 15]); }
  tg_put('\n'); tg_flush();
}
"""


def harness(lib, calls: list[list[np.ndarray]], print_state: bool = True) -> str:
  """C source of a main() that calls the entry point once per entry of `calls` (the inputs for that call),
  printing each call's outputs and, at the end, every state array."""
  lines = ['#include "tg_target.h"', f'#include "{lib.name}.h"', HARNESS_RUNTIME]
  for c, inputs in enumerate(calls):
    if len(inputs) != len(lib.inputs): raise ValueError(f"call {c} has {len(inputs)} inputs, the library takes {len(lib.inputs)}")
    for i, (spec, value) in enumerate(zip(lib.inputs, inputs)):
      value = np.asarray(value)
      if value.size != spec.elements: raise ValueError(f"call {c} input {spec.name}: {value.size} values, expected {spec.elements}")
      lines.append(_c_array(f"call{c}_in{i}", value.astype(spec.dtype.np), spec.dtype, const=True))
  for o, spec in enumerate(lib.outputs):
    lines.append(f"static {_ctype_of(spec.dtype)} out{o}[{max(spec.elements, 1)}];")
  lines.append("int main(void) {")
  for c in range(len(calls)):
    args = [f"call{c}_in{i}" for i in range(len(lib.inputs))] + [f"out{o}" for o in range(len(lib.outputs))]
    lines.append(f"  {lib.name}({', '.join(args)});")
    for o, spec in enumerate(lib.outputs):
      lines.append(f'  tg_hex("out{o}", {c}, out{o}, {spec.elements * spec.dtype.itemsize});')
  if print_state:
    for s, spec in enumerate(lib.state):
      lines.append(f'  tg_hex("state{s}", {len(calls) - 1}, {spec.name}, {spec.elements * spec.dtype.itemsize});')
  lines += ['  tg_text("done\\n"); tg_flush();', "  return 0;", "}", ""]
  return "\n".join(lines)


def _ctype_of(dtype) -> str:
  from teenygrad.export.emit import _ctype
  return _ctype(dtype)


@dataclass
class RunResult:
  outputs: list[list[np.ndarray]]     # per call, per output
  state: dict[str, np.ndarray]        # state array name -> values after the last call


def parse_output(lib, text: str, n_calls: int) -> RunResult:
  if "done" not in text.split(): raise RuntimeError(f"the program did not finish its output:\n{text[-2000:]}")
  outputs: list[list] = [[None] * len(lib.outputs) for _ in range(n_calls)]
  state = {}
  for line in text.splitlines():
    parts = line.split()
    if len(parts) != 3: continue
    label, index, payload = parts[0], int(parts[1]), bytes.fromhex(parts[2])
    if label.startswith("out"):
      spec = lib.outputs[int(label[3:])]
      outputs[index][int(label[3:])] = np.frombuffer(payload, dtype=spec.dtype.np).reshape(spec.shape)
    elif label.startswith("state"):
      spec = lib.state[int(label[5:])]
      state[spec.name] = np.frombuffer(payload, dtype=spec.dtype.np).reshape(spec.shape)
  return RunResult(outputs, state)


def build_and_run(lib, target: str, calls: list[list[np.ndarray]], workdir: Path, ram_bytes: int | None = None,
                  opt: str = "-Os", timeout: float = 120.0) -> RunResult:
  """Write the library and a harness into workdir, build for the target, run, and parse what it printed."""
  workdir = Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  _, source = lib.write(workdir)
  main = workdir / f"{lib.name}_main.c"
  main.write_text(harness(lib, calls))
  program = build(target, [source, main], workdir / f"{lib.name}_{target}.elf", opt=opt, ram_bytes=ram_bytes, include_dirs=(workdir,))
  return parse_output(lib, run(target, program, timeout), len(calls))


__all__ = ["TARGETS", "BuildError", "missing_tools", "build", "run", "section_sizes", "harness", "parse_output", "build_and_run",
           "RunResult"]
