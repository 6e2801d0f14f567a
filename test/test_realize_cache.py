"""The realize engine's caches: kernel keys stay shallow on graphs with heavy sharing, and a kernel whose lowering hands
a reduce back is not lowered again for the next graph of the same structure (what a training loop builds each step)."""
import numpy as np

import teenygrad as tg
from teenygrad.engine import realize as engine


def test_kernel_key_interns_shared_subexpressions():
  start = tg.randn(4)
  x = start
  for _ in range(60):   # each node is read twice: as a tree this would have 2^60 leaves
    x = x * 0.5 + x
  before = len(engine._structure_ids)
  key, order, values = engine.kernel_key(x.lazydata, lambda base: base.realized is not None)
  assert isinstance(key, int) and len(order) == 1
  assert len(engine._structure_ids) - before <= 4 * 60 + 4
  np.testing.assert_allclose(x.numpy(), start.numpy() * 1.5 ** 60, rtol=1e-4)


def _conv_step(weight):
  x = tg.Tensor(np.random.randn(4, 2, 8, 8).astype(np.float32))
  loss = x.conv2d(weight, padding=1).relu().max_pool2d(2).sum()
  loss.backward()
  grad = weight.grad
  weight.grad = None
  return grad


def test_handed_back_kernels_are_not_lowered_again(monkeypatch):
  weight = tg.Tensor(np.random.randn(3, 2, 3, 3).astype(np.float32), requires_grad=True)
  first = _conv_step(weight).numpy()
  _conv_step(weight).numpy()   # warm: every kernel of this structure is compiled or known to hand back
  calls = []
  original = engine._compile
  monkeypatch.setattr(engine, "_compile", lambda *a, **k: calls.append(1) or original(*a, **k))
  again = _conv_step(weight).numpy()
  assert calls == []
  assert again.shape == first.shape
