"""Stochastic gradient descent with momentum, dampening, Nesterov momentum and weight decay (torch.optim.SGD)."""
from __future__ import annotations

from teenygrad.optim.optimizer import Optimizer, ParamGroup, _check
from teenygrad.tensor import Tensor


class SGD(Optimizer):
  """Per parameter, with g the gradient (negated when maximize):
    g += weight_decay * p
    buf = g on the first step, else momentum * buf + (1 - dampening) * g
    g = g + momentum * buf (nesterov) or buf
    p -= lr * g
  Kernels per step: one per parameter, plus one per momentum buffer."""

  def __init__(self, params, lr: float = 1e-3, momentum: float = 0, dampening: float = 0, weight_decay: float = 0, nesterov: bool = False,
               *, maximize: bool = False, foreach=None, differentiable: bool = False, fused=None):
    _check(lr >= 0.0, f"Invalid learning rate: {lr}")
    _check(momentum >= 0.0, f"Invalid momentum value: {momentum}")
    _check(weight_decay >= 0.0, f"Invalid weight_decay value: {weight_decay}")
    if nesterov and (momentum <= 0 or dampening != 0): raise ValueError("Nesterov momentum requires a momentum and zero dampening")
    if differentiable: raise NotImplementedError("differentiable=True is not supported")
    super().__init__(params, dict(lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay, nesterov=nesterov,
                                  maximize=maximize, foreach=foreach, differentiable=differentiable, fused=fused))

  def _update_group(self, group: ParamGroup, params: list[Tensor]) -> list[Tensor]:
    written: list[Tensor] = []
    weight_decay, dampening, nesterov = group["weight_decay"], group["dampening"], group["nesterov"]
    use_momentum = group["momentum"] != 0
    for p in params:
      lr = group.scalar("lr").cast(p.dtype)
      g = self._grad(p, group["maximize"])
      if weight_decay: g = g + p * weight_decay
      if use_momentum:
        momentum = group.scalar("momentum").cast(p.dtype)
        buf = self.state[p].get("momentum_buffer")
        if buf is None:
          buf = self.state[p]["momentum_buffer"] = self._zeros_like(p)
          buf.assign(g)
        else: buf.assign(buf * momentum + g * (1 - dampening))
        written.append(buf)
        g = g + buf * momentum if nesterov else buf
      p.assign(p - g * lr)
      written.append(p)
    return written
