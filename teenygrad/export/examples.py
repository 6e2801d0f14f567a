"""Example models to export, as factories for `teenygrad export` (and bench/export_sizes.py):

    teenygrad export teenygrad.export.examples:mnist_mlp --name mlp --out build/ --target cortex-m4

Weights are seeded random numbers (nothing is downloaded); shapes are those of the classic small models.
"""
from __future__ import annotations

import numpy as np


def _seeded(shape, scale: float, seed: int) -> np.ndarray:
  return (np.random.default_rng(seed).standard_normal(shape) * scale).astype(np.float32)


def mnist_mlp() -> dict:
  """784-128-10 MLP forward, batch 1: logits."""
  from teenygrad import Tensor
  w1, b1 = Tensor(_seeded((128, 784), 0.05, 1)), Tensor(_seeded(128, 0.1, 2))
  w2, b2 = Tensor(_seeded((10, 128), 0.1, 3)), Tensor(_seeded(10, 0.1, 4))
  def forward(x): return (x @ w1.T + b1).relu() @ w2.T + b2
  return {"fn": forward, "inputs": [Tensor(_seeded((1, 784), 1.0, 10))],
          "weights": {"fc1_weight": w1, "fc1_bias": b1, "fc2_weight": w2, "fc2_bias": b2}}


def small_cnn() -> dict:
  """conv3x3(1->8) relu maxpool2, conv3x3(8->16) relu maxpool2, linear 784->10, log_softmax; input 1x1x28x28."""
  from teenygrad import Tensor
  shapes = [(8, 1, 3, 3), (8,), (16, 8, 3, 3), (16,), (10, 784), (10,)]
  c1, b1, c2, b2, fw, fb = [Tensor(_seeded(s, 0.2, 20 + i)) for i, s in enumerate(shapes)]
  def forward(x):
    h = x.conv2d(c1, b1, padding=1).relu().max_pool2d(2)        # (1, 8, 14, 14)
    h = h.conv2d(c2, b2, padding=1).relu().max_pool2d(2)        # (1, 16, 7, 7)
    return (h.reshape(1, -1) @ fw.T + fb).log_softmax(1)         # (1, 10)
  return {"fn": forward, "inputs": [Tensor(_seeded((1, 1, 28, 28), 1.0, 30))],
          "weights": {"conv1_weight": c1, "conv1_bias": b1, "conv2_weight": c2, "conv2_bias": b2, "fc_weight": fw, "fc_bias": fb}}


def mlp_train_step(sizes=(64, 32, 10), batch: int = 32, lr: float = 0.5, x: np.ndarray | None = None, y: np.ndarray | None = None) -> dict:
  """One SGD step of an MLP with cross entropy (forward, backward, update in place); returns the loss.
  The default sizes are the 8x8 digits MLP (64-32-10)."""
  from teenygrad import Tensor
  from teenygrad.engine.realize import realize
  from teenygrad.tensor.tensor import no_grad
  n_in, n_hidden, n_out = sizes
  params = [Tensor(_seeded(s, 0.3, 40 + i), requires_grad=True) for i, s in enumerate([(n_hidden, n_in), (n_hidden,), (n_out, n_hidden), (n_out,)])]
  def step(x, y):
    w1, b1, w2, b2 = params
    for p in params: p.grad = None
    loss = ((x @ w1.T + b1).relu() @ w2.T + b2).cross_entropy(y)
    loss.backward()
    realize([loss.lazydata] + [p.grad.lazydata for p in params])   # gradients read the old weights: before the update
    with no_grad():
      for p in params: p.assign(p - lr * p.grad)
    realize([p.lazydata for p in params])
    return loss
  rng = np.random.default_rng(5)
  x = x if x is not None else rng.random((batch, n_in), dtype=np.float32)
  y = y if y is not None else rng.integers(0, n_out, batch).astype(np.int32)
  return {"fn": step, "inputs": [Tensor(x), Tensor(y)], "weights": dict(zip(["w1", "b1", "w2", "b2"], params)),
          "input_names": ["x", "y"], "output_names": ["loss"]}


def load_digits() -> tuple[np.ndarray, np.ndarray, str]:
  """scikit-learn's 8x8 digits (1797 images, pixels scaled to [0, 1]) read from the file scikit-learn ships, without
  importing it; random data of the same shape when scikit-learn is not installed. The third value says which."""
  import gzip
  import importlib.util
  from pathlib import Path
  spec = importlib.util.find_spec("sklearn")
  if spec is not None and spec.origin:
    path = Path(spec.origin).parent / "datasets" / "data" / "digits.csv.gz"
    if path.exists():
      with gzip.open(path, "rt") as f: table = np.loadtxt(f, delimiter=",", dtype=np.float32)
      return table[:, :64] / 16.0, table[:, 64].astype(np.int32), "sklearn digits"
  rng = np.random.default_rng(7)
  return rng.random((1797, 64), dtype=np.float32), rng.integers(0, 10, 1797).astype(np.int32), "random data (scikit-learn not installed)"
