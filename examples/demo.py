"""Train a small MLP on scikit-learn-style synthetic data (two interleaved spirals) and run inference.

Everything runs through teenygrad's lazy graph and its own C kernels."""
import math
import time

import numpy as np

import teenygrad as tg


def spirals(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
  t = rng.uniform(0.25, 1.0, n) * 1.5 * math.pi
  label = rng.integers(0, 2, n)
  angle = t + label * math.pi
  points = np.stack([t * np.cos(angle), t * np.sin(angle)], 1) / 10 + rng.normal(0, 0.02, (n, 2))
  return points.astype(np.float32), label.astype(np.int64)


def main() -> None:
  tg.manual_seed(0)
  rng = np.random.default_rng(0)
  train_x, train_y = spirals(2048, rng)
  test_x, test_y = spirals(512, rng)
  sizes = [2, 64, 64, 2]
  params = []
  for fan_in, fan_out in zip(sizes, sizes[1:]):
    bound = 1 / math.sqrt(fan_in)
    params.append(tg.Tensor.uniform(-bound, bound, (fan_in, fan_out), requires_grad=True))
    params.append(tg.Tensor.uniform(-bound, bound, (fan_out,), requires_grad=True))

  def forward(x: tg.Tensor) -> tg.Tensor:
    for i in range(0, len(params), 2):
      x = x @ params[i] + params[i + 1]
      if i + 2 < len(params): x = x.relu()
    return x

  lr, start = 0.5, time.perf_counter()
  for step in range(300):
    idx = rng.integers(0, len(train_x), 128)
    logits = forward(tg.Tensor(train_x[idx]))
    loss = logits.cross_entropy(tg.Tensor(train_y[idx]))
    loss.backward()
    with tg.no_grad():
      for p in params:
        p.assign(p - lr * p.grad).realize()
        p.grad = None
    if step % 50 == 0: print(f"step {step:3d}  loss {loss.item():.4f}")
  with tg.no_grad():
    predictions = forward(tg.Tensor(test_x)).argmax(-1).numpy()
  accuracy = (predictions == test_y).mean()
  print(f"test accuracy {accuracy:.3f} after 300 steps in {time.perf_counter() - start:.1f}s")


if __name__ == "__main__":
  main()
