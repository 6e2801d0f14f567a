"""Views: how a logical shape maps onto a flat buffer, with no copy.

A `View` is (shape, strides, offset, mask): element idx lives at offset + sum(idx*strides) when every idx is
inside the mask, and reads as 0 otherwise (that is how `pad` costs nothing). Movement ops (reshape, permute,
expand, pad, shrink, flip) rewrite the last view; a reshape the view cannot express pushes a new view on top,
and the index then goes through both. Sizes may be symbolic (`sint`).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property, lru_cache

from teenygrad.helpers import prod
from teenygrad.ir.symbolic import Node, Variable, less_than, logical_and, logical_not, sint, sym_prod, vmax, vmin


def strides_for_shape(shape: tuple[sint, ...]) -> tuple[sint, ...]:
  """Contiguous (row-major) strides, with 0 for size-1 dims so that views compare equal."""
  strides: list[sint] = []
  acc: sint = 1
  for size in reversed(shape):
    strides.append(0 if isinstance(size, int) and size == 1 else acc)
    acc = acc * size
  return tuple(reversed(strides))


def _canonical_strides(shape, strides) -> tuple[sint, ...]:
  return tuple(0 if isinstance(s, int) and s == 1 else st for s, st in zip(shape, strides))


@dataclass(frozen=True)
class View:
  shape: tuple[sint, ...]
  strides: tuple[sint, ...]
  offset: sint = 0
  mask: tuple[tuple[sint, sint], ...] | None = None

  @staticmethod
  def create(shape, strides=None, offset: sint = 0, mask=None) -> View:
    shape = tuple(shape)
    strides = _canonical_strides(shape, strides) if strides is not None else strides_for_shape(shape)
    if mask is not None:
      if all(m == (0, s) for m, s in zip(mask, shape)): mask = None
      elif any(isinstance(b, int) and isinstance(e, int) and b >= e for b, e in mask):
        # nothing is visible: every element reads as the padding value
        return View(shape, (0,) * len(shape), 0, ((0, 0),) * len(shape))
    return View(shape, strides, offset, tuple(mask) if mask is not None else None)

  @cached_property
  def contiguous(self) -> bool:
    return self.offset == 0 and self.mask is None and self.strides == strides_for_shape(self.shape)

  @cached_property
  def size(self) -> sint: return sym_prod(self.shape)

  # ---- index math ----
  def index(self, idxs: list[sint]) -> tuple[sint, sint]:
    """(flat offset, valid) for logical indices `idxs`."""
    offset = self.offset
    for i, st in zip(idxs, self.strides):
      offset = offset + i * st
    valid: sint = 1
    if self.mask is not None:
      valid = logical_and([term for i, (b, e) in zip(idxs, self.mask)
                           for term in (logical_not(less_than(i, b)), less_than(i, e))])
    return offset, valid

  def unravel(self, flat: sint) -> list[sint]:
    """Logical indices of this view's shape for a flat contiguous position (used to chain views)."""
    idxs: list[sint] = []
    for axis, (size, stride) in enumerate(zip(self.shape, strides_for_shape(self.shape))):
      if isinstance(size, int) and size == 1: idxs.append(0); continue
      # the outermost index of an in-range position needs no wrap; skipping it lets a symbolic leading size
      # (a KV-cache length) through, since modulo by a symbolic value can't be rendered
      if axis == 0 and not isinstance(size, int): idxs.append(flat // stride if stride != 0 else 0); continue
      idxs.append((flat // stride) % size if stride != 0 else 0)
    return idxs

  def bounds(self) -> tuple[int, int]:
    """Smallest and largest flat offset a valid element of this view touches."""
    if self.mask is not None and any(vmin(b) >= vmax(e) for b, e in self.mask): return 0, -1
    lo, hi = vmin(self.offset), vmax(self.offset)
    ranges = self.mask if self.mask is not None else tuple((0, s) for s in self.shape)
    for (b, e), st in zip(ranges, self.strides):
      ends = [vmin(b) * vmin(st), vmin(b) * vmax(st), (vmax(e) - 1) * vmin(st), (vmax(e) - 1) * vmax(st)]
      lo, hi = lo + min(ends), hi + max(ends)
    return lo, hi

  # ---- movement ops ----
  def permute(self, order: tuple[int, ...]) -> View:
    return View.create(tuple(self.shape[i] for i in order), tuple(self.strides[i] for i in order), self.offset,
                       tuple(self.mask[i] for i in order) if self.mask is not None else None)

  def expand(self, shape: tuple[sint, ...]) -> View:
    mask = None
    if self.mask is not None:
      mask = tuple(m if s == ns else ((0, ns) if m != (0, 0) else (0, 0)) for m, s, ns in zip(self.mask, self.shape, shape))
    strides = tuple(st if s == ns else 0 for st, s, ns in zip(self.strides, self.shape, shape))
    return View.create(shape, strides, self.offset, mask)

  def shrink(self, arg: tuple[tuple[sint, sint], ...]) -> View:
    """Keep [begin, end) of every dim."""
    offset = self.offset + sum((b * st for (b, _), st in zip(arg, self.strides)), 0)
    mask = None
    if self.mask is not None:
      mask = tuple((_smax(mb - b, 0), _smin(me, e) - b) for (mb, me), (b, e) in zip(self.mask, arg))
    return View.create(tuple(e - b for b, e in arg), self.strides, offset, mask)

  def pad(self, arg: tuple[tuple[sint, sint], ...]) -> View:
    """Add (before, after) zeros to every dim: a negative offset and a mask, no data."""
    if all(b == 0 and a == 0 for b, a in arg): return self
    shape = tuple(s + b + a for s, (b, a) in zip(self.shape, arg))
    offset = self.offset - sum((b * st for (b, _), st in zip(arg, self.strides)), 0)
    old_mask = self.mask if self.mask is not None else tuple((0, s) for s in self.shape)
    mask = tuple((mb + b, me + b) for (mb, me), (b, _) in zip(old_mask, arg))
    return View.create(shape, self.strides, offset, mask)

  def flip(self, axes: tuple[int, ...]) -> View:
    offset = self.offset + sum(((self.shape[i] - 1) * self.strides[i] for i in axes), 0)
    strides = tuple(-st if i in axes else st for i, st in enumerate(self.strides))
    mask = None
    if self.mask is not None:
      mask = tuple((s - e, s - b) if i in axes else (b, e) for i, ((b, e), s) in enumerate(zip(self.mask, self.shape)))
    return View.create(self.shape, strides, offset, mask)

  def reshape(self, shape: tuple[sint, ...]) -> View | None:
    """The same data under a new shape, or None when one view can't say it (the caller stacks a view)."""
    if self.shape == shape: return self
    if self.contiguous or 0 in self.shape: return View.create(shape)
    old = [(s, st) for s, st in zip(self.shape, self.strides)]
    # a mask survives when the reshape only adds or removes size-1 dims
    if self.mask is not None:
      if [s for s in self.shape if s != 1] != [s for s in shape if s != 1]: return None
      kept = iter([(m, st) for (m, st, s) in zip(self.mask, self.strides, self.shape) if s != 1])
      mask, strides = [], []
      for s in shape:
        if s == 1: mask.append((0, 1)); strides.append(0)
        else:
          m, st = next(kept)
          mask.append(m); strides.append(st)
      if any(m == (0, 0) for m in self.mask): mask = [(0, 0)] * len(shape)
      return View.create(shape, tuple(strides), self.offset, tuple(mask))
    strides = _reshape_strides(old, shape)
    return View.create(shape, strides, self.offset) if strides is not None else None


def _smax(a: sint, b: sint) -> sint: return a if vmin(a) >= vmax(b) else (b if vmin(b) >= vmax(a) else _sym_minmax(a, b, max))
def _smin(a: sint, b: sint) -> sint: return a if vmax(a) <= vmin(b) else (b if vmax(b) <= vmin(a) else _sym_minmax(a, b, min))


def _sym_minmax(a, b, fn):
  if isinstance(a, int) and isinstance(b, int): return fn(a, b)
  raise NotImplementedError("symbolic min/max in a mask")


def _reshape_strides(old: list[tuple[sint, sint]], new_shape: tuple[sint, ...]) -> tuple[sint, ...] | None:
  """Strides for `new_shape` over the same elements, if it only splits and merges dims that are laid out evenly."""
  old = [(s, st) for s, st in old if s != 1]
  if [s for s, _ in old] == [s for s in new_shape if s != 1]:   # only size-1 dims come or go (also for symbolic sizes)
    kept = iter(st for _, st in old)
    return tuple(0 if s == 1 else next(kept) for s in new_shape)
  # merge runs of old dims that behave as one strided dim
  merged: list[tuple[sint, sint]] = []
  for s, st in old:
    if merged and merged[-1][1] == st * s: merged[-1] = (merged[-1][0] * s, st)
    else: merged.append((s, st))
  strides: list[sint] = []
  chunk = 0
  remaining: sint = merged[0][0] if merged else 1
  for s in new_shape:
    if s == 1: strides.append(0); continue
    if chunk >= len(merged): return None
    size, st = merged[chunk]
    if isinstance(remaining, Node) or isinstance(s, Node):
      if remaining != s: return None
      strides.append(st)
    else:
      if remaining % s != 0: return None
      remaining //= s
      strides.append(st * remaining)
    if remaining == 1 or (isinstance(remaining, Node) and remaining == s):
      chunk += 1
      remaining = merged[chunk][0] if chunk < len(merged) else 1
      continue
  return tuple(strides) if chunk == len(merged) else None


# movements kept per tracker (ShapeTracker._derived)
DERIVED_CACHE_SIZE = 32


def _ints(arg: tuple) -> bool: return all(map(int.__instancecheck__, arg)) and not any(map(bool.__instancecheck__, arg))
def _int_pairs(arg: tuple) -> bool: return all(type(b) is int and type(e) is int for b, e in arg)


@dataclass(frozen=True)
class ShapeTracker:
  """A stack of views; the last one faces the user."""
  views: tuple[View, ...]

  @staticmethod
  def from_shape(shape: tuple[sint, ...]) -> ShapeTracker:
    shape = tuple(shape)
    if not _ints(shape): return ShapeTracker((View.create(shape),))
    # one tracker per integer shape: every fresh tensor's movements then hit the same kept results (_derived)
    return _contiguous_tracker(shape)

  @property
  def shape(self) -> tuple[sint, ...]: return self.views[-1].shape

  @property
  def contiguous(self) -> bool: return len(self.views) == 1 and self.views[0].contiguous

  @property
  def size(self) -> sint: return self.views[-1].size

  def index(self, idxs: list[sint]) -> tuple[sint, sint]:
    """(flat offset into the base buffer, valid) for logical indices of the last view."""
    offset, valid = self.views[-1].index(idxs)
    for view in reversed(self.views[:-1]):
      inner_offset, inner_valid = view.index(view.unravel(offset))
      offset, valid = inner_offset, logical_and([valid, inner_valid])
    return offset, valid

  def real_strides(self) -> tuple[sint | None, ...]:
    """Per-dim stride into the base if the whole stack is one affine map on that dim, else None."""
    if len(self.views) == 1: return self.views[0].strides
    idxs = [Variable(f"d{i}", 0, vmax(s) - 1) if vmax(s) > 1 else 0 for i, s in enumerate(self.shape)]
    offset, _ = self.index(idxs)
    out: list[sint | None] = []
    from teenygrad.ir.symbolic import Sum, Mul
    terms = offset.terms if isinstance(offset, Sum) else [offset]
    for i, idx in enumerate(idxs):
      if isinstance(idx, int): out.append(0); continue
      found: sint | None = 0
      for t in terms:
        if isinstance(t, Node) and idx in t.variables():
          if isinstance(t, Variable) and t == idx: found = 1
          elif isinstance(t, Mul) and isinstance(t.node, Variable) and t.node == idx and isinstance(t.factor, int): found = t.factor
          else: found = None
      out.append(found)
    return tuple(out)

  def simplify(self) -> ShapeTracker:
    """Fold the last two views into one when the upper one is a plain reshape of the lower."""
    return self._derived("simplify", None, self._simplify)

  def _simplify(self) -> ShapeTracker:
    if len(self.views) >= 2 and self.views[-1].contiguous and self.views[-1].size == self.views[-2].size:
      folded = self.views[-2].reshape(self.views[-1].shape)
      if folded is not None: return ShapeTracker(self.views[:-2] + (folded,)).simplify()
    return self

  def _derived(self, op: str, arg, make, cacheable: bool = True) -> ShapeTracker:
    """make(), kept on this tracker when the argument holds only ints (a symbolic size's bound value would be mixed
    up): trackers never change, and the same movements are taken
    again and again (a matmul's reshape, transpose and broadcast of its operands on every call), so the result and
    the structural key the engine computes on it are built once (512^3 a@b: part of realize's Python per call)."""
    if not cacheable: return make()
    cache = self.__dict__.get("_derived_cache")
    if cache is None: cache = self.__dict__["_derived_cache"] = {}
    key = (op, arg)
    found = cache.get(key)
    if found is None:
      # a slice that moves every step (a KV cache's position) must not grow the cache without bound
      if len(cache) >= DERIVED_CACHE_SIZE: cache.clear()
      found = cache[key] = make()
    return found

  def _replace_last(self, view: View) -> ShapeTracker: return ShapeTracker(self.views[:-1] + (view,))

  def reshape(self, shape: tuple[sint, ...]) -> ShapeTracker:
    shape = tuple(shape)
    return self._derived("reshape", shape, lambda: self._reshape(shape), _ints(shape))

  def _reshape(self, shape: tuple[sint, ...]) -> ShapeTracker:
    new = self.views[-1].reshape(shape)
    if new is not None: return self._replace_last(new)
    return ShapeTracker(self.views + (View.create(shape),))

  def _moved(self, op: str, arg: tuple, cacheable: bool) -> ShapeTracker:
    return self._derived(op, arg, lambda: self._replace_last(getattr(self.views[-1], op)(arg)), cacheable)

  def permute(self, order) -> ShapeTracker: return self._moved("permute", order := tuple(order), _ints(order))
  def expand(self, shape) -> ShapeTracker: return self._moved("expand", shape := tuple(shape), _ints(shape))
  def shrink(self, arg) -> ShapeTracker: return self._moved("shrink", arg := tuple(arg), _int_pairs(arg))
  def pad(self, arg) -> ShapeTracker: return self._moved("pad", arg := tuple(arg), _int_pairs(arg))
  def flip(self, axes) -> ShapeTracker: return self._moved("flip", axes := tuple(axes), _ints(axes))

  def bounds(self) -> tuple[int, int]:
    """Flat range of the base buffer that valid elements can touch (first view decides)."""
    return self.views[0].bounds()


def numel(shape) -> sint: return sym_prod(shape) if any(isinstance(s, Node) for s in shape) else prod(shape)


@lru_cache(maxsize=4096)
def _contiguous_tracker(shape: tuple[int, ...]) -> ShapeTracker: return ShapeTracker((View.create(shape),))
