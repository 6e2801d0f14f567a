"""Movement and indexing. Everything here is a view (reshape, permute, expand, pad, shrink, flip) or is built
from views plus elementwise ops; data-dependent indexing compares against an arange (one-hot) so no kernel ever
loads from an address it can't bound at compile time."""
from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from teenygrad.dtype import dtypes
from teenygrad.helpers import flatten, normalize_dim, prod
from teenygrad.ir.ops import Ops

if TYPE_CHECKING:
  from teenygrad.tensor.tensor import Tensor


def _T():
  from teenygrad.tensor.tensor import Tensor
  return Tensor


def _shape_args(args) -> tuple:
  if len(args) == 1 and isinstance(args[0], (tuple, list)): return tuple(args[0])
  return tuple(args)


class MovementMixin:
  __slots__ = ()

  # ---- views ----
  def reshape(self: Tensor, *shape) -> Tensor:
    shape = _shape_args(shape)
    for s in shape:
      if not isinstance(s, int) and not hasattr(s, "vmin"): raise TypeError(f"reshape got a non-integer size {s!r}")
    if sum(1 for s in shape if isinstance(s, int) and s == -1) > 1: raise RuntimeError("only one dimension can be inferred")
    if any(isinstance(s, int) and s < -1 for s in shape): raise RuntimeError(f"invalid shape dimension {min(shape)}")
    numel = prod(self.shape)
    if -1 in shape:
      known = prod(s for s in shape if s != -1)
      if known == 0 or numel % known: raise RuntimeError(f"shape '{list(shape)}' is invalid for input of size {numel}")
      shape = tuple(numel // known if s == -1 else s for s in shape)
    if prod(shape) != numel: raise RuntimeError(f"shape '{list(shape)}' is invalid for input of size {numel}")
    return self if shape == self.shape else self._apply(Ops.RESHAPE, arg=shape)

  def view(self: Tensor, *shape) -> Tensor:
    if len(shape) == 1 and not isinstance(shape[0], (int, tuple, list)): return self.view_as_dtype(shape[0])
    out = self.reshape(*shape)
    # torch's view never copies: refuse what a single strided view of the same memory can't express
    if out is not self and len(out.lazydata.st.views) > len(self.lazydata.st.views):
      raise RuntimeError("view size is not compatible with input tensor's size and stride (at least one dimension spans across two contiguous subspaces). Use .reshape(...) instead.")
    return out

  def reshape_as(self: Tensor, other: Tensor) -> Tensor: return self.reshape(other.shape)
  def view_as(self: Tensor, other: Tensor) -> Tensor: return self.reshape(other.shape)

  def permute(self: Tensor, *order) -> Tensor:
    order = _shape_args(order)
    if len(order) != self.ndim:
      raise RuntimeError(f"permute(sparse_coo): number of dimensions in the tensor input does not match the length of the desired ordering of dimensions i.e. input.dim() = {self.ndim} is not equal to len(dims) = {len(order)}")
    order = tuple(normalize_dim(d, self.ndim) for d in order)
    if len(set(order)) != len(order): raise RuntimeError("permute(): duplicate dims are not allowed.")
    return self if order == tuple(range(self.ndim)) else self._apply(Ops.PERMUTE, arg=order)

  def transpose(self: Tensor, dim0: int = 0, dim1: int = 1) -> Tensor:
    if self.ndim < 2 and (dim0, dim1) in ((0, 1), (1, 0)) and self.ndim == 0: return self
    d0, d1 = normalize_dim(dim0, self.ndim), normalize_dim(dim1, self.ndim)
    order = list(range(self.ndim))
    order[d0], order[d1] = order[d1], order[d0]
    return self.permute(order)

  swapaxes = transpose
  def t(self: Tensor) -> Tensor:
    if self.ndim > 2: raise RuntimeError(f"t() expects a tensor with <= 2 dimensions, but self is {self.ndim}D")
    return self.transpose(0, 1) if self.ndim == 2 else self

  def movedim(self: Tensor, source, destination) -> Tensor:
    source = [source] if isinstance(source, int) else list(source)
    destination = [destination] if isinstance(destination, int) else list(destination)
    source = [normalize_dim(s, self.ndim) for s in source]
    destination = [normalize_dim(d, self.ndim) for d in destination]
    rest = [d for d in range(self.ndim) if d not in source]
    order = [0] * self.ndim
    for s, d in zip(source, destination): order[d] = s
    it = iter(rest)
    for i in range(self.ndim):
      if i not in destination: order[i] = next(it)
    return self.permute(order)

  moveaxis = movedim

  def expand(self: Tensor, *shape) -> Tensor:
    shape = _shape_args(shape)
    if len(shape) < self.ndim:
      raise RuntimeError(f"expand: the number of sizes provided ({len(shape)}) must be greater or equal to the number of dimensions in the tensor ({self.ndim})")
    current = (1,) * (len(shape) - self.ndim) + tuple(self.shape)
    target = tuple(c if s == -1 else s for s, c in zip(shape, current))
    for c, t in zip(current, target):
      if c != t and c != 1:
        raise RuntimeError(f"The expanded size of the tensor ({t}) must match the existing size ({c}) at non-singleton dimension. Target sizes: {list(shape)}. Tensor sizes: {list(self.shape)}")
    x = self.reshape(current) if current != self.shape else self
    return x if target == x.shape else x._apply(Ops.EXPAND, arg=target)

  def expand_as(self: Tensor, other: Tensor) -> Tensor: return self.expand(*other.shape)
  def broadcast_to(self: Tensor, shape) -> Tensor: return self.expand(*shape)
  def _broadcast_to(self: Tensor, shape) -> Tensor: return self if self.shape == tuple(shape) else self.expand(*shape)

  def squeeze(self: Tensor, dim=None) -> Tensor:
    if dim is None: return self.reshape(tuple(s for s in self.shape if s != 1))
    dims = [dim] if isinstance(dim, int) else list(dim)
    if self.ndim == 0:
      for d in dims: normalize_dim(d, 0)
      return self
    dims = {normalize_dim(d, self.ndim) for d in dims}
    return self.reshape(tuple(s for i, s in enumerate(self.shape) if not (i in dims and s == 1)))

  def unsqueeze(self: Tensor, dim: int) -> Tensor:
    dim = normalize_dim(dim, self.ndim + 1)
    return self.reshape(self.shape[:dim] + (1,) + self.shape[dim:])

  def flatten(self: Tensor, start_dim: int = 0, end_dim: int = -1) -> Tensor:
    if self.ndim == 0: return self.reshape(1)
    start, end = normalize_dim(start_dim, self.ndim), normalize_dim(end_dim, self.ndim)
    if start > end: raise RuntimeError("flatten() has invalid args: start_dim cannot come after end_dim")
    return self.reshape(self.shape[:start] + (prod(self.shape[start:end + 1]),) + self.shape[end + 1:])

  def unflatten(self: Tensor, dim: int, sizes) -> Tensor:
    dim = normalize_dim(dim, self.ndim)
    sizes = tuple(sizes)
    if -1 in sizes:
      known = prod(s for s in sizes if s != -1)
      sizes = tuple(self.shape[dim] // known if s == -1 else s for s in sizes)
    if prod(sizes) != self.shape[dim]:
      raise RuntimeError(f"unflatten: Provided sizes {list(sizes)} don't multiply up to the size of dim {dim} ({self.shape[dim]}) in the input tensor")
    return self.reshape(self.shape[:dim] + sizes + self.shape[dim + 1:])

  def flip(self: Tensor, *dims) -> Tensor:
    dims = _shape_args(dims)
    axes = tuple(normalize_dim(d, self.ndim) for d in dims)
    if len(set(axes)) != len(axes): raise RuntimeError("dims has duplicates")
    return self._flip(tuple(a for a in axes if self.shape[a] > 1))

  def fliplr(self: Tensor) -> Tensor: return self.flip(1)
  def flipud(self: Tensor) -> Tensor: return self.flip(0)

  def narrow(self: Tensor, dim: int, start: int, length: int) -> Tensor:
    dim = normalize_dim(dim, self.ndim)
    if start < 0: start += self.shape[dim]
    if not 0 <= start <= start + length <= self.shape[dim]: raise RuntimeError("start + length exceeds dimension size")
    return self._shrink(tuple((start, start + length) if i == dim else (0, s) for i, s in enumerate(self.shape)))

  # ---- joining and splitting ----
  def cat(self: Tensor, *others: Tensor, dim: int = 0) -> Tensor:
    return _T().cat([self, *others], dim=dim)

  def split(self: Tensor, split_size_or_sections, dim: int = 0) -> tuple[Tensor, ...]:
    dim = normalize_dim(dim, self.ndim)
    n = self.shape[dim]
    if isinstance(split_size_or_sections, int):
      if split_size_or_sections <= 0 and n > 0: raise RuntimeError("split_size can only be 0 if dimension size is 0")
      step = split_size_or_sections
      sizes = [min(step, n - i) for i in range(0, n, step)] if step else [0]
    else:
      sizes = list(split_size_or_sections)
      if sum(sizes) != n:
        raise RuntimeError(f"split_with_sizes expects split_sizes to sum exactly to {n} (input tensor's size at dimension {dim}), but got split_sizes={sizes}")
    out, start = [], 0
    for size in sizes:
      out.append(self.narrow(dim, start, size))
      start += size
    return tuple(out)

  def chunk(self: Tensor, chunks: int, dim: int = 0) -> tuple[Tensor, ...]:
    if chunks <= 0: raise RuntimeError("chunk expects `chunks` to be greater than 0")
    dim = normalize_dim(dim, self.ndim)
    return self.split(max(1, math.ceil(self.shape[dim] / chunks)), dim)

  def unbind(self: Tensor, dim: int = 0) -> tuple[Tensor, ...]:
    return tuple(t.squeeze(dim) for t in self.split(1, dim))

  def roll(self: Tensor, shifts, dims=None) -> Tensor:
    if dims is None: return self.flatten().roll(shifts, 0).reshape(self.shape)
    shifts = [shifts] if isinstance(shifts, int) else list(shifts)
    dims = [dims] if isinstance(dims, int) else list(dims)
    out = self
    for shift, dim in zip(shifts, dims):
      dim = normalize_dim(dim, self.ndim)
      n = self.shape[dim]
      if n == 0: continue
      shift %= n
      if shift == 0: continue
      a, b = out.split([n - shift, shift], dim)
      out = _T().cat([b, a], dim=dim)
    return out

  def repeat(self: Tensor, *repeats) -> Tensor:
    repeats = _shape_args(repeats)
    if len(repeats) < self.ndim:
      raise RuntimeError("Number of dimensions of repeat dims can not be smaller than number of dimensions of tensor")
    shape = (1,) * (len(repeats) - self.ndim) + tuple(self.shape)
    x = self.reshape(shape)
    # (r0, s0, r1, s1, ...) broadcast then merged: each copy is a view
    expanded = x.reshape(flatten((1, s) for s in shape)).expand(*flatten(zip(repeats, shape)))
    return expanded.reshape(tuple(r * s for r, s in zip(repeats, shape)))

  def tile(self: Tensor, *dims) -> Tensor:
    dims = _shape_args(dims)
    dims = (1,) * (self.ndim - len(dims)) + tuple(dims)
    return self.repeat(*dims)

  # ---- padding ----
  def pad(self: Tensor, pad, mode: str = "constant", value: float = 0.0) -> Tensor:
    """torch.nn.functional.pad: `pad` lists (left, right) pairs starting from the last dim."""
    if len(pad) % 2 or len(pad) // 2 > self.ndim:
      raise RuntimeError(f"Padding length must be divisible by 2 and at most twice the number of dims, got {len(pad)}")
    pairs = [(0, 0)] * (self.ndim - len(pad) // 2) + [(pad[i], pad[i + 1]) for i in range(len(pad) - 2, -1, -2)]
    if mode == "constant": return self._pad_constant(pairs, value)
    if mode not in ("reflect", "replicate", "circular"): raise NotImplementedError(f"padding mode {mode!r} is not supported")
    out = self
    for dim, (left, right) in enumerate(pairs):
      if left == 0 and right == 0: continue
      n = out.shape[dim]
      if mode == "reflect":
        if left >= n or right >= n:
          raise RuntimeError(f"Argument #4: Padding size should be less than the corresponding input dimension, but got: padding ({left}, {right}) at dimension {dim} of input {list(self.shape)}")
        pieces = [out.narrow(dim, 1, left).flip(dim)] if left else []
        pieces.append(out)
        if right: pieces.append(out.narrow(dim, n - 1 - right, right).flip(dim))
      elif mode == "replicate":
        edge_shape = lambda k: tuple(k if i == dim else s for i, s in enumerate(out.shape))  # noqa: E731
        pieces = ([out.narrow(dim, 0, 1).expand(*edge_shape(left))] if left else []) + [out] + \
                 ([out.narrow(dim, n - 1, 1).expand(*edge_shape(right))] if right else [])
      else:
        pieces = ([out.narrow(dim, n - left, left)] if left else []) + [out] + ([out.narrow(dim, 0, right)] if right else [])
      out = _T().cat(pieces, dim=dim)
    return out

  def _pad_constant(self: Tensor, pairs, value) -> Tensor:
    # negative padding crops
    crop = tuple((max(-b, 0), s - max(-a, 0)) for (b, a), s in zip(pairs, self.shape))
    x = self._shrink(crop)
    grow = tuple((max(b, 0), max(a, 0)) for b, a in pairs)
    padded = x._pad(grow)
    if value == 0: return padded
    inside = _T()._const(True, dtypes.bool, self.device, x.shape)._pad(grow)
    return inside._where(padded, value)

  # ---- windows (the basis of convolution and pooling) ----
  def _pool(self: Tensor, kernel: tuple[int, ...], stride=1, dilation=1) -> Tensor:
    """Sliding windows over the last len(kernel) dims: (..., *out, *kernel), all views."""
    k_ = tuple(kernel)
    n = len(k_)
    s_ = (stride,) * n if isinstance(stride, int) else tuple(stride)
    d_ = (dilation,) * n if isinstance(dilation, int) else tuple(dilation)
    noop = [None] * (self.ndim - n)
    i_ = self.shape[-n:]
    o_ = [(i - d * (k - 1) - 1) // s + 1 for i, d, k, s in zip(i_, d_, k_, s_)]
    if any(o <= 0 for o in o_): raise RuntimeError(f"window {k_} (dilation {d_}) is larger than the input {tuple(i_)}")
    prefix = self.shape[:-n]
    # repeat so that row j of a (k, i+d) reshape starts at offset j*d: windows without padding
    repeats = [math.ceil(k * (i + d) / i) for k, i, d in zip(k_, i_, d_)]
    x = self.repeat(*([1] * len(noop) + repeats))
    x = x._shrink(tuple((0, s) for s in prefix) + tuple((0, k * (i + d)) for k, i, d in zip(k_, i_, d_)))
    x = x.reshape(prefix + tuple(flatten((k, i + d) for k, i, d in zip(k_, i_, d_))))
    x = x._shrink(tuple((0, s) for s in prefix) + tuple(flatten(((0, k), (0, o * s)) for k, o, s in zip(k_, o_, s_))))
    x = x.reshape(prefix + tuple(flatten((k, o, s) for k, o, s in zip(k_, o_, s_))))
    x = x._shrink(tuple((0, s) for s in prefix) + tuple(flatten(((0, k), (0, o), (0, 1)) for k, o in zip(k_, o_))))
    x = x.reshape(prefix + tuple(flatten((k, o) for k, o in zip(k_, o_))))
    p = len(prefix)
    return x.permute(*range(p), *[p + 2 * i + 1 for i in range(n)], *[p + 2 * i for i in range(n)])

  # ---- masks ----
  def _tri_mask(self: Tensor, diagonal: int, upper: bool) -> Tensor:
    rows, cols = self.shape[-2], self.shape[-1]
    r = _T().arange(rows, device=self.device).reshape(rows, 1)
    c = _T().arange(cols, device=self.device).reshape(1, cols)
    return (c - r >= diagonal) if upper else (c - r <= diagonal)

  def triu(self: Tensor, diagonal: int = 0) -> Tensor:
    if self.ndim < 2: raise RuntimeError("triu: input tensor must have at least 2 dimensions")
    return self._tri_mask(diagonal, True)._where(self, _T()._const(0, self.dtype, self.device))

  def tril(self: Tensor, diagonal: int = 0) -> Tensor:
    if self.ndim < 2: raise RuntimeError("tril: input tensor must have at least 2 dimensions")
    return self._tri_mask(diagonal, False)._where(self, _T()._const(0, self.dtype, self.device))

  def masked_fill(self: Tensor, mask: Tensor, value) -> Tensor:
    if not isinstance(mask, _T()) or mask.dtype != dtypes.bool:
      raise RuntimeError("masked_fill_ only supports boolean masks")
    if isinstance(value, _T()):
      if value.ndim != 0: raise RuntimeError("masked_fill_ only supports a 0-dimensional value tensor")
      value = value.cast(self.dtype)
    else:
      if self.dtype.is_int and isinstance(value, float) and not value.is_integer():
        raise RuntimeError("value cannot be converted to type int without overflow")
      value = _T()._const(value, self.dtype, self.device)
    from teenygrad.tensor.tensor import _broadcast_shape
    shape = _broadcast_shape(self.shape, mask.shape)
    if shape != self.shape: raise RuntimeError(f"masked_fill: mask of shape {mask.shape} can't broadcast to {self.shape}")
    return mask._where(value, self)

  # ---- data-dependent indexing (one-hot) ----
  def _checked_index(self: Tensor, index, size: int, dim: int, error=IndexError) -> Tensor:
    T = _T()
    if not isinstance(index, T): index = T(np.asarray(index, dtype=np.int64), device=self.device)
    if index.dtype.is_float or index.dtype.is_bool: raise IndexError("tensors used as indices must be long, int, byte or bool tensors")
    if index.numel():
      host = index.numpy()
      low, high = int(host.min()), int(host.max())
      if low < -size or high >= size:
        bad = high if high >= size else low
        raise error(f"index {bad} is out of bounds for dimension {dim} with size {size}")
    return (index < 0)._where(index + size, index).cast(dtypes.int32)

  def _one_hot_select(self: Tensor, dim: int, index: Tensor) -> Tensor:
    """self with dim `dim` replaced by index's dims: out[..., idx..., ...] = self[..., index[idx], ...]."""
    T = _T()
    n = self.shape[dim]
    moved = self.movedim(dim, -1)                                 # (..., n)
    one_hot = index.unsqueeze(-1) == T.arange(n, dtype=dtypes.int32, device=self.device)  # (*I, n)
    lead = moved.shape[:-1]
    # (..., 1 x I, ..., n) against (1 x before, I, 1 x after, n): a where-sum keeps inf and nan where they belong
    before, after = lead[:dim], lead[dim:]
    x = moved.reshape(before + (1,) * index.ndim + after + (n,))
    hot = one_hot.reshape((1,) * len(before) + index.shape + (1,) * len(after) + (n,))
    return hot._where(x, T._const(0, self.dtype, self.device)).sum(-1).cast(self.dtype)

  def index_select(self: Tensor, dim: int, index) -> Tensor:
    dim = normalize_dim(dim, self.ndim)
    if isinstance(index, _T()) and index.ndim > 1: raise IndexError("index_select(): Index is supposed to be a vector")
    index = self._checked_index(index, self.shape[dim] if self.ndim else 1, dim)
    return self._one_hot_select(dim, index.reshape(-1))

  def gather(self: Tensor, dim: int, index: Tensor) -> Tensor:
    T = _T()
    dim = normalize_dim(dim, self.ndim)
    if index.ndim != self.ndim: raise RuntimeError("Index tensor must have the same number of dimensions as input tensor")
    for d in range(self.ndim):
      if d != dim and index.shape[d] > self.shape[d]:
        raise RuntimeError(f"Size does not match at dimension {d} expected index {list(index.shape)} to be smaller than self {list(self.shape)} apart from dimension {dim}")
    index = self._checked_index(index, self.shape[dim], dim, error=RuntimeError)
    n = self.shape[dim]
    x = self._shrink(tuple((0, n) if d == dim else (0, index.shape[d]) for d in range(self.ndim)))
    x = x.movedim(dim, -1).unsqueeze(dim)                         # (..., 1 at dim, ..., n)
    hot = index.unsqueeze(-1) == T.arange(n, dtype=dtypes.int32, device=self.device)
    return hot._where(x, T._const(0, self.dtype, self.device)).sum(-1).cast(self.dtype)

  def scatter(self: Tensor, dim: int, index: Tensor, src, reduce: str | None = None) -> Tensor:
    T = _T()
    dim = normalize_dim(dim, self.ndim)
    if index.ndim != self.ndim: raise RuntimeError("Index tensor must have the same number of dimensions as self tensor")
    index = self._checked_index(index, self.shape[dim], dim)
    if not isinstance(src, T): src = T._const(src, self.dtype, self.device, index.shape)
    src = src._shrink(tuple((0, s) for s in index.shape)).cast(self.dtype)
    n = self.shape[dim]
    hot = (index.unsqueeze(-1) == T.arange(n, dtype=dtypes.int32, device=self.device))   # (*I, n)
    # contribution[..., v, ...] = sum over index positions along dim that point at v
    hot_moved = hot.movedim(-1, dim).movedim(dim + 1, -1)                                 # I with I_dim->n, then I_dim
    src_moved = src.movedim(dim, -1).unsqueeze(dim)                                       # (..., 1, I_dim)
    hit = hot_moved.cast(dtypes.int32).sum(-1)                                            # (..., n, ...)
    work = self.dtype if self.dtype.is_float else dtypes.int64
    if reduce == "multiply":
      prod_terms = hot_moved._where(src_moved.cast(work), 1)
      contrib = prod_terms.prod(-1)
    else:
      contrib = (hot_moved.cast(work) * src_moved.cast(work)).sum(-1)
    pad = tuple((0, 0) if d == dim else (0, self.shape[d] - index.shape[d]) for d in range(self.ndim))
    hit_full = hit._pad(pad) > 0
    contrib_full = contrib._pad(pad).cast(self.dtype)
    if reduce == "add": return self + contrib_full
    if reduce == "multiply": return hit_full._where(self * contrib_full, self)
    if reduce is not None: raise RuntimeError(f"reduce argument must be either add or multiply, got {reduce}")
    return hit_full._where(contrib_full, self)

  def scatter_add(self: Tensor, dim: int, index: Tensor, src: Tensor) -> Tensor:
    return self.scatter(dim, index, src, reduce="add")

  def masked_select(self: Tensor, mask: Tensor) -> Tensor:
    return self[mask.expand(*self.shape)] if mask.shape != self.shape else self[mask]

  # ---- sort / topk (rank by pairwise comparison) ----
  def sort(self: Tensor, dim: int = -1, descending: bool = False, stable: bool = False) -> tuple[Tensor, Tensor]:
    T = _T()
    if self.ndim == 0: return self, T._const(0, dtypes.int64, self.device)
    dim = normalize_dim(dim, self.ndim)
    x = self.movedim(dim, -1)
    n = x.shape[-1]
    key = -x if descending else x
    a, b = key.unsqueeze(-1), key.unsqueeze(-2)                  # a: element i, b: element j
    pos = T.arange(n, dtype=dtypes.int32, device=self.device)
    before = (b < a) | ((b == a) & (pos.reshape(1, n) < pos.reshape(n, 1)))
    if self.dtype.is_float:   # NaN sorts last, as torch does
      nan_a, nan_b = a.isnan(), b.isnan()
      before = (nan_a & ~nan_b) | (nan_a & nan_b & (pos.reshape(1, n) < pos.reshape(n, 1))) | (~nan_a & ~nan_b & before)
    rank = before.cast(dtypes.int32).sum(-1)                      # (..., n): where element i goes
    place = rank.unsqueeze(-2) == pos.reshape(n, 1)               # (..., n_out, n_in)
    values = _select_where(place, x)
    indices = (place.cast(dtypes.int64) * pos.cast(dtypes.int64).reshape(1, n)).sum(-1)
    return values.movedim(-1, dim), indices.movedim(-1, dim)

  def argsort(self: Tensor, dim: int = -1, descending: bool = False, stable: bool = False) -> Tensor:
    return self.sort(dim, descending)[1]

  def topk(self: Tensor, k: int, dim: int = -1, largest: bool = True, sorted: bool = True) -> tuple[Tensor, Tensor]:
    dim = normalize_dim(dim, self.ndim)
    if not 0 <= k <= (self.shape[dim] if self.ndim else 1): raise RuntimeError("selected index k out of range")
    values, indices = self.sort(dim, descending=largest)
    return values.narrow(dim, 0, k), indices.narrow(dim, 0, k)

  # ---- __getitem__ / __setitem__ ----
  def __getitem__(self: Tensor, index) -> Tensor:
    from teenygrad.tensor.indexing import getitem
    return getitem(self, index)

  def __setitem__(self: Tensor, index, value) -> None:
    from teenygrad.tensor.indexing import setitem
    setitem(self, index, value)


def _select_where(place: Tensor, x: Tensor) -> Tensor:
  """sum over inputs of place ? x : 0, without 0 * inf turning into nan."""
  return place._where(x.unsqueeze(-2), _T()._const(0, x.dtype, x.device)).sum(-1).cast(x.dtype)
