"""Reductions with torch's dim/keepdim conventions, built on the SUM and REDUCE_MAX primitives."""
from __future__ import annotations

from collections import namedtuple
from typing import TYPE_CHECKING

from teenygrad.dtype import dtypes
from teenygrad.helpers import normalize_dim, prod
from teenygrad.ir.ops import Ops

if TYPE_CHECKING:
  from teenygrad.tensor.tensor import Tensor

MinMax = namedtuple("MinMax", ["values", "indices"])


def _T():
  from teenygrad.tensor.tensor import Tensor
  return Tensor


def _axes(x: Tensor, dim) -> tuple[int, ...]:
  if dim is None: return tuple(range(x.ndim))
  dims = [dim] if isinstance(dim, int) else list(dim)
  if not dims: return tuple(range(x.ndim))
  axes = tuple(normalize_dim(d, x.ndim) for d in dims)
  if len(set(axes)) != len(axes): raise RuntimeError(f"dim {dims} appears multiple times in the list of dims")
  return tuple(sorted(axes)) if x.ndim else ()


def _finish(x: Tensor, out: Tensor, axes, keepdim: bool) -> Tensor:
  if keepdim or not axes: return out if out.shape == tuple(1 if i in axes else s for i, s in enumerate(x.shape)) else out
  return out.reshape(tuple(s for i, s in enumerate(x.shape) if i not in axes))


class ReduceMixin:
  __slots__ = ()

  def sum(self: Tensor, dim=None, keepdim: bool = False, dtype=None) -> Tensor:
    from teenygrad.dtype import to_dtype
    x = self
    if dtype is not None: x = x.cast(to_dtype(dtype))
    elif x.dtype.is_int or x.dtype.is_bool: x = x.cast(dtypes.int64)
    axes = _axes(self, dim)
    out = x._reduce_keep(Ops.SUM, axes)
    return _finish(self, out, axes, keepdim)

  def _reduce_keep(self: Tensor, op: Ops, axes) -> Tensor:
    """Reduce keeping dims; half types accumulate in float32 (as torch does) and round once."""
    if self.dtype in (dtypes.float16, dtypes.bfloat16) and op is Ops.SUM:
      return self.float()._reduce(op, axes).cast(self.dtype)
    return self._reduce(op, axes)

  def mean(self: Tensor, dim=None, keepdim: bool = False, dtype=None) -> Tensor:
    if not self.dtype.is_float and dtype is None:
      raise RuntimeError(f"mean(): could not infer output dtype. Input dtype must be either a floating point or complex dtype. Got: {self.dtype.name.capitalize()}")
    axes = _axes(self, dim)
    count = prod(self.shape[a] for a in axes)
    total = self.sum(dim, keepdim, dtype)
    return total * (1.0 / count) if count else total * float("nan")

  def prod(self: Tensor, dim=None, keepdim: bool = False, dtype=None) -> Tensor:
    """Product via log-magnitudes for floats (sign and zeros tracked separately); by bits for ints."""
    x = self if dtype is None else self.cast(dtype)
    if x.dtype.is_int or x.dtype.is_bool: x = x.cast(dtypes.int64)
    if dim is not None and not isinstance(dim, int): raise TypeError("prod() takes a single int dim")
    if dim is None: x, axis = x.reshape(-1), 0
    else: axis = normalize_dim(dim, x.ndim) if x.ndim else 0
    if x.ndim == 0: return x
    n = x.shape[axis]
    out = None
    for i in range(n):   # products are short in practice; a log-domain reduction would lose exactness on ints
      piece = x.narrow(axis, i, 1)
      out = piece if out is None else out * piece
    if out is None: out = _T()._const(1, x.dtype, x.device, tuple(1 if i == axis else s for i, s in enumerate(x.shape)))
    if dim is None: return out.reshape(())
    return out if keepdim else out.squeeze(axis)

  def amax(self: Tensor, dim=None, keepdim: bool = False) -> Tensor:
    axes = _axes(self, dim)
    if any(self.shape[a] == 0 for a in axes): raise RuntimeError("max(): Expected reduction dim to be specified for input.numel() == 0.")
    x = self.cast(dtypes.uint8) if self.dtype.is_bool else self
    out = x._reduce(Ops.REDUCE_MAX, axes)
    return _finish(self, out.cast(self.dtype), axes, keepdim)

  def amin(self: Tensor, dim=None, keepdim: bool = False) -> Tensor:
    if self.dtype.is_bool: return ~((~self).amax(dim, keepdim))
    if not self.dtype.is_float and not self.dtype.signed: return (255 - self).amax(dim, keepdim).__rsub__(255).cast(self.dtype)
    return -((-self).amax(dim, keepdim))

  def max(self: Tensor, dim=None, keepdim: bool = False):
    if isinstance(dim, _T()): return self.maximum(dim)
    if dim is None: return self.amax()
    return _values_at(self, dim, keepdim, self.argmax(dim, keepdim=True), self.amax(dim, keepdim))

  def min(self: Tensor, dim=None, keepdim: bool = False):
    if isinstance(dim, _T()): return self.minimum(dim)
    if dim is None: return self.amin()
    return _values_at(self, dim, keepdim, self.argmin(dim, keepdim=True), self.amin(dim, keepdim))

  def argmax(self: Tensor, dim=None, keepdim: bool = False) -> Tensor:
    """Index of the first maximum (NaN counts as the maximum, as in torch)."""
    T = _T()
    if dim is None:
      flat = self.reshape(-1).argmax(0)
      return flat.reshape((1,) * self.ndim) if keepdim else flat
    axis = normalize_dim(dim, self.ndim) if self.ndim else 0
    if self.ndim == 0: return T._const(0, dtypes.int64, self.device)
    n = self.shape[axis]
    if n == 0: raise IndexError("argmax(): Expected reduction dim to be specified for input.numel() == 0.")
    x = self.float() if self.dtype.is_bool or self.dtype in (dtypes.float16, dtypes.bfloat16) else self
    if x.dtype.is_float: x = x.isnan()._where(float("inf"), x)
    best = x._reduce(Ops.REDUCE_MAX, (axis,))
    hit = x == best
    idx = T.arange(n, 0, -1, dtype=dtypes.int32, device=self.device).reshape(tuple(n if i == axis else 1 for i in range(self.ndim)))
    first = hit._where(idx, 0)._reduce(Ops.REDUCE_MAX, (axis,))
    out = (n - first).cast(dtypes.int64)
    return out if keepdim else out.squeeze(axis)

  def argmin(self: Tensor, dim=None, keepdim: bool = False) -> Tensor:
    if self.dtype.is_float: return (-self).argmax(dim, keepdim)
    if self.dtype.is_bool: return (~self).argmax(dim, keepdim)
    return (-(self.cast(dtypes.int64))).argmax(dim, keepdim)

  def var(self: Tensor, dim=None, keepdim: bool = False, unbiased=None, correction=None) -> Tensor:
    if unbiased is not None and correction is None: correction = 1 if unbiased else 0
    if correction is None: correction = 1
    axes = _axes(self, dim)
    n = prod(self.shape[a] for a in axes)
    mean = self.mean(axes, keepdim=True)
    squares = ((self - mean) * (self - mean)).sum(axes, keepdim=keepdim)
    return squares / max(n - correction, 0) if n - correction > 0 else squares * float("nan")

  def std(self: Tensor, dim=None, keepdim: bool = False, unbiased=None, correction=None) -> Tensor:
    return self.var(dim, keepdim, unbiased, correction).sqrt()

  def var_mean(self: Tensor, dim=None, keepdim=False, correction=1):
    return self.var(dim, keepdim, correction=correction), self.mean(dim, keepdim)

  def any(self: Tensor, dim=None, keepdim: bool = False) -> Tensor:
    return self.cast(dtypes.bool).cast(dtypes.int32).sum(dim, keepdim) > 0     # empty: False

  def all(self: Tensor, dim=None, keepdim: bool = False) -> Tensor:
    return (~self.cast(dtypes.bool)).cast(dtypes.int32).sum(dim, keepdim) == 0  # empty: True

  def logsumexp(self: Tensor, dim, keepdim: bool = False) -> Tensor:
    axes = _axes(self, dim)
    m = self.amax(axes, keepdim=True).detach()
    m = m.isinf()._where(0.0, m)
    out = (self - m).exp().sum(axes, keepdim=True).log() + m
    return _finish(self, out, axes, keepdim)

  def softmax(self: Tensor, dim: int = -1, dtype=None) -> Tensor:
    x = self if dtype is None else self.cast(dtype)
    x = x._float()
    axis = normalize_dim(dim, x.ndim) if x.ndim else 0
    if x.ndim == 0: return x.exp() / x.exp()
    e = (x - x._reduce(Ops.REDUCE_MAX, (axis,)).detach()).exp()
    return e / e._reduce_keep(Ops.SUM, (axis,))

  def log_softmax(self: Tensor, dim: int = -1, dtype=None) -> Tensor:
    x = self if dtype is None else self.cast(dtype)
    x = x._float()
    axis = normalize_dim(dim, x.ndim) if x.ndim else 0
    if x.ndim == 0: return x - x
    shifted = x - x._reduce(Ops.REDUCE_MAX, (axis,)).detach()
    return shifted - shifted.exp()._reduce_keep(Ops.SUM, (axis,)).log()

  def _cumulative(self: Tensor, dim: int, op: Ops) -> Tensor:
    """Windowed reduce over a left-padded copy: out[i] = reduce(x[0..i])."""
    if self.ndim == 0: return self
    axis = normalize_dim(dim, self.ndim)
    x = self.movedim(axis, -1)
    n = x.shape[-1]
    if n == 0: return self
    fill = 0 if op is Ops.SUM else (float("-inf") if x.dtype.is_float else _int_min(x.dtype))
    padded = x.pad((n - 1, 0), value=fill)
    windows = padded._pool((n,))                  # (..., n, n)
    out = windows._reduce(op, (windows.ndim - 1,)).reshape(x.shape)
    return out.movedim(-1, axis)

  def cumsum(self: Tensor, dim: int, dtype=None) -> Tensor:
    x = self if dtype is None else self.cast(dtype)
    if x.dtype.is_int or x.dtype.is_bool: x = x.cast(dtypes.int64)
    if x.dtype in (dtypes.float16, dtypes.bfloat16): return x.float()._cumulative(dim, Ops.SUM).cast(x.dtype)
    return x._cumulative(dim, Ops.SUM)

  def cumprod(self: Tensor, dim: int) -> Tensor:
    axis = normalize_dim(dim, self.ndim)
    pieces, running = [], None
    for i in range(self.shape[axis]):
      piece = self.narrow(axis, i, 1)
      running = piece if running is None else running * piece
      pieces.append(running)
    return _T().cat(pieces, dim=axis) if pieces else self

  def cummax(self: Tensor, dim: int):
    T = _T()
    axis = normalize_dim(dim, self.ndim) if self.ndim else 0
    values = self._cumulative(axis, Ops.REDUCE_MAX) if self.ndim else self
    if self.ndim == 0: return MinMax(values, T._const(0, dtypes.int64, self.device))
    n = self.shape[axis]
    # index of the last position <= i holding the running max
    shape = tuple(n if i == axis else 1 for i in range(self.ndim))
    pos = T.arange(n, dtype=dtypes.int32, device=self.device).reshape(shape)
    x, v = self.movedim(axis, -1), values.movedim(axis, -1)
    hit = (x.unsqueeze(-2) == v.unsqueeze(-1)) & (pos.reshape(-1).reshape(1, n) <= pos.reshape(-1).reshape(n, 1))
    idx = hit._where(pos.reshape(1, n), -1).amax(-1).cast(dtypes.int64)
    return MinMax(values, idx.movedim(-1, axis))

  def cummin(self: Tensor, dim: int):
    values, indices = (-self).cummax(dim)
    return MinMax(-values, indices)


def _values_at(x: Tensor, dim: int, keepdim: bool, index: Tensor, values: Tensor) -> MinMax:
  """max(dim)/min(dim): the gradient flows to the chosen index only, as in torch."""
  squeeze = (lambda t: t) if keepdim or x.ndim == 0 else (lambda t: t.squeeze(dim))
  if x.requires_grad and x.ndim: values = squeeze(x.gather(dim, index))
  return MinMax(values, squeeze(index))


def _int_min(dtype) -> int:
  from teenygrad.ir.ops import REDUCE_IDENTITY
  return REDUCE_IDENTITY[Ops.REDUCE_MAX](dtype)
