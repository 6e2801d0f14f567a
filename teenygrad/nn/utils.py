"""Gradient clipping and parameter flattening (torch.nn.utils names)."""
from __future__ import annotations

import math
from collections.abc import Iterable

from teenygrad.tensor import Tensor, no_grad


def _with_grads(parameters) -> list[Tensor]:
  if isinstance(parameters, Tensor): parameters = [parameters]
  return [p for p in parameters if p.grad is not None]


def clip_grad_norm_(parameters: Iterable[Tensor] | Tensor, max_norm: float, norm_type: float = 2.0, error_if_nonfinite: bool = False,
                    foreach=None) -> Tensor:
  """Scale all gradients together so their joint norm is at most max_norm; returns the norm before clipping.

  The norm and the scaled gradients are realized in one scheduling call, and the clip factor stays on the device
  (no host round trip), as torch does: factor = min(1, max_norm / (norm + 1e-6))."""
  from teenygrad.nn.module import realize_all
  params = _with_grads(parameters)
  max_norm, norm_type = float(max_norm), float(norm_type)
  if not params: return Tensor(0.0)
  with no_grad():
    grads = [p.grad for p in params]
    if norm_type == math.inf:
      total = grads[0].abs().max()
      for g in grads[1:]: total = total.maximum(g.abs().max())
    else:
      total = None
      for g in grads:
        part = (g.float().abs() ** norm_type).sum() if norm_type != 2.0 else (g.float() * g.float()).sum()
        total = part if total is None else total + part
      total = total ** (1.0 / norm_type)
    total = total.contiguous()
    realize_all([total])
    if error_if_nonfinite and not math.isfinite(total.item()):
      raise RuntimeError(f"The total norm of order {norm_type} for gradients from `parameters` is non-finite, so it cannot be clipped. "
                         "To disable this error and scale the gradients by the non-finite norm anyway, set `error_if_nonfinite=False`")
    factor = (max_norm / (total + 1e-6)).clamp(max=1.0)
    for p in params: p.grad = (p.grad * factor.cast(p.grad.dtype)).contiguous()
    realize_all([p.grad for p in params])
  return total


def clip_grad_value_(parameters: Iterable[Tensor] | Tensor, clip_value: float, foreach=None) -> None:
  from teenygrad.nn.module import realize_all
  params = _with_grads(parameters)
  with no_grad():
    for p in params: p.grad = p.grad.clamp(-clip_value, clip_value).contiguous()
    realize_all([p.grad for p in params])


def parameters_to_vector(parameters: Iterable[Tensor]) -> Tensor:
  from teenygrad import cat
  return cat([p.reshape(-1) for p in parameters])


def vector_to_parameters(vec: Tensor, parameters: Iterable[Tensor]) -> None:
  from teenygrad.nn.module import _copy_into
  offset = 0
  with no_grad():
    for p in parameters:
      n = p.numel()
      _copy_into(p, vec[offset:offset + n].reshape(p.shape))
      offset += n
