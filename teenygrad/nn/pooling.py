"""Pooling modules over the Tensor methods (torch.nn names)."""
from __future__ import annotations

from teenygrad.nn.module import Module
from teenygrad.tensor import Tensor


class MaxPool2d(Module):
  def __init__(self, kernel_size, stride=None, padding=0, dilation=1, return_indices: bool = False, ceil_mode: bool = False):
    super().__init__()
    if return_indices: raise NotImplementedError("MaxPool2d(return_indices=True) is not supported")
    self.kernel_size, self.stride, self.padding, self.dilation, self.ceil_mode = kernel_size, stride if stride is not None else kernel_size, padding, dilation, ceil_mode
  def forward(self, input: Tensor) -> Tensor: return input.max_pool2d(self.kernel_size, self.stride, self.padding, self.dilation, self.ceil_mode)
  def extra_repr(self) -> str:
    return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}, dilation={self.dilation}, ceil_mode={self.ceil_mode}"


class AvgPool2d(Module):
  def __init__(self, kernel_size, stride=None, padding=0, ceil_mode: bool = False, count_include_pad: bool = True, divisor_override=None):
    super().__init__()
    self.kernel_size, self.stride, self.padding = kernel_size, stride if stride is not None else kernel_size, padding
    self.ceil_mode, self.count_include_pad, self.divisor_override = ceil_mode, count_include_pad, divisor_override
  def forward(self, input: Tensor) -> Tensor:
    return input.avg_pool2d(self.kernel_size, self.stride, self.padding, self.ceil_mode, self.count_include_pad, self.divisor_override)
  def extra_repr(self) -> str: return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


class AdaptiveAvgPool2d(Module):
  def __init__(self, output_size):
    super().__init__()
    self.output_size = output_size
  def forward(self, input: Tensor) -> Tensor: return input.adaptive_avg_pool2d(self.output_size)
  def extra_repr(self) -> str: return f"output_size={self.output_size}"
