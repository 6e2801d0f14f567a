"""The CPU decode-attention kernel (llm/attention_cpu.py) against numpy in float64, and a decode step with it against
the primitive path it replaces."""
import numpy as np
import pytest

from teenygrad import Tensor
from teenygrad.llm import custom_ops


def numpy_attention(q, keys, values, start: int, mask) -> np.ndarray:
  """softmax(q k^T / sqrt(D) + mask) v over the rows [0, start] of each query head's kv head."""
  B, H, _, D = q.shape
  group = H // keys.shape[1]
  out = np.zeros((B, H, 1, D))
  for b in range(B):
    for h in range(H):
      k, v = keys[b, h // group, :start + 1].astype(np.float64), values[b, h // group, :start + 1]
      scores = k @ q[b, h, 0] / np.sqrt(D) + (mask[b, :start + 1] if mask is not None else 0)
      p = np.exp(scores - scores.max())
      out[b, h, 0] = p / p.sum() @ v
  return out


# (batch, heads, kv heads, cache rows, head dim, position, mask): grouped-query and plain heads, the first and the
# last cache row, long enough for the heads to split over threads, padding masks
CASES = [(1, 9, 3, 64, 64, 17, False), (2, 4, 2, 40, 32, 0, True), (1, 8, 8, 300, 16, 299, False),
         (3, 6, 2, 1024, 64, 1000, True), (1, 2, 1, 8, 8, 3, False)]


@pytest.mark.parametrize("batch, heads, kv_heads, length, head_dim, start, masked", CASES)
def test_decode_attention_matches_numpy(batch, heads, kv_heads, length, head_dim, start, masked):
  rng = np.random.default_rng(length + start)
  q = rng.standard_normal((batch, heads, 1, head_dim), dtype=np.float32)
  keys = rng.standard_normal((batch, kv_heads, length, head_dim), dtype=np.float32)
  values = rng.standard_normal((batch, kv_heads, length, head_dim), dtype=np.float32)
  mask = None
  if masked:   # a hidden row in every sequence, the current one always visible
    mask = np.where(rng.random((batch, length)) < 0.3, -1e9, 0).astype(np.float32)
    mask[:, start] = 0
  out = custom_ops.decode_attention(Tensor(q), Tensor(keys), Tensor(values), Tensor(np.array([start], dtype=np.int32)),
                                    Tensor(mask) if masked else None)
  assert out is not None, "the CPU has a decode-attention kernel"
  np.testing.assert_allclose(out.numpy(), numpy_attention(q, keys, values, start, mask), rtol=0, atol=2e-6)


def test_decode_with_the_kernel_equals_the_primitive_path(tmp_path, monkeypatch):
  """Greedy decode through the JIT (the position read from its buffer at each replay) gives the same tokens and
  nearly the same logits with and without the kernel."""
  pytest.importorskip("gguf")
  pytest.importorskip("tokenizers")
  from test_llm import write_tiny_gguf

  from teenygrad.llm.generate import Generator
  from teenygrad.llm.load import load_model
  from teenygrad.llm.sampling import SamplingParams
  path = tmp_path / "tiny.gguf"
  write_tiny_gguf(path)
  results = []
  for kernels in ({"CPU": custom_ops._cpu_attention}, {}):
    monkeypatch.setattr(custom_ops, "ATTENTION_KERNELS", kernels)
    model, tokenizer = load_model(str(path))
    tokenizer.stop_ids = set()
    generator = Generator(model, tokenizer)
    tokens = generator.generate_ids([[3, 17, 5, 22, 9]], SamplingParams(max_tokens=10))[0].generated
    logits = generator._step(np.array([[tokens[-1]]], dtype=np.int32), 15, None)
    results.append((tokens, logits))
  assert results[0][0] == results[1][0]
  np.testing.assert_allclose(results[0][1], results[1][1], rtol=0, atol=1e-5)


def numpy_prefill_attention(q, keys, values, start: int, mask) -> np.ndarray:
  """Causal: query row t (position start + t) over the rows [0, start + t] of its kv head, as (B, T, H, D)."""
  B, H, T, D = q.shape
  out = np.zeros((B, T, H, D))
  for t in range(T):
    out[:, t] = numpy_attention(q[:, :, t:t + 1], keys, values, start + t, mask)[:, :, 0]
  return out


# (batch, heads, kv heads, rows, cache rows, head dim, position, mask): a prompt from position 0, a later chunk, rows
# not a multiple of the kernel's 4, a cache length not a multiple of its 16 keys and one the prompt fills exactly
PREFILL_CASES = [(1, 9, 3, 37, 50, 64, 0, False), (2, 4, 2, 13, 29, 32, 5, True), (1, 2, 1, 2, 7, 16, 5, False),
                 (1, 9, 3, 130, 140, 64, 10, True), (1, 8, 8, 64, 64, 16, 0, False)]


@pytest.mark.parametrize("batch, heads, kv_heads, rows, length, head_dim, start, masked", PREFILL_CASES)
def test_prefill_attention_matches_numpy(batch, heads, kv_heads, rows, length, head_dim, start, masked):
  rng = np.random.default_rng(length + rows)
  q = rng.standard_normal((batch, heads, rows, head_dim), dtype=np.float32)
  keys = rng.standard_normal((batch, kv_heads, length, head_dim), dtype=np.float32)
  values = rng.standard_normal((batch, kv_heads, length, head_dim), dtype=np.float32)
  mask = None
  if masked:   # left padding: the first rows of every sequence but the first hidden
    mask = np.zeros((batch, length), dtype=np.float32)
    mask[1:, :3] = -1e9
  out = custom_ops.prefill_attention(Tensor(q), Tensor(keys), Tensor(values), Tensor(np.array([start], dtype=np.int32)),
                                     Tensor(mask) if masked else None)
  assert out is not None, "the CPU has a prefill-attention kernel"
  np.testing.assert_allclose(out.numpy(), numpy_prefill_attention(q, keys, values, start, mask), rtol=0, atol=2e-6)


def test_prefill_with_the_kernel_equals_the_primitive_path(tmp_path, monkeypatch):
  """A prompt's prefill, then a second chunk at a later position, batched with a padding mask: every row's logits
  nearly the same with and without the kernel."""
  pytest.importorskip("gguf")
  pytest.importorskip("tokenizers")
  from test_llm import write_tiny_gguf

  from teenygrad.llm.load import load_model
  from teenygrad.llm.model import KVCache
  path = tmp_path / "tiny.gguf"
  write_tiny_gguf(path)
  tokens = np.random.default_rng(3).integers(0, 30, size=(2, 11)).astype(np.int32)
  mask = np.zeros((2, 24), dtype=np.float32)
  mask[1, :2] = -1e9
  results = []
  for kernels in ({"CPU": custom_ops._cpu_prefill_attention}, {}):
    monkeypatch.setattr(custom_ops, "PREFILL_ATTENTION_KERNELS", kernels)
    model, _ = load_model(str(path))
    cache = KVCache(model.config, 2, 24)
    first = model(tokens, cache, 0, last_only=False, key_mask=Tensor(mask)).numpy()
    second = model(tokens[:, :6], cache, 11, last_only=False, key_mask=Tensor(mask)).numpy()
    results.append((first, second))
  for with_kernel, primitive in zip(*results): np.testing.assert_allclose(with_kernel, primitive, rtol=0, atol=1e-5)
