"""LLM parts without the full model: malformed GGUF files, the chat-template sandbox, sampling rules, streaming
detokenization, the model on a tiny random GGUF against torch, the CLI's errors."""
import os
import struct

import numpy as np
import pytest

gguf = pytest.importorskip("gguf")
pytest.importorskip("tokenizers")
pytest.importorskip("jinja2")

from teenygrad.state.gguf import GGUFFile, load_gguf  # noqa: E402


# ---- a tiny real GGUF, written with the gguf package ----

def write_tiny_gguf(path, n_layers=2, dim=64, heads=4, kv_heads=2, hidden=96, vocab=40, qtype="Q8_0", arch="llama", seed=0):
  rng = np.random.default_rng(seed)
  w = gguf.GGUFWriter(str(path), arch)
  w.add_block_count(n_layers); w.add_context_length(64); w.add_embedding_length(dim); w.add_feed_forward_length(hidden)
  w.add_head_count(heads); w.add_head_count_kv(kv_heads); w.add_layer_norm_rms_eps(1e-5); w.add_rope_freq_base(10000.0)
  tokens = [f"<t{i}>" for i in range(vocab)]
  w.add_tokenizer_model("gpt2"); w.add_token_list(tokens); w.add_token_types([1] * vocab); w.add_token_merges([])
  w.add_bos_token_id(1); w.add_eos_token_id(2)
  weights = {}
  def tensor(name, shape, kind):
    data = (rng.standard_normal(shape) * (0.02 if kind != "norm" else 0.1) + (1.0 if kind == "norm" else 0.0)).astype(np.float32)
    weights[name] = data
    if kind == "norm" or qtype == "F32": w.add_tensor(name, data)
    else:
      qt = gguf.GGMLQuantizationType[qtype]
      q = gguf.quants.quantize(data, qt)
      weights[name] = gguf.quants.dequantize(q, qt).reshape(shape)
      w.add_tensor(name, q, raw_dtype=qt)
  head_dim = dim // heads
  tensor("token_embd.weight", (vocab, dim), "w")
  for i in range(n_layers):
    tensor(f"blk.{i}.attn_norm.weight", (dim,), "norm"); tensor(f"blk.{i}.ffn_norm.weight", (dim,), "norm")
    tensor(f"blk.{i}.attn_q.weight", (heads * head_dim, dim), "w"); tensor(f"blk.{i}.attn_k.weight", (kv_heads * head_dim, dim), "w")
    tensor(f"blk.{i}.attn_v.weight", (kv_heads * head_dim, dim), "w"); tensor(f"blk.{i}.attn_output.weight", (dim, heads * head_dim), "w")
    tensor(f"blk.{i}.ffn_gate.weight", (hidden, dim), "w"); tensor(f"blk.{i}.ffn_up.weight", (hidden, dim), "w")
    tensor(f"blk.{i}.ffn_down.weight", (dim, hidden), "w")
  tensor("output_norm.weight", (dim,), "norm")
  w.write_header_to_file(); w.write_kv_data_to_file(); w.write_tensors_to_file(); w.close()
  return weights


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
  path = tmp_path_factory.mktemp("gguf") / "tiny.gguf"
  return path, write_tiny_gguf(path)


def test_gguf_reads_metadata_and_tensors(tiny):
  path, weights = tiny
  md, tensors = load_gguf(path, dequantize=True)
  assert md["general.architecture"] == "llama" and md["llama.block_count"] == 2
  assert len(md["tokenizer.ggml.tokens"]) == 40
  for name, expected in weights.items(): np.testing.assert_allclose(tensors[name].numpy(), expected, rtol=1e-6, atol=1e-6)
  _, quantized = load_gguf(path)
  assert quantized["blk.0.attn_q.weight"].ggml_type == "Q8_0"
  np.testing.assert_allclose(quantized["blk.0.attn_q.weight"].dequantize().numpy(), weights["blk.0.attn_q.weight"], atol=1e-6)


def _corrupt(src, dst, edit):
  data = bytearray(open(src, "rb").read())
  edit(data)
  open(dst, "wb").write(bytes(data))


def _tensor_info_offset(path) -> int:
  """Byte offset of the first tensor info (name length field)."""
  return gguf.GGUFReader(path, "r").tensors[0].field.offset


def test_gguf_header_is_cached_and_the_cache_follows_the_file(tiny, tmp_path, monkeypatch):
  """A header parsed once loads from the cache directory the next time (the same metadata and tensor infos, the file
  itself mapped); a changed file, or a cache entry that doesn't parse, is parsed again."""
  from teenygrad.helpers import config
  from teenygrad.state import gguf as tg_gguf
  monkeypatch.setattr(config, "cache_dir", tmp_path / "cache")
  path = tmp_path / "copy.gguf"
  path.write_bytes(open(tiny[0], "rb").read())
  parsed = GGUFFile(path)
  assert hasattr(parsed, "reader")
  cached = GGUFFile(path)
  assert not hasattr(cached, "reader")   # nothing parsed by the gguf package
  assert cached.metadata == parsed.metadata and cached.tensor_infos == parsed.tensor_infos
  for name in parsed.tensor_infos: np.testing.assert_array_equal(cached.raw(name), parsed.raw(name))
  st = os.stat(path)
  os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))   # the file changed: its entry no longer applies
  assert hasattr(GGUFFile(path), "reader")
  tg_gguf._header_cache_path(str(path)).write_text('{"metadata": [')   # a torn entry is ignored
  again = GGUFFile(path)
  assert hasattr(again, "reader") and again.metadata == parsed.metadata


@pytest.mark.parametrize("case", ["magic", "truncated_header", "truncated_data", "huge_kv_count", "huge_dim", "bad_type", "lying_offset",
                                  "huge_string"])
def test_malformed_gguf_raises_value_error(tiny, tmp_path, case):
  path, _ = tiny
  bad = tmp_path / f"{case}.gguf"
  size = os.path.getsize(path)
  info = _tensor_info_offset(path)
  name_len = struct.unpack_from("<Q", open(path, "rb").read(), info)[0]
  dims_at = info + 8 + name_len + 4           # after name and n_dims
  edits = {
    "magic": lambda d: d.__setitem__(slice(0, 4), b"GGUX"),
    "truncated_header": lambda d: d.__delitem__(slice(100, None)),
    "truncated_data": lambda d: d.__delitem__(slice(size - 1000, None)),
    "huge_kv_count": lambda d: struct.pack_into("<Q", d, 16, 1 << 60),
    "huge_dim": lambda d: struct.pack_into("<Q", d, dims_at, 1 << 50),
    "bad_type": lambda d: struct.pack_into("<I", d, dims_at + 8 * 2, 250),
    "lying_offset": lambda d: struct.pack_into("<Q", d, dims_at + 8 * 2 + 4, 1 << 40),
    "huge_string": lambda d: struct.pack_into("<Q", d, 24, 1 << 62),   # the first key's length
  }
  _corrupt(path, bad, edits[case])
  with pytest.raises(ValueError):
    load_gguf(bad)


def test_missing_gguf_is_file_not_found(tmp_path):
  with pytest.raises(FileNotFoundError): load_gguf(tmp_path / "nope.gguf")


# ---- the model on the tiny file, against torch ----

def torch_llama(weights, tokens, n_layers=2, heads=4, kv_heads=2, eps=1e-5, theta=10000.0):
  """A plain torch Llama with interleaved-pair RoPE (the layout llama-arch GGUF files store q/k for)."""
  import torch
  W = {k: torch.tensor(v) for k, v in weights.items()}
  x = W["token_embd.weight"][torch.tensor(tokens)]
  T, dim = x.shape
  hd = dim // heads
  inv = 1.0 / theta ** (torch.arange(0, hd // 2, dtype=torch.float64) * 2 / hd)
  ang = torch.outer(torch.arange(T, dtype=torch.float64), inv).float()
  cos, sin = ang.cos(), ang.sin()
  def rope(t):   # (H, T, hd), pairs (2i, 2i+1)
    a, b = t[..., 0::2], t[..., 1::2]
    return torch.stack([a * cos - b * sin, a * sin + b * cos], -1).reshape(t.shape)
  def norm(t, w): return t * torch.rsqrt((t * t).mean(-1, keepdim=True) + eps) * w
  for i in range(n_layers):
    h = norm(x, W[f"blk.{i}.attn_norm.weight"])
    q = (h @ W[f"blk.{i}.attn_q.weight"].T).reshape(T, heads, hd).transpose(0, 1)
    k = (h @ W[f"blk.{i}.attn_k.weight"].T).reshape(T, kv_heads, hd).transpose(0, 1)
    v = (h @ W[f"blk.{i}.attn_v.weight"].T).reshape(T, kv_heads, hd).transpose(0, 1)
    q, k = rope(q), rope(k)
    k, v = k.repeat_interleave(heads // kv_heads, 0), v.repeat_interleave(heads // kv_heads, 0)
    att = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
    x = x + att.transpose(0, 1).reshape(T, dim) @ W[f"blk.{i}.attn_output.weight"].T
    h = norm(x, W[f"blk.{i}.ffn_norm.weight"])
    x = x + (torch.nn.functional.silu(h @ W[f"blk.{i}.ffn_gate.weight"].T) * (h @ W[f"blk.{i}.ffn_up.weight"].T)) @ W[f"blk.{i}.ffn_down.weight"].T
  return (norm(x, W["output_norm.weight"]) @ W["token_embd.weight"].T).numpy()


def test_model_prefill_and_decode_match_torch(tiny):
  from teenygrad.ir.symbolic import BoundVariable
  from teenygrad.llm.load import load_model
  from teenygrad.llm.model import KVCache
  path, weights = tiny
  model, _ = load_model(str(path))
  assert model.config.rope_interleaved and model.config.tie_embeddings and model.config.n_kv_heads == 2
  tokens = [3, 17, 5, 22, 9, 31, 4]
  expected = torch_llama(weights, tokens)
  cache = KVCache(model.config, 1, 16)
  prefill = model(np.array([tokens[:4]], dtype=np.int32), cache, 0, last_only=False).numpy()[0]
  np.testing.assert_allclose(prefill, expected[:4], rtol=1e-4, atol=1e-4)
  for pos in range(4, len(tokens)):   # decode one at a time with a symbolic position
    out = model(np.array([[tokens[pos]]], dtype=np.int32), cache, BoundVariable("p", 0, 15, pos)).numpy()[0]
    np.testing.assert_allclose(out, expected[pos], rtol=1e-4, atol=1e-4)


def test_batched_generation_equals_single(tiny):
  """Left-padded batch rows give what each prompt gives alone (greedy)."""
  from teenygrad.llm.generate import Generator
  from teenygrad.llm.load import load_model
  from teenygrad.llm.sampling import SamplingParams
  path, _ = tiny
  model, tokenizer = load_model(str(path))
  tokenizer.stop_ids = set()
  generator = Generator(model, tokenizer)
  prompts = [[3, 17, 5, 22, 9], [8, 4]]
  params = SamplingParams(max_tokens=6)
  batch = [r.generated for r in generator.generate_ids(prompts, params)]
  alone = [generator.generate_ids([p], params)[0].generated for p in prompts]
  assert batch == alone


def test_token_ids_outside_the_vocabulary_raise(tiny):
  """Checked on the host before any step runs: a replayed device graph would read a zero row instead of raising."""
  from teenygrad.llm.generate import Generator
  from teenygrad.llm.load import load_model
  from teenygrad.llm.sampling import SamplingParams
  path, _ = tiny
  model, tokenizer = load_model(str(path))
  tokenizer.stop_ids = set()
  generator = Generator(model, tokenizer)
  vocab = model.config.vocab_size
  for bad in (vocab, -1, 2.5):
    with pytest.raises(IndexError, match="outside the vocabulary"): generator.generate_ids([[3, bad, 5]], SamplingParams(max_tokens=2))
  assert len(generator.generate_ids([[3, vocab - 1]], SamplingParams(max_tokens=2))[0].generated) == 2


def _available(device: str) -> bool:
  from teenygrad.device import Device
  try: Device[device]
  except Exception: return False
  return True


@pytest.mark.parametrize("device", ["VULKAN", "OPENCL", "CUDA"])
def test_jit_decode_on_another_device_equals_cpu(tiny, device):
  """Greedy decode through the JIT on a GPU-style backend (the KV-cache write is a lazy assign there, and a replay
  must write at each new position, not the captured one; CUDA adds its quantized matvec, row gathers and decode
  attention kernels, replayed as one graph) gives the CPU's tokens."""
  if not _available(device): pytest.skip(f"no {device} device here")
  from teenygrad.llm.generate import Generator
  from teenygrad.llm.load import load_model
  from teenygrad.llm.sampling import SamplingParams
  path, _ = tiny
  params = SamplingParams(max_tokens=8)
  outputs, caches = [], []
  for dev in ("CPU", device):
    model, tokenizer = load_model(str(path), device=dev)
    tokenizer.stop_ids = set()
    generator = Generator(model, tokenizer)
    outputs.append(generator.generate_ids([[3, 17, 5, 22, 9]], params)[0].generated)
    caches.append(generator.cache.keys[0].numpy())
  assert outputs[0] == outputs[1]
  np.testing.assert_allclose(caches[1], caches[0], rtol=1e-4, atol=1e-5)   # every position written where it belongs


# ---- chat templates ----

HOSTILE = [
  "{{ ''.__class__.__mro__[1].__subclasses__() }}",
  "{{ cycler.__init__.__globals__.os.system('echo pwned') }}",
  "{{ joiner.__init__.__globals__ }}",
  "{% set x = [] %}{{ x.append(1) }}",
  "{{ messages.__class__ }}",
  "{{ (messages|first).update({'role': 'x'}) }}",
  "{{ lipsum.__globals__['os'] }}",
]


@pytest.mark.parametrize("source", HOSTILE)
def test_hostile_chat_template_cannot_reach_python(source):
  """Each either raises or renders an unsafe attribute as undefined (empty): nothing of Python leaks or runs."""
  from teenygrad.llm.chat import ChatTemplate, ChatTemplateError
  messages = [{"role": "user", "content": "hi"}]
  try: out = ChatTemplate(source).render(messages)
  except ChatTemplateError: out = ""
  assert out == "" and messages == [{"role": "user", "content": "hi"}]


def test_chat_template_renders_chatml_and_raise_exception():
  from teenygrad.llm.chat import ChatTemplate, ChatTemplateError
  assert ChatTemplate(None).render([{"role": "user", "content": "hi"}]) == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
  with pytest.raises(ChatTemplateError, match="only user"): ChatTemplate("{{ raise_exception('only user') }}").render([])
  with pytest.raises(ChatTemplateError, match="invalid"): ChatTemplate("{% for %}")
  with pytest.raises(ValueError, match="role"): ChatTemplate(None).render([{"content": "x"}])


# ---- sampling ----

def test_sampling_rules():
  from teenygrad.llm.sampling import SamplingParams, apply_penalties, sample
  rng = np.random.default_rng(0)
  logits = np.log(np.array([0.5, 0.3, 0.15, 0.05]))
  assert sample(logits, SamplingParams(), [], rng) == 0
  assert {sample(logits, SamplingParams(temperature=1.0, top_k=2), [], rng) for _ in range(200)} == {0, 1}
  assert {sample(logits, SamplingParams(temperature=1.0, top_p=0.7), [], rng) for _ in range(200)} == {0, 1}
  assert {sample(logits, SamplingParams(temperature=1.0, min_p=0.35), [], rng) for _ in range(200)} == {0, 1}
  draws = [sample(logits, SamplingParams(temperature=1.0, seed=1), [], np.random.default_rng(1)) for _ in range(2)]
  assert draws[0] == draws[1]
  counts = np.bincount([sample(logits, SamplingParams(temperature=1.0), [], rng) for _ in range(4000)], minlength=4) / 4000
  np.testing.assert_allclose(counts, [0.5, 0.3, 0.15, 0.05], atol=0.03)
  raw = np.array([2.0, -2.0, 1.0])
  np.testing.assert_allclose(apply_penalties(raw, [0, 1, 0], SamplingParams(repetition_penalty=2.0)), [1.0, -4.0, 1.0])
  np.testing.assert_allclose(apply_penalties(raw, [0, 1, 0], SamplingParams(frequency_penalty=0.5, presence_penalty=0.25)),
                             [2.0 - 1.0 - 0.25, -2.0 - 0.5 - 0.25, 1.0])
  for bad in ({"temperature": -1}, {"top_p": 0}, {"min_p": 2}, {"top_k": -1}, {"repetition_penalty": 0}):
    with pytest.raises(ValueError): SamplingParams(**bad)


# ---- streaming detokenization and stop strings ----

def _byte_tokenizer():
  """A real byte-level BPE with no merges: every UTF-8 byte is its own token."""
  from teenygrad.llm.tokenizer import Tokenizer, _byte_level_bpe
  from tokenizers.pre_tokenizers import ByteLevel
  alphabet = ByteLevel.alphabet()
  return Tokenizer(_byte_level_bpe(sorted(alphabet), [], "gpt2"))


def test_stream_never_splits_a_character():
  from teenygrad.llm.tokenizer import StreamDecoder
  tokenizer = _byte_tokenizer()
  text = "héllo 東京 🚀!"
  ids = tokenizer.encode(text)
  assert len(ids) == len(text.encode())
  decoder = StreamDecoder(tokenizer)
  pieces = [decoder.add(i) for i in ids] + [decoder.flush()]
  assert "".join(pieces) == text
  assert all("\ufffd" not in p for p in pieces)


def test_cli_reports_missing_model(tmp_path, capsys):
  from teenygrad.cli import main
  assert main(["run", "hi", "--model", str(tmp_path / "missing.gguf")]) == 2
  assert "no model at" in capsys.readouterr().err
