"""The Optimizer base: parameter groups, per-parameter state, torch-compatible state_dict, and a step that realizes
every tensor it updates in one scheduling call.

How a step runs (and why):
1. The gradients (and buffers a forward pass updated lazily, such as BatchNorm's running statistics) are realized
   first, in one call: their kernels read the current weights, which the update is about to overwrite in place.
2. Each subclass builds, per parameter, in-place assigns into the state buffers and then into the parameter. The
   parameter's assign reads the state through the state's assign, so the kernels run in the right order and each
   parameter's whole update is one kernel (plus one per state buffer).
3. All those assigns are realized in one call.
Hyperparameters that schedulers change every step (lr, momentum, betas) and the step count live in small device
buffers read by the kernels, not as constants compiled into them: changing them costs a host write, never a compile.
Scalar arithmetic on them (bias corrections) is done in float64 inside the kernel, as torch does it in Python.
"""
from __future__ import annotations

from collections import defaultdict
from typing import Any
from collections.abc import Callable, Iterable

import numpy as np

from teenygrad.device import Device
from teenygrad.dtype import dtypes
from teenygrad.nn.module import _copy_into, pending_buffer_updates, realize_all, to_tensor
from teenygrad.tensor import Tensor, enable_grad, no_grad


class _RequiredParameter:
  def __repr__(self) -> str: return "<required parameter>"


required = _RequiredParameter()


def _scalar_dtype(device: str):
  return dtypes.float64 if Device[device].supports(dtypes.float64) else dtypes.float32


class ParamGroup(dict):
  """A parameter group: a plain dict to the user. Hyperparameters that kernels read from the device are written
  to their device buffers whenever the dict entry changes (a scheduler setting group['lr'])."""

  def __init__(self, values: dict):
    super().__init__(values)
    self.device_scalars: dict[tuple[str, int | None], Tensor] = {}

  def __setitem__(self, key: str, value: Any) -> None:
    if isinstance(value, Tensor) and key != "params": value = value.item()
    super().__setitem__(key, value)
    for (name, index), scalar in self.device_scalars.items():
      if name == key: _write_scalar(scalar, value if index is None else value[index])

  def update(self, *args, **kwargs) -> None:
    for key, value in dict(*args, **kwargs).items(): self[key] = value

  def setdefault(self, key: str, default: Any = None) -> Any:
    if key not in self: self[key] = default
    return self[key]

  def scalar(self, key: str, index: int | None = None) -> Tensor:
    """The device buffer holding group[key] (or group[key][index]), made on first use."""
    found = self.device_scalars.get((key, index))
    if found is None:
      device = self["params"][0].device
      value = self[key] if index is None else self[key][index]
      found = self.device_scalars[(key, index)] = Tensor(np.array(float(value)), dtype=_scalar_dtype(device), device=device)
    return found


def _write_scalar(scalar: Tensor, value: float) -> None:
  scalar.lazydata.realized.copyin(np.array([float(value)], dtype=scalar.dtype.np))


class Optimizer:
  """Base class (torch.optim.Optimizer). Subclasses set `defaults` through __init__ and implement `_update_group`."""

  def __init__(self, params: Iterable, defaults: dict[str, Any]):
    self.defaults = defaults
    self.state: defaultdict[Tensor, dict[str, Any]] = defaultdict(dict)
    self.param_groups: list[ParamGroup] = []
    self._group_steps: dict[int, Tensor] = {}   # id(group) -> the device step counter
    if isinstance(params, Tensor): raise TypeError("params argument given to the optimizer should be an iterable of Tensors or dicts, but got a Tensor")
    groups = list(params)
    if not groups: raise ValueError("optimizer got an empty parameter list")
    if not isinstance(groups[0], dict): groups = [{"params": groups}]
    for group in groups: self.add_param_group(group)

  def add_param_group(self, param_group: dict) -> None:
    if not isinstance(param_group, dict): raise TypeError(f"param_group must be a dict, but got {type(param_group).__name__}")
    params = param_group["params"]
    params = [params] if isinstance(params, Tensor) else list(params)
    for p in params:
      if not isinstance(p, Tensor): raise TypeError(f"optimizer can only optimize Tensors, but one of the params is {type(p).__name__}")
      if not p.is_leaf: raise ValueError("can't optimize a non-leaf Tensor")
      if p.lazydata.is_view or p.lazydata.realized is None: p.lazydata = p.detach().contiguous().realize().lazydata
    group = ParamGroup({**{k: v for k, v in param_group.items() if k != "params"}, "params": params})
    for name, default in self.defaults.items():
      if default is required and name not in group: raise ValueError(f"parameter group didn't specify a value of required optimization parameter {name}")
      if name not in group: dict.__setitem__(group, name, default)
    existing = {id(p) for g in self.param_groups for p in g["params"]}
    if any(id(p) in existing for p in params): raise ValueError("some parameters appear in more than one parameter group")
    if len({id(p) for p in params}) != len(params): raise ValueError("optimizer contains a parameter group with duplicate parameters")
    self.param_groups.append(group)
    self._init_group_state(group)

  def _init_group_state(self, group: ParamGroup) -> None:
    """Subclasses that make state eagerly (Adagrad's sum) do it here."""

  # ---- stepping ----
  def zero_grad(self, set_to_none: bool = True) -> None:
    for group in self.param_groups:
      for p in group["params"]:
        if p.grad is None: continue
        p.grad = None if set_to_none else Tensor.zeros(*p.shape, dtype=p.grad.dtype, device=p.device)

  def step(self, closure: Callable[[], Any] | None = None):
    loss = None
    if closure is not None:
      with enable_grad(): loss = closure()
    with no_grad():
      active = [(group, [p for p in group["params"] if p.grad is not None]) for group in self.param_groups]
      grads = [p.grad for _, params in active for p in params]
      realize_all(grads + pending_buffer_updates())
      written: list[Tensor] = []
      for group, params in active:
        if params: written += self._update_group(group, params)
      realize_all(written)
    return loss

  def _update_group(self, group: ParamGroup, params: list[Tensor]) -> list[Tensor]:
    """Queue in-place assigns for one group's update; return every tensor assigned."""
    raise NotImplementedError

  # ---- helpers for subclasses ----
  def _step_counter(self, group: ParamGroup, written: list[Tensor]) -> Tensor:
    """The group's step count after this step, on the device (the increment is one tiny kernel per group)."""
    step = self._group_steps.get(id(group))
    if step is None:
      device = group["params"][0].device
      step = self._group_steps[id(group)] = Tensor(np.array(0.0), dtype=_scalar_dtype(device), device=device)
    step.assign(step + 1)
    written.append(step)
    for p in group["params"]: self.state[p]["step"] = step
    return step

  @staticmethod
  def _zeros_like(p: Tensor, fill: float = 0.0) -> Tensor:
    """A realized buffer for optimizer state, filled from the host (no kernel)."""
    return Tensor(np.full(p.shape, fill, dtype=np.float32), dtype=p.dtype, device=p.device)

  @staticmethod
  def _grad(p: Tensor, maximize: bool) -> Tensor:
    g = p.grad.detach()
    if g.dtype != p.dtype: g = g.cast(p.dtype)
    return -g if maximize else g

  # ---- state ----
  def state_dict(self) -> dict[str, Any]:
    """{'state': {index: {name: Tensor or number}}, 'param_groups': [{hyperparameters..., 'params': [indices]}]} as torch."""
    index: dict[int, int] = {}
    groups = []
    for group in self.param_groups:
      for p in group["params"]: index.setdefault(id(p), len(index))
      packed = {k: v for k, v in group.items() if k != "params"}
      packed["params"] = [index[id(p)] for p in group["params"]]
      groups.append(packed)
    state = {}
    for group in self.param_groups:
      for p in group["params"]:
        if p not in self.state or not self.state[p]: continue
        entry = {}
        for key, value in self.state[p].items():
          if key == "step": entry[key] = Tensor(np.array(value.item(), dtype=np.float32))
          elif isinstance(value, Tensor): entry[key] = Tensor(value.numpy() if value.dtype != dtypes.bfloat16 else value.float().numpy(), dtype=value.dtype)
          else: entry[key] = value
        state[index[id(p)]] = entry
    return {"state": state, "param_groups": groups}

  def load_state_dict(self, state_dict: dict[str, Any]) -> None:
    """Load a state_dict from this class or torch's (tensors may be torch tensors or numpy arrays)."""
    groups = state_dict.get("param_groups")
    if groups is None or "state" not in state_dict: raise ValueError("optimizer state_dict needs 'state' and 'param_groups' entries")
    if len(groups) != len(self.param_groups): raise ValueError("loaded state dict has a different number of parameter groups")
    for saved, group in zip(groups, self.param_groups):
      if len(saved["params"]) != len(group["params"]):
        raise ValueError("loaded state dict contains a parameter group that doesn't match the size of optimizer's group")
    by_index = {}
    for saved, group in zip(groups, self.param_groups):
      for i, p in zip(saved["params"], group["params"]): by_index[i] = (p, group)
    new_state: defaultdict[Tensor, dict[str, Any]] = defaultdict(dict)
    steps: dict[int, float] = {}
    for i, entry in state_dict["state"].items():
      i = int(i)
      if i not in by_index: raise ValueError(f"state for parameter index {i} has no matching parameter")
      p, group = by_index[i]
      for key, value in entry.items():
        if key == "step":
          steps[id(group)] = float(value.item() if hasattr(value, "item") else value)
        elif hasattr(value, "shape") and not isinstance(value, (int, float)):
          t = to_tensor(value)
          if tuple(t.shape) != tuple(p.shape) and key != "step":
            raise ValueError(f"state {key!r} of parameter {i} has shape {tuple(t.shape)}, the parameter has {tuple(p.shape)}")
          new_state[p][key] = t.cast(p.dtype).to(p.device).contiguous().realize()
        else: new_state[p][key] = value
    self.state = new_state
    for saved, group in zip(groups, self.param_groups):
      for key, value in saved.items():
        if key != "params": group[key] = tuple(value) if isinstance(value, list) and key == "betas" else value
      if id(group) in steps:
        device = group["params"][0].device
        step = self._group_steps[id(group)] = Tensor(np.array(steps[id(group)]), dtype=_scalar_dtype(device), device=device)
        for p in group["params"]: new_state[p]["step"] = step

  def __repr__(self) -> str:
    lines = [f"{type(self).__name__} ("]
    for i, group in enumerate(self.param_groups):
      lines.append(f"Parameter Group {i}")
      for key in sorted(k for k in group if k != "params"): lines.append(f"    {key}: {group[key]}")
    return "\n".join(lines) + "\n)"


def _check(cond: bool, message: str) -> None:
  if not cond: raise ValueError(message)


__all__ = ["Optimizer", "ParamGroup", "required", "_check", "_copy_into"]
