"""Realize: schedule, lower, compile (cached in memory by kernel structure and on disk by source), launch."""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import numpy as np

from teenygrad.codegen.lower import NeedsRealize, lower
from teenygrad.device import Buffer, Device
from teenygrad.dtype import dtypes
from teenygrad.helpers import config, prod
from teenygrad.ir.lazy import LazyBuffer, runtime
from teenygrad.ir.ops import Ops
from teenygrad.ir.view import ShapeTracker
from teenygrad.ir.symbolic import BoundVariable, Node, evaluate, vmax
from teenygrad.schedule import ScheduleItem, create_schedule

_lock = threading.RLock()   # scheduling mutates the graph; launches themselves release the GIL


@dataclass
class CompiledKernel:
  name: str
  program: object
  positions: list[int]        # param i reads the buffer of the i-th boundary in key order
  variables: list[str]
  src: str
  work: int
  check_bounds: bool


@dataclass
class ExecItem:
  """One launch with its buffers resolved: what the JIT records and replays."""
  kernel: CompiledKernel
  buffers: list[Buffer]
  var_values: tuple[int, ...]
  device: str
  size: object = None     # the output's element count, symbolic when its shape is (the JIT sizes it per call)
  assign: bool = False    # writes into an existing buffer (ASSIGN) rather than a fresh one


@dataclass
class CustomExecItem:
  """A custom kernel launch (Ops.CUSTOM), recorded for the JIT unless its run recorded ExecItems of its own: a
  replay calls `kernel.run(root, inputs)` again with the new input buffers. `root` has been realized by then (its
  srcs are gone): run must use only its shape, dtype, device and arg, and the buffers it is given."""
  kernel: object
  root: LazyBuffer
  inputs: list[Buffer]
  output: Buffer
  device: str


@dataclass
class CopyExecItem:
  """A copy between devices, recorded for the JIT."""
  src: Buffer
  dest: Buffer
  device: str


_kernel_cache: dict[tuple, CompiledKernel] = {}
# kernels whose lowering handed a reduce back (NeedsRealize): key -> position of that base in kernel_key's walk, so the
# next graph of the same structure is rescheduled at once instead of being lowered again each step
_handed_back: dict[tuple, int] = {}
_captures: list[list] = []   # JIT capture stacks
# hook(exec_item, root, value, is_boundary) runs before each launch, while the kernel's graph still exists (exec_item is
# None for alloc/copy/custom items): teenygrad.export re-lowers every kernel with its own renderer from here
_lowering_hooks: list = []


# ---- structural keys ----

def _st_key(st) -> tuple:
  # a ShapeTracker never changes: its key is computed once, on the tracker (a view shared by many graphs is walked often)
  key = st.__dict__.get("_structure_key")
  if key is None:
    key = st.__dict__["_structure_key"] = tuple(
      (tuple(map(_k, v.shape)), tuple(map(_k, v.strides)), _k(v.offset),
       tuple((_k(b), _k(e)) for b, e in v.mask) if v.mask else None) for v in st.views)
  return key


def _k(x): return x.key() if isinstance(x, Node) else x


def _bound_variables(st) -> tuple:
  found = st.__dict__.get("_bound_variables")
  if found is None:
    found = tuple(var for v in st.views for x in (*v.shape, *v.strides, v.offset, *(e for m in (v.mask or ()) for e in m))
                  if isinstance(x, Node) for var in x.variables() if isinstance(var, BoundVariable))
    st.__dict__["_bound_variables"] = found
  return found


def _collect_vars(st, values: dict) -> None:
  for var in _bound_variables(st): values[var.name] = var.value


# structural sub-keys interned to small ints: a kernel key is then a shallow tuple whose hash is cheap. Nested tuples
# would be hashed again at every shared subexpression (exponential in the depth of a backward graph's sharing).
_structure_ids: dict[tuple, int] = {}


def _intern(key: tuple) -> int:
  found = _structure_ids.get(key)
  if found is None: found = _structure_ids[key] = len(_structure_ids)
  return found


def kernel_key(root: LazyBuffer, is_boundary, computed: list[LazyBuffer] | None = None) -> tuple[int, list[LazyBuffer], dict[str, int]]:
  """An exact structural id of what the kernel computes, with its buffers numbered by first use. `computed`, if given,
  receives the bases the kernel computes, in walk order (the same order for every graph with the same key)."""
  boundaries: dict[int, int] = {}
  order: list[LazyBuffer] = []
  values: dict[str, int] = {}
  memo: dict[int, int] = {}

  def walk(lb: LazyBuffer, top: bool = False) -> int:
    if lb.id in memo: return memo[lb.id]
    base = lb.base
    _collect_vars(lb.st, values)
    if not top and (is_boundary(base) or (base.op is Ops.CONST and base.realized is None)):
      if base.op is Ops.CONST and base.realized is None: key = ("const", base.arg, lb.dtype.name, _st_key(lb.st))
      else:
        if base.id not in boundaries:
          boundaries[base.id] = len(order); order.append(base)
        key = ("buf", boundaries[base.id], base.dtype.name, _st_key(lb.st), base.shape if lb.is_view else None)
    elif lb.is_view: key = ("view", _st_key(lb.st), walk(base))
    else:
      key = (base.op, base.arg if base.op is not Ops.CUSTOM else id(base.arg), base.dtype.name, tuple(map(_k, base.shape)),
             tuple(walk(s) for s in base.srcs))
      if computed is not None: computed.append(base)
    memo[lb.id] = _intern(key)
    return memo[lb.id]

  key = walk(root, top=True)
  # the recursive closure is a reference cycle through its own cell: unbound, it cannot keep `computed` (and the
  # buffers of a result nobody holds any more) alive until a GC pass
  walk = None  # noqa: F841
  return key, order, values


# ---- compiling ----

def _compile(item_root: LazyBuffer, target: LazyBuffer, is_boundary, device: str, key_order: list[LazyBuffer]):
  backend = Device[device]
  index_of = {lb.id: i for i, lb in enumerate(key_order)}
  gemm = backend.gemm_kernel(item_root, target, is_boundary)   # the backend's own matmul, when it has one
  if gemm is None: _split_off_gemm(item_root, is_boundary, backend)
  if gemm is not None:
    if config.debug >= 4: print(gemm.src)
    positions = [index_of[buf.lb.id] for buf in gemm.buffers[1:]]
    work = prod(vmax(s) for s in item_root.shape) * prod(vmax(s) for s in _gemm_k(item_root))
    binary = backend.compiler.compile_cached(gemm.src)
    program = backend.program(gemm.name, binary) if gemm.launch is None else backend.program(gemm.name, binary, gemm.launch)
    return CompiledKernel(gemm.name, program, positions, [], gemm.src, work, backend.renderer.check_bounds)
  program = lower(item_root, target, is_boundary, backend.renderer)
  src = backend.renderer.render_kernel(program)
  if config.debug >= 4: print(src)
  binary = backend.compiler.compile_cached(src)
  positions = [index_of[buf.lb.id] for buf in program.buffers[1:]]
  # GPU renderers say how the kernel maps onto the grid (sizes as functions of the kernel's variables)
  launch = backend.renderer.launch_dims(program) if hasattr(backend.renderer, "launch_dims") else None
  compiled_program = backend.program(program.name, binary) if launch is None else backend.program(program.name, binary, launch)
  return CompiledKernel(program.name, compiled_program, positions,
                        [v.name for v in program.variables], src, program.work, backend.renderer.check_bounds)


def _split_off_gemm(root: LazyBuffer, is_boundary, backend) -> None:
  """A matmul inlined into a consumer the GEMM can't take as its epilogue (a permuted store, a reduce of it) would
  run as a naive loop: give it a kernel of its own instead."""
  from teenygrad.codegen.gemm_match import _find_reduce
  reduce = _find_reduce(root, is_boundary)
  if reduce is not None and reduce is not root and backend.gemm_kernel(reduce, reduce, is_boundary) is not None:
    raise NeedsRealize(reduce)


def _gemm_k(root: LazyBuffer) -> tuple:
  from teenygrad.codegen.gemm_match import _find_reduce
  reduce = _find_reduce(root, lambda b: b.realized is not None)
  return (reduce.srcs[0].shape[-1],) if reduce is not None else (1,)


def _prepare(item: ScheduleItem, roots: set[int]):
  root = item.root
  def is_boundary(base: LazyBuffer) -> bool: return base.realized is not None or base.id in roots
  value = root.srcs[1] if root.op is Ops.ASSIGN else root
  target = root.srcs[0] if root.op is Ops.ASSIGN else root
  if root.op is Ops.ASSIGN:
    value = _assign_value(value, target, is_boundary)
    if _reads_target_moved(value, target.base, is_boundary):
      # compute the value into a buffer of its own first; the assign then copies it over the target
      aside = LazyBuffer(root.device, ShapeTracker.from_shape(root.srcs[1].shape), root.dtype, Ops.CONTIGUOUS, (root.srcs[1],))
      root.srcs = (root.srcs[0], aside)
      aside.add_reader(root)
      raise NeedsRealize(aside)
  computed: list[LazyBuffer] = []
  key, order, values = kernel_key(value, is_boundary, computed)
  full_key = (key, root.device, root.dtype.name, config.threads, config.check_bounds)
  compiled = _kernel_cache.get(full_key)
  if compiled is None:
    if full_key in _handed_back: raise NeedsRealize(computed[_handed_back[full_key]])
    try: compiled = _compile(value, target, is_boundary, root.device, order)
    except NeedsRealize as e:
      position = next((i for i, base in enumerate(computed) if base is e.lb), None)
      if position is not None: _handed_back[full_key] = position
      raise
    _kernel_cache[full_key] = compiled
  return compiled, order, values, target, (value, is_boundary)


def _assign_value(value: LazyBuffer, target: LazyBuffer, is_boundary) -> LazyBuffer:
  """The value written by an assign, made a kernel over the target's shape (views inline as usual)."""
  if value.is_view or is_boundary(value.base) or value.op is Ops.CONST:
    return LazyBuffer(value.device, value.st.__class__.from_shape(value.shape), value.dtype, Ops.CONTIGUOUS, (value,))
  return value


# ---- running ----

def realize(outputs: list[LazyBuffer]) -> None:
  outputs = [o for o in outputs if o.base.realized is None]
  if not outputs: return
  with _lock:
    for _ in range(1000):
      items = create_schedule(outputs)
      roots = {it.root.id for it in items}
      prepared, handed_back = [], False
      for it in items:
        # every kernel that hands a reduce back is collected in one round, so a graph with many of them
        # (a backward pass) reschedules a few times, not once per reduce
        try: prepared.append((it, _prepare(it, roots) if it.kind == "kernel" else None))
        except NeedsRealize as e:
          e.lb.forced, handed_back = True, True
      if not handed_back: break
    else: raise RuntimeError("scheduler did not converge")
    for item, prep in prepared: _run(item, prep)


def _run(item: ScheduleItem, prep) -> None:
  root = item.root
  if item.kind in ("copy", "custom"):
    for hook in _lowering_hooks: hook(None, root, None, None)
  if item.kind == "alloc":
    root.realized = Buffer(root.device, int(evaluate(root.size, {})) if isinstance(root.size, Node) else root.size, root.dtype)
    for hook in _lowering_hooks: hook(None, root, None, None)
    return
  if item.kind == "copy":
    src = root.srcs[0].base
    root.realized = Buffer(root.device, src.realized.size, root.dtype)
    # a backend copies between its own devices directly (CUDA peer copies); otherwise through the host
    if not Device[root.device].transfer(root.realized, src.realized): root.realized.copyin(src.realized.numpy())
    for capture in _captures: capture.append(CopyExecItem(src.realized, root.realized, root.device))
    _finish(root); return
  if item.kind == "custom":
    inputs = [s.base.realized for s in root.srcs]
    marks = [len(capture) for capture in _captures]
    root.realized = root.arg.run(root, inputs)
    # a kernel whose run recorded its own launches (nn/quant.py) is replayed through them; others are re-run whole
    for capture, mark in zip(_captures, marks):
      if len(capture) == mark: capture.append(CustomExecItem(root.arg, root, inputs, root.realized, root.device))
    _finish(root); return
  compiled, order, values, target, (value, is_boundary) = prep
  old_values = None
  if root.op is Ops.ASSIGN:
    if _old_values_still_read(root, value, is_boundary):
      # a lazy graph built before this assign still reads the target: it gets a copy of the old values (below)
      old_values = Buffer(target.device, target.realized.size, target.dtype).copyin(target.realized.numpy())
    root.realized = target.realized
  else:
    numel = root.size
    if isinstance(numel, Node): numel = evaluate(numel, {v: values[v.name] for v in numel.variables()})
    root.realized = Buffer(root.device, int(numel), root.dtype)
  buffers = [root.realized] + [order[p].realized for p in compiled.positions]
  var_values = tuple(values[name] for name in compiled.variables)
  exec_item = ExecItem(compiled, buffers, var_values, root.device, root.size, root.op is Ops.ASSIGN)
  for capture in _captures: capture.append(exec_item)
  for hook in _lowering_hooks: hook(exec_item, root, value, is_boundary)
  run_exec_item(exec_item)
  if old_values is not None: target.realized = old_values
  _finish(root)


def _inlined_bases(value: LazyBuffer, is_boundary) -> dict[int, LazyBuffer]:
  inlined, stack = {}, [value]
  while stack:
    base = stack.pop().base
    if base.id in inlined or (is_boundary(base) and base is not value): continue
    inlined[base.id] = base
    stack.extend(base.srcs)
  return inlined


def _old_values_still_read(root: LazyBuffer, value: LazyBuffer, is_boundary) -> bool:
  """An assign overwrites its target's buffer: wrong while a lazy graph built before it still has to read the old
  values (a prediction made before an optimizer step, realized after it)."""
  target = root.srcs[0].base
  inlined = _inlined_bases(value, is_boundary)
  return any(r.realized is None and r is not root and r.id not in inlined for r in target.readers)


def _reads_target_moved(value: LazyBuffer, target: LazyBuffer, is_boundary) -> bool:
  """The assign's own kernel reads its target at other positions than it writes (x.assign(x.flip(0))): in place,
  it would read values it has already overwritten."""
  for base in _inlined_bases(value, is_boundary).values():
    for src in base.srcs:
      if src.base is target and src is not target and not (src.st.contiguous and src.shape == target.shape): return True
  return False


def launch(exec_item: ExecItem, record: bool = True) -> None:
  """Run one launch a custom kernel's run() made on realized buffers (DEBUG=2 times it). Recorded, a JIT capture
  replays the launch itself instead of calling run() again: right when the launch does not depend on values run()
  reads at run time, and what makes a replay cost one program call."""
  if record:
    for capture in _captures: capture.append(exec_item)
  run_exec_item(exec_item)


def run_exec_item(ei: ExecItem) -> None:
  raws = [b.raw for b in ei.buffers]
  err = None
  if ei.kernel.check_bounds:
    err = np.zeros(1, dtype=np.int32)
    raws.append(err)
  elapsed = ei.kernel.program(*raws, vals=ei.var_values, wait=timing_launches())
  if err is not None and err[0]:
    raise IndexError(f"kernel {ei.kernel.name} indexed outside a buffer (TEENYGRAD_CHECK=1 caught it)")
  if elapsed is not None:
    for sink in _timings: sink.append(LaunchTiming(ei.kernel.name, elapsed, sum(b.nbytes for b in ei.buffers), ei.kernel.work))
  if config.debug >= 2 and elapsed is not None:
    nbytes = sum(b.nbytes for b in ei.buffers)
    print(f"{ei.device:6s} {ei.kernel.name:32s} {elapsed * 1e6:9.1f} us  {nbytes / elapsed / 1e9:8.2f} GB/s  "
          f"{2 * ei.kernel.work / elapsed / 1e9:8.2f} GFLOP/s")


@dataclass
class LaunchTiming:
  """One timed launch (what DEBUG=2 prints), collected by `timed_launches`."""
  name: str
  seconds: float
  nbytes: int      # bytes of the buffers it was given (an upper bound on what it moved)
  work: int


_timings: list[list[LaunchTiming]] = []


def timing_launches() -> bool:
  """Every launch is timed (and waited for) under DEBUG>=2 or inside `timed_launches`; a JIT replay then runs launch
  by launch instead of as a device graph, so each kernel gets its own time."""
  return config.debug >= 2 or bool(_timings)


class _collecting:
  """A context manager that registers a fresh list in `sinks` (the module's list of open collections) for the
  engine to append to while it is open, and hands that list out."""
  sinks: list

  def __enter__(self) -> list:
    self.items: list = []
    self.sinks.append(self.items)
    return self.items

  def __exit__(self, *exc) -> None:
    self.sinks.remove(self.items)


class timed_launches(_collecting):
  """with timed_launches() as timings: ... -> a LaunchTiming per launch run inside (bench/llm_profile.py)."""
  sinks = _timings


def _finish(root: LazyBuffer) -> None:
  """A realized base forgets how it was made, so the graph behind it can be freed."""
  root.srcs, root.op, root.arg = (), Ops.LOAD, None


__all__ = ["realize", "launch", "run_exec_item", "timed_launches", "timing_launches", "LaunchTiming", "ExecItem", "CustomExecItem",
           "CopyExecItem", "kernel_key", "dtypes", "prod", "vmax", "time"]


class capture_kernels(_collecting):
  """with capture_kernels() as launched: ... -> the ExecItems run inside (kernel counts in tests, the JIT).

  Kernels give ExecItem; custom kernels and copies between devices give CustomExecItem and CopyExecItem."""
  sinks = _captures


class uncaptured:
  """with uncaptured(): ... -> launches inside are not recorded. A custom kernel whose run() builds its work from
  values it reads at run time (a position from a device buffer) uses it, so a JIT replay calls run() again instead of
  replaying launches with the captured values baked in."""
  def __enter__(self):
    self.saved = _captures[:]
    _captures.clear()

  def __exit__(self, *exc) -> None:
    _captures[:] = self.saved


def buffer_from_host(device: str, host: np.ndarray, dtype) -> Buffer:
  """A device buffer holding a copy of a flat host array (what Tensor(data) builds on)."""
  buffer = Buffer(device, host.size, dtype)
  if buffer.size: buffer.copyin(host)
  return buffer


runtime.realize = realize
runtime.buffer_from_host = buffer_from_host
