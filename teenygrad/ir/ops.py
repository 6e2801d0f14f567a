"""The closed set of primitive ops. Every Tensor method is built from these; every backend renders only these."""
from __future__ import annotations

import math
from enum import Enum, auto

import numpy as np


class Ops(Enum):
  # members are singletons compared by identity: hashing by identity is C-level (Enum's hashes the name in Python, and
  # ops key every kernel-structure tuple and op-set lookup)
  __hash__ = object.__hash__

  # unary
  EXP2 = auto(); LOG2 = auto(); SIN = auto(); SQRT = auto(); RECIPROCAL = auto(); CAST = auto(); BITCAST = auto()  # noqa: E702
  # binary
  ADD = auto(); MUL = auto(); MAX = auto(); IDIV = auto(); MOD = auto(); CMPLT = auto(); CMPNE = auto()  # noqa: E702
  AND = auto(); OR = auto(); XOR = auto(); SHL = auto(); SHR = auto()  # noqa: E702
  # ternary
  WHERE = auto()
  # reduce
  SUM = auto(); REDUCE_MAX = auto()  # noqa: E702
  # movement (views, never copies)
  RESHAPE = auto(); PERMUTE = auto(); EXPAND = auto(); PAD = auto(); SHRINK = auto(); FLIP = auto()  # noqa: E702
  # buffer
  CONST = auto(); LOAD = auto(); COPY = auto(); ASSIGN = auto(); CONTIGUOUS = auto(); CUSTOM = auto()  # noqa: E702


UNARY = {Ops.EXP2, Ops.LOG2, Ops.SIN, Ops.SQRT, Ops.RECIPROCAL, Ops.CAST, Ops.BITCAST}
BINARY = {Ops.ADD, Ops.MUL, Ops.MAX, Ops.IDIV, Ops.MOD, Ops.CMPLT, Ops.CMPNE, Ops.AND, Ops.OR, Ops.XOR, Ops.SHL, Ops.SHR}
ELEMENTWISE = UNARY | BINARY | {Ops.WHERE}
REDUCE = {Ops.SUM, Ops.REDUCE_MAX}
MOVEMENT = {Ops.RESHAPE, Ops.PERMUTE, Ops.EXPAND, Ops.PAD, Ops.SHRINK, Ops.FLIP}
COMPARISON = {Ops.CMPLT, Ops.CMPNE}


def _shift_left(a, b): return np.left_shift(a, b)
def _shift_right(a, b): return np.right_shift(a, b)


def _trunc_div(a, b):
  """C-style integer division (rounds toward zero); division by zero gives 0 rather than a crash."""
  safe = np.where(b == 0, 1, b)
  q = np.abs(a) // np.abs(safe) * np.sign(a) * np.sign(safe)
  return np.where(b == 0, 0, q).astype(np.result_type(a, b))


def _trunc_mod(a, b):
  safe = np.where(b == 0, 1, b)
  return np.where(b == 0, 0, a - _trunc_div(a, safe) * safe).astype(np.result_type(a, b))


# The executable meaning of each elementwise op on numpy arrays: the reference every renderer is tested against
# and what constant folding uses.
NUMPY_OPS = {
  Ops.EXP2: np.exp2, Ops.LOG2: np.log2, Ops.SIN: np.sin, Ops.SQRT: np.sqrt, Ops.RECIPROCAL: lambda x: 1 / x,
  Ops.ADD: np.add, Ops.MUL: np.multiply, Ops.MAX: np.maximum, Ops.IDIV: _trunc_div, Ops.MOD: _trunc_mod,
  Ops.CMPLT: np.less, Ops.CMPNE: np.not_equal, Ops.AND: np.bitwise_and, Ops.OR: np.bitwise_or,
  Ops.XOR: np.bitwise_xor, Ops.SHL: _shift_left, Ops.SHR: _shift_right, Ops.WHERE: np.where,
}

REDUCE_IDENTITY = {Ops.SUM: lambda dtype: 0, Ops.REDUCE_MAX: lambda dtype: -math.inf if dtype.is_float else _int_min(dtype)}


def _int_min(dtype) -> int:
  if dtype.is_bool: return 0
  if not dtype.signed: return 0
  return -(1 << (8 * dtype.itemsize - 1))
