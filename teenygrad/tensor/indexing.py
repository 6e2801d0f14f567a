"""t[index] and t[index] = value with torch's rules: ints, slices (any step), None, Ellipsis, and advanced
indexing with integer tensors, lists and boolean masks (broadcast together)."""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from teenygrad.dtype import dtypes
from teenygrad.helpers import prod

if TYPE_CHECKING:
  from teenygrad.tensor.tensor import Tensor


def _T():
  from teenygrad.tensor.tensor import Tensor
  return Tensor


def _normalize(x: Tensor, index) -> list:
  """A list of index items with Ellipsis expanded and bool masks turned into integer tensors."""
  T = _T()
  items = list(index) if isinstance(index, tuple) else [index]
  expanded = []
  for item in items:
    if isinstance(item, (list, np.ndarray)) and not isinstance(item, T):
      array = np.asarray(item)
      if array.dtype == object: raise IndexError("too many indices or ragged index list")
      item = T(array, device=x.device) if array.dtype != np.bool_ else T(array, device=x.device)
    if isinstance(item, T) and item.dtype == dtypes.bool:
      mask = item.numpy()
      at = sum(1 for it in expanded if it is not None and not isinstance(it, tuple))
      if mask.ndim and tuple(mask.shape) != tuple(x.shape[at:at + mask.ndim]):
        raise IndexError(f"The shape of the mask {list(mask.shape)} at index {at} does not match the shape of the indexed tensor {list(x.shape)} at index {at}")
      expanded.extend(T(nz, device=x.device) for nz in np.nonzero(mask)) if mask.ndim else expanded.append(("boolscalar", bool(mask)))
      continue
    if isinstance(item, bool): expanded.append(("boolscalar", item)); continue
    expanded.append(item)
  consumed = sum(1 for it in expanded if it is not None and it is not Ellipsis and not isinstance(it, tuple))
  if sum(1 for it in expanded if it is Ellipsis) > 1: raise IndexError("an index can only have a single ellipsis ('...')")
  if consumed > x.ndim:
    raise IndexError(f"too many indices for tensor of dimension {x.ndim}")
  out = []
  for it in expanded:
    if it is Ellipsis: out.extend([slice(None)] * (x.ndim - consumed))
    else: out.append(it)
  return out + [slice(None)] * (x.ndim - sum(1 for it in out if it is not None and not isinstance(it, tuple)))


def _basic(x: Tensor, items: list) -> tuple[Tensor, list[tuple[int, Tensor]]]:
  """Apply ints, slices and None; return the view and the advanced (dim, index tensor) pairs left to do."""
  T = _T()
  shrink, flips, strides, new_shape_ops, advanced = [], [], [], [], []
  dim = 0
  out_dims = []   # for each output dim: ('keep', src_dim) or ('new',)
  for it in items:
    if it is None: out_dims.append(("new",)); continue
    if isinstance(it, tuple) and it[0] == "boolscalar":
      out_dims.append(("new",))
      if not it[1]: advanced.append(("empty", None))
      continue
    size = x.shape[dim]
    if isinstance(it, (int, np.integer)) and not isinstance(it, bool):
      i = int(it)
      if not -size <= i < size: raise IndexError(f"index {i} is out of bounds for dimension {dim} with size {size}")
      i %= size
      shrink.append((i, i + 1)); flips.append(False); strides.append(1)
      dim += 1; continue
    if isinstance(it, slice):
      start, stop, step = it.indices(size)
      if step == 0: raise ValueError("slice step cannot be zero")
      if step < 0: raise ValueError("step must be greater than zero")
      count = max(0, (stop - start + step - 1) // step)
      shrink.append((start, start + count * step if count else start)); flips.append(False); strides.append(step)
      out_dims.append(("keep", dim, count))
      dim += 1; continue
    if isinstance(it, T):
      shrink.append((0, size)); flips.append(False); strides.append(1)
      out_dims.append(("adv", dim, it))
      dim += 1; continue
    raise IndexError(f"unsupported index type {type(it).__name__}")
  y = x._shrink(tuple(shrink))
  # strides > 1: pad to a multiple, split, keep the first of each group
  if any(s > 1 for s in strides):
    shape = list(y.shape)
    pads = tuple((0, (-n) % s if n else 0) for n, s in zip(shape, strides))
    y = y._pad(pads)
    split = []
    for n, s in zip(y.shape, strides): split += [n // s, s] if s > 1 else [n, 1]
    y = y.reshape(tuple(split))
    y = y._shrink(tuple((0, split[2 * i]) if j == 0 else (0, 1) for i in range(len(strides)) for j in range(2)))
    y = y.reshape(tuple(split[2 * i] for i in range(len(strides))))
  # drop int dims, add None dims, remember where advanced dims sit
  final_shape, adv_positions = [], []
  for d in out_dims:
    if d[0] == "new": final_shape.append(1)
    else:
      if d[0] == "adv": adv_positions.append((len(final_shape), d[2]))
      final_shape.append(y.shape[d[1]])
  y = y.reshape(tuple(final_shape))
  empties = [a for a in advanced if a[0] == "empty"]
  if empties: y = y._shrink(tuple((0, 0) if i == 0 else (0, s) for i, s in enumerate(y.shape)))
  return y, adv_positions


def getitem(x: Tensor, index) -> Tensor:
  items = _normalize(x, index)
  y, advanced = _basic(x, items)
  if not advanced: return y
  return _advanced(y, advanced)


def _advanced(y: Tensor, advanced: list[tuple[int, Tensor]]) -> Tensor:
  from teenygrad.tensor.tensor import _broadcast_shape
  dims = [d for d, _ in advanced]
  checked = [y._checked_index(idx, y.shape[d], d) for d, idx in advanced]
  bshape = _broadcast_shape(*(c.shape for c in checked))
  # flatten the advanced dims into one and select with a single flat index
  rest = [d for d in range(y.ndim) if d not in dims]
  moved = y.permute(dims + rest)
  sizes = [y.shape[d] for d in dims]
  flat = moved.reshape((prod(sizes),) + tuple(y.shape[d] for d in rest))
  flat_index = None
  for idx, size_after in zip(checked, [prod(sizes[i + 1:]) for i in range(len(sizes))]):
    term = idx.expand(*bshape).cast(dtypes.int32) * size_after
    flat_index = term if flat_index is None else flat_index + term
  picked = flat._one_hot_select(0, flat_index) if flat.shape[0] else flat.reshape(bshape + flat.shape[1:])
  # torch: adjacent advanced dims stay in place; separated ones go first
  adjacent = dims == list(range(dims[0], dims[0] + len(dims)))
  if adjacent and dims[0] > 0:
    nb = len(bshape)
    order = list(range(nb, nb + dims[0])) + list(range(nb)) + list(range(nb + dims[0], picked.ndim))
    picked = picked.permute(order)
  return picked


def setitem(x: Tensor, index, value) -> None:
  """x[index] = value: positions computed on the host, the update is one where() over x."""
  T = _T()
  if x.requires_grad and x.is_leaf:
    from teenygrad.tensor.tensor import is_grad_enabled
    if is_grad_enabled(): raise RuntimeError("a leaf Variable that requires grad is being used in an in-place operation.")
  positions = T(np.arange(prod(x.shape), dtype=np.int64).reshape(x.shape), device=x.device)
  target = getitem(positions, index)
  flat_targets = target.numpy().reshape(-1)
  if not isinstance(value, T): value = T._const(value, x.dtype, x.device)
  if value.dtype != x.dtype:
    if value.dtype.category > x.dtype.category and x.dtype.is_int: pass  # torch casts silently
    value = value.cast(x.dtype)
  try: value = value.expand(*target.shape) if value.shape != target.shape else value
  except RuntimeError:
    raise RuntimeError(f"shape mismatch: value tensor of shape {list(value.shape)} cannot be broadcast to indexing result of shape {list(target.shape)}") from None
  numel = prod(x.shape)
  if len(flat_targets) == 0: return
  # the last write to a position wins, as in torch on the CPU
  _, last = np.unique(flat_targets[::-1], return_index=True)
  keep = len(flat_targets) - 1 - last
  order = np.full(numel, -1, dtype=np.int64)
  order[flat_targets[keep]] = keep
  hit = T(order >= 0, device=x.device).reshape(x.shape)
  source_index = T(np.maximum(order, 0).astype(np.int32), device=x.device)
  gathered = value.reshape(-1)._one_hot_select(0, source_index).reshape(x.shape) if value.numel() > 1 else value.reshape(()).expand(*x.shape)
  updated = hit._where(gathered, x)
  if x.requires_grad and x.is_leaf: x.assign(updated)   # under no_grad, e.g. initialising a parameter
  else: x._inplace(updated)
