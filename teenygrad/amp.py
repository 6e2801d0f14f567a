"""Mixed precision: `autocast` runs matmul-heavy layers in bfloat16 or float16 while the float32 parameters stay the
master copy, and `GradScaler` scales an fp16 loss so small gradients do not flush to zero (torch.amp's names).

    with autocast(dtype=teenygrad.float16):
      loss = loss_fn(model(x), y)
    scaler.scale(loss).backward()
    scaler.step(optimizer)      # unscales, skips the step if any gradient is inf or nan
    scaler.update()             # backs the scale off after an overflow, grows it after growth_interval clean steps

Under autocast, Linear, Conv and MultiheadAttention cast their float inputs and parameters to the low dtype on use
(the cast fuses into the kernels that read them); normalization layers, softmax modules and losses run in float32.
Gradients reach the float32 parameters in float32, so the optimizer updates the masters.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Any

import numpy as np

from teenygrad.dtype import dtypes, to_dtype
from teenygrad.nn.module import _AutocastState, realize_all
from teenygrad.tensor import Tensor, no_grad


@contextmanager
def autocast(device_type: str = "cpu", dtype=None, enabled: bool = True):
  """Run layers inside in lower precision (default bfloat16). Nests; `enabled=False` turns it off inside."""
  dtype = to_dtype(dtype) if dtype is not None else dtypes.bfloat16
  if dtype not in (dtypes.float16, dtypes.bfloat16): raise ValueError(f"autocast supports float16 and bfloat16, got {dtype.name}")
  previous = _AutocastState.dtype
  _AutocastState.dtype = dtype if enabled else None
  try: yield
  finally: _AutocastState.dtype = previous


def is_autocast_enabled() -> bool: return _AutocastState.dtype is not None


_READY, _UNSCALED, _STEPPED = "ready", "unscaled", "stepped"


class GradScaler:
  """Dynamic loss scaling for float16 training (torch.amp.GradScaler).

  The scale lives in a device buffer, so a changed scale never compiles new kernels. Checking for inf/nan needs one
  number back on the host per step (as torch's CPU scaler does)."""

  def __init__(self, device: str = "cpu", init_scale: float = 2.0 ** 16, growth_factor: float = 2.0, backoff_factor: float = 0.5,
               growth_interval: int = 2000, enabled: bool = True):
    if growth_factor <= 1.0: raise ValueError("The growth factor must be > 1.0.")
    if not 0.0 < backoff_factor < 1.0: raise ValueError("The backoff factor must be < 1.0.")
    if growth_interval <= 0: raise ValueError("growth_interval must be a positive integer")
    self._enabled = enabled
    self._scale_value, self._growth_factor, self._backoff_factor = float(init_scale), growth_factor, backoff_factor
    self._growth_interval, self._growth_tracker = growth_interval, 0
    self._scale_tensor: Tensor | None = None
    self._per_optimizer: dict[int, dict[str, Any]] = {}

  def is_enabled(self) -> bool: return self._enabled
  def get_scale(self) -> float: return self._scale_value if self._enabled else 1.0
  def get_growth_factor(self) -> float: return self._growth_factor
  def get_backoff_factor(self) -> float: return self._backoff_factor
  def get_growth_interval(self) -> int: return self._growth_interval

  def _scale_on(self, device: str) -> Tensor:
    if self._scale_tensor is None or self._scale_tensor.device != device:
      self._scale_tensor = Tensor(np.array(self._scale_value, dtype=np.float32), device=device)
    return self._scale_tensor

  def _set_scale(self, value: float) -> None:
    self._scale_value = float(value)
    if self._scale_tensor is not None: self._scale_tensor.lazydata.realized.copyin(np.array([value], dtype=np.float32))

  def scale(self, outputs):
    """outputs * scale (a tensor, or a list/tuple of them)."""
    if not self._enabled: return outputs
    if isinstance(outputs, Tensor): return outputs * self._scale_on(outputs.device).cast(outputs.dtype)
    if isinstance(outputs, (list, tuple)): return type(outputs)(self.scale(o) for o in outputs)
    raise ValueError("outputs must be a Tensor or an iterable of Tensors")

  def _state(self, optimizer) -> dict[str, Any]:
    return self._per_optimizer.setdefault(id(optimizer), {"stage": _READY, "found_inf": None})

  def unscale_(self, optimizer) -> None:
    """Divide the optimizer's gradients by the scale (in place) and record whether any is inf or nan."""
    if not self._enabled: return
    state = self._state(optimizer)
    if state["stage"] == _UNSCALED: raise RuntimeError("unscale_() has already been called on this optimizer since the last update().")
    if state["stage"] == _STEPPED: raise RuntimeError("unscale_() is being called after step().")
    params = [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
    with no_grad():
      bad = None
      for p in params:
        inverse = self._scale_on(p.grad.device).reciprocal()
        p.grad = (p.grad.float() * inverse).cast(p.grad.dtype)
        count = (p.grad.isnan() | p.grad.isinf()).sum()
        bad = count if bad is None else bad + count
      if bad is not None:
        flag = bad.contiguous()
        realize_all([p.grad for p in params] + [flag])
        state["found_inf"] = flag.item() > 0
      else: state["found_inf"] = False
    state["stage"] = _UNSCALED

  def step(self, optimizer, *args, **kwargs):
    """Unscale if not done yet, then run optimizer.step() unless a gradient was inf or nan (then skip it)."""
    if not self._enabled: return optimizer.step(*args, **kwargs)
    if kwargs.get("closure") is not None: raise RuntimeError("Closure use is not currently supported if GradScaler is enabled.")
    state = self._state(optimizer)
    if state["stage"] == _STEPPED: raise RuntimeError("step() has already been called since the last update().")
    if state["stage"] == _READY: self.unscale_(optimizer)
    result = None if state["found_inf"] else optimizer.step(*args, **kwargs)
    state["stage"] = _STEPPED
    return result

  def update(self, new_scale: float | Tensor | None = None) -> None:
    """Back the scale off after an overflow, or grow it after growth_interval steps without one."""
    if not self._enabled: return
    if new_scale is not None:
      self._set_scale(new_scale.item() if isinstance(new_scale, Tensor) else new_scale)
    else:
      found = [s["found_inf"] for s in self._per_optimizer.values() if s["found_inf"] is not None]
      if not found: raise AssertionError("No inf checks were recorded prior to update.")
      if any(found):
        self._set_scale(self._scale_value * self._backoff_factor)
        self._growth_tracker = 0
      else:
        self._growth_tracker += 1
        if self._growth_tracker == self._growth_interval:
          self._set_scale(self._scale_value * self._growth_factor)
          self._growth_tracker = 0
    self._per_optimizer.clear()

  def state_dict(self) -> dict[str, Any]:
    if not self._enabled: return {}
    return {"scale": self._scale_value, "growth_factor": self._growth_factor, "backoff_factor": self._backoff_factor,
            "growth_interval": self._growth_interval, "_growth_tracker": self._growth_tracker}

  def load_state_dict(self, state_dict: dict[str, Any]) -> None:
    if not self._enabled: return
    if not state_dict: raise RuntimeError("The source state dict is empty, possibly because it was saved from a disabled instance of GradScaler.")
    scale = state_dict["scale"]
    self._set_scale(scale.item() if hasattr(scale, "item") else scale)
    self._growth_factor, self._backoff_factor = state_dict["growth_factor"], state_dict["backoff_factor"]
    self._growth_interval = state_dict["growth_interval"]
    tracker = state_dict["_growth_tracker"]
    self._growth_tracker = int(tracker.item() if hasattr(tracker, "item") else tracker)
