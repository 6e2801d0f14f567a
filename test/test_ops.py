"""The op table: every case runs in torch and in teenygrad on the same seeded inputs (see helpers.py).

Run: `python -m pytest test/test_ops.py -n 2` (DEV picks the teenygrad device; TG_TEST_TORCH_ONLY=1 checks the
torch side only). Shapes are few and small on purpose: each new kernel shape costs a compile.
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np
import pytest

from helpers import F32, TORCH_ONLY, Case, case, helper_test_exception, helper_test_op, params

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


# ---------------- elementwise ----------------

UNARY = [
  case("neg", [M], lambda x: -x, FLOATS),
  case("neg_method", [M], lambda x: x.neg(), F32),
  case("abs", [M], lambda x: x.abs(), FLOATS),
  case("sign", [M], lambda x: x.sign(), FLOATS),
  case("exp", [M], lambda x: x.exp(), FLOATS),
  case("exp2", [M], lambda x: x.exp2(), FLOATS),
  case("log", [M], lambda x: x.log(), FLOATS, low=0.1, high=3.0),
  case("log2", [M], lambda x: x.log2(), FLOATS, low=0.1, high=3.0),
  case("sqrt", [M], lambda x: x.sqrt(), FLOATS, low=0.1, high=3.0),
  case("rsqrt", [M], lambda x: x.rsqrt(), FLOATS, low=0.1, high=3.0),
  case("sin", [M], lambda x: x.sin(), FLOATS),
  case("cos", [M], lambda x: x.cos(), FLOATS),
  case("tan", [M], lambda x: x.tan(), FLOATS, low=-1.0, high=1.0),
  case("tanh", [M], lambda x: x.tanh(), FLOATS),
  case("sigmoid", [M], lambda x: x.sigmoid(), FLOATS),
  case("sigmoid_large", [f32([-100.0, -20.0, 0.0, 20.0, 100.0])], lambda x: x.sigmoid()),
  case("relu", [M], lambda x: x.relu(), FLOATS),
  case("floor", [M], lambda x: x.floor(), FLOATS),
  case("ceil", [M], lambda x: x.ceil(), FLOATS),
  case("round", [M], lambda x: x.round(), FLOATS, low=-5.0, high=5.0),
  case("round_half_even", [f32([-2.5, -1.5, -0.5, 0.5, 1.5, 2.5])], lambda x: x.round()),
  case("trunc", [M], lambda x: x.trunc(), FLOATS, low=-5.0, high=5.0),
  case("reciprocal", [M], lambda x: x.reciprocal(), F32, low=0.5, high=2.0),
  case("square", [M], lambda x: x.square(), F32),
  case("isnan", [f32([1.0, np.nan, np.inf, -np.inf])], lambda x: x.isnan()),
  case("isinf", [f32([1.0, np.nan, np.inf, -np.inf])], lambda x: x.isinf()),
  case("exp_overflow", [f32([-200.0, 0.0, 200.0])], lambda x: x.exp(), forward_only=True),
  case("log_of_zero_and_negative", [f32([0.0, -1.0, 1.0])], lambda x: x.log(), forward_only=True),
  case("sqrt_of_negative", [f32([-1.0, 4.0])], lambda x: x.sqrt(), forward_only=True),
  case("clamp", [M], lambda x: x.clamp(-0.7, 1.1), FLOATS),
  case("clamp_min_only", [M], lambda x: x.clamp(min=0.3), F32),
  case("clamp_max_only", [M], lambda x: x.clamp(max=0.3), F32),
  case("clamp_tensor_bounds", [M, V, V], lambda x, lo, hi: x.clamp(lo - 1, hi + 1), F32),
  case("clip", [M], lambda x: x.clip(-1.0, 1.0), F32),
  case("lerp_scalar_weight", [M, M], lambda x, y: x.lerp(y, 0.3), FLOATS),
  case("lerp_tensor_weight", [M, M, V], lambda x, y, w: x.lerp(y, w), F32),
  case("pow_scalar", [M], lambda x: x.pow(2), FLOATS),
  case("pow_cube_negative_base", [M], lambda x: x ** 3, F32),
  case("pow_fractional", [M], lambda x: x ** 0.5, F32, low=0.1, high=3.0),
  case("pow_negative_exponent", [M], lambda x: x ** -1.5, F32, low=0.5, high=2.0),
  case("pow_zero_exponent", [M], lambda x: x ** 0, F32),
  case("pow_tensor", [M, M], lambda x, y: x.pow(y), F32, low=0.5, high=2.0),
  case("rpow", [M], lambda x: 2.0 ** x, FLOATS),
  case("pow_of_zero", [f32([0.0, 0.0, 2.0]), f32([0.0, 2.0, 0.0])], lambda x, y: x ** y, forward_only=True),
  case("relu_0d", [SCALAR], lambda x: x.relu()),
  case("exp_0d", [SCALAR], lambda x: x.exp()),
  case("exp_empty", [EMPTY], lambda x: x.exp()),
]

BINARY = [
  case("add", [M, M], lambda x, y: x + y, FLOATS),
  case("sub", [M, M], lambda x, y: x - y, FLOATS),
  case("mul", [M, M], lambda x, y: x * y, FLOATS),
  case("div", [M, M], lambda x, y: x / y, FLOATS, low=0.5, high=2.0),
  case("add_method_alpha", [M, M], lambda x, y: x.add(y, alpha=2.0)),
  case("sub_method", [M, M], lambda x, y: x.sub(y)),
  case("mul_method", [M, M], lambda x, y: x.mul(y)),
  case("div_method", [M, M], lambda x, y: x.div(y), low=0.5, high=2.0),
  case("div_rounding_floor", [M, M], lambda x, y: x.div(y, rounding_mode="floor"), forward_only=True, low=0.5),
  case("div_rounding_trunc", [M, M], lambda x, y: x.div(y, rounding_mode="trunc"), forward_only=True, low=-3.0),
  case("add_broadcast_row", [M, V], lambda x, y: x + y, FLOATS),
  case("mul_broadcast_column", [(3, 1), (1, 4)], lambda x, y: x * y, FLOATS),
  case("sub_broadcast_3d", [T3, (3, 1)], lambda x, y: x - y),
  case("div_broadcast_3d", [(2, 1, 4), (3, 1)], lambda x, y: x / y, low=0.5, high=2.0),
  case("add_0d_tensor", [M, SCALAR], lambda x, y: x + y),
  case("mul_0d_0d", [SCALAR, SCALAR], lambda x, y: x * y),
  case("add_python_scalar", [M], lambda x: x + 1.5, FLOATS),
  case("radd_python_scalar", [M], lambda x: 1.5 + x),
  case("rsub_python_scalar", [M], lambda x: 2 - x, FLOATS),
  case("mul_python_scalar", [M], lambda x: x * 3, FLOATS),
  case("rdiv_python_scalar", [M], lambda x: 1 / x, F32, low=0.5, high=2.0),
  case("div_python_scalar", [M], lambda x: x / 4),
  case("add_empty", [EMPTY, V], lambda x, y: x + y),
  case("maximum", [M, M], lambda x, y: x.maximum(y), FLOATS),
  case("minimum", [M, M], lambda x, y: x.minimum(y), FLOATS),
  case("maximum_module", [M, V], lambda xp, x, y: xp.maximum(x, y)),
  case("minimum_module", [M, V], lambda xp, x, y: xp.minimum(x, y)),
  case("maximum_ties", [f32([1.0, 2.0, 3.0]), f32([1.0, 0.0, 3.0])], lambda x, y: x.maximum(y)),
  case("floordiv", [M, M], lambda x, y: x // y, F32, forward_only=True, low=0.5, high=3.0),
  case("floordiv_negative", [M, M], lambda x, y: x // (y - 3), F32, forward_only=True, low=0.5, high=2.0),
  case("mod", [M, M], lambda x, y: x % y, F32, forward_only=True, low=0.5, high=3.0),
  case("mod_negative_divisor", [M], lambda x: x % -0.75, F32, forward_only=True),
  case("lt", [M, M], lambda x, y: x < y, FLOATS),
  case("le", [M, M], lambda x, y: x <= y, F32),
  case("gt", [M, M], lambda x, y: x > y, FLOATS),
  case("ge", [M, M], lambda x, y: x >= y, F32),
  case("eq", [M, M], lambda x, y: x == y, F32),
  case("ne", [M, M], lambda x, y: x != y, F32),
  case("eq_self", [M], lambda x: x == x),
  case("lt_scalar", [M], lambda x: x < 0.5),
  case("gt_broadcast", [M, V], lambda x, y: x > y),
  case("where", [M, M, M], lambda xp, c, x, y: xp.where(c > 0, x, y), FLOATS),
  case("where_broadcast", [M, V, (3, 1)], lambda xp, c, x, y: xp.where(c > 0, x, y)),
  case("where_scalar_branch", [M, M], lambda xp, c, x: xp.where(c > 0, x, 0.0)),
  case("where_method", [M, M], lambda c, x: x.where(c > 0, -x)),
  case("chain_of_ops", [M, M, V], lambda x, y, z: ((x * y).exp() + z).relu().sum(dim=1).sqrt(), FLOATS),
  case("diamond", [M], lambda x: (x.exp() * x.sin()) + x.exp()),
]

INTEGER = [
  case("int_add", [M, M], lambda x, y: x + y, INTS, low=0, high=50),
  case("int_sub", [M, M], lambda x, y: x - y, SIGNED_INTS, low=-50, high=50),
  case("int_mul", [M, M], lambda x, y: x * y, INTS, low=0, high=10),
  case("int_neg", [M], lambda x: -x, SIGNED_INTS, low=-50, high=50),
  case("int_abs", [M], lambda x: x.abs(), SIGNED_INTS, low=-50, high=50),
  case("int_floordiv", [M, M], lambda x, y: x // (y.abs() + 1), SIGNED_INTS, low=-50, high=50),
  case("int_mod", [M, M], lambda x, y: x % (y.abs() + 1), SIGNED_INTS, low=-50, high=50),
  case("int_floordiv_uint8", [M, M], lambda x, y: x // (y + 1), ("uint8",), low=0, high=100),
  case("int_and", [M, M], lambda x, y: x & y, INTS + ("bool",), low=0, high=100),
  case("int_or", [M, M], lambda x, y: x | y, INTS + ("bool",), low=0, high=100),
  case("int_xor", [M, M], lambda x, y: x ^ y, INTS + ("bool",), low=0, high=100),
  case("int_invert", [M], lambda x: ~x, INTS + ("bool",), low=-50, high=50),
  case("int_shl", [M], lambda x: x << 2, INTS, low=0, high=20),
  case("int_shr", [M], lambda x: x >> 2, INTS, low=0, high=100),
  case("int_shr_negative", [M], lambda x: x >> 1, ("int32",), low=-100, high=0),
  case("int_shl_tensor", [M, M], lambda x, y: x << y, ("int32", "int64"), low=0, high=5),
  case("int_lt", [M, M], lambda x, y: x < y, INTS, low=0, high=5),
  case("int_eq", [M, M], lambda x, y: x == y, INTS + ("bool",), low=0, high=3),
  case("int_maximum", [M, M], lambda x, y: x.maximum(y), INTS, low=0, high=100),
  case("int_where", [M, M, M], lambda xp, c, x, y: xp.where(c > 1, x, y), ("int32", "int64"), low=0, high=3),
  case("int_clamp", [M], lambda x: x.clamp(10, 40), INTS, low=0, high=50),
  case("int_pow", [M], lambda x: x ** 2, ("int32", "int64"), low=-10, high=10),
  case("int_sign", [M], lambda x: x.sign(), SIGNED_INTS, low=-3, high=3),
  case("int_overflow_wraps", [np.array([2**31 - 1, -2**31], dtype=np.int32)], lambda x: x + 1),
  case("uint8_wraps", [np.array([250, 3], dtype=np.uint8)], lambda x: x + 10),
  case("bool_logical_not", [M], lambda x: ~(x > 0)),
  case("bool_and_comparisons", [M, M], lambda x, y: (x > 0) & (y < 0)),
]

# the dtype of each input is given per input: (x dtype, y dtype)
PROMOTION = [
  case("promote_add", [M, M], lambda x, y: x + y, (("int32", "float32"), ("int64", "float16"), ("bool", "int32"),
       ("float16", "float32"), ("bfloat16", "float16"), ("uint8", "int8"), ("int8", "int64"), ("bool", "float32"),
       ("float32", "float64"), ("uint8", "bool")), low=0, high=5),
  case("promote_mul", [M, M], lambda x, y: x * y, (("int32", "float32"), ("bfloat16", "float32")), low=0, high=5),
  case("promote_truediv_ints", [M, M], lambda x, y: x / (y + 1), (("int32", "int32"), ("int64", "uint8")),
       low=0, high=5),
  case("promote_int_plus_python_float", [M], lambda x: x + 1.5, ("int32", "int64", "uint8", "bool"), low=0, high=5),
  case("promote_int_plus_python_int", [M], lambda x: x + 2, ("int8", "int32", "uint8"), low=0, high=5),
  case("promote_bool_times_python_int", [M], lambda x: x * 2, ("bool",)),
  case("promote_half_plus_python_float", [M], lambda x: x * 1.5, ("float16", "bfloat16")),
  case("promote_0d_does_not_widen", [M, SCALAR], lambda x, y: x + y, (("float32", "float64"), ("int8", "int64"),
       ("float16", "float32")), low=0, high=5),
  case("promote_0d_float_over_int", [M, SCALAR], lambda x, y: x + y, (("int32", "float64"),), low=0, high=5),
  case("promote_compare_mixed", [M, M], lambda x, y: x < y, (("int32", "float32"),), low=0, high=5),
  case("promote_where_mixed", [M, M, M], lambda xp, c, x, y: xp.where(c > 0, x, y),
       (("float32", "int32", "float32"), ("float32", "float16", "float32")), low=-2, high=2),
  case("promote_maximum_mixed", [M, M], lambda x, y: x.maximum(y), (("int32", "float32"),), low=0, high=5),
  case("promote_cat_mixed", [M, M], lambda xp, x, y: xp.cat([x, y]), (("int32", "float32"), ("float16", "float32")),
       low=0, high=5),
]

CASTS = [
  case("to_float16", [M], lambda xp, x: x.to(xp.float16), F32),
  case("to_bfloat16", [M], lambda xp, x: x.to(xp.bfloat16), F32),
  case("to_float64", [M], lambda xp, x: x.to(xp.float64), FLOATS),
  case("to_float32_from_half", [M], lambda xp, x: x.to(xp.float32), ("float16", "bfloat16")),
  case("to_int32_truncates", [M], lambda xp, x: x.to(xp.int32), FLOATS, low=-9.0, high=9.0),
  case("to_int8", [M], lambda xp, x: x.to(xp.int8), F32, low=-9.0, high=9.0),
  case("to_uint8_from_float", [M], lambda xp, x: x.to(xp.uint8), F32, low=0.0, high=200.0),
  case("to_bool_from_float", [f32([0.0, -0.0, 0.5, -2.0, np.nan])], lambda xp, x: x.to(xp.bool)),
  case("int_to_float", [M], lambda x: x.float(), INTS + ("bool",), low=-50, high=50),
  case("int_to_bool", [M], lambda x: x.bool(), INTS, low=-2, high=2),
  case("int64_to_int8_wraps", [np.array([300, -200, 127], dtype=np.int64)], lambda xp, x: x.to(xp.int8)),
  case("method_float", [M], lambda x: x.float(), ("float16",)),
  case("method_half", [M], lambda x: x.half()),
  case("method_bfloat16", [M], lambda x: x.bfloat16()),
  case("method_double", [M], lambda x: x.double()),
  case("method_int", [M], lambda x: x.int(), low=-9.0, high=9.0),
  case("method_long", [M], lambda x: x.long(), low=-9.0, high=9.0),
  case("method_bool", [M], lambda x: x.bool(), ("int32",), low=-1, high=1),
  case("cast_grad_roundtrip", [M], lambda xp, x: (x.to(xp.float16) * 2).to(xp.float32)),
  case("bitcast_float_to_int", [M], lambda xp, x: x.view(xp.int32), ("float32",)),
  case("bitcast_half_to_int16", [M], lambda xp, x: x.view(xp.int16), ("float16", "bfloat16")),
  case("bitcast_int_to_float", [np.array([0x3F800000, 0x40490FDB, 0], dtype=np.int32)],
       lambda xp, x: x.view(xp.float32)),
  case("bitcast_uint8_to_int32", [(2, 8)], lambda xp, x: x.view(xp.int32), ("uint8",), low=0, high=255,
       known_divergence="view(dtype) between element sizes is not implemented yet"),
]

# ---------------- reductions ----------------

REDUCE = [
  case("sum", [M], lambda x: x.sum(), FLOATS),
  case("sum_dim0", [M], lambda x: x.sum(dim=0), FLOATS),
  case("sum_dim_negative", [T3], lambda x: x.sum(dim=-1)),
  case("sum_dims_tuple", [T3], lambda x: x.sum(dim=(0, 2))),
  case("sum_keepdim", [T3], lambda x: x.sum(dim=1, keepdim=True), FLOATS),
  case("sum_0d", [SCALAR], lambda x: x.sum()),
  case("sum_empty", [EMPTY], lambda x: x.sum()),
  case("sum_empty_dim", [EMPTY], lambda x: x.sum(dim=0)),
  case("sum_int_gives_int64", [M], lambda x: x.sum(), INTS + ("bool",), low=0, high=100),
  case("sum_int_dim", [M], lambda x: x.sum(dim=1), ("int32", "uint8"), low=0, high=100),
  case("sum_dtype_arg", [M], lambda xp, x: x.sum(dtype=xp.float32), ("float16",)),
  case("mean", [M], lambda x: x.mean(), FLOATS),
  case("mean_dim", [T3], lambda x: x.mean(dim=1), FLOATS),
  case("mean_dims_keepdim", [T3], lambda x: x.mean(dim=(1, 2), keepdim=True)),
  case("mean_empty_is_nan", [EMPTY], lambda x: x.mean(), forward_only=True),
  case("prod", [M], lambda x: x.prod(), F32, low=0.5, high=1.5),
  case("prod_dim", [M], lambda x: x.prod(dim=1), FLOATS, low=0.5, high=1.5),
  case("prod_with_zero", [f32([[1.0, 0.0, 3.0], [2.0, 3.0, 4.0]])], lambda x: x.prod(dim=1)),
  case("prod_int", [M], lambda x: x.prod(dim=0), ("int32",), low=1, high=5),
  case("max_all", [M], lambda x: x.max(), FLOATS),
  case("max_dim", [M], lambda x: x.max(dim=1)),
  case("max_dim_keepdim", [T3], lambda x: x.max(dim=0, keepdim=True)),
  case("max_dim_negative", [T3], lambda x: x.max(-1), FLOATS),
  case("min_all", [M], lambda x: x.min()),
  case("min_dim", [T3], lambda x: x.min(dim=1)),
  case("max_int", [M], lambda x: x.max(dim=1), INTS, low=0, high=100),
  case("max_all_ties", [f32([[1.0, 3.0, 3.0], [3.0, 0.0, 2.0]])], lambda x: x.max()),
  case("max_dim_ties", [f32([[1.0, 3.0, 3.0], [3.0, 0.0, 3.0]])], lambda x: x.max(dim=1)),
  case("amax", [T3], lambda x: x.amax(dim=(0, 2))),
  case("amax_ties", [f32([[1.0, 3.0, 3.0], [3.0, 0.0, 2.0]])], lambda x: x.amax(dim=1)),
  case("amin_keepdim", [T3], lambda x: x.amin(dim=-1, keepdim=True), FLOATS),
  case("argmax", [M], lambda x: x.argmax(), FLOATS),
  case("argmax_dim", [T3], lambda x: x.argmax(dim=1)),
  case("argmax_keepdim", [M], lambda x: x.argmax(dim=0, keepdim=True)),
  case("argmax_ties_first", [f32([[1.0, 3.0, 3.0], [2.0, 2.0, 0.0]])], lambda x: x.argmax(dim=1)),
  case("argmin_dim", [M], lambda x: x.argmin(dim=-1), FLOATS),
  case("argmin_int", [M], lambda x: x.argmin(dim=0), ("int32",), low=0, high=100),
  case("var", [M], lambda x: x.var(), FLOATS),
  case("var_dim", [T3], lambda x: x.var(dim=1)),
  case("var_correction0", [T3], lambda x: x.var(dim=(0, 2), correction=0)),
  case("var_keepdim", [M], lambda x: x.var(dim=1, keepdim=True)),
  case("std", [M], lambda x: x.std(), FLOATS),
  case("std_dim_correction0", [T3], lambda x: x.std(dim=-1, correction=0)),
  case("std_keepdim", [M], lambda x: x.std(dim=0, keepdim=True)),
  case("any", [M], lambda x: (x > 1.5).any()),
  case("any_dim", [M], lambda x: (x > 1).any(dim=1)),
  case("all", [M], lambda x: (x > -1.9).all()),
  case("all_dim_keepdim", [M], lambda x: (x > 0).all(dim=0, keepdim=True)),
  case("any_bool_input", [M], lambda x: x.any(dim=0), ("bool",)),
  case("all_int_input", [M], lambda x: x.all(), ("int32",), low=0, high=3),
  case("all_empty_is_true", [EMPTY], lambda x: (x > 0).all()),
  case("logsumexp", [M], lambda x: x.logsumexp(dim=1), FLOATS),
  case("logsumexp_large", [f32([[1000.0, 1000.0], [-1000.0, 0.0]])], lambda x: x.logsumexp(dim=1)),
  case("logsumexp_tuple_keepdim", [T3], lambda x: x.logsumexp(dim=(0, 1), keepdim=True)),
  case("softmax", [M], lambda x: x.softmax(dim=-1), FLOATS),
  case("softmax_dim0", [T3], lambda x: x.softmax(dim=0)),
  case("softmax_large", [f32([[1000.0, 999.0, -1000.0]])], lambda x: x.softmax(dim=1)),
  case("log_softmax", [M], lambda x: x.log_softmax(dim=1), FLOATS),
  case("log_softmax_dim1_3d", [T3], lambda x: x.log_softmax(dim=1)),
  case("cumsum", [M], lambda x: x.cumsum(dim=1), FLOATS),
  case("cumsum_dim0", [T3], lambda x: x.cumsum(dim=0)),
  case("cumsum_negative_dim", [T3], lambda x: x.cumsum(-1)),
  case("cumsum_int", [M], lambda x: x.cumsum(dim=1), ("int32",), low=0, high=10),
  case("cummax", [M], lambda x: x.cummax(dim=1)),
  case("cummax_dim0", [T3], lambda x: x.cummax(dim=0)),
]

# ---------------- movement ----------------

MOVEMENT = [
  case("reshape", [M], lambda x: x.reshape(2, 6), FLOATS),
  case("reshape_tuple", [T3], lambda x: x.reshape((4, 6))),
  case("reshape_infer", [T3], lambda x: x.reshape(-1, 4)),
  case("reshape_to_0d", [(1, 1)], lambda x: x.reshape(())),
  case("reshape_from_0d", [SCALAR], lambda x: x.reshape(1, 1, 1)),
  case("reshape_empty", [EMPTY], lambda x: x.reshape(2, 0, 2)),
  case("view", [T3], lambda x: x.view(6, 4)),
  case("view_infer", [M], lambda x: x.view(-1)),
  case("permute", [T3], lambda x: x.permute(2, 0, 1), FLOATS),
  case("permute_negative", [T3], lambda x: x.permute(-1, -3, -2)),
  case("transpose", [M], lambda x: x.transpose(0, 1), FLOATS),
  case("transpose_negative", [T3], lambda x: x.transpose(-1, -3)),
  case("T", [M], lambda x: x.T),
  case("t_method", [M], lambda x: x.t()),
  case("expand", [(3, 1)], lambda x: x.expand(3, 4), FLOATS),
  case("expand_new_dims", [V], lambda x: x.expand(2, 3, 4)),
  case("expand_minus_one", [(1, 4)], lambda x: x.expand(3, -1)),
  case("expand_as", [(3, 1), M], lambda x, y: x.expand_as(y) * y),
  case("squeeze_all", [(1, 3, 1, 4)], lambda x: x.squeeze()),
  case("squeeze_dim", [(1, 3, 1, 4)], lambda x: x.squeeze(2)),
  case("squeeze_non_one_dim_is_noop", [M], lambda x: x.squeeze(0)),
  case("squeeze_negative", [(3, 4, 1)], lambda x: x.squeeze(-1)),
  case("unsqueeze", [M], lambda x: x.unsqueeze(0), FLOATS),
  case("unsqueeze_negative", [M], lambda x: x.unsqueeze(-1)),
  case("unsqueeze_middle", [M], lambda x: x.unsqueeze(1)),
  case("unsqueeze_0d", [SCALAR], lambda x: x.unsqueeze(0)),
  case("flatten", [T3], lambda x: x.flatten()),
  case("flatten_start", [T3], lambda x: x.flatten(1)),
  case("flatten_range", [(2, 3, 2, 2)], lambda x: x.flatten(1, 2)),
  case("flatten_0d", [SCALAR], lambda x: x.flatten()),
  case("unflatten", [M], lambda x: x.unflatten(1, (2, 2))),
  case("unflatten_infer", [T3], lambda x: x.unflatten(-1, (2, -1))),
  case("split_size", [M], lambda x: x.split(2, dim=1), FLOATS),
  case("split_uneven", [(5, 4)], lambda x: x.split(2)),
  case("split_sizes_list", [M], lambda x: x.split([1, 3], dim=1)),
  case("chunk", [M], lambda x: x.chunk(2, dim=1)),
  case("chunk_uneven", [(5, 4)], lambda x: x.chunk(3)),
  case("flip", [M], lambda x: x.flip(0), FLOATS),
  case("flip_dims", [T3], lambda x: x.flip((0, 2))),
  case("flip_negative", [T3], lambda x: x.flip(-1)),
  case("roll", [M], lambda x: x.roll(1, 0)),
  case("roll_negative_shift", [M], lambda x: x.roll(-1, 1)),
  case("roll_dims", [T3], lambda x: x.roll((1, 2), (0, 2))),
  case("roll_flattened", [M], lambda x: x.roll(5)),
  case("repeat", [M], lambda x: x.repeat(2, 1), FLOATS),
  case("repeat_new_dims", [M], lambda x: x.repeat(2, 1, 2)),
  case("tile", [M], lambda x: x.tile((1, 2))),
  case("tile_fewer_dims", [T3], lambda x: x.tile((2,))),
  case("triu", [M], lambda x: x.triu(), FLOATS),
  case("triu_offset", [(4, 4)], lambda x: x.triu(1)),
  case("tril", [M], lambda x: x.tril()),
  case("tril_negative_offset", [T3], lambda x: x.tril(-1)),
  case("tril_int", [M], lambda x: x.tril(), ("int32",), low=0, high=9),
  case("contiguous", [M], lambda x: x.T.contiguous()),
  case("cat", [M, M], lambda xp, x, y: xp.cat([x, y]), FLOATS),
  case("cat_dim1", [M, (3, 2)], lambda xp, x, y: xp.cat([x, y], dim=1)),
  case("cat_negative_dim", [T3, T3, T3], lambda xp, x, y, z: xp.cat((x, y, z), dim=-1)),
  case("cat_single", [M], lambda xp, x: xp.cat([x])),
  case("cat_with_empty", [M, EMPTY], lambda xp, x, y: xp.cat([x, y])),
  case("cat_int", [M, M], lambda xp, x, y: xp.cat([x, y], dim=1), ("int32",), low=0, high=9),
  case("stack", [M, M], lambda xp, x, y: xp.stack([x, y]), FLOATS),
  case("stack_dim1", [M, M, M], lambda xp, x, y, z: xp.stack([x, y, z], dim=1)),
  case("stack_last_dim", [M, M], lambda xp, x, y: xp.stack((x, y), dim=-1)),
  case("stack_0d", [SCALAR, SCALAR], lambda xp, x, y: xp.stack([x, y])),
  case("slice_then_reshape", [T3], lambda x: x[:, 1:].reshape(2, 8).T),
  case("permute_then_expand", [(2, 1, 4)], lambda x: x.permute(1, 0, 2).expand(3, 2, 4) * 2),
]

GATHER_SCATTER = [
  case("gather", [M, idx(0, 3, 1, 1, 2, 0).reshape(3, 2)], lambda x, i: x.gather(1, i), FLOATS),
  case("gather_dim0", [M, idx(2, 0, 1, 1, 0, 2, 2, 2).reshape(2, 4)], lambda x, i: x.gather(0, i)),
  case("gather_module_negative_dim", [T3, idx(*[0, 3] * 6).reshape(2, 3, 2)], lambda xp, x, i: xp.gather(x, -1, i)),
  case("gather_int", [M, idx(0, 3, 1, 1, 2, 0).reshape(3, 2)], lambda x, i: x.gather(1, i), ("int32",), low=0, high=9),
  case("scatter", [M, idx(0, 3, 1, 2, 2, 0).reshape(3, 2), (3, 2)], lambda x, i, s: x.scatter(1, i, s)),
  case("scatter_scalar", [M, idx(1, 2).reshape(1, 2)], lambda x, i: x.scatter(0, i, 5.0)),
  case("scatter_reduce_add", [M, idx(0, 0, 1, 1, 2, 2).reshape(3, 2), (3, 2)],
       lambda x, i, s: x.scatter_add(1, i, s)),
  case("index_select", [M, idx(2, 0, 2)], lambda x, i: x.index_select(0, i), FLOATS),
  case("index_select_dim1", [T3, idx(3, 1)], lambda x, i: x.index_select(-1, i)),
  case("masked_fill", [M, M], lambda x, m: x.masked_fill(m > 0, -1.5), FLOATS),
  case("masked_fill_broadcast_mask", [M, V], lambda x, m: x.masked_fill(m > 0, 0.0)),
  case("masked_fill_neg_inf_softmax", [M, M], lambda x, m: x.masked_fill(m > 1.5, float("-inf")).softmax(-1)),
  case("topk", [M], lambda x: x.topk(2), FLOATS[:2]),
  case("topk_dim0_smallest", [T3], lambda x: x.topk(2, dim=0, largest=False)),
  case("topk_module", [(8,)], lambda xp, x: xp.topk(x, 3)),
  case("sort", [M], lambda x: x.sort()),
  case("sort_descending_dim0", [T3], lambda x: x.sort(dim=0, descending=True)),
  case("sort_module", [(8,)], lambda xp, x: xp.sort(x)),
  case("sort_int", [M], lambda x: x.sort(stable=True), ("int32",), low=0, high=100),
]

# ---------------- matmul, einsum ----------------

MATMUL = [
  case("matmul", [M, (4, 5)], lambda x, y: x @ y, FLOATS, atol=1e-5),
  case("matmul_vector_matrix", [V, (4, 5)], lambda x, y: x @ y, atol=1e-5),
  case("matmul_matrix_vector", [M, V], lambda x, y: x.matmul(y), atol=1e-5),
  case("matmul_dot", [V, V], lambda x, y: x @ y, atol=1e-5),
  case("matmul_batched", [T3, (2, 4, 5)], lambda x, y: x @ y, FLOATS, atol=1e-5),
  case("matmul_broadcast_batch", [T3, (4, 5)], lambda x, y: x @ y, atol=1e-5),
  case("matmul_broadcast_4d", [(2, 1, 3, 4), (3, 4, 2)], lambda x, y: x @ y, atol=1e-5),
  case("matmul_module", [M, (4, 5)], lambda xp, x, y: xp.matmul(x, y), atol=1e-5),
  case("matmul_int", [M, (4, 5)], lambda x, y: x @ y, ("int32", "int64"), low=-5, high=5),
  case("matmul_transposed_operand", [M, (5, 4)], lambda x, y: x @ y.T, atol=1e-5),
  case("matmul_empty_inner", [(3, 0), (0, 4)], lambda x, y: x @ y),
  case("einsum_matmul", [M, (4, 5)], lambda xp, x, y: xp.einsum("ij,jk->ik", x, y), atol=1e-5),
  case("einsum_batched", [T3, (2, 4, 5)], lambda xp, x, y: xp.einsum("bij,bjk->bik", x, y), atol=1e-5),
  case("einsum_outer", [V, (3,)], lambda xp, x, y: xp.einsum("i,j->ij", x, y)),
  case("einsum_transpose", [M], lambda xp, x: xp.einsum("ij->ji", x)),
  case("einsum_sum_all", [M], lambda xp, x: xp.einsum("ij->", x)),
  case("einsum_diagonal", [(4, 4)], lambda xp, x: xp.einsum("ii->i", x)),
  case("einsum_trace", [(4, 4)], lambda xp, x: xp.einsum("ii", x)),
  case("einsum_implicit_output", [M, (4, 5)], lambda xp, x, y: xp.einsum("ij,jk", x, y), atol=1e-5),
  case("einsum_attention_like", [ATTN, ATTN], lambda xp, q, k: xp.einsum("bhqd,bhkd->bhqk", q, k), atol=1e-5),
]

# ---------------- in-place ----------------
# in-place ops act on a non-leaf copy (torch refuses them on a leaf that requires grad) so backward still runs

def inplace_then_use_both(x, y):
  z = x * 2
  z.add_(y)
  return z * z


def inplace_through_view(x):
  z = x * 1
  z[0].mul_(0)  # writes through the view into z
  return z


INPLACE = [
  case("add_", [M, M], lambda x, y: (x * 1).add_(y), FLOATS),
  case("sub_", [M, M], lambda x, y: (x * 1).sub_(y)),
  case("mul_", [M, M], lambda x, y: (x * 1).mul_(y), FLOATS),
  case("div_", [M, M], lambda x, y: (x * 1).div_(y), low=0.5, high=2.0),
  case("add_broadcast_", [M, V], lambda x, y: (x * 1).add_(y)),
  case("add_scalar_", [M], lambda x: (x * 1).add_(2.5)),
  case("mul_scalar_", [M], lambda x: (x * 1).mul_(-3)),
  case("clamp_", [M], lambda x: (x * 1).clamp_(-0.5, 0.5)),
  case("pow_", [M], lambda x: (x * 1).pow_(2)),
  case("relu_", [M], lambda x: (x * 1).relu_()),
  case("sigmoid_", [M], lambda x: (x * 1).sigmoid_()),
  case("exp_", [M], lambda x: (x * 1).exp_()),
  case("neg_", [M], lambda x: (x * 1).neg_()),
  case("abs_", [M], lambda x: (x * 1).abs_()),
  case("masked_fill_", [M, M], lambda x, m: (x * 1).masked_fill_(m > 0, 0.25)),
  case("fill_", [M], lambda x: x.detach().fill_(3.0), forward_only=True),
  case("zero_", [M], lambda x: x.detach().zero_(), forward_only=True),
  case("inplace_then_use_both", [M, M], lambda x, y: inplace_then_use_both(x, y)),
  case("inplace_is_visible_through_view", [M], lambda x: inplace_through_view(x),
       known_divergence="in-place ops rebind the tensor; views taken earlier keep the old value (docs/architecture.md)"),
  case("int_add_", [M, M], lambda x, y: x.add_(y), ("int32", "uint8"), low=0, high=50),
  case("int_mul_", [M, M], lambda x, y: x.mul_(y), ("int32", "int64"), low=-9, high=9),
  case("inplace_on_detached_leaf", [M], lambda x: x.detach().mul_(2), forward_only=True),
]

# ---------------- nn.functional ----------------

ACTIVATIONS = [
  case("F_relu", [M], lambda F, x: F.relu(x), FLOATS),
  case("F_leaky_relu", [M], lambda F, x: F.leaky_relu(x, 0.1), FLOATS),
  case("F_leaky_relu_default", [M], lambda F, x: F.leaky_relu(x)),
  case("F_gelu", [M], lambda F, x: F.gelu(x), FLOATS),
  case("F_gelu_tanh", [M], lambda F, x: F.gelu(x, approximate="tanh"), FLOATS),
  case("F_silu", [M], lambda F, x: F.silu(x), FLOATS),
  case("F_softplus", [M], lambda F, x: F.softplus(x), FLOATS),
  case("F_softplus_beta_threshold", [M], lambda F, x: F.softplus(x, beta=2.0, threshold=1.0)),
  case("F_softplus_large", [f32([-100.0, 0.0, 30.0, 100.0])], lambda F, x: F.softplus(x)),
  case("F_mish", [M], lambda F, x: F.mish(x), FLOATS),
  case("F_elu", [M], lambda F, x: F.elu(x), FLOATS),
  case("F_elu_alpha", [M], lambda F, x: F.elu(x, alpha=0.5)),
  case("F_hardswish", [M], lambda F, x: F.hardswish(x), FLOATS, low=-4.0, high=4.0),
  case("F_sigmoid", [M], lambda F, x: F.sigmoid(x), FLOATS),
  case("F_tanh", [M], lambda F, x: F.tanh(x), FLOATS),
  # stable formulations built on abs()/relu() can lose the gradient at exactly 0
  case("F_sigmoid_at_zero", [f32([-1.0, 0.0, 1.0])], lambda F, x: F.sigmoid(x)),
  case("F_tanh_at_zero", [f32([-1.0, 0.0, 1.0])], lambda F, x: F.tanh(x)),
  case("F_softplus_at_zero", [f32([-1.0, 0.0, 1.0])], lambda F, x: F.softplus(x)),
  case("F_mish_at_zero", [f32([-1.0, 0.0, 1.0])], lambda F, x: F.mish(x)),
  case("F_gelu_tanh_at_zero", [f32([-1.0, 0.0, 1.0])], lambda F, x: F.gelu(x, approximate="tanh")),
  case("F_elu_at_zero", [f32([-1.0, 0.0, 1.0])], lambda F, x: F.elu(x)),
  case("F_softmax", [T3], lambda F, x: F.softmax(x, dim=1), FLOATS),
  case("F_log_softmax", [T3], lambda F, x: F.log_softmax(x, dim=-1), FLOATS),
  case("F_softmax_dtype", [M], lambda xp, x: xp.nn.functional.softmax(x, dim=-1, dtype=xp.float32), ("float16",)),
]

PAD = [
  case("F_pad_constant_last_dim", [M], lambda F, x: F.pad(x, (1, 2)), FLOATS),
  case("F_pad_constant_2d_value", [M], lambda F, x: F.pad(x, (1, 1, 2, 0), value=-1.0)),
  case("F_pad_negative_crops", [M], lambda F, x: F.pad(x, (-1, 1))),
  case("F_pad_constant_3d", [T3], lambda F, x: F.pad(x, (0, 1, 1, 0, 1, 1))),
  case("F_pad_reflect_1d", [T3], lambda F, x: F.pad(x, (2, 1), mode="reflect")),
  case("F_pad_reflect_2d", [IMG], lambda F, x: F.pad(x, (1, 2, 2, 1), mode="reflect")),
  case("F_pad_replicate_1d", [T3], lambda F, x: F.pad(x, (1, 3), mode="replicate")),
  case("F_pad_replicate_2d", [IMG], lambda F, x: F.pad(x, (2, 0, 1, 1), mode="replicate")),
  case("F_pad_int", [M], lambda F, x: F.pad(x, (1, 1), value=7), ("int32",), low=0, high=9),
]

NN = [
  case("F_linear", [(2, 4), (3, 4), (3,)], lambda F, x, w, b: F.linear(x, w, b), FLOATS, atol=1e-5),
  case("F_linear_no_bias", [T3, (5, 4)], lambda F, x, w: F.linear(x, w), atol=1e-5),
  case("F_conv1d", [(2, 3, 8), (4, 3, 3), (4,)], lambda F, x, w, b: F.conv1d(x, w, b), atol=1e-5),
  case("F_conv1d_stride_padding", [(2, 3, 8), (4, 3, 3)], lambda F, x, w: F.conv1d(x, w, stride=2, padding=1),
       atol=1e-5),
  case("F_conv2d", [IMG, (4, 3, 3, 3), (4,)], lambda F, x, w, b: F.conv2d(x, w, b), FLOATS, atol=1e-5),
  case("F_conv2d_stride", [IMG, (4, 3, 3, 3)], lambda F, x, w: F.conv2d(x, w, stride=2), atol=1e-5),
  case("F_conv2d_padding", [IMG, (4, 3, 3, 3)], lambda F, x, w: F.conv2d(x, w, padding=1), atol=1e-5),
  case("F_conv2d_padding_tuple", [IMG, (4, 3, 3, 1)], lambda F, x, w: F.conv2d(x, w, padding=(1, 0)), atol=1e-5),
  case("F_conv2d_padding_same", [IMG, (4, 3, 3, 3)], lambda F, x, w: F.conv2d(x, w, padding="same"), atol=1e-5),
  case("F_conv2d_dilation", [IMG, (4, 3, 2, 2)], lambda F, x, w: F.conv2d(x, w, dilation=2), atol=1e-5),
  case("F_conv2d_groups", [(2, 4, 6, 6), (4, 2, 3, 3)], lambda F, x, w: F.conv2d(x, w, groups=2), atol=1e-5),
  case("F_conv2d_depthwise", [IMG, (3, 1, 3, 3)], lambda F, x, w: F.conv2d(x, w, groups=3, padding=1), atol=1e-5),
  case("F_conv2d_all_options", [(1, 4, 6, 6), (2, 2, 3, 3), (2,)],
       lambda F, x, w, b: F.conv2d(x, w, b, stride=2, padding=2, dilation=2, groups=2), atol=1e-5),
  case("F_conv2d_1x1", [IMG, (5, 3, 1, 1)], lambda F, x, w: F.conv2d(x, w), atol=1e-5),
  case("F_conv_transpose2d", [IMG, (3, 2, 3, 3)], lambda F, x, w: F.conv_transpose2d(x, w), atol=1e-5),
  case("F_conv_transpose2d_stride", [IMG, (3, 2, 3, 3), (2,)],
       lambda F, x, w, b: F.conv_transpose2d(x, w, b, stride=2), atol=1e-5),
  case("F_conv_transpose2d_padding_output_padding", [IMG, (3, 2, 3, 3)],
       lambda F, x, w: F.conv_transpose2d(x, w, stride=2, padding=1, output_padding=1), atol=1e-5),
  case("F_conv_transpose2d_groups_dilation", [(1, 4, 4, 4), (4, 1, 2, 2)],
       lambda F, x, w: F.conv_transpose2d(x, w, groups=2, dilation=2), atol=1e-5),
  case("F_max_pool2d", [IMG], lambda F, x: F.max_pool2d(x, 2), FLOATS[:2]),
  case("F_max_pool2d_stride_padding", [IMG], lambda F, x: F.max_pool2d(x, 3, stride=2, padding=1)),
  case("F_max_pool2d_ceil_mode", [(1, 2, 5, 5)], lambda F, x: F.max_pool2d(x, 2, ceil_mode=True)),
  case("F_max_pool2d_dilation", [IMG], lambda F, x: F.max_pool2d(x, 2, dilation=2)),
  case("F_max_pool2d_rect_kernel", [IMG], lambda F, x: F.max_pool2d(x, (2, 3))),
  case("F_avg_pool2d", [IMG], lambda F, x: F.avg_pool2d(x, 2), FLOATS[:2]),
  case("F_avg_pool2d_padding", [IMG], lambda F, x: F.avg_pool2d(x, 3, stride=2, padding=1)),
  case("F_avg_pool2d_exclude_pad", [IMG],
       lambda F, x: F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)),
  case("F_avg_pool2d_ceil_mode", [(1, 2, 5, 5)], lambda F, x: F.avg_pool2d(x, 2, ceil_mode=True)),
  case("F_interpolate_nearest_scale", [IMG], lambda F, x: F.interpolate(x, scale_factor=2, mode="nearest")),
  case("F_interpolate_nearest_size", [IMG], lambda F, x: F.interpolate(x, size=(4, 9), mode="nearest")),
  case("F_interpolate_bilinear", [IMG], lambda F, x: F.interpolate(x, size=(9, 4), mode="bilinear")),
  case("F_interpolate_bilinear_align_corners", [IMG],
       lambda F, x: F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)),
  case("F_embedding", [idx(0, 4, 2, 4).reshape(2, 2), (5, 3)], lambda F, i, w: F.embedding(i, w), FLOATS),
  case("F_embedding_1d", [idx(1, 1, 0), (5, 3)], lambda F, i, w: F.embedding(i, w)),
  case("F_dropout_eval", [M], lambda F, x: F.dropout(x, 0.5, training=False)),
  case("F_dropout_p0", [M], lambda F, x: F.dropout(x, 0.0)),
  case("F_dropout_p1", [M], lambda F, x: F.dropout(x, 1.0)),
  case("F_layer_norm", [T3, V, V], lambda F, x, w, b: F.layer_norm(x, (4,), w, b, eps=1e-5), FLOATS),
  case("F_layer_norm_no_affine", [T3], lambda F, x: F.layer_norm(x, (3, 4))),
  case("F_rms_norm", [T3, V], lambda F, x, w: F.rms_norm(x, (4,), w, eps=1e-6), FLOATS),
  case("F_rms_norm_no_weight", [T3], lambda F, x: F.rms_norm(x, (4,))),
  case("F_batch_norm_training", [IMG, (3,), (3,)],
       lambda F, x, w, b: F.batch_norm(x, None, None, w, b, training=True)),
  case("F_batch_norm_eval", [IMG, (3,), (3,), (3,), (3,)],
       lambda F, x, mean, var, w, b: F.batch_norm(x, mean.detach(), var.detach().abs() + 0.5, w, b, training=False)),
  case("F_batch_norm_1d_input", [(5, 3)], lambda F, x: F.batch_norm(x, None, None, training=True)),
  case("F_group_norm", [(2, 4, 3, 3), V, V], lambda F, x, w, b: F.group_norm(x, 2, w, b)),
  case("F_group_norm_no_affine", [(2, 4, 3, 3)], lambda F, x: F.group_norm(x, 4)),
  case("F_sdpa", [ATTN, ATTN, ATTN], lambda F, q, k, v: F.scaled_dot_product_attention(q, k, v), FLOATS, atol=1e-5),
  case("F_sdpa_causal", [ATTN, ATTN, ATTN],
       lambda F, q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True), FLOATS, atol=1e-5),
  case("F_sdpa_bool_mask", [ATTN, ATTN, ATTN, (3, 3)],
       lambda F, q, k, v, m: F.scaled_dot_product_attention(q, k, v, attn_mask=(m > -1.0)), atol=1e-5),
  case("F_sdpa_float_mask", [ATTN, ATTN, ATTN, (3, 3)],
       lambda F, q, k, v, m: F.scaled_dot_product_attention(q, k, v, attn_mask=m), atol=1e-5),
  case("F_sdpa_scale", [ATTN, ATTN, ATTN], lambda F, q, k, v: F.scaled_dot_product_attention(q, k, v, scale=0.3),
       atol=1e-5),
  case("F_sdpa_gqa", [(1, 4, 3, 4), (1, 2, 3, 4), (1, 2, 3, 4)],
       lambda F, q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True), atol=1e-5),
  case("F_sdpa_cross_lengths", [(2, 2, 3, 4), (2, 2, 5, 4), (2, 2, 5, 4)],
       lambda F, q, k, v: F.scaled_dot_product_attention(q, k, v), atol=1e-5),
  case("F_one_hot", [idx(0, 2, 1, 4)], lambda F, i: F.one_hot(i)),
  case("F_one_hot_num_classes", [idx(0, 2, 1, 1).reshape(2, 2)], lambda F, i: F.one_hot(i, num_classes=6)),
]

LOSSES = [
  case("F_cross_entropy", [(4, 5), idx(1, 0, 4, 2)], lambda F, x, t: F.cross_entropy(x, t), FLOATS),
  case("F_cross_entropy_label_smoothing", [(4, 5), idx(1, 0, 4, 2)],
       lambda F, x, t: F.cross_entropy(x, t, label_smoothing=0.1)),
  case("F_cross_entropy_ignore_index", [(4, 5), idx(1, -100, 4, 2)], lambda F, x, t: F.cross_entropy(x, t)),
  case("F_cross_entropy_ignore_index_custom", [(4, 5), idx(1, 3, 4, 3)],
       lambda F, x, t: F.cross_entropy(x, t, ignore_index=3)),
  case("F_cross_entropy_sum", [(4, 5), idx(1, 0, 4, 2)], lambda F, x, t: F.cross_entropy(x, t, reduction="sum")),
  case("F_cross_entropy_none", [(4, 5), idx(1, 0, 4, 2)], lambda F, x, t: F.cross_entropy(x, t, reduction="none")),
  case("F_cross_entropy_probabilities", [(4, 5), (4, 5)],
       lambda F, x, p: F.cross_entropy(x, p.softmax(-1).detach())),
  case("F_cross_entropy_spatial", [(2, 5, 3), idx(0, 1, 4, 2, 2, 3).reshape(2, 3)],
       lambda F, x, t: F.cross_entropy(x, t)),
  case("F_cross_entropy_smoothing_and_ignore", [(4, 5), idx(1, -100, 4, 2)],
       lambda F, x, t: F.cross_entropy(x, t, label_smoothing=0.2)),
  case("F_nll_loss", [(4, 5), idx(1, 0, 4, 2)], lambda F, x, t: F.nll_loss(x.log_softmax(-1), t)),
  case("F_nll_loss_none", [(4, 5), idx(1, 0, 4, 2)], lambda F, x, t: F.nll_loss(x, t, reduction="none")),
  case("F_nll_loss_ignore_index", [(4, 5), idx(1, 0, 4, 0)], lambda F, x, t: F.nll_loss(x, t, ignore_index=0)),
  case("F_mse_loss", [M, M], lambda F, x, y: F.mse_loss(x, y), FLOATS),
  case("F_mse_loss_sum", [M, M], lambda F, x, y: F.mse_loss(x, y, reduction="sum")),
  case("F_mse_loss_none", [M, M], lambda F, x, y: F.mse_loss(x, y, reduction="none")),
  case("F_l1_loss", [M, M], lambda F, x, y: F.l1_loss(x, y), FLOATS),
  case("F_l1_loss_none", [M, M], lambda F, x, y: F.l1_loss(x, y, reduction="none")),
  case("F_binary_cross_entropy", [M, M], lambda F, x, y: F.binary_cross_entropy(x.sigmoid(), y.sigmoid().detach())),
  case("F_binary_cross_entropy_sum", [M, M],
       lambda F, x, y: F.binary_cross_entropy(x.sigmoid(), (y > 0).float(), reduction="sum")),
  case("F_bce_with_logits", [M, M], lambda F, x, y: F.binary_cross_entropy_with_logits(x, (y > 0).float()), FLOATS),
  case("F_bce_with_logits_pos_weight", [M, M, V],
       lambda F, x, y, w: F.binary_cross_entropy_with_logits(x, y.sigmoid(), pos_weight=w.abs().detach())),
  case("F_bce_with_logits_large", [f32([-100.0, 100.0, 0.0]), f32([1.0, 0.0, 0.5])],
       lambda F, x, y: F.binary_cross_entropy_with_logits(x, y, reduction="none")),
]

# ---------------- creation and tensor properties (no random inputs) ----------------

CREATION = [
  case("zeros", [], lambda xp: xp.zeros(2, 3)),
  case("zeros_tuple_dtype", [], lambda xp: xp.zeros((2, 3), dtype=xp.int32)),
  case("ones", [], lambda xp: xp.ones(3, dtype=xp.float16)),
  case("ones_0d", [], lambda xp: xp.ones(())),
  case("empty_shape", [], lambda xp: xp.empty(2, 0, 3)),
  case("full_float", [], lambda xp: xp.full((2, 3), 1.5)),
  case("full_int_infers_int64", [], lambda xp: xp.full((2,), 3)),
  case("full_bool", [], lambda xp: xp.full((2,), True)),
  case("full_dtype", [], lambda xp: xp.full((2, 2), 7, dtype=xp.uint8)),
  case("arange_end", [], lambda xp: xp.arange(5)),
  case("arange_start_end_step", [], lambda xp: xp.arange(2, 11, 3)),
  case("arange_negative_step", [], lambda xp: xp.arange(5, -3, -2)),
  case("arange_float", [], lambda xp: xp.arange(0, 1, 0.25)),
  case("arange_dtype", [], lambda xp: xp.arange(4, dtype=xp.float32)),
  case("arange_empty", [], lambda xp: xp.arange(3, 3)),
  case("linspace", [], lambda xp: xp.linspace(0, 1, 5)),
  case("linspace_negative", [], lambda xp: xp.linspace(3, -1, 7)),
  case("linspace_one_step", [], lambda xp: xp.linspace(2, 5, 1)),
  case("eye", [], lambda xp: xp.eye(3)),
  case("eye_rect", [], lambda xp: xp.eye(2, 4)),
  case("tensor_int_list", [], lambda xp: xp.tensor([[1, 2], [3, 4]])),
  case("tensor_float_list", [], lambda xp: xp.tensor([1.0, 2.5])),
  case("tensor_bool_scalar", [], lambda xp: xp.tensor(True)),
  case("tensor_mixed_list", [], lambda xp: xp.tensor([1, 2.5, True])),
  case("tensor_float64_numpy", [], lambda xp: xp.tensor(np.array([1.0, 2.0]))),
  case("tensor_int32_numpy", [], lambda xp: xp.tensor(np.array([1, 2], dtype=np.int32))),
  case("tensor_dtype_arg", [], lambda xp: xp.tensor([1, 2], dtype=xp.float32)),
  case("Tensor_constructor_scalar", [], lambda xp: xp.tensor(3.5)),
  case("zeros_like", [M], lambda xp, x: xp.zeros_like(x), ("float32", "int32")),
  case("ones_like_dtype", [M], lambda xp, x: xp.ones_like(x, dtype=xp.int64)),
  case("full_like", [M], lambda xp, x: xp.full_like(x, 2.5)),
  case("full_like_int", [M], lambda xp, x: xp.full_like(x, 2.5), ("int32",)),
  case("shape_and_size", [T3], lambda x: (x.ndim, x.numel(), tuple(x.shape), tuple(x.size()), x.size(1), x.size(-1))),
  case("item", [SCALAR], lambda x: x.item()),
  case("item_int", [(1,)], lambda x: x.item(), ("int64",)),
  case("item_bool", [(1, 1)], lambda x: x.item(), ("bool",)),
  case("tolist", [M], lambda x: x.tolist()),
  case("tolist_int", [M], lambda x: x.tolist(), ("int32",)),
  case("tolist_0d", [SCALAR], lambda x: x.tolist()),
  case("len", [M], lambda x: len(x)),
  case("detach", [M], lambda x: (x * 2).detach() + x),
  case("requires_grad_flags", [M], lambda x: (x.requires_grad, (x * 2).requires_grad, x.detach().requires_grad)),
  case("int_requires_no_grad", [M], lambda x: (x + 1).requires_grad, ("int32",)),
  case("no_grad_result", [M], lambda xp, x: _under_no_grad(xp, lambda: (x * 2).requires_grad)),
  case("no_grad_values", [M], lambda xp, x: _under_no_grad(xp, lambda: x.exp() * 2)),
]


def _under_no_grad(xp: Any, fn: Callable) -> Any:
  with xp.no_grad():
    return fn()


TABLE = (UNARY + BINARY + INTEGER + PROMOTION + CASTS + REDUCE + MOVEMENT + GATHER_SCATTER + MATMUL + INPLACE
         + ACTIVATIONS + PAD + NN + LOSSES + CREATION)


@pytest.mark.parametrize("op_case, dtype", params(TABLE))
def test_op(op_case: Case, dtype: Any) -> None:
  helper_test_op(op_case.inputs, op_case.fn, dtype=dtype, **{k: v for k, v in op_case.options.items() if k != "known_divergence"})


# ---------------- indexing: reads ----------------

INDEXING = [
  case("index_int", [M], lambda x: x[1]),
  case("index_negative_int", [M], lambda x: x[-1]),
  case("index_two_ints_0d", [M], lambda x: x[1, 2]),
  case("index_slice", [M], lambda x: x[1:3]),
  case("index_slice_negative_bounds", [M], lambda x: x[-2:, :-1]),
  case("index_slice_step", [(5, 4)], lambda x: x[::2, 1::2]),
  case("index_slice_out_of_range_clamps", [M], lambda x: x[1:10]),
  case("index_slice_empty", [M], lambda x: x[2:1]),
  case("index_none", [M], lambda x: x[None]),
  case("index_none_middle", [M], lambda x: x[:, None, 1:3]),
  case("index_ellipsis", [T3], lambda x: x[..., 1]),
  case("index_ellipsis_middle", [T3], lambda x: x[0, ..., 2]),
  case("index_ellipsis_none", [T3], lambda x: x[..., None]),
  case("index_mixed_basic", [T3], lambda x: x[1, :, ::3]),
  case("index_int_tensor", [M], lambda xp, x: x[xp.tensor([2, 0, 2])]),
  case("index_int_tensor_negative", [M], lambda xp, x: x[xp.tensor([-1, 0])]),
  case("index_list", [M], lambda x: x[[0, 2]]),
  case("index_list_second_dim", [M], lambda x: x[:, [3, 0]]),
  case("index_two_lists_pointwise", [M], lambda x: x[[0, 1, 2], [3, 2, 1]]),
  case("index_two_tensors_broadcast", [M], lambda xp, x: x[xp.tensor([[0], [2]]), xp.tensor([1, 3])]),
  case("index_tensor_2d", [M], lambda xp, x: x[xp.tensor([[0, 1], [2, 2]])]),
  case("index_int32_tensor", [M], lambda xp, x: x[xp.tensor([1, 0], dtype=xp.int32)]),
  case("index_advanced_separated", [T3], lambda x: x[[0, 1], :, [1, 2]]),
  case("index_advanced_after_slice", [T3], lambda x: x[:, [2, 0], 1:3]),
  case("index_bool_mask", [M], lambda x: x[x > 0]),
  case("index_bool_mask_rows", [M], lambda xp, x: x[xp.tensor([True, False, True])]),
  case("index_bool_mask_all_false", [M], lambda x: x[x > 100]),
  case("index_0d_tensor", [M], lambda xp, x: x[xp.tensor(1)]),
  case("index_int_dtype_input", [M], lambda x: x[1:, [0, 2]], ("int32",), low=0, high=9),
  case("index_repeated_gathers_grad", [V], lambda x: x[[0, 0, 1, 0]]),
]


@pytest.mark.parametrize("op_case, dtype", params(INDEXING))
def test_index(op_case: Case, dtype: Any) -> None:
  helper_test_op(op_case.inputs, op_case.fn, dtype=dtype, **{k: v for k, v in op_case.options.items() if k != "known_divergence"})


# ---------------- indexing: writes (on a non-leaf copy so backward flows to both sides) ----------------

def set_int(x):
  y = x * 1
  y[1] = 0.5
  return y


def set_slice_scalar(x):
  y = x * 1
  y[:, 1:3] = 2.0
  return y


def set_tensor_value(x, v):
  y = x * 1
  y[..., 0] = v[:3]
  return y


def set_broadcast_row(x, v):
  y = x * 1
  y[1:] = v
  return y


def set_bool_mask(x):
  y = x * 1
  y[y > 0] = 0.0
  return y


def set_list_index(xp, x, v):
  y = x * 1
  y[xp.tensor([0, 2])] = v
  return y


def set_negative_step_slice(x):
  y = x * 1
  y[-1, ::2] = -1.0
  return y


def set_int_tensor(x):
  x[0, 0] = 7
  x[1:, 2] = 3
  return x


def set_on_detached_leaf(x):
  y = x.detach()
  y[0] = 1.0
  return y


SETITEM = [
  case("setitem_int", [M], set_int),
  case("setitem_slice_scalar", [M], set_slice_scalar, FLOATS),
  case("setitem_tensor_value", [M, V], set_tensor_value),
  case("setitem_broadcast_row", [M, V], set_broadcast_row),
  case("setitem_bool_mask", [M], set_bool_mask),
  case("setitem_index_tensor", [M, V], set_list_index),
  case("setitem_negative_index_step", [M], set_negative_step_slice),
  case("setitem_int_dtype", [M], set_int_tensor, ("int32", "uint8"), low=0, high=9),
  case("setitem_detached_leaf", [M], set_on_detached_leaf, forward_only=True),
]


@pytest.mark.parametrize("op_case, dtype", params(SETITEM))
def test_setitem(op_case: Case, dtype: Any) -> None:
  helper_test_op(op_case.inputs, op_case.fn, dtype=dtype, **{k: v for k, v in op_case.options.items() if k != "known_divergence"})


# ---------------- autograd semantics: each function returns the grads it produced ----------------

def grads_accumulate(x):
  (x * 2).sum().backward()
  (x * x).sum().backward()
  return x.grad


def grad_of_reused_input(x, y):
  (x * y + x.exp() * x).sum().backward()
  return x.grad, y.grad


def grad_with_upstream_gradient(xp, x):
  (x * 3).backward(xp.ones_like(x) * 0.5)
  return x.grad


def grad_of_0d_loss(x):
  x.mean().backward()
  return x.grad


def grad_stops_at_detach(x, y):
  (x * y.detach()).sum().backward()
  return x.grad, y.grad is None


def grad_not_tracked_under_no_grad(xp, x, y):
  with xp.no_grad():
    frozen = x * 3
  (frozen * y).sum().backward()
  return y.grad, x.grad is None


def grad_unused_input_is_none(x, y):
  x.sum().backward()
  return x.grad, y.grad is None


def grad_requires_grad_on_result(x):
  z = x.detach() * 2
  z.requires_grad_()
  (z * z).sum().backward()
  return z.grad


def grad_through_two_outputs(x):
  values, _ = x.max(dim=1)
  (values.sum() + x.mean()).backward()
  return x.grad


def grad_twice_through_shared_subgraph(x):
  shared = x.exp()
  (shared * 2 + shared.sin()).sum().backward()
  return x.grad


def grad_through_sliced_views(x):
  (x[:, :2] * 2 + x[:, 2:] * 3).sum().backward()
  return x.grad


AUTOGRAD = [
  case("grads_accumulate", [M], grads_accumulate, FLOATS, forward_only=False),
  case("grad_of_reused_input", [M, M], grad_of_reused_input),
  case("grad_with_upstream_gradient", [M], grad_with_upstream_gradient),
  case("grad_of_0d_loss", [M], grad_of_0d_loss),
  case("grad_stops_at_detach", [M, M], grad_stops_at_detach),
  case("grad_not_tracked_under_no_grad", [M, M], grad_not_tracked_under_no_grad),
  case("grad_unused_input_is_none", [M, M], grad_unused_input_is_none),
  case("grad_requires_grad_on_result", [M], grad_requires_grad_on_result),
  case("grad_through_two_outputs", [M], grad_through_two_outputs),
  case("grad_twice_through_shared_subgraph", [M], grad_twice_through_shared_subgraph),
  case("grad_through_sliced_views", [M], grad_through_sliced_views),
]


@pytest.mark.parametrize("op_case, dtype", params(AUTOGRAD))
def test_autograd(op_case: Case, dtype: Any) -> None:
  # the case itself calls backward; its returned grads are compared as forward values
  helper_test_op(op_case.inputs, op_case.fn, dtype=dtype, **{k: v for k, v in op_case.options.items() if k != "known_divergence"})


# ---------------- errors: both raise, and the classes match ----------------

def backward_twice_without_retain(x):
  y = (x.exp() * 2).sum()
  y.backward()
  y.backward()


ERRORS = [
  case("add_shape_mismatch", [M, (4, 3)], lambda x, y: x + y),
  case("mul_broadcast_mismatch", [T3, (2, 4)], lambda x, y: x * y),
  case("matmul_inner_mismatch", [M, M], lambda x, y: x @ y),
  case("matmul_0d", [SCALAR, M], lambda x, y: x @ y),
  case("linear_weight_mismatch", [M, (3, 3)], lambda F, x, w: F.linear(x, w)),
  case("reshape_bad_numel", [M], lambda x: x.reshape(5, -1)),
  case("reshape_two_inferred", [M], lambda x: x.reshape(-1, -1)),
  case("view_of_transposed", [M], lambda x: x.T.view(12)),
  case("permute_duplicate_dims", [M], lambda x: x.permute(0, 0)),
  case("permute_wrong_count", [T3], lambda x: x.permute(0, 1)),
  case("expand_bad_size", [M], lambda x: x.expand(3, 5)),
  case("expand_fewer_dims", [T3], lambda x: x.expand(3, 4)),
  case("unflatten_bad_sizes", [M], lambda x: x.unflatten(1, (3, 3))),
  case("sum_dim_out_of_range", [M], lambda x: x.sum(dim=2)),
  case("softmax_dim_out_of_range", [M], lambda x: x.softmax(dim=-3)),
  case("transpose_dim_out_of_range", [M], lambda x: x.transpose(0, 3)),
  case("squeeze_dim_out_of_range", [M], lambda x: x.squeeze(5)),
  case("unsqueeze_dim_out_of_range", [T3], lambda x: x.unsqueeze(4)),
  case("flip_dim_out_of_range", [M], lambda x: x.flip(2)),
  case("cat_shape_mismatch", [M, (3, 2)], lambda xp, x, y: xp.cat([x, y])),
  case("cat_empty_list", [], lambda xp: xp.cat([])),
  case("stack_shape_mismatch", [M, (4, 3)], lambda xp, x, y: xp.stack([x, y])),
  case("where_broadcast_mismatch", [M, M, (2,)], lambda xp, c, x, y: xp.where(c > 0, x, y)),
  case("index_out_of_range", [M], lambda x: x[5]),
  case("index_negative_out_of_range", [M], lambda x: x[-4]),
  case("index_too_many", [M], lambda x: x[0, 0, 0]),
  case("index_tensor_out_of_range", [M], lambda xp, x: x[xp.tensor([0, 7])]),
  case("index_float_tensor", [M], lambda xp, x: x[xp.tensor([0.5])]),
  case("index_negative_step", [M], lambda x: x[::-1]),
  case("index_bool_mask_wrong_shape", [M], lambda xp, x: x[xp.tensor([True, False])]),
  case("index_select_out_of_range", [M, idx(0, 7)], lambda x, i: x.index_select(0, i)),
  case("gather_out_of_range", [M, idx(9).reshape(1, 1)], lambda x, i: x.gather(1, i)),
  case("embedding_out_of_range", [idx(5), (5, 3)], lambda F, i, w: F.embedding(i, w)),
  case("cross_entropy_bad_target", [(3, 4), idx(0, 1, 9)], lambda F, x, t: F.cross_entropy(x, t)),
  case("one_hot_negative", [idx(-1, 0)], lambda F, i: F.one_hot(i)),
  case("conv2d_channel_mismatch", [IMG, (4, 2, 3, 3)], lambda F, x, w: F.conv2d(x, w)),
  case("pad_odd_length", [M], lambda F, x: F.pad(x, (1,))),
  case("max_of_empty", [EMPTY], lambda x: x.max()),
  case("mean_of_int", [M], lambda x: x.mean(), dtype="int32"),
  case("float_bitwise_and", [M, M], lambda x, y: x & y),
  case("float_invert", [M], lambda x: ~x),
  case("float_shift", [M], lambda x: x << 1),
  case("chunk_zero", [M], lambda x: x.chunk(0)),
  case("split_zero", [M], lambda x: x.split(0)),
  case("topk_k_too_large", [M], lambda x: x.topk(9)),
  case("repeat_too_few_dims", [M], lambda x: x.repeat(2)),
  case("item_of_many", [M], lambda x: x.item()),
  case("bitcast_bad_size", [(3, 3)], lambda xp, x: x.view(xp.int8)[:, :3].view(xp.float32)),
  case("arange_zero_step", [], lambda xp: xp.arange(0, 1, 0)),
  case("inplace_broadcast_output", [(3, 1), M], lambda x, y: x.add_(y)),
  case("inplace_float_into_int", [M], lambda x: x.add_(1.5), dtype="int64"),
  case("backward_without_grad", [M], lambda x: (x * 2).sum().backward()),
  case("backward_non_scalar", [M], lambda x: (x * 2).backward(), requires_grad=True),
  case("backward_twice", [M], backward_twice_without_retain, requires_grad=True),
  case("inplace_on_leaf_requiring_grad", [M], lambda x: x.add_(1), requires_grad=True),
  case("requires_grad_on_int", [M], lambda x: x.requires_grad_(), dtype="int32"),
]


@pytest.mark.parametrize("op_case", [pytest.param(c, id=c.name) for c in ERRORS])
def test_error(op_case: Case) -> None:
  helper_test_exception(op_case.inputs, op_case.fn, **op_case.options)


# ---------------- random creation (not comparable value by value: checked by shape, dtype and statistics) ----------------

@pytest.mark.skipif(TORCH_ONLY, reason="teenygrad side only")
class TestRandom:
  def test_rand_shape_dtype_range(self):
    import teenygrad as tg
    values = tg.rand(64, 32).numpy()
    assert values.shape == (64, 32) and values.dtype == np.float32
    assert values.min() >= 0.0 and values.max() < 1.0 and abs(values.mean() - 0.5) < 0.05

  def test_randn_statistics(self):
    import teenygrad as tg
    values = tg.randn(64, 64).numpy()
    assert abs(values.mean()) < 0.05 and abs(values.std() - 1.0) < 0.05

  def test_randint(self):
    import teenygrad as tg
    values = tg.randint(-3, 5, (1000,))
    assert str(values.dtype).endswith("int64")
    array = values.numpy()
    assert array.min() == -3 and array.max() == 4

  def test_normal(self):
    import teenygrad as tg
    values = tg.normal(2.0, 0.5, size=(64, 64)).numpy()
    assert abs(values.mean() - 2.0) < 0.05 and abs(values.std() - 0.5) < 0.05

  def test_uniform_inplace(self):
    import teenygrad as tg
    values = tg.zeros(64, 64).uniform_(-2, 3).numpy()
    assert values.min() >= -2 and values.max() < 3 and abs(values.mean() - 0.5) < 0.1

  def test_like_variants(self):
    import teenygrad as tg
    base = tg.zeros(5, 7, dtype=tg.float16)
    for fn in (tg.rand_like, tg.randn_like):
      out = fn(base)
      assert tuple(out.shape) == (5, 7) and out.dtype == tg.float16

  def test_manual_seed_is_deterministic(self):
    import teenygrad as tg
    tg.manual_seed(1234)
    first = tg.randn(16).numpy()
    tg.manual_seed(1234)
    np.testing.assert_array_equal(tg.randn(16).numpy(), first)
    assert not np.array_equal(tg.randn(16).numpy(), first)

  def test_dropout_training_scales_kept_values(self):
    import teenygrad as tg
    import teenygrad.nn.functional as F
    out = F.dropout(tg.ones(64, 64), p=0.25, training=True).numpy()
    kept = out[out != 0]
    np.testing.assert_allclose(kept, np.full_like(kept, 1.0 / 0.75), rtol=1e-6)
    assert abs((out == 0).mean() - 0.25) < 0.05

  def test_from_dlpack(self):
    import teenygrad as tg
    source = np.arange(6, dtype=np.float32).reshape(2, 3)
    np.testing.assert_array_equal(tg.from_dlpack(source).numpy(), source)
