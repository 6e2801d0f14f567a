"""Quantized weights that stay in their GGUF block format in device memory.

A `QuantizedTensor` holds a 2-D weight (out_features, in_features) -- torch's Linear layout -- as one uint8 device
buffer of GGML blocks, row by row. Three ways to use it:
- `dequantize()`: the reference, built from Tensor primitives (bytes combined with shifts and ors, bitcast to
  float16, casts, mul/add), so it runs on every backend, autograd can see through it, and the kernels are tested
  against it. Block layouts are ggml's (ggml-common.h; gguf-py's quants.py holds the same in numpy).
- `linear(x)`: x @ W.T with the weights dequantized inside the matmul, through a custom kernel op where the backend
  has one (`FUSED_KERNELS`, keyed by backend name), else `x @ dequantize().T`.
- `embedding(ids)`: rows of W for integer ids (a token embedding lookup).
"""
from __future__ import annotations

import ctypes
from collections.abc import Callable

import numpy as np

from teenygrad.autograd import Context
from teenygrad.device import Buffer, Device, canonicalize
from teenygrad.dtype import DType, dtypes
from teenygrad.helpers import config
from teenygrad.ir.lazy import LazyBuffer
from teenygrad.ir.ops import Ops
from teenygrad.nn.quant_kernels import (GGML_TYPES, linear_name, linear_residual_name, packed_rows_name, render_quant_source, rows_name,
                                        x_bits_name)
from teenygrad.nn.quant_kernels_packed import repack
from teenygrad.tensor.tensor import Tensor, is_grad_enabled

# ---- the reference: Tensor primitives on the raw bytes ----
# Each function takes blocks (N, nb, type_size) uint8 and returns (N, nb, block_size) float32 in the same
# arithmetic order as gguf-py's numpy dequantize, so the results are bit-identical with it.


def _half(b: Tensor, offset: int) -> Tensor:
  """The little-endian float16 at byte `offset` of every block, widened to float32: (N, nb, 1)."""
  lo, hi = b[:, :, offset:offset + 1].cast(dtypes.uint16), b[:, :, offset + 1:offset + 2].cast(dtypes.uint16)
  return (lo | (hi << 8)).bitcast(dtypes.float16).float()


def _nibbles(qs: Tensor) -> Tensor:
  """(..., n) bytes to (..., 2n): the n low nibbles, then the n high nibbles (ggml's order within a block)."""
  return Tensor.cat([qs & 15, qs >> 4], dim=-1)


def _bits(b: Tensor, offset: int, count: int) -> Tensor:
  """Bits of the `count` bytes at `offset` of every block, least significant first: (N, nb, 8 * count) of 0/1."""
  shifts = Tensor(np.arange(8, dtype=np.uint8), device=b.device)
  qh = b[:, :, offset:offset + count]
  return ((qh.unsqueeze(-1) >> shifts) & 1).reshape(*qh.shape[:2], 8 * count)


def _q4_0(b: Tensor) -> Tensor:
  q = _nibbles(b[:, :, 2:18]).cast(dtypes.int32) - 8
  return _half(b, 0) * q.float()


def _q4_1(b: Tensor) -> Tensor:
  return _half(b, 0) * _nibbles(b[:, :, 4:20]).float() + _half(b, 2)


def _q5_0(b: Tensor) -> Tensor:
  q = (_nibbles(b[:, :, 6:22]) | (_bits(b, 2, 4) << 4)).cast(dtypes.int32) - 16
  return _half(b, 0) * q.float()


def _q5_1(b: Tensor) -> Tensor:
  q = _nibbles(b[:, :, 8:24]) | (_bits(b, 4, 4) << 4)
  return _half(b, 0) * q.float() + _half(b, 2)


def _q8_0(b: Tensor) -> Tensor:
  return b[:, :, 2:34].bitcast(dtypes.int8).float() * _half(b, 0)


def _scale_min_k4(scales: Tensor) -> tuple[Tensor, Tensor]:
  """Q4_K / Q5_K: 8 six-bit scales and 8 six-bit mins packed in 12 bytes -> two (N, nb, 8) uint8."""
  d, m, md = scales[:, :, 0:4], scales[:, :, 4:8], scales[:, :, 8:12]
  sc = Tensor.cat([d & 63, (md & 15) | ((d >> 2) & 48)], dim=-1)
  mn = Tensor.cat([m & 63, (md >> 4) | ((m >> 2) & 48)], dim=-1)
  return sc, mn


def _k_sub_scales(b: Tensor) -> tuple[Tensor, Tensor]:
  """d * scale and dmin * min of the 8 sub-blocks of 32: (N, nb, 8, 1) each."""
  sc, mn = _scale_min_k4(b[:, :, 4:16])
  return (_half(b, 0) * sc.float()).unsqueeze(-1), (_half(b, 2) * mn.float()).unsqueeze(-1)


def _k_nibbles(qs: Tensor) -> Tensor:
  """128 bytes as 4 chunks of 32: each chunk's low nibbles are one sub-block, its high nibbles the next -> (N, nb, 8, 32)."""
  chunks = qs.reshape(*qs.shape[:2], 4, 1, 32)
  return Tensor.cat([chunks & 15, chunks >> 4], dim=3).reshape(*qs.shape[:2], 8, 32)


def _q4_k(b: Tensor) -> Tensor:
  dl, ml = _k_sub_scales(b)
  return (dl * _k_nibbles(b[:, :, 16:144]).float() - ml).reshape(*b.shape[:2], 256)


def _q5_k(b: Tensor) -> Tensor:
  dl, ml = _k_sub_scales(b)
  # bit s of qh[l] is the fifth bit of element l of sub-block s
  high = _bits(b, 16, 32).reshape(*b.shape[:2], 32, 8).permute(0, 1, 3, 2)
  q = _k_nibbles(b[:, :, 48:176]) | (high << 4)
  return (dl * q.float() - ml).reshape(*b.shape[:2], 256)


def _q6_k(b: Tensor) -> Tensor:
  n, nb = b.shape[:2]
  ql = b[:, :, 0:128].reshape(n, nb, 2, 1, 64)
  low = Tensor.cat([ql & 15, ql >> 4], dim=3).reshape(n, nb, 8, 32)            # (half, shift, 64 -> 2 x 32)
  shifts = Tensor(np.array([0, 2, 4, 6], dtype=np.uint8).reshape(4, 1), device=b.device)
  high = ((b[:, :, 128:192].reshape(n, nb, 2, 1, 32) >> shifts) & 3).reshape(n, nb, 8, 32)
  q = ((low | (high << 4)).cast(dtypes.int32) - 32).reshape(n, nb, 16, 16)
  scales = b[:, :, 192:208].bitcast(dtypes.int8).float()
  return ((_half(b, 208) * scales).unsqueeze(-1) * q.float()).reshape(n, nb, 256)


REFERENCE_DEQUANT: dict[str, Callable[[Tensor], Tensor]] = {
  "Q4_0": _q4_0, "Q4_1": _q4_1, "Q5_0": _q5_0, "Q5_1": _q5_1, "Q8_0": _q8_0, "Q4_K": _q4_k, "Q5_K": _q5_k, "Q6_K": _q6_k}


# ---- fused kernels, per backend ----

def _launch(name: str, program, buffers: list[Buffer], values: tuple[int, ...], work: int, device: str, record: bool) -> None:
  """One compiled-program launch on realized buffers. Recorded (`record`), a JIT replay calls the program directly;
  otherwise the engine records the whole custom op and a replay calls run() again."""
  from teenygrad.engine.realize import CompiledKernel, ExecItem, launch
  launch(ExecItem(CompiledKernel(name, program, [], [], "", work, False), buffers, values, device), record)


class CPUQuantKernels:
  """The fused kernels of one GGML type on the CPU: one C library (quant_kernels.py), compiled once and disk-cached
  by the backend's compiler. Each method is a single launch on realized buffers."""
  fuses_residual = True

  def __init__(self, device: str, ggml_type: str, isa: str = "native"):
    from teenygrad.device.cpu_pool import load_pool
    backend = Device[device]
    load_pool(backend.compiler)   # the matvec's threads: loaded first, so the library binds to it
    self.device, self.ggml_type = device, ggml_type
    self.src = render_quant_source(ggml_type, isa)
    binary = backend.compiler.compile_cached(self.src)
    self._linear = backend.program(linear_name(ggml_type), binary)
    self._linear_residual = backend.program(linear_residual_name(ggml_type), binary)
    self._rows = backend.program(rows_name(ggml_type), binary)
    x_bits = getattr(self._linear.lib, x_bits_name(ggml_type))
    x_bits.restype = ctypes.c_int
    # 8: linear rounds x to int8 per 32 (ggml's Q8_1) for every row count, as llama.cpp does; 16: int16; 32: float x
    self.x_bits: int = x_bits()
    packed_rows = getattr(self._linear.lib, packed_rows_name(ggml_type))
    packed_rows.restype = ctypes.c_int
    # 8: linear reads W repacked in groups of 8 rows (quant_kernels_packed.py), 0: the GGUF blocks
    self.packed_rows: int = packed_rows()

  def weight(self, qt: QuantizedTensor) -> Tensor:
    """What `linear` reads of qt: its blocks, or their packed copy (made once, on first use, and kept on qt)."""
    if not self.packed_rows: return qt.raw
    if qt._cpu_packed is None:
      n, k = qt.shape
      qt._cpu_packed = Tensor(repack(qt.ggml_type, qt.raw.numpy(), n, k), device=qt.device).realize()
    return qt._cpu_packed

  def linear(self, out: Buffer, x: Buffer, w: Buffer, m: int, n: int, k: int, residual: Buffer | None = None) -> None:
    """out (m, n) = x (m, k) @ W.T (+ residual (m, n)) for W (n, k) in blocks."""
    program, buffers = (self._linear, [out, x, w]) if residual is None else (self._linear_residual, [out, x, w, residual])
    _launch(f"qlinear_{self.ggml_type.lower()}", program, buffers, (m, n, k, max(config.threads, 1)), m * n * k, self.device,
            record=True)

  def rows(self, out: Buffer, ids: Buffer, w: Buffer, err: Buffer, count: int, n: int, k: int) -> None:
    """out (count, k) = W[ids] for int64 ids; an id outside [0, n) gives a zero row and sets err[0]."""
    # not recorded: run() checks err after the launch, so a replay must call run() again
    _launch(f"qrows_{self.ggml_type.lower()}", self._rows, [out, ids, w, err], (count, n, k, max(config.threads, 1)), count * k,
            self.device, record=False)


_cpu_cache: dict[tuple[str, str, str], CPUQuantKernels] = {}


def _cpu_kernels(device: str, ggml_type: str, isa: str | None = None) -> CPUQuantKernels:
  from teenygrad.helpers import config
  isa = isa or config.quant_isa
  key = (device, ggml_type, isa)
  if key not in _cpu_cache: _cpu_cache[key] = CPUQuantKernels(device, ggml_type, isa)
  return _cpu_cache[key]


def _cuda_kernels(device: str, ggml_type: str):
  from teenygrad.nn.quant_cuda import cuda_kernels
  return cuda_kernels(device, ggml_type)


def _vulkan_kernels(device: str, ggml_type: str):
  from teenygrad.nn.quant_vulkan import vulkan_kernels
  return vulkan_kernels(device, ggml_type)


# backend name -> factory(device, ggml_type) of an object with `linear` and `rows` methods shaped like
# CPUQuantKernels' (or None for a type it has no kernels for). `max_rows` (if set) bounds the rows of x `linear`
# takes and `rows = None` means no embedding kernel: the reference runs instead. A backend without an entry runs the
# reference (x @ dequantize().T); add yours here.
FUSED_KERNELS: dict[str, Callable[[str, str], object]] = {"CPU": _cpu_kernels, "CUDA": _cuda_kernels, "VULKAN": _vulkan_kernels}


def _fused_kernels(device: str, ggml_type: str):
  factory = FUSED_KERNELS.get(device.partition(":")[0])
  return factory(device, ggml_type) if factory is not None else None


class QuantLinearKernel:
  """The custom op of `QuantizedTensor.linear`: srcs (x (M, K) float32 contiguous, raw (N, row_bytes) uint8), and a
  residual (M, N) float32 contiguous added to the product where the kernels take one (`fuses_residual`)."""
  def __init__(self, weight: QuantizedTensor, kernels):
    self.weight, self.kernels = weight, kernels

  def run(self, root: LazyBuffer, buffers: list[Buffer]) -> Buffer:
    (m, n), k = root.shape, self.weight.shape[1]
    out = Buffer(root.device, m * n, dtypes.float32)
    self.kernels.linear(out, buffers[0], buffers[1], m, n, k, *buffers[2:])
    return out

  def backward(self, grad: Tensor, ctx: Context) -> tuple:
    """Weights are frozen; x gets grad @ W through the reference dequantize, a residual the gradient itself."""
    return (grad @ self.weight.dequantize(), None) + ((grad,) if len(ctx.inputs) > 2 else ())


class QuantRowsKernel:
  """The custom op of `QuantizedTensor.embedding`: srcs (ids (n,) contiguous, of the kernels' `ids_dtype`, int64 by
  default; raw)."""
  def __init__(self, weight: QuantizedTensor, kernels):
    self.weight, self.kernels = weight, kernels

  def run(self, root: LazyBuffer, buffers: list[Buffer]) -> Buffer:
    (count, k), n = root.shape, self.weight.shape[0]
    out = Buffer(root.device, count * k, dtypes.float32)
    err = Buffer(root.device, 1, dtypes.int32).copyin(np.zeros(1, dtype=np.int32))
    self.kernels.rows(out, buffers[0], buffers[1], err, count, n, k)
    if err.numpy()[0]:
      ids = buffers[0].numpy()
      bad = ids[(ids < 0) | (ids >= n)]
      raise IndexError(f"embedding index {int(bad[0]) if bad.size else '?'} out of range for {n} rows")
    return out

  def backward(self, grad: Tensor, ctx: Context) -> tuple: return None, None


# ---- the public class ----

class QuantizedTensor:
  """A 2-D weight (out_features, in_features) -- torch Linear layout -- kept in its GGUF block format.

  Args (from_gguf_bytes):
    ggml_type: one of GGML_TYPES ("Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q4_K", "Q5_K", "Q6_K").
    raw: uint8 array (an np.memmap of the GGUF file is fine) holding the blocks row by row.
    shape: (out_features, in_features); in_features must be a multiple of the type's block size.
    device: where the blocks live (default: the default device).
  """
  ggml_type: str
  shape: tuple[int, int]
  device: str

  def __init__(self, ggml_type: str, raw: Tensor, shape: tuple[int, int]):
    self.ggml_type, self.shape, self.raw = ggml_type, shape, raw
    self.device = raw.device
    self._cpu_packed: Tensor | None = None   # CPUQuantKernels.weight's copy of the blocks in its packed layout

  @classmethod
  def from_gguf_bytes(cls, ggml_type: str, raw: np.ndarray, shape: tuple[int, int], device: str | None = None) -> QuantizedTensor:
    if ggml_type not in GGML_TYPES:
      raise ValueError(f"unknown or unsupported GGML type {ggml_type!r}; supported: {', '.join(GGML_TYPES)}")
    info = GGML_TYPES[ggml_type]
    if (not isinstance(shape, (tuple, list)) or len(shape) != 2
        or not all(isinstance(s, (int, np.integer)) and not isinstance(s, bool) for s in shape)):
      raise ValueError(f"shape must be (out_features, in_features), got {shape!r}")
    out_features, in_features = int(shape[0]), int(shape[1])
    if out_features <= 0 or in_features <= 0:
      raise ValueError(f"shape must have positive sizes, got {(out_features, in_features)}")
    if in_features % info.block_size:
      raise ValueError(f"in_features {in_features} is not a multiple of the {ggml_type} block size {info.block_size}")
    if not isinstance(raw, np.ndarray): raise ValueError(f"raw must be a numpy uint8 array, got {type(raw).__name__}")
    if raw.dtype != np.uint8: raise ValueError(f"raw must be a uint8 array, got dtype {raw.dtype}")
    row_bytes = in_features // info.block_size * info.type_size
    expected = out_features * row_bytes
    if raw.size != expected:
      raise ValueError(f"raw holds {raw.size} bytes but a {ggml_type} tensor of shape {(out_features, in_features)} "
                       f"needs {expected} ({out_features} rows x {row_bytes} bytes)")
    host = raw.reshape(out_features, row_bytes)
    return cls(ggml_type, Tensor(host, device=canonicalize(device)), (out_features, in_features))   # one copy, straight from the map

  @property
  def nbytes(self) -> int: return self.raw.numel()

  @property
  def block_size(self) -> int: return GGML_TYPES[self.ggml_type].block_size

  def __repr__(self) -> str:
    return f"QuantizedTensor({self.ggml_type}, shape={self.shape}, device={self.device!r}, nbytes={self.nbytes})"

  def dequantize(self, dtype: DType = dtypes.float32) -> Tensor:
    """The weight as a (out_features, in_features) tensor, built lazily from Tensor primitives on the raw blocks."""
    info = GGML_TYPES[self.ggml_type]
    n, k = self.shape
    blocks = self.raw.reshape(n, k // info.block_size, info.type_size)
    out = REFERENCE_DEQUANT[self.ggml_type](blocks).reshape(n, k)
    return out.cast(dtype) if dtype != dtypes.float32 else out

  def _check_x(self, x: Tensor) -> None:
    if not isinstance(x, Tensor): raise TypeError(f"linear expects a Tensor, got {type(x).__name__}")
    if x.ndim == 0 or x.shape[-1] != self.shape[1]:
      raise ValueError(f"linear: x has shape {tuple(x.shape)} but the weight has in_features {self.shape[1]}")
    if x.device != self.device: raise ValueError(f"linear: x is on {x.device} but the weight is on {self.device}")

  def linear_reference(self, x: Tensor) -> Tensor:
    """x @ W.T through the reference dequantize (what backends without a fused kernel run)."""
    self._check_x(x)
    return x.float() @ self.dequantize().T

  def linear(self, x: Tensor, residual: Tensor | None = None) -> Tensor:
    """x (..., in_features) @ W.T (+ residual (..., out_features)) -> (..., out_features) float32, dequantizing inside
    the kernel where one exists (which adds the residual too, where it can)."""
    self._check_x(x)
    kernels = _fused_kernels(self.device, self.ggml_type)
    batch = tuple(x.shape[:-1])
    rows = 1
    for s in batch: rows *= s
    if kernels is None or rows > (getattr(kernels, "max_rows", None) or rows):
      out = self.linear_reference(x)
      return out + residual if residual is not None else out
    if rows == 0: return Tensor.zeros(*batch, self.shape[0], device=self.device)
    def flat_input(t: Tensor, width: int) -> Tensor:
      t = t.float().reshape(rows, width)
      return t.contiguous() if t.lazydata.is_view and not t.lazydata.reshapes_base else t   # a reshape reads the base's buffer as is
    inputs = [flat_input(x, self.shape[1]), kernels.weight(self) if hasattr(kernels, "weight") else self.raw]
    fused = residual is not None and getattr(kernels, "fuses_residual", False)
    if fused: inputs.append(flat_input(residual, self.shape[0]))
    kernel = QuantLinearKernel(self, kernels)
    out = Tensor(LazyBuffer.custom(kernel, tuple(t.lazydata for t in inputs), (rows, self.shape[0]), dtypes.float32))
    if is_grad_enabled() and any(t.requires_grad for t in inputs):
      out.requires_grad = True
      out._ctx = Context(Ops.CUSTOM, tuple(inputs), kernel, out)
    out = out.reshape(*batch, self.shape[0])
    return out + residual if residual is not None and not fused else out

  def embedding(self, ids) -> Tensor:
    """Rows of W for integer ids of any shape -> (*ids.shape, in_features) float32 (no gradient: W is frozen)."""
    if not isinstance(ids, Tensor): ids = Tensor(np.asarray(ids), device=self.device)
    if not ids.dtype.is_int: raise TypeError(f"embedding ids must be integers, got {ids.dtype.name}")
    if ids.device != self.device: raise ValueError(f"embedding: ids are on {ids.device} but the weight is on {self.device}")
    shape, k = tuple(ids.shape), self.shape[1]
    count = 1
    for s in shape: count *= s
    if count == 0: return Tensor.zeros(*shape, k, device=self.device)
    kernels = _fused_kernels(self.device, self.ggml_type)
    if kernels is None or kernels.rows is None: return self._embedding_reference(ids)
    flat = ids.cast(getattr(kernels, "ids_dtype", dtypes.int64)).reshape(count).contiguous()   # CUDA's take int32: no cast kernel
    kernel = QuantRowsKernel(self, kernels)
    out = Tensor(LazyBuffer.custom(kernel, (flat.lazydata, self.raw.lazydata), (count, k), dtypes.float32))
    return out.reshape(*shape, k)

  def _embedding_reference(self, ids: Tensor) -> Tensor:
    """Backends without a rows kernel: the rows' blocks gathered on the device, then dequantized there. The ids stay
    device data, so a JIT replay embeds the new ids (picking rows on the host would bake in the captured ones)."""
    n = self.shape[0]
    host_ids = ids.numpy().astype(np.int64)   # the check only: a replay skips it, the gather below reads the device ids
    bad = host_ids[(host_ids < 0) | (host_ids >= n)]
    if bad.size: raise IndexError(f"embedding index {int(bad.reshape(-1)[0])} out of range for {n} rows")
    flat = ids.reshape(-1).cast(dtypes.int64)
    picked = self.raw.reshape(n, self.raw.numel() // n)[flat]   # (count, bytes per row)
    rows = QuantizedTensor(self.ggml_type, picked, (flat.shape[0], self.shape[1]))
    return rows.dequantize().reshape(*ids.shape, self.shape[1])
