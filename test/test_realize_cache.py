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


def test_a_dropped_result_frees_its_buffer_without_a_gc_pass():
  """Realizing leaves no reference cycle behind: a result nobody holds is freed at once (so the allocator can hand
  its memory to the next call instead of faulting in fresh pages), not at the next garbage collection."""
  import gc
  import weakref
  import numpy as np
  from teenygrad import Tensor
  rng = np.random.default_rng(0)
  a, b = Tensor(rng.standard_normal((64, 64), dtype=np.float32)), Tensor(rng.standard_normal((64, 64), dtype=np.float32))
  (a @ b + 1).realize()
  gc.disable()
  try:
    out = (a @ b + 1).realize()
    base = weakref.ref(out.lazydata.base)
    del out
    assert base() is None, "the result's graph node outlived its last reference"
  finally:
    gc.enable()
