"""Adagrad (Duchi et al. 2011), as torch.optim.Adagrad computes it."""
from __future__ import annotations

from teenygrad.optim.optimizer import Optimizer, ParamGroup, _check
from teenygrad.tensor import Tensor


class Adagrad(Optimizer):
  """Per parameter at step t: sum += g^2; p -= lr / (1 + (t - 1) lr_decay) * g / (sqrt(sum) + eps)."""

  def __init__(self, params, lr: float = 1e-2, lr_decay: float = 0, weight_decay: float = 0, initial_accumulator_value: float = 0,
               eps: float = 1e-10, foreach=None, *, maximize: bool = False, differentiable: bool = False, fused=None):
    _check(lr >= 0.0, f"Invalid learning rate: {lr}")
    _check(lr_decay >= 0.0, f"Invalid lr_decay value: {lr_decay}")
    _check(weight_decay >= 0.0, f"Invalid weight_decay value: {weight_decay}")
    _check(initial_accumulator_value >= 0.0, f"Invalid initial_accumulator_value value: {initial_accumulator_value}")
    _check(eps >= 0.0, f"Invalid epsilon value: {eps}")
    if differentiable: raise NotImplementedError("differentiable=True is not supported")
    super().__init__(params, dict(lr=lr, lr_decay=lr_decay, eps=eps, weight_decay=weight_decay,
                                  initial_accumulator_value=initial_accumulator_value, foreach=foreach, maximize=maximize,
                                  differentiable=differentiable, fused=fused))

  def _init_group_state(self, group: ParamGroup) -> None:
    # torch makes the accumulator at construction
    for p in group["params"]: self.state[p]["sum"] = self._zeros_like(p, group["initial_accumulator_value"])

  def _update_group(self, group: ParamGroup, params: list[Tensor]) -> list[Tensor]:
    written: list[Tensor] = []
    step = self._step_counter(group, written)
    clr = group.scalar("lr") / (1 + (step - 1) * group["lr_decay"])
    for p in params:
      g = self._grad(p, group["maximize"])
      if group["weight_decay"]: g = g + p * group["weight_decay"]
      total = self.state[p]["sum"]
      total.assign(total + g * g)
      written.append(total)
      p.assign(p + (g / (total.sqrt() + group["eps"])) * (-clr).cast(p.dtype))
      written.append(p)
    return written
