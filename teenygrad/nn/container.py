"""Containers: Sequential, ModuleList, ModuleDict (submodules named by position or key, as torch names them)."""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Iterator

from teenygrad.nn.module import Module


class Sequential(Module):
  """Calls its modules in order. Sequential(a, b) names them '0', '1'; Sequential(OrderedDict) keeps the keys."""

  def __init__(self, *args):
    super().__init__()
    if len(args) == 1 and isinstance(args[0], OrderedDict):
      for name, m in args[0].items(): self.add_module(name, m)
    else:
      for i, m in enumerate(args): self.add_module(str(i), m)

  def forward(self, input):
    for m in self._modules.values(): input = m(input)
    return input

  def __len__(self) -> int: return len(self._modules)
  def __iter__(self) -> Iterator[Module]: return iter(self._modules.values())

  def __getitem__(self, idx):
    if isinstance(idx, slice): return Sequential(OrderedDict(list(self._modules.items())[idx]))
    return list(self._modules.values())[_index(idx, len(self))]

  def __setitem__(self, idx: int, module: Module) -> None:
    key = list(self._modules)[_index(idx, len(self))]
    self.add_module(key, module)

  def __delitem__(self, idx) -> None:
    keys = list(self._modules)
    for key in (keys[idx] if isinstance(idx, slice) else [keys[_index(idx, len(self))]]): del self._modules[key]

  def append(self, module: Module) -> Sequential:
    self.add_module(str(len(self)), module)
    return self


class ModuleList(Module):
  """A list of modules, registered under '0', '1', ... (no forward of its own)."""

  def __init__(self, modules: Iterable[Module] | None = None):
    super().__init__()
    if modules is not None: self.extend(modules)

  def __len__(self) -> int: return len(self._modules)
  def __iter__(self) -> Iterator[Module]: return iter(self._modules.values())

  def __getitem__(self, idx):
    if isinstance(idx, slice): return ModuleList(list(self._modules.values())[idx])
    return self._modules[str(_index(idx, len(self)))]

  def __setitem__(self, idx: int, module: Module) -> None: self.add_module(str(_index(idx, len(self))), module)

  def __delitem__(self, idx) -> None:
    modules = list(self._modules.values())
    del modules[idx]
    self._modules.clear()
    for i, m in enumerate(modules): self.add_module(str(i), m)

  def append(self, module: Module) -> ModuleList:
    self.add_module(str(len(self)), module)
    return self

  def extend(self, modules: Iterable[Module]) -> ModuleList:
    for m in modules: self.append(m)
    return self

  def insert(self, index: int, module: Module) -> None:
    modules = list(self._modules.values())
    modules.insert(index, module)
    self._modules.clear()
    for i, m in enumerate(modules): self.add_module(str(i), m)


class ModuleDict(Module):
  """A dict of modules, registered under their keys."""

  def __init__(self, modules=None):
    super().__init__()
    if modules is not None: self.update(modules)

  def __getitem__(self, key: str) -> Module: return self._modules[key]
  def __setitem__(self, key: str, module: Module) -> None: self.add_module(key, module)
  def __delitem__(self, key: str) -> None: del self._modules[key]
  def __len__(self) -> int: return len(self._modules)
  def __iter__(self) -> Iterator[str]: return iter(self._modules)
  def __contains__(self, key: str) -> bool: return key in self._modules
  def keys(self): return self._modules.keys()
  def values(self): return self._modules.values()
  def items(self): return self._modules.items()
  def pop(self, key: str) -> Module: return self._modules.pop(key)
  def clear(self) -> None: self._modules.clear()

  def update(self, modules) -> None:
    items = modules.items() if hasattr(modules, "items") else modules
    for key, m in items: self[key] = m


def _index(idx: int, n: int) -> int:
  if not isinstance(idx, int): raise TypeError(f"indices must be integers or slices, not {type(idx).__name__}")
  if not -n <= idx < n: raise IndexError(f"index {idx} is out of range")
  return idx % n
