"""A paged KV cache and a batched model step over it, for continuous batching.

The cache of each layer is one pool of fixed-size blocks, (num_blocks * block_size, n_kv_heads, head_dim). A sequence
owns a list of blocks (its block table); sequences of any lengths share the pool, and a block holding a prompt prefix
(a system prompt) can be shared by every sequence that starts with it (`BlockManager`, refcounted, hashed by content
as vLLM's automatic prefix caching does).

`PagedStep` runs the model's weights on a batch of rows, each at its own position: new keys/values go to the pool
slots the host names (`slot_mapping`), attention reads each row's cache through a gather index (`gather_index`) and
an additive mask. Rows are padded to a few batch sizes, each captured once by the JIT; the length attended over
is a symbolic size, so one capture serves every length. On CUDA and OpenCL the pool write and gather are small
kernels of their own (`_device_kernels`) that read the slots from device buffers: the JIT records them like any other
launch, so a decode step stays on the device (one CUDA graph replay) and only what sampling needs comes back
(`StepResult`).
"""
from __future__ import annotations

import functools
import hashlib
import itertools
import math
import warnings
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np

from teenygrad.dtype import dtypes
from teenygrad.ir.lazy import LazyBuffer
from teenygrad.ir.symbolic import BoundVariable
from teenygrad.llm.custom_ops import InferenceOp, embedding_rows, greedy_tokens
from teenygrad.llm.model import Transformer, apply_rope, kernel_output, linear, rms_norm
from teenygrad.serve.paged_attention import cpu_pool_write, paged_attention
from teenygrad.tensor import Tensor

MASKED = -1e9   # finite: a padding row that sees nothing stays finite (uniform weights over zero values)
NULL_BLOCK = 0  # block 0 is never written: gathers of positions a row does not have read its zeros
# the attended length of a step is rounded up to a multiple of this: the primitive attention's reduces over it split
# into lanes with a tail whose rounding depends on the length, so a prompt read in other chunks (a prefix shared from
# the cache) would get other bits; over a whole number of lanes the masked positions add exact zeros, and a row's
# result is the same whatever the step's longest row is
ATTEND_ALIGN = 32


def attended_length(width: int, max_len: int) -> int:
  return min(-(-max(width, 1) // ATTEND_ALIGN) * ATTEND_ALIGN, max_len)


def _host(buffer, shape) -> np.ndarray:
  return buffer.raw.view(buffer.dtype.np).reshape(shape)


def _read(buffer, shape) -> np.ndarray:
  return _host(buffer, shape) if buffer.device == "CPU" else buffer.numpy().reshape(shape)


class PoolWrite(InferenceOp):
  """Custom op: srcs (pool (P, H, D), new (N, H, D), slots (N,) int32); pool[slots[i]] = new[i] where slots[i] >= 0."""
  what = "the KV pool write"

  def __init__(self, pool_shape: tuple, count: int):
    self.pool_shape, self.count = pool_shape, count

  def run(self, root: LazyBuffer, buffers: list):
    pool, new, slots = buffers
    P, H, D = self.pool_shape
    kernels = _device_kernels(pool.device, pool.dtype)
    if kernels is not None:
      kernels.write(pool, new, slots, self.count, H * D, P)
      return pool
    if pool.device.partition(":")[0] == "CPU" and pool.dtype == dtypes.float32:
      cpu_pool_write(pool, new, slots, self.count, H * D, P)
      return pool
    index = _read(slots, (self.count,))
    rows = _read(new, (self.count, H, D))
    valid = index >= 0
    if np.any(index[valid] >= P): raise IndexError(f"KV pool write at slot {int(index.max())} outside a pool of {P}")
    if pool.device == "CPU": _host(pool, self.pool_shape)[index[valid]] = rows[valid]
    else:   # a backend without pool kernels (Vulkan): round trip through the host (correct, not fast)
      host = pool.numpy().reshape(self.pool_shape)
      host[index[valid]] = rows[valid]
      pool.copyin(host)
    return pool



class PoolGather(InferenceOp):
  """Custom op: srcs (pool (P, H, D), index (B, L) int32) -> (L, B, H, D): out[j, b] = pool[index[b, j]].

  Only columns up to the longest row are copied: the consumer reads a symbolic prefix of the L axis, and putting L
  outermost keeps that prefix contiguous (the untouched rest of the buffer is never paged in). On the host the
  prefix is found from the index; a device kernel copies the first `length` columns, `length` being the step's
  symbolic attended length, so a JIT replay copies as many as the new step attends to."""
  what = "the KV pool gather"

  def __init__(self, pool_shape: tuple, index_shape: tuple, length: BoundVariable | None = None):
    self.pool_shape, self.index_shape, self.length = pool_shape, index_shape, length

  def run(self, root: LazyBuffer, buffers: list):
    from teenygrad.device import Buffer
    pool, index_buffer = buffers
    B, L = self.index_shape
    P, H, D = self.pool_shape
    out = Buffer(root.device, L * B * H * D, dtypes.float32)
    kernels = _device_kernels(pool.device, pool.dtype)
    if kernels is not None and self.length is not None:
      kernels.gather(out, pool, index_buffer, B, L, H * D, P, self.length)
      return out
    index = _read(index_buffer, self.index_shape)
    used = np.flatnonzero((index != NULL_BLOCK).any(0))
    width = attended_length(int(used[-1]) + 1 if used.size else 1, L)   # the step's attended length (PagedStep.run)
    source = _read(pool, self.pool_shape)
    if out.device == "CPU": np.take(source, index[:, :width].T, axis=0, out=_host(out, (L, B, H, D))[:width])
    else:
      host = np.zeros((L, B, H, D), dtype=np.float32)
      host[:width] = source[index[:, :width].T]
      out.copyin(host)
    return out



# ---- the pool's device kernels (CUDA, OpenCL) ----
# One source per kernel for both languages; the macros spell the differences. Sizes are compiled in (one program per shape:
# a handful, one per captured batch size), except the gather's attended length: it is the launch's one argument and
# sizes its grid, and naming it after the step's symbolic length lets a JIT replay (and a CUDA graph update) pass
# each step's value. Out-of-range slots are skipped on write and read as zeros, so a bad slot never touches memory
# outside the pool.
_POOL_SOURCES = {"tg_pool_write": r"""
KERNEL void tg_pool_write(GLOBAL float* RESTRICT pool, GLOBAL const float* RESTRICT rows, GLOBAL const int* RESTRICT slots) {
  /* one element of one new row: pool[slots[n], r] = rows[n, r] */
  INDEX i = GLOBAL_ID;
  if (i >= (INDEX)COUNT * ROW) return;
  INDEX slot = slots[i / ROW];
  if (slot >= 0 && slot < SLOTS) pool[slot * ROW + i % ROW] = rows[i];
}
""", "tg_pool_gather": r"""
KERNEL void tg_pool_gather(GLOBAL float* RESTRICT out, GLOBAL const float* RESTRICT pool, GLOBAL const int* RESTRICT index,
                           INDEX attended) {
  /* one work-group per (cache position j, row b) of the attended prefix: out[j, b, :] = pool[index[b, j], :] */
  INDEX jb = GROUP_ID, j = jb / BATCH, b = jb % BATCH;
  INDEX slot = index[b * WIDTH + j];
  int valid = slot >= 0 && slot < SLOTS;
  for (INDEX r = LOCAL_ID; r < ROW; r += LOCAL_SIZE) out[jb * ROW + r] = valid ? pool[slot * ROW + r] : 0.0f;
}
"""}
_POOL_MACROS = {
  "CUDA": {"KERNEL": 'extern "C" __global__', "GLOBAL": "", "RESTRICT": "__restrict__", "INDEX": "long long",
           "GLOBAL_ID": "((long long)blockIdx.x * blockDim.x + threadIdx.x)", "GROUP_ID": "((long long)blockIdx.x)",
           "LOCAL_ID": "threadIdx.x", "LOCAL_SIZE": "blockDim.x"},
  "OPENCL": {"KERNEL": "__kernel", "GLOBAL": "__global", "RESTRICT": "restrict", "INDEX": "long",
             "GLOBAL_ID": "((long)get_global_id(0))", "GROUP_ID": "((long)get_group_id(0))",
             "LOCAL_ID": "get_local_id(0)", "LOCAL_SIZE": "get_local_size(0)"},
}
WRITE_LOCAL = 256


class PoolKernels:
  """The pool write and gather as device programs of one backend, compiled per shape on first use."""
  def __init__(self, device: str):
    self.device, self.language = device, device.partition(":")[0]
    self._programs: dict[tuple, object] = {}

  def _program(self, name: str, sizes: dict[str, int], launch):
    from teenygrad.device import Device
    from teenygrad.engine.realize import CompiledKernel
    key = (name, tuple(sorted(sizes.items())))
    if key not in self._programs:
      defines = {**_POOL_MACROS[self.language], **{k: str(v) for k, v in sizes.items()}}
      src = "".join(f"#define {k} {v}\n" for k, v in defines.items()) + _POOL_SOURCES[name]
      backend = Device[self.device]
      program = backend.program(name, backend.compiler.compile_cached(src), launch)
      variables = [v.name for v in launch.variables]
      self._programs[key] = CompiledKernel(name, program, [], variables, src, sizes.get("COUNT", 1) * sizes["ROW"], False)
    return self._programs[key]

  def write(self, pool, rows, slots, count: int, row: int, pool_slots: int) -> None:
    from teenygrad.engine.realize import ExecItem, launch
    from teenygrad.renderer.gpu import LaunchDims
    dims = LaunchDims(-(-count * row // WRITE_LOCAL), WRITE_LOCAL, ())
    kernel = self._program("tg_pool_write", {"COUNT": count, "ROW": row, "SLOTS": pool_slots}, dims)
    launch(ExecItem(kernel, [pool, rows, slots], (), self.device, assign=True))

  def gather(self, out, pool, index, batch: int, width: int, row: int, pool_slots: int, length: BoundVariable) -> None:
    from teenygrad.engine.realize import ExecItem, launch
    from teenygrad.renderer.gpu import LaunchDims
    attended, value = length.unbind()
    dims = LaunchDims(attended * batch, min(row, 256), (attended,))
    kernel = self._program("tg_pool_gather", {"BATCH": batch, "WIDTH": width, "ROW": row, "SLOTS": pool_slots}, dims)
    launch(ExecItem(kernel, [out, pool, index], (value,), self.device, width * batch * row))


_pool_kernels: dict[str, PoolKernels | None] = {}


def _device_kernels(device: str, dtype) -> PoolKernels | None:
  """The pool kernels for a device whose language has them (float32 pools), else None: the host path. The first
  use on a device compiles both kernels; if its compiler rejects them, the server keeps working through the host
  (with a warning saying why) rather than failing every step."""
  if device.partition(":")[0] not in _POOL_MACROS or dtype != dtypes.float32: return None
  if device not in _pool_kernels:
    kernels = PoolKernels(device)
    try:
      from teenygrad.ir.symbolic import Variable
      from teenygrad.renderer.gpu import LaunchDims
      kernels._program("tg_pool_write", {"COUNT": 1, "ROW": 1, "SLOTS": 1}, LaunchDims(1, WRITE_LOCAL, ()))
      probe = Variable("attended", 1, 1)
      kernels._program("tg_pool_gather", {"BATCH": 1, "WIDTH": 1, "ROW": 1, "SLOTS": 1}, LaunchDims(probe, 1, (probe,)))
    except Exception as e:
      warnings.warn(f"KV pool kernels failed on {device} ({type(e).__name__}: {e}); the pool goes through the host")
      kernels = None
    _pool_kernels[device] = kernels
  return _pool_kernels[device]


def pool_write(pool: Tensor, new: Tensor, slots: Tensor) -> Tensor:
  new = new.cast(pool.dtype).contiguous()
  op = PoolWrite(tuple(pool.shape), new.shape[0])
  return Tensor(LazyBuffer.custom(op, (pool.lazydata, new.lazydata, slots.lazydata), pool.shape, pool.dtype))


def pool_gather(pool: Tensor, index: Tensor, length: BoundVariable | None = None) -> Tensor:
  B, L = index.shape
  op = PoolGather(tuple(pool.shape), (B, L), length)
  return Tensor(LazyBuffer.custom(op, (pool.lazydata, index.lazydata), (L, B, pool.shape[1], pool.shape[2]), dtypes.float32))


# ---- blocks: allocation, refcounts, shared prefixes ----

class BlockManager:
  """Hands out blocks of the pool. Full blocks of prompt tokens are registered under a hash of all tokens up to
  their end; a later prompt with the same prefix takes them instead of recomputing. Blocks nobody holds stay
  cached (least recently used first to go) until the space is needed.

  Past the shared full blocks, a prompt can still start like a cached block: every block a prefill wrote prompt
  tokens into is recorded (`record`: the hash of the blocks before it and the tokens it holds, full or not), and
  `lookup_partial` finds the one sharing the most leading tokens with the prompt's next block. Its keys and values
  are copied into the new sequence's own block (`PagedStep.copy_block`), since both will write past the shared
  tokens: two prompts that differ from their 31st token on (bench/serve.py's) then compute 8 tokens, not 23."""
  def __init__(self, num_blocks: int, block_size: int):
    if num_blocks < 2: raise ValueError(f"the KV pool needs at least 2 blocks, got {num_blocks}")
    self.num_blocks, self.block_size = num_blocks, block_size
    self.free = list(range(num_blocks - 1, NULL_BLOCK, -1))   # block 0 is the null block
    self.refs = [0] * num_blocks
    self.hash_of: dict[int, bytes] = {}
    self.by_hash: dict[bytes, int] = {}
    self.contents: dict[int, tuple[bytes, tuple[int, ...]]] = {}   # block -> (hash of the blocks before it, its prompt tokens)
    self.children: dict[bytes, dict[int, None]] = {}               # that hash -> the blocks recorded under it
    self.evictable: OrderedDict[int, None] = OrderedDict()   # cached blocks nobody holds
    self.prefix_hits = 0   # blocks reused

  @property
  def available(self) -> int: return len(self.free) + len(self.evictable)

  @property
  def used(self) -> int: return self.num_blocks - 1 - self.available

  def chain_hashes(self, tokens: list[int], blocks: int) -> list[bytes]:
    out, h = [], b""
    for i in range(blocks):
      h = hashlib.sha1(h + np.asarray(tokens[i * self.block_size:(i + 1) * self.block_size], dtype=np.int64).tobytes()).digest()
      out.append(h)
    return out

  def lookup_prefix(self, tokens: list[int]) -> list[int]:
    """Cached blocks holding a prefix of tokens (never the last token: its logits must be computed)."""
    found = []
    for h in self.chain_hashes(tokens, (len(tokens) - 1) // self.block_size):
      block = self.by_hash.get(h)
      if block is None: break
      found.append(block)
    for block in found: self._hold(block)
    self.prefix_hits += len(found)
    return found

  def lookup_partial(self, tokens: list[int], full_blocks: int) -> tuple[int, int] | None:
    """(block, count): the recorded block after the first full_blocks blocks of tokens whose first `count` tokens
    are the most of the next block's (at least 1, never the last token), or None."""
    bs = self.block_size
    parent = self.chain_hashes(tokens, full_blocks)[-1] if full_blocks else b""
    wanted = tokens[full_blocks * bs:min(len(tokens) - 1, (full_blocks + 1) * bs)]
    best, best_count = None, 0
    for block in self.children.get(parent, ()):
      held = self.contents[block][1]
      count = 0
      for a, b in zip(held, wanted):
        if a != b: break
        count += 1
      if count > best_count: best, best_count = block, count
    return (best, best_count) if best is not None else None

  def record(self, block: int, parent: bytes, tokens: list[int]) -> None:
    """Block holds the keys/values of these prompt tokens from its start, after the blocks hashed `parent`."""
    self._forget_contents(block)
    self.contents[block] = (parent, tuple(tokens))
    self.children.setdefault(parent, {})[block] = None

  def _forget_contents(self, block: int) -> None:
    entry = self.contents.pop(block, None)
    if entry is not None:
      siblings = self.children[entry[0]]
      del siblings[block]
      if not siblings: del self.children[entry[0]]

  def _hold(self, block: int) -> None:
    if self.refs[block] == 0: self.evictable.pop(block, None)
    self.refs[block] += 1

  def allocate(self) -> int:
    if self.free: block = self.free.pop()
    elif self.evictable:
      block, _ = self.evictable.popitem(last=False)
      if block in self.hash_of: del self.by_hash[self.hash_of.pop(block)]
    else: raise MemoryError("KV cache full")
    self._forget_contents(block)   # it is about to be written
    self.refs[block] = 1
    return block

  def register(self, block: int, h: bytes) -> None:
    """Block now holds the prompt prefix hashed h: later prompts may share it."""
    if h in self.by_hash or block in self.hash_of: return
    self.by_hash[h], self.hash_of[block] = block, h

  def release(self, blocks: list[int]) -> None:
    for block in blocks:
      self.refs[block] -= 1
      if self.refs[block] == 0:
        if block in self.hash_of or block in self.contents: self.evictable[block] = None
        else: self.free.append(block)


# ---- the batched step ----

@dataclass
class StepInputs:
  """Host arrays for one step of B rows of T tokens (padding rows: token 0, slots -1, index null, mask all hidden)."""
  tokens: np.ndarray         # (B, T) int32
  positions: np.ndarray      # (B, T) int32: RoPE position of each token
  slots: np.ndarray          # (B*T,) int32: pool slot for each new key/value, -1 to skip
  gather_index: np.ndarray   # (B, L) int32: pool slot of each cache position of each row
  mask: np.ndarray           # (B, T, L) float32: 0 where token t of row b sees cache position j
  select: np.ndarray         # (B, T, 1) float32: 1 at the token whose logits are wanted
  lengths: np.ndarray        # (B,) int32: cache positions each row holds after the step (0: a padding row)
  length: int                # longest row: the attended length
  rows: list = field(default_factory=list)   # fill_decode's (block table, end) per row: what the next fill keeps or resets
  prefill: bool = False      # prompt tokens: attention through primitives even for T == 1 (see PagedStep.run)


class StepResult:
  """What a step computed, still on the device: read only what the sampler needs. Greedy rows need just their
  argmax (B int32 instead of B x vocab floats over the bus, and no host argmax per row); other rows the logits."""
  def __init__(self, logits: Tensor, greedy: Tensor):
    self._logits, self._greedy = logits, greedy
    self._logits_host: np.ndarray | None = None
    self._greedy_host: np.ndarray | None = None

  def logits(self) -> np.ndarray:
    """(B, vocab) float32."""
    if self._logits_host is None: self._logits_host = self._logits.numpy()
    return self._logits_host

  def greedy(self) -> np.ndarray:
    """(B,) int32: each row's argmax (the first, as np.argmax)."""
    if self._greedy_host is None: self._greedy_host = self._greedy.numpy()
    return self._greedy_host


class PagedStep:
  """Batched forward passes of a Transformer over a paged KV cache.

  Args:
    model: the Transformer (its weights and helpers are used as they are).
    num_blocks, block_size: the pool's size.
    max_len: the longest sequence (prompt plus generated tokens).
  """
  def __init__(self, model: Transformer, num_blocks: int, block_size: int, max_len: int):
    c = model.config
    self.model, self.block_size = model, block_size
    self.max_len = min(max_len, c.max_seq_len)
    self.max_len = -(-self.max_len // block_size) * block_size
    shape = (num_blocks * block_size, c.n_kv_heads, c.head_dim)
    self.keys = [Tensor.zeros(*shape, device=model.device).contiguous().realize() for _ in range(c.n_layers)]
    self.values = [Tensor.zeros(*shape, device=model.device).contiguous().realize() for _ in range(c.n_layers)]
    self.blocks = BlockManager(num_blocks, block_size)
    self._jitted: dict[tuple[int, int, bool], object] = {}   # (B, T, fused attention allowed) -> its JIT
    self._copy_jit = None
    self._host_pools: list[np.ndarray] | None = None
    # decode steps read the pool in one kernel per layer where the device has it (serve/paged_attention.py)
    self.fused_attention = True
    self._reads_mask: dict[tuple[int, int, bool], bool] = {}   # jit key -> whether its forward reads the mask (set as it traces)
    self._unread: dict[tuple, Tensor] = {}                # device tensors passed for inputs a step does not read
    self._decode_inputs: dict[int, StepInputs] = {}       # B -> the decode step's host inputs, kept from step to step

  @property
  def nbytes(self) -> int: return sum(t.numel() * t.element_size() for t in self.keys + self.values)

  def forward(self, tokens: Tensor, positions: Tensor, slots: Tensor, gather_index: Tensor, mask: Tensor, select: Tensor,
              lengths: Tensor, length: BoundVariable, fused: bool = True) -> Tensor:
    """Logits (B, vocab) of the selected token of each row. fused=False keeps attention on the primitive path even
    where the device has the decode kernel."""
    m, c, w = self.model, self.model.config, self.model.weights
    B, T = tokens.shape
    h = m.embed(tokens)                                                             # (B, T, dim)
    cos = embedding_rows(m.rope_cos, positions).reshape(B, 1, T, c.head_dim // 2)   # each token its own position
    sin = embedding_rows(m.rope_sin, positions).reshape(B, 1, T, c.head_dim // 2)
    visible = Tensor(mask.lazydata.shrink(((0, B), (0, T), (0, length)))).reshape(B, 1, 1, T, length)
    for i in range(c.n_layers):
      # each norm folded into the projection that reads it where the backend's matvec can (llm/fused_linear.py), as
      # the generator's step does; otherwise (more than 64 rows, the CPU) linear runs rms_norm first
      q, k, v = m.project(i, h, "attn_qkv", norm=w[f"blk.{i}.attn_norm.weight"])
      q = q.reshape(B, T, c.n_heads, c.head_dim)
      k, v = k.reshape(B, T, c.n_kv_heads, c.head_dim), v.reshape(B, T, c.n_kv_heads, c.head_dim)
      q, k = q.transpose(1, 2), k.transpose(1, 2)                                   # (B, heads, T, D)
      if c.qk_norm:
        q = rms_norm(q, w[f"blk.{i}.attn_q_norm.weight"], c.norm_eps)
        k = rms_norm(k, w[f"blk.{i}.attn_k_norm.weight"], c.norm_eps)
      q, k = apply_rope(q, cos, sin, c.rope_interleaved), apply_rope(k, cos, sin, c.rope_interleaved)
      k = k.transpose(1, 2).reshape(B * T, c.n_kv_heads, c.head_dim)
      keys_pool = pool_write(self.keys[i], k, slots)
      values_pool = pool_write(self.values[i], v.reshape(B * T, c.n_kv_heads, c.head_dim), slots)
      attn = paged_attention(q, keys_pool, values_pool, gather_index, lengths) if self.fused_attention and fused else None
      self._reads_mask[(B, T, fused)] = attn is None
      if attn is None: attn = self._attention(q, keys_pool, values_pool, gather_index, visible, length)
      attn = attn.reshape(B, c.n_heads, T, c.head_dim).transpose(1, 2).reshape(B, T, c.n_heads * c.head_dim)
      h = linear(attn, w[f"blk.{i}.attn_output.weight"], residual=h)
      h = m.feed_forward(i, h, residual=h, norm=w[f"blk.{i}.ffn_norm.weight"])
    last = kernel_output((h * select).sum(1)) if T > 1 else h.reshape(B, c.dim)    # (B, dim)
    logits = linear(last, m.output, norm=w["output_norm.weight"], eps=c.norm_eps).float()
    return logits, greedy_tokens(logits).reshape(B)                                 # (B, vocab), (B,)

  def _attention(self, q: Tensor, keys_pool: Tensor, values_pool: Tensor, gather_index: Tensor, visible: Tensor,
                 length: BoundVariable) -> Tensor:
    """Attention through primitives over the gathered caches: (B, KVH, group, T, D) (the reference of paged_attention,
    and what prefill steps and devices without the kernel run)."""
    c = self.model.config
    B, _, T, _ = q.shape
    group = c.n_heads // c.n_kv_heads
    keys = pool_gather(keys_pool, gather_index, length)                           # (L, B, KVH, D)
    values = pool_gather(values_pool, gather_index, length)
    window = ((0, length), (0, B), (0, c.n_kv_heads), (0, c.head_dim))
    keys = Tensor(keys.lazydata.shrink(window)).permute(1, 2, 0, 3)               # (B, KVH, S, D)
    values = Tensor(values.lazydata.shrink(window)).permute(1, 2, 0, 3)
    S = keys.shape[2]
    qg = q.reshape(B, c.n_kv_heads, group, T, 1, c.head_dim)
    scores = (qg * keys.reshape(B, c.n_kv_heads, 1, 1, S, c.head_dim)).sum(-1) * (1.0 / math.sqrt(c.head_dim))   # (B, KVH, G, T, S)
    scores = kernel_output(scores + visible)
    exp = (scores - kernel_output(scores.amax(-1, keepdim=True))).exp()
    probs = kernel_output(exp / kernel_output(exp.sum(-1, keepdim=True)))
    return kernel_output((probs.reshape(B, c.n_kv_heads, group, T, S, 1) * values.reshape(B, c.n_kv_heads, 1, 1, S, c.head_dim)).sum(-2))

  def run(self, inputs: StepInputs) -> StepResult:
    """Logits and greedy tokens for a step, through the JIT capture of its (B, T).

    A prefill step of one token per row keeps the prefill's attention (primitives) instead of the decode kernel, whose
    online softmax rounds differently: a prompt's last token then gets the same bits whether it is read alone (the
    rest of the prompt came from the prefix cache) or in a chunk with the tokens before it."""
    B, T = inputs.tokens.shape
    key = (B, T, not (inputs.prefill and T == 1))
    if key not in self._jitted:
      from teenygrad.engine.jit import jit
      self._jitted[key] = jit(self.forward if key[2] else functools.partial(self.forward, fused=False))
    device = self.model.device
    def put(a): return Tensor(np.ascontiguousarray(a), device=device)
    def unread(name, a):   # an input this step's forward never reads (a decode step's mask and select): not copied each step
      if (key, name) not in self._unread: self._unread[(key, name)] = put(a).realize()
      return self._unread[(key, name)]
    length = BoundVariable("attended", 1, self.max_len, attended_length(inputs.length, self.max_len))
    mask = put(inputs.mask) if self._reads_mask.get(key, True) else unread("mask", inputs.mask)
    select = put(inputs.select) if T > 1 else unread("select", inputs.select)
    logits, greedy = self._jitted[key](put(inputs.tokens), put(inputs.positions), put(inputs.slots), put(inputs.gather_index),
                                       mask, select, put(inputs.lengths), length)
    return StepResult(logits, greedy)

  def copy_block(self, src: int, dst: int) -> None:
    """Every layer's keys and values of block src, copied into block dst (a prompt prefix shared inside a block: see
    BlockManager). The whole block is copied; dst's owner overwrites the positions past the shared tokens before it
    attends to them."""
    bs = self.block_size
    if dst == NULL_BLOCK: raise ValueError("the null block is never written")
    if self.keys[0].device == "CPU":
      if self._host_pools is None:   # the pools' buffers, written in place by every step, seen as (blocks, block's floats)
        self._host_pools = [_host(pool.lazydata.base.realized, (self.blocks.num_blocks, -1)) for pool in self.keys + self.values]
      for host in self._host_pools: host[dst] = host[src]
      return
    if self._copy_jit is None:
      from teenygrad.engine.jit import jit
      self._copy_jit = jit(self._copy_pools)
    index = Tensor((np.arange(bs, dtype=np.int32) + src * bs).reshape(1, bs), device=self.model.device)
    slots = Tensor(np.arange(bs, dtype=np.int32) + dst * bs, device=self.model.device)
    self._copy_jit(index, slots, BoundVariable("attended", 1, bs, bs))

  def _copy_pools(self, index: Tensor, slots: Tensor, length: BoundVariable) -> list[Tensor]:
    """copy_block on a device: pool[slots] = pool[index] for every pool, through the pool's own gather and write."""
    outs = []
    for pool in self.keys + self.values:
      rows = pool_gather(pool, index, length).reshape(self.block_size, *pool.shape[1:])   # (bs, KVH, D)
      outs.append(pool_write(pool, rows, slots))
    return outs

  def empty_inputs(self, B: int, T: int, prefill: bool = False) -> StepInputs:
    L = self.max_len
    return StepInputs(tokens=np.zeros((B, T), np.int32), positions=np.zeros((B, T), np.int32), slots=np.full(B * T, -1, np.int32),
                      gather_index=np.full((B, L), NULL_BLOCK * self.block_size, np.int32), mask=np.full((B, T, L), MASKED, np.float32),
                      select=np.zeros((B, T, 1), np.float32), lengths=np.zeros(B, np.int32), length=1, prefill=prefill)

  def decode_inputs(self, B: int) -> StepInputs:
    """Inputs for a decode step of B rows, one set per B kept from step to step: fill_decode then rewrites only what
    changed since the last step (a row that goes on with the same sequence gains one cache position) instead of the
    whole (B, max_len) arrays."""
    if B not in self._decode_inputs: self._decode_inputs[B] = self.empty_inputs(B, 1)
    return self._decode_inputs[B]

  def fill_decode(self, inputs: StepInputs, tokens: list[int], starts: list[int], block_tables: list[list[int]]) -> None:
    """Rows 0..n-1 each run one token (tokens[r] at position starts[r]) and the rest are padding: what fill_row does
    row by row, as whole-array numpy, so a step of 64 rows costs about what one row does (the scheduler thread does
    this between GPU steps). On inputs filled before (decode_inputs), a row whose block table is the same list as
    last time and whose start is last time's end only gains that column; other rows are reset and filled whole."""
    n, bs = len(tokens), self.block_size
    B, T = inputs.tokens.shape
    if T != 1: raise ValueError("fill_decode fills steps of one token per row")
    reads_mask = self._reads_mask.get((B, T, True), True)
    starts_array = np.asarray(starts, dtype=np.int32)
    ends = starts_array + 1
    previous = inputs.rows
    going_on = [r for r in range(min(n, len(previous))) if previous[r][0] is block_tables[r] and previous[r][1] == starts[r]]
    fresh = [r for r in range(n) if r >= len(previous) or previous[r][0] is not block_tables[r] or previous[r][1] != starts[r]]
    stale = [r for r in range(len(previous)) if r >= n or previous[r][0] is not block_tables[r] or previous[r][1] != starts[r]]
    if stale:   # back to empty where the last fill wrote
      width = max(previous[r][1] for r in stale)
      inputs.gather_index[stale, :width] = NULL_BLOCK * bs
      inputs.mask[stale, 0, :width] = MASKED
    if n < len(previous):
      inputs.tokens[n:], inputs.positions[n:], inputs.slots[n:], inputs.select[n:], inputs.lengths[n:] = 0, 0, -1, 0.0, 0
    slot = np.fromiter((table[s // bs] for table, s in zip(block_tables, starts)), dtype=np.int32, count=n) * bs + starts_array % bs
    if going_on:
      inputs.gather_index[going_on, starts_array[going_on]] = slot[going_on]
      if reads_mask: inputs.mask[going_on, 0, starts_array[going_on]] = 0.0
    if fresh:
      self._fill_columns(inputs, fresh, [block_tables[r] for r in fresh], ends[fresh], reads_mask)
    inputs.tokens[:n, 0] = tokens
    inputs.positions[:n, 0] = starts_array
    inputs.slots[:n] = slot
    inputs.select[:n, 0, 0] = 1.0
    inputs.lengths[:n] = ends
    inputs.length = int(ends.max())
    inputs.rows = list(zip(block_tables, ends.tolist()))

  def _fill_columns(self, inputs: StepInputs, rows: list[int], block_tables: list[list[int]], ends: np.ndarray, reads_mask: bool) -> None:
    """The gather index (and mask) of each of rows over its first ends[i] cache positions, the block tables put end to
    end so there is no Python loop over rows: row i's block j is flat[offsets[i] + j]."""
    bs, n = self.block_size, len(rows)
    width = int(ends.max())
    counts = np.fromiter(map(len, block_tables), dtype=np.int64, count=n)
    if counts.min() < 1: raise ValueError("a decode row has no blocks")
    flat = np.fromiter(itertools.chain.from_iterable(block_tables), dtype=np.int32, count=int(counts.sum()))
    offsets = np.cumsum(counts) - counts
    columns = np.arange(width, dtype=np.int32)
    visible = columns[None, :] < ends[:, None]                            # (n, width)
    block = np.minimum(columns[None, :] // bs, counts[:, None] - 1)       # columns past a row's blocks are not visible
    slots = flat[offsets[:, None] + block] * bs + columns % bs            # (n, width): pool slot of every cache position
    inputs.gather_index[rows, :width] = np.where(visible, slots, NULL_BLOCK * bs)
    if reads_mask: inputs.mask[rows, 0, :width] = np.where(visible, 0.0, MASKED)

  def fill_row(self, inputs: StepInputs, row: int, tokens: list[int], start: int, block_table: list[int]) -> None:
    """Row `row` runs tokens at positions [start, start+len(tokens)); its blocks cover them."""
    n, bs = len(tokens), self.block_size
    end = start + n
    positions = np.arange(start, end, dtype=np.int32)
    table = np.asarray(block_table, dtype=np.int32)
    inputs.tokens[row, :n] = tokens
    inputs.positions[row, :n] = positions
    T = inputs.tokens.shape[1]
    inputs.slots[row * T:row * T + n] = table[positions // bs] * bs + positions % bs
    every = np.arange(end, dtype=np.int32)
    inputs.gather_index[row, :end] = table[every // bs] * bs + every % bs
    inputs.mask[row, :n, :end] = np.where(every[None, :] <= positions[:, None], 0.0, MASKED)
    inputs.select[row, n - 1, 0] = 1.0
    inputs.lengths[row] = end
    inputs.length = max(inputs.length, end)
