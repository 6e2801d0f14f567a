"""Normalization layers: BatchNorm1d/2d (with running statistics), LayerNorm, RMSNorm, GroupNorm."""
from __future__ import annotations

from teenygrad.dtype import dtypes
from teenygrad.nn import init
from teenygrad.nn.module import Module, Parameter, _pending_buffer_updates
from teenygrad.tensor import Tensor, no_grad


def _shape_tuple(shape) -> tuple[int, ...]:
  return (shape,) if isinstance(shape, int) else tuple(shape)


class _BatchNorm(Module):
  autocast_policy = "float32"
  expected_dims: tuple[int, ...] = ()

  def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1, affine: bool = True,
               track_running_stats: bool = True, device=None, dtype=None, *, bias: bool = True):
    super().__init__()
    self.num_features, self.eps, self.momentum = num_features, eps, momentum
    self.affine, self.track_running_stats = affine, track_running_stats
    if affine:
      self.weight = Parameter(Tensor.ones(num_features, dtype=dtype, device=device))
      if bias: self.bias = Parameter(Tensor.zeros(num_features, dtype=dtype, device=device))
      else: self.register_parameter("bias", None)
    else:
      self.register_parameter("weight", None)
      self.register_parameter("bias", None)
    if track_running_stats:
      self.register_buffer("running_mean", Tensor.zeros(num_features, dtype=dtype, device=device))
      self.register_buffer("running_var", Tensor.ones(num_features, dtype=dtype, device=device))
      self.register_buffer("num_batches_tracked", Tensor.zeros((), dtype=dtypes.int64, device=device))
    else:
      self.register_buffer("running_mean", None)
      self.register_buffer("running_var", None)
      self.register_buffer("num_batches_tracked", None)

  def reset_running_stats(self) -> None:
    if self.track_running_stats:
      init.zeros_(self.running_mean); init.ones_(self.running_var)
      from teenygrad.nn.module import _copy_into
      _copy_into(self.num_batches_tracked, Tensor.zeros((), dtype=dtypes.int64))

  def reset_parameters(self) -> None:
    self.reset_running_stats()
    if self.affine: init.ones_(self.weight)
    if self.bias is not None: init.zeros_(self.bias)

  def forward(self, input: Tensor) -> Tensor:
    if input.ndim not in self.expected_dims:
      raise ValueError(f"expected {' or '.join(f'{d}D' for d in self.expected_dims)} input (got {input.ndim}D input)")
    if input.shape[1] != self.num_features:
      raise RuntimeError(f"running_mean should contain {input.shape[1]} elements not {self.num_features}")
    axes = (0,) + tuple(range(2, input.ndim))
    shape = (1, self.num_features) + (1,) * (input.ndim - 2)
    use_batch_stats = self.training or not self.track_running_stats
    if use_batch_stats:
      count = input.numel() // self.num_features
      if count <= 1: raise ValueError(f"Expected more than 1 value per channel when training, got input size {list(input.shape)}")
      mean = input.mean(axes, keepdim=True)
      centered = input - mean
      var = (centered * centered).mean(axes, keepdim=True)
      if self.training and self.track_running_stats: self._update_running_stats(mean, var, count)
      out = centered * (var + self.eps).rsqrt()
    else:
      out = (input - self.running_mean.reshape(shape)) * (self.running_var.reshape(shape) + self.eps).rsqrt()
    if self.weight is not None: out = out * self.weight.reshape(shape)
    if self.bias is not None: out = out + self.bias.reshape(shape)
    return out

  def _update_running_stats(self, mean: Tensor, var: Tensor, count: int) -> None:
    with no_grad():
      tracked = self.num_batches_tracked.assign(self.num_batches_tracked + 1)
      if self.momentum is None:   # a cumulative moving average: the factor is 1/num_batches_tracked
        factor = 1.0 / tracked.cast(self.running_mean.dtype)
      else: factor = self.momentum
      unbiased = var.detach().reshape(-1) * (count / (count - 1))
      self.running_mean.assign(self.running_mean * (1 - factor) + mean.detach().reshape(-1) * factor)
      self.running_var.assign(self.running_var * (1 - factor) + unbiased * factor)
    _pending_buffer_updates.extend([self.running_mean, self.running_var, self.num_batches_tracked])

  def extra_repr(self) -> str:
    return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, affine={self.affine}, "
            f"bias={self.bias is not None}, track_running_stats={self.track_running_stats}")


class BatchNorm1d(_BatchNorm):
  """Normalizes each channel over the batch (and length). Shape: (N, C) or (N, C, L)."""
  expected_dims = (2, 3)


class BatchNorm2d(_BatchNorm):
  """Normalizes each channel over the batch and the spatial dims. Shape: (N, C, H, W)."""
  expected_dims = (4,)


class LayerNorm(Module):
  """Normalizes over the last len(normalized_shape) dims. Args: normalized_shape, eps, elementwise_affine, bias."""
  autocast_policy = "float32"

  def __init__(self, normalized_shape, eps: float = 1e-5, elementwise_affine: bool = True, bias: bool = True, device=None, dtype=None):
    super().__init__()
    self.normalized_shape, self.eps, self.elementwise_affine = _shape_tuple(normalized_shape), eps, elementwise_affine
    if elementwise_affine:
      self.weight = Parameter(Tensor.ones(*self.normalized_shape, dtype=dtype, device=device))
      if bias: self.bias = Parameter(Tensor.zeros(*self.normalized_shape, dtype=dtype, device=device))
      else: self.register_parameter("bias", None)
    else:
      self.register_parameter("weight", None)
      self.register_parameter("bias", None)

  def forward(self, input: Tensor) -> Tensor:
    return input.layer_norm(self.normalized_shape, self.weight, self.bias, self.eps)

  def extra_repr(self) -> str:
    return f"{self.normalized_shape}, eps={self.eps}, elementwise_affine={self.elementwise_affine}, bias={self.bias is not None}"


class RMSNorm(Module):
  """x / sqrt(mean(x^2) + eps) * weight over the last dims. eps=None uses the dtype's machine epsilon (torch)."""
  autocast_policy = "float32"

  def __init__(self, normalized_shape, eps: float | None = None, elementwise_affine: bool = True, device=None, dtype=None):
    super().__init__()
    self.normalized_shape, self.eps, self.elementwise_affine = _shape_tuple(normalized_shape), eps, elementwise_affine
    if elementwise_affine: self.weight = Parameter(Tensor.ones(*self.normalized_shape, dtype=dtype, device=device))
    else: self.register_parameter("weight", None)

  def forward(self, input: Tensor) -> Tensor:
    if tuple(input.shape[-len(self.normalized_shape):]) != self.normalized_shape:
      raise RuntimeError(f"Given normalized_shape={list(self.normalized_shape)}, expected input with shape [*, {', '.join(map(str, self.normalized_shape))}], but got input of size{list(input.shape)}")
    return input.rms_norm(self.normalized_shape, self.weight, self.eps)

  def extra_repr(self) -> str:
    return f"{self.normalized_shape}, eps={self.eps}, elementwise_affine={self.elementwise_affine}"


class GroupNorm(Module):
  """Normalizes groups of channels per sample. Shape: (N, C, *)."""
  autocast_policy = "float32"

  def __init__(self, num_groups: int, num_channels: int, eps: float = 1e-5, affine: bool = True, device=None, dtype=None, *, bias: bool = True):
    super().__init__()
    if num_channels % num_groups: raise ValueError("num_channels must be divisible by num_groups")
    self.num_groups, self.num_channels, self.eps, self.affine = num_groups, num_channels, eps, affine
    if affine:
      self.weight = Parameter(Tensor.ones(num_channels, dtype=dtype, device=device))
      if bias: self.bias = Parameter(Tensor.zeros(num_channels, dtype=dtype, device=device))
      else: self.register_parameter("bias", None)
    else:
      self.register_parameter("weight", None)
      self.register_parameter("bias", None)

  def forward(self, input: Tensor) -> Tensor:
    return input.group_norm(self.num_groups, self.weight, self.bias, self.eps)

  def extra_repr(self) -> str: return f"{self.num_groups}, {self.num_channels}, eps={self.eps}, affine={self.affine}, bias={self.bias is not None}"
