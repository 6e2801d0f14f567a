"""Custom ops the model needs and the lazy core does not express cheaply, each with a primitive-op reference.

- `cache_write`: store new keys/values at a position of a preallocated KV cache. The core writes whole buffers
  (ASSIGN targets a base), so storing T rows would rewrite the whole cache every step; this copies just the rows.
  The position comes from a 1-element int32 tensor, so a JIT replay writes where the new call says.
- `embedding_rows`: rows of a float table for integer ids. A gather in primitives is a one-hot sum costing
  vocab x dim per token; this copies the rows (on the CPU on the host, on CUDA and Vulkan with a gather kernel).
- `decode_attention`: one query row per head against the cache, in one launch where the backend has a kernel.
- `prefill_attention`: T query rows per head (a prompt's causal attention), in one launch where the backend has a
  kernel (the CPU's).
- `rope_attention`: the same straight from the fused q/k/v projection's output, RoPE and the cache write of the new
  row included (decode's whole attention in one launch).
On the CPU and CUDA the cache write is a kernel of the backend's that reads the position from its buffer and copies
just the rows; other backends run the reference (a one-row cache write there is a lazy assign, so the kernel that
writes the row also computes it, but it rewrites the whole cache). The two attention ops return None where the
backend has no kernel, and the model runs the primitive path. `fusion_enabled` reads which of decode's fused kernels
are on (TEENYGRAD_DECODE_FUSION), here and in llm/fused_linear.py.
"""
from __future__ import annotations

import numpy as np

from teenygrad.dtype import dtypes
from teenygrad.helpers import config
from teenygrad.ir.lazy import LazyBuffer
from teenygrad.tensor import Tensor

DECODE_FUSIONS = ("linear", "norm", "swiglu", "float", "repack", "dp4a", "rope", "glu")


def fusion_enabled(part: str) -> bool:
  """Whether decode's fused kernel `part` (one of DECODE_FUSIONS) is on: config.decode_fusion (TEENYGRAD_DECODE_FUSION)
  is "all" (the default), "none" or a comma-separated list of parts, so a GPU failure can be bisected."""
  assert part in DECODE_FUSIONS, part
  setting = config.decode_fusion.strip().lower()
  return setting == "all" or part in {p.strip() for p in setting.split(",")}


def _host(buffer, shape) -> np.ndarray:
  return buffer.raw.view(buffer.dtype.np).reshape(shape)


class InferenceOp:
  """A custom op without a gradient (inference only): `backward` raises naming the op (its `what`)."""
  what = "this op"

  def backward(self, grad, ctx):
    raise RuntimeError(f"{self.what} has no gradient (inference only)")


class CacheWrite(InferenceOp):
  """Custom op: srcs (cache (B, H, L, D), new (B, H, T, D), start (1,) int32); cache[:, :, start:start+T] = new."""
  what = "the KV cache write"

  def __init__(self, cache_shape: tuple, new_shape: tuple):
    self.cache_shape, self.new_shape = cache_shape, new_shape

  def run(self, root: LazyBuffer, buffers: list):
    cache, new, start_buffer = buffers
    T, L = self.new_shape[2], self.cache_shape[2]
    if cache.device.partition(":")[0] not in _CACHE_WRITE_SOURCES:
      cache_t, new_t = (Tensor(LazyBuffer.from_realized(b, s, b.dtype, b.device)) for b, s in ((cache, self.cache_shape), (new, self.new_shape)))
      if T == 1:
        # one row (decode): a kernel that reads the position from its buffer, so a JIT replay writes at the new one
        start_t = Tensor(LazyBuffer.from_realized(start_buffer, (1,), start_buffer.dtype, start_buffer.device))
        positions = Tensor.arange(L, dtype=dtypes.int32, device=cache.device).reshape(1, 1, L, 1)
        cache_t.assign((positions == start_t.reshape(1, 1, 1, 1))._where(new_t.expand(*self.cache_shape), cache_t)).realize()
        return cache
      # several rows (prefill): the position shapes the kernels, so they stay out of JIT captures (a replay runs this again)
      from teenygrad.engine.realize import uncaptured
      start = int(start_buffer.numpy()[0])
      if not 0 <= start <= L - T: raise IndexError(f"KV cache write of {T} rows at position {start} overflows a cache of {L}")
      with uncaptured(): cache_t.assign(reference_cache_write(cache_t, new_t, start)).realize()
      return cache
    start = int(_host(start_buffer, (1,))[0] if cache.device == "CPU" else start_buffer.numpy()[0])
    if not 0 <= start <= L - T: raise IndexError(f"KV cache write of {T} rows at position {start} overflows a cache of {L}")
    _kernel_cache_write(cache, new, start_buffer, self.cache_shape, T)
    return cache



# The CPU's cache write: a C kernel reading the position from its buffer, so the JIT records the launch and a replay
# is one call. It checks the position itself too (a replay skips run()): out of range, it writes nothing.
CACHE_WRITE_SRC = r"""
#include <string.h>
/* cache (BH, L, row) <- rows (BH, T, row) at [start, start + T); row_bytes = D * itemsize */
void tg_cache_write(char* restrict cache, const char* restrict rows, const int* restrict start, long long BH, long long L,
                    long long T, long long row_bytes) {
  long long s = start[0];
  if (s < 0 || s > L - T) return;
  for (long long i = 0; i < BH; i++) memcpy(cache + (i * L + s) * row_bytes, rows + i * T * row_bytes, (size_t)(T * row_bytes));
}
"""
# CUDA's: a thread per byte of the new rows (a decode step writes a few hundred bytes per layer), so the step writes
# its row and nothing else, where a lazy assign would rewrite (and recompute into) the whole cache
CUDA_CACHE_WRITE_SRC = r"""
extern "C" __global__ void __launch_bounds__(256) tg_cache_write(unsigned char* __restrict__ cache,
    const unsigned char* __restrict__ rows, const int* __restrict__ start, long long BH, long long L, long long T, long long row_bytes) {
  const long long i = (long long)blockIdx.x * 256 + threadIdx.x, per = T * row_bytes, s = start[0];
  if (i >= BH * per || s < 0 || s > L - T) return;
  cache[(i / per * L + s) * row_bytes + i % per] = rows[i];
}
"""
_CACHE_WRITE_SOURCES = {"CPU": CACHE_WRITE_SRC, "CUDA": CUDA_CACHE_WRITE_SRC}
_cache_write_programs: dict[tuple, object] = {}


def _kernel_cache_write(cache, new, start_buffer, cache_shape: tuple, T: int) -> None:
  """The rows written by the backend's cache-write kernel, recorded: a JIT replay writes at the position its buffer holds."""
  from teenygrad.device import Device
  from teenygrad.engine.realize import CompiledKernel, ExecItem, launch
  B, H, L, D = cache_shape
  row_bytes = D * cache.dtype.itemsize
  src = _CACHE_WRITE_SOURCES[cache.device.partition(":")[0]]
  groups = -(-B * H * T * row_bytes // 256) if src is CUDA_CACHE_WRITE_SRC else 0
  key = (cache.device, groups)
  if key not in _cache_write_programs:
    from teenygrad.renderer.gpu import LaunchDims
    backend = Device[cache.device]
    launch_dims = LaunchDims(groups, 256, ()) if groups else None
    _cache_write_programs[key] = backend.program("tg_cache_write", backend.compiler.compile_cached(src), launch_dims)
  kernel = CompiledKernel("cache_write", _cache_write_programs[key], [], [], src, B * H * T * D, False)
  launch(ExecItem(kernel, [cache, new, start_buffer], (B * H, L, T, row_bytes), cache.device, assign=True))


def reference_cache_write(cache: Tensor, new: Tensor, start: int) -> Tensor:
  """What CacheWrite computes, from primitives: the new rows padded into place, selected by position."""
  L, T = cache.shape[2], new.shape[2]
  padded = new.pad((0, 0, start, L - start - T))
  positions = Tensor.arange(L, device=cache.device).reshape(1, 1, L, 1)
  return ((positions >= start) & (positions < start + T))._where(padded, cache)


def cache_write(cache: Tensor, new: Tensor, start: Tensor) -> Tensor:
  """Store new (B, H, T, D) at rows [start, start+T) of cache (B, H, L, D); returns a tensor aliasing the cache."""
  new = new.cast(cache.dtype)
  if cache.device.partition(":")[0] not in _CACHE_WRITE_SOURCES and new.shape[2] == 1 and not cache.lazydata.is_view \
     and cache.lazydata.realized is not None:
    # one row (decode) on a device without a cache-write kernel (OpenCL, Vulkan): an assign selecting the row by
    # the position's value, left lazy so the kernel
    # that writes it also computes it (the key's RoPE, the value's slice of a fused projection) instead of
    # reading a buffer of its own; the kernel rewrites the whole cache, as CacheWrite.run's does
    L = cache.shape[2]
    positions = Tensor.arange(L, dtype=dtypes.int32, device=cache.device).reshape(1, 1, L, 1)
    at = start.cast(dtypes.int32).reshape(1, 1, 1, 1)
    return cache.assign((positions == at)._where(new.expand(*cache.shape), cache))
  if new.lazydata.is_view and not new.lazydata.reshapes_base: new = new.contiguous()   # a reshape reads the base's buffer as is
  start = start.cast(dtypes.int32).reshape(1).contiguous()
  op = CacheWrite(cache.shape, new.shape)
  return Tensor(LazyBuffer.custom(op, (cache.lazydata, new.lazydata, start.lazydata), cache.shape, cache.dtype))


class EmbeddingRows:
  """Custom op: srcs (table (V, D), ids (N,) int32) -> (N, D) float32."""
  def __init__(self, table_shape: tuple, count: int):
    self.table_shape, self.count = table_shape, count

  def run(self, root: LazyBuffer, buffers: list):
    from teenygrad.device import Buffer
    table, ids = buffers
    V, D = self.table_shape
    gather = ROW_GATHERS.get(table.device.partition(":")[0])
    if gather is not None and table.dtype.name in gather[0]:
      # the ids are checked here, on the host; a JIT replay runs the recorded gather, which gives zero rows instead
      index = ids.numpy().astype(np.int64)
      bad = index[(index < 0) | (index >= V)]
      if bad.size: raise IndexError(f"token id {int(bad[0])} out of range for a vocabulary of {V}")
      out = Buffer(root.device, self.count * D, dtypes.float32)
      gather[1](out, ids, table, self.count, V, D)
      return out
    if table.device != "CPU":
      table_t = Tensor(LazyBuffer.from_realized(table, self.table_shape, table.dtype, table.device))
      ids_t = Tensor(LazyBuffer.from_realized(ids, (self.count,), ids.dtype, ids.device))
      return reference_embedding(table_t, ids_t).realize().lazydata.base.realized
    index = _host(ids, (self.count,)).astype(np.int64)
    bad = index[(index < 0) | (index >= V)]
    if bad.size: raise IndexError(f"token id {int(bad[0])} out of range for a vocabulary of {V}")
    rows = _host(table, self.table_shape)[index]
    if table.dtype == dtypes.bfloat16: rows = (rows.astype(np.uint32) << 16).view(np.float32)
    out = Buffer(root.device, self.count * D, dtypes.float32)
    out.copyin(np.ascontiguousarray(rows, dtype=np.float32))
    return out

  def backward(self, grad, ctx): return None, None


def _cuda_rows(out, ids, table, count: int, n: int, d: int) -> None:
  from teenygrad.nn.quant_cuda import float_rows
  float_rows(out, ids, table, count, n, d)


def _vulkan_rows(out, ids, table, count: int, n: int, d: int) -> None:
  from teenygrad.nn.quant_vulkan import float_rows
  float_rows(out, ids, table, count, n, d)


# backend name -> (table dtypes it gathers, gather(out, ids, table, count, V, D)): a kernel of the backend's own that
# reads only the rows asked for, launched so a JIT records it. Other devices run reference_embedding (a one-hot sum
# over the whole table per id); the CPU copies the rows on the host.
ROW_GATHERS = {"CUDA": (("float32", "float16", "bfloat16"), _cuda_rows), "VULKAN": (("float32", "float16", "bfloat16"), _vulkan_rows)}


def reference_embedding(table: Tensor, ids: Tensor) -> Tensor:
  return table.float()[ids.cast(dtypes.int64)]


def embedding_rows(table: Tensor, ids: Tensor) -> Tensor:
  """Rows of table (V, D) for ids of any shape -> (*ids.shape, D) float32."""
  shape = tuple(ids.shape)
  count = int(np.prod(shape))
  flat = ids.cast(dtypes.int32).reshape(count).contiguous()
  op = EmbeddingRows(table.shape, count)
  out = Tensor(LazyBuffer.custom(op, (table.lazydata, flat.lazydata), (count, table.shape[1]), dtypes.float32))
  return out.reshape(*shape, table.shape[1])


class DecodeAttention(InferenceOp):
  """Custom op: srcs (q (B, H, 1, D), keys (B, KVH, L, D), values, start (1,) int32[, mask (B, L)]) -> (B, H, 1, D)
  float32: softmax(q k^T / sqrt(D) + mask) v over the cache rows [0, start]. Inference only; the reference is the
  primitive path of llm/model.py's attention (what backends without a kernel run, and what the kernel is tested against)."""
  what = "decode attention"

  def __init__(self, kernel, batch: int, heads: int, kv_heads: int, length: int, head_dim: int):
    self.kernel, self.shape = kernel, (batch, heads, kv_heads, length, head_dim)

  def run(self, root: LazyBuffer, buffers: list):
    from teenygrad.device import Buffer
    batch, heads, kv_heads, length, head_dim = self.shape
    out = Buffer(root.device, batch * heads * head_dim, dtypes.float32)
    q, keys, values, start = buffers[:4]
    self.kernel(out, q, keys, values, start, buffers[4] if len(buffers) > 4 else None, batch, heads, kv_heads, length, head_dim)
    return out



def _cuda_attention(device: str):
  from teenygrad.llm.attention_cuda import cuda_decode_attention
  return cuda_decode_attention(device)


def _vulkan_attention(device: str):
  from teenygrad.llm.attention_vulkan import vulkan_decode_attention
  return vulkan_decode_attention(device)


def _cpu_attention(device: str):
  from teenygrad.llm.attention_cpu import cpu_decode_attention
  return cpu_decode_attention(device)


# backend name -> factory(device) of a decode-attention launcher (llm/attention_cuda.py's shape) or None; others run the reference
ATTENTION_KERNELS = {"CUDA": _cuda_attention, "VULKAN": _vulkan_attention, "CPU": _cpu_attention}


def decode_attention(q: Tensor, keys: Tensor, values: Tensor, start: Tensor, key_mask: Tensor | None) -> Tensor | None:
  """Attention of one query row per head, q (B, H, 1, D), over the cache rows [0, start] of keys/values (B, KVH, L, D),
  through the backend's kernel: (B, H, 1, D) float32, or None where the backend has none (or the caches aren't
  float32) and the caller runs the reference."""
  factory = ATTENTION_KERNELS.get(q.device.partition(":")[0])
  kernel = factory(q.device) if factory is not None else None   # None too where the device lacks what the kernel needs
  B, H, T, D = q.shape
  if kernel is None or T != 1 or keys.dtype != dtypes.float32 or values.dtype != dtypes.float32 or D % 4: return None
  KVH, L = keys.shape[1], keys.shape[2]
  if H % KVH: return None
  def base(t: Tensor) -> Tensor:   # a custom op reads a reshape's base buffer as is; anything else gets one of its own
    return t.contiguous() if t.lazydata.is_view and not t.lazydata.reshapes_base else t
  srcs = [base(q.float()), keys, values, base(start.cast(dtypes.int32).reshape(1))]
  if key_mask is not None: srcs.append(base(key_mask.float()))
  op = DecodeAttention(kernel, B, H, KVH, L, D)
  return Tensor(LazyBuffer.custom(op, tuple(t.lazydata for t in srcs), (B, H, 1, D), dtypes.float32))


class PrefillAttention(InferenceOp):
  """Custom op: srcs (q (B, H, T, D), keys (B, KVH, L, D), values, start (1,) int32[, mask (B, L)]) -> (B, T, H, D)
  float32: query row t (position start + t) attends over the cache rows [0, start + t]. Inference only; the
  reference is the primitive path of llm/model.py's attention."""
  what = "prefill attention"

  def __init__(self, kernel, batch: int, rows: int, heads: int, kv_heads: int, length: int, head_dim: int):
    self.kernel, self.shape = kernel, (batch, rows, heads, kv_heads, length, head_dim)

  def run(self, root: LazyBuffer, buffers: list):
    from teenygrad.device import Buffer
    batch, rows, heads, kv_heads, length, head_dim = self.shape
    out = Buffer(root.device, batch * rows * heads * head_dim, dtypes.float32)
    q, keys, values, start = buffers[:4]
    self.kernel.prefill(out, q, keys, values, start, buffers[4] if len(buffers) > 4 else None, batch, rows, heads, kv_heads,
                        length, head_dim)
    return out



def _cpu_prefill_attention(device: str):
  from teenygrad.llm.attention_cpu import cpu_decode_attention
  return cpu_decode_attention(device)


# backend name -> factory(device) of an object with `prefill(out, q, keys, values, start, mask, B, T, H, KVH, L, D)`
PREFILL_ATTENTION_KERNELS = {"CPU": _cpu_prefill_attention}


def prefill_attention(q: Tensor, keys: Tensor, values: Tensor, start: Tensor, key_mask: Tensor | None) -> Tensor | None:
  """Causal attention of T query rows per head, q (B, H, T, D) at positions start.., over the cache rows of keys/values
  (B, KVH, L, D), through the backend's kernel: (B, T, H, D) float32 (the layout the output projection reads), or None
  where the backend has none (or the tensors don't fit it) and the caller runs the reference."""
  factory = PREFILL_ATTENTION_KERNELS.get(q.device.partition(":")[0])
  B, H, T, D = q.shape
  if factory is None or not isinstance(T, int) or keys.dtype != dtypes.float32 or values.dtype != dtypes.float32 or D % 16: return None
  KVH, L = keys.shape[1], keys.shape[2]
  if H % KVH or not isinstance(L, int): return None
  def base(t: Tensor) -> Tensor:   # a custom op reads a reshape's base buffer as is; anything else gets one of its own
    return t.contiguous() if t.lazydata.is_view and not t.lazydata.reshapes_base else t
  srcs = [base(q.float()), keys, values, base(start.cast(dtypes.int32).reshape(1))]
  if key_mask is not None: srcs.append(base(key_mask.float()))
  op = PrefillAttention(factory(q.device), B, T, H, KVH, L, D)
  return Tensor(LazyBuffer.custom(op, tuple(t.lazydata for t in srcs), (B, T, H, D), dtypes.float32))


class RopeAttention(InferenceOp):
  """Custom op: srcs (qkv (B, (H + 2 KVH) D) float32, cos (P, D/2), sin, start (1,) int32, keys (B, KVH, L, D) float32,
  values[, mask (B, L)]) -> (B, H, 1, D) float32: RoPE on q and the new k, the new k and v written into row `start`
  of keys and values (in place), attention over rows [0, start]. Inference only; the reference is the primitive path
  of llm/model.py's attention (apply_rope, cache_write, softmax attention)."""
  what = "decode attention"

  def __init__(self, kernel, batch: int, heads: int, kv_heads: int, head_dim: int, length: int, rope_rows: int, interleaved: bool):
    self.kernel, self.shape, self.interleaved = kernel, (batch, heads, kv_heads, head_dim, length, rope_rows), interleaved

  def run(self, root: LazyBuffer, buffers: list):
    from teenygrad.device import Buffer
    batch, heads, kv_heads, head_dim, length, rope_rows = self.shape
    out = Buffer(root.device, batch * heads * head_dim, dtypes.float32)
    mask = buffers[6] if len(buffers) > 6 else None
    self.kernel(out, *buffers[:6], mask, batch, heads, kv_heads, head_dim, length, rope_rows, self.interleaved)
    return out



def _cuda_rope_attention(device: str):
  from teenygrad.llm.attention_cuda import cuda_rope_attention
  return cuda_rope_attention(device)


def _vulkan_rope_attention(device: str):
  from teenygrad.llm.attention_vulkan import vulkan_rope_attention
  return vulkan_rope_attention(device)


# backend name -> factory(device) of a RoPE + cache write + attention launcher (llm/attention_cuda.py's shape), or None
# where the device lacks what it needs; others run the reference
ROPE_ATTENTION_KERNELS = {"CUDA": _cuda_rope_attention, "VULKAN": _vulkan_rope_attention}


def rope_attention(qkv: Tensor, cos: Tensor, sin: Tensor, start: Tensor, keys: Tensor, values: Tensor, key_mask: Tensor | None,
                   heads: int, interleaved: bool) -> Tensor | None:
  """One decode step's attention from the fused q/k/v projection's output qkv (B, 1, (H + 2 KVH) D), RoPE and the
  write of the new row `start` of keys/values (B, KVH, L, D) included, through the backend's kernel: (B, H, 1, D)
  float32; or None where it has none (or the tensors don't fit it) and the caller runs the reference."""
  factory = ROPE_ATTENTION_KERNELS.get(qkv.device.partition(":")[0])
  if factory is None or not fusion_enabled("rope"): return None
  B, KVH, L, D = keys.shape
  if qkv.ndim != 3 or qkv.shape[1] != 1 or qkv.shape[2] != (heads + 2 * KVH) * D or qkv.dtype != dtypes.float32: return None
  if heads % KVH or D % 4: return None
  if any(t.dtype != dtypes.float32 or t.lazydata.is_view or t.lazydata.realized is None for t in (keys, values)): return None
  if cos.dtype != dtypes.float32 or sin.dtype != dtypes.float32 or tuple(cos.shape[1:]) != (D // 2,): return None
  def base(t: Tensor) -> Tensor:   # a custom op reads a reshape's base buffer as is; anything else gets one of its own
    return t.contiguous() if t.lazydata.is_view and not t.lazydata.reshapes_base else t
  srcs = [base(qkv.reshape(B, qkv.shape[2])), base(cos), base(sin), base(start.cast(dtypes.int32).reshape(1)), keys, values]
  if key_mask is not None: srcs.append(base(key_mask.float()))
  kernel = factory(qkv.device)
  if kernel is None: return None
  op = RopeAttention(kernel, B, heads, KVH, D, L, cos.shape[0], interleaved)
  return Tensor(LazyBuffer.custom(op, tuple(t.lazydata for t in srcs), (B, heads, 1, D), dtypes.float32))


class ArgmaxRows(InferenceOp):
  """Custom op: srcs (logits (B, N) float32) -> (B, 1) int32, each row's argmax (first index of the largest value, NaN
  first, as Tensor.argmax). Inference only; the reference is Tensor.argmax(-1, keepdim=True)."""
  what = "argmax"

  def __init__(self, kernel, rows: int, n: int):
    self.kernel, self.rows, self.n = kernel, rows, n

  def run(self, root: LazyBuffer, buffers: list):
    from teenygrad.device import Buffer
    out = Buffer(root.device, self.rows, dtypes.int32)
    self.kernel(out, buffers[0], self.rows, self.n)
    return out



def _cuda_argmax(device: str):
  from teenygrad.llm.argmax_cuda import cuda_argmax
  return cuda_argmax(device)


# backend name -> factory(device) of a row-argmax launcher (llm/argmax_cuda.py's shape); others run Tensor.argmax
ARGMAX_KERNELS = {"CUDA": _cuda_argmax}


def greedy_tokens(logits: Tensor) -> Tensor:
  """Each row's argmax of logits (B, N) as (B, 1) int32: greedy decoding's next tokens, in one launch where the
  backend has a kernel, else through Tensor.argmax."""
  factory = ARGMAX_KERNELS.get(logits.device.partition(":")[0])
  if factory is not None and logits.ndim == 2 and logits.dtype == dtypes.float32 and not logits.requires_grad:
    source = logits.contiguous() if logits.lazydata.is_view and not logits.lazydata.reshapes_base else logits
    op = ArgmaxRows(factory(logits.device), *logits.shape)
    return Tensor(LazyBuffer.custom(op, (source.lazydata,), (logits.shape[0], 1), dtypes.int32))
  return logits.argmax(-1, keepdim=True).cast(dtypes.int32)
