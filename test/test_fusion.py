"""Kernel counts where fusion is promised, and laziness guarantees."""
import numpy as np

import teenygrad as tg
from teenygrad.engine.realize import capture_kernels


def _inputs(*shapes):
  rng = np.random.default_rng(0)
  return [tg.Tensor(rng.standard_normal(s).astype(np.float32)) for s in shapes]


def test_elementwise_chain_into_reduce_is_one_kernel():
  a, b, c = _inputs((16, 32), (16, 32), (16, 32))
  with capture_kernels() as launched:
    out = ((a * b + c).relu()).sum().item()
  assert len(launched) == 1
  expected = np.maximum(a.numpy() * b.numpy() + c.numpy(), 0).sum()
  np.testing.assert_allclose(out, expected, rtol=1e-5)


def test_softmax_is_at_most_two_kernels():
  (x,) = _inputs((8, 64))
  with capture_kernels() as launched:
    x.softmax(-1).realize()
  assert len(launched) <= 2


def test_linear_bias_relu_is_one_kernel():
  x, w, b = _inputs((8, 16), (4, 16), (4,))
  with capture_kernels() as launched:
    out = x.linear(w, b).relu().numpy()
  assert len(launched) == 1
  np.testing.assert_allclose(out, np.maximum(x.numpy() @ w.numpy().T + b.numpy(), 0), rtol=1e-5, atol=1e-5)


def test_nothing_runs_until_asked():
  a, b = _inputs((4, 4), (4, 4))
  with capture_kernels() as launched:
    c = (a + b).exp().sum(0)
    assert launched == []
    c.realize()
  assert len(launched) == 1


def test_realized_tensor_is_not_recomputed():
  (a,) = _inputs((4, 4))
  b = (a * 2).realize()
  with capture_kernels() as launched:
    b.numpy(); b.numpy()
  assert launched == []


def test_movement_ops_are_views():
  (a,) = _inputs((4, 6))
  with capture_kernels() as launched:
    view = a.T.reshape(2, 12)[:, ::2].flip(0)
    assert view.lazydata.base is a.lazydata
  assert launched == []


def test_constants_fold():
  with capture_kernels() as launched:
    value = (tg.full((3, 3), 2.0) * 3 + 1).sum().item()
  assert value == 63.0
  assert len(launched) == 1


def test_symbolic_size_serves_every_value_with_one_kernel():
  from teenygrad.ir.symbolic import BoundVariable
  from teenygrad.engine import realize as engine
  data = np.arange(32, dtype=np.float32)
  x = tg.Tensor(data)
  compiled = set()
  for n in (3, 9, 17):
    length = BoundVariable("length", 1, 32, n)
    window = tg.Tensor(x.lazydata.shrink(((0, length),)))
    with capture_kernels() as launched:
      total = window.sum().item()
    assert total == data[:n].sum()
    compiled |= {id(item.kernel) for item in launched}
  assert len(compiled) == 1, "one compiled kernel must serve every bound value"
  assert engine is not None


def test_a_long_shared_chain_is_stored_not_recomputed_in_every_reader():
  """A residual stream (h = h + f(norm(h)) per layer) is read by the next layer's reduce and by the next add. Inlined
  everywhere, layer k's kernels would re-add all k earlier outputs, and every layer would compile a new, longer kernel."""
  rng = np.random.default_rng(0)
  layers, dim = 24, 64
  weights = [tg.Tensor(rng.standard_normal((dim, dim)).astype(np.float32) / dim) for _ in range(layers)]
  h = tg.Tensor(rng.standard_normal((1, dim)).astype(np.float32))
  expected = h.numpy().astype(np.float64)
  for w in weights:
    normed = h / (h * h).mean(-1, keepdim=True).sqrt()
    h = h + (normed @ w).contiguous()
    ref_normed = expected / np.sqrt((expected * expected).mean(-1, keepdims=True))
    expected = expected + ref_normed @ w.numpy().astype(np.float64)
  with capture_kernels() as launched:
    out = h.numpy()
  np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-4)
  widest = max(len(item.buffers) - 1 for item in launched)   # buffers[0] is the output
  assert widest <= 10, f"a kernel reads {widest} buffers: the residual chain was recomputed in it"


MATMUL_SHAPES = [((3, 4), (4, 5)), ((2, 3, 4), (4, 5)), ((4,), (2, 4, 5)), ((2, 1, 3, 4), (5, 4, 6)), ((3, 4), (4,))]


def test_matmul_without_grad_builds_the_recorded_graph():
  """Where nothing needs a gradient, matmul builds its graph on the graph nodes directly (nn._matmul_graph): the
  kernel it becomes must be the very one the autograd-recorded primitives give, for every broadcast and dtype."""
  from teenygrad.engine.realize import kernel_key
  rng = np.random.default_rng(0)
  for dtype in (np.float32, np.float16, np.int32):
    for sa, sb in MATMUL_SHAPES:
      a, b = rng.integers(-3, 4, sa).astype(dtype), rng.integers(-3, 4, sb).astype(dtype)
      plain = tg.Tensor(a) @ tg.Tensor(b)
      recorded = None
      if dtype != np.int32:
        ga, gb = tg.Tensor(a, requires_grad=True), tg.Tensor(b, requires_grad=True)
        recorded = ga @ gb
        assert recorded.requires_grad and not plain.requires_grad
        def key(t): return kernel_key(t.lazydata, lambda base: base.realized is not None)[0]
        assert key(plain) == key(recorded), (dtype, sa, sb)
      expected = np.matmul(a.astype(np.float64), b.astype(np.float64))
      assert plain.shape == expected.shape and plain.dtype.name == tg.Tensor(a).dtype.name
      np.testing.assert_allclose(plain.numpy().astype(np.float64), expected, rtol=1e-3)
      if recorded is not None: np.testing.assert_allclose(recorded.detach().numpy(), plain.numpy(), rtol=1e-3)
