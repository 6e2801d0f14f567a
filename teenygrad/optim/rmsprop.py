"""RMSprop (Hinton's lecture 6e; centered per Graves 2013), as torch.optim.RMSprop computes it."""
from __future__ import annotations

from teenygrad.optim.optimizer import Optimizer, ParamGroup, _check
from teenygrad.tensor import Tensor


class RMSprop(Optimizer):
  """Per parameter: s = alpha s + (1 - alpha) g^2; avg = sqrt(s - mean(g)^2 if centered else s) + eps;
  with momentum: buf = momentum buf + g / avg, p -= lr buf; else p -= lr g / avg."""

  def __init__(self, params, lr: float = 1e-2, alpha: float = 0.99, eps: float = 1e-8, weight_decay: float = 0, momentum: float = 0,
               centered: bool = False, capturable: bool = False, foreach=None, maximize: bool = False, differentiable: bool = False):
    _check(lr >= 0.0, f"Invalid learning rate: {lr}")
    _check(eps >= 0.0, f"Invalid epsilon value: {eps}")
    _check(momentum >= 0.0, f"Invalid momentum value: {momentum}")
    _check(weight_decay >= 0.0, f"Invalid weight_decay value: {weight_decay}")
    _check(alpha >= 0.0, f"Invalid alpha value: {alpha}")
    if differentiable: raise NotImplementedError("differentiable=True is not supported")
    super().__init__(params, dict(lr=lr, momentum=momentum, alpha=alpha, eps=eps, centered=centered, weight_decay=weight_decay,
                                  capturable=capturable, foreach=foreach, maximize=maximize, differentiable=differentiable))

  def _update_group(self, group: ParamGroup, params: list[Tensor]) -> list[Tensor]:
    written: list[Tensor] = []
    self._step_counter(group, written)
    alpha, eps, weight_decay, centered = group["alpha"], group["eps"], group["weight_decay"], group["centered"]
    use_momentum = group["momentum"] > 0
    for p in params:
      lr = group.scalar("lr").cast(p.dtype)
      g = self._grad(p, group["maximize"])
      if weight_decay: g = g + p * weight_decay
      state = self.state[p]
      if "square_avg" not in state:
        state["square_avg"] = self._zeros_like(p)
        if use_momentum: state["momentum_buffer"] = self._zeros_like(p)
        if centered: state["grad_avg"] = self._zeros_like(p)
      square_avg = state["square_avg"]
      square_avg.assign(square_avg * alpha + g * g * (1 - alpha))
      written.append(square_avg)
      if centered:
        grad_avg = state["grad_avg"]
        grad_avg.assign(grad_avg + (g - grad_avg) * (1 - alpha))
        written.append(grad_avg)
        avg = (square_avg - grad_avg * grad_avg).sqrt() + eps
      else: avg = square_avg.sqrt() + eps
      if use_momentum:
        buf = state["momentum_buffer"]
        buf.assign(buf * group.scalar("momentum").cast(p.dtype) + g / avg)
        written.append(buf)
        p.assign(p - buf * lr)
      else: p.assign(p + (g / avg) * -lr)
      written.append(p)
    return written
