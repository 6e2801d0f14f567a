"""teenygrad.optim against torch.optim: each optimizer matches torch step by step on random problems; state_dicts
have torch's structure and load both ways; a step runs few kernels and a changing lr compiles nothing new."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import teenygrad as tg
import teenygrad.nn as nn
import teenygrad.optim as optim
from teenygrad.engine import realize as engine

SHAPES = [(5, 3), (3,), (2, 2, 2)]


def problem(lib, values):
  """Parameters and a non-quadratic loss of them, built the same way in both libraries."""
  if lib is torch: params = [torch.tensor(v, requires_grad=True) for v in values]
  else: params = [nn.Parameter(tg.Tensor(v)) for v in values]
  def loss_fn(step: int):
    total = None
    for i, p in enumerate(params):
      target = np.sin(np.arange(np.prod(p.shape), dtype=np.float32).reshape(p.shape) + step + i)
      t = torch.tensor(target) if lib is torch else tg.Tensor(target)
      term = ((p - t) ** 2).sum() + (p * t).tanh().sum()
      total = term if total is None else total + term
    return total
  return params, loss_fn


def run_both(torch_cls, tg_cls, kwargs: dict, steps: int = 8, groups=None, scheduler=None):
  values = [np.random.randn(*s).astype(np.float32) for s in SHAPES]
  tp, tloss = problem(torch, values)
  gp, gloss = problem(tg, values)
  def arrange(params):
    return [{"params": params[:1], **groups[0]}, {"params": params[1:], **groups[1]}] if groups else params
  topt, gopt = torch_cls(arrange(tp), **kwargs), tg_cls(arrange(gp), **kwargs)
  tsched = gsched = None
  if scheduler is not None:
    tsched, gsched = scheduler(torch.optim.lr_scheduler, topt), scheduler(optim.lr_scheduler, gopt)
  for step in range(steps):
    for opt, loss_fn in ((topt, tloss), (gopt, gloss)):
      opt.zero_grad()
      loss_fn(step).backward()
      opt.step()
    if tsched is not None: tsched.step(); gsched.step()
    for a, b in zip(tp, gp):
      np.testing.assert_allclose(b.numpy(), a.detach().numpy(), rtol=2e-5, atol=2e-6, err_msg=f"step {step}")
  return topt, gopt, tp, gp


CASES = [
  (torch.optim.SGD, optim.SGD, dict(lr=0.05)),
  (torch.optim.SGD, optim.SGD, dict(lr=0.05, momentum=0.9)),
  (torch.optim.SGD, optim.SGD, dict(lr=0.05, momentum=0.9, dampening=0.3, weight_decay=0.1)),
  (torch.optim.SGD, optim.SGD, dict(lr=0.05, momentum=0.8, nesterov=True, maximize=True)),
  (torch.optim.Adam, optim.Adam, dict(lr=0.01)),
  (torch.optim.Adam, optim.Adam, dict(lr=0.01, betas=(0.8, 0.99), weight_decay=0.1, amsgrad=True)),
  (torch.optim.Adam, optim.Adam, dict(lr=0.01, maximize=True, eps=1e-6)),
  (torch.optim.AdamW, optim.AdamW, dict(lr=0.01)),
  (torch.optim.AdamW, optim.AdamW, dict(lr=0.02, weight_decay=0.3, amsgrad=True)),
  (torch.optim.RMSprop, optim.RMSprop, dict(lr=0.01)),
  (torch.optim.RMSprop, optim.RMSprop, dict(lr=0.01, momentum=0.5, centered=True, weight_decay=0.05)),
  (torch.optim.Adagrad, optim.Adagrad, dict(lr=0.1)),
  (torch.optim.Adagrad, optim.Adagrad, dict(lr=0.1, lr_decay=0.05, weight_decay=0.1, initial_accumulator_value=0.2)),
]


@pytest.mark.parametrize("torch_cls,tg_cls,kwargs", CASES, ids=[f"{c[0].__name__}-{i}" for i, c in enumerate(CASES)])
def test_optimizer_matches_torch(torch_cls, tg_cls, kwargs):
  run_both(torch_cls, tg_cls, kwargs)


def test_param_groups_with_their_own_hyperparameters():
  run_both(torch.optim.SGD, optim.SGD, dict(lr=0.05, momentum=0.9), groups=[dict(lr=0.1), dict(momentum=0.5, weight_decay=0.01)])
  run_both(torch.optim.Adam, optim.Adam, dict(lr=0.01), groups=[dict(betas=(0.5, 0.9)), dict(lr=0.002)])


def test_state_dict_structure_matches_torch():
  for torch_cls, tg_cls, kwargs in CASES:
    topt, gopt, _, _ = run_both(torch_cls, tg_cls, kwargs, steps=2)
    ts, gs = topt.state_dict(), gopt.state_dict()
    assert gs["param_groups"] == ts["param_groups"], torch_cls.__name__
    assert list(gs["state"]) == list(ts["state"])
    for i in ts["state"]:
      assert sorted(gs["state"][i]) == sorted(ts["state"][i])
      for key, value in ts["state"][i].items():
        np.testing.assert_allclose(gs["state"][i][key].numpy(), value.numpy(), rtol=1e-5, atol=1e-6, err_msg=f"{torch_cls.__name__} {key}")


@pytest.mark.parametrize("torch_cls,tg_cls,kwargs", [CASES[2], CASES[5], CASES[10], CASES[12]])
def test_state_dict_round_trip_both_ways(torch_cls, tg_cls, kwargs):
  """Train 3 steps in torch, continue in teenygrad from torch's state (and the reverse): same as uninterrupted torch."""
  values = [np.random.randn(*s).astype(np.float32) for s in SHAPES]
  tp, tloss = problem(torch, values)
  topt = torch_cls(tp, **kwargs)
  for step in range(3):
    topt.zero_grad(); tloss(step).backward(); topt.step()
  gp, gloss = problem(tg, [p.detach().numpy() for p in tp])
  gopt = tg_cls(gp, **kwargs)
  gopt.load_state_dict(topt.state_dict())
  for step in range(3, 6):
    for opt, loss_fn in ((topt, tloss), (gopt, gloss)):
      opt.zero_grad(); loss_fn(step).backward(); opt.step()
  for a, b in zip(tp, gp): np.testing.assert_allclose(b.numpy(), a.detach().numpy(), rtol=2e-5, atol=2e-6)
  # and back: teenygrad's state_dict (as torch tensors) into a fresh torch optimizer
  tp2, tloss2 = problem(torch, [p.numpy() for p in gp])
  topt2 = torch_cls(tp2, **kwargs)
  sd = gopt.state_dict()
  topt2.load_state_dict({"state": {i: {k: torch.tensor(v.numpy()) for k, v in s.items()} for i, s in sd["state"].items()},
                         "param_groups": sd["param_groups"]})
  for step in range(6, 8):
    for opt, loss_fn in ((topt, tloss), (gopt, gloss), (topt2, tloss2)):
      opt.zero_grad(); loss_fn(step).backward(); opt.step()
  for a, b, c in zip(tp, gp, tp2):
    np.testing.assert_allclose(b.numpy(), a.detach().numpy(), rtol=2e-5, atol=2e-6)
    np.testing.assert_allclose(c.detach().numpy(), a.detach().numpy(), rtol=2e-5, atol=2e-6)


def test_load_state_dict_errors():
  p = [nn.Parameter(tg.zeros(2)), nn.Parameter(tg.zeros(3))]
  opt = optim.Adam(p)
  with pytest.raises(ValueError, match="different number of parameter groups"):
    opt.load_state_dict({"state": {}, "param_groups": []})
  with pytest.raises(ValueError, match="doesn't match the size"):
    opt.load_state_dict({"state": {}, "param_groups": [{"lr": 0.1, "params": [0]}]})
  with pytest.raises(ValueError, match="shape"):
    opt.load_state_dict({"state": {0: {"step": 1.0, "exp_avg": np.zeros(5), "exp_avg_sq": np.zeros(2)}},
                         "param_groups": [{**opt.state_dict()["param_groups"][0]}]})


def test_constructor_errors():
  p = [nn.Parameter(tg.zeros(2))]
  with pytest.raises(ValueError, match="Invalid learning rate"): optim.SGD(p, lr=-1)
  with pytest.raises(ValueError, match="Invalid beta parameter at index 1"): optim.Adam(p, betas=(0.9, 1.0))
  with pytest.raises(ValueError, match="Nesterov"): optim.SGD(p, lr=0.1, nesterov=True)
  with pytest.raises(ValueError, match="empty parameter list"): optim.SGD([], lr=0.1)
  with pytest.raises(ValueError, match="more than one parameter group"): optim.SGD([{"params": p}, {"params": p}], lr=0.1)
  with pytest.raises(TypeError, match="iterable of Tensors"): optim.SGD(p[0], lr=0.1)
  with pytest.raises(ValueError, match="non-leaf"): optim.SGD([p[0] * 2], lr=0.1)


# ---- kernels per step and compiles ----

def _model():
  return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 4))


def _step_kernels(opt, model, x, y) -> int:
  opt.zero_grad()
  model(x).cross_entropy(y).backward()
  for p in model.parameters(): p.grad.realize()
  with engine.capture_kernels() as launched: opt.step()
  return len(launched)


@pytest.mark.parametrize("cls,kwargs,per_param,per_group", [
  (optim.SGD, dict(lr=0.1), 1, 0), (optim.SGD, dict(lr=0.1, momentum=0.9), 2, 0),
  (optim.Adam, dict(lr=0.01), 3, 1), (optim.AdamW, dict(lr=0.01, amsgrad=True), 4, 1)])
def test_kernels_per_step(cls, kwargs, per_param, per_group):
  """One fused kernel per parameter update plus one per state buffer: never one per op per parameter."""
  model = _model()
  opt = cls(model.parameters(), **kwargs)
  x, y = tg.randn(32, 8), tg.randint(0, 4, (32,))
  n = len(list(model.parameters()))
  for _ in range(3):
    assert _step_kernels(opt, model, x, y) == per_param * n + per_group
  for p in model.parameters():   # each parameter is a realized buffer again: the lazy graph does not grow
    assert p.lazydata.realized is not None and not p.lazydata.srcs and not p.lazydata.is_view


def test_cosine_schedule_compiles_a_bounded_number_of_kernels():
  """The lr is read from a device buffer, so 20 different learning rates compile nothing after the first steps."""
  model = _model()
  opt = optim.AdamW(model.parameters(), lr=0.01)
  sched = optim.lr_scheduler.CosineAnnealingLR(opt, T_max=20)
  x, y = tg.randn(32, 8), tg.randint(0, 4, (32,))
  sizes, lrs = [], []
  for _ in range(20):
    opt.zero_grad()
    model(x).cross_entropy(y).backward()
    opt.step()
    sched.step()
    sizes.append(len(engine._kernel_cache))
    lrs.append(opt.param_groups[0]["lr"])
  assert len(set(lrs)) == 20
  assert sizes[-1] == sizes[1], f"kernel cache grew after step 2: {sizes}"


def test_loss_read_after_step_is_the_loss_before_it():
  model = nn.Linear(4, 1)
  opt = optim.SGD(model.parameters(), lr=0.5)
  x = tg.randn(8, 4)
  expected = (model(x) ** 2).mean().item()
  loss = (model(x) ** 2).mean()
  loss.backward()
  opt.step()
  assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_batchnorm_running_stats_use_the_weights_of_their_forward():
  """BatchNorm's running stats are lazy until the optimizer step realizes them, before it changes the conv weights."""
  tm = torch.nn.Sequential(torch.nn.Conv2d(1, 3, 3), torch.nn.BatchNorm2d(3))
  gm = nn.Sequential(nn.Conv2d(1, 3, 3), nn.BatchNorm2d(3))
  gm.load_state_dict(tm.state_dict())
  topt, gopt = torch.optim.SGD(tm.parameters(), lr=0.5), optim.SGD(gm.parameters(), lr=0.5)
  for _ in range(3):
    x = np.random.randn(4, 1, 6, 6).astype(np.float32)
    for model, opt, lib in ((tm, topt, torch), (gm, gopt, tg)):
      opt.zero_grad()
      (model(lib.tensor(x)) ** 2).mean().backward()
      opt.step()
  for name in ("1.running_mean", "1.running_var"):
    np.testing.assert_allclose(gm.state_dict()[name].numpy(), tm.state_dict()[name].numpy(), rtol=1e-5, atol=1e-6)


def test_zero_grad_and_closure():
  p = nn.Parameter(tg.ones(3))
  opt = optim.SGD([p], lr=0.1)
  def closure():
    opt.zero_grad()
    loss = (p * p).sum()
    loss.backward()
    return loss
  loss = opt.step(closure)
  assert loss.item() == pytest.approx(3.0)
  np.testing.assert_allclose(p.numpy(), 0.8, rtol=1e-6)
  opt.zero_grad(set_to_none=False)
  np.testing.assert_array_equal(p.grad.numpy(), 0)
  opt.zero_grad()
  assert p.grad is None


def test_add_param_group_and_repr():
  a, b = nn.Parameter(tg.zeros(2)), nn.Parameter(tg.zeros(2))
  opt = optim.Adam([a], lr=0.1)
  opt.add_param_group({"params": [b], "lr": 0.01})
  assert opt.param_groups[1]["lr"] == 0.01 and opt.param_groups[1]["betas"] == (0.9, 0.999)
  assert "Parameter Group 1" in repr(opt)


# ---- schedulers ----

SCHEDULERS = [
  ("StepLR", dict(step_size=3, gamma=0.5)), ("MultiStepLR", dict(milestones=[2, 5, 5, 9], gamma=0.3)), ("ExponentialLR", dict(gamma=0.9)),
  ("CosineAnnealingLR", dict(T_max=7, eta_min=0.01)), ("LinearLR", dict(start_factor=0.2, total_iters=6)),
  ("OneCycleLR", dict(max_lr=1.0, total_steps=25)), ("OneCycleLR", dict(max_lr=0.5, total_steps=25, three_phase=True, anneal_strategy="linear")),
  ("LambdaLR", dict(lr_lambda=lambda epoch: 0.9 ** epoch)),
]


def _schedule(lib, name, kwargs, opt_name, n=24):
  p = torch.nn.Parameter(torch.zeros(2)) if lib is torch else nn.Parameter(tg.zeros(2))
  module = torch.optim if lib is torch else optim
  opt = getattr(module, opt_name)([p], lr=0.1, **({"momentum": 0.9} if opt_name == "SGD" else {}))
  sched = getattr(module.lr_scheduler, name)(opt, **kwargs)
  out = []
  for _ in range(n):
    opt.step()
    sched.step()
    group = opt.param_groups[0]
    out.append((sched.get_last_lr()[0], group.get("momentum", group.get("betas", (0,))[0])))
  return np.array(out)


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("name,kwargs", SCHEDULERS, ids=[f"{n}-{i}" for i, (n, _) in enumerate(SCHEDULERS)])
@pytest.mark.parametrize("opt_name", ["SGD", "Adam"])
def test_scheduler_matches_torch(name, kwargs, opt_name):
  np.testing.assert_allclose(_schedule(tg, name, kwargs, opt_name), _schedule(torch, name, kwargs, opt_name), rtol=1e-12, atol=0)


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_sequential_lr_matches_torch():
  def run(lib, module):
    p = torch.nn.Parameter(torch.zeros(2)) if lib is torch else nn.Parameter(tg.zeros(2))
    opt = module.SGD([p], lr=0.1)
    warm = module.lr_scheduler.LinearLR(opt, start_factor=0.1, total_iters=4)
    cos = module.lr_scheduler.CosineAnnealingLR(opt, T_max=10)
    seq = module.lr_scheduler.SequentialLR(opt, [warm, cos], milestones=[4])
    out = []
    for _ in range(14):
      opt.step(); seq.step(); out.append(seq.get_last_lr()[0])
    return out
  np.testing.assert_allclose(run(tg, optim), run(torch, torch.optim), rtol=1e-12)


def test_scheduler_drives_the_optimizer_step():
  """A scheduled lr reaches the kernels (through the device buffer), matching torch's parameters."""
  run_both(torch.optim.SGD, optim.SGD, dict(lr=0.1, momentum=0.9), steps=6,
           scheduler=lambda lib, opt: lib.OneCycleLR(opt, max_lr=0.2, total_steps=6))
  run_both(torch.optim.AdamW, optim.AdamW, dict(lr=0.05), steps=6, scheduler=lambda lib, opt: lib.OneCycleLR(opt, max_lr=0.05, total_steps=6))


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_scheduler_state_dict_resumes():
  p = nn.Parameter(tg.zeros(2))
  opt = optim.SGD([p], lr=0.1)
  sched = optim.lr_scheduler.CosineAnnealingLR(opt, T_max=10)
  for _ in range(4): opt.step(); sched.step()
  saved_opt, saved_sched = opt.state_dict(), sched.state_dict()
  expected = []
  for _ in range(3): opt.step(); sched.step(); expected.append(sched.get_last_lr()[0])
  p2 = nn.Parameter(tg.zeros(2))
  opt2 = optim.SGD([p2], lr=0.1)
  sched2 = optim.lr_scheduler.CosineAnnealingLR(opt2, T_max=10)
  opt2.load_state_dict(saved_opt)
  sched2.load_state_dict(saved_sched)
  got = []
  for _ in range(3): opt2.step(); sched2.step(); got.append(sched2.get_last_lr()[0])
  assert got == expected


def test_scheduler_errors():
  opt = optim.SGD([nn.Parameter(tg.zeros(2))], lr=0.1)
  with pytest.raises(TypeError, match="is not an Optimizer"): optim.lr_scheduler.StepLR(object(), 2)
  with pytest.raises(ValueError, match="total_steps"): optim.lr_scheduler.OneCycleLR(opt, max_lr=1.0)
  with pytest.raises(KeyError, match="initial_lr"): optim.lr_scheduler.StepLR(opt, 2, last_epoch=3)
  sched = optim.lr_scheduler.OneCycleLR(opt, max_lr=1.0, total_steps=2)
  sched.step(); sched.step()
  with pytest.raises(ValueError, match="Tried to step 3 times"): sched.step()


def test_jit_replayed_training_step_matches_eager():
  """lr (from a scheduler), the step count and BatchNorm's statistics live in device buffers written in place, so a
  JIT replay of the whole training step (which runs no Python) gives the same weights as running it eagerly."""
  def build():
    tg.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))
    opt = optim.AdamW(model.parameters(), lr=0.01)
    return model, opt, optim.lr_scheduler.CosineAnnealingLR(opt, T_max=6)
  eager, eager_opt, eager_sched = build()
  jitted, jit_opt, jit_sched = build()

  @tg.jit
  def step(x, y):
    loss = jitted(x).cross_entropy(y)
    jit_opt.zero_grad()
    loss.backward()
    jit_opt.step()
    return loss

  for _ in range(6):
    x, y = np.random.randn(16, 6).astype(np.float32), np.random.randint(0, 3, 16)
    loss = eager(tg.Tensor(x)).cross_entropy(tg.Tensor(y))
    eager_opt.zero_grad(); loss.backward(); eager_opt.step(); eager_sched.step()
    replayed = step(tg.Tensor(x), tg.Tensor(y))
    jit_sched.step()
    assert replayed.item() == pytest.approx(loss.item(), rel=1e-6)
  for (name, a), b in zip(eager.state_dict().items(), jitted.state_dict().values()):
    np.testing.assert_allclose(b.numpy(), a.numpy(), rtol=1e-6, atol=1e-7, err_msg=name)
