"""Torch semantics beyond the one-op-per-row table: indexing reads and writes, autograd behaviour, the errors
raised, and random creation (checked by statistics). Same harness and shapes as test_ops.py."""
from __future__ import annotations

import gc
from typing import Any

import numpy as np
import pytest

from helpers import (EMPTY, FLOATS, IMG, SCALAR, T3, TORCH_ONLY, M, V, Case, case, helper_test_exception, idx, params,
                     run_case)

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
  run_case(op_case, dtype)


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
  run_case(op_case, dtype)


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
  run_case(op_case, dtype)


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


# ---- assign into a realized buffer ----

import teenygrad as tg  # noqa: E402

def test_assign_spares_a_graph_built_before_it():
  """A prediction built before an in-place update and realized after it sees the old weights (as torch, which computed
  it eagerly): the assign gives the pending graph a copy of the old values."""
  w = tg.Tensor(np.arange(6, dtype=np.float32)).realize()
  pred = w * 2
  w.assign(w + 100).realize()
  np.testing.assert_equal(pred.numpy(), np.arange(6) * 2)
  np.testing.assert_equal(w.numpy(), np.arange(6) + 100)


def test_assign_of_a_permuted_self_reads_the_old_values():
  x = tg.Tensor(np.arange(12, dtype=np.float32).reshape(3, 4)).realize()
  x.assign(x.flip(0) + x).realize()
  ref = np.arange(12, dtype=np.float32).reshape(3, 4)
  np.testing.assert_equal(x.numpy(), ref[::-1] + ref)


def test_assign_in_place_keeps_the_buffer():
  w = tg.Tensor(np.ones(8, dtype=np.float32)).realize()
  buffer = w.lazydata.base.realized
  w.assign(w * 3).realize()
  assert w.lazydata.base.realized is buffer and w.tolist() == [3.0] * 8


def test_a_buffer_exported_through_dlpack_is_never_reused():
  """Freed CPU buffers are cached for reuse, but not one torch still reads through DLPack."""
  torch = pytest.importorskip("torch")
  n = 1 << 20   # DLPack export is the CPU's
  b = tg.Tensor(np.ones(n, np.float32), device="CPU") * 3
  exported = torch.from_dlpack(b.realize())
  del b
  gc.collect()
  cached = [raw for free_list in tg.Device["CPU"].allocator.cache.values() for raw in free_list]
  assert not any(np.shares_memory(raw, exported.numpy()) for raw in cached), "an exported buffer went back to the cache"
  others = [(tg.Tensor(np.ones(n, np.float32), device="CPU") * 5).realize() for _ in range(4)]
  assert float(exported[0]) == 3.0 and float(exported[-1]) == 3.0 and len(others) == 4


@pytest.mark.parametrize("dtype", ["uint8", "uint16", "uint32"])
def test_negative_floats_to_unsigned_wrap_inside_one_kernel(dtype):
  """float -> unsigned -> float in one fused kernel wraps negative values as torch does (C leaves the conversion
  undefined, and a vectorized loop once kept the sign through the widening cast)."""
  import torch
  x = np.array([-3.7, -20.5, -1.2, 250.2, 30.9, -0.5, -130.0, 7.0] * 40, dtype=np.float32)
  ours = (tg.Tensor(x).cast(getattr(tg.dtypes, dtype)).cast(tg.dtypes.float32) * 1.0).numpy()
  want = torch.from_numpy(x).to(getattr(torch, dtype)).to(torch.float32).numpy()
  np.testing.assert_array_equal(ours, want)
