"""State dicts and whole training checkpoints: tensors in safetensors, everything else as JSON. No pickle, ever.

A checkpoint is one safetensors file. Model tensors are stored under `model.<name>` with torch's names, so
`safetensors.torch.load_file` reads them; the optimizer's tensors (momentum, Adam moments) under `optimizer.<path>`.
Everything else (optimizer hyperparameters, scheduler state, step, RNG state, user extras) is one JSON document
in the file's `__metadata__["teenygrad.checkpoint"]`, with tensors replaced by references to their names. Being
one file, a checkpoint is replaced atomically (see `state.atomic`): an exception or a crash in the middle of
`save_checkpoint` leaves the previous checkpoint whole and loadable.
"""
from __future__ import annotations

import json
import os
from typing import Any

import numpy as np

from teenygrad.state.safetensors import load_file, read_header, save_file
from teenygrad.tensor import Tensor, no_grad

FORMAT = "teenygrad.checkpoint"
VERSION = "1"


# ---- state dicts ----

def get_state_dict(obj: Any, prefix: str = "") -> dict[str, Tensor]:
  """name -> Tensor for an nn.Module (its torch-named `state_dict()`), a dict/list of Tensors, or any object whose
  attributes hold Tensors (names are the dotted attribute path, as torch would name them)."""
  out: dict[str, Tensor] = {}
  _collect(obj, prefix, out, set())
  return out


def _collect(obj: Any, prefix: str, out: dict, seen: set[int]) -> None:
  if isinstance(obj, Tensor): out[prefix.rstrip(".")] = obj; return
  if id(obj) in seen: return
  seen.add(id(obj))
  if hasattr(obj, "state_dict") and callable(obj.state_dict) and not isinstance(obj, type):
    for name, t in obj.state_dict().items(): out[prefix + name] = t
  elif isinstance(obj, dict):
    for k, v in obj.items(): _collect(v, f"{prefix}{k}.", out, seen)
  elif isinstance(obj, (list, tuple)):
    for i, v in enumerate(obj): _collect(v, f"{prefix}{i}.", out, seen)
  elif hasattr(obj, "__dict__") and not isinstance(obj, type):
    for k, v in vars(obj).items(): _collect(v, f"{prefix}{k}.", out, seen)


def load_state_dict(obj: Any, state_dict: dict[str, Any], strict: bool = True) -> tuple[list[str], list[str]]:
  """Copy state_dict's values into obj's tensors (an nn.Module uses its own `load_state_dict`).

  Returns (missing keys, unexpected keys); with strict=True either raises. Shapes must match and are all checked
  before anything is written, so a failed load leaves the model as it was."""
  if hasattr(obj, "load_state_dict") and callable(obj.load_state_dict):
    result = obj.load_state_dict(state_dict, strict=strict)
    return (list(result[0]), list(result[1])) if isinstance(result, tuple) else ([], [])
  own = get_state_dict(obj)
  missing = [k for k in own if k not in state_dict]
  unexpected = [k for k in state_dict if k not in own]
  errors = []
  if strict and unexpected: errors.append(f"unexpected keys: {unexpected}")
  if strict and missing: errors.append(f"missing keys: {missing}")
  for key, target in own.items():
    if key in state_dict and tuple(state_dict[key].shape) != tuple(target.shape):
      errors.append(f"size mismatch for {key}: checkpoint has {list(state_dict[key].shape)}, the model has {list(target.shape)}")
  if errors: raise RuntimeError(f"Error(s) in loading state_dict for {type(obj).__name__}: " + "; ".join(errors))
  with no_grad():
    for key, target in own.items():
      if key not in state_dict: continue
      value = state_dict[key]
      value = value if isinstance(value, Tensor) else Tensor(np.asarray(value))
      target.assign(value.to(target.device).cast(target.dtype).detach()).realize()
  return missing, unexpected


# ---- JSON with tensor references ----

def _encode(value: Any, path: str, tensors: dict[str, Any]) -> Any:
  """A JSON-able tree; tensors and arrays move to `tensors` under their path and leave {"__tensor__": path}."""
  if isinstance(value, (Tensor, np.ndarray)):
    tensors[path] = value
    return {"__tensor__": path}
  if isinstance(value, np.generic): return value.item()
  if value is None or isinstance(value, (bool, int, float, str)): return value
  if isinstance(value, tuple): return {"__tuple__": [_encode(v, f"{path}.{i}", tensors) for i, v in enumerate(value)]}
  if isinstance(value, list): return [_encode(v, f"{path}.{i}", tensors) for i, v in enumerate(value)]
  if isinstance(value, dict):
    for k in value:
      if not (k is None or isinstance(k, (bool, int, float, str))): raise TypeError(f"can't checkpoint {path}: dict key {k!r} is not a JSON scalar")
    if all(isinstance(k, str) and not k.startswith("__") for k in value):
      return {k: _encode(v, f"{path}.{k}", tensors) for k, v in value.items()}
    return {"__items__": [[k, _encode(v, f"{path}.{k}", tensors)] for k, v in value.items()]}
  raise TypeError(f"can't checkpoint {path}: {type(value).__name__} is neither a tensor nor JSON data (checkpoints never pickle)")


def _decode(value: Any, tensors: dict[str, Tensor]) -> Any:
  if isinstance(value, list): return [_decode(v, tensors) for v in value]
  if not isinstance(value, dict): return value
  if "__tensor__" in value:
    if value["__tensor__"] not in tensors: raise ValueError(f"checkpoint refers to tensor {value['__tensor__']!r}, which the file lacks")
    return tensors[value["__tensor__"]]
  if "__tuple__" in value: return tuple(_decode(v, tensors) for v in value["__tuple__"])
  if "__items__" in value: return {k: _decode(v, tensors) for k, v in value["__items__"]}
  return {k: _decode(v, tensors) for k, v in value.items()}


# ---- checkpoints ----

def save_checkpoint(path: str | os.PathLike, *, model: Any = None, optimizer: Any = None, scheduler: Any = None,
                    step: int | None = None, rng: bool = True, extra: dict | None = None) -> None:
  """Write a whole training state to one file, atomically.

  Args:
    model: an nn.Module (or dict/object of Tensors); its state_dict is stored under `model.<name>`.
    optimizer, scheduler: anything with state_dict()/load_state_dict() (teenygrad.optim's, torch conventions).
    step: the training step (or any int).
    rng: store teenygrad's random state, so a resumed run draws the same numbers.
    extra: more JSON data (and tensors) of your own; comes back from load_checkpoint under "extra".
  """
  tensors: dict[str, Any] = {}
  document: dict[str, Any] = {"step": step}
  if model is not None:
    for name, t in get_state_dict(model).items(): tensors[f"model.{name}"] = t
    document["model"] = list(get_state_dict(model))
  if optimizer is not None: document["optimizer"] = _encode(optimizer.state_dict(), "optimizer", tensors)
  if scheduler is not None: document["scheduler"] = _encode(scheduler.state_dict(), "scheduler", tensors)
  if rng:
    from teenygrad.tensor.random import get_rng_state
    document["rng"] = _encode(get_rng_state(), "rng", tensors)
  if extra is not None: document["extra"] = _encode(extra, "extra", tensors)
  metadata = {"format": FORMAT, "version": VERSION, FORMAT: json.dumps(document)}
  save_file(tensors, path, metadata)


def load_checkpoint(path: str | os.PathLike, *, model: Any = None, optimizer: Any = None, scheduler: Any = None,
                    rng: bool = True, strict: bool = True, device: str | None = None) -> dict[str, Any]:
  """Restore what save_checkpoint wrote into the given objects; returns {"step", "extra"} (and the raw parts)."""
  _, metadata, _ = read_header(path)
  if metadata.get("format") != FORMAT or FORMAT not in metadata:
    raise ValueError(f"{path} is a safetensors file but not a teenygrad checkpoint (no {FORMAT!r} metadata); use state.load_file")
  if metadata.get("version") != VERSION: raise ValueError(f"{path}: checkpoint version {metadata.get('version')!r}, this teenygrad reads {VERSION!r}")
  try: document = json.loads(metadata[FORMAT])
  except json.JSONDecodeError as e: raise ValueError(f"{path}: checkpoint metadata is not valid JSON: {e}") from None
  tensors = load_file(path, device=device)
  if model is not None:
    if "model" not in document: raise ValueError(f"{path} holds no model state")
    load_state_dict(model, {name: tensors[f"model.{name}"] for name in document["model"]}, strict=strict)
  for name, target in (("optimizer", optimizer), ("scheduler", scheduler)):
    if target is None: continue
    if name not in document: raise ValueError(f"{path} holds no {name} state")
    target.load_state_dict(_decode(document[name], tensors))
  if rng and "rng" in document:
    from teenygrad.tensor.random import set_rng_state
    set_rng_state(_decode(document["rng"], tensors))
  return {"step": document.get("step"), "extra": _decode(document.get("extra"), tensors),
          "optimizer": _decode(document.get("optimizer"), tensors), "scheduler": _decode(document.get("scheduler"), tensors)}
