"""A hand-written compute shader in SPIR-V: typed helpers over the module builder (renderer/spirv_module.py) for
kernels written directly rather than lowered from a loop program (nn/quant_vulkan.py's quantized matvec, the decode
attention of llm/attention_vulkan.py).

Values are result ids; integers are u32 unless named otherwise. Loops and branches are structured (each names its
merge block), loop counters are OpPhi, accumulators Function variables. `finish` gives the module with its launch
metadata in the renderer's kernel format, so device/vulkan.py runs it as it runs a rendered kernel.
"""
from __future__ import annotations

import base64
import json
from collections.abc import Callable

from teenygrad.renderer.spirv import CHUNK_BYTES, MAX_GROUPS, SPIRV_TAG
from teenygrad.renderer.spirv_module import SpirvModule, StructuredBlocks

LOOP_UNROLL = 1     # SPIR-V's LoopControl Unroll


class StorageBuffer:
  """A storage buffer binding: its variable, element type and, for one bigger than a binding's range, how many
  CHUNK_BYTES views it is bound as (an array of blocks, picked by the element index's high bits)."""
  def __init__(self, var: int, element: int, chunks: int, per_chunk: int):
    self.var, self.element, self.chunks, self.per_chunk = var, element, chunks, per_chunk


class ComputeShader(StructuredBlocks):
  """A compute shader under construction, of `local_size` invocations per work-group; buffers past
  `max_binding_range` bytes are bound in CHUNK_BYTES views."""
  def __init__(self, max_binding_range: int, local_size: int):
    self.m = m = SpirvModule()
    m.capability("Shader")
    self.max_binding_range, self.local_size = max_binding_range, local_size
    self.u32, self.i32, self.f32, self.bool = m.t_int(32, False), m.t_int(32, True), m.t_float(32), m.t_bool()
    self.vec4 = m.t_vector(self.f32, 4)
    self.bindings: list[int] = []   # descriptors per binding (the launch metadata)
    self.entry = m.new_id()
    self.label(self.entry)

  # ---- values ----
  def u(self, value: int) -> int: return self.m.const_int(value, 32, False)
  def i(self, value: int) -> int: return self.m.const_int(value, 32, True)
  def f(self, value: float) -> int: return self.m.const_float(value, 32)
  def op(self, name: str, result_type: int, *args: int) -> int: return self.m.emit_value(name, result_type, *args)
  def add(self, a: int, b: int) -> int: return self.op("IAdd", self.u32, a, b)
  def mul(self, a: int, b: int) -> int: return self.op("IMul", self.u32, a, b)
  def shr(self, a: int, bits: int) -> int: return self.op("ShiftRightLogical", self.u32, a, self.u(bits))
  def bits(self, a: int, offset: int, count: int) -> int: return self.op("BitwiseAnd", self.u32, self.shr(a, offset), self.u((1 << count) - 1))
  def umin(self, a: int, b: int) -> int: return self.m.glsl(self.u32, "UMin", a, b)
  def to_float(self, value: int, signed: bool = False) -> int:
    return self.op("ConvertSToF" if signed else "ConvertUToF", self.f32, value)

  def exact(self, name: str, a: int, b: int) -> int:
    """A float op the driver may not fuse with its neighbours (the reference rounds each one)."""
    rid = self.op(name, self.f32, a, b)
    self.m.decorate(rid, "NoContraction")
    return rid

  def half(self, word: int) -> int:
    """The fp16 in the low 16 bits of a word, as float32."""
    pair = self.m.glsl(self.m.t_vector(self.f32, 2), "UnpackHalf2x16", word)
    return self.op("CompositeExtract", self.f32, pair, 0)

  def vec4_of(self, *components: int) -> int: return self.op("CompositeConstruct", self.vec4, *components)
  def dot(self, a: int, b: int) -> int: return self.op("Dot", self.f32, a, b)

  def builtin(self, name: str) -> int:
    if name in ("WorkgroupId", "NumWorkgroups", "LocalInvocationId"):
      vec3 = self.m.t_vector(self.u32, 3)
      return self.op("CompositeExtract", self.u32, self.op("Load", vec3, self.m.builtin(name, vec3)), 0)
    self.m.capability("GroupNonUniform")
    return self.op("Load", self.u32, self.m.builtin(name, self.u32))

  # ---- buffers ----
  def buffer(self, name: str, element: int, stride: int, nbytes: int, writable: bool) -> StorageBuffer:
    """The next binding: a runtime array of `element` (stride bytes each) over a buffer of nbytes."""
    m = self.m
    chunks = -(-nbytes // CHUNK_BYTES) if nbytes > self.max_binding_range else 1
    block = m.t_struct([m.t_runtime_array(element, stride)], [0], tag=f"storage{element}")
    if chunks > 1: m.capability("StorageBufferArrayDynamicIndexing")
    var = m.global_variable("StorageBuffer", m.t_array(block, chunks) if chunks > 1 else block)
    m.decorate(var, "DescriptorSet", 0)
    m.decorate(var, "Binding", len(self.bindings))
    if not writable: m.decorate(var, "NonWritable")
    m.name(var, name)
    self.bindings.append(chunks)
    return StorageBuffer(var, element, chunks, CHUNK_BYTES // stride)

  def _pointer(self, buf: StorageBuffer, index: int) -> int:
    ptr = self.m.t_pointer("StorageBuffer", buf.element)
    if buf.chunks == 1: return self.op("AccessChain", ptr, buf.var, self.i(0), index)
    shift = buf.per_chunk.bit_length() - 1   # CHUNK_BYTES / stride is a power of two
    chunk, within = self.shr(index, shift), self.op("BitwiseAnd", self.u32, index, self.u(buf.per_chunk - 1))
    return self.op("AccessChain", ptr, buf.var, chunk, self.i(0), within)

  def load(self, buf: StorageBuffer, index: int) -> int: return self.op("Load", buf.element, self._pointer(buf, index))
  def store(self, buf: StorageBuffer, index: int, value: int) -> None: self.m.emit("Store", self._pointer(buf, index), value)

  # ---- control flow (structured: every loop and branch names its merge block) ----
  def loop(self, start: int, bound: int, step: int, body: Callable[[int], None], unroll: bool = False) -> None:
    """for (i = start; i < bound; i += step) body(i), unsigned, the counter an OpPhi; `unroll` asks the driver to
    unroll it (a hint: the trip count is known to it once it fixes the subgroup size)."""
    m = self.m
    header, body_block, cont, merge, counter, nxt = (m.new_id() for _ in range(6))
    before = self.block
    m.emit("Branch", header)
    self.label(header)
    m.emit("Phi", self.u32, counter, start, before, nxt, cont)
    running = self.op("ULessThan", self.bool, counter, bound)
    m.emit("LoopMerge", merge, cont, LOOP_UNROLL if unroll else 0)   # must come right before the branch
    m.emit("BranchConditional", running, body_block, merge)
    self.label(body_block)
    body(counter)
    m.emit("Branch", cont)
    self.label(cont)
    m.emit_value("IAdd", self.u32, counter, step, result=nxt)
    m.emit("Branch", header)
    self.label(merge)

  def variable(self, initial: int, value_type: int | None = None) -> int:
    """A Function variable (an accumulator; drivers keep it in a register), float32 unless `value_type` says."""
    var = self.m.function_variable(self.f32 if value_type is None else value_type)
    self.m.emit("Store", var, initial)
    return var

  def finish(self, name: str, groups: int) -> str:
    """The module and its launch metadata in the renderer's kernel format (one JSON line, then base64)."""
    self.m.emit("Return")
    binary = self.m.finish(name, (self.local_size, 1, 1), self.entry)
    meta = {"name": name, "local_size": [self.local_size, 1, 1], "groups": max(1, min(MAX_GROUPS, groups)), "bindings": self.bindings,
            "chunk_bytes": CHUNK_BYTES, "variables": [], "tag": SPIRV_TAG}
    return json.dumps(meta) + "\n" + base64.b64encode(binary).decode()


__all__ = ["ComputeShader", "LOOP_UNROLL", "StorageBuffer"]
