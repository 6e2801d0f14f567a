"""The graph node. Building tensors builds these; nothing computes until the engine realizes one.

A `LazyBuffer` is either a base (an op whose result would fill a buffer of its own shape) or a view of a base
(a ShapeTracker over it). Movement ops only ever make views. Constants are size-one bases seen through an
expand, so `full((4096, 4096), 2.0)` costs no memory and folds into the kernels that read it.
"""
from __future__ import annotations

import itertools
import weakref
from typing import Any

import numpy as np

from teenygrad.dtype import DType, dtypes
from teenygrad.ir.ops import BINARY, NUMPY_OPS, REDUCE, Ops
from teenygrad.ir.symbolic import sint
from teenygrad.ir.view import ShapeTracker

_ids = itertools.count()
# a base read by many nodes over its life (a weight, every step's forward) drops its dead readers' references once
# the list holds this many
READERS_PRUNE_AT = 64



class Runtime:
  """The engine and the devices sit below the graph in the layering (DESIGN.md), so instead of being imported by
  the layers above they plug themselves in here when `teenygrad` is imported."""
  def __init__(self):
    self.realize = self.buffer_from_host = self._not_loaded

  @staticmethod
  def _not_loaded(*args, **kwargs):
    raise RuntimeError("teenygrad's engine is not loaded: `import teenygrad` plugs it in")


runtime = Runtime()


class LazyBuffer:
  __slots__ = ("device", "st", "shape", "dtype", "op", "srcs", "arg", "_base", "realized", "id", "forced", "_readers", "_prune_at",
               "__weakref__")

  def __init__(self, device: str, st: ShapeTracker, dtype: DType, op: Ops | None = None, srcs: tuple = (),
               arg: Any = None, base: LazyBuffer | None = None):
    self.device, self.st, self.dtype = device, st, dtype
    self.shape: tuple[sint, ...] = st.shape   # a node's tracker never changes: read on every movement and kernel walk
    self.op, self.srcs, self.arg = op, srcs, arg
    self._base = base
    self.realized = None   # the device Buffer, once computed (bases only)
    self.forced = False    # realize this one as its own kernel output
    self.id = next(_ids)
    # weak references to the nodes that read this base, so assign can spare their inputs (a list of weakref.ref, not
    # a WeakSet: two WeakSets per node were a fifth of the Python of building a matmul's graph)
    self._readers: list | None = None
    self._prune_at = READERS_PRUNE_AT
    if srcs:
      me = weakref.ref(self)
      for src in srcs: src.base._add_reader_ref(me)

  @property
  def readers(self) -> list[LazyBuffer]:
    """The nodes alive that read this base."""
    return [node for ref in self._readers or () if (node := ref()) is not None]

  def add_reader(self, node: LazyBuffer) -> None: self._add_reader_ref(weakref.ref(node))

  def _add_reader_ref(self, ref: weakref.ref) -> None:
    if self._readers is None: self._readers = [ref]; return
    self._readers.append(ref)
    if len(self._readers) >= self._prune_at:
      # the dead readers' references go; the next pruning waits until the list has doubled (amortized O(1))
      self._readers = [r for r in self._readers if r() is not None]
      self._prune_at = max(READERS_PRUNE_AT, 2 * len(self._readers))

  # ---- structure ----
  @property
  def base(self) -> LazyBuffer: return self._base if self._base is not None else self

  @property
  def is_view(self) -> bool: return self._base is not None

  @property
  def size(self) -> sint: return self.st.size

  @property
  def is_realized(self) -> bool: return self.base.realized is not None

  @property
  def reshapes_base(self) -> bool:
    """A view that reads its whole base in row-major order (a reshape): the base's buffer already holds its data,
    so a consumer that wants a contiguous buffer (a custom kernel) can take the base's instead of a copy."""
    base = self.base
    return (self.is_view and base.op is not Ops.CONST and self.st.contiguous and isinstance(self.size, int)
            and isinstance(base.size, int) and self.size == base.size)

  def __repr__(self) -> str:
    what = f"view of {self.base.id}" if self.is_view else (self.op.name if self.op else "?")
    return f"<LB {self.id} {self.device} {self.shape} {self.dtype.name} {what}{' realized' if self.realized else ''}>"

  # ---- constructors ----
  @staticmethod
  def const(value, dtype: DType, device: str, shape: tuple[sint, ...] = ()) -> LazyBuffer:
    value = _cast_scalar(value, dtype)
    base = LazyBuffer(device, ShapeTracker.from_shape(()), dtype, Ops.CONST, (), value)
    return base.reshape((1,) * len(shape)).expand(tuple(shape)) if shape else base

  @staticmethod
  def from_realized(buffer, shape: tuple[int, ...], dtype: DType, device: str) -> LazyBuffer:
    lb = LazyBuffer(device, ShapeTracker.from_shape(shape), dtype, Ops.LOAD)
    lb.realized = buffer
    return lb

  @staticmethod
  def empty(shape: tuple[sint, ...], dtype: DType, device: str) -> LazyBuffer:
    return LazyBuffer(device, ShapeTracker.from_shape(shape), dtype, Ops.LOAD)

  def _view(self, st: ShapeTracker) -> LazyBuffer:
    if st is self.st or st == self.st: return self
    base = self.base
    if st.contiguous and st.shape == base.shape: return base
    return LazyBuffer(self.device, st.simplify(), self.dtype, base=base)

  # ---- const introspection (for folding) ----
  def const_value(self):
    """The scalar every element holds, if this is an unmasked view of a constant."""
    base = self.base
    if base.op is not Ops.CONST or base.realized is not None: return None
    if any(v.mask is not None for v in self.st.views): return None
    return base.arg

  # ---- movement (views) ----
  def reshape(self, shape) -> LazyBuffer: return self._view(self.st.reshape(tuple(shape)))
  def permute(self, order) -> LazyBuffer: return self._view(self.st.permute(tuple(order)))
  def expand(self, shape) -> LazyBuffer: return self._view(self.st.expand(tuple(shape)))
  def pad(self, arg) -> LazyBuffer: return self._view(self.st.pad(tuple(arg)))
  def shrink(self, arg) -> LazyBuffer: return self._view(self.st.shrink(tuple(arg)))
  def flip(self, axes) -> LazyBuffer: return self._view(self.st.flip(tuple(axes)))

  # ---- compute ----
  def alu(self, op: Ops, *others: LazyBuffer, dtype: DType | None = None) -> LazyBuffer:
    srcs = (self,) + others
    out_dtype = dtype or (dtypes.bool if op in (Ops.CMPLT, Ops.CMPNE) else srcs[-1].dtype)
    folded = _fold_constants(op, srcs, out_dtype)
    if folded is not None: return folded
    return LazyBuffer(self.device, ShapeTracker.from_shape(self.shape), out_dtype, op, srcs)

  def cast(self, dtype: DType, bitcast: bool = False) -> LazyBuffer:
    if dtype == self.dtype: return self
    if bitcast and dtype.itemsize != self.dtype.itemsize:
      raise RuntimeError(f"bitcast from {self.dtype.name} to {dtype.name} needs equal item sizes")
    return self.alu(Ops.BITCAST if bitcast else Ops.CAST, dtype=dtype)

  def reduce(self, op: Ops, axes: tuple[int, ...]) -> LazyBuffer:
    assert op in REDUCE
    axes = tuple(sorted(a for a in axes if self.shape[a] != 1))
    if not axes: return self
    new_shape = tuple(1 if i in axes else s for i, s in enumerate(self.shape))
    if 0 in self.shape and 0 not in new_shape:
      from teenygrad.ir.ops import REDUCE_IDENTITY
      return LazyBuffer.const(REDUCE_IDENTITY[op](self.dtype), self.dtype, self.device, new_shape)
    return LazyBuffer(self.device, ShapeTracker.from_shape(new_shape), self.dtype, op, (self,), axes)

  def contiguous(self) -> LazyBuffer:
    """A base holding this data laid out row-major (no-op when it already is one)."""
    if not self.is_view and self.op is not Ops.CONST: return self
    return LazyBuffer(self.device, ShapeTracker.from_shape(self.shape), self.dtype, Ops.CONTIGUOUS, (self,))

  def copy_to(self, device: str) -> LazyBuffer:
    if device == self.device: return self
    src = self.contiguous() if self.is_view or self.op is Ops.CONST else self
    return LazyBuffer(device, ShapeTracker.from_shape(self.shape), self.dtype, Ops.COPY, (src,))

  def assign(self, value: LazyBuffer) -> LazyBuffer:
    """Write value into this base's buffer (in-place ops, optimizer steps)."""
    target = self.base
    assert not self.is_view and value.shape == self.shape and value.dtype == self.dtype
    return LazyBuffer(self.device, ShapeTracker.from_shape(self.shape), self.dtype, Ops.ASSIGN, (target, value))

  @staticmethod
  def custom(kernel, srcs: tuple[LazyBuffer, ...], shape, dtype: DType) -> LazyBuffer:
    return LazyBuffer(srcs[0].device, ShapeTracker.from_shape(shape), dtype, Ops.CUSTOM, srcs, kernel)


def _cast_scalar(value, dtype: DType):
  if dtype.is_bool: return bool(value)
  if dtype.is_int:
    if isinstance(value, float) and not np.isfinite(value): return 0
    bits = 8 * dtype.itemsize
    value = int(value) & ((1 << bits) - 1)
    if dtype.signed and value >= 1 << (bits - 1): value -= 1 << bits
    return value
  if dtype == dtypes.bfloat16:
    f = np.array(value, dtype=np.float32).view(np.uint32)
    rounded = ((f + 0x7FFF + ((f >> 16) & 1)) >> 16) << 16 if np.isfinite(value) else f & 0xFFFF0000
    return float(np.array(rounded, dtype=np.uint32).view(np.float32))
  return float(dtype.np.type(value))


def _fold_constants(op: Ops, srcs: tuple[LazyBuffer, ...], dtype: DType) -> LazyBuffer | None:
  values = [s.const_value() for s in srcs]
  if op in (Ops.CAST, Ops.BITCAST) or any(v is None for v in values):
    if op is Ops.CAST and values[0] is not None:
      return LazyBuffer.const(values[0], dtype, srcs[0].device, srcs[0].shape)
    return _fold_identities(op, srcs, values)
  if dtype == dtypes.bfloat16 or srcs[-1].dtype == dtypes.bfloat16: return None
  with np.errstate(all="ignore"):
    args = [np.array(v, dtype=s.dtype.np) for v, s in zip(values, srcs)]
    result = NUMPY_OPS[op](*args)
  return LazyBuffer.const(result.item(), dtype, srcs[0].device, srcs[0].shape)


def _fold_identities(op: Ops, srcs, values) -> LazyBuffer | None:
  """x+0, x*1 and friends cost a kernel input each; drop them (but never x*0: nan*0 is nan)."""
  if op not in BINARY or len(srcs) != 2: return None
  a, b = srcs
  if a.shape != b.shape or a.dtype != b.dtype: return None
  for x, other_value in ((a, values[1]), (b, values[0])):
    if other_value is None: continue
    if op is Ops.ADD and other_value == 0 and not isinstance(other_value, bool): return x
    if op is Ops.MUL and other_value == 1 and not x.dtype.is_bool: return x
  return None
