"""The JIT: replays match eager runs (numpy and torch as oracles), one capture serves every symbolic size, and a
replay that would be wrong is refused with a reason."""
import numpy as np
import pytest

import teenygrad as tg
from teenygrad.device import Buffer
from teenygrad.engine import realize as engine
from teenygrad.engine.jit import Jit, JitError
from teenygrad.ir.lazy import LazyBuffer

torch = pytest.importorskip("torch")


def test_replay_matches_eager_and_outputs_are_fresh():
  @tg.jit
  def f(a, b): return {"sum": (a * b + 1).sum(1), "diff": a - b}
  kept = []
  for i in range(6):
    a, b = np.random.randn(4, 3).astype(np.float32), np.random.randn(4, 3).astype(np.float32)
    out = f(tg.Tensor(a), tg.Tensor(b))
    np.testing.assert_allclose(out["sum"].numpy(), (a * b + 1).sum(1), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(out["diff"].numpy(), a - b)
    kept.append((out["diff"], a - b))
  assert f.captured and f.kernel_count == 2
  for tensor, expected in kept: np.testing.assert_array_equal(tensor.numpy(), expected)   # earlier outputs were not overwritten


def test_replay_builds_no_graph(monkeypatch):
  @tg.jit
  def f(x): return (x.exp() + x).max(0)
  for _ in range(2): f(tg.randn(8, 8))
  x = tg.randn(8, 8).realize()

  def no_scheduling(*args): raise AssertionError("a replay must not schedule")
  monkeypatch.setattr(engine, "create_schedule", no_scheduling)
  out = f(x)
  monkeypatch.undo()
  np.testing.assert_allclose(out.values.numpy(), (np.exp(x.numpy()) + x.numpy()).max(0), rtol=1e-5)
  np.testing.assert_array_equal(out.indices.numpy(), (np.exp(x.numpy()) + x.numpy()).argmax(0))


def test_training_step_matches_torch():
  rng = np.random.default_rng(0)
  w0 = rng.standard_normal((5, 3)).astype(np.float32)
  batches = [(rng.standard_normal((8, 5)).astype(np.float32), rng.standard_normal((8, 3)).astype(np.float32)) for _ in range(6)]
  w = tg.Tensor(w0, requires_grad=True)
  momentum = tg.zeros(5, 3).contiguous().realize()

  @tg.jit
  def step(x, y):
    loss = ((x @ w - y) ** 2).mean()
    loss.backward()
    with tg.no_grad():
      momentum.assign(momentum * 0.9 + w.grad).realize()
      w.assign(w.detach() - 0.05 * momentum).realize()
    w.grad = None
    return loss

  tw = torch.tensor(w0, requires_grad=True)
  opt = torch.optim.SGD([tw], lr=0.05, momentum=0.9)
  for x, y in batches:
    loss = step(tg.Tensor(x), tg.Tensor(y))
    opt.zero_grad()
    tloss = ((torch.tensor(x) @ tw - torch.tensor(y)) ** 2).mean()
    tloss.backward(); opt.step()
    np.testing.assert_allclose(loss.item(), tloss.item(), rtol=1e-5)
  assert step.captured
  np.testing.assert_allclose(w.numpy(), tw.detach().numpy(), rtol=1e-5, atol=1e-6)


def test_symbolic_decode_loop_uses_one_capture():
  """A decode-like loop: write this step's key into a preallocated cache at a symbolic position, attend over the
  cache up to it (a slice of symbolic length). One capture and no new kernels serve every position."""
  max_len, dim = 16, 8
  cache = tg.zeros(max_len, dim).contiguous().realize()
  pos_var = tg.Variable("pos", 0, max_len - 1)

  @tg.jit
  def decode(k, q, pos):
    row = k.reshape(1, dim)._pad(((pos, max_len - 1 - pos), (0, 0)))
    mask = tg.ones(1, dim, dtype=tg.bool)._pad(((pos, max_len - 1 - pos), (0, 0)))
    cache.assign(tg.where(mask, row, cache)).realize()
    window = cache._shrink(((0, pos + 1), (0, dim)))                    # (pos+1, dim)
    weights = (window * q).sum(1).softmax(0)                           # (pos+1,)
    return (weights.reshape(-1, 1) * window).sum(0), weights           # (dim,), (pos+1,)

  reference = np.zeros((max_len, dim), np.float32)
  compiled_after_capture = None
  for p in range(12):
    k, q = np.random.randn(dim).astype(np.float32), np.random.randn(dim).astype(np.float32)
    out, weights = decode(tg.Tensor(k), tg.Tensor(q), pos_var.bind(p))
    reference[p] = k
    scores = reference[:p + 1] @ q
    expected_w = np.exp(scores - scores.max()) / np.exp(scores - scores.max()).sum()
    np.testing.assert_allclose(out.numpy(), expected_w @ reference[:p + 1], rtol=1e-4, atol=1e-5)
    assert weights.shape == (p + 1,)
    np.testing.assert_allclose(weights.numpy(), expected_w, rtol=1e-4, atol=1e-6)
    if p == 1: compiled_after_capture = len(engine._kernel_cache)
  assert decode.captured and len(engine._kernel_cache) == compiled_after_capture, "replays compile nothing"
  np.testing.assert_allclose(cache.numpy(), reference)
  with pytest.raises(JitError, match="non-tensor arguments changed"):
    decode(tg.randn(dim), tg.randn(dim), 3)                             # a plain int where the capture had a variable
  with pytest.raises(JitError, match="non-tensor arguments changed"):
    decode(tg.randn(dim), tg.randn(dim), tg.Variable("pos", 0, 7).bind(3))   # other bounds: other kernels


class HostMatmul:
  """A custom kernel (Ops.CUSTOM) computed on the host: tests that the JIT re-runs custom kernels on replay."""
  def __init__(self): self.runs = 0
  def run(self, root, inputs):
    self.runs += 1
    a = inputs[0].numpy().reshape(root.arg_shapes[0]); b = inputs[1].numpy().reshape(root.arg_shapes[1])
    return Buffer(root.device, int(np.prod(root.shape)), root.dtype).copyin((a @ b).astype(np.float32))


def _custom_matmul(kernel, a, b):
  lb = LazyBuffer.custom(kernel, (a.lazydata, b.lazydata), (a.shape[0], b.shape[1]), tg.float32)
  return tg.Tensor(lb)


def test_custom_kernels_are_captured_and_replayed(monkeypatch):
  kernel = HostMatmul()
  monkeypatch.setattr(LazyBuffer, "arg_shapes", property(lambda self: ((3, 4), (4, 2))), raising=False)

  @tg.jit
  def f(a, b): return _custom_matmul(kernel, a * 2, b) + 1
  for i in range(5):
    a, b = np.random.randn(3, 4).astype(np.float32), np.random.randn(4, 2).astype(np.float32)
    np.testing.assert_allclose(f(tg.Tensor(a), tg.Tensor(b)).numpy(), (a * 2) @ b + 1, rtol=1e-5, atol=1e-5)
  assert kernel.runs == 5 and f.kernel_count == 3   # a*2, the custom kernel, +1


def test_refusals_say_why():
  @tg.jit
  def f(x, y, scale=1.0): return x * scale + y
  for _ in range(2): f(tg.randn(3), tg.randn(3))
  with pytest.raises(JitError, match=r"shape \(4,\), the capture had \(3,\)"): f(tg.randn(4), tg.randn(4))
  with pytest.raises(JitError, match="dtype float64"): f(tg.randn(3, dtype=tg.float64), tg.randn(3))
  with pytest.raises(JitError, match="got 3 tensor arguments"): f(tg.randn(3), tg.randn(3), tg.randn(3))
  with pytest.raises(JitError, match="'scale': 1.0 -> 2.0"): f(tg.randn(3), tg.randn(3), scale=2.0)
  x = tg.randn(3)
  with pytest.raises(JitError, match="share buffers"): f(x, x)
  out = f(tg.ones(3), tg.ones(3))
  np.testing.assert_array_equal(out.numpy(), np.full(3, 2, np.float32))


def test_device_change_is_refused():
  @tg.jit
  def f(x): return x + 1
  for _ in range(2): f(tg.randn(3))
  with pytest.raises(JitError, match="device CPU:1"): f(tg.randn(3, device="CPU:1"))


def test_methods_get_one_capture_per_instance():
  class Scaler:
    def __init__(self, k): self.k = tg.full((3,), float(k)).contiguous().realize()
    @tg.jit
    def __call__(self, x): return x * self.k
  two, three = Scaler(2), Scaler(3)
  for _ in range(4):
    x = np.random.randn(3).astype(np.float32)
    np.testing.assert_allclose(two(tg.Tensor(x)).numpy(), 2 * x, rtol=1e-6)
    np.testing.assert_allclose(three(tg.Tensor(x)).numpy(), 3 * x, rtol=1e-6)


def test_reset_and_capture_after():
  calls = []

  @tg.jit(capture_after=2)
  def f(x):
    calls.append(1)
    return x * 3
  for _ in range(5): f(tg.randn(2))
  assert len(calls) == 3 and isinstance(f, Jit)
  f.reset()
  f(tg.randn(2))
  assert len(calls) == 4 and not f.captured


def test_quantized_linear_replays_in_a_decode_step():
  """The quantized matmul (a custom kernel that records its own launch) inside a JIT'd step, with gguf as the oracle."""
  pytest.importorskip("gguf")
  from test_quant import make_blocks, reference

  from teenygrad.nn.quant import QuantizedTensor
  n, k = 24, 96
  blocks = make_blocks("Q8_0", n, k, seed=4)
  weight = reference("Q8_0", blocks)
  qt = QuantizedTensor.from_gguf_bytes("Q8_0", blocks, (n, k))

  @tg.jit
  def step(x): return qt.linear(x * 2).relu()
  for _ in range(5):
    x = np.random.randn(1, k).astype(np.float32)
    # error relative to sum |x||w|, as in test_quant: the AVX2 matvec rounds x to 16 bits, so an output that cancels
    # to near zero can be off by more than a fixed rtol of it
    scale = np.abs(2 * x) @ np.abs(weight.T) + 1e-30
    assert np.max(np.abs(step(tg.Tensor(x)).numpy() - np.maximum((2 * x) @ weight.T, 0)) / scale) < 4e-5
  assert step.captured
