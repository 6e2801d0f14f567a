"""Activation modules: thin Module wrappers over the Tensor methods (torch.nn names and arguments)."""
from __future__ import annotations

from teenygrad.nn.module import Module
from teenygrad.tensor import Tensor


class _Elementwise(Module):
  """An activation with no parameters; `inplace` is accepted for torch compatibility (results are never aliased)."""
  def __init__(self, inplace: bool = False):
    super().__init__()
    self.inplace = inplace
  def extra_repr(self) -> str: return "inplace=True" if self.inplace else ""


class ReLU(_Elementwise):
  def forward(self, input: Tensor) -> Tensor: return input.relu()


class ReLU6(_Elementwise):
  def forward(self, input: Tensor) -> Tensor: return input.relu6()


class SiLU(_Elementwise):
  def forward(self, input: Tensor) -> Tensor: return input.silu()


class Mish(_Elementwise):
  def forward(self, input: Tensor) -> Tensor: return input.mish()


class Hardswish(_Elementwise):
  def forward(self, input: Tensor) -> Tensor: return input.hardswish()


class Hardsigmoid(_Elementwise):
  def forward(self, input: Tensor) -> Tensor: return input.hardsigmoid()


class SELU(_Elementwise):
  def forward(self, input: Tensor) -> Tensor: return input.selu()


class Sigmoid(Module):
  def forward(self, input: Tensor) -> Tensor: return input.sigmoid()


class Tanh(Module):
  def forward(self, input: Tensor) -> Tensor: return input.tanh()


class Softsign(Module):
  def forward(self, input: Tensor) -> Tensor: return input.softsign()


class LogSigmoid(Module):
  def forward(self, input: Tensor) -> Tensor: return input.logsigmoid()


class LeakyReLU(Module):
  def __init__(self, negative_slope: float = 0.01, inplace: bool = False):
    super().__init__()
    self.negative_slope, self.inplace = negative_slope, inplace
  def forward(self, input: Tensor) -> Tensor: return input.leaky_relu(self.negative_slope)
  def extra_repr(self) -> str: return f"negative_slope={self.negative_slope}" + (", inplace=True" if self.inplace else "")


class ELU(Module):
  def __init__(self, alpha: float = 1.0, inplace: bool = False):
    super().__init__()
    self.alpha, self.inplace = alpha, inplace
  def forward(self, input: Tensor) -> Tensor: return input.elu(self.alpha)
  def extra_repr(self) -> str: return f"alpha={self.alpha}"


class CELU(ELU):
  def forward(self, input: Tensor) -> Tensor: return input.celu(self.alpha)


class GELU(Module):
  def __init__(self, approximate: str = "none"):
    super().__init__()
    if approximate not in ("none", "tanh"): raise ValueError(f"approximate argument must be either none or tanh, got {approximate!r}")
    self.approximate = approximate
  def forward(self, input: Tensor) -> Tensor: return input.gelu(self.approximate)
  def extra_repr(self) -> str: return f"approximate={self.approximate!r}"


class Softplus(Module):
  def __init__(self, beta: float = 1.0, threshold: float = 20.0):
    super().__init__()
    self.beta, self.threshold = beta, threshold
  def forward(self, input: Tensor) -> Tensor: return input.softplus(self.beta, self.threshold)
  def extra_repr(self) -> str: return f"beta={self.beta}, threshold={self.threshold}"


class Hardtanh(Module):
  def __init__(self, min_val: float = -1.0, max_val: float = 1.0, inplace: bool = False):
    super().__init__()
    if max_val <= min_val: raise ValueError("max_val must be greater than min_val")
    self.min_val, self.max_val, self.inplace = min_val, max_val, inplace
  def forward(self, input: Tensor) -> Tensor: return input.hardtanh(self.min_val, self.max_val)
  def extra_repr(self) -> str: return f"min_val={self.min_val}, max_val={self.max_val}"


class _DimActivation(Module):
  autocast_policy = "float32"
  def __init__(self, dim: int | None = None):
    super().__init__()
    self.dim = dim
  def _dim(self, input: Tensor) -> int:
    # torch's legacy rule when dim is None: 0 for 0-, 1- and 3-d input, else 1
    return self.dim if self.dim is not None else (0 if input.ndim in (0, 1, 3) else 1)
  def extra_repr(self) -> str: return f"dim={self.dim}"


class Softmax(_DimActivation):
  def forward(self, input: Tensor) -> Tensor: return input.softmax(self._dim(input))


class LogSoftmax(_DimActivation):
  def forward(self, input: Tensor) -> Tensor: return input.log_softmax(self._dim(input))
