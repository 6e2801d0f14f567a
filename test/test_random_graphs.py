"""Random graphs of elementwise, reduce and movement ops, evaluated by teenygrad and by numpy and compared.

Each example starts from one or two random leaves and applies a few random ops; every intermediate value is kept,
so later ops reuse earlier ones (a DAG, not a chain) and every node is compared at the end, which also exercises
realizing many outputs of one graph at once.
"""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers import TORCH_ONLY

pytestmark = pytest.mark.skipif(TORCH_ONLY, reason="compares teenygrad with numpy")

MAX_DIM = 4
MAX_NDIM = 3


def random_shape(draw) -> tuple[int, ...]:
  return tuple(draw(st.lists(st.integers(1, MAX_DIM), min_size=1, max_size=MAX_NDIM)))


def factor_shape(draw, numel: int) -> tuple[int, ...]:
  """A random shape with numel elements (a reshape target), at most 4 dims."""
  dims = []
  remaining = numel
  while remaining > 1 and len(dims) < 3:
    divisors = [d for d in range(1, remaining + 1) if remaining % d == 0]
    dim = draw(st.sampled_from(divisors))
    dims.append(dim)
    remaining //= dim
  dims.append(remaining)
  return tuple(draw(st.permutations(dims)))


# Each op takes (draw, pool) and returns (numpy value, teenygrad value) or None when it does not apply.
# pool holds (numpy, teenygrad) pairs; ops pick their operands from it.

def pick(draw, pool):
  return pool[draw(st.integers(0, len(pool) - 1))]


def binary_op(draw, pool):
  a_np, a_tg = pick(draw, pool)
  same_shape = [pair for pair in pool if pair[0].shape == a_np.shape]
  b_np, b_tg = draw(st.sampled_from(same_shape))
  if draw(st.booleans()) and a_np.ndim > 0:  # broadcast b along one axis by reducing it there first
    axis = draw(st.integers(0, a_np.ndim - 1))
    b_np, b_tg = b_np.sum(axis=axis, keepdims=True), b_tg.sum(dim=axis, keepdim=True)
  name = draw(st.sampled_from(["add", "mul", "maximum", "sub"]))
  if name == "add":
    return a_np + b_np, a_tg + b_tg
  if name == "sub":
    return a_np - b_np, a_tg - b_tg
  if name == "mul":
    return a_np * b_np, a_tg * b_tg
  return np.maximum(a_np, b_np), a_tg.maximum(b_tg)


def unary_op(draw, pool):
  a_np, a_tg = pick(draw, pool)
  name = draw(st.sampled_from(["neg", "exp2_bounded", "sin", "relu", "scale", "where"]))
  if name == "neg":
    return -a_np, -a_tg
  if name == "exp2_bounded":
    return np.exp2(np.clip(a_np, -4, 4)), a_tg.clamp(-4, 4).exp2()
  if name == "sin":
    return np.sin(a_np), a_tg.sin()
  if name == "relu":
    return np.maximum(a_np, 0), a_tg.relu()
  if name == "scale":
    return a_np * np.float32(0.5) + np.float32(1.0), a_tg * 0.5 + 1.0
  return np.where(a_np > 0, a_np, np.float32(-1.0)), a_tg.masked_fill(a_tg <= 0, -1.0)


def reduce_op(draw, pool):
  a_np, a_tg = pick(draw, pool)
  if a_np.ndim == 0:
    return None
  axes = tuple(sorted(draw(st.sets(st.integers(0, a_np.ndim - 1), min_size=1))))
  keepdim = draw(st.booleans())
  if draw(st.booleans()):
    return a_np.sum(axis=axes, keepdims=keepdim), a_tg.sum(dim=axes, keepdim=keepdim)
  return a_np.max(axis=axes, keepdims=keepdim), a_tg.amax(dim=axes, keepdim=keepdim)


def movement_op(draw, pool):
  import teenygrad.nn.functional as F
  a_np, a_tg = pick(draw, pool)
  name = draw(st.sampled_from(["reshape", "permute", "expand", "pad", "shrink", "flip"]))
  if name == "reshape":
    shape = factor_shape(draw, a_np.size)
    return a_np.reshape(shape), a_tg.reshape(shape)
  if a_np.ndim == 0:
    return None
  if name == "permute":
    order = tuple(draw(st.permutations(range(a_np.ndim))))
    return a_np.transpose(order), a_tg.permute(order)
  if name == "expand":  # insert a size-1 axis, then broadcast it
    axis = draw(st.integers(0, a_np.ndim))
    size = draw(st.integers(1, 3))
    shape = a_np.shape[:axis] + (size,) + a_np.shape[axis:]
    return (np.broadcast_to(np.expand_dims(a_np, axis), shape).copy(), a_tg.unsqueeze(axis).expand(*shape))
  if name == "pad":
    widths = [(draw(st.integers(0, 2)), draw(st.integers(0, 2))) for _ in range(a_np.ndim)]
    torch_pads = tuple(width for pair in reversed(widths) for width in pair)  # last dim first, as F.pad takes them
    return np.pad(a_np, widths), F.pad(a_tg, torch_pads)
  if name == "shrink":
    slices = []
    for size in a_np.shape:
      start = draw(st.integers(0, size - 1))
      slices.append(slice(start, draw(st.integers(start + 1, size))))
    return a_np[tuple(slices)], a_tg[tuple(slices)]
  axes = tuple(sorted(draw(st.sets(st.integers(0, a_np.ndim - 1), min_size=1))))
  return np.flip(a_np, axes), a_tg.flip(axes)


OPS = [binary_op, unary_op, reduce_op, movement_op]


@st.composite
def random_graph(draw):
  import teenygrad as tg
  rng = np.random.default_rng(draw(st.integers(0, 2**16)))
  shape = random_shape(draw)
  pool = []
  for _ in range(draw(st.integers(1, 2))):
    leaf = rng.uniform(-2, 2, size=shape).astype(np.float32)
    pool.append((leaf, tg.Tensor(leaf)))
  steps = []
  for _ in range(draw(st.integers(1, 8))):
    op = draw(st.sampled_from(OPS))
    result = op(draw, pool)
    if result is not None:
      pool.append((np.asarray(result[0], dtype=np.float32), result[1]))
      steps.append(op.__name__)
  return pool, steps


@settings(derandomize=True, max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(random_graph())
def test_random_graph_matches_numpy(graph):
  pool, steps = graph
  # sums of differently ordered float32 terms differ by ~1e-7 of the largest value in the graph
  atol = 1e-5 * max(1.0, max(float(np.abs(expected).max(initial=0.0)) for expected, _ in pool))
  for node, (expected, value) in enumerate(pool):
    actual = value.numpy()
    assert actual.shape == expected.shape, f"node {node} after {steps}: shape {actual.shape} != {expected.shape}"
    np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=atol, err_msg=f"node {node} after {steps}")
