"""Golden training runs: a small CNN and a small transformer block start from the same weights as a torch copy, see the
same batches, and train 20 steps (SGD with momentum; AdamW with a cosine schedule). The loss must match torch's to
about 1e-4 relative at every step and the final weights must be close."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import teenygrad as tg
import teenygrad.optim as optim

STEPS = 20


def cnn(lib):
  m = lib.nn
  # no bias before BatchNorm: its gradient is zero up to rounding, which Adam would turn into lr-sized random steps
  return m.Sequential(m.Conv2d(1, 4, 3, padding=1, bias=False), m.BatchNorm2d(4), m.ReLU(), m.MaxPool2d(2), m.Conv2d(4, 8, 3), m.ReLU(),
                      m.Flatten(), m.Linear(8 * 4 * 4, 10))


class TinyTransformer:
  """Token embedding + learned positions, one encoder layer, a final LayerNorm and a vocabulary head."""

  @staticmethod
  def build(lib, vocab=16, dim=16, seq=8):
    m = lib.nn
    class Model(m.Module):
      def __init__(self):
        super().__init__()
        self.embed = m.Embedding(vocab, dim)
        self.pos = m.Embedding(seq, dim)
        self.block = m.TransformerEncoderLayer(dim, 2, dim_feedforward=32, dropout=0.0, batch_first=True, activation="gelu")
        self.norm = m.LayerNorm(dim)
        self.head = m.Linear(dim, vocab)
      def forward(self, tokens, positions):
        return self.head(self.norm(self.block(self.embed(tokens) + self.pos(positions))))
    return Model()


def batches(kind: str, n: int):
  rng = np.random.default_rng(1234)
  if kind == "cnn":
    return [(rng.standard_normal((16, 1, 12, 12)).astype(np.float32), rng.integers(0, 10, 16)) for _ in range(n)]
  return [(rng.integers(0, 16, (4, 8)), rng.integers(0, 16, (4, 8))) for _ in range(n)]


def loss_of(lib, model, kind, x, y):
  if kind == "cnn":
    return lib.nn.functional.cross_entropy(model(lib.tensor(x)), lib.tensor(y))
  positions = lib.tensor(np.tile(np.arange(8), (4, 1)))
  logits = model(lib.tensor(x), positions)
  return lib.nn.functional.cross_entropy(logits.reshape(-1, 16), lib.tensor(y).reshape(-1))


def optimizers(lib, model, recipe):
  module = torch.optim if lib is torch else optim
  if recipe == "sgd":
    return module.SGD(model.parameters(), lr=0.05, momentum=0.9), None
  opt = module.AdamW(model.parameters(), lr=3e-3, weight_decay=0.05)
  return opt, module.lr_scheduler.CosineAnnealingLR(opt, T_max=STEPS)


@pytest.mark.parametrize("recipe", ["sgd", "adamw_cosine"])
@pytest.mark.parametrize("kind", ["cnn", "transformer"])
def test_golden_training_run(kind, recipe):
  torch.manual_seed(0)
  t_model = cnn(torch) if kind == "cnn" else TinyTransformer.build(torch)
  g_model = cnn(tg) if kind == "cnn" else TinyTransformer.build(tg)
  g_model.load_state_dict(t_model.state_dict())
  t_opt, t_sched = optimizers(torch, t_model, recipe)
  g_opt, g_sched = optimizers(tg, g_model, recipe)
  t_losses, g_losses = [], []
  for x, y in batches(kind, STEPS):
    for lib, model, opt, sched, losses in ((torch, t_model, t_opt, t_sched, t_losses), (tg, g_model, g_opt, g_sched, g_losses)):
      opt.zero_grad()
      loss = loss_of(lib, model, kind, x, y)
      loss.backward()
      opt.step()
      if sched is not None: sched.step()
      losses.append(loss.item())
  np.testing.assert_allclose(g_losses, t_losses, rtol=1e-4, err_msg="loss per step")
  assert g_losses[-1] < g_losses[0]   # it learned something
  ours = g_model.state_dict()
  for name, value in t_model.state_dict().items():
    mine, theirs = ours[name].numpy(), value.numpy()
    if name == "block.self_attn.in_proj_bias":
      # the key bias adds q.b_k to every score of a row, which softmax ignores: its gradient is rounding noise
      # (in torch too), so only its bound is checked; the query and value biases must match
      dim = mine.shape[0] // 3
      assert np.abs(mine[dim:2 * dim]).max() < 0.05
      mine, theirs = np.delete(mine, np.s_[dim:2 * dim]), np.delete(theirs, np.s_[dim:2 * dim])
    np.testing.assert_allclose(mine, theirs, rtol=1e-3, atol=1e-4, err_msg=name)
