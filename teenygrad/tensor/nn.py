"""Linear algebra, convolution, pooling, normalization, attention, activations and losses (torch.nn.functional
semantics), all written in terms of other Tensor ops."""
from __future__ import annotations

import itertools

import math
from typing import TYPE_CHECKING

from teenygrad.dtype import dtypes
from teenygrad.helpers import normalize_dim, prod
from teenygrad.ir.ops import Ops

if TYPE_CHECKING:
  from teenygrad.ir.lazy import LazyBuffer
  from teenygrad.tensor.tensor import Tensor

SQRT_2_OVER_PI = math.sqrt(2 / math.pi)


def _T():
  from teenygrad.tensor.tensor import Tensor
  return Tensor


def _pair(x, n=2) -> tuple:
  return tuple(x) if isinstance(x, (tuple, list)) else (x,) * n


def _recorded_matmul(a: Tensor, b: Tensor, batch: tuple, n, k, m) -> Tensor:
  """Matmul as primitives that autograd records: (..., n, 1, k) * (..., 1, m, k) summed over k. The code generator
  sees the GEMM and tiles it; the backward's sums of products are GEMMs too (autograd._sum_product)."""
  a, b = a.expand(*batch, n, k), b.expand(*batch, k, m)
  product = a.reshape(*batch, n, 1, k) * b.transpose(-1, -2).reshape(*batch, 1, m, k)
  acc = product.float() if product.dtype in (dtypes.float16, dtypes.bfloat16) else product
  return acc.sum(-1, dtype=acc.dtype if acc.dtype.is_float else None).cast(a.dtype)


def _matmul_graph(a: LazyBuffer, b: LazyBuffer, batch: tuple, n, k, m) -> LazyBuffer:
  """The same graph as _recorded_matmul, built on the graph nodes directly where nothing needs a gradient: a dozen
  Tensor ops cost more Python than a 512x512 GEMM's kernel launch and realize together."""
  full, last = (*batch, n, m, k), len(batch) + 2
  lhs = _expanded(_expanded(a, (*batch, n, k)).reshape((*batch, n, 1, k)), full)
  swap = tuple(range(len(batch))) + (len(batch) + 1, len(batch))
  rhs = _expanded(_expanded(b, (*batch, k, m)).permute(swap).reshape((*batch, 1, m, k)), full)
  product = lhs.alu(Ops.MUL, rhs)
  if product.dtype in (dtypes.float16, dtypes.bfloat16): product = product.cast(dtypes.float32)
  elif not product.dtype.is_float: product = product.cast(dtypes.int64)   # integer sums accumulate in int64, as sum() does
  return product.reduce(Ops.SUM, (last,)).reshape((*batch, n, m)).cast(a.dtype)


def _expanded(lb: LazyBuffer, shape: tuple) -> LazyBuffer:
  """lb broadcast to shape (leading dims added as Tensor.expand adds them)."""
  if lb.shape == shape: return lb
  if len(lb.shape) < len(shape): lb = lb.reshape((1,) * (len(shape) - len(lb.shape)) + lb.shape)
  return lb.expand(shape)


class NNMixin:
  __slots__ = ()

  # ---- linear algebra ----
  def matmul(self: Tensor, other: Tensor) -> Tensor:
    T = _T()
    if not isinstance(other, T): other = T(other, device=self.device)
    if self.ndim == 0 or other.ndim == 0: raise RuntimeError("both arguments to matmul need to be at least 1D")
    a, b = self, other
    if a.dtype != b.dtype:
      from teenygrad.dtype import promote
      dtype = promote(a.dtype, b.dtype)
      a, b = a.cast(dtype), b.cast(dtype)
    squeeze_first, squeeze_last = a.ndim == 1, b.ndim == 1
    if squeeze_first: a = a.unsqueeze(0)
    if squeeze_last: b = b.unsqueeze(-1)
    if a.shape[-1] != b.shape[-2]:
      raise RuntimeError(f"mat1 and mat2 shapes cannot be multiplied ({a.shape[-2]}x{a.shape[-1]} and {b.shape[-2]}x{b.shape[-1]})")
    from teenygrad.tensor.tensor import _broadcast_shape
    batch = _broadcast_shape(a.shape[:-2], b.shape[:-2])
    n, k, m = a.shape[-2], a.shape[-1], b.shape[-1]
    from teenygrad.tensor.tensor import is_grad_enabled
    if is_grad_enabled() and (a.requires_grad or b.requires_grad): out = _recorded_matmul(a, b, batch, n, k, m)
    else: out = T(_matmul_graph(a.lazydata, b.lazydata, tuple(batch), n, k, m))
    if squeeze_first: out = out.squeeze(-2)
    if squeeze_last: out = out.squeeze(-1)
    return out

  def dot(self: Tensor, other: Tensor) -> Tensor:
    if self.ndim != 1 or other.ndim != 1: raise RuntimeError(f"1D tensors expected, but got {self.ndim}D and {other.ndim}D tensors")
    return self.matmul(other)

  def mm(self: Tensor, other: Tensor) -> Tensor:
    if self.ndim != 2 or other.ndim != 2: raise RuntimeError("self must be a matrix")
    return self.matmul(other)

  def bmm(self: Tensor, other: Tensor) -> Tensor:
    if self.ndim != 3 or other.ndim != 3: raise RuntimeError("batch1 must be a 3D tensor")
    return self.matmul(other)

  def linear(self: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    out = self.matmul(weight.T if weight.ndim == 2 else weight)
    return out + bias if bias is not None else out

  # ---- convolution ----
  def conv2d(self: Tensor, weight: Tensor, bias=None, stride=1, padding=0, dilation=1, groups=1) -> Tensor:
    return _conv(self, weight, bias, stride, padding, dilation, groups, 2)

  def conv1d(self: Tensor, weight: Tensor, bias=None, stride=1, padding=0, dilation=1, groups=1) -> Tensor:
    return _conv(self, weight, bias, stride, padding, dilation, groups, 1)

  def conv_transpose2d(self: Tensor, weight: Tensor, bias=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1) -> Tensor:
    """A strided transposed conv is a conv over the input dilated with zeros, with the kernel flipped."""
    x = self
    if x.ndim != 4 or weight.ndim != 4: raise RuntimeError("conv_transpose2d expects 4-d input and weight")
    stride, padding, output_padding, dilation = _pair(stride), _pair(padding), _pair(output_padding), _pair(dilation)
    cin, cout_g, kh, kw = weight.shape
    if x.shape[1] != cin: raise RuntimeError(f"Given transposed=1, weight of size {list(weight.shape)}, expected input{list(x.shape)} to have {cin} channels, but got {x.shape[1]} channels instead")
    # (cin, cout/g, kh, kw) -> (cout, cin/g, kh, kw), flipped
    w = weight.reshape(groups, cin // groups, cout_g, kh, kw).transpose(1, 2).reshape(groups * cout_g, cin // groups, kh, kw).flip(2, 3)
    b, c, h, wd = x.shape
    # insert stride-1 zeros between input pixels
    if stride != (1, 1):
      sh, sw = stride
      x = x.reshape(b, c, h, 1, wd, 1)._pad(((0, 0), (0, 0), (0, 0), (0, sh - 1), (0, 0), (0, sw - 1)))
      x = x.reshape(b, c, h * sh, wd * sw)._shrink(((0, b), (0, c), (0, (h - 1) * sh + 1), (0, (wd - 1) * sw + 1)))
    pads = [dilation[i] * ((kh, kw)[i] - 1) - padding[i] for i in range(2)]
    x = x.pad((pads[1], pads[1] + output_padding[1], pads[0], pads[0] + output_padding[0]))
    return _conv(x, w, bias, 1, 0, dilation, groups, 2)

  # ---- pooling ----
  def max_pool2d(self: Tensor, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False, return_indices=False) -> Tensor:
    k = _pair(kernel_size)
    s = _pair(stride) if stride is not None else k
    p, d = _pair(padding), _pair(dilation)
    if any(pp > kk // 2 for pp, kk in zip(p, k)): raise RuntimeError("pad should be at most half of effective kernel size")
    extra = _ceil_extra(self.shape[-2:], k, s, p, d) if ceil_mode else (0, 0)
    if s == k and p == (0, 0) and d == (1, 1) and extra == (0, 0) and self.ndim >= 2:
      # windows that tile the input: a reshape, whose backward is an expand (the sliding-window views of _pool
      # would make the backward a reduce over repeated, re-indexed copies)
      (h, w), (kh, kw) = self.shape[-2:], k
      oh, ow = h // kh, w // kw
      if oh <= 0 or ow <= 0: raise RuntimeError(f"window {k} is larger than the input {tuple(self.shape[-2:])}")
      prefix = self.shape[:-2]
      x = self._shrink(tuple((0, n) for n in prefix) + ((0, oh * kh), (0, ow * kw)))
      return x.reshape(*prefix, oh, kh, ow, kw).amax((-3, -1))
    x = self.pad((p[1], p[1] + extra[1], p[0], p[0] + extra[0]), value=float("-inf") if self.dtype.is_float else -(1 << 31))
    windows = x._pool(k, s, d)
    return windows.amax((-1, -2))

  def avg_pool2d(self: Tensor, kernel_size, stride=None, padding=0, ceil_mode=False, count_include_pad=True, divisor_override=None) -> Tensor:
    k = _pair(kernel_size)
    s = _pair(stride) if stride is not None else k
    p = _pair(padding)
    extra = _ceil_extra(self.shape[-2:], k, s, p, (1, 1)) if ceil_mode else (0, 0)
    x = self.pad((p[1], p[1] + extra[1], p[0], p[0] + extra[0]))
    windows = x._pool(k, s)
    if divisor_override: return windows.sum((-1, -2)) / divisor_override
    if not any(extra) and (count_include_pad or p == (0, 0)): return windows.mean((-1, -2))
    # the divisor counts input (and, if asked, padding) cells a window covers, never the ceil_mode overhang
    ones = _T().ones(*self.shape[-2:], device=self.device)
    ones = ones.pad((p[1], p[1], p[0], p[0]), value=1.0 if count_include_pad else 0.0) if count_include_pad else ones.pad((p[1], p[1], p[0], p[0]))
    count = ones.pad((0, extra[1], 0, extra[0]))._pool(k, s).sum((-1, -2))
    return windows.sum((-1, -2)) / count

  def adaptive_avg_pool2d(self: Tensor, output_size) -> Tensor:
    oh, ow = _pair(output_size)
    h, w = self.shape[-2:]
    if h % oh or w % ow: raise NotImplementedError("adaptive_avg_pool2d needs the input size to be a multiple of the output size")
    return self.avg_pool2d((h // oh, w // ow))

  def interpolate(self: Tensor, size=None, scale_factor=None, mode: str = "nearest", align_corners=None) -> Tensor:
    T = _T()
    spatial = self.ndim - 2
    if size is None:
      if scale_factor is None: raise ValueError("either size or scale_factor should be defined")
      size = tuple(int(math.floor(s * f)) for s, f in zip(self.shape[2:], _pair(scale_factor, spatial)))
    size = _pair(size, spatial)
    x = self
    for axis, out_size in enumerate(size):
      dim = 2 + axis
      in_size = x.shape[dim]
      scale = in_size / out_size if scale_factor is None else 1 / _pair(scale_factor, spatial)[axis]
      if mode == "nearest":
        idx = [min(int(math.floor(i * scale)), in_size - 1) for i in range(out_size)]
        x = x.index_select(dim, T(idx, dtype=dtypes.int32, device=self.device))
      elif mode in ("bilinear", "linear"):
        if align_corners:
          src = [i * (in_size - 1) / (out_size - 1) if out_size > 1 else 0.0 for i in range(out_size)]
        else:
          src = [max((i + 0.5) * scale - 0.5, 0.0) for i in range(out_size)]
        low = [min(int(math.floor(v)), in_size - 1) for v in src]
        high = [min(lo + 1, in_size - 1) for lo in low]
        frac = T([v - lo for v, lo in zip(src, low)], dtype=x.dtype, device=self.device)
        frac = frac.reshape(tuple(out_size if i == dim else 1 for i in range(x.ndim)))
        a = x.index_select(dim, T(low, dtype=dtypes.int32, device=self.device))
        b = x.index_select(dim, T(high, dtype=dtypes.int32, device=self.device))
        x = a + (b - a) * frac
      else: raise NotImplementedError(f"interpolate mode {mode!r} is not supported")
    return x

  # ---- embeddings, dropout ----
  def embedding(self: Tensor, weight: Tensor) -> Tensor:
    """self holds indices into the rows of weight."""
    return weight.index_select(0, self.reshape(-1)).reshape(*self.shape, weight.shape[-1])

  def dropout(self: Tensor, p: float = 0.5, training: bool = True) -> Tensor:
    if not 0 <= p <= 1: raise ValueError(f"dropout probability has to be between 0 and 1, but got {p}")
    if not training or p == 0: return self
    if p == 1: return self * 0
    keep = _T().rand(*self.shape, device=self.device) >= p
    return keep._where(self * (1 / (1 - p)), 0.0)

  def one_hot(self: Tensor, num_classes: int = -1) -> Tensor:
    if self.dtype.is_float: raise RuntimeError("one_hot is only applicable to index tensor of type LongTensor.")
    if num_classes == -1: num_classes = int(self.max().item()) + 1
    if self.numel():
      low, high = int(self.min().item()), int(self.max().item())
      if low < 0: raise RuntimeError("Class values must be non-negative.")
      if high >= num_classes: raise RuntimeError("Class values must be smaller than num_classes.")
    return (self.unsqueeze(-1) == _T().arange(num_classes, device=self.device)).cast(dtypes.int64)

  # ---- normalization ----
  def layer_norm(self: Tensor, normalized_shape, weight=None, bias=None, eps: float = 1e-5) -> Tensor:
    shape = _pair(normalized_shape, 1) if not isinstance(normalized_shape, int) else (normalized_shape,)
    if tuple(self.shape[-len(shape):]) != tuple(shape):
      raise RuntimeError(f"Given normalized_shape={list(shape)}, expected input with shape [*, {', '.join(map(str, shape))}], but got input of size{list(self.shape)}")
    axes = tuple(range(self.ndim - len(shape), self.ndim))
    mean = self.mean(axes, keepdim=True)
    centered = self - mean
    var = (centered * centered).mean(axes, keepdim=True)
    out = centered * (var + eps).rsqrt()
    if weight is not None: out = out * weight
    if bias is not None: out = out + bias
    return out

  def rms_norm(self: Tensor, normalized_shape, weight=None, eps: float | None = None) -> Tensor:
    shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
    axes = tuple(range(self.ndim - len(shape), self.ndim))
    if eps is None: eps = float(__import__("numpy").finfo(__import__("numpy").float32).eps)
    out = self * ((self * self).mean(axes, keepdim=True) + eps).rsqrt()
    return out * weight if weight is not None else out

  def batch_norm(self: Tensor, running_mean=None, running_var=None, weight=None, bias=None, training=False, momentum=0.1, eps=1e-5) -> Tensor:
    axes = (0,) + tuple(range(2, self.ndim))
    shape = (1, self.shape[1]) + (1,) * (self.ndim - 2)
    if training:
      mean = self.mean(axes, keepdim=True)
      var = ((self - mean) * (self - mean)).mean(axes, keepdim=True)
      if running_mean is not None:
        n = self.numel() / self.shape[1]
        running_mean.assign((1 - momentum) * running_mean + momentum * mean.detach().reshape(-1))
        running_var.assign((1 - momentum) * running_var + momentum * var.detach().reshape(-1) * (n / max(n - 1, 1)))
    else:
      mean, var = running_mean.reshape(shape), running_var.reshape(shape)
    out = (self - mean) * (var + eps).rsqrt()
    if weight is not None: out = out * weight.reshape(shape)
    if bias is not None: out = out + bias.reshape(shape)
    return out

  def group_norm(self: Tensor, num_groups: int, weight=None, bias=None, eps: float = 1e-5) -> Tensor:
    b, c = self.shape[:2]
    if c % num_groups: raise RuntimeError(f"Expected number of channels in input to be divisible by num_groups, but got input of shape {list(self.shape)} and num_groups={num_groups}")
    x = self.reshape(b, num_groups, -1)
    mean = x.mean(-1, keepdim=True)
    var = ((x - mean) * (x - mean)).mean(-1, keepdim=True)
    out = ((x - mean) * (var + eps).rsqrt()).reshape(self.shape)
    shape = (1, c) + (1,) * (self.ndim - 2)
    if weight is not None: out = out * weight.reshape(shape)
    if bias is not None: out = out + bias.reshape(shape)
    return out

  # ---- attention ----
  def scaled_dot_product_attention(self: Tensor, key: Tensor, value: Tensor, attn_mask=None, dropout_p=0.0,
                                   is_causal=False, scale=None, enable_gqa=False) -> Tensor:
    T = _T()
    q = self
    if enable_gqa and key.shape[-3] != q.shape[-3]:
      groups = q.shape[-3] // key.shape[-3]
      key = key.unsqueeze(-3).expand(*key.shape[:-2], groups, *key.shape[-2:]).reshape(*q.shape[:-2], *key.shape[-2:])
      value = value.unsqueeze(-3).expand(*value.shape[:-2], groups, *value.shape[-2:]).reshape(*q.shape[:-2], *value.shape[-2:])
    scale = 1 / math.sqrt(q.shape[-1]) if scale is None else scale
    scores = (q @ key.transpose(-2, -1)) * scale
    if is_causal:
      if attn_mask is not None: raise RuntimeError("_scaled_dot_product_attention: Explicit attn_mask should not be set when is_causal=True")
      lq, lk = q.shape[-2], key.shape[-2]
      keep = T.ones(lq, lk, dtype=dtypes.bool, device=q.device).tril()
      scores = keep._where(scores, float("-inf"))
    if attn_mask is not None:
      scores = attn_mask._where(scores, float("-inf")) if attn_mask.dtype == dtypes.bool else scores + attn_mask
    weights = scores.softmax(-1)
    if dropout_p: weights = weights.dropout(dropout_p)
    return weights @ value

  # ---- activations ----
  def relu(self: Tensor) -> Tensor: return (self > 0)._where(self, _T()._const(0, self.dtype, self.device))
  def relu6(self: Tensor) -> Tensor: return self.relu().clamp(max=6.0)
  def leaky_relu(self: Tensor, negative_slope: float = 0.01) -> Tensor: return (self > 0)._where(self, self * negative_slope)
  def elu(self: Tensor, alpha: float = 1.0) -> Tensor: return (self > 0)._where(self, (self.exp() - 1) * alpha)
  def selu(self: Tensor) -> Tensor: return 1.0507009873554805 * self.elu(1.6732632423543772)
  def celu(self: Tensor, alpha: float = 1.0) -> Tensor: return (self > 0)._where(self, ((self / alpha).exp() - 1) * alpha)
  def silu(self: Tensor) -> Tensor: return self * self.sigmoid()
  def softplus(self: Tensor, beta: float = 1.0, threshold: float = 20.0) -> Tensor:
    scaled = self * beta
    nonneg = scaled >= 0
    # max(x, 0) + log(1 + exp(-|x|)): no overflow, and the gradient at 0 is 1/2
    stable = (nonneg._where(scaled, 0.0) + (nonneg._where(-scaled, scaled).exp() + 1).log()) / beta
    return (scaled > threshold)._where(self, stable)
  def mish(self: Tensor) -> Tensor: return self * self.softplus().tanh()
  def hardswish(self: Tensor) -> Tensor: return self * (self + 3).clamp(0, 6) / 6
  def hardsigmoid(self: Tensor) -> Tensor: return (self + 3).clamp(0, 6) / 6
  def hardtanh(self: Tensor, min_val=-1.0, max_val=1.0) -> Tensor: return self.clamp(min_val, max_val)
  def logsigmoid(self: Tensor) -> Tensor: return -(-self).softplus()
  def softsign(self: Tensor) -> Tensor: return self / (1 + self.abs())
  def gelu(self: Tensor, approximate: str = "none") -> Tensor:
    if approximate == "tanh": return 0.5 * self * (1 + (SQRT_2_OVER_PI * (self + 0.044715 * self * self * self)).tanh())
    if approximate != "none": raise RuntimeError(f"approximate argument must be either none or tanh, got {approximate!r}")
    return 0.5 * self * (1 + (self * (1 / math.sqrt(2))).erf())
  def erf(self: Tensor) -> Tensor:
    """Abramowitz-Stegun 7.1.26 is too coarse for fp32; this uses the erfc continued rational (max err ~1.2e-7)."""
    x = self._float()
    z = x.abs()
    t = 1 / (1 + 0.5 * z)
    poly = -z * z - 1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418 + t * (-0.18628806 + t * (
      0.27886807 + t * (-1.13520398 + t * (1.48851587 + t * (-0.82215223 + t * 0.17087277))))))))
    erfc = t * poly.exp()
    return x.sign() * (1 - erfc)

  # ---- losses ----
  def cross_entropy(self: Tensor, target: Tensor, weight=None, ignore_index: int = -100, reduction: str = "mean", label_smoothing: float = 0.0) -> Tensor:
    logp = self.log_softmax(1 if self.ndim > 1 else 0)
    if target.dtype.is_float:   # class probabilities
      classes = self.shape[1] if self.ndim > 1 else self.shape[0]
      probs = target * (1 - label_smoothing) + label_smoothing / classes
      loss = -(logp * probs).sum(1 if self.ndim > 1 else 0)
      return _reduce_loss(loss, reduction)
    return logp.nll_loss(target, weight, ignore_index, reduction, label_smoothing)

  def nll_loss(self: Tensor, target: Tensor, weight=None, ignore_index: int = -100, reduction: str = "mean", label_smoothing: float = 0.0) -> Tensor:
    T = _T()
    if target.dtype.is_float: raise RuntimeError("expected scalar type Long but found Float")
    classes = self.shape[1] if self.ndim > 1 else self.shape[0]
    logp = self.movedim(1, -1) if self.ndim > 1 else self.unsqueeze(0)   # (..., C)
    tgt = target if self.ndim > 1 else target.reshape(1)
    if tgt.shape != logp.shape[:-1]: raise RuntimeError(f"Expected target size {list(logp.shape[:-1])}, got {list(tgt.shape)}")
    valid = tgt != ignore_index
    if tgt.numel():
      host = tgt.numpy()
      bad = host[(host != ignore_index) & ((host < 0) | (host >= classes))]
      if bad.size: raise IndexError(f"Target {int(bad[0])} is out of bounds.")
    safe = valid._where(tgt, 0)
    hot = (safe.unsqueeze(-1) == T.arange(classes, device=self.device)) & valid.unsqueeze(-1)
    w = weight if weight is not None else T.ones(classes, dtype=self.dtype, device=self.device)
    picked = -(hot._where(logp * w, 0.0)).sum(-1)
    weight_of = hot._where(w, 0.0).sum(-1)
    if label_smoothing:
      smooth = -(logp * w).sum(-1) / classes
      smooth = valid._where(smooth, 0.0)
      picked = picked * (1 - label_smoothing) + smooth * label_smoothing
    if reduction == "mean": out = picked.sum() / weight_of.sum()
    else: out = _reduce_loss(picked, reduction)
    return out if self.ndim > 1 or reduction != "none" else out.reshape(())

  def mse_loss(self: Tensor, target: Tensor, reduction: str = "mean") -> Tensor:
    diff = self - target
    return _reduce_loss(diff * diff, reduction)

  def l1_loss(self: Tensor, target: Tensor, reduction: str = "mean") -> Tensor:
    return _reduce_loss((self - target).abs(), reduction)

  def smooth_l1_loss(self: Tensor, target: Tensor, reduction: str = "mean", beta: float = 1.0) -> Tensor:
    diff = (self - target).abs()
    return _reduce_loss((diff < beta)._where(0.5 * diff * diff / beta, diff - 0.5 * beta), reduction)

  def binary_cross_entropy(self: Tensor, target: Tensor, weight=None, reduction: str = "mean") -> Tensor:
    if self.shape != target.shape: raise ValueError(f"Using a target size ({list(target.shape)}) that is different to the input size ({list(self.shape)}) is deprecated. Please ensure they have the same size.")
    log_p = self.log().clamp(min=-100)
    log_1p = (1 - self).log().clamp(min=-100)
    loss = -(target * log_p + (1 - target) * log_1p)
    if weight is not None: loss = loss * weight
    return _reduce_loss(loss, reduction)

  def binary_cross_entropy_with_logits(self: Tensor, target: Tensor, weight=None, reduction: str = "mean", pos_weight=None) -> Tensor:
    if self.shape != target.shape: raise ValueError(f"Target size ({list(target.shape)}) must be the same as input size ({list(self.shape)})")
    log_sig = -(-self).softplus()             # log(sigmoid(x))
    log_one_minus = -self.softplus()          # log(1 - sigmoid(x))
    pos = target * log_sig * (pos_weight if pos_weight is not None else 1)
    loss = -(pos + (1 - target) * log_one_minus)
    if weight is not None: loss = loss * weight
    return _reduce_loss(loss, reduction)


def _reduce_loss(loss: Tensor, reduction: str) -> Tensor:
  if reduction == "mean": return loss.mean()
  if reduction == "sum": return loss.sum()
  if reduction == "none": return loss
  raise ValueError(f"{reduction} is not a valid value for reduction")


def _ceil_extra(spatial, k, s, p, d) -> tuple[int, int]:
  extra = []
  for i, kk, ss, pp, dd in zip(spatial, k, s, p, d):
    eff = dd * (kk - 1) + 1
    floor_out = (i + 2 * pp - eff) // ss + 1
    ceil_out = -(-(i + 2 * pp - eff) // ss) + 1
    if (ceil_out - 1) * ss >= i + pp: ceil_out -= 1
    extra.append((ceil_out - floor_out) * ss if ceil_out > floor_out else 0)
  return tuple(extra)


def _conv(x: Tensor, weight: Tensor, bias, stride, padding, dilation, groups: int, dims: int) -> Tensor:
  """Convolution as im2col + matmul, with a gradient of its own (see _ConvPlan)."""
  if x.ndim != dims + 2:
    raise RuntimeError(f"Expected {dims + 1}D (unbatched) or {dims + 2}D (batched) input to conv{dims}d, but got input of size: {list(x.shape)}")
  stride, dilation = _pair(stride, dims), _pair(dilation, dims)
  cin = x.shape[1]
  cout, cin_g = weight.shape[:2]
  kernel = weight.shape[2:]
  if cin_g * groups != cin:
    raise RuntimeError(f"Given groups={groups}, weight of size {list(weight.shape)}, expected input{list(x.shape)} to have {cin_g * groups} channels, but got {cin} channels instead")
  if cout % groups: raise RuntimeError("out_channels must be divisible by groups")
  if padding == "same": padding = tuple((d * (k - 1)) // 2 for d, k in zip(dilation, kernel))
  elif padding == "valid": padding = (0,) * dims
  padding = _pair(padding, dims)
  if x.dtype != weight.dtype: raise RuntimeError(f"Input type ({x.dtype.name}) and weight type ({weight.dtype.name}) should be the same")
  plan = _ConvPlan(x.shape, weight.shape, stride, padding, dilation, groups)
  if bias is not None and bias.dtype != x.dtype:   # a bias of another dtype promotes the output: add it outside
    return _T()._with_gradient((x, weight), plan.forward, plan.backward) + bias.reshape(1, cout, *([1] * dims))
  # the bias is part of the plan: its gradient sums the contiguous output gradient the weight gradient reads anyway
  inputs = (x, weight) if bias is None else (x, weight, bias)
  return _T()._with_gradient(inputs, plan.forward, plan.backward)


class _ConvPlan:
  """Shapes of one convolution and its three matmuls. Columns are K-major, (groups, cin_g * kernel, batch * out), so
  the im2col copy runs along output rows on both sides and every matmul operand is a plain strided view:
    forward      out[g, co, m]  = sum_k w[g, co, k] * cols[g, k, m]
    weight grad  dw[g, co, k]   = sum_m dout[g, co, m] * cols[g, k, m]
    input grad   dcols[g, k, m] = sum_co w[g, co, k] * dout[g, co, m], then each kernel tap's slice of dcols is
                 shifted back to where it was read from and the taps are summed (col2im, one fused kernel)."""
  def __init__(self, x_shape, w_shape, stride, padding, dilation, groups):
    self.b, self.cin = x_shape[:2]
    self.spatial = tuple(x_shape[2:])
    self.cout, self.cin_g = w_shape[:2]
    self.kernel = tuple(w_shape[2:])
    self.stride, self.padding, self.dilation, self.groups = stride, padding, dilation, groups
    self.dims = len(self.kernel)
    self.padded = tuple(s + 2 * p for s, p in zip(self.spatial, padding))
    self.out = tuple((i - d * (k - 1) - 1) // s + 1 for i, d, k, s in zip(self.padded, dilation, self.kernel, stride))
    self.rcout = self.cout // groups
    self.K, self.M = self.cin_g * prod(self.kernel), self.b * prod(self.out)
    self.cols: Tensor | None = None
    self.weight: Tensor | None = None

  def _columns(self, x: Tensor) -> Tensor:
    pads = []
    for p in reversed(self.padding): pads += [p, p]
    xp = x.pad(tuple(pads)) if any(self.padding) else x
    d = self.dims
    windows = xp._pool(self.kernel, self.stride, self.dilation)              # (b, cin, *out, *kernel)
    windows = windows.reshape(self.b, self.groups, self.cin_g, *self.out, *self.kernel)
    # (g, cin_g, *kernel, b, *out)
    cols = windows.permute(1, 2, *range(3 + d, 3 + 2 * d), 0, *range(3, 3 + d)).contiguous()
    return cols.reshape(self.groups, self.K, self.M)

  def forward(self, x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    self.weight = weight.detach()
    self.cols = self._columns(x)
    out = weight.reshape(self.groups, self.rcout, self.K) @ self.cols          # (g, rcout, b*out)
    out = out.reshape(self.groups, self.rcout, self.b, *self.out).permute(2, 0, 1, *range(3, 3 + self.dims))
    out = out.reshape(self.b, self.cout, *self.out)
    return out if bias is None else out + bias.reshape(1, self.cout, *([1] * self.dims))

  def backward(self, grad: Tensor, needed: tuple[bool, ...]):
    d, g = self.dims, self.groups
    dout = grad.reshape(self.b, g, self.rcout, *self.out).permute(1, 2, 0, *range(3, 3 + d))
    dout = dout.contiguous().reshape(g, self.rcout, self.M)                    # (g, rcout, b*out)
    weight = self.weight
    dw = (dout @ self.cols.transpose(1, 2)).contiguous().reshape(weight.shape) if needed[1] else None
    dx = None
    if needed[0]:
      dcols = (weight.reshape(g, self.rcout, self.K).transpose(1, 2) @ dout).contiguous()   # (g, K, b*out), read by every tap
      dx = self._col2im(dcols)
    if len(needed) == 2: return dx, dw
    return dx, dw, (dout.sum(-1).reshape(self.cout) if needed[2] else None)

  def _col2im(self, dcols: Tensor) -> Tensor:
    d = self.dims
    taps = dcols.reshape(self.groups * self.cin_g, *self.kernel, self.b, *self.out)
    total = None
    for tap in itertools.product(*(range(k) for k in self.kernel)):
      piece = taps[(slice(None),) + tap]                                         # (cin, b, *out)
      piece = piece.permute(1, 0, *range(2, 2 + d))                              # (b, cin, *out)
      for axis, (o, s, k, dil, full) in enumerate(zip(self.out, self.stride, tap, self.dilation, self.padded)):
        dim = 2 + axis
        if s > 1:   # spread the outputs back onto the strided input grid
          shape = piece.shape
          piece = piece.reshape(*shape[:dim + 1], 1, *shape[dim + 1:])
          piece = piece._pad(tuple((0, s - 1) if i == dim + 1 else (0, 0) for i in range(piece.ndim)))
          piece = piece.reshape(*shape[:dim], o * s, *shape[dim + 1:])
          piece = piece._shrink(tuple((0, (o - 1) * s + 1) if i == dim else (0, n) for i, n in enumerate(piece.shape)))
        start = k * dil
        piece = piece._pad(tuple((start, full - start - piece.shape[dim]) if i == dim else (0, 0) for i in range(piece.ndim)))
      total = piece if total is None else total + piece
    return total._shrink(((0, self.b), (0, self.cin)) + tuple((p, p + s) for p, s in zip(self.padding, self.spatial)))


__all__ = ["NNMixin", "normalize_dim"]
