"""A projection with its neighbours folded in: one launch where the primitive path takes two or three.

    fused_linear(x, weight, residual=None, norm=None, eps=0.0, swiglu=False, glu=False)

computes prologue(x) @ weight.T (+ residual) in one kernel, where the prologue is an RMSNorm of x by `norm`
(rms_norm(x, norm, eps)) or, with `swiglu`, silu(gate) * up of x = [gate | up] (a fused gate/up projection's output).
With `glu` (CUDA's matvecs) the weight is a fused gate/up projection and the kernel's epilogue returns silu(gate) * up
of its two halves, (..., N / 2): the elementwise kernel between the projection and the down projection is not run.
At batch 1 a small model's step is bounded by its launches (each a CUDA graph node of ~4 us on an H200), not by its
bytes, and every warp recomputing a 576-float norm costs less than a launch.

Where the backend has no such kernel (`MATVEC_KERNELS`), for the weight's type or shape, or when a gradient is needed,
it returns None and the caller runs the primitive ops (llm/model.py's `linear`), which are also what the kernels
are tested against (test_cuda.py; test_cuda_compile_decode.py runs the kernels' C++ on the CPU).
"""
from __future__ import annotations

import weakref
from collections.abc import Callable

from teenygrad.dtype import dtypes
from teenygrad.ir.lazy import LazyBuffer
from teenygrad.llm.custom_ops import fusion_enabled
from teenygrad.nn.quant import QuantizedTensor
from teenygrad.tensor.tensor import Tensor, is_grad_enabled


class FusedLinear:
  """Custom op: srcs (x (M, K) or (M, 2K) float32, the weight's storage[, norm (K,) float32][, residual (M, N)]) ->
  (M, N) float32. Inference only."""
  def __init__(self, launch: Callable, m: int, n: int, k: int, eps: float, norm: bool, swiglu: bool, residual: bool, glu: bool = False):
    self.launch, self.shape = launch, (m, n, k)
    self.eps, self.norm, self.swiglu, self.residual, self.glu = eps, norm, swiglu, residual, glu

  def run(self, root: LazyBuffer, buffers: list):
    from teenygrad.device import Buffer
    m, n, k = self.shape
    out = Buffer(root.device, m * (n // 2 if self.glu else n), dtypes.float32)
    x, w, *rest = buffers
    norm = rest.pop(0) if self.norm else None
    residual = rest.pop(0) if self.residual else None
    extra = {"glu": True} if self.glu else {}   # only CUDA's launchers take it (fused_linear asks no other backend)
    self.launch(out, x, w, m, n, k, residual=residual, norm=norm, eps=self.eps, swiglu=self.swiglu, **extra)
    return out

  def backward(self, grad, ctx):
    raise RuntimeError("the fused projection has no gradient (inference only): run with gradients enabled for the primitive path")


def _own_buffer(t: Tensor) -> Tensor:
  """t on a realized buffer of its own (a reshape reads the base's buffer as is)."""
  return t.contiguous() if t.lazydata.is_view and not t.lazydata.reshapes_base else t


# QuantizedTensor -> its blocks in nn/quant_cuda_packed.py's layout, made on first use (a second copy on the device)
_packed_weights: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _packed(weight: QuantizedTensor) -> Tensor:
  if weight not in _packed_weights:
    from teenygrad.nn.quant_cuda_packed import repack_tensor
    n, k = weight.shape
    _packed_weights[weight] = repack_tensor(weight.ggml_type, weight.raw, n, k).contiguous().realize()
  return _packed_weights[weight]


def _cuda_matvec(device: str, weight) -> tuple[Callable, Tensor] | None:
  """CUDA's launcher for a weight and the buffer it reads: Q4_0/Q4_1/Q8_0 rows of a multiple of 1024 repacked
  (nn/quant_cuda_packed.py; from 4M weights x rounded to int8, nn/quant_cuda_dp4a.py), other quantized weights in
  GGUF blocks (nn/quant_cuda.py), float16/bfloat16 rows of a multiple of 8 as they are (nn/matvec_cuda.py)."""
  if isinstance(weight, QuantizedTensor):
    from teenygrad.nn.quant_cuda import cuda_kernels
    from teenygrad.nn.quant_cuda_packed import cuda_packed_matvec, packable
    if packable(weight.ggml_type, weight.shape[1]) and fusion_enabled("repack"):
      return cuda_packed_matvec(device, weight.ggml_type, int8_x=fusion_enabled("dp4a")), _packed(weight)
    kernels = cuda_kernels(device, weight.ggml_type)
    return (kernels.linear, _own_buffer(weight.raw)) if kernels is not None else None
  from teenygrad.nn.matvec_cuda import FLOAT_DTYPES, cuda_float_matvec
  if weight.dtype.name in FLOAT_DTYPES and weight.shape[1] % 8 == 0 and fusion_enabled("float"):
    return cuda_float_matvec(device), _own_buffer(weight)
  return None


def _vulkan_matvec(device: str, weight) -> tuple[Callable, Tensor] | None:
  """Vulkan's launcher: Q4_0/Q4_1/Q8_0 weights in GGUF blocks (nn/quant_vulkan.py), where the device has subgroup
  arithmetic; float weights have no Vulkan matvec yet (their primitive path runs)."""
  if not isinstance(weight, QuantizedTensor): return None
  from teenygrad.nn.quant_vulkan import vulkan_kernels
  kernels = vulkan_kernels(device, weight.ggml_type)
  return (kernels.linear, _own_buffer(weight.raw)) if kernels is not None else None


# backend name -> factory(device, weight) of (a launcher(out, x, w, m, n, k, residual=, norm=, eps=, swiglu=), the
# weight's storage as that launcher reads it), or None for a weight it has no kernel for
MATVEC_KERNELS: dict[str, Callable[[str, object], tuple[Callable, Tensor] | None]] = {"CUDA": _cuda_matvec, "VULKAN": _vulkan_matvec}


def _flat(t: Tensor, rows: int) -> Tensor:
  """t as (rows, width) on its own buffer."""
  return _own_buffer(t.reshape(rows, t.shape[-1]))


def fused_linear(x: Tensor, weight, residual: Tensor | None = None, norm: Tensor | None = None, eps: float = 0.0,
                 swiglu: bool = False, glu: bool = False) -> Tensor | None:
  """prologue(x) (..., K) @ weight.T (+ residual (..., N)) -> (..., N) float32 in one launch, or None where the backend
  can't (the caller runs the primitive ops). weight (N, K) is a float Tensor or a QuantizedTensor; with swiglu x is
  (..., 2K); with glu the result is silu(gate) * up of the product's halves, (..., N / 2)."""
  from teenygrad.nn import matvec_cuda
  from teenygrad.nn.matvec_cuda import MAX_ROWS
  backend = x.device.partition(":")[0]
  factory = MATVEC_KERNELS.get(backend)
  if factory is None or not fusion_enabled("linear"): return None
  if (norm is not None and not fusion_enabled("norm")) or (swiglu and not fusion_enabled("swiglu")): return None
  n, k = weight.shape
  if glu and (backend != "CUDA" or not fusion_enabled("glu") or residual is not None or swiglu or n % 2): return None
  batch = tuple(x.shape[:-1])
  rows = 1
  for s in batch: rows *= s
  if x.shape[-1] != (2 * k if swiglu else k) or not 0 < rows <= MAX_ROWS or x.dtype != dtypes.float32: return None
  fold_max = matvec_cuda.CUDA_SWIGLU_FOLD_MAX if backend == "CUDA" else matvec_cuda.SWIGLU_FOLD_MAX
  if swiglu and n * k > fold_max: return None   # every warp's silu would cost more than the launch it saves
  if norm is not None and (norm.dtype != dtypes.float32 or tuple(norm.shape) != (k,)): return None
  if residual is not None and (residual.dtype != dtypes.float32 or tuple(residual.shape) != batch + (n,)): return None
  inputs = [x, weight if isinstance(weight, Tensor) else weight.raw] + [t for t in (norm, residual) if t is not None]
  if is_grad_enabled() and any(t.requires_grad for t in inputs): return None
  kernel = factory(x.device, weight)
  if kernel is None: return None
  launch, storage = kernel
  srcs = [_flat(x, rows), storage] + ([norm] if norm is not None else []) + ([_flat(residual, rows)] if residual is not None else [])
  op = FusedLinear(launch, rows, n, k, eps, norm is not None, swiglu, residual is not None, glu)
  width = n // 2 if glu else n
  out = Tensor(LazyBuffer.custom(op, tuple(t.lazydata for t in srcs), (rows, width), dtypes.float32))
  return out.reshape(*batch, width)


__all__ = ["FusedLinear", "MATVEC_KERNELS", "fused_linear"]
