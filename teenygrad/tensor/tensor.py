"""The user-facing Tensor: PyTorch names and semantics over a lazy graph. Elementwise math lives here; movement,
reductions and nn functions are mixins in their own files."""
from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Any

import numpy as np

from teenygrad.autograd import Context, backward as run_backward
from teenygrad.dtype import DType, dtypes, promote, result_type_scalar, to_dtype
from teenygrad.helpers import canonicalize, prod
from teenygrad.ir.lazy import LazyBuffer, runtime
from teenygrad.ir.ops import Ops
from teenygrad.tensor.movement import MovementMixin
from teenygrad.tensor.nn import NNMixin
from teenygrad.tensor.reduce import ReduceMixin

LOG2_E = math.log2(math.e)
LN2 = math.log(2)


class _GradMode:
  enabled = True


@contextmanager
def no_grad():
  """Operations inside record no graph for backward (torch.no_grad)."""
  previous, _GradMode.enabled = _GradMode.enabled, False
  try: yield
  finally: _GradMode.enabled = previous


@contextmanager
def enable_grad():
  previous, _GradMode.enabled = _GradMode.enabled, True
  try: yield
  finally: _GradMode.enabled = previous


def is_grad_enabled() -> bool: return _GradMode.enabled


def _shape_arg(shape) -> tuple:
  if len(shape) == 1 and isinstance(shape[0], (tuple, list)): shape = tuple(shape[0])
  for s in shape:
    if not isinstance(s, int) and not hasattr(s, "vmin"): raise TypeError(f"size must be a sequence of ints, got {shape}")
    if isinstance(s, int) and s < 0: raise RuntimeError(f"negative dimension {s} in shape {tuple(shape)}")
  return tuple(shape)


def float_to_bfloat16_bits(x: np.ndarray) -> np.ndarray:
  bits = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
  rounded = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)
  return np.where(np.isnan(x), np.uint16(0x7FC0), rounded)


def bfloat16_bits_to_float(x: np.ndarray) -> np.ndarray:
  return (x.astype(np.uint32) << 16).view(np.float32)


_SAME_SIZE_INT = {1: dtypes.int8, 2: dtypes.int16, 4: dtypes.int32, 8: dtypes.int64}


def _same_size(a, b) -> bool:
  return a == b if isinstance(a, int) and isinstance(b, int) else (not isinstance(a, int) and not isinstance(b, int) and a.key() == b.key())


class _CompositeGradient:
  """The autograd hook of a composite op (autograd calls `backward(grad, ctx)` for Ops.CUSTOM contexts)."""
  def __init__(self, backward): self.fn = backward
  def backward(self, grad, ctx):
    needed = tuple(t.requires_grad for t in ctx.inputs)
    return self.fn(grad, needed)


class Tensor(MovementMixin, ReduceMixin, NNMixin):
  __slots__ = ("lazydata", "requires_grad", "grad", "_ctx", "__weakref__", "__dict__")
  __array_priority__ = 1000   # numpy defers to our operators

  def __init__(self, data: Any, dtype: DType | str | None = None, device: str | None = None, requires_grad: bool = False):
    device = canonicalize(device)
    dtype = to_dtype(dtype) if dtype is not None else None
    self.grad: Tensor | None = None
    self._ctx: Context | None = None
    if isinstance(data, LazyBuffer):
      self.lazydata = data if dtype is None else data.cast(dtype)
    elif isinstance(data, Tensor):
      self.lazydata = data.detach().to(device).lazydata
      if dtype is not None: self.lazydata = self.lazydata.cast(dtype)
    else:
      self.lazydata = _lazy_from_host(data, dtype, device)
    self.requires_grad = False
    if requires_grad: self.requires_grad_(True)

  # ---- properties ----
  @property
  def shape(self) -> tuple: return self.lazydata.shape
  @property
  def dtype(self) -> DType: return self.lazydata.dtype
  @property
  def device(self) -> str: return self.lazydata.device
  @property
  def ndim(self) -> int: return len(self.shape)
  @property
  def is_leaf(self) -> bool: return self._ctx is None
  @property
  def T(self) -> Tensor: return self.permute(tuple(range(self.ndim))[::-1])
  @property
  def mT(self) -> Tensor: return self.transpose(-2, -1)
  def dim(self) -> int: return self.ndim
  def numel(self) -> int: return prod(self.shape)
  def nelement(self) -> int: return self.numel()
  def element_size(self) -> int: return self.dtype.itemsize
  def size(self, dim: int | None = None):
    from teenygrad.helpers import normalize_dim
    return self.shape if dim is None else self.shape[normalize_dim(dim, self.ndim)]
  def is_floating_point(self) -> bool: return self.dtype.is_float
  def __len__(self) -> int:
    if self.ndim == 0: raise TypeError("len() of a 0-d tensor")
    return self.shape[0]

  def __repr__(self) -> str:
    grad = ", requires_grad=True" if self.requires_grad else ""
    try: body = np.array2string(self.float().numpy() if self.dtype == dtypes.bfloat16 else self.numpy(), separator=", ")
    except Exception as e: body = f"<unrealizable: {e}>"
    return f"tensor({body}, dtype={self.dtype.name}, device={self.device!r}{grad})"

  def __hash__(self) -> int: return id(self)

  def __bool__(self) -> bool:
    if self.numel() != 1: raise RuntimeError(f"Boolean value of Tensor with {self.numel()} values is ambiguous")
    return bool(self.item())

  # ---- realizing and reading ----
  def realize(self) -> Tensor:
    target = self._realize_target()
    if target is not None: runtime.realize([target])
    return self

  def _realize_target(self) -> LazyBuffer | None:
    """The graph node realizing this tensor computes: its base when the tensor reads a whole buffer in place (a
    reshape), else a contiguous copy it switches to; None when there is nothing to compute."""
    lb = self.lazydata
    # a symbolic size is never statically empty (its kernel just runs zero times when bound to 0)
    if any(isinstance(s, int) and s == 0 for s in self.shape): return None
    if lb.is_view and lb.st.contiguous and lb.base.op is not Ops.CONST and _same_size(lb.size, lb.base.size): return lb.base
    if lb.is_view or lb.op is Ops.CONST: self.lazydata = lb.contiguous()
    return self.lazydata

  async def realize_async(self) -> Tensor:
    import asyncio
    return await asyncio.to_thread(self.realize)

  def numpy(self) -> np.ndarray:
    if self.dtype == dtypes.bfloat16: raise TypeError("Got unsupported ScalarType BFloat16")
    if self.numel() == 0: return np.zeros(self.shape, dtype=self.dtype.np)
    self.realize()
    buffer = self.lazydata.base.realized
    return buffer.numpy().view(self.dtype.np).reshape(self.shape)

  def __array__(self, dtype=None, copy=None):
    out = self.numpy()
    return out.astype(dtype) if dtype is not None else out

  def item(self):
    if self.numel() != 1:
      raise RuntimeError(f"a Tensor with {self.numel()} elements cannot be converted to Scalar")
    value = (self.float() if self.dtype == dtypes.bfloat16 else self).numpy().reshape(-1)[0]
    return value.item()

  def tolist(self):
    return (self.float() if self.dtype == dtypes.bfloat16 else self).numpy().tolist()

  def __dlpack__(self, stream=None, **kwargs):
    if self.device != "CPU": raise RuntimeError("DLPack export is only supported on the CPU device")
    self.realize()
    buffer = self.lazydata.base.realized
    buffer._owned = False   # torch may read it after this tensor dies: the allocator must never hand it out again
    raw = buffer.raw
    array = raw.view(self.dtype.np if self.dtype != dtypes.bfloat16 else np.uint16)[:self.numel()].reshape(self.shape)
    return array.__dlpack__(**({"stream": stream} if stream is not None else {}))

  def __dlpack_device__(self): return (1, 0)

  # ---- autograd ----
  def requires_grad_(self, requires_grad: bool = True) -> Tensor:
    if requires_grad and not (self.dtype.is_float):
      raise RuntimeError("only Tensors of floating point dtype can require gradients")
    self.requires_grad = requires_grad
    return self

  def detach(self) -> Tensor: return Tensor(self.lazydata)

  def backward(self, gradient: Tensor | None = None, retain_graph: bool = False) -> None:
    if self.__dict__.get("graph_freed"):
      raise RuntimeError("Trying to backward through the graph a second time; pass retain_graph=True the first time")
    if not self.requires_grad:
      raise RuntimeError("element 0 of tensors does not require grad and does not have a grad_fn")
    if gradient is None:
      if self.numel() != 1: raise RuntimeError("grad can be implicitly created only for scalar outputs")
      gradient = Tensor._const(1.0, self.dtype, self.device, self.shape)
    elif not isinstance(gradient, Tensor): gradient = Tensor(gradient, dtype=self.dtype, device=self.device)
    if gradient.shape != self.shape:
      raise RuntimeError(f"Mismatch in shape: grad_output[0] has a shape of {gradient.shape} and output[0] has a shape of {self.shape}")
    if self._ctx is None:
      self.grad = gradient if self.grad is None else self.grad + gradient
      return
    # the output is computed now, from the weights as they are: an optimizer step writes the weights in place next,
    # and reading this tensor after it (loss.item()) must still give the value from before the step
    if self.numel() and not self.lazydata.is_realized: self.realize()
    run_backward(self, gradient.detach(), retain_graph)

  # ---- building the graph ----
  @staticmethod
  def _const(value, dtype: DType, device: str, shape: tuple = ()) -> Tensor:
    return Tensor(LazyBuffer.const(value, dtype, device, shape))

  def _apply(self, op: Ops, *others: Tensor, arg=None, dtype: DType | None = None) -> Tensor:
    """Apply one primitive, recording it for backward when a float input requires grad."""
    lb = self.lazydata
    if op in (Ops.RESHAPE, Ops.PERMUTE, Ops.EXPAND, Ops.PAD, Ops.SHRINK, Ops.FLIP):
      out = {Ops.RESHAPE: lb.reshape, Ops.PERMUTE: lb.permute, Ops.EXPAND: lb.expand, Ops.PAD: lb.pad,
             Ops.SHRINK: lb.shrink, Ops.FLIP: lb.flip}[op](arg)
    elif op in (Ops.SUM, Ops.REDUCE_MAX): out = lb.reduce(op, arg)
    elif op is Ops.CAST: out = lb.cast(dtype)
    elif op is Ops.BITCAST: out = lb.cast(dtype, bitcast=True)
    elif op is Ops.CONTIGUOUS: out = lb.contiguous()
    elif op is Ops.COPY: out = lb.copy_to(arg)
    else: out = lb.alu(op, *(o.lazydata for o in others), dtype=dtype)
    result = Tensor(out)
    inputs = (self,) + others
    if _GradMode.enabled and any(t.requires_grad for t in inputs) and out.dtype.is_float and op not in _NO_GRAD:
      result.requires_grad = True
      result._ctx = Context(op, inputs, arg, result)
    return result

  @staticmethod
  def _with_gradient(inputs: tuple[Tensor, ...], forward, backward) -> Tensor:
    """A composite op with a gradient of its own (as torch.autograd.Function): `forward(*inputs)` builds the value from
    primitives without recording them, `backward(grad)` returns one gradient per input (None where not needed).
    Convolution uses it so that its backward is two matmuls and a sum of shifted views, not the gradient of im2col."""
    with no_grad(): out = forward(*inputs)
    if _GradMode.enabled and any(t.requires_grad for t in inputs) and out.dtype.is_float:
      out.requires_grad = True
      out._ctx = Context(Ops.CUSTOM, tuple(inputs), _CompositeGradient(backward), out)
    return out

  def _reduce(self, op: Ops, axes: tuple[int, ...]) -> Tensor:
    """Primitive reduce keeping dims (size 1 on reduced axes)."""
    return self._apply(op, arg=tuple(axes)) if axes else self

  def _shrink(self, arg) -> Tensor:
    if all(b == 0 and e == s for (b, e), s in zip(arg, self.shape)): return self
    return self._apply(Ops.SHRINK, arg=tuple(arg))

  def _pad(self, arg) -> Tensor:
    if all(b == 0 and a == 0 for b, a in arg): return self
    return self._apply(Ops.PAD, arg=tuple(arg))

  def _flip(self, axes) -> Tensor:
    return self._apply(Ops.FLIP, arg=tuple(axes)) if axes else self

  # ---- creation ----
  @staticmethod
  def empty(*shape, dtype=None, device=None, requires_grad=False) -> Tensor:
    return Tensor.zeros(*shape, dtype=dtype, device=device, requires_grad=requires_grad)

  @staticmethod
  def full(shape, fill_value, dtype=None, device=None, requires_grad=False) -> Tensor:
    shape = _shape_arg((shape,) if isinstance(shape, int) else tuple(shape))
    dtype = to_dtype(dtype) if dtype is not None else dtypes.from_py(fill_value)
    out = Tensor._const(fill_value, dtype, canonicalize(device), shape)
    return out.contiguous().requires_grad_() if requires_grad else out

  @staticmethod
  def zeros(*shape, dtype=None, device=None, requires_grad=False) -> Tensor:
    return Tensor.full(_shape_arg(shape), 0.0, dtype=dtype or dtypes.default_float, device=device, requires_grad=requires_grad)

  @staticmethod
  def ones(*shape, dtype=None, device=None, requires_grad=False) -> Tensor:
    return Tensor.full(_shape_arg(shape), 1.0, dtype=dtype or dtypes.default_float, device=device, requires_grad=requires_grad)

  @staticmethod
  def arange(start, end=None, step=1, dtype=None, device=None, requires_grad=False) -> Tensor:
    if end is None: start, end = 0, start
    if step == 0: raise RuntimeError("step must be nonzero")
    if (end - start) * step < 0: raise RuntimeError("upper bound and larger bound inconsistent with step sign")
    floats = any(isinstance(x, float) for x in (start, end, step))
    dtype = to_dtype(dtype) if dtype is not None else (dtypes.default_float if floats else dtypes.default_int)
    count = max(0, math.ceil((end - start) / step))
    values = start + np.arange(count, dtype=np.float64 if floats or dtype.is_float else np.int64) * step
    return Tensor(values, dtype=dtype, device=device, requires_grad=requires_grad)

  @staticmethod
  def linspace(start, end, steps, dtype=None, device=None, requires_grad=False) -> Tensor:
    if steps < 0: raise RuntimeError("number of steps must be non-negative")
    dtype = to_dtype(dtype) if dtype is not None else dtypes.default_float
    if steps == 1: return Tensor.full((1,), start, dtype=dtype, device=device)
    step = (end - start) / (steps - 1)
    idx = Tensor.arange(steps, dtype=dtypes.float32, device=device)
    half = steps // 2
    # torch fills the second half from the end so the last element is exactly `end`
    out = (idx < half)._where(idx * step + start, end - (steps - 1 - idx) * step)
    return out.cast(dtype)

  @staticmethod
  def eye(n, m=None, dtype=None, device=None, requires_grad=False) -> Tensor:
    m = n if m is None else m
    rows = Tensor.arange(n, device=device).reshape(n, 1)
    cols = Tensor.arange(m, device=device).reshape(1, m)
    return (rows == cols).cast(to_dtype(dtype) if dtype is not None else dtypes.default_float)

  @staticmethod
  def rand(*shape, dtype=None, device=None, requires_grad=False, generator=None) -> Tensor:
    from teenygrad.tensor.random import host_rng
    shape = _shape_arg(shape)
    data = host_rng().random(shape, dtype=np.float32)
    return Tensor(data, dtype=dtype or dtypes.default_float, device=device, requires_grad=requires_grad)

  @staticmethod
  def randn(*shape, dtype=None, device=None, requires_grad=False, generator=None) -> Tensor:
    from teenygrad.tensor.random import host_rng
    shape = _shape_arg(shape)
    data = host_rng().standard_normal(shape, dtype=np.float32)
    return Tensor(data, dtype=dtype or dtypes.default_float, device=device, requires_grad=requires_grad)

  @staticmethod
  def randint(low, high=None, size=None, dtype=None, device=None) -> Tensor:
    from teenygrad.tensor.random import host_rng
    if high is None: low, high = 0, low
    if size is None: raise TypeError("randint() missing required argument 'size'")
    if low >= high: raise RuntimeError(f"random_ expects 'from' to be less than 'to', but got from={low} >= to={high}")
    data = host_rng().integers(low, high, size=_shape_arg((size,) if isinstance(size, int) else tuple(size)))
    return Tensor(data, dtype=dtype or dtypes.int64, device=device)

  @staticmethod
  def normal(mean=0.0, std=1.0, size=None, dtype=None, device=None, requires_grad=False) -> Tensor:
    if std < 0: raise RuntimeError(f"normal expects std >= 0.0, but found std {std}")
    out = Tensor.randn(*(size if size is not None else ()), dtype=dtype, device=device) * std + mean
    return out.detach().requires_grad_() if requires_grad else out

  @staticmethod
  def uniform(low=0.0, high=1.0, size=None, dtype=None, device=None, requires_grad=False) -> Tensor:
    out = Tensor.rand(*(size if size is not None else ()), dtype=dtype, device=device) * (high - low) + low
    return out.detach().requires_grad_() if requires_grad else out

  def zeros_like(self, dtype=None, **kw) -> Tensor: return Tensor.zeros(*self.shape, dtype=dtype or self.dtype, device=kw.get("device", self.device))
  def ones_like(self, dtype=None, **kw) -> Tensor: return Tensor.ones(*self.shape, dtype=dtype or self.dtype, device=kw.get("device", self.device))
  def full_like(self, value, dtype=None, **kw) -> Tensor: return Tensor.full(self.shape, value, dtype=dtype or self.dtype, device=kw.get("device", self.device))
  def rand_like(self, dtype=None, **kw) -> Tensor: return Tensor.rand(*self.shape, dtype=dtype or self.dtype, device=self.device)
  def randn_like(self, dtype=None, **kw) -> Tensor: return Tensor.randn(*self.shape, dtype=dtype or self.dtype, device=self.device)
  def empty_like(self, dtype=None, **kw) -> Tensor: return self.zeros_like(dtype)

  # ---- dtype and device ----
  def to(self, *args, **kwargs) -> Tensor:
    """to(dtype), to(device), to(device, dtype), to(other_tensor)."""
    device, dtype = kwargs.get("device"), kwargs.get("dtype")
    for a in args:
      if isinstance(a, Tensor): device, dtype = a.device, a.dtype
      elif isinstance(a, str) and not hasattr(dtypes, a): device = a
      elif a is not None: dtype = a
    out = self
    if dtype is not None: out = out.cast(to_dtype(dtype))
    if device is not None and canonicalize(device) != out.device: out = out._apply(Ops.COPY, arg=canonicalize(device))
    return out

  def cast(self, dtype) -> Tensor:
    dtype = to_dtype(dtype)
    return self if dtype == self.dtype else self._apply(Ops.CAST, dtype=dtype)

  def type(self, dtype=None):
    return self.dtype if dtype is None else self.cast(dtype)

  def view_as_dtype(self, dtype) -> Tensor:
    """Reinterpret the bits (torch's view(dtype)). Between element sizes the last dim shrinks or grows, the bytes of
    each element combined or split little-endian, built from shifts and masks so every backend runs it."""
    dtype = to_dtype(dtype)
    if dtype == self.dtype: return self
    src, dst = self.dtype.itemsize, dtype.itemsize
    if src == dst: return self._apply(Ops.BITCAST, dtype=dtype)
    if dtype == dtypes.bool or self.dtype == dtypes.bool: raise RuntimeError(f"can't view {self.dtype.name} as {dtype.name}")
    if self.ndim == 0:
      raise RuntimeError(f"self.dim() cannot be 0 to view {self.dtype.name} as {dtype.name} (different element sizes)")
    lanes = _SAME_SIZE_INT[src]
    bits = self._apply(Ops.BITCAST, dtype=lanes) if self.dtype != lanes else self
    *lead, last = self.shape
    if dst > src:
      ratio = dst // src
      if last % ratio:
        raise RuntimeError(f"self.size(-1) must be divisible by {ratio} to view {self.dtype.name} as {dtype.name} (different element sizes), but got {last}")
      wide = _SAME_SIZE_INT[dst]
      parts = bits.reshape(*lead, last // ratio, ratio).cast(wide) & ((1 << (8 * src)) - 1)   # no sign extension
      shifts = Tensor(np.arange(ratio, dtype=np.int64) * 8 * src, dtype=wide, device=self.device)
      combined = (parts << shifts)._reduce(Ops.SUM, (len(lead) + 1,)).reshape(*lead, last // ratio)   # disjoint bits
      return combined._apply(Ops.BITCAST, dtype=dtype) if dtype != wide else combined
    ratio = src // dst
    shifts = Tensor(np.arange(ratio, dtype=np.int64) * 8 * dst, dtype=lanes, device=self.device)
    narrow = _SAME_SIZE_INT[dst]
    parts = ((bits.unsqueeze(-1) >> shifts) & ((1 << (8 * dst)) - 1)).cast(narrow).reshape(*lead, last * ratio)
    return parts._apply(Ops.BITCAST, dtype=dtype) if dtype != narrow else parts

  bitcast = view_as_dtype
  def float(self) -> Tensor: return self.cast(dtypes.float32)
  def half(self) -> Tensor: return self.cast(dtypes.float16)
  def bfloat16(self) -> Tensor: return self.cast(dtypes.bfloat16)
  def double(self) -> Tensor: return self.cast(dtypes.float64)
  def int(self) -> Tensor: return self.cast(dtypes.int32)
  def long(self) -> Tensor: return self.cast(dtypes.int64)
  def short(self) -> Tensor: return self.cast(dtypes.int16)
  def char(self) -> Tensor: return self.cast(dtypes.int8)
  def byte(self) -> Tensor: return self.cast(dtypes.uint8)
  def bool(self) -> Tensor: return self.cast(dtypes.bool)
  def cpu(self) -> Tensor: return self.to("CPU")
  def cuda(self, index: int = 0) -> Tensor: return self.to(f"CUDA:{index}")
  def clone(self) -> Tensor: return self._apply(Ops.CONTIGUOUS) if self.lazydata.is_view else self * 1 if self.requires_grad else Tensor(self.lazydata.contiguous() if self.lazydata.is_view else self.lazydata)
  def contiguous(self) -> Tensor: return self._apply(Ops.CONTIGUOUS)

  # ---- in place ----
  def assign(self, value) -> Tensor:
    """Write value into this tensor's own buffer (what optimizers use: the buffer, and so a JIT capture, stays)."""
    value = value if isinstance(value, Tensor) else Tensor._const(value, self.dtype, self.device, self.shape)
    if value.shape != self.shape:
      value = value.expand(*self.shape) if _broadcastable(value.shape, self.shape) else value
    if value.shape != self.shape: raise RuntimeError(f"assign shape mismatch: {value.shape} into {self.shape}")
    value = value.cast(self.dtype)
    lb = self.lazydata
    if not lb.is_view and lb.realized is not None and not value.requires_grad:
      self.lazydata = lb.assign(value.lazydata)
    else:
      self.lazydata = value.lazydata
    self._ctx = value._ctx if value.requires_grad else None
    self.requires_grad = value.requires_grad or self.requires_grad
    return self

  def _inplace(self, value: Tensor) -> Tensor:
    if _GradMode.enabled and self.requires_grad and self.is_leaf:
      raise RuntimeError("a leaf Variable that requires grad is being used in an in-place operation.")
    if value.dtype != self.dtype:
      if self.dtype.category < value.dtype.category:
        raise RuntimeError(f"result type {value.dtype.name} can't be cast to the desired output type {self.dtype.name}")
      value = value.cast(self.dtype)
    if value.shape != self.shape:
      raise RuntimeError(f"output with shape {list(self.shape)} doesn't match the broadcast shape {list(value.shape)}")
    if value._ctx is not None: _detach_history(value, self)
    self.lazydata, self._ctx = value.lazydata, value._ctx
    self.requires_grad = value.requires_grad
    if self._ctx is not None: self._ctx.output = self
    return self

  def copy_(self, src) -> Tensor:
    src = src if isinstance(src, Tensor) else Tensor(src)
    return self._inplace(src.to(self.device).cast(self.dtype).expand(*self.shape).contiguous())

  def zero_(self) -> Tensor: return self._inplace(Tensor.zeros(*self.shape, dtype=self.dtype, device=self.device))
  def fill_(self, value) -> Tensor: return self._inplace(Tensor.full(self.shape, value, dtype=self.dtype, device=self.device))
  def uniform_(self, a=0.0, b=1.0) -> Tensor: return self._inplace(Tensor.uniform(a, b, self.shape, dtype=self.dtype, device=self.device))
  def normal_(self, mean=0.0, std=1.0) -> Tensor: return self._inplace(Tensor.normal(mean, std, self.shape, dtype=self.dtype, device=self.device))

  # ---- broadcasting and promotion ----
  def _operands(self, other, reverse: bool = False) -> tuple[Tensor, Tensor]:
    if isinstance(other, Tensor):
      if other.device != self.device:
        raise RuntimeError(f"Expected all tensors to be on the same device, but found {self.device} and {other.device}")
      dtype = _promote_tensors(self, other)
      a, b = self.cast(dtype), other.cast(dtype)
    elif isinstance(other, (int, float, bool, np.integer, np.floating, np.bool_)):
      other = other.item() if isinstance(other, np.generic) else other
      dtype = result_type_scalar(self.dtype, other)
      a, b = self.cast(dtype), Tensor._const(other, dtype, self.device)
    elif isinstance(other, (list, tuple, np.ndarray)):
      return self._operands(Tensor(other, device=self.device), reverse)
    else:
      raise TypeError(f"unsupported operand type: Tensor and {type(other).__name__}")
    a, b = _broadcast_pair(a, b)
    return (b, a) if reverse else (a, b)

  def _binary(self, op: Ops, other, reverse=False, dtype=None) -> Tensor:
    a, b = self._operands(other, reverse)
    return a._apply(op, b, dtype=dtype)

  # ---- arithmetic ----
  def add(self, other, alpha=1) -> Tensor:
    if alpha != 1: other = other * alpha
    a, b = self._operands(other)
    if a.dtype == dtypes.bool: return a._apply(Ops.OR, b)
    return a._apply(Ops.ADD, b)

  def sub(self, other, alpha=1) -> Tensor:
    a, b = self._operands(other)
    if a.dtype == dtypes.bool: raise RuntimeError("Subtraction, the `-` operator, with two bool tensors is not supported.")
    return a._apply(Ops.ADD, b.neg() if alpha == 1 else b * -alpha)

  def mul(self, other) -> Tensor:
    a, b = self._operands(other)
    if a.dtype == dtypes.bool: return a._apply(Ops.AND, b)
    return a._apply(Ops.MUL, b)

  def div(self, other, rounding_mode: str | None = None) -> Tensor:
    a, b = self._operands(other)
    if rounding_mode == "trunc":
      return a._apply(Ops.IDIV, b) if a.dtype.is_int else (a.float_div(b)).trunc()
    if rounding_mode == "floor": return a.floor_divide(b)
    if rounding_mode is not None: raise ValueError(f"div expected rounding_mode to be one of None, 'trunc', or 'floor' but found '{rounding_mode}'")
    return a.float_div(b)

  def float_div(self, other: Tensor) -> Tensor:
    a, b = (self, other) if self.dtype.is_float else (self.cast(dtypes.default_float), other.cast(dtypes.default_float))
    return a._apply(Ops.MUL, b._apply(Ops.RECIPROCAL))

  def floor_divide(self, other) -> Tensor:
    a, b = self._operands(other)
    if a.dtype.is_float: return a.float_div(b).floor()
    q = a._apply(Ops.IDIV, b)
    remainder_nonzero = a._apply(Ops.MOD, b)._apply(Ops.CMPNE, Tensor._const(0, a.dtype, a.device, a.shape))
    signs_differ = (a < 0)._apply(Ops.XOR, b < 0)
    return (remainder_nonzero & signs_differ)._where(q - 1, q)

  def remainder(self, other) -> Tensor:
    a, b = self._operands(other)
    if a.dtype.is_float: return a - a.float_div(b).floor() * b
    r = a._apply(Ops.MOD, b)
    fix = (r != 0) & ((r < 0)._apply(Ops.XOR, b < 0))
    return fix._where(r + b, r)

  fmod = lambda self, other: (lambda a, b: a - a.div(b, rounding_mode="trunc") * b)(*self._operands(other))  # noqa: E731

  def neg(self) -> Tensor:
    if self.dtype == dtypes.bool: raise RuntimeError("Negation, the `-` operator, on a bool tensor is not supported.")
    return self * (-1)

  def reciprocal(self) -> Tensor: return (self if self.dtype.is_float else self.float())._apply(Ops.RECIPROCAL)

  def pow(self, exponent) -> Tensor:
    if isinstance(exponent, (int, float)) and not isinstance(exponent, bool):
      if exponent == 2: return self * self
      if exponent == 1: return self * 1
      if exponent == 0.5 and self.dtype.is_float: return self.sqrt()
      if exponent == -1 and self.dtype.is_float: return self.reciprocal()
    base, exp = self._operands(exponent)
    if base.dtype.is_int or base.dtype.is_bool:
      if isinstance(exponent, Tensor) and exponent.dtype.is_float or isinstance(exponent, float):
        base, exp = base.float(), exp.float()
      else: return _int_pow(base, exp)
    magnitude = (exp * base.abs().log2())._apply(Ops.EXP2)
    exp_is_int = exp.trunc() == exp
    odd = exp_is_int & ((exp.abs() % 2) == 1)
    negative = base < 0
    result = (negative & odd)._where(-magnitude, magnitude)
    result = (negative & ~exp_is_int)._where(float("nan"), result)
    return ((base == 0) & (exp == 0))._where(1.0, result)

  def __pow__(self, other): return self.pow(other)
  def __rpow__(self, other): return Tensor._const(other, result_type_scalar(self.dtype, other) if not isinstance(other, Tensor) else other.dtype, self.device, self.shape).pow(self)

  # ---- unary math ----
  def exp2(self) -> Tensor: return self._float()._apply(Ops.EXP2)
  def exp(self) -> Tensor: return (self._float() * LOG2_E)._apply(Ops.EXP2)
  def expm1(self) -> Tensor: return self.exp() - 1
  def log2(self) -> Tensor: return self._float()._apply(Ops.LOG2)
  def log(self) -> Tensor: return self._float()._apply(Ops.LOG2) * LN2
  def log10(self) -> Tensor: return self.log2() * math.log10(2)
  def log1p(self) -> Tensor: return (self._float() + 1).log()
  def sqrt(self) -> Tensor: return self._float()._apply(Ops.SQRT)
  def rsqrt(self) -> Tensor: return self.sqrt().reciprocal()
  def square(self) -> Tensor: return self * self
  def sin(self) -> Tensor: return self._float()._apply(Ops.SIN)
  def cos(self) -> Tensor: return (math.pi / 2 - self._float()).sin()
  def tan(self) -> Tensor: return self.sin() / self.cos()
  def sigmoid(self) -> Tensor:
    # exp(-|x|) never overflows, so neither the value nor its gradient meets inf * 0
    x = self._float()
    nonneg = x >= 0
    e = (nonneg._where(-x, x) * LOG2_E)._apply(Ops.EXP2)   # exp(-|x|), with gradient +-1 even at 0
    return nonneg._where(1 / (1 + e), e / (1 + e))
  def tanh(self) -> Tensor:
    # 2*sigmoid(2x)-1 loses every digit to cancellation near 0, where tanh(x) ~ x: use the series there
    x = self._float()
    x2 = x * x
    series = x * (1.0 + x2 * (-1.0 / 3 + x2 * (2.0 / 15 - x2 * (17.0 / 315))))
    return (x.abs() < 0.05)._where(series, 2.0 * (2.0 * x).sigmoid() - 1.0)
  def abs(self) -> Tensor:
    if self.dtype.is_bool or not self.dtype.signed: return self
    return (self < 0)._where(-self, self) if not self.dtype.is_float else self.relu() + (-self).relu()
  def sign(self) -> Tensor:
    if self.dtype.is_bool: return self
    positive, negative = (self > 0).cast(self.dtype), (self < 0).cast(self.dtype)
    return (self != self)._where(self, positive - negative) if self.dtype.is_float else positive - negative
  def trunc(self) -> Tensor:
    if not self.dtype.is_float: return self
    # from here on every value of the type is an integer already
    limit = 2.0 ** {dtypes.float64: 52, dtypes.float32: 23, dtypes.float16: 10, dtypes.bfloat16: 7}[self.dtype]
    rounded = (self.abs() < limit)._where(self.detach().cast(dtypes.int64).cast(self.dtype), self.detach())
    return rounded + (self - self.detach()) * 0 if self.requires_grad else rounded   # torch: a zero gradient
  def floor(self) -> Tensor:
    if not self.dtype.is_float: return self
    t = self.trunc()
    return (t > self)._where(t - 1, t)
  def ceil(self) -> Tensor:
    if not self.dtype.is_float: return self
    t = self.trunc()
    return (t < self)._where(t + 1, t)
  def round(self, decimals: int = 0) -> Tensor:
    if not self.dtype.is_float: return self
    if decimals: return (self * 10 ** decimals).round() / 10 ** decimals
    r = (self + 0.5).floor()
    tie = (r - self) == 0.5
    odd = (r.abs() % 2) == 1
    return (tie & odd)._where(r - 1, r)
  def frac(self) -> Tensor: return self - self.trunc()
  def isnan(self) -> Tensor: return self != self
  def isinf(self) -> Tensor: return (self == float("inf")) | (self == float("-inf")) if self.dtype.is_float else self != self
  def isfinite(self) -> Tensor: return ~(self.isnan() | self.isinf())
  def nan_to_num(self, nan=0.0, posinf=None, neginf=None) -> Tensor:
    big = float(np.finfo(self.dtype.np if self.dtype != dtypes.bfloat16 else np.float32).max)
    out = self.isnan()._where(nan, self)
    out = (self == float("inf"))._where(posinf if posinf is not None else big, out)
    return (self == float("-inf"))._where(neginf if neginf is not None else -big, out)

  def _float(self) -> Tensor: return self if self.dtype.is_float else self.cast(dtypes.default_float)

  # ---- comparisons and logic ----
  def __lt__(self, other) -> Tensor: return self._binary(Ops.CMPLT, other)
  def __gt__(self, other) -> Tensor: return self._binary(Ops.CMPLT, other, reverse=True)
  def __ne__(self, other) -> Tensor: return self._binary(Ops.CMPNE, other)  # type: ignore[override]
  def __eq__(self, other) -> Tensor: return ~self._binary(Ops.CMPNE, other)  # type: ignore[override]
  def __le__(self, other) -> Tensor: return (self < other) | (self == other)
  def __ge__(self, other) -> Tensor: return (self > other) | (self == other)
  lt, gt, le, ge = __lt__, __gt__, __le__, __ge__
  def eq(self, other) -> Tensor: return self == other
  def ne(self, other) -> Tensor: return self != other
  def equal(self, other: Tensor) -> bool: return self.shape == other.shape and bool((self == other).all().item())
  def allclose(self, other, rtol=1e-5, atol=1e-8) -> bool:
    return bool(((self - other).abs() <= atol + rtol * other.abs()).all().item())

  def _check_int(self, name: str) -> None:
    if self.dtype.is_float: raise NotImplementedError(f"\"{name}\" not implemented for '{self.dtype.name}'")

  def bitwise_and(self, other) -> Tensor: self._check_int("bitwise_and"); return self._binary(Ops.AND, other)
  def bitwise_or(self, other) -> Tensor: self._check_int("bitwise_or"); return self._binary(Ops.OR, other)
  def bitwise_xor(self, other) -> Tensor: self._check_int("bitwise_xor"); return self._binary(Ops.XOR, other)
  def bitwise_not(self) -> Tensor:
    if self.dtype.is_float: raise TypeError("~ (bitwise_not) is only supported for integer and boolean tensors")
    return self._apply(Ops.XOR, Tensor._const(True if self.dtype.is_bool else -1, self.dtype, self.device, self.shape))
  def bitwise_left_shift(self, other) -> Tensor: self._check_int("lshift"); return self._binary(Ops.SHL, other)
  def bitwise_right_shift(self, other) -> Tensor: self._check_int("rshift"); return self._binary(Ops.SHR, other)
  def logical_not(self) -> Tensor: return self.cast(dtypes.bool).bitwise_not()
  def logical_and(self, other) -> Tensor: return self.cast(dtypes.bool) & _as_bool(other)
  def logical_or(self, other) -> Tensor: return self.cast(dtypes.bool) | _as_bool(other)
  def logical_xor(self, other) -> Tensor: return self.cast(dtypes.bool) ^ _as_bool(other)

  def where(self, condition, other) -> Tensor:
    """torch's Tensor.where: self where condition holds, other elsewhere."""
    return condition._where(self, other)

  def _where(self, x, y) -> Tensor:
    """self is the condition: the internal form of torch.where(cond, x, y)."""
    cond = self.cast(dtypes.bool)
    if isinstance(x, Tensor) or isinstance(y, Tensor):
      ref = x if isinstance(x, Tensor) else y
      if not isinstance(x, Tensor): x = Tensor._const(x, result_type_scalar(ref.dtype, x), ref.device)
      if not isinstance(y, Tensor): y = Tensor._const(y, result_type_scalar(ref.dtype, y), ref.device)
      dtype = _promote_tensors(x, y)
    else:
      dtype = promote(dtypes.from_py(x), dtypes.from_py(y))
      if dtype.is_float: dtype = dtypes.default_float
      x, y = Tensor._const(x, dtype, self.device), Tensor._const(y, dtype, self.device)
    x, y = x.cast(dtype), y.cast(dtype)
    shape = _broadcast_shape(cond.shape, x.shape, y.shape)
    cond, x, y = cond._broadcast_to(shape), x._broadcast_to(shape), y._broadcast_to(shape)
    return cond._apply(Ops.WHERE, x, y)

  def maximum(self, other) -> Tensor:
    a, b = self._operands(other)
    if a.dtype.is_bool: return a | b
    return a._apply(Ops.MAX, b)

  def minimum(self, other) -> Tensor:
    a, b = self._operands(other)
    if a.dtype.is_bool: return a & b
    if a.dtype.is_float: return -((-a)._apply(Ops.MAX, -b))
    return (a < b)._where(a, b)

  def clamp(self, min=None, max=None) -> Tensor:
    if min is None and max is None: raise RuntimeError("torch.clamp: At least one of 'min' or 'max' must not be None")
    out = self
    if min is not None: out = (out < min)._where(min, out) if not isinstance(min, Tensor) else out.maximum(min)
    if max is not None: out = (out > max)._where(max, out) if not isinstance(max, Tensor) else out.minimum(max)
    return out
  clip = clamp

  def lerp(self, end, weight) -> Tensor: return self + (end - self) * weight

  # operators
  def __add__(self, other): return self.add(other)
  def __radd__(self, other): return self._binary_reverse("add", other)
  def __sub__(self, other): return self.sub(other)
  def __rsub__(self, other): return self._binary_reverse("sub", other)
  def __mul__(self, other): return self.mul(other)
  def __rmul__(self, other): return self._binary_reverse("mul", other)
  def __truediv__(self, other): return self.div(other)
  def __rtruediv__(self, other): return self._binary_reverse("div", other)
  def __floordiv__(self, other): return self.floor_divide(other)
  def __rfloordiv__(self, other): return self._binary_reverse("floor_divide", other)
  def __mod__(self, other): return self.remainder(other)
  def __rmod__(self, other): return self._binary_reverse("remainder", other)
  def __neg__(self): return self.neg()
  def __pos__(self): return self
  def __abs__(self): return self.abs()
  def __and__(self, other): return self.bitwise_and(other)
  def __rand__(self, other): return self.bitwise_and(other)
  def __or__(self, other): return self.bitwise_or(other)
  def __ror__(self, other): return self.bitwise_or(other)
  def __xor__(self, other): return self.bitwise_xor(other)
  def __rxor__(self, other): return self.bitwise_xor(other)
  def __invert__(self): return self.bitwise_not()
  def __lshift__(self, other): return self.bitwise_left_shift(other)
  def __rshift__(self, other): return self.bitwise_right_shift(other)
  def __matmul__(self, other): return self.matmul(other)
  def __rmatmul__(self, other): return Tensor(other, device=self.device).matmul(self)

  def _binary_reverse(self, name: str, other) -> Tensor:
    a, b = self._operands(other, reverse=True)
    return getattr(a, name)(b)

  # in-place variants (torch semantics: the tensor object keeps its identity; see docs/architecture.md)
  def add_(self, other, alpha=1): return self._inplace(self.add(other, alpha))
  def sub_(self, other, alpha=1): return self._inplace(self.sub(other, alpha))
  def mul_(self, other): return self._inplace(self.mul(other))
  def div_(self, other, rounding_mode=None): return self._inplace(self.div(other, rounding_mode))
  def pow_(self, other): return self._inplace(self.pow(other))
  def clamp_(self, min=None, max=None): return self._inplace(self.clamp(min, max))
  clip_ = clamp_
  def neg_(self): return self._inplace(self.neg())
  def abs_(self): return self._inplace(self.abs())
  def exp_(self): return self._inplace(self.exp())
  def log_(self): return self._inplace(self.log())
  def sqrt_(self): return self._inplace(self.sqrt())
  def sigmoid_(self): return self._inplace(self.sigmoid())
  def tanh_(self): return self._inplace(self.tanh())
  def relu_(self): return self._inplace(self.relu())
  def floor_(self): return self._inplace(self.floor())
  def ceil_(self): return self._inplace(self.ceil())
  def round_(self): return self._inplace(self.round())
  def trunc_(self): return self._inplace(self.trunc())
  def lerp_(self, end, weight): return self._inplace(self.lerp(end, weight))
  def masked_fill_(self, mask, value): return self._inplace(self.masked_fill(mask, value))
  def __iadd__(self, other): return self.add_(other)
  def __isub__(self, other): return self.sub_(other)
  def __imul__(self, other): return self.mul_(other)
  def __itruediv__(self, other): return self.div_(other)


_NO_GRAD = {Ops.CMPLT, Ops.CMPNE, Ops.IDIV, Ops.MOD, Ops.AND, Ops.OR, Ops.XOR, Ops.SHL, Ops.SHR, Ops.BITCAST}


def _detach_history(value: Tensor, target: Tensor) -> None:
  """`target` is about to become `value`: where value's history reads target's old self, point it at a snapshot."""
  old = Tensor.__new__(Tensor)
  old.lazydata, old._ctx, old.requires_grad, old.grad = target.lazydata, target._ctx, target.requires_grad, target.grad
  if old._ctx is not None: old._ctx.output = old
  seen: set[int] = set()
  stack = [value]
  while stack:
    node = stack.pop()
    if id(node) in seen or node._ctx is None or node is old: continue
    seen.add(id(node))
    ctx = node._ctx
    if any(t is target for t in ctx.inputs): ctx.inputs = tuple(old if t is target else t for t in ctx.inputs)
    stack.extend(t for t in ctx.inputs if t is not old)


def _as_bool(x) -> Tensor | bool:
  return x.cast(dtypes.bool) if isinstance(x, Tensor) else bool(x)


def _int_pow(base: Tensor, exp: Tensor) -> Tensor:
  """Integer power by repeated squaring over the exponent's bits (exponents up to 2**31)."""
  result = Tensor._const(1, base.dtype, base.device, base.shape)
  e = exp
  b = base
  for _ in range(31):
    result = ((e & 1) == 1)._where(result * b, result)
    e = e >> 1
    b = b * b
  return (exp < 0)._where(Tensor._const(0, base.dtype, base.device, base.shape), result)


def _promote_tensors(a: Tensor, b: Tensor) -> DType:
  """torch.result_type: a 0-d tensor only decides the dtype when it is of a higher category."""
  if (a.ndim == 0) == (b.ndim == 0): return promote(a.dtype, b.dtype)
  dimensioned, zero_dim = (a, b) if b.ndim == 0 else (b, a)
  if zero_dim.dtype.category > dimensioned.dtype.category: return zero_dim.dtype
  return dimensioned.dtype


def _broadcast_shape(*shapes) -> tuple:
  ndim = max(len(s) for s in shapes)
  padded = [(1,) * (ndim - len(s)) + tuple(s) for s in shapes]
  out = []
  for dim, sizes in enumerate(zip(*padded)):
    non_one = {s for s in sizes if s != 1}
    if len(non_one) > 1:
      a, b = sorted(non_one, key=str)[:2]
      raise RuntimeError(f"The size of tensor a ({a}) must match the size of tensor b ({b}) at non-singleton dimension {dim}")
    out.append(non_one.pop() if non_one else 1)
  return tuple(out)


def _broadcastable(src: tuple, dst: tuple) -> bool:
  try: return _broadcast_shape(src, dst) == tuple(dst)
  except RuntimeError: return False


def _broadcast_pair(a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
  if a.shape == b.shape: return a, b
  shape = _broadcast_shape(a.shape, b.shape)
  return a._broadcast_to(shape), b._broadcast_to(shape)


def _lazy_from_host(data, dtype: DType | None, device: str) -> LazyBuffer:
  if isinstance(data, np.ndarray):
    if dtype is None: dtype = dtypes.from_numpy(data.dtype)
    array = data
  else:
    if hasattr(data, "__dlpack__") and not isinstance(data, (list, tuple)):
      return _lazy_from_host(np.from_dlpack(data), dtype, device)
    if dtype is None: dtype = dtypes.from_py(data)
    try: array = np.array(data, dtype=np.float64 if dtype.is_float else None)
    except ValueError as e: raise ValueError(f"can't build a tensor from ragged or invalid data: {e}") from None
    if array.dtype == object: raise TypeError(f"can't build a tensor from {type(data).__name__} of non-numbers")
  if dtype == dtypes.bfloat16: host = float_to_bfloat16_bits(np.asarray(array, dtype=np.float32))
  else: host = np.ascontiguousarray(array).astype(dtype.np, copy=False)
  shape = tuple(int(s) for s in array.shape)
  buffer = runtime.buffer_from_host(device, np.ascontiguousarray(host).reshape(-1), dtype)
  return LazyBuffer.from_realized(buffer, shape, dtype, device)
