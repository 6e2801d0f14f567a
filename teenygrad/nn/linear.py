"""Linear layers, embeddings, dropout and shape helpers (torch.nn names, parameter names and initialization)."""
from __future__ import annotations

import math

from teenygrad.nn import init
from teenygrad.nn.module import Module, Parameter
from teenygrad.tensor import Tensor


class Identity(Module):
  """Returns its input unchanged (any constructor arguments are ignored, as in torch)."""
  def __init__(self, *args, **kwargs): super().__init__()
  def forward(self, input: Tensor) -> Tensor: return input


class Linear(Module):
  """y = x W^T + b.

  Args: in_features, out_features, bias (default True).
  Shape: input (*, in_features), output (*, out_features). weight is (out_features, in_features)."""
  autocast_policy = "lower"

  def __init__(self, in_features: int, out_features: int, bias: bool = True, device=None, dtype=None):
    super().__init__()
    self.in_features, self.out_features = in_features, out_features
    self.weight = Parameter(Tensor.empty(out_features, in_features, dtype=dtype, device=device))
    if bias: self.bias = Parameter(Tensor.empty(out_features, dtype=dtype, device=device))
    else: self.register_parameter("bias", None)
    self.reset_parameters()

  def reset_parameters(self) -> None:
    # torch: kaiming_uniform(a=sqrt(5)) gives a bound of 1/sqrt(fan_in), the bias uses the same bound
    init.kaiming_uniform_(self.weight, a=math.sqrt(5))
    if self.bias is not None:
      bound = init.default_bound(self.in_features)
      init.uniform_(self.bias, -bound, bound)

  def forward(self, input: Tensor) -> Tensor:
    if input.shape[-1] != self.in_features:
      raise RuntimeError(f"mat1 and mat2 shapes cannot be multiplied ({math.prod(input.shape[:-1])}x{input.shape[-1]} and {self.in_features}x{self.out_features})")
    return input.linear(self.weight, self.bias)

  def extra_repr(self) -> str:
    return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


class Embedding(Module):
  """A lookup table: row i of weight for index i.

  Args: num_embeddings, embedding_dim, padding_idx (that row starts at zero and gets no gradient).
  Shape: input (*) integer, output (*, embedding_dim)."""

  def __init__(self, num_embeddings: int, embedding_dim: int, padding_idx: int | None = None, _weight: Tensor | None = None,
               _freeze: bool = False, device=None, dtype=None):
    super().__init__()
    self.num_embeddings, self.embedding_dim = num_embeddings, embedding_dim
    if padding_idx is not None:
      if not -num_embeddings <= padding_idx < num_embeddings: raise AssertionError("Padding_idx must be within num_embeddings")
      padding_idx %= num_embeddings
    self.padding_idx = padding_idx
    if _weight is None:
      self.weight = Parameter(Tensor.empty(num_embeddings, embedding_dim, dtype=dtype, device=device), requires_grad=not _freeze)
      self.reset_parameters()
    else:
      if tuple(_weight.shape) != (num_embeddings, embedding_dim): raise AssertionError("Shape of weight does not match num_embeddings and embedding_dim")
      self.weight = Parameter(_weight, requires_grad=not _freeze)

  def reset_parameters(self) -> None:
    init.normal_(self.weight)
    if self.padding_idx is not None:
      values = self.weight.numpy().copy()
      values[self.padding_idx] = 0
      init._write(self.weight, values)

  @classmethod
  def from_pretrained(cls, embeddings: Tensor, freeze: bool = True, padding_idx: int | None = None) -> Embedding:
    rows, cols = embeddings.shape
    return cls(rows, cols, padding_idx=padding_idx, _weight=embeddings, _freeze=freeze)

  def forward(self, input: Tensor) -> Tensor:
    if input.dtype.is_float: raise RuntimeError("Expected tensor for argument #1 'indices' to have one of the following scalar types: Long, Int; but got a float tensor instead")
    weight = self.weight
    if self.padding_idx is not None and weight.requires_grad:
      # the padding row reads a detached copy, so it gets no gradient (torch's rule)
      row = Tensor.arange(self.num_embeddings, device=weight.device).reshape(-1, 1) == self.padding_idx
      weight = row._where(weight.detach(), weight)
    return input.embedding(weight)

  def extra_repr(self) -> str:
    pad = f", padding_idx={self.padding_idx}" if self.padding_idx is not None else ""
    return f"{self.num_embeddings}, {self.embedding_dim}{pad}"


class Dropout(Module):
  """Zeroes each element with probability p during training and scales the rest by 1/(1-p)."""
  def __init__(self, p: float = 0.5, inplace: bool = False):
    super().__init__()
    if not 0 <= p <= 1: raise ValueError(f"dropout probability has to be between 0 and 1, but got {p}")
    self.p, self.inplace = p, inplace
  def forward(self, input: Tensor) -> Tensor: return input.dropout(self.p, self.training)
  def extra_repr(self) -> str: return f"p={self.p}, inplace={self.inplace}"


class Flatten(Module):
  def __init__(self, start_dim: int = 1, end_dim: int = -1):
    super().__init__()
    self.start_dim, self.end_dim = start_dim, end_dim
  def forward(self, input: Tensor) -> Tensor: return input.flatten(self.start_dim, self.end_dim)
  def extra_repr(self) -> str: return f"start_dim={self.start_dim}, end_dim={self.end_dim}"


class Unflatten(Module):
  def __init__(self, dim: int, unflattened_size):
    super().__init__()
    self.dim, self.unflattened_size = dim, tuple(unflattened_size)
  def forward(self, input: Tensor) -> Tensor: return input.unflatten(self.dim, self.unflattened_size)
  def extra_repr(self) -> str: return f"dim={self.dim}, unflattened_size={self.unflattened_size}"
