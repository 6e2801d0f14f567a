"""teenygrad.export: freestanding C libraries built for the host (-nostdlib) and for Cortex-M3/M4 under QEMU, checked
against teenygrad on the CPU. Each library is captured and compiled once per module (fixtures); the board tests
skip, naming the missing tool, only when the Arm toolchain or QEMU is absent (CI installs both)."""
import subprocess

import numpy as np
import pytest

from teenygrad import Tensor
from teenygrad.engine.realize import realize
from teenygrad.export import ExportError, dequantize, quantize_per_channel, to_c
from teenygrad.export.examples import load_digits
from teenygrad.export.planner import Lifetime, check_plan, lower_bound, plan_arena
from teenygrad.export.targets import TARGETS, build_and_run, missing_tools, section_sizes
from teenygrad.tensor.tensor import no_grad

BOARDS = ["host", "cortex-m3", "cortex-m4"]


def need(target: str) -> None:
  reason = missing_tools(target)
  if reason: pytest.skip(f"{target}: {reason}")


def realize_together(*tensors: Tensor) -> None:
  """One schedule for all (what an optimizer step does): kernels reading old weights run before the updates."""
  realize([t.lazydata for t in tensors])


def seeded(shape, scale, seed):
  return (np.random.default_rng(seed).standard_normal(shape) * scale).astype(np.float32)


# ---- the planner (pure) ----

def test_planner_chain_reaches_lower_bound():
  sizes = [4000, 800, 3000, 64, 4000, 12]
  lifetimes = [Lifetime(i, n, i, i + 1) for i, n in enumerate(sizes)]
  plan = plan_arena(lifetimes)
  check_plan(lifetimes, plan)
  assert plan.lower_bound == max(a + b for a, b in zip(sizes, sizes[1:]))
  assert plan.size == plan.lower_bound


def test_planner_random_lifetimes_are_valid_and_near_bound():
  rng = np.random.default_rng(0)
  worst = 0.0
  for _ in range(50):
    lifetimes = []
    for i in range(int(rng.integers(1, 30))):
      first = int(rng.integers(0, 40))
      lifetimes.append(Lifetime(i, int(rng.integers(1, 5000)), first, first + int(rng.integers(0, 6))))
    plan = plan_arena(lifetimes)
    check_plan(lifetimes, plan)
    assert plan.size >= lower_bound(lifetimes) == plan.lower_bound
    worst = max(worst, plan.overhead)
  assert worst < 0.1   # the goal; on these sizes the seeded search reaches the bound


def test_planner_rejects_bad_lifetimes():
  with pytest.raises(ValueError, match="dies"): plan_arena([Lifetime("a", 4, 3, 2)])
  with pytest.raises(ValueError, match="negative"): plan_arena([Lifetime("a", -4, 0, 2)])


# ---- the approximations of exp2/log2/sin/sqrt against numpy ----

MATH_INPUTS = np.concatenate([
  np.linspace(-30, 30, 241), np.geomspace(1e-30, 1e30, 120), [0.0, -0.0, 1e-40, 1.5e-45, 3.4e38, 1.0, 2.0, 0.5, 127.9, -149.5,
  np.inf, -np.inf, np.nan], -np.geomspace(1e-6, 200, 40)]).astype(np.float32)


def math_functions(x):
  wide = x.double()
  return x.exp2(), x.log2(), x.sin(), x.sqrt(), x.exp(), x.tanh(), wide.exp2(), (wide * 0.37).log2(), (wide * 3.1).sqrt()


@pytest.fixture(scope="module")
def math_lib():
  return to_c(math_functions, [Tensor(MATH_INPUTS)], name="mathcheck")


@pytest.mark.parametrize("target", ["host", "cortex-m3"])
def test_math_approximations_match_teenygrad(math_lib, target, tmp_path):
  """The library's own exp2/log2/sin/sqrt (and the float64 exp2/log2/sqrt optimizers use) against teenygrad on the
  CPU, which calls libm: NaN and infinities where it has them, finite values within 2 ulp in float32 and 4 in float64
  (sin for |x| < 1e4: see docs/export.md)."""
  need(target)
  res = build_and_run(math_lib, target, [[MATH_INPUTS]], tmp_path)
  with np.errstate(all="ignore"):
    for k, (got, want) in enumerate(zip(res.outputs[0], (t.numpy() for t in math_functions(Tensor(MATH_INPUTS))))):
      check = np.abs(MATH_INPUTS) < 1e4 if k == 2 else np.ones(MATH_INPUTS.shape, bool)
      if k in (4, 5):   # exp and tanh are composites in teenygrad's graph (tanh cancels near 0): fp32 tolerance
        np.testing.assert_allclose(got, want, rtol=2e-6, atol=2e-7)
        continue
      assert (np.isnan(got) == np.isnan(want))[check].all()
      finite = np.isfinite(want) & check
      assert (got[~np.isnan(want) & ~finite & check] == want[~np.isnan(want) & ~finite & check]).all()
      spacing = np.spacing(np.abs(want[finite]))
      ulps = 2 if want.dtype == np.float32 else 4
      assert (np.abs(got[finite].astype(np.float64) - want[finite]) <= ulps * spacing.astype(np.float64) + 1e-30).all()


# ---- an MNIST-shaped MLP (784-128-10) ----

@pytest.fixture(scope="module")
def mlp():
  w1, b1 = Tensor(seeded((128, 784), 0.05, 1)), Tensor(seeded(128, 0.1, 2))
  w2, b2 = Tensor(seeded((10, 128), 0.1, 3)), Tensor(seeded(10, 0.1, 4))
  def forward(x): return (x @ w1.T + b1).relu() @ w2.T + b2
  inputs = [seeded((1, 784), 1.0, 10 + i) for i in range(2)]
  lib = to_c(forward, [Tensor(inputs[0])], name="mlp", weights={"fc1_weight": w1, "fc1_bias": b1, "fc2_weight": w2, "fc2_bias": b2})
  expected = [forward(Tensor(x)).numpy() for x in inputs]
  return lib, inputs, expected


@pytest.mark.parametrize("target", BOARDS)
def test_mlp_matches_teenygrad(mlp, target, tmp_path):
  need(target)
  lib, inputs, expected = mlp
  res = build_and_run(lib, target, [[x] for x in inputs], tmp_path)
  for call, want in enumerate(expected):
    np.testing.assert_allclose(res.outputs[call][0], want, rtol=1e-5, atol=1e-5)


def test_mlp_library_shape_and_sizes(mlp, tmp_path):
  lib, _, _ = mlp
  assert "#include <" not in lib.source and "#include <" not in lib.header   # nothing from a libc
  assert "void mlp(const float* input0, float* output0);" in lib.header
  assert "static const float mlp_fc1_weight[100352]" in lib.source
  assert lib.report.const_weight_bytes == (784 * 128 + 128 + 128 * 10 + 10) * 4
  assert lib.report.arena_bytes <= 1.1 * lib.report.arena_lower_bound
  need("cortex-m4")
  _, source = lib.write(tmp_path)
  sizes = section_sizes("cortex-m4", source)
  assert sizes["rodata"] == lib.report.const_weight_bytes and sizes["bss"] == lib.report.arena_bytes
  assert sizes["text"] < 8 * 1024


def test_mlp_object_needs_no_library_symbols(mlp, tmp_path):
  """Compiled for the Cortex-M4F, the library calls nothing it does not define (no libc, libm or libgcc)."""
  need("cortex-m4")
  lib, _, _ = mlp
  _, source = lib.write(tmp_path)
  obj = tmp_path / "mlp.o"
  t = TARGETS["cortex-m4"]
  subprocess.run([t.cc, "-std=c99", "-ffreestanding", "-nostdlib", "-Wall", "-Wextra", "-Werror", "-Wdouble-promotion", "-Os",
                  *t.arch_flags, "-c", str(source), "-o", str(obj)], check=True)
  undefined = subprocess.run(["arm-none-eabi-nm", "-u", str(obj)], capture_output=True, text=True, check=True).stdout.split()
  assert undefined == []


# ---- int8 weights ----

@pytest.fixture(scope="module")
def mlp_int8():
  w1, b1 = seeded((128, 784), 0.05, 1), seeded(128, 0.1, 2)
  w2, b2 = seeded((10, 128), 0.1, 3), seeded(10, 0.1, 4)
  def forward_with(p):
    return lambda x: (x @ p[0].T + p[1]).relu() @ p[2].T + p[3]
  x = seeded((1, 784), 1.0, 10)
  lib = to_c(forward_with([Tensor(a) for a in (w1, b1, w2, b2)]), [Tensor(x)], name="mlp8", quantize="int8")
  # the reference: teenygrad with the weights the library holds (quantized, then dequantized)
  deq = [dequantize(*quantize_per_channel(w, w.shape), w.shape) for w in (w1, w2)]
  expected = forward_with([Tensor(deq[0]), Tensor(b1), Tensor(deq[1]), Tensor(b2)])(Tensor(x)).numpy()
  return lib, x, expected


@pytest.mark.parametrize("target", ["host", "cortex-m4"])
def test_int8_weights_dequantized_in_kernel(mlp_int8, target, tmp_path):
  need(target)
  lib, x, expected = mlp_int8
  assert "static const signed char mlp8_const0[100352]" in lib.source and "mlp8_const0_scale[128]" in lib.source
  assert lib.report.const_weight_bytes == 784 * 128 + 128 * 4 + 128 * 4 + 10 * 128 + 10 * 4 + 10 * 4
  res = build_and_run(lib, target, [[x]], tmp_path)
  np.testing.assert_allclose(res.outputs[0][0], expected, rtol=1e-5, atol=1e-5)


def test_quantize_per_channel_roundtrip():
  w = seeded((6, 5), 1.0, 0)
  w[2] = 0
  q, scale = quantize_per_channel(w, w.shape)
  assert q.dtype == np.int8 and np.abs(q).max() <= 127 and scale[2] == 1.0
  assert np.abs(dequantize(q, scale, w.shape) - w).max() <= (np.abs(w).max(axis=1) / 254 + 1e-7).max()


# ---- a small CNN ----

@pytest.fixture(scope="module")
def cnn():
  shapes = [(8, 1, 3, 3), (8,), (16, 8, 3, 3), (16,), (10, 784), (10,)]
  c1, b1, c2, b2, fw, fb = [Tensor(seeded(s, 0.2, 20 + i)) for i, s in enumerate(shapes)]
  def forward(x):
    h = x.conv2d(c1, b1, padding=1).relu().max_pool2d(2)        # (1, 8, 14, 14)
    h = h.conv2d(c2, b2, padding=1).relu().max_pool2d(2)        # (1, 16, 7, 7)
    return (h.reshape(1, -1) @ fw.T + fb).log_softmax(1)         # (1, 10)
  x = seeded((1, 1, 28, 28), 1.0, 30)
  lib = to_c(forward, [Tensor(x)], name="cnn")
  return lib, x, forward(Tensor(x)).numpy()


@pytest.mark.parametrize("target", BOARDS)
def test_cnn_matches_teenygrad(cnn, target, tmp_path):
  need(target)
  lib, x, expected = cnn
  res = build_and_run(lib, target, [[x]], tmp_path)
  np.testing.assert_allclose(res.outputs[0][0], expected, rtol=1e-5, atol=1e-5)
  assert lib.report.arena_bytes <= 1.1 * lib.report.arena_lower_bound


# ---- a training step: forward, cross entropy, backward, SGD, 10 times on the device ----

def make_train_step(params, lr):
  def step(x, y):
    w1, b1, w2, b2 = params
    for p in params: p.grad = None
    logits = (x @ w1.T + b1).relu() @ w2.T + b2
    loss = logits.cross_entropy(y)
    loss.backward()
    realize_together(loss, *[p.grad for p in params])   # gradients read the old weights: before the update
    with no_grad():
      for p in params: p.assign(p - lr * p.grad)
    realize_together(*params)
    return loss
  return step


def train_reference_and_export(name, data_x, data_y, sizes, lr, steps=10):
  """Export the step (capturing call 1), then run calls 2..steps in teenygrad; returns the library, the losses and
  final weights teenygrad computed, and the per-call inputs."""
  (n_in, n_hidden, n_out) = sizes
  params = [Tensor(seeded(s, 0.3, 40 + i), requires_grad=True) for i, s in enumerate([(n_hidden, n_in), (n_hidden,), (n_out, n_hidden), (n_out,)])]
  step = make_train_step(params, lr)
  names = dict(zip(["w1", "b1", "w2", "b2"], params))
  lib = to_c(step, [Tensor(data_x[0]), Tensor(data_y[0])], name=name, weights=names, input_names=["x", "y"], output_names=["loss"])
  losses = [None] + [float(step(Tensor(data_x[i]), Tensor(data_y[i])).numpy()) for i in range(1, steps)]
  weights = {f"{name}_{n}": p.numpy() for n, p in names.items()}
  return lib, losses, weights


@pytest.fixture(scope="module")
def train_random():
  rng = np.random.default_rng(5)
  xs = [rng.standard_normal((16, 20)).astype(np.float32) for _ in range(10)]
  ys = [rng.integers(0, 5, 16).astype(np.int32) for _ in range(10)]
  lib, losses, weights = train_reference_and_export("train", xs, ys, (20, 12, 5), lr=0.5)
  return lib, xs, ys, losses, weights


@pytest.mark.parametrize("target", BOARDS)
def test_training_step_10_times_matches_teenygrad(train_random, target, tmp_path):
  need(target)
  lib, xs, ys, losses, weights = train_random
  assert [s.name for s in lib.state] == ["train_w1", "train_b1", "train_w2", "train_b2"]
  res = build_and_run(lib, target, [[x, y] for x, y in zip(xs, ys)], tmp_path)
  device_losses = [float(out[0]) for out in res.outputs]
  np.testing.assert_allclose(device_losses[1:], losses[1:], rtol=1e-5)
  for name, want in weights.items(): np.testing.assert_allclose(res.state[name], want, rtol=1e-5, atol=1e-6)


@pytest.fixture(scope="module")
def train_digits():
  images, labels, source = load_digits()
  batch = 32
  xs = [images[i * batch:(i + 1) * batch] for i in range(10)]
  ys = [labels[i * batch:(i + 1) * batch] for i in range(10)]
  lib, losses, weights = train_reference_and_export("digits", xs, ys, (64, 32, 10), lr=0.5)
  return lib, xs, ys, losses, weights, source


@pytest.mark.parametrize("target", ["cortex-m3", "cortex-m4"])
def test_digits_training_fits_64k_and_learns(train_digits, target, tmp_path):
  need(target)
  lib, xs, ys, losses, weights, source = train_digits
  # weights, gradients (arena), optimizer state and the stack must fit: the link fails otherwise
  assert lib.report.ram_bytes + 8192 <= 64 * 1024, lib.report
  res = build_and_run(lib, target, [[x, y] for x, y in zip(xs, ys)], tmp_path, ram_bytes=64 * 1024)
  device_losses = [float(out[0]) for out in res.outputs]
  np.testing.assert_allclose(device_losses[1:], losses[1:], rtol=1e-5)
  if source == "sklearn digits": assert device_losses[-1] < device_losses[0]   # it learns
  for name, want in weights.items(): np.testing.assert_allclose(res.state[name], want, rtol=1e-5, atol=1e-6)


def test_over_budget_ram_fails_to_link(train_digits, tmp_path):
  need("cortex-m4")
  lib = train_digits[0]
  from teenygrad.export.targets import BuildError
  with pytest.raises(BuildError, match="overflow|will not fit"):
    build_and_run(lib, "cortex-m4", [[train_digits[1][0], train_digits[2][0]]], tmp_path, ram_bytes=16 * 1024)


@pytest.mark.parametrize("optimizer", ["SGD", "Adam"])
def test_nn_linear_and_optim_step(tmp_path, optimizer):
  """The same export through teenygrad.nn.Linear and teenygrad.optim (when those modules exist): SGD, and Adam, whose
  float64 step counter and bias corrections run on the device too."""
  nn = pytest.importorskip("teenygrad.nn")
  optim = pytest.importorskip("teenygrad.optim")
  if not hasattr(nn, "Linear"): pytest.skip("teenygrad.nn.Linear not available")
  need("cortex-m4")
  np.random.seed(3)
  fc1, fc2 = nn.Linear(16, 8), nn.Linear(8, 4)
  params = [fc1.weight, fc1.bias, fc2.weight, fc2.bias]
  opt = optim.SGD(params, lr=0.2) if optimizer == "SGD" else optim.Adam(params, lr=0.01)
  rng = np.random.default_rng(9)
  xs = [rng.standard_normal((8, 16)).astype(np.float32) for _ in range(10)]
  ys = [rng.integers(0, 4, 8).astype(np.int32) for _ in range(10)]
  def step(x, y):
    opt.zero_grad()
    loss = fc2(fc1(x).relu()).cross_entropy(y)
    loss.backward()
    opt.step()
    return loss
  names = dict(zip(["w1", "b1", "w2", "b2"], params))
  lib = to_c(step, [Tensor(xs[0]), Tensor(ys[0])], name="nnstep", weights=names)
  losses = [float(step(Tensor(x), Tensor(y)).numpy()) for x, y in zip(xs[1:], ys[1:])]
  res = build_and_run(lib, "cortex-m4", [[x, y] for x, y in zip(xs, ys)], tmp_path)
  np.testing.assert_allclose([float(o[0]) for o in res.outputs][1:], losses, rtol=1e-5)
  for n, p in names.items(): np.testing.assert_allclose(res.state[f"nnstep_{n}"], p.numpy(), rtol=1e-5, atol=1e-6)


# ---- bad input ----

def test_bad_arguments_raise_clear_errors(tmp_path):
  w = Tensor(seeded((4, 4), 1.0, 0))
  x = Tensor(seeded((1, 4), 1.0, 1))
  with pytest.raises(TypeError, match="expected a Tensor"): to_c(lambda a: a @ w, [np.zeros((1, 4))])
  with pytest.raises(ValueError, match="C identifier"): to_c(lambda a: a @ w, [x], name="my-model")
  with pytest.raises(ValueError, match="quantize"): to_c(lambda a: a @ w, [x], quantize="int4")
  with pytest.raises(TypeError, match="output 0"): to_c(lambda a: 3.0, [x])
  with pytest.raises(ValueError, match="two inputs"): to_c(lambda a, b: a + b, [x, x])
  with pytest.raises(NotImplementedError, match="float16"): to_c(lambda a: (a.half() * 2).float(), [x])


def test_writing_an_int8_weight_is_refused():
  w = Tensor(seeded((8, 8), 1.0, 0))
  x = Tensor(seeded((1, 8), 1.0, 1))
  def step(a):
    out = a @ w.T
    w.assign(w * 0.5)
    realize_together(out, w)
    return out
  with pytest.raises(ExportError, match="int8"): to_c(step, [x], quantize="int8")


def test_write_is_atomic_and_complete(mlp, tmp_path):
  lib = mlp[0]
  header, source = lib.write(tmp_path / "out")
  assert header.read_text() == lib.header and source.read_text() == lib.source
  assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["mlp.c", "mlp.h"]


def test_command_line_export(tmp_path, capsys):
  from teenygrad.export.cli import main
  factory = tmp_path / "factory.py"
  factory.write_text("import numpy as np\nfrom teenygrad import Tensor\n"
                     "w = Tensor(np.arange(12, dtype=np.float32).reshape(3, 4))\n"
                     "def make():\n  return (lambda x: (x @ w.T).relu(), [Tensor(np.ones((2, 4), dtype=np.float32))])\n")
  assert main([f"{factory}:make", "--name", "tiny", "--out", str(tmp_path / "lib")]) == 0
  assert "arena" in capsys.readouterr().out
  assert (tmp_path / "lib" / "tiny.h").exists() and "void tiny(" in (tmp_path / "lib" / "tiny.c").read_text()
  assert main([f"{factory}:nothing", "--out", str(tmp_path / "lib")]) == 2
  assert "no callable" in capsys.readouterr().err
  assert main(["no_colon_here"]) == 2


def test_example_factories_export():
  from teenygrad.export import examples
  made = examples.mnist_mlp()
  lib = to_c(made["fn"], made["inputs"], name="ex", weights=made["weights"])
  assert [c.name for c in lib.constants] == ["ex_fc1_weight", "ex_fc1_bias", "ex_fc2_weight", "ex_fc2_bias"]


def test_outputs_that_are_views_inputs_weights_or_repeated(tmp_path):
  """Outputs that are views (made contiguous), an input or a weight (copied out), the same tensor twice, a scalar."""
  need("host")
  w = Tensor(np.arange(12, dtype=np.float32).reshape(3, 4))
  x = np.linspace(-1, 1, 8, dtype=np.float32).reshape(2, 4)
  def fn(a):
    y = a @ w.T
    return y.T, a, y.T, w, (a * 2).sum(), a.exp2().reshape(8)[2:5]
  lib = to_c(fn, [Tensor(x)], name="edge")
  res = build_and_run(lib, "host", [[x], [x * 3]], tmp_path / "edge")
  for call, scale in enumerate((1, 3)):
    for got, want in zip(res.outputs[call], fn(Tensor(x * scale))):
      np.testing.assert_allclose(got, want.numpy(), rtol=1e-6)
  ident = to_c(lambda a: a, [Tensor(x)], name="ident")
  np.testing.assert_array_equal(build_and_run(ident, "host", [[x]], tmp_path / "ident").outputs[0][0], x)


def test_cli_subparser_hook(tmp_path):
  """How teenygrad/cli.py plugs the command in: add_subparser, then args.func(args)."""
  import argparse

  from teenygrad.export.cli import add_subparser
  parser = argparse.ArgumentParser(prog="teenygrad")
  add_subparser(parser.add_subparsers(dest="command"))
  args = parser.parse_args(["export", "teenygrad.export.examples:mnist_mlp", "--name", "mlp", "--out", str(tmp_path), "--int8"])
  assert args.func(args) == 0
  assert "signed char" in (tmp_path / "mlp.c").read_text()
