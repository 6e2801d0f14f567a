"""The model's fused decode route without a GPU: the kernel registries (MATVEC_KERNELS, ROPE_ATTENTION_KERNELS,
ATTENTION_KERNELS) get CPU entries that do in numpy what the CUDA kernels do, so the route's wiring -- which tensors
reach each kernel, in which order and layout, the folded norms and silu, the cache rows written -- is checked against
the primitive path, eagerly and through the JIT. The CUDA kernels themselves are checked in test_cuda_compile_decode.py
(their C++ on the CPU) and test_cuda.py (on a GPU)."""
from __future__ import annotations

from collections import Counter
from types import SimpleNamespace

import numpy as np
import pytest

from teenygrad.dtype import dtypes

gguf = pytest.importorskip("gguf")
pytest.importorskip("tokenizers")
pytest.importorskip("jinja2")

from test_cuda_compile_decode import reference_prologue  # noqa: E402
from test_llm import write_tiny_gguf  # noqa: E402


def _host(buffer, count: int | None = None) -> np.ndarray:
  values = buffer.raw.view(buffer.dtype.np)
  return values if count is None else values[:count]


class NumpyKernels:
  """The fused kernels' meaning in numpy on CPU buffers, counting the launches."""
  def __init__(self):
    self.calls: Counter = Counter()

  def matvec(self, device: str, weight):
    from teenygrad.nn.quant import QuantizedTensor
    def dense(w, n: int, k: int) -> np.ndarray:
      if isinstance(weight, QuantizedTensor):
        return gguf.quants.dequantize(_host(w), gguf.GGMLQuantizationType[weight.ggml_type]).reshape(n, k).astype(np.float64)
      return _host(w).astype(np.float64).reshape(n, k)
    def launch(out, x, w, m, n, k, residual=None, norm=None, eps=0.0, swiglu=False):
      prologue = "norm" if norm is not None else "swiglu" if swiglu else ""
      self.calls["matvec_" + (prologue or "plain")] += 1
      xs = _host(x, m * (2 * k if swiglu else k)).reshape(m, -1)
      product = reference_prologue(xs, prologue, None if norm is None else _host(norm, k), eps) @ dense(w, n, k).T
      if residual is not None: product = product + _host(residual, m * n).reshape(m, n)
      _host(out)[:m * n] = product.reshape(-1)
    return launch, weight.raw if isinstance(weight, QuantizedTensor) else weight

  def rope_attention(self, device: str):
    attend = self.attention(device, name="rope_attention")
    def launch(out, qkv, cos, sin, start, keys, values, mask, b, h, kvh, d, length, rope_rows, interleaved):
      s = int(_host(start)[0])
      assert 0 <= s < min(length, rope_rows)
      rows = _host(qkv, b * (h + 2 * kvh) * d).reshape(b, h + 2 * kvh, d)
      c, sn = _host(cos).reshape(rope_rows, d // 2)[s], _host(sin).reshape(rope_rows, d // 2)[s]
      first, second = (slice(0, d, 2), slice(1, d, 2)) if interleaved else (slice(0, d // 2), slice(d // 2, d))
      rotated = rows[:, :h + kvh].copy()
      x0, x1 = rows[:, :h + kvh, first], rows[:, :h + kvh, second]
      rotated[..., first], rotated[..., second] = x0 * c - x1 * sn, x0 * sn + x1 * c
      _host(keys).reshape(b, kvh, length, d)[:, :, s] = rotated[:, h:]
      _host(values).reshape(b, kvh, length, d)[:, :, s] = rows[:, h + kvh:]
      q = rotated[:, :h].astype(np.float32)
      attend(out, SimpleNamespace(raw=q.view(np.uint8).reshape(-1), dtype=dtypes.float32), keys, values, start, mask, b, h, kvh, length, d)
    return launch

  def attention(self, device: str, name: str = "attention"):
    def launch(out, q, keys, values, start, mask, batch, h, kvh, length, d):
      self.calls[name] += 1
      count = int(_host(start)[0]) + 1
      qs = _host(q, batch * h * d).reshape(batch, h, d).astype(np.float64)
      k = np.repeat(_host(keys).reshape(batch, kvh, length, d)[:, :, :count], h // kvh, axis=1)
      v = np.repeat(_host(values).reshape(batch, kvh, length, d)[:, :, :count], h // kvh, axis=1)
      scores = np.einsum("bhd,bhsd->bhs", qs, k) / np.sqrt(d)
      if mask is not None: scores = scores + _host(mask).reshape(batch, length)[:, None, :count]
      weights = np.exp(scores - scores.max(-1, keepdims=True))
      _host(out)[:] = np.einsum("bhs,bhsd->bhd", weights / weights.sum(-1, keepdims=True), v).reshape(-1)
    return launch


@pytest.fixture
def numpy_kernels(monkeypatch):
  from teenygrad.llm import custom_ops, fused_linear
  from teenygrad.nn import quant
  kernels = NumpyKernels()
  # the CUDA kernels modelled here read x as float: so must the primitive path's quantized linears, which the AVX2
  # build runs on x rounded to int8 (~1e-5 off here); the portable C keeps x float
  monkeypatch.setitem(quant.FUSED_KERNELS, "CPU", lambda device, t: quant._cpu_kernels(device, t, "scalar"))
  monkeypatch.setitem(fused_linear.MATVEC_KERNELS, "CPU", kernels.matvec)
  monkeypatch.setitem(custom_ops.ROPE_ATTENTION_KERNELS, "CPU", kernels.rope_attention)
  monkeypatch.setitem(custom_ops.ATTENTION_KERNELS, "CPU", kernels.attention)
  return kernels


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
  path = tmp_path_factory.mktemp("gguf") / "tiny.gguf"
  write_tiny_gguf(path)
  return path


@pytest.fixture(scope="module")
def tiny_f16(tmp_path_factory):
  path = tmp_path_factory.mktemp("gguf") / "tiny_f16.gguf"
  write_tiny_gguf(path, qtype="F16")
  return path


def _logits(path, tokens, decode_steps: int) -> list[np.ndarray]:
  """Prefill of tokens[:-decode_steps], then one decode step per remaining token at a symbolic position."""
  from teenygrad.ir.symbolic import BoundVariable
  from teenygrad.llm.load import load_model
  from teenygrad.llm.model import KVCache
  model, _ = load_model(str(path), device="CPU")   # the numpy kernels are the CPU's, whatever DEV says
  cache = KVCache(model.config, 1, 16, device="CPU")
  split = len(tokens) - decode_steps
  out = [model(np.array([tokens[:split]], dtype=np.int32), cache, 0).numpy()]
  for pos in range(split, len(tokens)):
    out.append(model(np.array([[tokens[pos]]], dtype=np.int32), cache, BoundVariable("p", 0, 15, pos)).numpy())
  return out


@pytest.mark.parametrize("weights", ["Q8_0", "F16"])
def test_fused_decode_route_equals_the_primitive_path(tiny, tiny_f16, numpy_kernels, monkeypatch, weights):
  """A decode step through the fused route is five launches per layer (q/k/v with the norm; RoPE, the cache write and
  attention; output with the residual; gate/up with the norm; down reading silu(gate) * up) plus the LM head with the
  final norm, and gives the primitive path's logits (quantized and float16 weights)."""
  from teenygrad.helpers import config
  tokens = [3, 17, 5, 22, 9, 31, 4]
  path = tiny if weights == "Q8_0" else tiny_f16
  fused = _logits(path, tokens, decode_steps=3)
  calls = dict(numpy_kernels.calls)
  monkeypatch.setattr(config, "decode_fusion", "none")
  primitive = _logits(path, tokens, decode_steps=3)
  for got, want in zip(fused, primitive): np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
  layers, steps = 2, 3
  # the prefill (4 rows) takes the fused matvecs too; RoPE, the cache write and attention are decode's only
  assert calls == {"matvec_norm": (steps + 1) * (2 * layers + 1), "matvec_plain": (steps + 1) * layers,
                   "matvec_swiglu": (steps + 1) * layers, "rope_attention": steps * layers}, calls


def test_a_swiglu_too_big_to_fold_still_reaches_the_matvec(tiny, numpy_kernels, monkeypatch):
  """Where silu(gate) * up is too big to recompute in every warp (Llama-3-8B's down projection), it runs as its own
  elementwise kernel and the down projection is still the backend's matvec (with the residual), not the generic
  reduce: the same logits as the primitive path."""
  from teenygrad.helpers import config
  from teenygrad.nn import matvec_cuda
  monkeypatch.setattr(matvec_cuda, "SWIGLU_FOLD_MAX", 0)
  tokens = [3, 17, 5, 22, 9]
  fused = _logits(tiny, tokens, decode_steps=2)
  layers, steps = 2, 2
  assert "matvec_swiglu" not in numpy_kernels.calls
  assert numpy_kernels.calls["matvec_plain"] == 2 * (steps + 1) * layers, numpy_kernels.calls   # output and down
  monkeypatch.setattr(config, "decode_fusion", "none")
  for got, want in zip(fused, _logits(tiny, tokens, decode_steps=2)): np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("setting", ["linear", "linear,norm", "linear,swiglu", "rope"])
def test_each_fusion_alone_equals_the_primitive_path(tiny, numpy_kernels, monkeypatch, setting):
  """TEENYGRAD_DECODE_FUSION keeps only the parts it names (for bisecting a GPU failure), and any subset is right."""
  from teenygrad.helpers import config
  monkeypatch.setattr(config, "decode_fusion", setting)
  tokens = [3, 17, 5, 22, 9]
  fused = _logits(tiny, tokens, decode_steps=2)
  parts = set(setting.split(","))
  assert ("rope_attention" in numpy_kernels.calls) == ("rope" in parts)
  assert ("attention" in numpy_kernels.calls) == ("rope" not in parts)   # the primitive RoPE, then the attention kernel
  assert ("matvec_norm" in numpy_kernels.calls) == ({"linear", "norm"} <= parts)
  assert ("matvec_swiglu" in numpy_kernels.calls) == ({"linear", "swiglu"} <= parts)
  monkeypatch.setattr(config, "decode_fusion", "none")
  for got, want in zip(fused, _logits(tiny, tokens, decode_steps=2)): np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_jitted_generation_through_the_fused_route(tiny, numpy_kernels, monkeypatch):
  """The generator's JIT captures the fused decode step and replays it at every position: same tokens as the
  primitive path (greedy), the batch's left padding masked in the attention kernel."""
  from teenygrad.helpers import config
  from teenygrad.llm.generate import Generator
  from teenygrad.llm.load import load_model
  from teenygrad.llm.sampling import SamplingParams
  def generate():
    model, tokenizer = load_model(str(tiny), device="CPU")
    tokenizer.stop_ids = set()
    generator = Generator(model, tokenizer)
    return [r.generated for r in generator.generate_ids([[3, 17, 5, 22, 9], [8, 4]], SamplingParams(max_tokens=6))]
  fused = generate()
  assert numpy_kernels.calls["rope_attention"] > 0
  monkeypatch.setattr(config, "decode_fusion", "none")
  assert fused == generate()


def test_greedy_takes_the_argmax_on_the_device(tiny):
  """Plain greedy decoding reads each step's argmax from the device (a jitted step of its own) and generates what
  host sampling of the logits generates (a negligible penalty sends it down the host path)."""
  from teenygrad.llm.generate import Generator
  from teenygrad.llm.load import load_model
  from teenygrad.llm.sampling import SamplingParams
  model, tokenizer = load_model(str(tiny), device="CPU")
  tokenizer.stop_ids = set()
  generator = Generator(model, tokenizer)
  prompts = [[3, 17, 5, 22, 9], [8, 4]]
  device = [r.generated for r in generator.generate_ids(prompts, SamplingParams(max_tokens=7))]
  assert generator._decode_greedy.capture is not None and generator._decode.capture is None
  host = [r.generated for r in generator.generate_ids(prompts, SamplingParams(max_tokens=7, frequency_penalty=1e-12))]
  assert device == host and generator._decode.capture is not None
