"""Data types and type promotion (torch's rules: categories bool < int < float, then the wider type)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, eq=True)
class DType:
  """One element type. `priority` orders types inside a category for promotion."""
  name: str
  itemsize: int
  ctype: str          # the C name a renderer uses
  np_name: str | None  # numpy dtype name for host buffers (bfloat16 is stored as uint16)
  category: int       # 0 bool, 1 integer, 2 floating
  priority: int
  signed: bool = True

  @property
  def is_float(self) -> bool: return self.category == 2

  @property
  def is_int(self) -> bool: return self.category == 1

  @property
  def is_bool(self) -> bool: return self.category == 0

  @property
  def np(self) -> np.dtype: return np.dtype(self.np_name)

  @property
  def is_floating_point(self) -> bool: return self.is_float

  def __repr__(self) -> str: return f"teenygrad.{self.name}"


class dtypes:
  bool = DType("bool", 1, "bool", "bool", 0, 0, False)
  uint8 = DType("uint8", 1, "unsigned char", "uint8", 1, 1, False)
  int8 = DType("int8", 1, "signed char", "int8", 1, 2)
  int16 = DType("int16", 2, "short", "int16", 1, 3)
  uint16 = DType("uint16", 2, "unsigned short", "uint16", 1, 3, False)
  int32 = DType("int32", 4, "int", "int32", 1, 4)
  uint32 = DType("uint32", 4, "unsigned int", "uint32", 1, 4, False)
  int64 = DType("int64", 8, "long long", "int64", 1, 5)
  float16 = DType("float16", 2, "_Float16", "float16", 2, 1)
  bfloat16 = DType("bfloat16", 2, "__bf16", "uint16", 2, 1)
  float32 = DType("float32", 4, "float", "float32", 2, 2)
  float64 = DType("float64", 8, "double", "float64", 2, 3)

  # torch-style aliases
  half, float, double, long, int = float16, float32, float64, int64, int32

  default_float = float32
  default_int = int64

  @staticmethod
  def all() -> list[DType]:
    return [dtypes.bool, dtypes.uint8, dtypes.int8, dtypes.int16, dtypes.uint16, dtypes.int32, dtypes.uint32,
            dtypes.int64, dtypes.float16, dtypes.bfloat16, dtypes.float32, dtypes.float64]

  @staticmethod
  def from_numpy(npdtype: np.dtype) -> DType:
    # a dict lookup: numpy's dtype.name is slow enough to show in a decode step, which builds two tensors
    found = _FROM_NUMPY.get(npdtype)
    if found is None: found = _FROM_NUMPY.get(np.dtype(npdtype))
    if found is None: raise TypeError(f"can't convert numpy dtype {npdtype} to a teenygrad dtype")
    return found

  @staticmethod
  def from_py(value) -> DType:
    """The dtype torch gives a Python scalar or nested list."""
    if isinstance(value, (list, tuple)):
      if len(value) == 0: return dtypes.default_float
      return max((dtypes.from_py(v) for v in value), key=lambda d: (d.category, d.priority))
    if isinstance(value, bool) or isinstance(value, np.bool_): return dtypes.bool
    if isinstance(value, (int, np.integer)): return dtypes.default_int
    if isinstance(value, (float, np.floating)): return dtypes.default_float
    raise TypeError(f"can't infer a dtype from {type(value).__name__}")


def promote(a: DType, b: DType) -> DType:
  """torch.promote_types for the types teenygrad has."""
  if a == b: return a
  if a.category != b.category: return a if a.category > b.category else b
  if a.is_float and {a, b} == {dtypes.float16, dtypes.bfloat16}: return dtypes.float32
  if a.is_int and a.signed != b.signed:
    unsigned, signed = (a, b) if not a.signed else (b, a)
    if signed.itemsize > unsigned.itemsize: return signed
    return {1: dtypes.int16, 2: dtypes.int32, 4: dtypes.int64}.get(unsigned.itemsize, dtypes.int64)
  return a if a.priority > b.priority else b


def result_type_scalar(tensor_dtype: DType, scalar) -> DType:
  """A Python scalar only changes the result's category, never its width (torch semantics)."""
  scalar_dtype = dtypes.from_py(scalar)
  if scalar_dtype.category > tensor_dtype.category:
    return dtypes.default_float if scalar_dtype.is_float else scalar_dtype
  return tensor_dtype


def to_dtype(value) -> DType:
  """Accepts a DType, a numpy dtype or a name such as 'float32'."""
  if isinstance(value, DType): return value
  if isinstance(value, str):
    found = getattr(dtypes, value, None)
    if isinstance(found, DType): return found
    raise TypeError(f"unknown dtype name {value!r}")
  if value is bool: return dtypes.bool
  if value is int: return dtypes.default_int
  if value is float: return dtypes.default_float
  try: return dtypes.from_numpy(np.dtype(value))
  except TypeError: raise TypeError(f"can't interpret {value!r} as a dtype") from None


_FROM_NUMPY = {np.dtype(dt.np_name): dt for dt in dtypes.all() if dt is not dtypes.bfloat16}
