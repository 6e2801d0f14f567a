"""Learning-rate schedulers with torch.optim.lr_scheduler's names, formulas and stepping conventions.

A scheduler writes group['lr'] (and, for OneCycleLR, the momentum or beta1); the optimizer's parameter group copies
the value into the device buffer its kernels read, so a new learning rate never compiles a new kernel."""
from __future__ import annotations

import math
from bisect import bisect_right
from collections import Counter
from typing import Any
from collections.abc import Callable

from teenygrad.optim.optimizer import Optimizer


class LRScheduler:
  """Base class: `step()` advances last_epoch and sets each group's lr from `get_lr()`."""

  def __init__(self, optimizer: Optimizer, last_epoch: int = -1):
    if not isinstance(optimizer, Optimizer): raise TypeError(f"{type(optimizer).__name__} is not an Optimizer")
    self.optimizer = optimizer
    if last_epoch == -1:
      for group in optimizer.param_groups: group.setdefault("initial_lr", group["lr"])
    else:
      for i, group in enumerate(optimizer.param_groups):
        if "initial_lr" not in group: raise KeyError(f"param 'initial_lr' is not specified in param_groups[{i}] when resuming an optimizer")
    self.base_lrs = [group["initial_lr"] for group in optimizer.param_groups]
    self.last_epoch = last_epoch
    self._initial_step()

  def _initial_step(self) -> None:
    self._step_count = 0
    self._is_initial = True
    try: self.step()
    finally: self._is_initial = False

  def get_lr(self) -> list[float]: raise NotImplementedError

  def get_last_lr(self) -> list[float]: return list(self._last_lr)

  def step(self, epoch: int | None = None) -> None:
    self._step_count += 1
    self._update_lr(epoch)

  def _update_lr(self, epoch: int | None = None) -> None:
    if epoch is None:
      self.last_epoch += 1
      values = self.get_lr()
    else:
      self.last_epoch = epoch
      values = self._get_closed_form_lr() if hasattr(self, "_get_closed_form_lr") else self.get_lr()
    for group, lr in zip(self.optimizer.param_groups, values): group["lr"] = lr
    self._last_lr = [group["lr"] for group in self.optimizer.param_groups]

  def _group_lrs(self) -> list[float]: return [group["lr"] for group in self.optimizer.param_groups]

  def state_dict(self) -> dict[str, Any]:
    return {k: v for k, v in self.__dict__.items() if k not in ("optimizer", "lr_lambdas")}

  def load_state_dict(self, state_dict: dict[str, Any]) -> None: self.__dict__.update(state_dict)


class LambdaLR(LRScheduler):
  """lr = base_lr * lr_lambda(epoch)."""
  def __init__(self, optimizer: Optimizer, lr_lambda: Callable[[int], float] | list, last_epoch: int = -1):
    n = len(optimizer.param_groups)
    self.lr_lambdas = list(lr_lambda) if isinstance(lr_lambda, (list, tuple)) else [lr_lambda] * n
    if len(self.lr_lambdas) != n: raise ValueError(f"Expected {n} lr_lambdas, but got {len(self.lr_lambdas)}")
    super().__init__(optimizer, last_epoch)

  def get_lr(self) -> list[float]: return [base * f(self.last_epoch) for f, base in zip(self.lr_lambdas, self.base_lrs)]


class StepLR(LRScheduler):
  """Multiplies the lr by gamma every step_size epochs."""
  def __init__(self, optimizer: Optimizer, step_size: int, gamma: float = 0.1, last_epoch: int = -1):
    self.step_size, self.gamma = step_size, gamma
    super().__init__(optimizer, last_epoch)

  def get_lr(self) -> list[float]:
    if self.last_epoch == 0 or self.last_epoch % self.step_size != 0: return self._group_lrs()
    return [lr * self.gamma for lr in self._group_lrs()]

  def _get_closed_form_lr(self) -> list[float]:
    return [base * self.gamma ** (self.last_epoch // self.step_size) for base in self.base_lrs]


class MultiStepLR(LRScheduler):
  """Multiplies the lr by gamma at each milestone epoch."""
  def __init__(self, optimizer: Optimizer, milestones, gamma: float = 0.1, last_epoch: int = -1):
    self.milestones, self.gamma = Counter(milestones), gamma
    super().__init__(optimizer, last_epoch)

  def get_lr(self) -> list[float]:
    if self.last_epoch not in self.milestones: return self._group_lrs()
    return [lr * self.gamma ** self.milestones[self.last_epoch] for lr in self._group_lrs()]

  def _get_closed_form_lr(self) -> list[float]:
    passed = bisect_right(sorted(self.milestones.elements()), self.last_epoch)
    return [base * self.gamma ** passed for base in self.base_lrs]


class ExponentialLR(LRScheduler):
  """Multiplies the lr by gamma every epoch."""
  def __init__(self, optimizer: Optimizer, gamma: float, last_epoch: int = -1):
    self.gamma = gamma
    super().__init__(optimizer, last_epoch)

  def get_lr(self) -> list[float]:
    if self._is_initial: return self._group_lrs()
    return [lr * self.gamma for lr in self._group_lrs()]

  def _get_closed_form_lr(self) -> list[float]: return [base * self.gamma ** self.last_epoch for base in self.base_lrs]


class LinearLR(LRScheduler):
  """Scales the lr by a factor going linearly from start_factor to end_factor over total_iters epochs."""
  def __init__(self, optimizer: Optimizer, start_factor: float = 1.0 / 3, end_factor: float = 1.0, total_iters: int = 5, last_epoch: int = -1):
    if not 0 < start_factor <= 1: raise ValueError("Starting multiplicative factor expected to be greater than 0 and less or equal to 1.")
    if not 0 <= end_factor <= 1: raise ValueError("Ending multiplicative factor expected to be between 0 and 1.")
    self.start_factor, self.end_factor, self.total_iters = start_factor, end_factor, total_iters
    super().__init__(optimizer, last_epoch)

  def get_lr(self) -> list[float]:
    if self.last_epoch == 0: return [lr * self.start_factor for lr in self._group_lrs()]
    if self._is_initial or self.last_epoch > self.total_iters: return self._group_lrs()
    delta = self.end_factor - self.start_factor
    return [lr * (1.0 + delta / (self.total_iters * self.start_factor + (self.last_epoch - 1) * delta)) for lr in self._group_lrs()]

  def _get_closed_form_lr(self) -> list[float]:
    frac = min(self.total_iters, self.last_epoch) / self.total_iters
    return [base * (self.start_factor + (self.end_factor - self.start_factor) * frac) for base in self.base_lrs]


class CosineAnnealingLR(LRScheduler):
  """lr follows eta_min + (base_lr - eta_min)(1 + cos(pi epoch / T_max)) / 2 (Loshchilov & Hutter, SGDR), computed
  step to step as torch does (so an lr changed by hand is annealed from)."""
  def __init__(self, optimizer: Optimizer, T_max: int, eta_min: float = 0.0, last_epoch: int = -1):
    self.T_max, self.eta_min = T_max, eta_min
    super().__init__(optimizer, last_epoch)

  def get_lr(self) -> list[float]:
    if self._is_initial: return self._group_lrs()
    if self._step_count == 1 and self.last_epoch > 0: return self._get_closed_form_lr()
    if (self.last_epoch - 1 - self.T_max) % (2 * self.T_max) == 0:
      return [lr + (base - self.eta_min) * (1 - math.cos(math.pi / self.T_max)) / 2 for lr, base in zip(self._group_lrs(), self.base_lrs)]
    ratio = (1 + math.cos(math.pi * self.last_epoch / self.T_max)) / (1 + math.cos(math.pi * (self.last_epoch - 1) / self.T_max))
    return [ratio * (lr - self.eta_min) + self.eta_min for lr in self._group_lrs()]

  def _get_closed_form_lr(self) -> list[float]:
    return [self.eta_min + (base - self.eta_min) * (1 + math.cos(math.pi * self.last_epoch / self.T_max)) / 2 for base in self.base_lrs]


class OneCycleLR(LRScheduler):
  """The 1cycle policy (Smith & Topin 2018): lr rises from max_lr/div_factor to max_lr over pct_start of the steps,
  then anneals to initial_lr/final_div_factor; momentum (or beta1) cycles the other way."""

  def __init__(self, optimizer: Optimizer, max_lr, total_steps: int | None = None, epochs: int | None = None, steps_per_epoch: int | None = None,
               pct_start: float = 0.3, anneal_strategy: str = "cos", cycle_momentum: bool = True, base_momentum=0.85, max_momentum=0.95,
               div_factor: float = 25.0, final_div_factor: float = 1e4, three_phase: bool = False, last_epoch: int = -1):
    if not isinstance(optimizer, Optimizer): raise TypeError(f"{type(optimizer).__name__} is not an Optimizer")
    if total_steps is not None:
      if not isinstance(total_steps, int) or total_steps <= 0: raise ValueError(f"Expected positive integer total_steps, but got {total_steps}")
      self.total_steps = total_steps
    elif epochs is not None and steps_per_epoch is not None:
      if not isinstance(epochs, int) or epochs <= 0: raise ValueError(f"Expected positive integer epochs, but got {epochs}")
      if not isinstance(steps_per_epoch, int) or steps_per_epoch <= 0: raise ValueError(f"Expected positive integer steps_per_epoch, but got {steps_per_epoch}")
      self.total_steps = epochs * steps_per_epoch
    else: raise ValueError("You must define either total_steps OR (epochs AND steps_per_epoch)")
    if not isinstance(pct_start, float) or not 0 <= pct_start <= 1: raise ValueError(f"Expected float between 0 and 1 pct_start, but got {pct_start}")
    if anneal_strategy not in ("cos", "linear"): raise ValueError(f"anneal_strategy must be one of 'cos' or 'linear', instead got {anneal_strategy}")
    self.anneal_strategy = anneal_strategy
    n = self.total_steps
    if three_phase:
      self._phases = [(float(pct_start * n) - 1, "initial_lr", "max_lr", "max_momentum", "base_momentum"),
                      (float(2 * pct_start * n) - 2, "max_lr", "initial_lr", "base_momentum", "max_momentum"),
                      (n - 1, "initial_lr", "min_lr", "max_momentum", "max_momentum")]
    else:
      self._phases = [(float(pct_start * n) - 1, "initial_lr", "max_lr", "max_momentum", "base_momentum"),
                      (n - 1, "max_lr", "min_lr", "base_momentum", "max_momentum")]
    groups = optimizer.param_groups
    max_lrs = _per_group("max_lr", groups, max_lr)
    if last_epoch == -1:
      for group, top in zip(groups, max_lrs):
        group["initial_lr"] = top / div_factor
        group["max_lr"] = top
        group["min_lr"] = group["initial_lr"] / final_div_factor
    self.cycle_momentum = cycle_momentum
    if cycle_momentum:
      if "momentum" not in optimizer.defaults and "betas" not in optimizer.defaults:
        raise ValueError("optimizer must support momentum or beta1 with `cycle_momentum` option enabled")
      self.use_beta1 = "betas" in optimizer.defaults
      if last_epoch == -1:
        for group, high, low in zip(groups, _per_group("max_momentum", groups, max_momentum), _per_group("base_momentum", groups, base_momentum)):
          if self.use_beta1: group["betas"] = (high, *group["betas"][1:])
          else: group["momentum"] = high
          group["max_momentum"], group["base_momentum"] = high, low
    super().__init__(optimizer, last_epoch)

  def _anneal(self, start: float, end: float, pct: float) -> float:
    if self.anneal_strategy == "cos": return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1)
    return (end - start) * pct + start

  def get_lr(self) -> list[float]:
    step = self.last_epoch
    if step > self.total_steps: raise ValueError(f"Tried to step {step} times. The specified number of total steps is {self.total_steps}")
    lrs = []
    for group in self.optimizer.param_groups:
      start = 0.0
      for i, (end, lr_from, lr_to, mom_from, mom_to) in enumerate(self._phases):
        if step <= end or i == len(self._phases) - 1:
          pct = (step - start) / (end - start)
          lr = self._anneal(group[lr_from], group[lr_to], pct)
          momentum = self._anneal(group[mom_from], group[mom_to], pct) if self.cycle_momentum else None
          break
        start = end
      lrs.append(lr)
      if self.cycle_momentum:
        if self.use_beta1: group["betas"] = (momentum, *group["betas"][1:])
        else: group["momentum"] = momentum
    return lrs


class SequentialLR(LRScheduler):
  """Runs schedulers one after another, switching at the milestones."""

  def __init__(self, optimizer: Optimizer, schedulers: list[LRScheduler], milestones: list[int], last_epoch: int = -1):
    if not schedulers: raise ValueError("SequentialLR expects at least one scheduler, but got no scheduler.")
    for i, s in enumerate(schedulers):
      if getattr(s, "optimizer", None) is not optimizer:
        raise ValueError(f"SequentialLR expects all schedulers to belong to the same optimizer, but got scheduler at index {i} with a different one")
    if len(milestones) != len(schedulers) - 1:
      raise ValueError("Sequential Schedulers expects number of schedulers provided to be one more than the number of milestone points, "
                       f"but got number of schedulers {len(schedulers)} and the number of milestones to be equal to {len(milestones)}")
    self._schedulers, self._milestones = schedulers, list(milestones)
    self.last_epoch = last_epoch + 1
    self.optimizer = optimizer
    for group in optimizer.param_groups: group["lr"] = group["initial_lr"]
    for s in schedulers: s.last_epoch -= 1   # undo the step each scheduler took when it was built
    first = schedulers[bisect_right(self._milestones, 0)]
    first._initial_step()
    self._last_lr = first.get_last_lr()

  def step(self) -> None:  # type: ignore[override]
    self.last_epoch += 1
    idx = bisect_right(self._milestones, self.last_epoch)
    scheduler = self._schedulers[idx]
    if idx > 0 and self._milestones[idx - 1] == self.last_epoch: scheduler._update_lr(0)
    else: scheduler.step()
    self._last_lr = scheduler.get_last_lr()

  def state_dict(self) -> dict[str, Any]:
    out = {k: v for k, v in self.__dict__.items() if k not in ("optimizer", "_schedulers")}
    out["_schedulers"] = [s.state_dict() for s in self._schedulers]
    return out

  def load_state_dict(self, state_dict: dict[str, Any]) -> None:
    state_dict = dict(state_dict)
    inner = state_dict.pop("_schedulers")
    self.__dict__.update(state_dict)
    for s, sd in zip(self._schedulers, inner): s.load_state_dict(sd)


def _per_group(name: str, groups: list, value) -> list:
  if isinstance(value, (list, tuple)):
    if len(value) != len(groups): raise ValueError(f"expected {len(groups)} values for {name}, got {len(value)}")
    return list(value)
  return [value] * len(groups)
