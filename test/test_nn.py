"""teenygrad.nn against torch.nn: each layer is built in torch, its state_dict is loaded into ours as is, and the outputs,
input gradients and parameter gradients must match. Also Module mechanics: registration, traversal, state_dict errors,
train/eval, to, apply, repr, initialization statistics."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import teenygrad as tg
import teenygrad.nn as nn
import teenygrad.nn.functional as F


def to_np(t) -> np.ndarray:
  return t.detach().numpy() if isinstance(t, torch.Tensor) else t.numpy()


def check_module(torch_module: torch.nn.Module, tg_module: nn.Module, *inputs: np.ndarray, atol: float = 1e-5, rtol: float = 1e-4,
                 int_inputs: tuple[int, ...] = (), call=None):
  """Load torch's weights into ours, run both on the same inputs, compare outputs and all gradients."""
  result = tg_module.load_state_dict(torch_module.state_dict())
  assert result.missing_keys == [] and result.unexpected_keys == []
  call = call or (lambda m, *xs: m(*xs))
  t_in = [torch.tensor(x, requires_grad=i not in int_inputs) if i not in int_inputs else torch.tensor(x) for i, x in enumerate(inputs)]
  g_in = [tg.Tensor(x, requires_grad=i not in int_inputs) if i not in int_inputs else tg.Tensor(x) for i, x in enumerate(inputs)]
  t_out, g_out = call(torch_module, *t_in), call(tg_module, *g_in)
  np.testing.assert_allclose(to_np(g_out), to_np(t_out), atol=atol, rtol=rtol)
  weight = np.asarray(np.random.randn(*t_out.shape), dtype=np.float32)
  (t_out * torch.tensor(weight)).sum().backward()
  (g_out * tg.Tensor(weight)).sum().backward()
  for i, (a, b) in enumerate(zip(t_in, g_in)):
    if i in int_inputs: continue
    np.testing.assert_allclose(to_np(b.grad), to_np(a.grad), atol=atol * 10, rtol=rtol * 10, err_msg=f"input {i} grad")
  ours = dict(tg_module.named_parameters())
  for name, p in torch_module.named_parameters():
    if p.grad is None: continue
    np.testing.assert_allclose(to_np(ours[name].grad), to_np(p.grad), atol=atol * 10, rtol=rtol * 10, err_msg=f"grad of {name}")
  return g_out


def randn(*shape) -> np.ndarray: return np.random.randn(*shape).astype(np.float32)


# ---- layers against torch ----

def test_linear():
  check_module(torch.nn.Linear(7, 5), nn.Linear(7, 5), randn(3, 4, 7))
  check_module(torch.nn.Linear(7, 5, bias=False), nn.Linear(7, 5, bias=False), randn(6, 7))


@pytest.mark.parametrize("kwargs", [dict(), dict(stride=2, padding=1), dict(padding="same", dilation=2), dict(groups=2, bias=False)])
def test_conv2d(kwargs):
  check_module(torch.nn.Conv2d(4, 6, 3, **kwargs), nn.Conv2d(4, 6, 3, **kwargs), randn(2, 4, 9, 9), atol=1e-4)


def test_conv1d():
  check_module(torch.nn.Conv1d(3, 5, 4, stride=2, padding=1), nn.Conv1d(3, 5, 4, stride=2, padding=1), randn(2, 3, 17), atol=1e-4)


@pytest.mark.parametrize("kwargs", [dict(), dict(stride=2, padding=1, output_padding=1), dict(groups=2)])
def test_conv_transpose2d(kwargs):
  check_module(torch.nn.ConvTranspose2d(4, 6, 3, **kwargs), nn.ConvTranspose2d(4, 6, 3, **kwargs), randn(2, 4, 5, 5), atol=1e-4)


@pytest.mark.parametrize("cls,shape", [("BatchNorm1d", (8, 5)), ("BatchNorm1d", (4, 5, 6)), ("BatchNorm2d", (4, 5, 3, 3))])
def test_batchnorm_training_and_running_stats(cls, shape):
  tm, gm = getattr(torch.nn, cls)(5, momentum=0.2), getattr(nn, cls)(5, momentum=0.2)
  with torch.no_grad():
    tm.weight.uniform_(0.5, 1.5); tm.bias.uniform_(-1, 1)
  check_module(tm, gm, randn(*shape) * 3 + 1, atol=1e-4)
  for step in range(2):   # running statistics follow torch's over several batches
    x = randn(*shape) * 2 - 1
    tm(torch.tensor(x)); gm(tg.Tensor(x))
  for name in ("running_mean", "running_var", "num_batches_tracked"):
    np.testing.assert_allclose(getattr(gm, name).numpy(), getattr(tm, name).numpy(), rtol=1e-5, atol=1e-6, err_msg=name)
  tm.eval(); gm.eval()
  check_module(tm, gm, randn(*shape), atol=1e-4)


def test_batchnorm_momentum_none_and_no_tracking():
  tm, gm = torch.nn.BatchNorm1d(3, momentum=None), nn.BatchNorm1d(3, momentum=None)
  for _ in range(3):
    x = randn(6, 3)
    tm(torch.tensor(x)); gm(tg.Tensor(x))
  np.testing.assert_allclose(gm.running_mean.numpy(), tm.running_mean.numpy(), rtol=1e-5, atol=1e-6)
  tm, gm = torch.nn.BatchNorm2d(3, track_running_stats=False, affine=False), nn.BatchNorm2d(3, track_running_stats=False, affine=False)
  assert list(gm.state_dict()) == list(tm.state_dict()) == []
  tm.eval(); gm.eval()
  check_module(tm, gm, randn(2, 3, 4, 4), atol=1e-4)


def test_batchnorm_errors():
  with pytest.raises(ValueError, match="expected 4D input"): nn.BatchNorm2d(3)(tg.randn(2, 3))
  with pytest.raises(ValueError, match="more than 1 value per channel"): nn.BatchNorm1d(3)(tg.randn(1, 3))


def test_layernorm_rmsnorm_groupnorm():
  tm = torch.nn.LayerNorm((4, 6))
  with torch.no_grad(): tm.weight.normal_(); tm.bias.normal_()
  check_module(tm, nn.LayerNorm((4, 6)), randn(3, 4, 6))
  check_module(torch.nn.LayerNorm(6, bias=False), nn.LayerNorm(6, bias=False), randn(3, 6))
  tm = torch.nn.RMSNorm(6, eps=1e-6)
  with torch.no_grad(): tm.weight.normal_()
  check_module(tm, nn.RMSNorm(6, eps=1e-6), randn(2, 5, 6))
  tm = torch.nn.GroupNorm(2, 6)
  with torch.no_grad(): tm.weight.normal_(); tm.bias.normal_()
  check_module(tm, nn.GroupNorm(2, 6), randn(3, 6, 4, 4), atol=1e-4)


def test_embedding_and_padding_idx():
  tm, gm = torch.nn.Embedding(10, 4, padding_idx=2), nn.Embedding(10, 4, padding_idx=2)
  np.testing.assert_array_equal(gm.weight.numpy()[2], np.zeros(4))
  idx = np.array([[1, 2, 3], [2, 9, 0]])
  check_module(tm, gm, idx, int_inputs=(0,))
  assert np.all(gm.weight.grad.numpy()[2] == 0)
  with pytest.raises(RuntimeError, match="indices"): gm(tg.Tensor([0.5]))


@pytest.mark.parametrize("name,kwargs", [("ReLU", {}), ("GELU", {}), ("GELU", dict(approximate="tanh")), ("SiLU", {}), ("Tanh", {}),
                                         ("Sigmoid", {}), ("Softmax", dict(dim=-1)), ("LogSoftmax", dict(dim=1)), ("LeakyReLU", dict(negative_slope=0.2)),
                                         ("ELU", dict(alpha=0.7)), ("Softplus", dict(beta=2.0)), ("Hardtanh", dict(min_val=-0.5, max_val=0.7)),
                                         ("Mish", {}), ("Hardswish", {}), ("ReLU6", {}), ("SELU", {}), ("LogSigmoid", {}), ("Softsign", {}), ("CELU", {})])
def test_activation_modules(name, kwargs):
  check_module(getattr(torch.nn, name)(**kwargs), getattr(nn, name)(**kwargs), randn(3, 5) * 3)


def test_dropout_train_and_eval():
  d = nn.Dropout(0.3)
  x = tg.ones(2000)
  out = d(x).numpy()
  kept = out[out != 0]
  np.testing.assert_allclose(kept, 1 / 0.7, rtol=1e-6)
  assert 0.2 < (out == 0).mean() < 0.4
  d.eval()
  np.testing.assert_array_equal(d(x).numpy(), x.numpy())
  with pytest.raises(ValueError): nn.Dropout(1.5)


@pytest.mark.parametrize("name,kwargs,target", [
  ("MSELoss", {}, "float"), ("L1Loss", dict(reduction="sum"), "float"), ("HuberLoss", dict(delta=0.5), "float"),
  ("SmoothL1Loss", dict(beta=0.7), "float"), ("CrossEntropyLoss", {}, "class"), ("CrossEntropyLoss", dict(label_smoothing=0.1), "class"),
  ("CrossEntropyLoss", dict(ignore_index=1, reduction="sum"), "class"), ("NLLLoss", {}, "class"), ("BCELoss", {}, "prob"),
  ("BCEWithLogitsLoss", {}, "prob"), ("KLDivLoss", dict(reduction="batchmean"), "prob")])
def test_loss_modules(name, kwargs, target):
  x = randn(6, 4)
  if name in ("BCELoss",): x = 1 / (1 + np.exp(-x))
  if name in ("NLLLoss", "KLDivLoss"): x = x - np.log(np.exp(x).sum(1, keepdims=True))
  y = {"float": randn(6, 4), "class": np.random.randint(0, 4, 6), "prob": np.random.rand(6, 4).astype(np.float32)}[target]
  tm, gm = getattr(torch.nn, name)(**kwargs), getattr(nn, name)(**kwargs)
  check_module(tm, gm, x, y, int_inputs=(1,))


def test_weighted_cross_entropy_loads_weight_buffer():
  w = np.array([1.0, 2.0, 0.5, 1.5], dtype=np.float32)
  tm, gm = torch.nn.CrossEntropyLoss(weight=torch.tensor(w)), nn.CrossEntropyLoss(weight=tg.Tensor(w))
  assert list(gm.state_dict()) == list(tm.state_dict()) == ["weight"]
  check_module(tm, gm, randn(5, 4), np.random.randint(0, 4, 5), int_inputs=(1,))


@pytest.mark.parametrize("batch_first", [True, False])
def test_multihead_attention(batch_first):
  tm, gm = torch.nn.MultiheadAttention(8, 2, batch_first=batch_first), nn.MultiheadAttention(8, 2, batch_first=batch_first)
  assert [k for k, _ in gm.named_parameters()] == [k for k, _ in tm.named_parameters()]
  assert gm.in_proj_weight.shape == (24, 8)
  x = randn(3, 3, 8)
  check_module(tm, gm, x, call=lambda m, x: m(x, x, x)[0], atol=1e-4)
  # masks: torch's convention, True = not allowed
  causal = np.triu(np.ones((3, 3), dtype=bool), 1)
  padding = np.zeros((3, 3), dtype=bool)
  padding[1, 2:] = True
  qkv_t, qkv_g = torch.tensor(x), tg.Tensor(x)
  t_out, t_w = tm(qkv_t, qkv_t, qkv_t, attn_mask=torch.tensor(causal), key_padding_mask=torch.tensor(padding))
  g_out, g_w = gm(qkv_g, qkv_g, qkv_g, attn_mask=tg.Tensor(causal), key_padding_mask=tg.Tensor(padding))
  np.testing.assert_allclose(g_out.numpy(), t_out.detach().numpy(), atol=1e-4, rtol=1e-4)
  np.testing.assert_allclose(g_w.numpy(), t_w.detach().numpy(), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("norm_first,activation", [(False, "relu"), (True, "gelu")])
def test_transformer_encoder_layer(norm_first, activation):
  kwargs = dict(d_model=8, nhead=2, dim_feedforward=16, dropout=0.0, batch_first=True, norm_first=norm_first, activation=activation)
  tm, gm = torch.nn.TransformerEncoderLayer(**kwargs), nn.TransformerEncoderLayer(**kwargs)
  assert list(gm.state_dict()) == list(tm.state_dict())
  check_module(tm, gm, randn(2, 5, 8), atol=1e-4)


def test_containers_and_names():
  from collections import OrderedDict
  for seq_t, seq_g in [(torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2)),
                        nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))),
                       (torch.nn.Sequential(OrderedDict(fc=torch.nn.Linear(3, 2))), nn.Sequential(OrderedDict(fc=nn.Linear(3, 2))))]:
    assert list(seq_g.state_dict()) == list(seq_t.state_dict())
    check_module(seq_t, seq_g, randn(5, 3))
  ml = nn.ModuleList([nn.Linear(2, 2) for _ in range(3)])
  ml.append(nn.Linear(2, 1))
  assert len(ml) == 4 and isinstance(ml[-1], nn.Linear) and ml[3].out_features == 1
  assert [k for k, _ in ml.named_parameters()][:2] == ["0.weight", "0.bias"]
  md = nn.ModuleDict({"a": nn.Linear(2, 3), "b": nn.ReLU()})
  assert list(md.keys()) == ["a", "b"] and "a" in md
  assert [k for k, _ in md.named_parameters()] == ["a.weight", "a.bias"]
  seq = nn.Sequential(nn.Linear(2, 2), nn.ReLU(), nn.Linear(2, 2))
  assert len(seq[1:]) == 2 and isinstance(seq[-1], nn.Linear)


class Net(nn.Module):
  def __init__(self):
    super().__init__()
    self.conv = nn.Conv2d(1, 2, 3)
    self.bn = nn.BatchNorm2d(2)
    self.head = nn.Sequential(nn.Flatten(), nn.Linear(2 * 4 * 4, 3))
    self.register_buffer("scale", tg.ones(1))
    self.register_buffer("cache", tg.zeros(2), persistent=False)
    self.plain = tg.zeros(3)   # a plain Tensor attribute is neither a parameter nor a buffer (as in torch)

  def forward(self, x):
    return self.head(self.bn(self.conv(x)).relu()) * self.scale


class TorchNet(torch.nn.Module):
  def __init__(self):
    super().__init__()
    self.conv = torch.nn.Conv2d(1, 2, 3)
    self.bn = torch.nn.BatchNorm2d(2)
    self.head = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(2 * 4 * 4, 3))
    self.register_buffer("scale", torch.ones(1))
    self.register_buffer("cache", torch.zeros(2), persistent=False)

  def forward(self, x):
    return self.head(torch.relu(self.bn(self.conv(x)))) * self.scale


def test_module_traversal_matches_torch():
  g, t = Net(), TorchNet()
  assert list(g.state_dict()) == list(t.state_dict())
  assert [n for n, _ in g.named_parameters()] == [n for n, _ in t.named_parameters()]
  assert [n for n, _ in g.named_buffers()] == [n for n, _ in t.named_buffers()]
  assert [n for n, _ in g.named_modules()] == [n for n, _ in t.named_modules()]
  assert [n for n, _ in g.named_children()] == [n for n, _ in t.named_children()]
  assert len(list(g.parameters())) == 6 and len(list(g.modules())) == 6
  check_module(t, g, randn(2, 1, 6, 6), atol=1e-4)
  g.eval(); t.eval()
  assert not g.bn.training and not g.head[1].training
  check_module(t, g, randn(2, 1, 6, 6), atol=1e-4)


def test_shared_parameter_listed_once():
  lin = nn.Linear(2, 2)
  seq = nn.Sequential(lin, lin)
  assert len(list(seq.parameters())) == 2
  assert list(seq.state_dict()) == list(torch.nn.Sequential(*(2 * [torch.nn.Linear(2, 2)])).state_dict())


def test_load_state_dict_errors_and_non_strict():
  m = nn.Linear(3, 2)
  before = m.weight.numpy().copy()
  sd = {"weight": np.zeros((2, 3), np.float32), "bias": np.zeros(2, np.float32), "extra": np.zeros(1, np.float32)}
  with pytest.raises(RuntimeError, match='Unexpected key\\(s\\) in state_dict: "extra"'): m.load_state_dict(sd)
  with pytest.raises(RuntimeError, match='Missing key\\(s\\) in state_dict: "bias"'): m.load_state_dict({"weight": sd["weight"]})
  with pytest.raises(RuntimeError, match="size mismatch for weight: copying a param with shape \\[3, 2\\]"):
    m.load_state_dict({"weight": np.zeros((3, 2), np.float32), "bias": sd["bias"]})
  np.testing.assert_array_equal(m.weight.numpy(), before)   # nothing was written by the failed loads
  missing, unexpected = m.load_state_dict({"weight": sd["weight"], "extra": sd["extra"]}, strict=False)
  assert missing == ["bias"] and unexpected == ["extra"]
  np.testing.assert_array_equal(m.weight.numpy(), 0)
  with pytest.raises(RuntimeError, match="size mismatch"): m.load_state_dict({"weight": np.zeros(3, np.float32)}, strict=False)


def test_load_state_dict_keeps_parameter_buffers():
  m = nn.Linear(3, 2)
  weight, buffer = m.weight, m.weight.lazydata.realized
  m.load_state_dict(torch.nn.Linear(3, 2).state_dict())
  assert m.weight is weight and m.weight.lazydata.realized is buffer   # an optimizer or a JIT capture still holds the right buffer


def test_state_dict_round_trip_to_torch():
  g, t = Net(), TorchNet()
  t.load_state_dict({k: torch.tensor(v.numpy()) for k, v in g.state_dict().items()})
  x = randn(2, 1, 6, 6)
  g.eval(); t.eval()
  np.testing.assert_allclose(g(tg.Tensor(x)).numpy(), t(torch.tensor(x)).detach().numpy(), atol=1e-5)


def test_train_eval_zero_grad_apply_requires_grad():
  m = Net()
  assert m.train() is m and m.training
  m.eval()
  assert all(not mod.training for mod in m.modules())
  m.train()
  out = m(tg.randn(2, 1, 6, 6)).sum()
  out.backward()
  assert all(p.grad is not None for p in m.parameters())
  m.zero_grad()
  assert all(p.grad is None for p in m.parameters())
  seen = []
  m.apply(lambda mod: seen.append(type(mod).__name__))
  assert seen[-1] == "Net" and "Linear" in seen
  m.requires_grad_(False)
  assert not any(p.requires_grad for p in m.parameters())


def test_to_dtype_keeps_parameter_identity():
  m = nn.Linear(3, 2)
  weight = m.weight
  m.to(tg.float64)
  assert m.weight is weight and m.weight.dtype == tg.float64
  assert m(tg.randn(4, 3, dtype=tg.float64)).dtype == tg.float64
  m.half()
  assert m.bias.dtype == tg.float16
  with pytest.raises(TypeError, match="floating point"): m.to(tg.int32)


def test_repr_is_torch_like():
  assert repr(nn.Linear(3, 2)) == repr(torch.nn.Linear(3, 2))
  assert repr(nn.Conv2d(1, 4, 3, stride=2, padding=1)) == repr(torch.nn.Conv2d(1, 4, 3, stride=2, padding=1))
  seq_g = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Dropout(0.2))
  seq_t = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Dropout(0.2))
  assert repr(seq_g) == repr(seq_t)
  assert repr(nn.LayerNorm(5)) == repr(torch.nn.LayerNorm(5))
  for args in [(3,), (3, 1e-3, 0.2, False)]: assert repr(nn.BatchNorm2d(*args)) == repr(torch.nn.BatchNorm2d(*args))
  assert repr(nn.BatchNorm1d(3, bias=False)) == repr(torch.nn.BatchNorm1d(3, bias=False))
  assert list(nn.BatchNorm1d(3, bias=False).state_dict()) == list(torch.nn.BatchNorm1d(3, bias=False).state_dict())
  assert repr(nn.GroupNorm(2, 4)) == repr(torch.nn.GroupNorm(2, 4))
  assert repr(nn.RMSNorm(4)) == repr(torch.nn.RMSNorm(4))
  assert repr(nn.Embedding(4, 3)) == repr(torch.nn.Embedding(4, 3))


def test_registration_errors():
  m = nn.Module()
  with pytest.raises(KeyError, match="contain"): m.register_buffer("a.b", tg.zeros(1))
  with pytest.raises(TypeError, match="Parameter or None required"): m.register_parameter("w", tg.zeros(1))
  with pytest.raises(AttributeError, match="has no attribute 'missing'"): m.missing
  with pytest.raises(NotImplementedError, match="forward"): m(1)
  class Early(nn.Module):
    def __init__(self):
      self.x = nn.Linear(1, 1)
  with pytest.raises(AttributeError, match="before Module.__init__"): Early()


def test_parameter_assignment_and_deletion():
  m = nn.Linear(2, 2)
  m.bias = None
  assert "bias" not in m.state_dict() and m.bias is None
  assert m(tg.ones(1, 2)).shape == (1, 2)
  m.extra = nn.Parameter(tg.ones(3))
  assert "extra" in dict(m.named_parameters())
  del m.extra
  assert "extra" not in dict(m.named_parameters())


# ---- initialization follows torch's distributions ----

def test_default_init_bounds():
  lin = nn.Linear(100, 50)
  w = lin.weight.numpy()
  bound = 1 / math.sqrt(100)
  assert np.abs(w).max() <= bound and np.abs(w).max() > 0.9 * bound
  assert abs(w.std() - bound / math.sqrt(3)) < 0.05 * bound
  assert np.abs(lin.bias.numpy()).max() <= bound
  conv = nn.Conv2d(8, 4, 3)
  assert np.abs(conv.weight.numpy()).max() <= 1 / math.sqrt(8 * 9)
  ct = nn.ConvTranspose2d(8, 4, 3)
  assert ct.weight.shape == (8, 4, 3, 3) and np.abs(ct.weight.numpy()).max() <= 1 / math.sqrt(4 * 9)
  assert abs(nn.Embedding(1000, 16).weight.numpy().std() - 1.0) < 0.05
  mha = nn.MultiheadAttention(16, 4)
  assert np.abs(mha.in_proj_weight.numpy()).max() <= math.sqrt(6 / (16 + 48))
  assert np.all(mha.in_proj_bias.numpy() == 0) and np.all(mha.out_proj.bias.numpy() == 0)


def test_init_functions():
  t = nn.Parameter(tg.zeros(200, 300))
  nn.init.kaiming_normal_(t, mode="fan_out", nonlinearity="relu")
  assert abs(t.numpy().std() - math.sqrt(2 / 200)) < 0.01 * math.sqrt(2 / 200) * 5
  nn.init.xavier_uniform_(t, gain=nn.init.calculate_gain("tanh"))
  assert np.abs(t.numpy()).max() <= 5 / 3 * math.sqrt(6 / 500)
  nn.init.trunc_normal_(t, std=2.0, a=-1.0, b=1.0)
  assert np.abs(t.numpy()).max() <= 1.0
  nn.init.constant_(t, 0.5)
  assert np.all(t.numpy() == 0.5)
  q = nn.Parameter(tg.zeros(4, 6))
  nn.init.orthogonal_(q)
  np.testing.assert_allclose(q.numpy() @ q.numpy().T, np.eye(4), atol=1e-5)
  assert nn.init.calculate_gain("leaky_relu", 0.2) == pytest.approx(torch.nn.init.calculate_gain("leaky_relu", 0.2))
  with pytest.raises(ValueError, match="Fan in and fan out"): nn.init.xavier_uniform_(nn.Parameter(tg.zeros(3)))


def test_functional_wrappers():
  x = randn(4, 5)
  np.testing.assert_allclose(F.gelu(tg.Tensor(x)).numpy(), torch.nn.functional.gelu(torch.tensor(x)).numpy(), atol=1e-6)
  np.testing.assert_allclose(F.normalize(tg.Tensor(x)).numpy(), torch.nn.functional.normalize(torch.tensor(x)).numpy(), atol=1e-6)


def test_clip_grad_norm_matches_torch():
  for norm_type in (2.0, 1.0, math.inf):
    grads = [randn(3, 4) * 5, randn(7)]
    tps = [torch.zeros(g.shape, requires_grad=True) for g in grads]
    gps = [nn.Parameter(tg.zeros(*g.shape)) for g in grads]
    for tp, gp, g in zip(tps, gps, grads): tp.grad, gp.grad = torch.tensor(g), tg.Tensor(g)
    t_norm = torch.nn.utils.clip_grad_norm_(tps, 1.5, norm_type=norm_type)
    g_norm = nn.utils.clip_grad_norm_(gps, 1.5, norm_type=norm_type)
    assert g_norm.item() == pytest.approx(t_norm.item(), rel=1e-5)
    for tp, gp in zip(tps, gps): np.testing.assert_allclose(gp.grad.numpy(), tp.grad.numpy(), rtol=1e-5, atol=1e-6)
  p = nn.Parameter(tg.zeros(2))
  p.grad = tg.Tensor([float("inf"), 1.0])
  with pytest.raises(RuntimeError, match="non-finite"): nn.utils.clip_grad_norm_([p], 1.0, error_if_nonfinite=True)


def test_linear_and_conv_weight_grads_are_tiled_gemms():
  """The weight gradient of a Linear (and of a conv, over its im2col columns) is a matmul over the batch: autograd
  builds it with the summed axis last so the code generator tiles it as a GEMM."""
  from teenygrad.engine.realize import capture_kernels
  lin = nn.Linear(64, 32)
  x = tg.randn(48, 64).realize()
  (lin(x) * tg.randn(48, 32)).sum().backward()
  with capture_kernels() as launched: lin.weight.grad.realize()
  assert any(item.kernel.name.startswith("gemm") for item in launched), [item.kernel.name for item in launched]
  t_lin = torch.nn.Linear(64, 32)
  check_module(t_lin, nn.Linear(64, 32), randn(48, 64), atol=1e-4)


@pytest.mark.parametrize("name,args,kwargs,shape", [
  ("MaxPool2d", (2,), {}, (2, 3, 11, 11)), ("MaxPool2d", ((2, 3),), {}, (2, 3, 9, 10)), ("MaxPool2d", (3,), dict(stride=2, padding=1), (1, 2, 9, 9)),
  ("AvgPool2d", (2,), {}, (2, 3, 8, 8)), ("AvgPool2d", (3,), dict(stride=2, padding=1), (1, 2, 9, 9)), ("AdaptiveAvgPool2d", ((1, 1),), {}, (2, 3, 6, 6))])
def test_pooling_modules(name, args, kwargs, shape):
  check_module(getattr(torch.nn, name)(*args, **kwargs), getattr(nn, name)(*args, **kwargs), randn(*shape))
