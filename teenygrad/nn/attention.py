"""MultiheadAttention and TransformerEncoderLayer with torch's parameter names and layouts
(in_proj_weight is (3E, E) holding the q, k, v projections stacked; out_proj is a Linear)."""
from __future__ import annotations

import math
from collections.abc import Callable

from teenygrad.dtype import dtypes
from teenygrad.nn import init
from teenygrad.nn.linear import Dropout, Linear
from teenygrad.nn.module import Module, Parameter
from teenygrad.nn.norm import LayerNorm
from teenygrad.tensor import Tensor


class MultiheadAttention(Module):
  """Attention(Q W_q, K W_k, V W_v) W_o over num_heads heads (Vaswani et al. 2017, torch.nn.MultiheadAttention).

  Args: embed_dim, num_heads, dropout (on the attention weights), bias, batch_first.
  Shape: query (L, N, E) or (N, L, E) with batch_first; key/value (S, N, E). Returns (output, weights) where weights
  is (N, L, S) averaged over heads (or (N, heads, L, S)), or None when need_weights=False.
  Masks follow torch: a boolean attn_mask or key_padding_mask is True where attention is NOT allowed; a float mask is added."""
  autocast_policy = "lower"

  def __init__(self, embed_dim: int, num_heads: int, dropout: float = 0.0, bias: bool = True, add_bias_kv: bool = False,
               add_zero_attn: bool = False, kdim: int | None = None, vdim: int | None = None, batch_first: bool = False,
               device=None, dtype=None):
    super().__init__()
    if embed_dim <= 0 or num_heads <= 0: raise ValueError(f"embed_dim and num_heads must be greater than 0, got embed_dim={embed_dim} and num_heads={num_heads} instead")
    if embed_dim % num_heads: raise AssertionError("embed_dim must be divisible by num_heads")
    if add_bias_kv or add_zero_attn: raise NotImplementedError("add_bias_kv and add_zero_attn are not supported")
    if (kdim is not None and kdim != embed_dim) or (vdim is not None and vdim != embed_dim):
      raise NotImplementedError("kdim/vdim different from embed_dim (separate q/k/v projection weights) are not supported")
    self.embed_dim, self.num_heads, self.dropout, self.batch_first = embed_dim, num_heads, dropout, batch_first
    self.head_dim = embed_dim // num_heads
    self.kdim = self.vdim = embed_dim
    self._qkv_same_embed_dim = True
    self.in_proj_weight = Parameter(Tensor.empty(3 * embed_dim, embed_dim, dtype=dtype, device=device))
    if bias: self.in_proj_bias = Parameter(Tensor.empty(3 * embed_dim, dtype=dtype, device=device))
    else: self.register_parameter("in_proj_bias", None)
    self.out_proj = Linear(embed_dim, embed_dim, bias=bias, device=device, dtype=dtype)
    self._reset_parameters()

  def _reset_parameters(self) -> None:
    init.xavier_uniform_(self.in_proj_weight)
    if self.in_proj_bias is not None:
      init.zeros_(self.in_proj_bias)
      init.zeros_(self.out_proj.bias)

  def forward(self, query: Tensor, key: Tensor, value: Tensor, key_padding_mask: Tensor | None = None, need_weights: bool = True,
              attn_mask: Tensor | None = None, average_attn_weights: bool = True, is_causal: bool = False):
    if query.ndim != 3: raise NotImplementedError(f"MultiheadAttention expects batched 3-D input, got {query.ndim}-D")
    if query.shape[-1] != self.embed_dim: raise AssertionError(f"was expecting embedding dimension of {self.embed_dim}, but got {query.shape[-1]}")
    if not self.batch_first: query, key, value = (t.transpose(0, 1) for t in (query, key, value))
    batch, tgt_len, _ = query.shape
    src_len = key.shape[1]
    w, b = self.in_proj_weight, self.in_proj_bias
    e = self.embed_dim
    w_q, w_k, w_v = w[:e], w[e:2 * e], w[2 * e:]
    b_q, b_k, b_v = (b[:e], b[e:2 * e], b[2 * e:]) if b is not None else (None, None, None)
    # (N, L, E) -> (N, heads, L, head_dim)
    q = query.linear(w_q, b_q).reshape(batch, tgt_len, self.num_heads, self.head_dim).transpose(1, 2)
    k = key.linear(w_k, b_k).reshape(batch, src_len, self.num_heads, self.head_dim).transpose(1, 2)
    v = value.linear(w_v, b_v).reshape(batch, src_len, self.num_heads, self.head_dim).transpose(1, 2)
    scores = (q @ k.transpose(-2, -1)) * (1 / math.sqrt(self.head_dim))   # (N, heads, L, S)
    mask = _additive_mask(attn_mask, key_padding_mask, is_causal, batch, self.num_heads, tgt_len, src_len, scores.dtype, query.device)
    if mask is not None: scores = scores + mask
    weights = scores.softmax(-1)
    if self.training and self.dropout > 0: weights = weights.dropout(self.dropout)
    out = (weights @ v).transpose(1, 2).reshape(batch, tgt_len, e)       # (N, L, E)
    out = self.out_proj(out)
    if not self.batch_first: out = out.transpose(0, 1)
    if not need_weights: return out, None
    return out, (weights.mean(1) if average_attn_weights else weights)

  def extra_repr(self) -> str: return ""


def _additive_mask(attn_mask, key_padding_mask, is_causal: bool, batch: int, heads: int, tgt_len: int, src_len: int, dtype, device):
  """One float mask broadcastable to (N, heads, L, S): -inf where attention is not allowed."""
  def as_float(m: Tensor) -> Tensor:
    return m._where(float("-inf"), 0.0).cast(dtype) if m.dtype == dtypes.bool else m.cast(dtype)
  mask = None
  if attn_mask is None and is_causal:
    attn_mask = Tensor.ones(tgt_len, src_len, dtype=dtypes.bool, device=device).triu(1)
  if attn_mask is not None:
    if attn_mask.ndim == 2:
      if tuple(attn_mask.shape) != (tgt_len, src_len): raise RuntimeError(f"The shape of the 2D attn_mask is {tuple(attn_mask.shape)}, but should be {(tgt_len, src_len)}.")
      mask = as_float(attn_mask)
    elif attn_mask.ndim == 3:
      if tuple(attn_mask.shape) != (batch * heads, tgt_len, src_len): raise RuntimeError(f"The shape of the 3D attn_mask is {tuple(attn_mask.shape)}, but should be {(batch * heads, tgt_len, src_len)}.")
      mask = as_float(attn_mask).reshape(batch, heads, tgt_len, src_len)
    else: raise RuntimeError(f"attn_mask's dimension {attn_mask.ndim} is not supported")
  if key_padding_mask is not None:
    if tuple(key_padding_mask.shape) != (batch, src_len):
      raise AssertionError(f"expecting key_padding_mask shape of {(batch, src_len)}, but got {tuple(key_padding_mask.shape)}")
    padding = as_float(key_padding_mask).reshape(batch, 1, 1, src_len)
    mask = padding if mask is None else mask + padding
  return mask


def _activation(name_or_fn) -> Callable[[Tensor], Tensor]:
  if callable(name_or_fn): return name_or_fn
  if name_or_fn == "relu": return lambda x: x.relu()
  if name_or_fn == "gelu": return lambda x: x.gelu()
  raise RuntimeError(f"activation should be relu/gelu, not {name_or_fn}")


class TransformerEncoderLayer(Module):
  """Self-attention then a feed-forward block, each with a residual and LayerNorm (post-norm, or pre-norm with
  norm_first=True). Parameter names follow torch: self_attn, linear1, linear2, norm1, norm2.
  Shape: src (S, N, E), or (N, S, E) with batch_first."""

  def __init__(self, d_model: int, nhead: int, dim_feedforward: int = 2048, dropout: float = 0.1, activation="relu",
               layer_norm_eps: float = 1e-5, batch_first: bool = False, norm_first: bool = False, bias: bool = True, device=None, dtype=None):
    super().__init__()
    self.self_attn = MultiheadAttention(d_model, nhead, dropout=dropout, bias=bias, batch_first=batch_first, device=device, dtype=dtype)
    self.linear1 = Linear(d_model, dim_feedforward, bias=bias, device=device, dtype=dtype)
    self.dropout = Dropout(dropout)
    self.linear2 = Linear(dim_feedforward, d_model, bias=bias, device=device, dtype=dtype)
    self.norm_first = norm_first
    self.norm1 = LayerNorm(d_model, eps=layer_norm_eps, bias=bias, device=device, dtype=dtype)
    self.norm2 = LayerNorm(d_model, eps=layer_norm_eps, bias=bias, device=device, dtype=dtype)
    self.dropout1 = Dropout(dropout)
    self.dropout2 = Dropout(dropout)
    self.activation = _activation(activation)

  def forward(self, src: Tensor, src_mask: Tensor | None = None, src_key_padding_mask: Tensor | None = None, is_causal: bool = False) -> Tensor:
    x = src
    if self.norm_first:
      x = x + self._sa_block(self.norm1(x), src_mask, src_key_padding_mask, is_causal)
      x = x + self._ff_block(self.norm2(x))
    else:
      x = self.norm1(x + self._sa_block(x, src_mask, src_key_padding_mask, is_causal))
      x = self.norm2(x + self._ff_block(x))
    return x

  def _sa_block(self, x: Tensor, attn_mask, key_padding_mask, is_causal: bool) -> Tensor:
    out = self.self_attn(x, x, x, attn_mask=attn_mask, key_padding_mask=key_padding_mask, need_weights=False, is_causal=is_causal)[0]
    return self.dropout1(out)

  def _ff_block(self, x: Tensor) -> Tensor:
    return self.dropout2(self.linear2(self.dropout(self.activation(self.linear1(x)))))
