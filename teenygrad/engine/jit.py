"""The JIT: capture the kernels a function launches once, then replay them with new inputs.

    @teenygrad.jit
    def step(x: Tensor, y: Tensor) -> Tensor:
      loss = model(x).cross_entropy(y)
      optimizer.zero_grad(); loss.backward(); optimizer.step()
      return loss

Call 1 runs the function normally (kernels compile). Call 2 runs it again while recording every launch (kernels,
custom kernels, copies) with its buffers. From call 3 on, nothing in Python is traced: the recorded launches run
again with the new input tensors' buffers swapped in. Building the graph, scheduling and looking kernels up in the
cache are skipped; only the launches remain.

Symbolic sizes. Pass a size that changes from call to call (a decode position, a sequence length) as a
`BoundVariable(name, vmin, vmax, value)` instead of an int, and use it as a size (`x._shrink(((0, pos), ...))`,
`_pad`): the kernels are compiled for the variable, not the value, so one capture serves every value in
[vmin, vmax]. Each call binds the variable's new value:

    pos = Variable("pos", 0, max_len - 1)          # or BoundVariable directly
    for p in range(n):
      out = decode(token, pos.bind(p))            # one capture, every position

Outputs are fresh tensors on every call: the caller may keep them (unlike CUDA graphs' static outputs). They are
realized, and detached (a replay records no graph for backward).

What a replay assumes, and what it checks:
- Tensor arguments may change values, never shape (except symbolic dims), dtype or device; their number and the
  positions of the non-tensor arguments stay the same. A replay that breaks this raises `JitError` saying why.
- Non-tensor arguments (ints, floats, strings, flags) are baked into the kernels at capture: if one changes,
  `JitError` (pass a number that changes as a Tensor, or a size as a BoundVariable).
- Tensors the function reads that are not arguments (weights, optimizer state) are read from the same buffers on
  every replay, so state must change through `Tensor.assign` (in place: optimizers do this), not by rebinding.
- Work done on the host inside the function (Tensor(numpy array), random numbers drawn on the host) is not a
  kernel: its result at capture time is replayed as a constant. Pass such data as an argument.
"""
from __future__ import annotations

import functools
import inspect
import threading
from dataclasses import dataclass
from typing import Any
from collections.abc import Callable

from teenygrad.device import Buffer
from teenygrad.engine.realize import CopyExecItem, CustomExecItem, ExecItem, _lock, capture_kernels, run_exec_item, timing_launches
from teenygrad.helpers import prod
from teenygrad.ir.lazy import LazyBuffer
from teenygrad.ir.symbolic import BoundVariable, Node, evaluate
from teenygrad.tensor import Tensor


class JitError(RuntimeError):
  """A replay would compute something other than what the function would: the message says what changed."""


# ---- arguments: tensors, bound variables and constants, with the structure around them ----

_TENSOR, _VAR = "<tensor>", "<var>"


def _flatten(value: Any, tensors: list[Tensor], variables: list[BoundVariable]) -> Any:
  """The structure of value with tensors and bound variables replaced by markers (collected in order)."""
  if isinstance(value, Tensor): tensors.append(value); return _TENSOR
  if isinstance(value, BoundVariable): variables.append(value); return (_VAR, value.name, value.vmin, value.vmax)
  if isinstance(value, (list, tuple)): return (type(value).__name__, tuple(_flatten(v, tensors, variables) for v in value))
  if isinstance(value, dict): return ("dict", tuple((k, _flatten(v, tensors, variables)) for k, v in value.items()))
  return ("const", type(value).__name__, value)


def _shape_key(shape) -> tuple:
  return tuple(s.key() if isinstance(s, Node) else s for s in shape)


def _bind(expr, values: dict[str, int]) -> int:
  if not isinstance(expr, Node): return int(expr)
  return int(evaluate(expr, {v: values[v.name] for v in expr.variables()}))


@dataclass
class _Signature:
  structure: Any
  tensors: list[tuple[tuple, str, str]]    # (shape key, dtype name, device) per tensor argument
  aliases: tuple[int, ...]                 # for each tensor argument, the first argument sharing its buffer

  def explain_mismatch(self, other: _Signature) -> str:
    if len(other.tensors) != len(self.tensors):
      return f"got {len(other.tensors)} tensor arguments, but the capture had {len(self.tensors)}"
    for i, ((shape, dtype, device), (shape2, dtype2, device2)) in enumerate(zip(self.tensors, other.tensors)):
      if shape != shape2:
        return (f"tensor argument {i} has shape {_render_shape(shape2)}, the capture had {_render_shape(shape)}; a size that changes "
                "must be symbolic (a BoundVariable), not a new shape")
      if dtype != dtype2: return f"tensor argument {i} has dtype {dtype2}, the capture had {dtype}"
      if device != device2: return f"tensor argument {i} is on device {device2}, the capture had {device}"
    if other.aliases != self.aliases: return "tensor arguments share buffers differently than at capture (an argument passed twice?)"
    for (name, old), (name2, new) in zip(self.structure, other.structure):
      if (name, old) != (name2, new):
        return f"non-tensor arguments changed: {name!r}: {_describe_change(old, new) if name == name2 else f'now {name2!r}'}; they are " \
               "baked into the captured kernels (pass numbers that change as Tensors, sizes as BoundVariables)"
    return f"non-tensor arguments changed: {len(other.structure)} arguments, the capture had {len(self.structure)}"


def _render_shape(shape: tuple) -> str:
  dims = [str(s) if isinstance(s, int) else f"<{s[1]}>" if s and s[0] == "var" else "<symbolic>" for s in shape]
  return "(" + ", ".join(dims) + ("," if len(dims) == 1 else "") + ")"


def _describe_change(old: Any, new: Any) -> str:
  if type(old) is not type(new) or not isinstance(old, tuple): return f"{old!r} -> {new!r}"
  if old and old[0] == "const": return f"{old[2]!r} -> {new[2]!r}" if len(new) == 3 else f"{old!r} -> {new!r}"
  if old and old[0] == _VAR: return f"variable {old[1]} in [{old[2]}, {old[3]}] -> {new!r}"
  if len(old) != len(new): return f"{old!r} -> {new!r}"
  for a, b in zip(old, new):
    if a != b: return _describe_change(a, b)
  return "?"


def _signature(fn: Callable, args: tuple, kwargs: dict, python_signature: inspect.Signature | None = None
               ) -> tuple[_Signature, list[Tensor], dict[str, int]]:
  tensors: list[Tensor] = []
  variables: list[BoundVariable] = []
  try:
    bound = (python_signature or inspect.signature(fn)).bind(*args, **kwargs)
    bound.apply_defaults()
    arguments = list(bound.arguments.items())
  except (TypeError, ValueError):   # no signature to bind to: positions and keywords as given
    arguments = [(f"arg{i}", a) for i, a in enumerate(args)] + list(kwargs.items())
  structure = tuple((name, _flatten(value, tensors, variables)) for name, value in arguments)
  for t in tensors:
    if not _empty(t): t.realize()   # inputs are buffers: an argument that is still a graph or a view is computed first
  buffers = [t.lazydata.base.realized for t in tensors]
  aliases = tuple(next(j for j in range(i + 1) if buffers[j] is b and b is not None) if b is not None else i for i, b in enumerate(buffers))
  values: dict[str, int] = {}
  for v in variables:
    if values.setdefault(v.name, v.value) != v.value: raise JitError(f"variable {v.name} is bound to two values, {values[v.name]} and {v.value}")
  meta = [(_shape_key(t.shape), t.dtype.name, t.device) for t in tensors]
  return _Signature(structure, meta, aliases), tensors, values


# ---- the replayable program ----

@dataclass
class _Launch:
  kind: str                       # "kernel", "custom" or "copy"
  item: Any
  slots: list[int]                # buffer table slots: kernel: all its buffers; custom: inputs then output; copy: src, dest


@dataclass
class _Output:
  slot: int | None                # None: an empty tensor, rebuilt from shape
  shape: tuple                    # may hold Variables: bound per call
  dtype: Any
  device: str
  fresh: bool                     # a new buffer every call (produced by the function) or a state/input buffer


class _Capture:
  """The recorded launches of one call, with their buffers numbered in a table a replay fills in."""
  def __init__(self, signature: _Signature, inputs: list[Tensor], launched: list, outputs: list[Tensor], out_structure: Any,
               values: dict[str, int]):
    self.signature, self.out_structure = signature, out_structure
    self.table: list[Buffer] = []
    slot_of: dict[int, int] = {}

    def slot(buffer: Buffer) -> int:
      if id(buffer) not in slot_of:
        slot_of[id(buffer)] = len(self.table); self.table.append(buffer)
      return slot_of[id(buffer)]

    self.input_slots = [slot(t.lazydata.base.realized) if not _empty(t) else None for t in inputs]
    self.launches: list[_Launch] = []
    produced: dict[int, Any] = {}   # slot -> symbolic element count, for buffers a launch allocated
    for item in launched:
      if isinstance(item, ExecItem):
        slots = [slot(b) for b in item.buffers]
        if not item.assign and slots[0] not in self.input_slots: produced.setdefault(slots[0], item.size)
        self.launches.append(_Launch("kernel", item, slots))
      elif isinstance(item, CustomExecItem):
        slots = [slot(b) for b in item.inputs] + [slot(item.output)]
        produced.setdefault(slots[-1], None)
        self.launches.append(_Launch("custom", item, slots))
      elif isinstance(item, CopyExecItem):
        slots = [slot(item.src), slot(item.dest)]
        produced.setdefault(slots[1], item.dest.size)
        self.launches.append(_Launch("copy", item, slots))
    self.outputs: list[_Output] = []
    for t in outputs:
      shape = tuple(s.unbind()[0] if isinstance(s, BoundVariable) else s for s in t.shape)
      if _empty(t): self.outputs.append(_Output(None, shape, t.dtype, t.device, True)); continue
      buffer = t.lazydata.base.realized
      out_slot = slot(buffer)
      self.outputs.append(_Output(out_slot, shape, t.dtype, t.device, out_slot in produced))
    self.fresh_outputs = {o.slot: (o.shape, o.dtype, o.device) for o in self.outputs if o.fresh and o.slot is not None}
    # intermediates with a symbolic size get their largest size once, so one buffer serves every value
    for s, size in produced.items():
      if s in self.fresh_outputs or not isinstance(size, Node): continue
      old = self.table[s]
      self.table[s] = Buffer(old.device, size.vmax, old.dtype)
    self.captured_values = dict(values)
    for launch in self.launches:
      if launch.kind == "kernel":
        for name, value in zip(launch.item.kernel.variables, launch.item.var_values): self.captured_values.setdefault(name, value)

  def replay(self, inputs: list[Tensor], values: dict[str, int]) -> list[Tensor]:
    values = {**self.captured_values, **values}
    table = list(self.table)
    for s, t in zip(self.input_slots, inputs):
      if s is not None: table[s] = t.lazydata.base.realized
    for s, (shape, dtype, device) in self.fresh_outputs.items():
      table[s] = Buffer(device, prod(_bind(d, values) for d in shape), dtype)
    with _lock:
      if self._graph_replay(table, values): return self._outputs(table, values)
      if self._bound_replay(table, values): return self._outputs(table, values)
      for launch in self.launches:
        if launch.kind == "kernel":
          item: ExecItem = launch.item
          # named variables take this call's values; a launch with positional constants (a custom kernel's) keeps them
          names = item.kernel.variables
          var_values = tuple(values[name] for name in names) if len(names) == len(item.var_values) else item.var_values
          if item.kernel.check_bounds or _debugging():
            run_exec_item(ExecItem(item.kernel, [table[s] for s in launch.slots], var_values, item.device))
          else: item.kernel.program(*[table[s].raw for s in launch.slots], vals=var_values)
        elif launch.kind == "custom":
          table[launch.slots[-1]] = launch.item.kernel.run(launch.item.root, [table[s] for s in launch.slots[:-1]])
        else:
          src, dest = table[launch.slots[0]], table[launch.slots[1]]
          dest.copyin(src.numpy())
    return self._outputs(table, values)

  def _outputs(self, table: list[Buffer], values: dict[str, int]) -> list[Tensor]:
    outs = []
    for o in self.outputs:
      shape = tuple(_bind(d, values) for d in o.shape)
      if o.slot is None: outs.append(Tensor.zeros(*shape, dtype=o.dtype, device=o.device)); continue
      outs.append(Tensor(LazyBuffer.from_realized(table[o.slot], shape, o.dtype, o.device)))
    return outs


  # ---- bound launches ----
  # Where the backend has argument cells (CPU), every kernel launch is bound once to cells: one per buffer slot, one
  # per variable. A replay then sets the cells that change (input and fresh-output slots, a custom kernel's new
  # output, the variables) and calls the bound launches: no per-launch Python work beyond the call itself.

  def _bound_plan(self):
    if hasattr(self, "_plan"): return self._plan
    self._plan = None
    from teenygrad.device import Device
    devices = {launch.item.device for launch in self.launches}
    if len(devices) != 1 or any(launch.kind == "kernel" and launch.item.kernel.check_bounds for launch in self.launches): return None
    backend = Device[devices.pop()]
    cells: dict[int, Any] = {}
    variables: dict[str, Any] = {}
    steps: list[tuple[Any, _Launch]] = []
    for launch in self.launches:
      if launch.kind != "kernel": steps.append((None, launch)); continue
      item: ExecItem = launch.item
      for s in launch.slots:
        if s not in cells: cells[s] = backend.buffer_cell(self.table[s])
      names = item.kernel.variables
      # named variables take each call's values; a custom kernel's positional constants stay
      ints = [variables.setdefault(n, backend.int_cell(0)) for n in names] if len(names) == len(item.var_values) \
        else [backend.int_cell(v) for v in item.var_values]
      call = item.kernel.program.bind([cells[s] for s in launch.slots] + ints)
      if call is None or any(c is None for c in ints) or any(cells[s] is None for s in launch.slots): return None
      steps.append((call, launch))
    self._plan = (backend, cells, variables, steps)
    self._cell_buffers: dict[int, Buffer] = {}   # what the changing cells point at, kept alive until the next update
    return self._plan

  def _set_cell(self, backend, cells: dict, slot: int, buffer: Buffer) -> None:
    if slot in cells:
      backend.update_buffer_cell(cells[slot], buffer)
      self._cell_buffers[slot] = buffer

  def _bound_replay(self, table: list[Buffer], values: dict[str, int]) -> bool:
    plan = self._bound_plan()
    if plan is None or _debugging(): return False
    backend, cells, variables, steps = plan
    for s in self.input_slots:
      if s is not None: self._set_cell(backend, cells, s, table[s])
    for s in self.fresh_outputs: self._set_cell(backend, cells, s, table[s])
    for name, cell in variables.items(): cell.value = values[name]
    for call, launch in steps:
      if call is not None: call()
      elif launch.kind == "custom":
        out = table[launch.slots[-1]] = launch.item.kernel.run(launch.item.root, [table[s] for s in launch.slots[:-1]])
        self._set_cell(backend, cells, launch.slots[-1], out)
      else:
        table[launch.slots[1]].copyin(table[launch.slots[0]].numpy())
    return True

  # ---- device graphs ----
  # A backend with `graph` (CUDA) replays every launch as one graph launch. A graph bakes in its buffers, so it runs
  # on buffers of its own for the input and fresh-output slots: inputs are copied in on the device, outputs copied
  # out into the fresh buffers the caller gets, and inputs the function assigns into are copied back. Symbolic
  # sizes are kernel arguments: a replay with new values updates the graph's nodes in place (one graph serves
  # every decode position).

  def _graph_backend(self):
    if getattr(self, "_graph_checked", False): return self._graph_device
    self._graph_checked, self._graph_device = True, None
    from teenygrad.device import Device
    devices = {launch.item.device for launch in self.launches}
    if not self.launches or len(devices) != 1 or any(launch.kind != "kernel" or launch.item.kernel.check_bounds for launch in self.launches):
      return None
    if any(not isinstance(size, int) for shape, _, _ in self.fresh_outputs.values() for size in shape): return None
    backend = Device[devices.pop()]
    if getattr(backend, "graph", None) is None: return None
    self._graph_device = backend
    own = list(self.table)
    for s in set(self.input_slots) | set(self.fresh_outputs):
      if s is not None: own[s] = Buffer(own[s].device, own[s].size, own[s].dtype)
    self.graph_table, self.graph, self.graph_launches = own, None, 0
    # named variables take each call's values; a launch with positional constants (a custom kernel's own) keeps them,
    # as does one without variables (its values, computed once, are ())
    launch_variables = [(launch.item.kernel.variables or None) if len(launch.item.kernel.variables) == len(launch.item.var_values) else None
                        for launch in self.launches]
    # each call rebuilds only the values of the launches with variables (a sixth of a decode step's), in place
    self.variable_launches = [(i, names) for i, names in enumerate(launch_variables) if names is not None]
    self.var_values = [tuple(launch.item.var_values) for launch in self.launches]
    self.assigned_inputs = {launch.slots[0] for launch in self.launches if launch.item.assign and launch.slots[0] in self.input_slots}
    return backend

  def _graph_replay(self, table: list[Buffer], values: dict[str, int]) -> bool:
    backend = self._graph_backend()
    if backend is None or _debugging(): return False
    own = self.graph_table
    for s in self.input_slots:
      if s is not None and not backend.transfer(own[s], table[s]): return False
    var_values = self.var_values
    for i, names in self.variable_launches: var_values[i] = tuple([values[name] for name in names])
    if self.graph is None:
      self.graph = backend.graph([ExecItem(launch.item.kernel, [own[s] for s in launch.slots], vals, launch.item.device)
                                  for launch, vals in zip(self.launches, var_values)])
    else: self.graph.update(var_values)
    self.graph()
    self.graph_launches += 1
    for s in self.fresh_outputs: backend.transfer(table[s], own[s])
    for s in self.assigned_inputs: backend.transfer(table[s], own[s])
    return True


def _debugging() -> bool:
  """Launches are being timed one by one (DEBUG>=2 or engine.realize.timed_launches): no bound or graph replay."""
  return timing_launches()


def _flatten_outputs(value: Any, tensors: list[Tensor]) -> Any:
  if isinstance(value, Tensor): tensors.append(value); return _TENSOR
  if isinstance(value, (list, tuple)): return (type(value), [_flatten_outputs(v, tensors) for v in value])
  if isinstance(value, dict): return (dict, [(k, _flatten_outputs(v, tensors)) for k, v in value.items()])
  if value is None or isinstance(value, (int, float, str, bool)): return ("const", value)
  raise JitError(f"a jitted function must return Tensors (in tuples, lists or dicts) or plain constants, not {type(value).__name__}")


def _unflatten_outputs(structure: Any, tensors: list[Tensor]) -> Any:
  if structure == _TENSOR: return tensors.pop(0)
  kind, body = structure
  if kind == "const": return body
  if kind is dict: return {k: _unflatten_outputs(v, tensors) for k, v in body}
  items = [_unflatten_outputs(v, tensors) for v in body]
  return kind(items) if kind in (list, tuple) else kind(*items)


# ---- the decorator ----

class Jit:
  """Wraps fn: call 1 runs it, call 2 captures its launches, later calls replay them (see the module docstring).

  `jit.reset()` forgets the capture (the next two calls run normally again); `jit.captured` tells whether replays
  are happening; `jit.kernel_count` is the number of recorded launches."""
  def __init__(self, fn: Callable, capture_after: int = 1):
    self.fn, self.capture_after = fn, capture_after
    self.calls, self.capture = 0, None
    self._python_signature: inspect.Signature | bool | None = None   # False: fn has none (bound by position)
    self._call_lock = threading.Lock()
    functools.update_wrapper(self, fn)

  @property
  def captured(self) -> bool: return self.capture is not None

  @property
  def kernel_count(self) -> int: return len(self.capture.launches) if self.capture is not None else 0

  def reset(self) -> None:
    self.calls, self.capture = 0, None

  def __get__(self, obj, objtype=None):
    # as a method: one Jit per instance, so two models never share a capture
    if obj is None: return self
    jits = obj.__dict__.setdefault("_teenygrad_jits", {})
    if id(self) not in jits: jits[id(self)] = Jit(self.fn.__get__(obj, objtype), self.capture_after)
    return jits[id(self)]

  def __call__(self, *args, **kwargs):
    with self._call_lock:
      if self._python_signature is None:
        # looked up once: inspect.signature costs more than the rest of a replay's argument checks
        try: self._python_signature = inspect.signature(self.fn)
        except (TypeError, ValueError): self._python_signature = False
      signature, inputs, values = _signature(self.fn, args, kwargs, self._python_signature or None)
      if self.capture is not None:
        if signature != self.capture.signature:
          raise JitError(f"{self.fn.__qualname__}: can't replay: {self.capture.signature.explain_mismatch(signature)}")
        return _unflatten_outputs(self.capture.out_structure, self.capture.replay(inputs, values))
      self.calls += 1
      if self.calls <= self.capture_after: return self._run(args, kwargs)
      with capture_kernels() as launched:
        result = self.fn(*args, **kwargs)
        outputs: list[Tensor] = []
        structure = _flatten_outputs(result, outputs)
        for t in outputs:
          if not _empty(t): t.realize()
      self.capture = _Capture(signature, inputs, list(launched), outputs, structure, values)
      return _unflatten_outputs(structure, [_concrete(t, values) for t in outputs])

  def _run(self, args, kwargs):
    _, _, values = _signature(self.fn, args, kwargs)
    result = self.fn(*args, **kwargs)
    outputs: list[Tensor] = []
    structure = _flatten_outputs(result, outputs)
    for t in outputs:
      if not _empty(t): t.realize()
    return _unflatten_outputs(structure, [_concrete(t, values) for t in outputs])


def _empty(t: Tensor) -> bool: return any(isinstance(s, int) and s == 0 for s in t.shape)


def _concrete(t: Tensor, values: dict[str, int]) -> Tensor:
  """An output with a symbolic shape, as a tensor of this call's sizes (what replays return too)."""
  if all(isinstance(s, int) for s in t.shape): return t
  shape = tuple(_bind(s, {**{v.name: v.value for s2 in t.shape if isinstance(s2, Node) for v in s2.variables()
                             if isinstance(v, BoundVariable)}, **values}) for s in t.shape)
  return Tensor(LazyBuffer.from_realized(t.lazydata.base.realized, shape, t.dtype, t.device))


def jit(fn: Callable | None = None, *, capture_after: int = 1):
  """`@jit` or `@jit(capture_after=n)`: run n times normally, capture on the next call, replay after (see module doc)."""
  if fn is None: return lambda f: Jit(f, capture_after)
  return Jit(fn, capture_after)


__all__ = ["Jit", "JitError", "jit"]
