"""Capture: run a function once on the CPU and record every kernel it launches, re-lowered for export.

Like a JIT capture it watches the launches (engine/realize.py's `_lowering_hooks`), but for each kernel it keeps
the loop program lowered by the freestanding C renderer instead of the CPU-compiled binary, and it learns what each
buffer is from how the kernels use it:
- a buffer first seen written by a kernel (not an assign) was made by the function: an intermediate, or an output;
- a buffer first seen read, or as the target of an assign, existed before: an input if it belongs to one of the
  example inputs, a mutable state buffer (trainable weight, optimizer state) if some kernel writes it, otherwise a
  constant weight. Its contents are copied at that moment, so a state buffer keeps its value from before the call.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from teenygrad.codegen.lower import BufferArg, LoopProgram, lower
from teenygrad.device import Buffer
from teenygrad.ir.ops import Ops
from teenygrad.renderer.c_freestanding import FreestandingCRenderer


class ExportError(Exception):
  """The function cannot be exported as asked (an unsupported op or dtype, a written int8 weight, ...)."""


@dataclass
class BufferInfo:
  buffer: Buffer
  shape: tuple
  external: bool                          # existed before the call (input, weight, state)
  snapshot: np.ndarray | None = None      # contents when first touched (external buffers)
  reads: list[int] = field(default_factory=list)    # kernel indices
  writes: list[int] = field(default_factory=list)
  quant_channel: int | None = None        # elements per channel when stored as int8 with per-channel scales

  @property
  def nbytes(self) -> int: return self.buffer.nbytes


@dataclass
class KernelCall:
  program: LoopProgram
  source: str                   # rendered C, named program.name
  buffers: list[int]            # buffer id per program.buffers entry
  var_values: list[int]


class Capture:
  """Installed as a lowering hook while the function runs."""
  def __init__(self, quantize_int8: bool, input_buffers: set[int], min_quant_elements: int = 64):
    self.quantize_int8, self.input_buffers, self.min_quant_elements = quantize_int8, input_buffers, min_quant_elements
    self.buffers: dict[int, BufferInfo] = {}
    self.kernels: list[KernelCall] = []
    self.renderer = FreestandingCRenderer(self._channel_size)

  def _channel_size(self, buf: BufferArg) -> int | None:
    info = self.buffers.get(id(buf.lb.realized)) if buf.lb.realized is not None else None
    return info.quant_channel if info is not None else None

  def _external(self, buffer: Buffer, shape: tuple) -> BufferInfo:
    info = BufferInfo(buffer, tuple(shape), external=True, snapshot=buffer.numpy().copy())
    wants_int8 = (self.quantize_int8 and id(buffer) not in self.input_buffers and buffer.dtype.name == "float32"
                  and len(shape) >= 2 and buffer.size >= self.min_quant_elements)
    if wants_int8: info.quant_channel = buffer.size // shape[0]
    self.buffers[id(buffer)] = info
    return info

  def __call__(self, exec_item, root, value, is_boundary) -> None:
    if exec_item is None:
      if root.op is Ops.LOAD:   # an empty buffer made inside the function (Tensor.empty): an intermediate
        self.buffers[id(root.realized)] = BufferInfo(root.realized, tuple(root.shape), external=False)
        return
      raise ExportError(f"cannot export a {root.op.name} step ({root}); exported code runs kernels only "
                        "(move host data and device copies out of the function)")
    index = len(self.kernels)
    is_assign = root.op is Ops.ASSIGN
    target = root.srcs[0] if is_assign else root
    program = lower(value, target, is_boundary, self.renderer)
    fresh = False
    for buf in program.buffers:
      buffer = buf.lb.realized
      if id(buffer) in self.buffers: continue
      if buf.is_output and not is_assign:
        self.buffers[id(buffer)] = BufferInfo(buffer, tuple(buf.lb.shape), external=False)
      else:
        fresh |= self._external(buffer, buf.lb.shape).quant_channel is not None
    if fresh: program = lower(value, target, is_boundary, self.renderer)   # render the int8 loads
    ids = [id(buf.lb.realized) for buf in program.buffers]
    if any(self.buffers[i].buffer.nbytes >= 1 << 31 for i in ids):
      raise ExportError("a buffer of 2 GiB or more: exported kernels index with 32-bit int")
    out = self.buffers[ids[0]]
    if out.quant_channel is not None:
      raise ExportError(f"the function writes a weight of shape {out.shape} that was chosen for int8 storage; "
                        "quantize only constant weights (export inference, or pass quantize=None)")
    out.writes.append(index)
    for i in ids[1:]: self.buffers[i].reads.append(index)
    var_values = [_variable_value(exec_item, v.name) for v in program.variables]
    # two bases can share one buffer (an assign's result and its target): then the output may alias an input
    self.renderer.restrict = ids[0] not in ids[1:]
    try: source = self.renderer.render_kernel(program)
    finally: self.renderer.restrict = True
    self.kernels.append(KernelCall(program, source, ids, var_values))


def _variable_value(exec_item, name: str) -> int:
  names = exec_item.kernel.variables
  if name in names: return exec_item.var_values[names.index(name)]
  raise ExportError(f"a kernel needs the symbolic size {name}, which the capture did not bind")


__all__ = ["Capture", "ExportError", "BufferInfo", "KernelCall"]
