"""Run one op in torch and in teenygrad on the same seeded inputs and compare everything.

A case is a function of tensors. Its first parameter may instead be named `xp` (it then receives the library
module, `torch` or `teenygrad`) or `F` (it receives `torch.nn.functional` or `teenygrad.nn.functional`):

    lambda x, y: x @ y
    lambda xp, x, y: xp.cat([x, y], dim=1)
    lambda F, x: F.gelu(x, approximate="tanh")

`TG_TEST_TORCH_ONLY=1` runs only the torch side, which checks that every case is valid torch.
"""
from __future__ import annotations

import inspect
import os
from dataclasses import dataclass, field
from typing import Any
from collections.abc import Callable, Sequence

import numpy as np
import pytest
import torch

TORCH_ONLY = os.environ.get("TG_TEST_TORCH_ONLY", "0") not in ("", "0")

# forward (atol, rtol) and backward (atol, rtol) per dtype; a case can loosen them
TOLERANCES: dict[str, tuple[float, float, float, float]] = {
  "float64": (1e-9, 1e-7, 1e-8, 1e-6),
  "float32": (1e-6, 1e-3, 1e-4, 1e-3),
  "float16": (1e-3, 1e-2, 1e-2, 1e-2),
  "bfloat16": (1e-2, 5e-2, 5e-2, 5e-2),
}
F32 = ("float32",)
FLOAT_DTYPES = ("float64", "float32", "float16", "bfloat16")
INT_DTYPES = ("int8", "int16", "int32", "int64", "uint8")


def teenygrad_modules() -> tuple[Any, Any]:
  """(teenygrad, teenygrad.nn.functional), imported only when the teenygrad side runs."""
  import teenygrad
  import teenygrad.nn.functional as tg_functional
  return teenygrad, tg_functional


def torch_dtype(name: str) -> torch.dtype:
  return getattr(torch, name)


def tg_dtype(name: str) -> Any:
  return getattr(teenygrad_modules()[0], name)


def dtype_name(dtype: Any) -> str:
  """'float32' for torch.float32, teenygrad.float32, dtypes.float32 or the string itself."""
  name = getattr(dtype, "name", None) if not isinstance(dtype, torch.dtype) else None
  if not isinstance(name, str):
    name = str(dtype)
  name = name.rsplit(".", 1)[-1]
  return {"float": "float32", "half": "float16", "double": "float64", "long": "int64", "int": "int32",
          "short": "int16", "char": "int8", "uchar": "uint8", "bool_": "bool"}.get(name, name)


# ---------- inputs ----------

def make_inputs(shapes_or_inputs: Sequence[Any], dtypes: Sequence[str], low: float, high: float,
                seed: int) -> list[np.ndarray]:
  """Seeded numpy inputs, already rounded to each input's dtype (stored as float32 for bfloat16)."""
  rng = np.random.default_rng(seed)
  arrays = []
  for item, dtype in zip(shapes_or_inputs, dtypes):
    if not isinstance(item, tuple):  # explicit data: a list, a scalar or an np.ndarray
      arrays.append(np.asarray(item))
      continue
    if dtype == "bool":
      array = rng.random(item) < 0.5
    elif dtype in INT_DTYPES:
      info = np.iinfo(dtype)
      array = rng.integers(max(int(low), info.min), min(int(high), info.max) + 1, size=item).astype(dtype)
    else:
      array = rng.uniform(low, high, size=item).astype(np.float32)
      array = torch.from_numpy(array).to(torch_dtype(dtype)).float().numpy() if dtype == "bfloat16" else array.astype(dtype)
    arrays.append(array)
  return arrays


def input_dtype(array: np.ndarray, dtype: str) -> str:
  """Generated arrays carry their dtype in `dtype`; explicit ones in the array itself."""
  if dtype == "bfloat16" and array.dtype == np.float32:
    return dtype
  return "bool" if array.dtype == np.bool_ else str(array.dtype)


def make_tensors(arrays: list[np.ndarray], dtypes: list[str], library: str, requires_grad: bool) -> list[Any]:
  tensors = []
  for array, dtype in zip(arrays, dtypes):
    wants_grad = requires_grad and dtype in FLOAT_DTYPES
    if library == "torch":
      tensors.append(torch.tensor(array, dtype=torch_dtype(dtype), requires_grad=wants_grad))
    else:
      tg = teenygrad_modules()[0]
      tensors.append(tg.Tensor(array, dtype=tg_dtype(dtype), requires_grad=wants_grad))
  return tensors


# ---------- running a case ----------

def call_case(fn: Callable, tensors: list[Any], library: str) -> Any:
  """Call fn with the library module or functional namespace first when its first parameter asks for it."""
  params = list(inspect.signature(fn).parameters)
  if params and params[0] in ("xp", "F"):
    if library == "torch":
      namespace = torch if params[0] == "xp" else torch.nn.functional
    else:
      namespace = teenygrad_modules()[0 if params[0] == "xp" else 1]
    return fn(namespace, *tensors)
  return fn(*tensors)


def flatten_outputs(out: Any) -> list[Any]:
  if isinstance(out, (tuple, list)):
    return [leaf for item in out for leaf in flatten_outputs(item)]
  return [out]


def to_numpy(value: Any) -> np.ndarray:
  """Host copy of a torch or teenygrad tensor (bfloat16 goes through float32, as numpy has no bfloat16)."""
  if isinstance(value, (bool, int, float)):
    return np.asarray(value)
  if dtype_name(value.dtype) == "bfloat16":
    value = value.float()
  if isinstance(value, torch.Tensor):
    value = value.detach()
  return value.numpy()


def is_tensor(value: Any) -> bool:
  return hasattr(value, "shape") and hasattr(value, "dtype")


def compare(name: str, torch_value: Any, tg_value: Any, atol: float, rtol: float) -> None:
  if is_tensor(torch_value):
    assert is_tensor(tg_value), f"{name}: torch gave a tensor, teenygrad gave {type(tg_value).__name__}"
    assert tuple(tg_value.shape) == tuple(torch_value.shape), \
      f"{name}: shape {tuple(tg_value.shape)} != torch {tuple(torch_value.shape)}"
    assert dtype_name(tg_value.dtype) == dtype_name(torch_value.dtype), \
      f"{name}: dtype {dtype_name(tg_value.dtype)} != torch {dtype_name(torch_value.dtype)}"
  elif isinstance(torch_value, (bool, int, float)):
    assert type(tg_value) is type(torch_value), \
      f"{name}: python {type(tg_value).__name__} != torch {type(torch_value).__name__}"
  expected, actual = to_numpy(torch_value), to_numpy(tg_value)
  if expected.dtype == np.bool_ or np.issubdtype(expected.dtype, np.integer):
    np.testing.assert_equal(actual, expected, err_msg=name)
  else:
    np.testing.assert_allclose(actual.astype(np.float64), expected.astype(np.float64), atol=atol, rtol=rtol,
                               equal_nan=True, err_msg=name)


def grad_outputs(outputs: list[Any]) -> list[int]:
  """Positions of the outputs that backward flows through (float tensors in the autograd graph)."""
  return [i for i, out in enumerate(outputs) if isinstance(out, torch.Tensor) and out.requires_grad]


def run_backward(outputs: list[Any], positions: list[int], upstream: list[np.ndarray], dtypes: list[str],
                 library: str) -> None:
  """Backprop the same random upstream gradient through each chosen output."""
  grads = make_tensors(upstream, dtypes, library, requires_grad=False)
  if len(positions) == 1:
    outputs[positions[0]].backward(grads[0])
    return
  loss = None
  for position, grad in zip(positions, grads):
    term = (outputs[position].float() * grad.float()).sum()
    loss = term if loss is None else loss + term
  loss.backward()


def helper_test_op(shapes_or_inputs: Sequence[Any], fn: Callable, tg_fn: Callable | None = None, *,
                   dtype: str | Sequence[str] = "float32", atol: float | None = None, rtol: float | None = None,
                   grad_atol: float | None = None, grad_rtol: float | None = None, forward_only: bool = False,
                   low: float = -2.0, high: float = 2.0, seed: int = 0) -> None:
  """Compare fn in torch and in teenygrad (tg_fn when the spelling differs): values, shape, dtype and grads.

  shapes_or_inputs holds a shape tuple (random data of `dtype`, uniform in [low, high]) or explicit data per input.
  dtype is one name for every input or one per input.
  """
  dtypes = [dtype] * len(shapes_or_inputs) if isinstance(dtype, str) else list(dtype)
  arrays = make_inputs(shapes_or_inputs, dtypes, low, high, seed)
  dtypes = [input_dtype(array, name) for array, name in zip(arrays, dtypes)]
  tolerance_dtype = next((name for name in dtypes if name in FLOAT_DTYPES), "float32")
  default_atol, default_rtol, default_grad_atol, default_grad_rtol = TOLERANCES[tolerance_dtype]
  atol = default_atol if atol is None else atol
  rtol = default_rtol if rtol is None else rtol
  grad_atol = default_grad_atol if grad_atol is None else grad_atol
  grad_rtol = default_grad_rtol if grad_rtol is None else grad_rtol

  torch_inputs = make_tensors(arrays, dtypes, "torch", requires_grad=not forward_only)
  torch_outputs = flatten_outputs(call_case(fn, torch_inputs, "torch"))
  positions = [] if forward_only else grad_outputs(torch_outputs)
  rng = np.random.default_rng(seed + 1)
  upstream = [rng.uniform(-1, 1, size=tuple(torch_outputs[i].shape)).astype(np.float32) for i in positions]
  upstream_dtypes = [dtype_name(torch_outputs[i].dtype) for i in positions]
  upstream = [torch.from_numpy(g).to(torch_dtype(d)).float().numpy() if d == "bfloat16" else g.astype(d)
              for g, d in zip(upstream, upstream_dtypes)]
  if positions:
    run_backward(torch_outputs, positions, upstream, upstream_dtypes, "torch")
  if TORCH_ONLY:
    return

  tg_inputs = make_tensors(arrays, dtypes, "teenygrad", requires_grad=not forward_only)
  tg_outputs = flatten_outputs(call_case(tg_fn or fn, tg_inputs, "teenygrad"))
  assert len(tg_outputs) == len(torch_outputs), f"{len(tg_outputs)} outputs, torch gave {len(torch_outputs)}"
  for i, (torch_out, tg_out) in enumerate(zip(torch_outputs, tg_outputs)):
    compare(f"forward output {i}", torch_out, tg_out, atol, rtol)
  if not positions:
    return
  run_backward(tg_outputs, positions, upstream, upstream_dtypes, "teenygrad")
  for i, (torch_in, tg_in) in enumerate(zip(torch_inputs, tg_inputs)):
    if torch_in.grad is None:
      continue
    assert tg_in.grad is not None, f"input {i}: torch has a grad, teenygrad has none"
    compare(f"grad of input {i}", torch_in.grad, tg_in.grad, grad_atol, grad_rtol)


# ---------- errors ----------

def builtin_exception_class(error: BaseException) -> type:
  """torch raises some of its own subclasses (torch.AcceleratorError, ...); compare their builtin base."""
  for cls in type(error).__mro__:
    if cls.__module__ == "builtins":
      return cls
  return type(error)


def raised_by(fn: Callable, tensors: list[Any], library: str) -> BaseException:
  try:
    out = call_case(fn, tensors, library)
    for leaf in flatten_outputs(out):  # a lazy library may only fail once the value is needed
      if is_tensor(leaf) and dtype_name(leaf.dtype) != "bfloat16" and library != "torch":
        leaf.numpy()
  except Exception as error:  # noqa: BLE001 -- the class is what we compare
    return error
  raise AssertionError(f"{library} did not raise")


def helper_test_exception(shapes_or_inputs: Sequence[Any], fn: Callable, *, dtype: str | Sequence[str] = "float32",
                          requires_grad: bool = False, expected: type | None = None) -> None:
  """Both libraries raise, and teenygrad's exception is of torch's class."""
  dtypes = [dtype] * len(shapes_or_inputs) if isinstance(dtype, str) else list(dtype)
  arrays = make_inputs(shapes_or_inputs, dtypes, -2.0, 2.0, seed=0)
  dtypes = [input_dtype(array, name) for array, name in zip(arrays, dtypes)]
  torch_error = raised_by(fn, make_tensors(arrays, dtypes, "torch", requires_grad), "torch")
  torch_class = builtin_exception_class(torch_error)
  if expected is not None:
    assert isinstance(torch_error, expected), f"torch raised {torch_class.__name__}, the case expects {expected}"
  if TORCH_ONLY:
    return
  tg_error = raised_by(fn, make_tensors(arrays, dtypes, "teenygrad", requires_grad), "teenygrad")
  assert isinstance(tg_error, torch_class), \
    f"teenygrad raised {type(tg_error).__name__}({tg_error}), torch raises {torch_class.__name__}({torch_error})"


# ---------- the table ----------

@dataclass
class Case:
  """One row of the table: inputs (shapes or data), the op, and the dtypes to run it in."""
  name: str
  inputs: list[Any]
  fn: Callable
  dtypes: tuple = F32
  options: dict = field(default_factory=dict)


def case(name: str, inputs: list[Any], fn: Callable, dtypes: tuple = F32, **options: Any) -> Case:
  return Case(name, inputs, fn, dtypes, options)


def params(cases: list[Case]) -> list[Any]:
  """One pytest param per (case, dtype); the id names the dtype unless the case only runs float32."""
  out, seen = [], set()
  for c in cases:
    for dtype in c.dtypes:
      dtype_id = dtype if isinstance(dtype, str) else "-".join(dtype)
      test_id = c.name if c.dtypes == F32 else f"{c.name}[{dtype_id}]"
      assert test_id not in seen, f"duplicate case id {test_id}"
      seen.add(test_id)
      # a documented difference from torch stays visible: strict xfail fails the run once it starts passing
      # (torch-only runs have no teenygrad side, so nothing diverges there)
      divergence = None if TORCH_ONLY else c.options.get("known_divergence")
      marks = [pytest.mark.xfail(reason=divergence, strict=True)] if divergence else []
      out.append(pytest.param(c, dtype, id=test_id, marks=marks))
  return out


# the handful of shapes most cases share, so compiled kernels are reused
V = (4,)            # vector
M = (3, 4)          # matrix
T3 = (2, 3, 4)      # 3-d
SCALAR = ()         # 0-d
EMPTY = (0, 4)
IMG = (2, 3, 6, 6)  # (N, C, H, W)
ATTN = (2, 2, 3, 4)  # (B, heads, T, head_dim)

FLOATS = ("float32", "float16", "bfloat16")
INTS = ("int32", "int64", "int8", "uint8")
SIGNED_INTS = ("int32", "int64", "int8")


def idx(*values: int) -> np.ndarray:
  """An int64 index array, as explicit data for an input."""
  return np.array(values, dtype=np.int64)


def f32(values: Any) -> np.ndarray:
  return np.array(values, dtype=np.float32)


def run_case(op_case: Case, dtype: Any) -> None:
  """Run one table row; `known_divergence` only marks the param (see params), it is not an option of the check."""
  options = {k: v for k, v in op_case.options.items() if k != "known_divergence"}
  helper_test_op(op_case.inputs, op_case.fn, dtype=dtype, **options)


# ---- decode's fused projections (test_cuda.py, test_cuda_compile_decode.py) ----

def reference_prologue(x: np.ndarray, prologue: str, norm: np.ndarray | None, eps: float) -> np.ndarray:
  """What the model's primitive path feeds the projection: rms_norm(x) * norm, or silu(gate) * up (float64)."""
  x = x.astype(np.float64)
  if prologue == "norm": return x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * norm
  if prologue == "swiglu":
    gate, up = np.split(x, 2, axis=-1)
    return gate / (1 + np.exp(-gate)) * up
  return x


def quantize_q8_1(v: np.ndarray) -> np.ndarray:
  """x (m, k) float32 as CUDA's int8-x matvec (nn/quant_cuda_dp4a.py) rounds it, dequantized (float64): per 32
  columns d = amax / 127 and values rint(v * (127 / amax)) (halves to even), in float32 as the kernel computes them."""
  blocks = v.reshape(v.shape[0], -1, 32)
  amax = np.abs(blocks).max(-1, keepdims=True)
  with np.errstate(divide="ignore"):
    inverse = np.where(amax == 0, np.float32(0), np.float32(127) / amax)
  q = np.rint(blocks * inverse)
  assert q.dtype == np.float32 and np.abs(q).max() <= 127
  return (q.astype(np.float64) * (amax / np.float32(127))).reshape(v.shape)
