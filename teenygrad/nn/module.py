"""`Module` and `Parameter`: torch.nn's registration, traversal and state_dict conventions.

Parameters are registered by assigning a `Parameter` as an attribute, submodules by assigning a `Module`, buffers
through `register_buffer`. Names are dotted paths (`layers.0.weight`), so a torch `state_dict` loads as is.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Any
from collections.abc import Callable, Iterator

import numpy as np

from teenygrad.dtype import dtypes, to_dtype
from teenygrad.tensor import Tensor, no_grad


class Parameter(Tensor):
  """A Tensor that a Module registers as a learnable parameter (torch.nn.Parameter).

  Its data is always a realized buffer of its own, so an optimizer can write into it in place."""

  def __init__(self, data: Tensor | None = None, requires_grad: bool = True):
    if data is None: data = Tensor.zeros(0)
    if not isinstance(data, Tensor): data = Tensor(data)
    super().__init__(data.detach().contiguous().realize().lazydata)
    if requires_grad: self.requires_grad_(True)

  def __repr__(self) -> str: return "Parameter containing:\n" + super().__repr__()


def to_tensor(value: Any, dtype=None, device: str | None = None) -> Tensor:
  """A teenygrad Tensor from a Tensor, a numpy array, or a torch tensor (through numpy; bfloat16 through its bits)."""
  if isinstance(value, Tensor): out = value.detach()
  elif type(value).__module__.startswith("torch"):
    t = value.detach().cpu()
    if str(t.dtype) == "torch.bfloat16":
      bits = t.view(__import__("torch").int16).numpy().view(np.uint16)
      out = Tensor(bits.astype(np.uint32) << 16).bitcast(dtypes.float32).cast(dtypes.bfloat16)
    else: out = Tensor(t.numpy())
  else: out = Tensor(np.asarray(value))
  if dtype is not None: out = out.cast(to_dtype(dtype))
  if device is not None: out = out.to(device)
  return out


def realize_all(tensors: list[Tensor]) -> None:
  """Realize several tensors in one scheduling call, so work they share is computed once."""
  from teenygrad.engine.realize import realize
  realize([target for t in tensors if (target := t._realize_target()) is not None])


# buffers written in place during a forward pass (BatchNorm running statistics): the optimizer realizes them with the
# gradients, before any weight changes, because their lazy graphs read the forward's inputs
_pending_buffer_updates: list[Tensor] = []


def pending_buffer_updates() -> list[Tensor]:
  """Take the list of buffers updated lazily since the last call."""
  out = list(_pending_buffer_updates)
  _pending_buffer_updates.clear()
  return out


class _AutocastState:
  """Set by `teenygrad.amp.autocast`: the lower-precision compute dtype, or None when autocast is off."""
  dtype = None


def _cast_floats(value: Any, dtype) -> Any:
  if isinstance(value, Tensor): return value.cast(dtype) if value.dtype.is_float and value.dtype != dtype else value
  if isinstance(value, (tuple, list)): return type(value)(_cast_floats(v, dtype) for v in value)
  return value


class Module:
  """Base class of every layer: holds parameters, buffers and submodules by attribute name (torch.nn.Module).

  `autocast_policy` says what a layer does under `teenygrad.amp.autocast`: "lower" runs it in the autocast dtype
  (its float inputs and parameters are cast on use, so the fp32 parameters stay the master copy and receive fp32
  gradients), "float32" runs it in float32 (normalization, softmax, losses), None leaves its inputs as they come."""
  autocast_policy: str | None = None

  def __init__(self) -> None:
    object.__setattr__(self, "training", True)
    object.__setattr__(self, "_parameters", OrderedDict())
    object.__setattr__(self, "_buffers", OrderedDict())
    object.__setattr__(self, "_non_persistent", set())
    object.__setattr__(self, "_modules", OrderedDict())

  # ---- registration ----
  def __setattr__(self, name: str, value: Any) -> None:
    if "_parameters" not in self.__dict__:
      raise AttributeError(f"cannot assign {name!r} before Module.__init__() call")
    d = self.__dict__
    if value is None and (name in d["_parameters"] or name in d["_buffers"] or name in d["_modules"]):
      for store in ("_parameters", "_buffers", "_modules"):
        if name in d[store]: d[store][name] = None
      return
    if isinstance(value, Tensor) and name in d["_buffers"] and not isinstance(value, Parameter):
      d["_buffers"][name] = value; return
    for store in ("_parameters", "_buffers", "_modules"): d[store].pop(name, None)
    if isinstance(value, Parameter): d["_parameters"][name] = value
    elif isinstance(value, Module): d["_modules"][name] = value
    else:
      object.__setattr__(self, name, value); return
    d.pop(name, None)

  def __getattr__(self, name: str) -> Any:
    d = self.__dict__
    if "_parameters" in d and name in d["_parameters"]:
      p = d["_parameters"][name]
      if d.get("_autocast_depth") and p is not None and p.dtype.is_float and _AutocastState.dtype is not None:
        return p.cast(_AutocastState.dtype)
      return p
    for store in ("_buffers", "_modules"):
      if store in d and name in d[store]: return d[store][name]
    raise AttributeError(f"'{type(self).__name__}' object has no attribute '{name}'")

  def __delattr__(self, name: str) -> None:
    for store in ("_parameters", "_buffers", "_modules"):
      if name in self.__dict__[store]:
        del self.__dict__[store][name]; return
    object.__delattr__(self, name)

  def register_parameter(self, name: str, param: Parameter | None) -> None:
    _check_name(self, name)
    if param is not None and not isinstance(param, Parameter):
      raise TypeError(f"cannot assign '{type(param).__name__}' object to parameter '{name}' (Parameter or None required)")
    self.__dict__.pop(name, None)
    self._parameters[name] = param

  def register_buffer(self, name: str, tensor: Tensor | None, persistent: bool = True) -> None:
    _check_name(self, name)
    if tensor is not None and not isinstance(tensor, Tensor):
      raise TypeError(f"cannot assign '{type(tensor).__name__}' object to buffer '{name}' (Tensor or None required)")
    self.__dict__.pop(name, None)
    self._buffers[name] = tensor.contiguous().realize() if tensor is not None else None
    if not persistent: self._non_persistent.add(name)
    else: self._non_persistent.discard(name)

  def add_module(self, name: str, module: Module | None) -> None:
    if module is not None and not isinstance(module, Module): raise TypeError(f"{type(module).__name__} is not a Module subclass")
    _check_name(self, name)
    self._modules[name] = module

  register_module = add_module

  # ---- traversal ----
  def named_modules(self, memo: set | None = None, prefix: str = "", remove_duplicate: bool = True) -> Iterator[tuple[str, Module]]:
    memo = set() if memo is None else memo
    if remove_duplicate:
      if id(self) in memo: return
      memo.add(id(self))
    yield prefix, self
    for name, module in self._modules.items():
      if module is None: continue
      yield from module.named_modules(memo, f"{prefix}.{name}" if prefix else name, remove_duplicate)

  def modules(self) -> Iterator[Module]:
    for _, m in self.named_modules(): yield m

  def named_children(self) -> Iterator[tuple[str, Module]]:
    seen = set()
    for name, m in self._modules.items():
      if m is not None and id(m) not in seen:
        seen.add(id(m)); yield name, m

  def children(self) -> Iterator[Module]:
    for _, m in self.named_children(): yield m

  def _named_members(self, store: str, prefix: str, recurse: bool, remove_duplicate: bool = True):
    seen: set[int] = set()
    modules = self.named_modules(prefix=prefix, remove_duplicate=remove_duplicate) if recurse else [(prefix, self)]
    for mod_prefix, module in modules:
      for name, value in module.__dict__[store].items():
        if value is None or (remove_duplicate and id(value) in seen): continue
        seen.add(id(value))
        yield (f"{mod_prefix}.{name}" if mod_prefix else name), value

  def named_parameters(self, prefix: str = "", recurse: bool = True, remove_duplicate: bool = True) -> Iterator[tuple[str, Parameter]]:
    yield from self._named_members("_parameters", prefix, recurse, remove_duplicate)

  def parameters(self, recurse: bool = True) -> Iterator[Parameter]:
    for _, p in self.named_parameters(recurse=recurse): yield p

  def named_buffers(self, prefix: str = "", recurse: bool = True, remove_duplicate: bool = True) -> Iterator[tuple[str, Tensor]]:
    yield from self._named_members("_buffers", prefix, recurse, remove_duplicate)

  def buffers(self, recurse: bool = True) -> Iterator[Tensor]:
    for _, b in self.named_buffers(recurse=recurse): yield b

  def get_submodule(self, target: str) -> Module:
    module = self
    for part in target.split(".") if target else []:
      if part not in module._modules: raise AttributeError(f"{type(module).__name__} has no attribute `{part}`")
      module = module._modules[part]
    return module

  # ---- state ----
  def state_dict(self, destination: dict | None = None, prefix: str = "", keep_vars: bool = False) -> dict[str, Tensor]:
    """Parameters and persistent buffers by dotted name, in registration order (torch's layout)."""
    out = OrderedDict() if destination is None else destination
    for name, p in self._parameters.items():
      if p is not None: out[prefix + name] = p if keep_vars else p.detach()
    for name, b in self._buffers.items():
      if b is not None and name not in self._non_persistent: out[prefix + name] = b if keep_vars else b.detach()
    for name, m in self._modules.items():
      if m is not None: m.state_dict(out, prefix + name + ".", keep_vars)
    return out

  def load_state_dict(self, state_dict: dict, strict: bool = True, assign: bool = False):
    """Copy values into the existing parameters and buffers (their buffers stay the same objects).

    Accepts teenygrad Tensors, numpy arrays or torch tensors. Returns (missing_keys, unexpected_keys) as torch does;
    with strict=True, missing or unexpected keys raise. A shape mismatch always raises, before anything is written."""
    own = self.state_dict(keep_vars=True)
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    errors = []
    if strict:
      if unexpected: errors.append("Unexpected key(s) in state_dict: " + ", ".join(f'"{k}"' for k in unexpected) + ". ")
      if missing: errors.append("Missing key(s) in state_dict: " + ", ".join(f'"{k}"' for k in missing) + ". ")
    values = {}
    for key, target in own.items():
      if key not in state_dict: continue
      value = state_dict[key]
      shape = tuple(value.shape) if hasattr(value, "shape") else np.shape(value)
      if tuple(shape) != tuple(target.shape):
        errors.append(f"size mismatch for {key}: copying a param with shape {list(shape)} from checkpoint, "
                      f"the shape in current model is {list(target.shape)}.")
        continue
      values[key] = value
    if errors:
      raise RuntimeError(f"Error(s) in loading state_dict for {type(self).__name__}:\n\t" + "\n\t".join(errors))
    with no_grad():
      for key, value in values.items(): _copy_into(own[key], to_tensor(value))
    return _IncompatibleKeys(missing, unexpected)

  # ---- modes, devices, dtypes ----
  def train(self, mode: bool = True) -> Module:
    if not isinstance(mode, bool): raise ValueError("training mode is expected to be boolean")
    for m in self.modules(): object.__setattr__(m, "training", mode)
    return self

  def eval(self) -> Module: return self.train(False)

  def requires_grad_(self, requires_grad: bool = True) -> Module:
    for p in self.parameters(): p.requires_grad_(requires_grad)
    return self

  def zero_grad(self, set_to_none: bool = True) -> None:
    for p in self.parameters():
      if p.grad is None: continue
      p.grad = None if set_to_none else Tensor.zeros(*p.shape, dtype=p.grad.dtype, device=p.grad.device)

  def apply(self, fn: Callable[[Module], None]) -> Module:
    for m in self.children(): m.apply(fn)
    fn(self)
    return self

  def to(self, *args, **kwargs) -> Module:
    """to(device), to(dtype), to(device, dtype): floating parameters and buffers change dtype; all move device.
    Parameters keep their identity (an optimizer built before still holds them)."""
    device, dtype = kwargs.get("device"), kwargs.get("dtype")
    for a in args:
      if isinstance(a, str) and not hasattr(dtypes, a): device = a
      elif a is not None: dtype = to_dtype(a)
    if dtype is not None and not dtype.is_float: raise TypeError(f"nn.Module.to only accepts floating point dtypes, but got desired dtype={dtype.name}")
    def convert(t: Tensor) -> Tensor:
      return t.to(device=device, dtype=dtype if t.dtype.is_float else None)
    return self._apply_to_tensors(convert)

  def _apply_to_tensors(self, fn: Callable[[Tensor], Tensor]) -> Module:
    with no_grad():
      for m in self.modules():
        for name, p in m._parameters.items():
          if p is None: continue
          new = fn(p)
          if new.dtype != p.dtype or new.device != p.device:
            p.lazydata = new.contiguous().realize().lazydata
            if p.grad is not None: p.grad = fn(p.grad)
        for name, b in m._buffers.items():
          if b is not None: m._buffers[name] = fn(b).contiguous().realize()
    return self

  def float(self) -> Module: return self.to(dtypes.float32)
  def half(self) -> Module: return self.to(dtypes.float16)
  def bfloat16(self) -> Module: return self.to(dtypes.bfloat16)
  def double(self) -> Module: return self.to(dtypes.float64)
  def cpu(self) -> Module: return self.to("CPU")

  # ---- calling ----
  def forward(self, *args, **kwargs):
    raise NotImplementedError(f'Module [{type(self).__name__}] is missing the required "forward" function')

  def __call__(self, *args, **kwargs):
    policy, low = self.autocast_policy, _AutocastState.dtype
    if low is None or policy is None: return self.forward(*args, **kwargs)
    dtype = low if policy == "lower" else dtypes.float32
    args, kwargs = _cast_floats(args, dtype), {k: _cast_floats(v, dtype) for k, v in kwargs.items()}
    if policy != "lower": return self.forward(*args, **kwargs)
    d = self.__dict__
    d["_autocast_depth"] = d.get("_autocast_depth", 0) + 1
    try: return self.forward(*args, **kwargs)
    finally: d["_autocast_depth"] -= 1

  # ---- printing ----
  def extra_repr(self) -> str: return ""

  def __repr__(self) -> str:
    lines = [line for line in self.extra_repr().split("\n") if line]
    for name, m in self._modules.items():
      body = repr(m).replace("\n", "\n  ")
      lines.append(f"({name}): {body}")
    head = type(self).__name__ + "("
    if not lines: return head + ")"
    if len(lines) == 1 and not self._modules: return head + lines[0] + ")"
    return head + "\n  " + "\n  ".join(lines) + "\n)"

  def __dir__(self):
    return sorted(set(super().__dir__()) | set(self._parameters) | set(self._buffers) | set(self._modules))


class _IncompatibleKeys(tuple):
  """(missing_keys, unexpected_keys), with names, as torch returns from load_state_dict."""
  def __new__(cls, missing, unexpected): return super().__new__(cls, (missing, unexpected))
  @property
  def missing_keys(self) -> list[str]: return self[0]
  @property
  def unexpected_keys(self) -> list[str]: return self[1]
  def __repr__(self) -> str:
    if not self[0] and not self[1]: return "<All keys matched successfully>"
    return f"_IncompatibleKeys(missing_keys={self[0]}, unexpected_keys={self[1]})"


def _check_name(module: Module, name: str) -> None:
  if not isinstance(name, str): raise TypeError(f"name should be a string. Got {type(name).__name__}")
  if "." in name: raise KeyError(f'name can\'t contain ".", got: {name}')
  if name == "": raise KeyError('name can\'t be empty string ""')
  if hasattr(type(module), name): raise KeyError(f"attribute '{name}' already exists")


def _copy_into(target: Tensor, value: Tensor) -> None:
  """Write value into target's own buffer when it has one (no kernel: a host copy), else rebind it."""
  value = value.cast(target.dtype).to(target.device)
  lb = target.lazydata
  if not lb.is_view and lb.realized is not None:
    host = value.bitcast(dtypes.int16) if target.dtype == dtypes.bfloat16 else value
    lb.realized.copyin(np.ascontiguousarray(host.numpy().reshape(-1)))
  else:
    target.lazydata = value.contiguous().realize().lazydata
