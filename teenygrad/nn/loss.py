"""Loss modules over the functional losses (torch.nn names, arguments and reductions)."""
from __future__ import annotations

from teenygrad.nn.module import Module
from teenygrad.tensor import Tensor

REDUCTIONS = ("mean", "sum", "none")


class _Loss(Module):
  autocast_policy = "float32"
  def __init__(self, reduction: str = "mean"):
    super().__init__()
    if reduction not in REDUCTIONS: raise ValueError(f"{reduction} is not a valid value for reduction")
    self.reduction = reduction

  def _reduce(self, loss: Tensor) -> Tensor:
    if self.reduction == "mean": return loss.mean()
    if self.reduction == "sum": return loss.sum()
    return loss


class _WeightedLoss(_Loss):
  def __init__(self, weight: Tensor | None = None, reduction: str = "mean"):
    super().__init__(reduction)
    self.register_buffer("weight", weight)


class MSELoss(_Loss):
  def forward(self, input: Tensor, target: Tensor) -> Tensor: return input.mse_loss(target, self.reduction)


class L1Loss(_Loss):
  def forward(self, input: Tensor, target: Tensor) -> Tensor: return input.l1_loss(target, self.reduction)


class SmoothL1Loss(_Loss):
  def __init__(self, reduction: str = "mean", beta: float = 1.0):
    super().__init__(reduction)
    if beta < 0: raise ValueError("smooth_l1_loss does not support negative values for beta.")
    self.beta = beta
  def forward(self, input: Tensor, target: Tensor) -> Tensor: return input.smooth_l1_loss(target, self.reduction, self.beta)


class HuberLoss(_Loss):
  """0.5 d^2 where |d| < delta, delta (|d| - delta/2) elsewhere."""
  def __init__(self, reduction: str = "mean", delta: float = 1.0):
    super().__init__(reduction)
    if delta <= 0: raise ValueError("huber_loss does not support non-positive values for delta.")
    self.delta = delta
  def forward(self, input: Tensor, target: Tensor) -> Tensor:
    diff = (input - target).abs()
    return self._reduce((diff < self.delta)._where(0.5 * diff * diff, self.delta * (diff - 0.5 * self.delta)))


class CrossEntropyLoss(_WeightedLoss):
  """log_softmax over dim 1 then NLL; targets are class indices (with ignore_index) or class probabilities."""
  def __init__(self, weight: Tensor | None = None, ignore_index: int = -100, reduction: str = "mean", label_smoothing: float = 0.0):
    super().__init__(weight, reduction)
    if not 0.0 <= label_smoothing <= 1.0: raise ValueError(f"label_smoothing must be between 0.0 and 1.0. Got: {label_smoothing}")
    self.ignore_index, self.label_smoothing = ignore_index, label_smoothing
  def forward(self, input: Tensor, target: Tensor) -> Tensor:
    return input.cross_entropy(target, self.weight, self.ignore_index, self.reduction, self.label_smoothing)


class NLLLoss(_WeightedLoss):
  def __init__(self, weight: Tensor | None = None, ignore_index: int = -100, reduction: str = "mean"):
    super().__init__(weight, reduction)
    self.ignore_index = ignore_index
  def forward(self, input: Tensor, target: Tensor) -> Tensor: return input.nll_loss(target, self.weight, self.ignore_index, self.reduction)


class BCELoss(_WeightedLoss):
  def forward(self, input: Tensor, target: Tensor) -> Tensor: return input.binary_cross_entropy(target, self.weight, self.reduction)


class BCEWithLogitsLoss(_Loss):
  def __init__(self, weight: Tensor | None = None, reduction: str = "mean", pos_weight: Tensor | None = None):
    super().__init__(reduction)
    self.register_buffer("weight", weight)
    self.register_buffer("pos_weight", pos_weight)
  def forward(self, input: Tensor, target: Tensor) -> Tensor:
    return input.binary_cross_entropy_with_logits(target, self.weight, self.reduction, self.pos_weight)


class KLDivLoss(_Loss):
  """input holds log-probabilities; target holds probabilities (or log-probabilities with log_target=True)."""
  def __init__(self, reduction: str = "mean", log_target: bool = False):
    if reduction not in REDUCTIONS + ("batchmean",): raise ValueError(f"{reduction} is not a valid value for reduction")
    super().__init__("mean" if reduction == "batchmean" else reduction)
    self.reduction, self.log_target = reduction, log_target
  def forward(self, input: Tensor, target: Tensor) -> Tensor:
    if self.log_target: loss = target.exp() * (target - input)
    else: loss = (target > 0)._where(target * (target.clamp(min=1e-45).log() - input), 0.0)
    if self.reduction == "batchmean": return loss.sum() / input.shape[0]
    return self._reduce(loss)
