"""Writing new keys/values into a preallocated KV cache in place.

The lazy core writes whole buffers (ASSIGN targets a base), so storing T new rows would rewrite the whole cache
each step. This custom op copies just the new rows into the cache's buffer and returns a tensor that aliases the
cache, so attention reads it after the write. The reference is the functional form (`where` over positions).
"""
from __future__ import annotations

import numpy as np

from teenygrad.ir.lazy import LazyBuffer
from teenygrad.ir.symbolic import BoundVariable
from teenygrad.tensor import Tensor


class CacheWrite:
  """Custom op: cache[:, :, start:start+T, :] = new; returns the cache's buffer."""
  def __init__(self, start: int, cache_shape: tuple, new_shape: tuple):
    self.start, self.cache_shape, self.new_shape = start, cache_shape, new_shape

  def run(self, root: LazyBuffer, buffers: list):
    cache, new = buffers
    if cache.device != "CPU": return self._run_reference(root, cache, new)
    B, H, _, D = self.cache_shape
    T = self.new_shape[2]
    dest = cache.raw.view(cache.dtype.np).reshape(self.cache_shape)
    dest[:, :, self.start:self.start + T, :] = new.raw.view(new.dtype.np).reshape(B, H, T, D)
    return cache

  def _run_reference(self, root: LazyBuffer, cache, new):
    # other devices: the primitive-op form, computed and then assigned into the cache buffer
    cache_t = Tensor(LazyBuffer.from_realized(cache, self.cache_shape, cache.dtype, cache.device))
    new_t = Tensor(LazyBuffer.from_realized(new, self.new_shape, new.dtype, new.device))
    cache_t.assign(reference_cache_write(cache_t, new_t, self.start)).realize()
    return cache

  def backward(self, grad, ctx):
    raise RuntimeError("the KV cache write has no gradient (inference only)")


def reference_cache_write(cache: Tensor, new: Tensor, start: int) -> Tensor:
  """What CacheWrite computes, from primitives: the new rows padded into place, selected by position."""
  L, T = cache.shape[2], new.shape[2]
  padded = new.pad((0, 0, start, L - start - T))
  positions = Tensor.arange(L, device=cache.device).reshape(1, 1, L, 1)
  return ((positions >= start) & (positions < start + T))._where(padded, cache)


def cache_write(cache: Tensor, new: Tensor, start) -> Tensor:
  """Store new (B, H, T, D) at rows [start, start+T) of cache (B, H, L, D); returns a tensor aliasing the cache."""
  start = start.value if isinstance(start, BoundVariable) else int(start)
  T = new.shape[2]
  if not 0 <= start <= cache.shape[2] - T: raise ValueError(f"cache write of {T} rows at {start} overflows a cache of {cache.shape[2]}")
  new = new.cast(cache.dtype).contiguous()
  op = CacheWrite(start, cache.shape, new.shape)
  return Tensor(LazyBuffer.custom(op, (cache.lazydata, new.lazydata), cache.shape, cache.dtype))
