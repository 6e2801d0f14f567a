"""Convolutions: Conv1d, Conv2d, ConvTranspose2d with torch's weight layouts and initialization."""
from __future__ import annotations

import math

from teenygrad.nn import init
from teenygrad.nn.module import Module, Parameter
from teenygrad.tensor import Tensor


def _tuple(x, n: int) -> tuple:
  return tuple(x) if isinstance(x, (tuple, list)) else (x,) * n


class _ConvNd(Module):
  autocast_policy = "lower"
  dims = 2
  transposed = False

  def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0, dilation=1, groups: int = 1,
               bias: bool = True, padding_mode: str = "zeros", output_padding=0, device=None, dtype=None):
    super().__init__()
    n = self.dims
    if groups <= 0: raise ValueError("groups must be a positive integer")
    if in_channels % groups: raise ValueError("in_channels must be divisible by groups")
    if out_channels % groups: raise ValueError("out_channels must be divisible by groups")
    if padding_mode != "zeros": raise NotImplementedError(f"padding_mode={padding_mode!r} is not supported (only 'zeros')")
    if isinstance(padding, str):
      if padding not in ("same", "valid"): raise ValueError(f"Invalid padding string {padding!r}, should be one of ['valid', 'same']")
      if padding == "same" and any(s != 1 for s in _tuple(stride, n)): raise ValueError("padding='same' is not supported for strided convolutions")
    self.in_channels, self.out_channels, self.groups = in_channels, out_channels, groups
    self.kernel_size, self.stride, self.dilation = _tuple(kernel_size, n), _tuple(stride, n), _tuple(dilation, n)
    self.padding = padding if isinstance(padding, str) else _tuple(padding, n)
    self.output_padding, self.padding_mode = _tuple(output_padding, n), padding_mode
    shape = (in_channels, out_channels // groups) if self.transposed else (out_channels, in_channels // groups)
    self.weight = Parameter(Tensor.empty(*shape, *self.kernel_size, dtype=dtype, device=device))
    if bias: self.bias = Parameter(Tensor.empty(out_channels, dtype=dtype, device=device))
    else: self.register_parameter("bias", None)
    self.reset_parameters()

  def reset_parameters(self) -> None:
    init.kaiming_uniform_(self.weight, a=math.sqrt(5))
    if self.bias is not None:
      fan_in, _ = init._calculate_fan_in_and_fan_out(self.weight)
      bound = init.default_bound(fan_in)
      init.uniform_(self.bias, -bound, bound)

  def extra_repr(self) -> str:
    s = f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}"
    if self.padding != (0,) * self.dims: s += f", padding={self.padding!r}" if isinstance(self.padding, str) else f", padding={self.padding}"
    if self.dilation != (1,) * self.dims: s += f", dilation={self.dilation}"
    if self.transposed and self.output_padding != (0,) * self.dims: s += f", output_padding={self.output_padding}"
    if self.groups != 1: s += f", groups={self.groups}"
    if self.bias is None: s += ", bias=False"
    return s

  def _check_input(self, input: Tensor) -> None:
    if input.ndim != self.dims + 2:
      raise RuntimeError(f"Expected {self.dims + 2}D (batched) input to {type(self).__name__}, but got input of size: {list(input.shape)}")


class Conv1d(_ConvNd):
  """Args: in_channels, out_channels, kernel_size, stride, padding (int or 'same'/'valid'), dilation, groups, bias.
  Shape: input (N, C_in, L), output (N, C_out, L_out); weight (C_out, C_in/groups, k)."""
  dims = 1

  def forward(self, input: Tensor) -> Tensor:
    self._check_input(input)
    return input.conv1d(self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)


class Conv2d(_ConvNd):
  """Args: in_channels, out_channels, kernel_size, stride, padding (int, pair or 'same'/'valid'), dilation, groups, bias.
  Shape: input (N, C_in, H, W), output (N, C_out, H_out, W_out); weight (C_out, C_in/groups, kh, kw)."""
  dims = 2

  def forward(self, input: Tensor) -> Tensor:
    self._check_input(input)
    return input.conv2d(self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)


class ConvTranspose2d(_ConvNd):
  """The gradient of Conv2d with respect to its input, as a layer.
  Shape: input (N, C_in, H, W); weight (C_in, C_out/groups, kh, kw) as in torch."""
  dims = 2
  transposed = True

  def __init__(self, in_channels: int, out_channels: int, kernel_size, stride=1, padding=0, output_padding=0, groups: int = 1,
               bias: bool = True, dilation=1, padding_mode: str = "zeros", device=None, dtype=None):
    if isinstance(padding, str): raise ValueError("ConvTranspose2d does not support string padding")
    super().__init__(in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias, padding_mode, output_padding, device, dtype)
    if any(op >= max(s, d) for op, s, d in zip(self.output_padding, self.stride, self.dilation)):
      raise ValueError("output padding must be smaller than either stride or dilation")

  def forward(self, input: Tensor) -> Tensor:
    self._check_input(input)
    return input.conv_transpose2d(self.weight, self.bias, self.stride, self.padding, self.output_padding, self.groups, self.dilation)
