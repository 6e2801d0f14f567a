"""Decode attention on Vulkan in one dispatch: scores, softmax and the weighted sum of values for one query row per head.

    decode_attention_<D>_<H>_<KVH>_<L>_b<B>[_mask](out, q, keys, values, start[, mask])

The same algorithm as llm/attention_cuda.py, written as SPIR-V with renderer/spirv_shader.py's ComputeShader: the
primitive path (llm/model.py) takes five dispatches per layer for this, each behind a barrier. One subgroup per
(sequence, query head): lane j takes keys j, j + SubgroupSize, ... of [0, start] (the position comes from its device
buffer, so a JIT replay attends over the new length), keeps an online softmax (a running max, sum and weighted values,
rescaled when the max grows: Milakov & Gimelshein 2018), then the lanes merge theirs through subgroup max and sums.
Keys and values are read as vec4 rows; a head's query sits in registers. Grouped-query heads share their kv head.
As in nn/quant_vulkan.py, lanes and strides come from the subgroup built-ins, so any subgroup size the driver picks is
right; a device without subgroup arithmetic runs the reference.

Sizes are compiled in (a pipeline per model shape and cache length); the cache is float32 (B, KVH, L, D) and `mask` an
optional additive (B, L) float32 (the left padding of batched prompts; finite, so no lane sees only -inf).
"""
from __future__ import annotations

import math

from teenygrad.device import Buffer, Device
from teenygrad.renderer.spirv_module import SCOPE
from teenygrad.renderer.spirv_shader import ComputeShader

LOCAL_SIZE = 128   # 4 subgroups of 32 on NVIDIA


def attention_name(d: int, h: int, kvh: int, length: int, batch: int, mask: bool) -> str:
  return f"decode_attention_{d}_{h}_{kvh}_{length}_b{batch}{'_mask' if mask else ''}"


def render_attention(d: int, h: int, kvh: int, length: int, batch: int, mask: bool, subgroup_size: int, max_binding_range: int) -> str:
  """Decode attention for head_dim d, h query heads over kvh kv heads, a cache of `length` rows, `batch` sequences;
  `subgroup_size` (the device's report) only sizes the dispatch."""
  assert d % 4 == 0 and h % kvh == 0
  s = ComputeShader(max_binding_range, LOCAL_SIZE)
  s.m.capability("GroupNonUniformArithmetic")
  quads, group = d // 4, h // kvh
  out = s.buffer("out", s.vec4, 16, batch * h * d * 4, writable=True)
  q = s.buffer("q", s.vec4, 16, batch * h * d * 4, writable=False)
  keys = s.buffer("keys", s.vec4, 16, batch * kvh * length * d * 4, writable=False)
  values = s.buffer("values", s.vec4, 16, batch * kvh * length * d * 4, writable=False)
  start = s.buffer("start", s.i32, 4, 4, writable=False)
  mask_buf = s.buffer("mask", s.f32, 4, batch * length * 4, writable=False) if mask else None
  scale = s.f(float(1.0 / math.sqrt(d)))   # the reference's scale, rounded to float32 as the reference's constant is
  minus_inf = s.f(-math.inf)
  # keys [0, start]: this step's row is written already; a position out of range attends over what exists
  position = s.op("Bitcast", s.u32, s.m.glsl(s.i32, "SMax", s.op("IAdd", s.i32, s.load(start, s.u(0)), s.i(1)), s.i(0)))
  count = s.umin(position, s.u(length))
  lane, size = s.builtin("SubgroupLocalInvocationId"), s.builtin("SubgroupSize")
  subgroup, subgroups = s.builtin("SubgroupId"), s.builtin("NumSubgroups")
  first_item = s.add(s.mul(s.builtin("WorkgroupId"), subgroups), subgroup)
  item_step = s.mul(s.builtin("NumWorkgroups"), subgroups)

  def one_head(item: int) -> None:
    """Query head `item` (sequence item / h) over its kv head's rows, lane by lane."""
    b, head = s.op("UDiv", s.u32, item, s.u(h)), s.op("UMod", s.u32, item, s.u(h))
    kv_rows = s.mul(s.add(s.mul(b, s.u(kvh)), s.op("UDiv", s.u32, head, s.u(group))), s.u(length))   # first cache row
    query = [s.load(q, s.add(s.mul(item, s.u(quads)), s.u(i))) for i in range(quads)]
    zero4 = s.vec4_of(*[s.f(0.0)] * 4)
    acc = [s.variable(zero4, s.vec4) for _ in range(quads)]
    best, total = s.variable(minus_inf), s.variable(s.f(0.0))

    def one_key(key: int) -> None:
      row = s.mul(s.add(kv_rows, key), s.u(quads))
      score = _score(s, query, [s.load(keys, s.add(row, s.u(i))) for i in range(quads)], scale)
      if mask_buf is not None: score = s.op("FAdd", s.f32, score, s.load(mask_buf, s.add(s.mul(b, s.u(length)), key)))
      _softmax_step(s, best, total, acc, score, [s.load(values, s.add(row, s.u(i))) for i in range(quads)])
    s.loop(lane, count, size, one_key)
    _, weights, sums = _merge_lanes(s, best, total, acc)
    norm = s.op("FDiv", s.f32, s.f(1.0), weights)

    def store() -> None:
      for i, total_i in enumerate(sums):
        s.store(out, s.add(s.mul(item, s.u(quads)), s.u(i)), s.op("VectorTimesScalar", s.vec4, total_i, norm))
    s.if_then(s.op("IEqual", s.bool, lane, s.u(0)), store)
  s.loop(first_item, s.u(batch * h), item_step, one_head)
  per_workgroup = max(1, LOCAL_SIZE // max(subgroup_size, 1))
  return s.finish(attention_name(d, h, kvh, length, batch, mask), -(-batch * h // per_workgroup))


def _score(s: ComputeShader, query: list[int], key: list[int], scale: int) -> int:
  """q . k times scale, for a query and key row as vec4s."""
  dot = s.dot(query[0], key[0])
  for q4, k4 in zip(query[1:], key[1:]): dot = s.op("FAdd", s.f32, dot, s.dot(q4, k4))
  return s.op("FMul", s.f32, dot, scale)


def _softmax_step(s: ComputeShader, best: int, total: int, acc: list[int], score: int, value: list[int]) -> None:
  """One key of a lane's online softmax (Milakov & Gimelshein 2018): the running max `best`, sum `total` and weighted
  values `acc` (Function variables) take the key's score and value row (vec4s)."""
  old = s.op("Load", s.f32, best)
  grown = s.m.glsl(s.f32, "FMax", old, score)
  rescale = s.m.glsl(s.f32, "Exp", s.op("FSub", s.f32, old, grown))   # exp(-inf) = 0 on the first key
  weight = s.m.glsl(s.f32, "Exp", s.op("FSub", s.f32, score, grown))
  s.m.emit("Store", total, s.op("FAdd", s.f32, s.op("FMul", s.f32, s.op("Load", s.f32, total), rescale), weight))
  for var, v4 in zip(acc, value):
    kept = s.op("VectorTimesScalar", s.vec4, s.op("Load", s.vec4, var), rescale)
    s.m.emit("Store", var, s.op("FAdd", s.vec4, kept, s.op("VectorTimesScalar", s.vec4, v4, weight)))
  s.m.emit("Store", best, grown)


def _merge_lanes(s: ComputeShader, best: int, total: int, acc: list[int]) -> tuple[int, int, list[int]]:
  """The subgroup's softmax from its lanes': (max, sum of weights, weighted value sums), each lane's rescaled to the
  subgroup's max (a lane without keys weighs nothing). Every lane gets them."""
  scope, minus_inf = s.u(SCOPE["Subgroup"]), s.f(-math.inf)
  mine = s.op("Load", s.f32, best)
  top = s.op("GroupNonUniformFMax", s.f32, scope, 0, mine)
  share = s.op("Select", s.f32, s.op("FOrdEqual", s.bool, mine, minus_inf), s.f(0.0), s.m.glsl(s.f32, "Exp", s.op("FSub", s.f32, mine, top)))
  weights = s.op("GroupNonUniformFAdd", s.f32, scope, 0, s.op("FMul", s.f32, s.op("Load", s.f32, total), share))
  sums = [s.op("GroupNonUniformFAdd", s.vec4, scope, 0, s.op("VectorTimesScalar", s.vec4, s.op("Load", s.vec4, var), share)) for var in acc]
  return top, weights, sums


def rope_attention_name(d: int, h: int, kvh: int, length: int, batch: int, interleaved: bool, mask: bool) -> str:
  return f"rope_attention_{d}_{h}_{kvh}_{length}_b{batch}{'_pairs' if interleaved else '_halves'}{'_mask' if mask else ''}"


def render_rope_attention(d: int, h: int, kvh: int, length: int, rope_rows: int, batch: int, interleaved: bool, mask: bool,
                          subgroup_size: int, max_binding_range: int) -> str:
  """Decode attention straight from the fused q/k/v projection's rows qkv (batch, (h + 2 kvh) d), as llm/attention_cuda.py's
  rope kernel: every lane rotates the query and the new key itself (cos/sin (rope_rows, d / 2) tables; `interleaved`
  rotates pairs (2i, 2i + 1), else halves (i, i + d / 2)), the lanes score the cache's rows [0, start), and the new row
  joins the merged softmax from registers (another subgroup may not have written it yet); one subgroup per kv head
  writes it into row `start` of keys and values. A position outside the cache (or the tables) writes nothing and
  attends over the cache's rows [0, min(start + 1, L))."""
  assert d % 4 == 0 and h % kvh == 0
  s = ComputeShader(max_binding_range, LOCAL_SIZE)
  s.m.capability("GroupNonUniformArithmetic")
  quads, group, half, width = d // 4, h // kvh, d // 2, (h + 2 * kvh) * d
  out = s.buffer("out", s.vec4, 16, batch * h * d * 4, writable=True)
  qkv = s.buffer("qkv", s.f32, 4, batch * width * 4, writable=False)
  cos, sin = (s.buffer(name, s.f32, 4, rope_rows * half * 4, writable=False) for name in ("cos", "sin"))
  start = s.buffer("start", s.i32, 4, 4, writable=False)
  keys = s.buffer("keys", s.vec4, 16, batch * kvh * length * d * 4, writable=True)
  values = s.buffer("values", s.vec4, 16, batch * kvh * length * d * 4, writable=True)
  mask_buf = s.buffer("mask", s.f32, 4, batch * length * 4, writable=False) if mask else None
  scale = s.f(float(1.0 / math.sqrt(d)))   # the reference's scale, rounded to float32 as the reference's constant is
  position = s.load(start, s.u(0))
  # a negative position is a huge unsigned one
  stored = s.op("ULessThan", s.bool, s.op("Bitcast", s.u32, position), s.u(min(length, rope_rows)))
  s0 = s.op("Bitcast", s.u32, s.m.glsl(s.i32, "SMax", position, s.i(0)))
  # rows read from the cache: [0, start) when the new row joins from registers, else [0, min(start + 1, L))
  cached = s.op("Select", s.u32, stored, s0, s.umin(s.op("Bitcast", s.u32, s.m.glsl(s.i32, "SMax", s.op("IAdd", s.i32, position, s.i(1)), s.i(0))),
                                                     s.u(length)))
  angle_row = s.mul(s.op("Select", s.u32, stored, s0, s.u(0)), s.u(half))
  cos_row = [s.load(cos, s.add(angle_row, s.u(p))) for p in range(half)]
  sin_row = [s.load(sin, s.add(angle_row, s.u(p))) for p in range(half)]
  lane, size = s.builtin("SubgroupLocalInvocationId"), s.builtin("SubgroupSize")
  subgroup, subgroups = s.builtin("SubgroupId"), s.builtin("NumSubgroups")
  first_item = s.add(s.mul(s.builtin("WorkgroupId"), subgroups), subgroup)
  item_step = s.mul(s.builtin("NumWorkgroups"), subgroups)

  def rotated(row_start: int) -> list[int]:
    """A head's row of qkv from element row_start, rotated by this position's angles, as vec4s."""
    src = [s.load(qkv, s.add(row_start, s.u(i))) for i in range(d)]
    elements = []
    for i in range(d):
      pair, partner, first = (i // 2, i ^ 1, i % 2 == 0) if interleaved else (i % half, (i + half) % d, i < half)
      own_c, other_s = s.op("FMul", s.f32, src[i], cos_row[pair]), s.op("FMul", s.f32, src[partner], sin_row[pair])
      elements.append(s.op("FSub", s.f32, own_c, other_s) if first else s.op("FAdd", s.f32, other_s, own_c))
    return [s.vec4_of(*elements[4 * i:4 * i + 4]) for i in range(quads)]

  def one_head(item: int) -> None:
    b, head = s.op("UDiv", s.u32, item, s.u(h)), s.op("UMod", s.u32, item, s.u(h))
    kv = s.op("UDiv", s.u32, head, s.u(group))
    kv_rows = s.mul(s.add(s.mul(b, s.u(kvh)), kv), s.u(length))   # the kv head's first cache row
    row = s.mul(b, s.u(width))
    query = rotated(s.add(row, s.mul(head, s.u(d))))
    new_key = rotated(s.add(row, s.mul(s.add(s.u(h), kv), s.u(d))))
    v_start = s.add(row, s.mul(s.add(s.u(h + kvh), kv), s.u(d)))
    new_value = [s.vec4_of(*(s.load(qkv, s.add(v_start, s.u(4 * i + j))) for j in range(4))) for i in range(quads)]
    writer = s.op("LogicalAnd", s.bool, stored, s.op("LogicalAnd", s.bool, s.op("IEqual", s.bool, lane, s.u(0)),
                                                      s.op("IEqual", s.bool, s.op("UMod", s.u32, head, s.u(group)), s.u(0))))

    def write_row() -> None:
      at = s.mul(s.add(kv_rows, s0), s.u(quads))
      for i in range(quads):
        s.store(keys, s.add(at, s.u(i)), new_key[i])
        s.store(values, s.add(at, s.u(i)), new_value[i])
    s.if_then(writer, write_row)
    mask_row = s.mul(b, s.u(length))
    acc = [s.variable(s.vec4_of(*[s.f(0.0)] * 4), s.vec4) for _ in range(quads)]
    best, total = s.variable(s.f(-math.inf)), s.variable(s.f(0.0))

    def one_key(key: int) -> None:
      at = s.mul(s.add(kv_rows, key), s.u(quads))
      score = _score(s, query, [s.load(keys, s.add(at, s.u(i))) for i in range(quads)], scale)
      if mask_buf is not None: score = s.op("FAdd", s.f32, score, s.load(mask_buf, s.add(mask_row, key)))
      _softmax_step(s, best, total, acc, score, [s.load(values, s.add(at, s.u(i))) for i in range(quads)])
    s.loop(lane, cached, size, one_key)
    top, weights, sums = _merge_lanes(s, best, total, acc)
    # the new row joins the merged softmax as one more key (weight 0 where it isn't stored)
    score = _score(s, query, new_key, scale)
    if mask_buf is not None: score = s.op("FAdd", s.f32, score, s.load(mask_buf, s.add(mask_row, s.umin(s0, s.u(length - 1)))))
    grown = s.m.glsl(s.f32, "FMax", top, score)
    kept = s.op("Select", s.f32, s.op("FOrdEqual", s.bool, top, s.f(-math.inf)), s.f(0.0), s.m.glsl(s.f32, "Exp", s.op("FSub", s.f32, top, grown)))
    new_weight = s.op("Select", s.f32, stored, s.m.glsl(s.f32, "Exp", s.op("FSub", s.f32, score, grown)), s.f(0.0))
    kept = s.op("Select", s.f32, stored, kept, s.f(1.0))
    norm = s.op("FDiv", s.f32, s.f(1.0), s.op("FAdd", s.f32, s.op("FMul", s.f32, weights, kept), new_weight))

    def store() -> None:
      for i, total_i in enumerate(sums):
        mixed = s.op("FAdd", s.vec4, s.op("VectorTimesScalar", s.vec4, total_i, kept), s.op("VectorTimesScalar", s.vec4, new_value[i], new_weight))
        s.store(out, s.add(s.mul(item, s.u(quads)), s.u(i)), s.op("VectorTimesScalar", s.vec4, mixed, norm))
    s.if_then(s.op("IEqual", s.bool, lane, s.u(0)), store)
  s.loop(first_item, s.u(batch * h), item_step, one_head)
  per_workgroup = max(1, LOCAL_SIZE // max(subgroup_size, 1))
  return s.finish(rope_attention_name(d, h, kvh, length, batch, interleaved, mask), -(-batch * h // per_workgroup))


class _Launcher:
  """The programs of one kernel family on one device, compiled per shape; each launch is recorded (a JIT replay is
  the dispatch itself)."""
  def __init__(self, device: str):
    self.device = device
    self.backend = Device[device]
    self._programs: dict[tuple, object] = {}
    self.sources: dict[tuple, str] = {}   # the kernel text of each program (tests read the modules)

  def _launch(self, key: tuple, name, render, label: str, work: int, buffers: list) -> None:
    """Launch the program for `key` (built on first use from render(subgroup size, max storage range) and name())."""
    from teenygrad.engine.realize import CompiledKernel, ExecItem, launch
    if key not in self._programs:
      dev = self.backend
      src = render(dev.subgroup_size, dev.max_storage_range)
      self.sources[key] = src
      self._programs[key] = dev.program(name(), dev.compiler.compile_cached(src))
    kernel = CompiledKernel(label, self._programs[key], [], [], "", work, False)
    launch(ExecItem(kernel, [b for b in buffers if b is not None], (), self.device))


class VulkanRopeAttention(_Launcher):
  """Launches the RoPE + cache write + attention kernel for one model shape, shaped like llm/attention_cuda.py's
  CUDARopeAttention."""
  def __call__(self, out: Buffer, qkv: Buffer, cos: Buffer, sin: Buffer, start: Buffer, keys: Buffer, values: Buffer,
               mask: Buffer | None, b: int, h: int, kvh: int, d: int, length: int, rope_rows: int, interleaved: bool) -> None:
    masked = mask is not None
    self._launch((d, h, kvh, length, rope_rows, b, interleaved, masked),
                 lambda: rope_attention_name(d, h, kvh, length, b, interleaved, masked),
                 lambda size, limit: render_rope_attention(d, h, kvh, length, rope_rows, b, interleaved, masked, size, limit),
                 "rope_attention", b * h * length * d * 2, [out, qkv, cos, sin, start, keys, values, mask])


class VulkanDecodeAttention(_Launcher):
  """Launches the decode-attention kernel for one model shape, shaped like llm/attention_cuda.py's
  CUDADecodeAttention."""
  def __call__(self, out: Buffer, q: Buffer, keys: Buffer, values: Buffer, start: Buffer, mask: Buffer | None,
               batch: int, h: int, kvh: int, length: int, d: int) -> None:
    key = (d, h, kvh, length, batch, mask is not None)
    self._launch(key, lambda: attention_name(*key), lambda size, limit: render_attention(*key, size, limit),
                 "decode_attention", batch * h * length * d * 2, [out, q, keys, values, start, mask])


_rope_kernels: dict[str, VulkanRopeAttention] = {}
_kernels: dict[str, VulkanDecodeAttention] = {}


def _launcher(cache: dict, cls, device: str):
  """The device's launcher of class cls, or None where it has no subgroup arithmetic (the caller runs the reference)."""
  if not Device[device].subgroup_arithmetic: return None
  if device not in cache: cache[device] = cls(device)
  return cache[device]


def vulkan_rope_attention(device: str) -> VulkanRopeAttention | None: return _launcher(_rope_kernels, VulkanRopeAttention, device)


def vulkan_decode_attention(device: str) -> VulkanDecodeAttention | None: return _launcher(_kernels, VulkanDecodeAttention, device)


__all__ = ["VulkanDecodeAttention", "VulkanRopeAttention", "attention_name", "render_attention", "render_rope_attention",
           "rope_attention_name", "vulkan_decode_attention", "vulkan_rope_attention"]
