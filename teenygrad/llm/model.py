"""The Llama family in one file: Llama 2/3, SmolLM2, TinyLlama, Mistral, Qwen2/2.5, Qwen3.

Follows the Llama papers (Touvron et al. 2023; Llama 3 "herd of models" for the RoPE scaling) and Hugging Face's
`modeling_llama.py` / `modeling_qwen3.py` as reference. Weights use GGUF's tensor names (`blk.N.attn_q.weight`);
Hugging Face names are mapped onto them when loading a folder.

RoPE comes in two layouts. Hugging Face rotates the two halves of each head (`rotate_half`); llama.cpp's converter
permutes the q/k rows of llama-arch GGUF files so that adjacent pairs rotate instead. Rather than unpermute
(quantized) weights, the model uses the rotation that matches the file: `rope_interleaved`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from teenygrad.dtype import dtypes
from teenygrad.ir.symbolic import BoundVariable
from teenygrad.llm.custom_ops import cache_write, decode_attention, embedding_rows, prefill_attention, rope_attention
from teenygrad.llm.fused_linear import fused_linear
from teenygrad.nn.quant import QuantizedTensor
from teenygrad.tensor import Tensor

# GGUF architectures whose q/k rows llama.cpp permuted for interleaved (adjacent-pair) RoPE
INTERLEAVED_ROPE_ARCHS = {"llama", "mistral"}
SUPPORTED_ARCHS = {"llama", "mistral", "qwen2", "qwen3"}


@dataclass(frozen=True)
class LlamaConfig:
  vocab_size: int
  dim: int                       # hidden size
  n_layers: int
  n_heads: int
  n_kv_heads: int                # < n_heads: grouped-query attention
  hidden_dim: int                # feed-forward size
  head_dim: int
  norm_eps: float = 1e-5
  rope_theta: float = 10000.0
  max_seq_len: int = 4096
  rope_scaling: tuple | None = None   # Llama 3: (factor, low_freq_factor, high_freq_factor, original_max_position)
  rope_interleaved: bool = False      # adjacent-pair rotation (llama-arch GGUF) instead of halves (HF)
  qkv_bias: bool = False              # Qwen2
  qk_norm: bool = False               # Qwen3
  tie_embeddings: bool = False
  arch: str = "llama"
  extra: dict = field(default_factory=dict, compare=False, hash=False)

  @classmethod
  def from_gguf(cls, metadata: dict, tensor_names: set[str]) -> LlamaConfig:
    arch = metadata.get("general.architecture")
    if arch not in SUPPORTED_ARCHS: raise ValueError(f"unsupported GGUF architecture {arch!r} (supported: {sorted(SUPPORTED_ARCHS)})")
    def get(key, default=None):
      value = metadata.get(f"{arch}.{key}", default)
      if value is None: raise ValueError(f"GGUF metadata lacks {arch}.{key}")
      return value
    dim, n_heads = int(get("embedding_length")), int(get("attention.head_count"))
    vocab = metadata.get(f"{arch}.vocab_size") or len(metadata.get("tokenizer.ggml.tokens", []))
    return cls(vocab_size=int(vocab), dim=dim, n_layers=int(get("block_count")), n_heads=n_heads,
               n_kv_heads=int(get("attention.head_count_kv", n_heads)), hidden_dim=int(get("feed_forward_length")),
               head_dim=int(get("attention.key_length", dim // n_heads)), norm_eps=float(get("attention.layer_norm_rms_epsilon", 1e-5)),
               rope_theta=float(get("rope.freq_base", 10000.0)), max_seq_len=int(get("context_length", 4096)),
               rope_interleaved=arch in INTERLEAVED_ROPE_ARCHS, qkv_bias="blk.0.attn_q.bias" in tensor_names,
               qk_norm="blk.0.attn_q_norm.weight" in tensor_names, tie_embeddings="output.weight" not in tensor_names, arch=arch)

  @classmethod
  def from_hf(cls, config: dict) -> LlamaConfig:
    model_type = config.get("model_type", "llama")
    if model_type not in SUPPORTED_ARCHS: raise ValueError(f"unsupported model_type {model_type!r} (supported: {sorted(SUPPORTED_ARCHS)})")
    dim, n_heads = config["hidden_size"], config["num_attention_heads"]
    scaling = config.get("rope_scaling") or None
    rope_scaling = None
    if scaling and scaling.get("rope_type", scaling.get("type")) == "llama3":
      rope_scaling = (float(scaling["factor"]), float(scaling["low_freq_factor"]), float(scaling["high_freq_factor"]),
                      int(scaling["original_max_position_embeddings"]))
    elif scaling and scaling.get("rope_type", scaling.get("type")) not in (None, "default"):
      raise ValueError(f"unsupported rope_scaling {scaling}")
    return cls(vocab_size=config["vocab_size"], dim=dim, n_layers=config["num_hidden_layers"], n_heads=n_heads,
               n_kv_heads=config.get("num_key_value_heads", n_heads), hidden_dim=config["intermediate_size"],
               head_dim=config.get("head_dim") or dim // n_heads, norm_eps=config.get("rms_norm_eps", 1e-5),
               rope_theta=config.get("rope_theta", 10000.0), max_seq_len=config.get("max_position_embeddings", 4096),
               rope_scaling=rope_scaling, qkv_bias=model_type == "qwen2" or bool(config.get("attention_bias")),
               qk_norm=model_type == "qwen3", tie_embeddings=bool(config.get("tie_word_embeddings", False)), arch=model_type)


def rope_frequencies(config: LlamaConfig, freq_factors: np.ndarray | None = None) -> np.ndarray:
  """Inverse frequencies (head_dim/2,), with Llama 3's wavelength-dependent scaling when configured."""
  half = config.head_dim // 2
  inv_freq = 1.0 / (config.rope_theta ** (np.arange(0, half, dtype=np.float64) * 2 / config.head_dim))
  if freq_factors is not None:   # GGUF stores Llama 3's scaling as per-frequency divisors (rope_freqs.weight)
    inv_freq = inv_freq / freq_factors.astype(np.float64)
  elif config.rope_scaling is not None:
    factor, low_freq_factor, high_freq_factor, old_context = config.rope_scaling
    wavelength = 2 * math.pi / inv_freq
    low_wavelength, high_wavelength = old_context / low_freq_factor, old_context / high_freq_factor
    smooth = (old_context / wavelength - low_freq_factor) / (high_freq_factor - low_freq_factor)
    scaled = np.where(wavelength > low_wavelength, inv_freq / factor, inv_freq)
    middle = (wavelength <= low_wavelength) & (wavelength >= high_wavelength)
    inv_freq = np.where(middle, (1 - smooth) * inv_freq / factor + smooth * inv_freq, scaled)
  return inv_freq


def kernel_output(x: Tensor) -> Tensor:
  """Make x the output of its own kernel. The scheduler would find these cuts itself (matmuls, reduces feeding
  reduces), but only by failing and rescheduling the whole graph once per cut: O(layers^2) per forward. A reshape of a
  base cuts at the base: a buffer of its own would cost a kernel that only copies."""
  if x.lazydata.is_view and not x.lazydata.reshapes_base: return x.contiguous()
  x.lazydata.base.forced = True
  return x


def linear(x: Tensor, weight, bias: Tensor | None = None, residual: Tensor | None = None, norm: Tensor | None = None,
           eps: float = 0.0, swiglu: bool = False) -> Tensor:
  """prologue(x) @ weight.T (+ bias) (+ residual); weight is a float Tensor or a QuantizedTensor. The prologue is
  rms_norm(x, norm, eps) when `norm` is given, or silu(gate) * up of x = [gate | up] with `swiglu`.

  One kernel where the backend folds the prologue and the residual into its matvec (llm/fused_linear.py); otherwise
  the prologue is a kernel of its own and the residual is added by the matmul's kernel (its epilogue; the quantized
  kernels take it where they can), which still saves a kernel per residual connection."""
  if bias is None:
    fused = fused_linear(x, weight, residual, norm, eps, swiglu)
    if fused is not None: return kernel_output(fused)
  if norm is not None: x = rms_norm(x, norm, eps)
  if swiglu:
    half = x.shape[-1] // 2
    x = x[..., :half].silu() * x[..., half:]
  if bias is None and (norm is not None or swiglu):
    # the prologue ran as its own kernel (too big to fold, or not foldable here): the matvec may still take the rest
    fused = fused_linear(x, weight, residual)
    if fused is not None: return kernel_output(fused)
  if not isinstance(weight, Tensor) and residual is not None and bias is None:
    return kernel_output(weight.linear(x, residual=residual))
  out = x.linear(weight) if isinstance(weight, Tensor) else weight.linear(x)
  if bias is not None: out = out + bias
  if residual is not None: out = residual + out
  # each matmul is its own kernel (with its bias and residual): telling the scheduler up front saves it a failed
  # fusion attempt per matmul
  return kernel_output(out)


# weights whose rows are concatenated at load, so one matmul computes them all (they read the same input)
FUSED_PROJECTIONS = {"attn_qkv": ("attn_q", "attn_k", "attn_v"), "ffn_gate_up": ("ffn_gate", "ffn_up")}


def concat_rows(parts: list) -> Any | None:
  """One weight holding the rows of `parts` one after another, or None where they can't share one matmul
  (different GGML types or dtypes, devices, or input widths)."""
  first = parts[0]
  if any(type(p) is not type(first) or p.shape[1] != first.shape[1] or p.device != first.device for p in parts): return None
  if isinstance(first, Tensor):
    if any(p.dtype != first.dtype for p in parts): return None
    return Tensor.cat(list(parts), dim=0).realize()
  if not isinstance(first, QuantizedTensor) or any(p.ggml_type != first.ggml_type for p in parts): return None
  raw = Tensor.cat([p.raw for p in parts], dim=0).realize()
  return QuantizedTensor(first.ggml_type, raw, (sum(p.shape[0] for p in parts), first.shape[1]))


def rms_norm(x: Tensor, weight: Tensor, eps: float) -> Tensor:
  return kernel_output(x * (x * x).mean(-1, keepdim=True).add(eps).rsqrt() * weight)


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor, interleaved: bool) -> Tensor:
  """x (B, H, T, D); cos/sin (T, D/2)."""
  B, H, T, D = x.shape
  if interleaved:   # rotate pairs (x[2i], x[2i+1])
    pairs = x.reshape(B, H, T, D // 2, 2)
    x0, x1 = pairs[..., 0], pairs[..., 1]
    out = Tensor.stack([x0 * cos - x1 * sin, x0 * sin + x1 * cos], dim=-1)   # (B, H, T, D/2, 2)
    return out.reshape(B, H, T, D)
  x0, x1 = x[..., :D // 2], x[..., D // 2:]   # rotate halves (HF rotate_half)
  return Tensor.cat([x0 * cos - x1 * sin, x0 * sin + x1 * cos], dim=-1)


class KVCache:
  """Preallocated keys and values for every layer: (batch, n_kv_heads, max_len, head_dim) each.

  Each row of the batch is its own sequence; `write` stores new entries at a position, attention reads rows
  [0, position + T). Rows at different positions (continuous batching) only need a per-row position and mask.
  """
  def __init__(self, config: LlamaConfig, batch: int, max_len: int, device: str | None = None, dtype=dtypes.float32):
    self.batch, self.max_len, self.dtype = batch, max_len, dtype
    shape = (batch, config.n_kv_heads, max_len, config.head_dim)
    self.keys = [Tensor.zeros(*shape, dtype=dtype, device=device).contiguous().realize() for _ in range(config.n_layers)]
    self.values = [Tensor.zeros(*shape, dtype=dtype, device=device).contiguous().realize() for _ in range(config.n_layers)]

  @property
  def nbytes(self) -> int: return sum(t.numel() * t.element_size() for t in self.keys + self.values)

  def write(self, layer: int, k: Tensor, v: Tensor, start_tensor: Tensor) -> tuple[Tensor, Tensor]:
    """Store k, v (B, KVH, T, D) at [start, start+T); returns this layer's whole caches (B, KVH, max_len, D)."""
    return cache_write(self.keys[layer], k, start_tensor), cache_write(self.values[layer], v, start_tensor)

  def update(self, layer: int, k: Tensor, v: Tensor, start_tensor: Tensor, length) -> tuple[Tensor, Tensor]:
    """Store k, v (B, KVH, T, D) at [start, start+T) and return the cache rows [0, length=start+T) of this layer."""
    return self.window(*self.write(layer, k, v, start_tensor), length)

  @staticmethod
  def window(keys: Tensor, values: Tensor, length) -> tuple[Tensor, Tensor]:
    """The rows [0, length) of whole caches."""
    end = (0, length)
    return (Tensor(keys.lazydata.shrink(((0, keys.shape[0]), (0, keys.shape[1]), end, (0, keys.shape[3])))),
            Tensor(values.lazydata.shrink(((0, values.shape[0]), (0, values.shape[1]), end, (0, values.shape[3])))))


class Transformer:
  """A decoder-only Llama-family transformer.

  Args:
    config: the hyperparameters.
    weights: GGUF-named tensors (float Tensors or QuantizedTensors).
  Shape:
    tokens (B, T) int -> logits (B, T, vocab) float32, or (B, vocab) for the last position only.
  """
  def __init__(self, config: LlamaConfig, weights: dict[str, Any], device: str | None = None):
    self.config, self.device = config, device
    fused_of = {part: fused for fused, parts in FUSED_PROJECTIONS.items() for part in parts}
    def present(name: str) -> bool:
      block, _, rest = name.rpartition(".weight")[0].rpartition(".")
      return name in weights or f"{block}.{fused_of.get(rest)}.weight" in weights
    missing = [n for n in self.required_weights() if not present(n)]
    if missing: raise ValueError(f"model weights missing: {missing[:5]}{' ...' if len(missing) > 5 else ''}")
    self.weights = dict(weights)
    for i in range(config.n_layers):
      for fused, parts in FUSED_PROJECTIONS.items(): self._fuse(f"blk.{i}", fused, parts)
    self.output = weights.get("output.weight", weights["token_embd.weight"])
    freq_factors = weights.get("rope_freqs.weight")
    inv_freq = rope_frequencies(config, freq_factors.numpy() if freq_factors is not None else None)
    angles = np.outer(np.arange(config.max_seq_len, dtype=np.float64), inv_freq)
    self.rope_cos = Tensor(np.cos(angles).astype(np.float32), device=device)
    self.rope_sin = Tensor(np.sin(angles).astype(np.float32), device=device)

  def _fuse(self, block: str, fused: str, parts: tuple[str, ...]) -> None:
    """Replace the weights (and biases) of `parts` by one weight of their rows, where they can share a matmul."""
    w = self.weights
    names = [f"{block}.{p}.weight" for p in parts]
    if not all(n in w for n in names): return
    biases = [w.get(f"{block}.{p}.bias") for p in parts]
    if any(b is None for b in biases) and any(b is not None for b in biases): return
    weight = concat_rows([w[n] for n in names])
    if weight is None: return
    w[f"{block}.{fused}.weight"] = weight
    if biases[0] is not None: w[f"{block}.{fused}.bias"] = Tensor.cat(biases, dim=0).realize()
    for p in parts:
      w.pop(f"{block}.{p}.weight")
      w.pop(f"{block}.{p}.bias", None)

  def project(self, i: int, x: Tensor, fused: str, norm: Tensor | None = None) -> list[Tensor]:
    """The projections of FUSED_PROJECTIONS[fused] of x (q, k, v or gate, up), through one matmul where fused; x is
    normalized by the RMSNorm weight `norm` first, if given."""
    c, w = self.config, self.weights
    out = self.fused_projection(i, x, fused, norm)
    if out is None:
      if norm is not None: x = rms_norm(x, norm, c.norm_eps)
      return [linear(x, w[f"blk.{i}.{p}.weight"], w.get(f"blk.{i}.{p}.bias")) for p in FUSED_PROJECTIONS[fused]]
    return self.split(out, fused)

  def split(self, out: Tensor, fused: str) -> list[Tensor]:
    """The outputs of the parts of FUSED_PROJECTIONS[fused] out of their one matmul's (views of it)."""
    c = self.config
    sizes = (c.n_heads * c.head_dim, c.n_kv_heads * c.head_dim, c.n_kv_heads * c.head_dim) if fused == "attn_qkv" else (c.hidden_dim,) * 2
    starts = [sum(sizes[:j]) for j in range(len(sizes))]
    return [out[..., a:a + n] for a, n in zip(starts, sizes)]

  def fused_projection(self, i: int, x: Tensor, fused: str, norm: Tensor | None = None) -> Tensor | None:
    """The one matmul of FUSED_PROJECTIONS[fused] (its outputs side by side, (B, T, sum of sizes)), or None where the
    parts have weights of their own."""
    w = self.weights
    if f"blk.{i}.{fused}.weight" not in w: return None
    return linear(x, w[f"blk.{i}.{fused}.weight"], w.get(f"blk.{i}.{fused}.bias"), norm=norm, eps=self.config.norm_eps)

  def required_weights(self) -> list[str]:
    names = ["token_embd.weight", "output_norm.weight"]
    for i in range(self.config.n_layers):
      names += [f"blk.{i}.{n}.weight" for n in ("attn_norm", "attn_q", "attn_k", "attn_v", "attn_output",
                                                 "ffn_norm", "ffn_gate", "ffn_up", "ffn_down")]
      if self.config.qk_norm: names += [f"blk.{i}.attn_q_norm.weight", f"blk.{i}.attn_k_norm.weight"]
    return names

  def embed(self, tokens: Tensor) -> Tensor:
    """(B, T) token ids -> (B, T, dim) float32."""
    table = self.weights["token_embd.weight"]
    return embedding_rows(table, tokens) if isinstance(table, Tensor) else table.embedding(tokens)

  def attention(self, i: int, x: Tensor, cache: KVCache, start, start_tensor: Tensor, length, T: int,
                key_mask: Tensor | None, residual: Tensor | None = None, norm: Tensor | None = None) -> Tensor:
    """Self-attention of layer i over x (B, T, dim), RMS-normalized by `norm` first if given, plus `residual` if given
    (added by the output projection)."""
    c, w = self.config, self.weights
    B = x.shape[0]
    qkv = self.fused_projection(i, x, "attn_qkv", norm)                      # (B, T, (H + 2 KVH) * D) or None
    if qkv is not None and T == 1 and not c.qk_norm:   # decode: RoPE, the cache write and attention in one launch, where the backend can
      fused = rope_attention(qkv, self.rope_cos, self.rope_sin, start_tensor, cache.keys[i], cache.values[i], key_mask, c.n_heads,
                             c.rope_interleaved)
      if fused is not None:
        attn = kernel_output(fused).reshape(B, T, c.n_heads * c.head_dim)                  # (B, H, 1, D) -> (B, 1, H * D)
        return linear(attn, w[f"blk.{i}.attn_output.weight"], residual=residual)
    q, k, v = self.project(i, x, "attn_qkv", norm) if qkv is None else self.split(qkv, "attn_qkv")
    q = q.reshape(B, T, c.n_heads, c.head_dim).transpose(1, 2)       # (B, H, T, D)
    k = k.reshape(B, T, c.n_kv_heads, c.head_dim).transpose(1, 2)    # (B, KVH, T, D)
    v = v.reshape(B, T, c.n_kv_heads, c.head_dim).transpose(1, 2)
    if c.qk_norm:
      q = rms_norm(q, w[f"blk.{i}.attn_q_norm.weight"], c.norm_eps)
      k = rms_norm(k, w[f"blk.{i}.attn_k_norm.weight"], c.norm_eps)
    cos = Tensor(self.rope_cos.lazydata.shrink(((start, start + T), (0, c.head_dim // 2))))
    sin = Tensor(self.rope_sin.lazydata.shrink(((start, start + T), (0, c.head_dim // 2))))
    q, k = apply_rope(q, cos, sin, c.rope_interleaved), apply_rope(k, cos, sin, c.rope_interleaved)
    full_keys, full_values = cache.write(i, k, v, start_tensor)                 # (B, KVH, max_len, D)
    if T == 1: fused = decode_attention(q, full_keys, full_values, start_tensor, key_mask)          # (B, H, 1, D)
    else: fused = prefill_attention(q, full_keys, full_values, start_tensor, key_mask)              # (B, T, H, D)
    if fused is not None:   # where the backend has an attention kernel: one launch for what follows
      attn = kernel_output(fused).reshape(B, T, c.n_heads * c.head_dim)                   # -> (B, T, H * D)
      return linear(attn, w[f"blk.{i}.attn_output.weight"], residual=residual)
    keys, values = cache.window(full_keys, full_values, length)              # (B, KVH, S, D), S = start + T
    group = c.n_heads // c.n_kv_heads
    S = keys.shape[2]
    q = q.reshape(B, c.n_kv_heads, group, T, 1, c.head_dim)           # heads sharing a kv head side by side
    scale = 1.0 / math.sqrt(c.head_dim)
    if isinstance(S, int) and T > 1:   # prefill: batched matmuls, which lower to the tiled GEMM
      rows = kernel_output(q).reshape(B, c.n_kv_heads, group * T, c.head_dim)
      scores = kernel_output(rows @ keys.transpose(-1, -2)).reshape(B, c.n_kv_heads, group, T, S) * scale
    else:   # decode: one query row against a symbolic number of keys
      scores = (q * keys.reshape(B, c.n_kv_heads, 1, 1, S, c.head_dim)).sum(-1) * scale   # (B, KVH, G, T, S)
    if T > 1:   # causal: query t (at position start+t) sees keys up to start+t
      query_pos = Tensor.arange(T, device=self.device).reshape(T, 1) + start
      key_pos = Tensor.arange(S, device=self.device).reshape(1, S)
      scores = (key_pos <= query_pos)._where(scores, float("-inf"))
    if key_mask is not None:   # (B, L) additive: padding of shorter prompts in a batch
      scores = scores + Tensor(key_mask.lazydata.shrink(((0, B), (0, S)))).reshape(B, 1, 1, 1, S)
    # softmax with every reduce its own kernel (the scheduler would otherwise split them after a failed try)
    scores = kernel_output(scores)
    exp = (scores - kernel_output(scores.amax(-1, keepdim=True))).exp()
    probs = kernel_output(exp / kernel_output(exp.sum(-1, keepdim=True)))
    if isinstance(S, int) and T > 1:
      attn = kernel_output(probs.reshape(B, c.n_kv_heads, group * T, S) @ values)   # (B, KVH, G*T, D)
    else:
      attn = kernel_output((probs.reshape(B, c.n_kv_heads, group, T, S, 1) * values.reshape(B, c.n_kv_heads, 1, 1, S, c.head_dim)).sum(-2))
    attn = attn.reshape(B, c.n_heads, T, c.head_dim).transpose(1, 2).reshape(B, T, c.n_heads * c.head_dim)
    return linear(attn, w[f"blk.{i}.attn_output.weight"], residual=residual)

  def feed_forward(self, i: int, x: Tensor, residual: Tensor | None = None, norm: Tensor | None = None) -> Tensor:
    """SwiGLU feed-forward of layer i over x, RMS-normalized by `norm` first if given, plus `residual` if given."""
    w, down = self.weights, self.weights[f"blk.{i}.ffn_down.weight"]
    if f"blk.{i}.ffn_gate_up.weight" in w and f"blk.{i}.ffn_gate_up.bias" not in w:
      # silu(gate) * up in the gate/up projection's epilogue where the backend has one (fused_linear's glu)
      hidden = fused_linear(x, w[f"blk.{i}.ffn_gate_up.weight"], norm=norm, eps=self.config.norm_eps, glu=True)
      if hidden is not None: return linear(kernel_output(hidden), down, residual=residual)
    gate_up = self.fused_projection(i, x, "ffn_gate_up", norm)
    if gate_up is not None: return linear(gate_up, down, residual=residual, swiglu=True)   # reads silu(gate) * up
    gate, up = self.project(i, x, "ffn_gate_up", norm)
    return linear(gate.silu() * up, down, residual=residual)

  def forward(self, tokens: Tensor, cache: KVCache, start: int | BoundVariable, start_tensor: Tensor | None = None,
              last_only: bool = True, key_mask: Tensor | None = None) -> Tensor:
    """Run tokens (B, T) at positions [start, start+T), filling the cache.

    For decode through the JIT, `start` is a BoundVariable (sizes) and `start_tensor` holds the same position as
    data (where the cache write goes), so one capture serves every position. `key_mask` (B, cache length) is added
    to attention scores: a large negative value hides the left padding of shorter prompts in a batch (RoPE is
    relative, so shifting a whole prompt right changes nothing)."""
    c, w = self.config, self.weights
    if not isinstance(tokens, Tensor): tokens = Tensor(np.asarray(tokens, dtype=np.int32), device=self.device)
    B, T = tokens.shape
    position = start.value if isinstance(start, BoundVariable) else int(start)
    if position + T > cache.max_len: raise ValueError(f"context full: {position}+{T} tokens do not fit a cache of {cache.max_len}")
    if B != cache.batch: raise ValueError(f"batch of {B} sequences but the cache holds {cache.batch}")
    if start_tensor is None: start_tensor = Tensor(np.array([position], dtype=np.int32), device=self.device)
    length = start + T
    h = self.embed(tokens)
    for i in range(c.n_layers):
      # the residual stream is a buffer of its own (linear's output with the residual added): inlined, every later
      # norm would re-add all the layers before it
      # each norm is computed by the projection that reads it where the backend folds it in (fused_linear)
      h = self.attention(i, h, cache, start, start_tensor, length, T, key_mask, residual=h, norm=w[f"blk.{i}.attn_norm.weight"])
      h = self.feed_forward(i, h, residual=h, norm=w[f"blk.{i}.ffn_norm.weight"])
    if last_only: h = h[:, -1:, :]
    logits = linear(h, self.output, norm=w["output_norm.weight"], eps=c.norm_eps).float()
    return logits.reshape(B, c.vocab_size) if last_only else logits

  __call__ = forward

  def with_config(self, **changes) -> Transformer:
    return Transformer(replace(self.config, **changes), self.weights, self.device)
