"""Export a teenygrad function (a model's forward, or a whole training step) as a freestanding C99 library.

    lib = teenygrad.export.to_c(model_forward, [example_x], name="mlp", out_dir="build/")
    print(lib.report)          # flash, RAM, arena vs its lower bound

The function runs once on the CPU while every kernel it launches is recorded and lowered again for portable C
(renderer/c_freestanding.py). Buffers that existed before the call become `static const` arrays (weights, kept in
flash) or, when the function writes them (`Tensor.assign`, as optimizers do), global arrays in RAM updated in
place by each call; buffers made by the function share one static arena planned from their lifetimes. See
docs/export.md.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from teenygrad.export.capture import Capture, ExportError
from teenygrad.export.emit import ExportedLibrary, SizeReport, TensorSpec, dequantize, quantize_per_channel


def to_c(fn: Callable, example_inputs: Sequence, *, name: str = "model", out_dir: str | Path | None = None,
         weights: dict | None = None, input_names: Sequence[str] | None = None, output_names: Sequence[str] | None = None,
         quantize: str | None = None, alignment: int = 8) -> ExportedLibrary:
  """Capture `fn(*example_inputs)` and return (and, with out_dir, write) its C library.

  Args:
    fn: called once with the example inputs; returns a Tensor or a tuple/list of Tensors (the outputs).
    example_inputs: Tensors; their shapes and dtypes become the entry point's parameters.
    name: C identifier used for the files, the entry point and every global symbol.
    weights: optional {name: Tensor} naming weights and state in C; these tensors are also realized after the call,
      so pending `assign`s (an optimizer update) are part of the capture.
    quantize: None (fp32) or "int8": constant float weights of 2+ dims stored as int8 with one fp32 scale per
      output channel (axis 0), dequantized in the kernels' loads.
    alignment: byte alignment of every arena buffer.
  """
  from teenygrad.engine import realize as engine
  from teenygrad.ir.ops import Ops
  from teenygrad.tensor import Tensor

  if not name.isidentifier(): raise ValueError(f"name must be a C identifier, got {name!r}")
  if quantize not in (None, "int8"): raise ValueError(f"quantize must be None or 'int8', got {quantize!r}")
  if alignment < 1 or alignment & (alignment - 1): raise ValueError(f"alignment must be a power of two, got {alignment}")
  inputs = list(example_inputs)
  for i, t in enumerate(inputs):
    if not isinstance(t, Tensor): raise TypeError(f"example_inputs[{i}] is a {type(t).__name__}, expected a Tensor")
  in_names = _names(input_names, len(inputs), "input")
  for t in inputs: t.realize()
  input_buffers = [t.lazydata.base.realized for t in inputs]
  if len({id(b) for b in input_buffers}) != len(input_buffers): raise ValueError("the same tensor is passed as two inputs")
  weights = dict(weights or {})

  capture = Capture(quantize == "int8", {id(b) for b in input_buffers})
  engine._lowering_hooks.append(capture)
  try:
    result = fn(*inputs)
    outs = list(result) if isinstance(result, (tuple, list)) else [result]
    for i, t in enumerate(outs):
      if not isinstance(t, Tensor): raise TypeError(f"output {i} of the function is a {type(t).__name__}, expected a Tensor")
    # one realize for all: outputs and pending weight updates are scheduled together, as an optimizer step does
    pending = outs + [t for t in weights.values() if isinstance(t, Tensor)]
    for t in pending:
      if t.lazydata.is_view or t.lazydata.op is Ops.CONST: t.lazydata = t.lazydata.contiguous()
    engine.realize([t.lazydata for t in pending if t.numel()])
  finally:
    engine._lowering_hooks.remove(capture)

  out_names = _names(output_names, len(outs), "output")
  buffer_names = {id(t.lazydata.base.realized): wname for wname, t in weights.items()
                  if isinstance(t, Tensor) and t.lazydata.base.realized is not None}
  in_specs = [(n, id(b), t.shape, t.dtype) for n, b, t in zip(in_names, input_buffers, inputs)]
  out_specs = [(n, id(t.lazydata.base.realized), t.shape, t.dtype) for n, t in zip(out_names, outs)]
  for n, bid, _, _ in out_specs:
    if bid not in capture.buffers and bid not in {b for _, b, _, _ in in_specs}:
      raise ExportError(f"output {n} was computed before the call (it is a constant of the function); export needs "
                        "outputs the function computes")
  from teenygrad.export.emit import emit
  lib = emit(name, capture, in_specs, out_specs, buffer_names, alignment)
  if out_dir is not None: lib.write(out_dir)
  return lib


def _names(given: Sequence[str] | None, count: int, prefix: str) -> list[str]:
  names = list(given) if given is not None else [f"{prefix}{i}" for i in range(count)]
  if len(names) != count: raise ValueError(f"expected {count} {prefix} names, got {len(names)}")
  for n in names:
    if not n.isidentifier(): raise ValueError(f"{prefix} name {n!r} is not a C identifier")
  if len(set(names)) != len(names): raise ValueError(f"{prefix} names repeat: {names}")
  return names


__all__ = ["to_c", "ExportError", "ExportedLibrary", "SizeReport", "TensorSpec", "quantize_per_channel", "dequantize"]
