"""teenygrad: a small lazy ML library with its own kernels. `import teenygrad` pulls in numpy and nothing heavier."""
from teenygrad.engine import realize as _engine  # noqa: F401  (plugs the engine into the graph: ir.lazy.runtime)
from teenygrad.device import Device
from teenygrad.dtype import DType, dtypes
from teenygrad.ir.symbolic import Variable
from teenygrad.tensor import Tensor, enable_grad, is_grad_enabled, no_grad
from teenygrad.tensor.random import get_rng_state, manual_seed, set_rng_state

__version__ = "0.1.0"
# the facade: these names are teenygrad's public API
__all__ = ["Device", "DType", "dtypes", "Variable", "Tensor", "enable_grad", "is_grad_enabled", "no_grad", "get_rng_state",
           "manual_seed", "set_rng_state"]

bool = dtypes.bool
uint8, int8, int16, int32, int64 = dtypes.uint8, dtypes.int8, dtypes.int16, dtypes.int32, dtypes.int64
float16, bfloat16, float32, float64 = dtypes.float16, dtypes.bfloat16, dtypes.float32, dtypes.float64
half, float, double, long, int = dtypes.float16, dtypes.float32, dtypes.float64, dtypes.int64, dtypes.int32

tensor = Tensor
zeros, ones, full, empty = Tensor.zeros, Tensor.ones, Tensor.full, Tensor.empty
arange, linspace, eye = Tensor.arange, Tensor.linspace, Tensor.eye
rand, randn, randint, normal = Tensor.rand, Tensor.randn, Tensor.randint, Tensor.normal
zeros_like, ones_like, full_like = Tensor.zeros_like, Tensor.ones_like, Tensor.full_like
rand_like, randn_like, empty_like = Tensor.rand_like, Tensor.randn_like, Tensor.empty_like


def cat(tensors, dim: int = 0) -> Tensor:
  """Each piece is padded to the full size along dim and the pieces are summed: one fused kernel."""
  from teenygrad.helpers import normalize_dim
  tensors = [t for t in tensors]
  if not tensors: raise ValueError("torch.cat(): expected a non-empty list of Tensors")
  ref = next((t for t in tensors if t.shape != (0,)), tensors[0])
  if ref.ndim == 0: raise RuntimeError("zero-dimensional tensor (at position 0) cannot be concatenated")
  dim = normalize_dim(dim, ref.ndim)
  pieces = [t for t in tensors if not (t.ndim == 1 and t.shape[0] == 0 and ref.ndim != 1)]
  from teenygrad.dtype import promote
  dtype = pieces[0].dtype
  for t in pieces[1:]: dtype = promote(dtype, t.dtype)
  for i, t in enumerate(pieces):
    if t.ndim != ref.ndim: raise RuntimeError(f"Tensors must have same number of dimensions: got {ref.ndim} and {t.ndim}")
    for d in range(ref.ndim):
      if d != dim and t.shape[d] != ref.shape[d]:
        raise RuntimeError(f"Sizes of tensors must match except in dimension {dim}. Expected size {ref.shape[d]} but got size {t.shape[d]} for tensor number {i} in the list.")
  total = sum(t.shape[dim] for t in pieces)
  out, offset = None, 0
  for t in pieces:
    n = t.shape[dim]
    padded = t.cast(dtype)._pad(tuple((offset, total - offset - n) if d == dim else (0, 0) for d in range(ref.ndim)))
    out = padded if out is None else (out | padded if dtype == dtypes.bool else out + padded)
    offset += n
  return out


def stack(tensors, dim: int = 0) -> Tensor:
  from teenygrad.helpers import normalize_dim
  tensors = list(tensors)
  if not tensors: raise RuntimeError("stack expects a non-empty TensorList")
  for t in tensors[1:]:
    if t.shape != tensors[0].shape: raise RuntimeError(f"stack expects each tensor to be equal size, but got {list(tensors[0].shape)} at entry 0 and {list(t.shape)} at entry 1")
  dim = normalize_dim(dim, tensors[0].ndim + 1)
  return cat([t.unsqueeze(dim) for t in tensors], dim=dim)


Tensor.cat = staticmethod(lambda tensors, dim=0: cat(tensors, dim))  # type: ignore[assignment]
Tensor.stack = staticmethod(lambda tensors, dim=0: stack(tensors, dim))  # type: ignore[attr-defined]


def where(condition, x=None, y=None) -> Tensor:
  if x is None and y is None: raise NotImplementedError("torch.where(condition) (nonzero) is not supported")
  return condition._where(x, y)


def einsum(equation: str, *operands) -> Tensor:
  from teenygrad.tensor.einsum import einsum as _einsum
  return _einsum(equation, *operands)


def matmul(a: Tensor, b: Tensor) -> Tensor: return a.matmul(b)
def minimum(a: Tensor, b) -> Tensor: return a.minimum(b)
def maximum(a: Tensor, b) -> Tensor: return a.maximum(b)
def topk(x: Tensor, k: int, dim: int = -1, largest: bool = True, sorted: bool = True): return x.topk(k, dim, largest, sorted)
def sort(x: Tensor, dim: int = -1, descending: bool = False, stable: bool = False): return x.sort(dim, descending, stable)
def gather(x: Tensor, dim: int, index: Tensor) -> Tensor: return x.gather(dim, index)
def from_numpy(array) -> Tensor: return Tensor(array)
def from_dlpack(obj) -> Tensor:
  import numpy as np
  return Tensor(np.from_dlpack(obj))


def __getattr__(name: str):
  # heavy or optional parts load on first use
  import importlib
  if name in ("jit", "JitError"): return getattr(importlib.import_module("teenygrad.engine.jit"), name)
  if name in ("nn", "optim", "state", "data"): return importlib.import_module(f"teenygrad.{name}")
  raise AttributeError(f"module 'teenygrad' has no attribute {name!r}")
