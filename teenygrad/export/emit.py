"""Emit: a captured function as a C99 library (one header, one source file) plus its size report."""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

import numpy as np

from teenygrad.dtype import DType, dtypes
from teenygrad.export.capture import Capture, ExportError
from teenygrad.export.planner import ArenaPlan, Lifetime, plan_arena
from teenygrad.renderer.c_freestanding import support_code


@dataclass(frozen=True)
class TensorSpec:
  """An entry-point argument or a state array, as the C side sees it."""
  name: str          # C identifier
  shape: tuple
  dtype: DType

  @property
  def elements(self) -> int:
    n = 1
    for s in self.shape: n *= s
    return n


@dataclass
class SizeReport:
  const_weight_bytes: int      # static const arrays: flash
  state_bytes: int             # mutable weights and optimizer state: RAM (their initial values also sit in flash)
  arena_bytes: int
  arena_lower_bound: int       # most intermediate bytes live at one time
  io_bytes: int                # the caller's input and output buffers (not counted in RAM below)
  kernels: int
  code_bytes: dict[str, int] = field(default_factory=dict)   # target -> .text bytes of the library, when measured

  @property
  def ram_bytes(self) -> int: return self.arena_bytes + self.state_bytes

  @property
  def arena_overhead(self) -> float: return self.arena_bytes / self.arena_lower_bound - 1 if self.arena_lower_bound else 0.0

  def flash_bytes(self, target: str) -> int:
    """Code + constant weights (+ the initial image of the state, which startup code copies to RAM)."""
    return self.code_bytes[target] + self.const_weight_bytes + self.state_bytes

  def lines(self) -> list[str]:
    out = [f"kernels: {self.kernels}",
           f"constant weights (flash): {self.const_weight_bytes} B",
           f"mutable state (RAM): {self.state_bytes} B",
           f"arena (RAM): {self.arena_bytes} B, lower bound {self.arena_lower_bound} B ({self.arena_overhead * 100:.1f}% over)",
           f"RAM total (arena + state): {self.ram_bytes} B (caller's inputs/outputs: {self.io_bytes} B)"]
    for target, code in self.code_bytes.items():
      out.append(f"code on {target}: {code} B; flash total (code + weights + state image): {self.flash_bytes(target)} B")
    return out

  def __str__(self) -> str: return "\n".join(self.lines())


@dataclass
class ExportedLibrary:
  name: str
  header: str
  source: str
  inputs: list[TensorSpec]
  outputs: list[TensorSpec]
  state: list[TensorSpec]      # mutable arrays, global in C (read or overwrite them between calls)
  constants: list[TensorSpec]
  report: SizeReport
  plan: ArenaPlan
  lifetimes: list[Lifetime]

  def write(self, out_dir) -> tuple:
    """Write `<name>.h` and `<name>.c` into out_dir (each atomically: a temp file, fsync, rename)."""
    from pathlib import Path

    from teenygrad.export.files import write_atomic
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    header, source = out / f"{self.name}.h", out / f"{self.name}.c"
    write_atomic(header, self.header)
    write_atomic(source, self.source)
    return header, source


def _c_name(text: str) -> str:
  name = re.sub(r"\W", "_", text)
  return name if name and not name[0].isdigit() else f"t_{name}"


def _ctype(dtype: DType) -> str: return "_Bool" if dtype == dtypes.bool else dtype.ctype


def format_array(values: np.ndarray, dtype: DType) -> str:
  """C initializer text for the values, exact: floats with 9 significant digits round-trip in fp32."""
  flat = values.reshape(-1)
  if dtype == dtypes.float32:
    texts = []
    for v in flat.astype(np.float32).tolist():
      if v != v: texts.append('__builtin_nanf("")')
      elif v in (float("inf"), float("-inf")): texts.append("__builtin_inff()" if v > 0 else "(-__builtin_inff())")
      else:
        t = f"{v:.9g}"
        texts.append((t if any(c in t for c in ".e") else t + ".0") + "f")
  elif dtype == dtypes.float64:
    texts = []
    for v in flat.tolist():
      if v != v: texts.append('__builtin_nan("")')
      elif v in (float("inf"), float("-inf")): texts.append("__builtin_inf()" if v > 0 else "(-__builtin_inf())")
      else: texts.append(repr(float(v)) if any(c in repr(float(v)) for c in ".e") else repr(float(v)) + ".0")
  elif dtype == dtypes.bool: texts = ["1" if v else "0" for v in flat.tolist()]
  elif dtype == dtypes.int64: texts = [f"{int(v)}LL" if v != -(1 << 63) else "(-9223372036854775807LL-1)" for v in flat.tolist()]
  elif dtype == dtypes.uint32: texts = [f"{int(v)}u" for v in flat.tolist()]
  elif dtype == dtypes.int32: texts = [str(int(v)) if v != -(1 << 31) else "(-2147483647-1)" for v in flat.tolist()]
  elif dtype.is_float: raise NotImplementedError(f"export cannot store {dtype.name} arrays")
  else: texts = [str(int(v)) for v in flat.tolist()]
  rows = [", ".join(texts[i:i + 12]) for i in range(0, len(texts), 12)]
  return "{\n  " + ",\n  ".join(rows) + "\n}" if rows else "{0}"


def quantize_per_channel(values: np.ndarray, shape: tuple) -> tuple[np.ndarray, np.ndarray]:
  """Symmetric int8 per output channel (axis 0): q = round(w / s), s = max|w| / 127 (1 for an all-zero channel)."""
  rows = values.astype(np.float32).reshape(shape[0], -1)
  scale = np.abs(rows).max(axis=1) / 127.0
  scale = np.where(scale > 0, scale, 1.0).astype(np.float32)
  q = np.clip(np.rint(rows / scale[:, None]), -127, 127).astype(np.int8)
  return q.reshape(-1), scale


def dequantize(q: np.ndarray, scale: np.ndarray, shape: tuple) -> np.ndarray:
  """What the exported kernels compute from int8 weights (for checking against teenygrad)."""
  return (q.reshape(shape[0], -1).astype(np.float32) * scale[:, None]).reshape(shape)


def emit(name: str, capture: Capture, inputs: list, outputs: list, names: dict[int, str], alignment: int = 8) -> ExportedLibrary:
  """inputs/outputs: (C name, buffer id, shape, dtype) in entry-point order."""
  infos = capture.buffers
  input_ids = {bid for _, bid, _, _ in inputs}
  output_ids = [bid for _, bid, _, _ in outputs]
  kernels = _live_kernels(capture, set(output_ids))
  step_of = {k: i for i, k in enumerate(kernels)}

  # roles
  consts, states, arena_ids = [], [], []
  for bid, info in infos.items():
    used = [step_of[k] for k in info.reads + info.writes if k in step_of]
    if not used: continue
    if bid in input_ids: continue
    if info.external: (states if info.writes else consts).append(bid)
    elif bid not in output_ids: arena_ids.append(bid)
  # the caller's names first, so an automatic name never takes one of them
  sym: dict[int, str] = {bid: _c_name(f"{name}_{names[bid]}") for bid in consts + states if bid in names}
  if len(set(sym.values())) != len(sym): raise ExportError(f"weight names collide in C: {sorted(sym.values())}")
  taken = set(sym.values())
  for kind, ids in (("const", consts), ("state", states)):
    for i, bid in enumerate(b for b in ids if b not in sym):
      auto = f"{name}_{kind}{i}"
      while auto in taken: auto += "_"
      taken.add(auto); sym[bid] = auto

  lifetimes = []
  for bid in arena_ids:
    info = infos[bid]
    steps = [step_of[k] for k in info.reads + info.writes if k in step_of]
    lifetimes.append(Lifetime(bid, info.nbytes, min(steps), max(steps)))
  plan = plan_arena(lifetimes, alignment)

  # the output pointer stands for the buffer the function made for it; anything else is copied into it at the end
  out_param: dict[int, str] = {}
  copies = []
  for cname, bid, _, dtype in outputs:
    if bid in out_param or bid in input_ids or bid not in infos or infos[bid].external or not any(k in step_of for k in infos[bid].writes):
      copies.append((cname, bid))
    else: out_param[bid] = cname
  in_param = {bid: cname for cname, bid, _, _ in inputs}

  def pointer(bid: int) -> str:
    if bid in out_param: return out_param[bid]
    if bid in in_param: return in_param[bid]
    if bid in sym:
      return f"{sym[bid]}, {sym[bid]}_scale" if infos[bid].quant_channel is not None else sym[bid]
    ctype = _ctype(infos[bid].buffer.dtype)
    return f"({ctype}*)(void*)({name}_arena + {plan.offsets[bid]})"

  # kernels: one function per distinct body
  functions: dict[str, str] = {}
  calls = []
  for k in kernels:
    call = capture.kernels[k]
    body = call.source.replace(f"void {call.program.name}(", "void @KERNEL@(", 1)
    if body not in functions: functions[body] = f"k{len(functions)}_{call.program.name}"
    args = [pointer(bid) for bid in call.buffers] + [str(v) for v in call.var_values]
    if calls: calls.append("  TG_BARRIER();")
    calls.append(f"  {functions[body]}({', '.join(args)});")
  nbytes_of = {bid: math.prod(shape) * dtype.itemsize for _, bid, shape, dtype in inputs + outputs}
  for cname, bid in copies:
    if bid not in infos and bid not in in_param: raise ExportError(f"output {cname} was not computed by the function")
    if infos.get(bid) is not None and infos[bid].quant_channel is not None:
      raise ExportError(f"output {cname} is a weight stored as int8; return a computed tensor instead")
    calls.append(f"  memcpy({cname}, {pointer(bid)}, {nbytes_of[bid]});")
  kernel_src = "\n".join(body.replace("@KERNEL@", fname) for body, fname in functions.items())

  written_inputs = {bid for bid in input_ids if bid in infos and any(k in step_of for k in infos[bid].writes)}
  params = [f"{'' if bid in written_inputs else 'const '}{_ctype(dtype)}* {cname}" for cname, bid, _, dtype in inputs]
  params += [f"{_ctype(dtype)}* {cname}" for cname, _, _, dtype in outputs]
  signature = f"void {name}({', '.join(params) or 'void'})"
  unused = [cname for cname, bid, _, _ in inputs if not any(bid in capture.kernels[k].buffers for k in kernels)
            and bid not in [b for _, b in copies]]

  # data
  data_lines, const_bytes, state_bytes = [], 0, 0
  for bid in consts:
    info = infos[bid]
    if info.quant_channel is not None:
      q, scale = quantize_per_channel(info.snapshot, info.shape)
      data_lines.append(f"static const signed char {sym[bid]}[{q.size}] = {format_array(q, dtypes.int8)};")
      data_lines.append(f"static const float {sym[bid]}_scale[{scale.size}] = {format_array(scale, dtypes.float32)};")
      const_bytes += q.nbytes + scale.nbytes
    else:
      data_lines.append(f"static const {_ctype(info.buffer.dtype)} {sym[bid]}[{info.buffer.size}] = "
                        f"{format_array(info.snapshot, info.buffer.dtype)};")
      const_bytes += info.nbytes
  for bid in states:
    info = infos[bid]
    data_lines.append(f"{_ctype(info.buffer.dtype)} {sym[bid]}[{info.buffer.size}] = {format_array(info.snapshot, info.buffer.dtype)};")
    state_bytes += info.nbytes

  upper = name.upper()
  in_specs = [TensorSpec(c, tuple(s), d) for c, _, s, d in inputs]
  out_specs = [TensorSpec(c, tuple(s), d) for c, _, s, d in outputs]
  state_specs = [TensorSpec(sym[b], infos[b].shape, infos[b].buffer.dtype) for b in states]
  const_specs = [TensorSpec(sym[b], infos[b].shape, infos[b].buffer.dtype) for b in consts]
  io_bytes = sum(s.elements * s.dtype.itemsize for s in in_specs + out_specs)
  report = SizeReport(const_bytes, state_bytes, plan.size, plan.lower_bound, io_bytes, len(kernels))

  header = [f"/* {name}.h: generated by teenygrad.export. Freestanding C99: no libc, no libm, no malloc. */",
            f"#ifndef {upper}_H", f"#define {upper}_H", ""]
  for kind, specs in (("INPUT", in_specs), ("OUTPUT", out_specs)):
    for i, s in enumerate(specs):
      header.append(f"#define {upper}_{kind}{i}_ELEMENTS {s.elements}   /* {s.name}: {s.dtype.name} {list(s.shape)} */")
  header += [f"#define {upper}_ARENA_BYTES {plan.size}",
             f"#define {upper}_ARENA_LOWER_BOUND_BYTES {plan.lower_bound}",
             f"#define {upper}_CONST_WEIGHT_BYTES {const_bytes}",
             f"#define {upper}_STATE_BYTES {state_bytes}", "",
             f"/* Runs the captured function: {len(kernels)} kernels. Not reentrant (one static arena). */",
             signature + ";"]
  if state_specs: header += ["", "/* Mutable state (trainable weights, optimizer state), updated in place by each call. */"]
  for s in state_specs:
    header.append(f"extern {_ctype(s.dtype)} {s.name}[{s.elements}];   /* {s.dtype.name} {list(s.shape)} */")
  header += ["", f"#endif /* {upper}_H */", ""]

  arena_decl = (f"static unsigned char {name}_arena[{plan.size}] TG_ALIGNED;" if plan.size else "")
  body = ["  (void)" + u + ";" for u in unused] + calls
  source = [f"/* {name}.c: generated by teenygrad.export from a captured teenygrad function. */",
            f'#include "{name}.h"', "",
            "/* The arena's bytes are reused by buffers of different types from kernel to kernel; the barrier between",
            "   kernel calls keeps the compiler from moving an access of one kernel past the next (type-based aliasing). */",
            "#if defined(__GNUC__)", f"#define TG_ALIGNED __attribute__((aligned({alignment})))",
            '#define TG_BARRIER() __asm__ volatile("" ::: "memory")', "#else", "#define TG_ALIGNED", "#define TG_BARRIER() ((void)0)",
            "#endif",
            support_code(kernel_src), "\n".join(data_lines), "",
            f"/* intermediates: {plan.size} bytes, lower bound {plan.lower_bound} */", arena_decl, "", kernel_src,
            signature + " {", *body, "}", ""]
  return ExportedLibrary(name, "\n".join(header), "\n".join(source), in_specs, out_specs, state_specs, const_specs,
                         report, plan, lifetimes)


def _live_kernels(capture: Capture, output_ids: set[int]) -> list[int]:
  """Kernels whose result matters: they write state or an output, or feed a kernel that does (dead code goes)."""
  needed_buffers = set(output_ids)
  live = []
  for k in range(len(capture.kernels) - 1, -1, -1):
    call = capture.kernels[k]
    out = call.buffers[0]
    if capture.buffers[out].external or out in needed_buffers:
      live.append(k)
      needed_buffers.update(call.buffers[1:])
  return live[::-1]


__all__ = ["emit", "ExportedLibrary", "SizeReport", "TensorSpec", "quantize_per_channel", "dequantize", "format_array"]
