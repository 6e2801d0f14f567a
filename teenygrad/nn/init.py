"""Parameter initialization with torch.nn.init's names, formulas and defaults.

Values come from teenygrad's host generator (`teenygrad.manual_seed`), so they follow torch's distributions but not
its exact random stream. Each function writes into the tensor's own buffer and returns the tensor."""
from __future__ import annotations

import math

import numpy as np

from teenygrad.tensor import Tensor
from teenygrad.tensor.random import host_rng


def calculate_gain(nonlinearity: str, param: float | None = None) -> float:
  linear = ("linear", "conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d", "conv_transpose3d", "sigmoid")
  if nonlinearity in linear: return 1.0
  if nonlinearity == "tanh": return 5.0 / 3
  if nonlinearity == "relu": return math.sqrt(2.0)
  if nonlinearity == "leaky_relu":
    slope = 0.01 if param is None else param
    if isinstance(slope, bool) or not isinstance(slope, (int, float)): raise ValueError(f"negative_slope {slope} not a valid number")
    return math.sqrt(2.0 / (1 + slope ** 2))
  if nonlinearity == "selu": return 3.0 / 4
  raise ValueError(f"Unsupported nonlinearity {nonlinearity}")


def _calculate_fan_in_and_fan_out(tensor: Tensor) -> tuple[int, int]:
  if tensor.ndim < 2: raise ValueError("Fan in and fan out can not be computed for tensor with fewer than 2 dimensions")
  receptive = math.prod(tensor.shape[2:]) if tensor.ndim > 2 else 1
  return tensor.shape[1] * receptive, tensor.shape[0] * receptive


def _fan(tensor: Tensor, mode: str) -> int:
  if mode not in ("fan_in", "fan_out"): raise ValueError(f"Mode {mode} not supported, please use one of fan_in, fan_out")
  fan_in, fan_out = _calculate_fan_in_and_fan_out(tensor)
  return fan_in if mode == "fan_in" else fan_out


def _write(tensor: Tensor, values: np.ndarray) -> Tensor:
  from teenygrad.nn.module import _copy_into
  _copy_into(tensor, Tensor(np.asarray(values, dtype=np.float32).reshape(tensor.shape)))
  return tensor


def uniform_(tensor: Tensor, a: float = 0.0, b: float = 1.0) -> Tensor:
  return _write(tensor, host_rng().uniform(a, b, size=tensor.shape))


def normal_(tensor: Tensor, mean: float = 0.0, std: float = 1.0) -> Tensor:
  return _write(tensor, host_rng().normal(mean, std, size=tensor.shape))


def trunc_normal_(tensor: Tensor, mean: float = 0.0, std: float = 1.0, a: float = -2.0, b: float = 2.0) -> Tensor:
  """Normal(mean, std) restricted to [a, b], by redrawing the values that fall outside."""
  values = host_rng().normal(mean, std, size=tensor.shape)
  bad = (values < a) | (values > b)
  for _ in range(100):
    if not bad.any(): break
    values[bad] = host_rng().normal(mean, std, size=int(bad.sum()))
    bad = (values < a) | (values > b)
  return _write(tensor, np.clip(values, a, b))


def constant_(tensor: Tensor, val: float) -> Tensor: return _write(tensor, np.full(tensor.shape, val))
def ones_(tensor: Tensor) -> Tensor: return constant_(tensor, 1.0)
def zeros_(tensor: Tensor) -> Tensor: return constant_(tensor, 0.0)


def eye_(tensor: Tensor) -> Tensor:
  if tensor.ndim != 2: raise ValueError("Only tensors with 2 dimensions are supported")
  return _write(tensor, np.eye(*tensor.shape))


def xavier_uniform_(tensor: Tensor, gain: float = 1.0) -> Tensor:
  fan_in, fan_out = _calculate_fan_in_and_fan_out(tensor)
  bound = gain * math.sqrt(6.0 / float(fan_in + fan_out))
  return uniform_(tensor, -bound, bound)


def xavier_normal_(tensor: Tensor, gain: float = 1.0) -> Tensor:
  fan_in, fan_out = _calculate_fan_in_and_fan_out(tensor)
  return normal_(tensor, 0.0, gain * math.sqrt(2.0 / float(fan_in + fan_out)))


def kaiming_uniform_(tensor: Tensor, a: float = 0, mode: str = "fan_in", nonlinearity: str = "leaky_relu") -> Tensor:
  if 0 in tensor.shape: return tensor
  bound = math.sqrt(3.0) * calculate_gain(nonlinearity, a) / math.sqrt(_fan(tensor, mode))
  return uniform_(tensor, -bound, bound)


def kaiming_normal_(tensor: Tensor, a: float = 0, mode: str = "fan_in", nonlinearity: str = "leaky_relu") -> Tensor:
  if 0 in tensor.shape: return tensor
  return normal_(tensor, 0.0, calculate_gain(nonlinearity, a) / math.sqrt(_fan(tensor, mode)))


def orthogonal_(tensor: Tensor, gain: float = 1.0) -> Tensor:
  if tensor.ndim < 2: raise ValueError("Only tensors with 2 or more dimensions are supported")
  rows, cols = tensor.shape[0], tensor.numel() // tensor.shape[0]
  flat = host_rng().normal(0.0, 1.0, size=(rows, cols))
  if rows < cols: flat = flat.T
  q, r = np.linalg.qr(flat)
  q *= np.sign(np.diag(r))
  if rows < cols: q = q.T
  return _write(tensor, gain * q)


def default_bound(fan_in: int) -> float:
  """The bias (and Linear/Conv weight) bound torch's reset_parameters uses: 1/sqrt(fan_in)."""
  return 1 / math.sqrt(fan_in) if fan_in > 0 else 0.0
