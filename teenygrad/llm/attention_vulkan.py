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
  exp = lambda x: s.m.glsl(s.f32, "Exp", x)   # noqa: E731

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
      dot = s.dot(query[0], s.load(keys, row))
      for i in range(1, quads): dot = s.op("FAdd", s.f32, dot, s.dot(query[i], s.load(keys, s.add(row, s.u(i)))))
      score = s.op("FMul", s.f32, dot, scale)
      if mask_buf is not None: score = s.op("FAdd", s.f32, score, s.load(mask_buf, s.add(s.mul(b, s.u(length)), key)))
      old = s.op("Load", s.f32, best)
      grown = s.m.glsl(s.f32, "FMax", old, score)
      rescale = exp(s.op("FSub", s.f32, old, grown))   # exp(-inf) = 0 on the first key
      weight = exp(s.op("FSub", s.f32, score, grown))
      s.m.emit("Store", total, s.op("FAdd", s.f32, s.op("FMul", s.f32, s.op("Load", s.f32, total), rescale), weight))
      for i, var in enumerate(acc):
        value = s.load(values, s.add(row, s.u(i)))
        kept = s.op("VectorTimesScalar", s.vec4, s.op("Load", s.vec4, var), rescale)
        s.m.emit("Store", var, s.op("FAdd", s.vec4, kept, s.op("VectorTimesScalar", s.vec4, value, weight)))
      s.m.emit("Store", best, grown)
    s.loop(lane, count, size, one_key)

    # merge the lanes' softmaxes: each is rescaled to the subgroup's max (a lane without keys weighs nothing)
    subgroup_scope = s.u(SCOPE["Subgroup"])
    mine = s.op("Load", s.f32, best)
    top = s.op("GroupNonUniformFMax", s.f32, subgroup_scope, 0, mine)
    share = s.op("Select", s.f32, s.op("FOrdEqual", s.bool, mine, minus_inf), s.f(0.0), exp(s.op("FSub", s.f32, mine, top)))
    weights = s.op("GroupNonUniformFAdd", s.f32, subgroup_scope, 0, s.op("FMul", s.f32, s.op("Load", s.f32, total), share))
    norm = s.op("FDiv", s.f32, s.f(1.0), weights)
    sums = [s.op("GroupNonUniformFAdd", s.vec4, subgroup_scope, 0, s.op("VectorTimesScalar", s.vec4, s.op("Load", s.vec4, var), share))
            for var in acc]

    def store() -> None:
      for i, total_i in enumerate(sums):
        s.store(out, s.add(s.mul(item, s.u(quads)), s.u(i)), s.op("VectorTimesScalar", s.vec4, total_i, norm))
    s.if_then(s.op("IEqual", s.bool, lane, s.u(0)), store)
  s.loop(first_item, s.u(batch * h), item_step, one_head)
  per_workgroup = max(1, LOCAL_SIZE // max(subgroup_size, 1))
  return s.finish(attention_name(d, h, kvh, length, batch, mask), -(-batch * h // per_workgroup))


class VulkanDecodeAttention:
  """Launches the kernel for one model shape (recorded: a JIT replay is the dispatch itself), shaped like
  llm/attention_cuda.py's CUDADecodeAttention."""
  def __init__(self, device: str):
    self.device = device
    self.backend = Device[device]
    self._programs: dict[tuple, object] = {}
    self.sources: dict[tuple, str] = {}   # the kernel text of each program (tests read the modules)

  def __call__(self, out: Buffer, q: Buffer, keys: Buffer, values: Buffer, start: Buffer, mask: Buffer | None,
               batch: int, h: int, kvh: int, length: int, d: int) -> None:
    from teenygrad.engine.realize import CompiledKernel, ExecItem, launch
    key = (d, h, kvh, length, batch, mask is not None)
    if key not in self._programs:
      dev = self.backend
      src = render_attention(d, h, kvh, length, batch, mask is not None, dev.subgroup_size, dev.max_storage_range)
      self.sources[key] = src
      self._programs[key] = dev.program(attention_name(*key), dev.compiler.compile_cached(src))
    kernel = CompiledKernel("decode_attention", self._programs[key], [], [], "", batch * h * length * d * 2, False)
    buffers = [out, q, keys, values, start] + ([mask] if mask is not None else [])
    launch(ExecItem(kernel, buffers, (), self.device))


_kernels: dict[str, VulkanDecodeAttention] = {}


def vulkan_decode_attention(device: str) -> VulkanDecodeAttention | None:
  """The launcher of a device, or None where it has no subgroup arithmetic (the caller runs the reference)."""
  if not Device[device].subgroup_arithmetic: return None
  if device not in _kernels: _kernels[device] = VulkanDecodeAttention(device)
  return _kernels[device]


__all__ = ["VulkanDecodeAttention", "attention_name", "render_attention", "vulkan_decode_attention"]
