"""Mixed precision: autocast against torch.autocast (CPU), fp32 master weights, and GradScaler against torch's."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import teenygrad as tg
import teenygrad.nn as nn
import teenygrad.optim as optim
from teenygrad.amp import GradScaler, autocast, is_autocast_enabled


def models():
  tm = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.LayerNorm(32), torch.nn.GELU(), torch.nn.Linear(32, 4))
  gm = nn.Sequential(nn.Linear(16, 32), nn.LayerNorm(32), nn.GELU(), nn.Linear(32, 4))
  gm.load_state_dict(tm.state_dict())
  return tm, gm


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_autocast_forward_backward_matches_torch(dtype):
  tm, gm = models()
  x, y = np.random.randn(8, 16).astype(np.float32), np.random.randint(0, 4, 8)
  with torch.autocast("cpu", dtype=getattr(torch, dtype)):
    t_out = tm(torch.tensor(x))
    t_loss = torch.nn.CrossEntropyLoss()(t_out, torch.tensor(y))
  t_loss.backward()
  with autocast(dtype=getattr(tg, dtype)):
    assert is_autocast_enabled()
    g_out = gm(tg.Tensor(x))
    g_loss = nn.CrossEntropyLoss()(g_out, tg.Tensor(y))
  assert not is_autocast_enabled()
  assert g_out.dtype == getattr(tg, dtype) and t_out.dtype == getattr(torch, dtype)
  assert g_loss.dtype == tg.float32
  g_loss.backward()
  tol = 2e-2 if dtype == "bfloat16" else 3e-3
  assert g_loss.item() == pytest.approx(t_loss.item(), rel=tol)
  for (name, a), b in zip(tm.named_parameters(), gm.parameters()):
    assert b.dtype == tg.float32 and b.grad.dtype == tg.float32, name   # the masters and their grads stay fp32
    scale = np.abs(a.grad.numpy()).max()
    np.testing.assert_allclose(b.grad.numpy(), a.grad.numpy(), atol=tol * 2 * scale, err_msg=name)


def test_autocast_really_computes_in_low_precision():
  lin = nn.Linear(4, 1, bias=False)
  nn.init.constant_(lin.weight, 1.0)
  x = tg.Tensor([[1.0, 2 ** -9, 2 ** -9, 0.0]])   # 1 + 2^-8 is not a bfloat16: the output rounds to 1
  assert lin(x).item() == pytest.approx(1 + 2 ** -8)
  with autocast(dtype=tg.bfloat16):
    assert lin(x).float().item() == 1.0
    with autocast(enabled=False):
      assert lin(x).dtype == tg.float32
  with pytest.raises(ValueError, match="float16 and bfloat16"):
    with autocast(dtype=tg.float64): pass


def test_fp16_training_with_grad_scaler_matches_torch():
  tm, gm = models()
  topt, gopt = torch.optim.Adam(tm.parameters(), lr=1e-2), optim.Adam(gm.parameters(), lr=1e-2)
  tscaler, gscaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 10), GradScaler(init_scale=2.0 ** 10)
  for step in range(6):
    x, y = np.random.randn(8, 16).astype(np.float32), np.random.randint(0, 4, 8)
    with torch.autocast("cpu", dtype=torch.float16):
      t_loss = torch.nn.functional.cross_entropy(tm(torch.tensor(x)).float(), torch.tensor(y))
    with autocast(dtype=tg.float16):
      g_loss = nn.CrossEntropyLoss()(gm(tg.Tensor(x)), tg.Tensor(y))
    for opt, scaler, loss in ((topt, tscaler, t_loss), (gopt, gscaler, g_loss)):
      opt.zero_grad()
      scaler.scale(loss).backward()
      scaler.step(opt)
      scaler.update()
    assert g_loss.item() == pytest.approx(t_loss.item(), rel=5e-3), f"step {step}"
    assert gscaler.get_scale() == tscaler.get_scale()
  for a, b in zip(tm.parameters(), gm.parameters()):
    np.testing.assert_allclose(b.numpy(), a.detach().numpy(), atol=3e-3)


def _scaler_events(lib_scaler, make_param, finite_pattern):
  """Feed the scaler a sequence of finite and non-finite gradients; record the scale and whether the weight moved."""
  p, opt = make_param()
  scales, moved = [], []
  for finite in finite_pattern:
    before = float(p.detach().numpy()[0]) if hasattr(p, "detach") else float(p.numpy()[0])
    grad = np.array([1.0, 2.0] if finite else [np.inf, 1.0], dtype=np.float32)
    opt.zero_grad()
    lib_scaler.scale((p * (torch.tensor(grad) if isinstance(p, torch.Tensor) else tg.Tensor(grad))).sum()).backward()
    lib_scaler.step(opt)
    lib_scaler.update()
    after = float(p.detach().numpy()[0])
    scales.append(lib_scaler.get_scale())
    moved.append(after != before)
  return scales, moved


def test_grad_scaler_skips_steps_and_adjusts_scale_like_torch():
  pattern = [True, False, True, True, True, False, False, True, True, True]
  kwargs = dict(init_scale=256.0, growth_factor=2.0, backoff_factor=0.25, growth_interval=3)
  def torch_param():
    p = torch.nn.Parameter(torch.zeros(2))
    return p, torch.optim.SGD([p], lr=0.1)
  def tg_param():
    p = nn.Parameter(tg.zeros(2))
    return p, optim.SGD([p], lr=0.1)
  expected = _scaler_events(torch.amp.GradScaler("cpu", **kwargs), torch_param, pattern)
  got = _scaler_events(GradScaler(**kwargs), tg_param, pattern)
  assert got == expected
  assert got[1] == pattern   # a step happened exactly when the gradients were finite


def test_grad_scaler_unscales_and_state_dict():
  p = nn.Parameter(tg.zeros(3))
  opt = optim.SGD([p], lr=1.0)
  scaler = GradScaler(init_scale=8.0)
  loss = scaler.scale((p * tg.Tensor([1.0, 2.0, 3.0])).sum())
  loss.backward()
  scaler.unscale_(opt)
  np.testing.assert_allclose(p.grad.numpy(), [1.0, 2.0, 3.0])
  with pytest.raises(RuntimeError, match="already been called"): scaler.unscale_(opt)
  scaler.step(opt)
  with pytest.raises(RuntimeError, match="unscale_\\(\\) is being called after step"): scaler.unscale_(opt)
  scaler.update()
  np.testing.assert_allclose(p.numpy(), [-1.0, -2.0, -3.0])
  state = scaler.state_dict()
  assert state == torch.amp.GradScaler("cpu", init_scale=8.0).state_dict() | {"_growth_tracker": 1}
  other = GradScaler()
  other.load_state_dict(state)
  assert other.get_scale() == 8.0 and other.state_dict() == state
  with pytest.raises(AssertionError, match="No inf checks"): other.update()
  disabled = GradScaler(enabled=False)
  assert disabled.scale(loss) is loss and disabled.get_scale() == 1.0 and disabled.state_dict() == {}
