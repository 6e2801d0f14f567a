"""Adam and AdamW (Kingma & Ba 2015; Loshchilov & Hutter 2019), with amsgrad, as torch.optim computes them."""
from __future__ import annotations

from teenygrad.optim.optimizer import Optimizer, ParamGroup, _check
from teenygrad.tensor import Tensor


class Adam(Optimizer):
  """Per parameter, at step t, with g the gradient (negated when maximize):
    g += weight_decay * p                      (Adam; AdamW instead multiplies p by 1 - lr * weight_decay)
    m = lerp(m, g, 1 - beta1);  v = beta2 * v + (1 - beta2) * g^2;  vmax = max(vmax, v) with amsgrad
    p -= lr / (1 - beta1^t) * m / (sqrt(v or vmax) / sqrt(1 - beta2^t) + eps)
  Kernels per step: three per parameter (m, v, p; four with amsgrad) and one per group (the step count)."""

  decoupled_default = False

  def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8, weight_decay: float = 0,
               amsgrad: bool = False, *, maximize: bool = False, foreach=None, capturable: bool = False, differentiable: bool = False,
               fused=None, decoupled_weight_decay: bool | None = None):
    _check(lr >= 0.0, f"Invalid learning rate: {lr}")
    _check(eps >= 0.0, f"Invalid epsilon value: {eps}")
    _check(0.0 <= betas[0] < 1.0, f"Invalid beta parameter at index 0: {betas[0]}")
    _check(0.0 <= betas[1] < 1.0, f"Invalid beta parameter at index 1: {betas[1]}")
    _check(weight_decay >= 0.0, f"Invalid weight_decay value: {weight_decay}")
    if differentiable: raise NotImplementedError("differentiable=True is not supported")
    decoupled = self.decoupled_default if decoupled_weight_decay is None else decoupled_weight_decay
    super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay, amsgrad=amsgrad, maximize=maximize,
                                  foreach=foreach, capturable=capturable, differentiable=differentiable, fused=fused,
                                  decoupled_weight_decay=decoupled))

  def _update_group(self, group: ParamGroup, params: list[Tensor]) -> list[Tensor]:
    written: list[Tensor] = []
    step = self._step_counter(group, written)
    eps, weight_decay, amsgrad, decoupled = group["eps"], group["weight_decay"], group["amsgrad"], group["decoupled_weight_decay"]
    lr, beta1, beta2 = group.scalar("lr"), group.scalar("betas", 0), group.scalar("betas", 1)
    # scalar math in float64, as torch does it in Python: beta^t = 2^(t log2 beta)
    bias_correction1 = 1 - (step * beta1.log2()).exp2()
    bias_correction2_sqrt = (1 - (step * beta2.log2()).exp2()).sqrt()
    step_size = lr / bias_correction1
    for p in params:
      dtype = p.dtype
      g = self._grad(p, group["maximize"])
      if weight_decay and not decoupled: g = g + p * weight_decay
      state = self.state[p]
      if "exp_avg" not in state:
        state["exp_avg"], state["exp_avg_sq"] = self._zeros_like(p), self._zeros_like(p)
        if amsgrad: state["max_exp_avg_sq"] = self._zeros_like(p)
      m, v = state["exp_avg"], state["exp_avg_sq"]
      m.assign(m + (g - m) * (1 - beta1).cast(dtype))
      v.assign(v * beta2.cast(dtype) + g * g * (1 - beta2).cast(dtype))
      written += [m, v]
      second = v
      if amsgrad:
        vmax = state["max_exp_avg_sq"]
        vmax.assign(vmax.maximum(v))
        written.append(vmax)
        second = vmax
      denom = second.sqrt() / bias_correction2_sqrt.cast(dtype) + eps
      base = p * (1 - lr * weight_decay).cast(dtype) if weight_decay and decoupled else p
      p.assign(base + (m / denom) * (-step_size).cast(dtype))
      written.append(p)
    return written


class AdamW(Adam):
  """Adam with decoupled weight decay (default weight_decay=0.01): p *= 1 - lr * weight_decay before the Adam step."""
  decoupled_default = True

  def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8, weight_decay: float = 1e-2,
               amsgrad: bool = False, *, maximize: bool = False, foreach=None, capturable: bool = False, differentiable: bool = False,
               fused=None):
    super().__init__(params, lr, betas, eps, weight_decay, amsgrad, maximize=maximize, foreach=foreach, capturable=capturable,
                     differentiable=differentiable, fused=fused, decoupled_weight_decay=True)
