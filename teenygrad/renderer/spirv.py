"""Loop program to a SPIR-V compute shader, emitted directly as binary (no GLSL, no shader compiler).

The lowering hooks return small expression trees (tuples) instead of source text; `render_kernel` walks the loop
program and turns them into instructions with structured control flow (OpLoopMerge / OpSelectionMerge), loop
counters as OpPhi and accumulators as Function variables.

Parallel mapping:
- "grid" kernels: the outermost output loop is spread over every invocation (a grid-stride loop, so the dispatch
  size never depends on symbolic sizes); everything below it runs serially in each invocation.
- "row" kernels (a long reduce right under the outermost loop, e.g. a softmax row or a full sum): one work-group
  per outer iteration; its reduce loops are split over the work-group's lanes and combined through subgroup
  arithmetic (where the type allows) and Workgroup memory with barriers; inner output loops are split over lanes.
  Reduces in the prologue (outside every loop) are always combined that way.

Values are computed in 32 or 64 bits (small integers sign/zero-extended and wrapped on every definition, half
and bfloat16 in fp32), as the C renderer does, so every backend gives the same answers. Integer division by zero
gives 0 and float max propagates NaN, like the CPU.
"""
from __future__ import annotations

import base64
import json

from teenygrad.codegen.lower import BufferArg, Loop, LoopProgram, Stmt
from teenygrad.dtype import DType, dtypes
from teenygrad.ir.ops import Ops
from teenygrad.ir.symbolic import And, FloorDiv, LessThan, Mod, Mul, Not, Sum, Variable, vmax
from teenygrad.renderer.spirv_math import F64Math
from teenygrad.renderer.spirv_module import SCOPE, SEMANTICS, SpirvModule, StructuredBlocks

# the kind a value of each dtype is computed in
KIND = {dtypes.bool: "bool", dtypes.int8: "i32", dtypes.int16: "i32", dtypes.int32: "i32", dtypes.uint8: "u32",
        dtypes.uint16: "u32", dtypes.uint32: "u32", dtypes.int64: "i64", dtypes.float16: "f32", dtypes.bfloat16: "f32",
        dtypes.float32: "f32", dtypes.float64: "f64"}
GRID_GROUP, ROW_GROUP, FULL_REDUCE_GROUP = 64, 64, 256   # work-group sizes (the spec guarantees 128 invocations)
MAX_GROUPS = 65535                  # maxComputeWorkGroupCount[0] guaranteed by the spec
CHUNK_BYTES = 1 << 26               # a buffer bigger than one binding's range is bound as an array of 64 MiB views
SPIRV_TAG = "spirv-v2"   # v2: symbolic sizes come from a storage buffer, not push constants


def kind_of(dtype: DType) -> str: return KIND[dtype]


def prod_vmax(sizes) -> int:
  out = 1
  for size in sizes: out *= vmax(size)
  return out


class SpirvRenderer:
  """Renderer hooks returning expression trees, and the module emitter that walks a LoopProgram."""
  def __init__(self, max_binding_range: int = 1 << 27, subgroups: bool = True, float64: bool = True, device_name: str = "",
               index_bits: int | None = None, max_buffers: int | None = None, narrow_storage: bool = True,
               int64: bool = True, max_group: int = 256):
    self.max_binding_range, self.subgroups, self.float64, self.device_name = max_binding_range, subgroups, float64, device_name
    self.int64 = int64
    self.max_group = max_group   # maxComputeWorkGroupInvocations (the spec guarantees 128)
    self.narrow_storage = narrow_storage   # 8/16-bit storage buffers; without them narrow types are packed in words
    self.index_bits = index_bits   # None: 32-bit index math where every buffer fits, else 64; tests force 64
    self.max_buffers = max_buffers   # storage buffers one shader may bind (the lowerer splits kernels past it)
    self.check_bounds = False

  # ---- hooks (called by the lowerer) ----
  def compute_type(self, dtype: DType) -> str: return kind_of(dtype)
  def render_const(self, value, dtype: DType): return ("const", value, dtype)
  def render_index(self, expr): return ("index", expr)
  def render_name(self, name: str, dtype: DType): return ("name", name, dtype)
  def render_define(self, dtype: DType, name: str, expr, mutable: bool = False): return ("define", dtype, name, expr, mutable)
  def render_load(self, buf: BufferArg, index, valid): return ("load", buf, index, valid)
  def render_store(self, buf: BufferArg, index, value): return ("store", buf, index, value)
  def render_alu(self, op: Ops, args: list, dtype: DType): return ("alu", op, tuple(args), dtype)
  def render_accumulate(self, op: Ops, acc, value, dtype: DType): return ("accumulate", op, acc, value, dtype)
  def render_cast(self, value, src: DType, dst: DType, bitcast: bool): return ("cast", value, src, dst, bitcast)

  def render_kernel(self, program: LoopProgram) -> str:
    """The module plus its launch metadata, as text: one JSON line, then the module in base64."""
    emitter = KernelEmitter(program, self)
    binary = emitter.emit()
    meta = {"name": program.name, "local_size": emitter.local_size, "groups": emitter.groups,
            "bindings": [emitter.chunks[b.name] for b in program.buffers], "chunk_bytes": CHUNK_BYTES,
            "variables": [emitter.index_kind] * len(program.variables), "tag": SPIRV_TAG}
    return json.dumps(meta) + "\n" + base64.b64encode(binary).decode()


def parse_kernel(src: str) -> tuple[dict, bytes]:
  header, _, body = src.partition("\n")
  return json.loads(header), base64.b64decode(body)


class KernelEmitter(StructuredBlocks):
  """Emits one LoopProgram; `values` maps defined names to (id, kind) or, for accumulators, ("var", id, kind)."""
  def __init__(self, program: LoopProgram, renderer: SpirvRenderer):
    self.p, self.r = program, renderer
    self.m = SpirvModule()
    self.m.capability("Shader")
    self.values: dict[str, tuple] = {}
    self.index_names: set[str] = set()
    self.loop_ids: dict[str, tuple[int, str]] = {}
    self.variables: dict[str, tuple[int, str]] = {}   # symbolic size name -> its loaded value
    self.block = 0
    self.f64 = F64Math(self)
    # 32-bit index math unless some buffer or size could pass 2**30 elements (sums of index terms need headroom)
    biggest = max([vmax(b.size) for b in program.buffers] + [vmax(v.vmax) for v in program.variables] + [1])
    self.index_kind = f"i{renderer.index_bits}" if renderer.index_bits else "i64" if biggest >= (1 << 30) else "i32"
    # a buffer past one binding's range is bound as an array of CHUNK_BYTES views
    nbytes = {b.name: vmax(b.size) * b.dtype.itemsize for b in program.buffers}
    self.chunks = {name: -(-n // CHUNK_BYTES) if n > renderer.max_binding_range else 1 for name, n in nbytes.items()}
    root = program.root_loops[0] if program.root_loops else None
    self.mode = "row" if root is not None and self._wants_rows(root) else "grid"
    self.local_size = [ROW_GROUP if self.mode == "row" else GRID_GROUP, 1, 1]
    # grid kernels spread the outer loop and the chain of single output loops under it (a transpose's rows and
    # columns) over the invocations as one flat index
    self.grid_chain = self._output_chain(root) if root is not None and self.mode == "grid" else [root] if root is not None else []
    outer = prod_vmax([lp.size for lp in self.grid_chain]) if self.grid_chain else 1
    self.groups = max(1, min(MAX_GROUPS, outer if self.mode == "row" else -(-outer // GRID_GROUP)))
    # a full reduction runs in one work-group (every group would compute the same): make it a wide one
    if root is None and self._has_prologue_reduce(): self.local_size = [min(FULL_REDUCE_GROUP, renderer.max_group), 1, 1]
    self.shared: dict[str, int] = {}

  @staticmethod
  def _wants_rows(root: Loop) -> bool:
    reduces = [it for _, it in root.items if isinstance(it, Loop) and it.kind == "reduce"]
    biggest = max((vmax(lp.size) for lp in reduces), default=0)
    # a work-group per row while rows alone can't fill the device (matvec, softmax rows); past that, one invocation
    # per output with a serial reduce (a matmul: neighbouring outputs read neighbouring columns)
    return (biggest >= 256 and vmax(root.size) < 65536) or (biggest >= 32 and vmax(root.size) < 8192)

  @staticmethod
  def _output_chain(root: Loop) -> list[Loop]:
    chain = [root]
    while True:
      items = sorted(chain[-1].items, key=lambda it: it[0])
      loops = [it for _, it in items if isinstance(it, Loop)]
      stores = [it for _, it in items if isinstance(it, Stmt) and it.text[0] == "store"]
      if len(loops) != 1 or loops[0].kind != "output" or items[-1][1] is not loops[0] or stores: return chain
      chain.append(loops[0])

  def _has_prologue_reduce(self) -> bool:
    return any(isinstance(it, Loop) and it.kind == "reduce" for _, it in self.p.prologue)

  # ---- types ----
  def type_of(self, kind: str) -> int:
    m = self.m
    if kind == "bool": return m.t_bool()
    if kind in ("i64", "u64"):
      if not self.r.int64: raise TypeError(f"int64 is not supported on {self.r.device_name or 'this Vulkan device'} (no shaderInt64)")
      m.capability("Int64")
    if kind == "f64":
      if not self.r.float64: raise TypeError(f"float64 is not supported on {self.r.device_name or 'this Vulkan device'} (no shaderFloat64)")
      m.capability("Float64")
    if kind[0] in "iu": return m.t_int(int(kind[1:]), kind[0] == "i")
    return m.t_float(int(kind[1:]))

  def is_packed(self, dtype: DType) -> bool: return dtype.itemsize < 4 and not self.r.narrow_storage

  def storage_type(self, dtype: DType) -> int:
    """The element type of a buffer of `dtype` (8/16-bit types need the storage capabilities)."""
    m = self.m
    if self.is_packed(dtype): return self.type_of("u32")
    if dtype.itemsize == 1: m.capability("StorageBuffer8BitAccess"); m.extensions.add("SPV_KHR_8bit_storage")
    if dtype.itemsize == 2: m.capability("StorageBuffer16BitAccess"); m.extensions.add("SPV_KHR_16bit_storage")
    if dtype == dtypes.float16: return m.t_float(16)
    if dtype == dtypes.float64: return self.type_of("f64")
    if dtype == dtypes.float32: return m.t_float(32)
    if dtype == dtypes.int64: return self.type_of("i64")
    signed = dtype.signed and dtype not in (dtypes.bool, dtypes.bfloat16)
    return m.t_int(8 * dtype.itemsize, signed)

  def const(self, value, kind: str) -> int:
    if kind == "bool": return self.m.const_bool(bool(value))
    if kind[0] == "f": return self.m.const_float(float(value), int(kind[1:]))
    self.type_of(kind)
    return self.m.const_int(int(value), int(kind[1:]), kind[0] == "i")

  def op(self, name: str, kind: str, *args: int) -> int: return self.m.emit_value(name, self.type_of(kind), *args)

  # ---- value conversions ----
  def convert(self, value: tuple[int, str], kind: str) -> int:
    vid, src = value
    if src == kind: return vid
    if kind == "bool":
      if src[0] == "f": return self.op("FUnordNotEqual", "bool", vid, self.const(0, src))
      return self.op("INotEqual", "bool", vid, self.const(0, src))
    if src == "bool": return self.op("Select", kind, vid, self.const(1, kind), self.const(0, kind))
    if kind[0] == "f":
      if src[0] == "f": return self.op("FConvert", kind, vid)
      return self.op("ConvertSToF" if src[0] == "i" else "ConvertUToF", kind, vid)
    if src[0] == "f":
      if kind == "u32": return self.convert((self.op("ConvertFToS", "i64", vid), "i64"), "u32")   # C converts through long
      return self.op("ConvertFToS", kind, vid)
    src_bits, dst_bits = int(src[1:]), int(kind[1:])
    if src_bits != dst_bits:
      vid = self.op("SConvert" if src[0] == "i" else "UConvert", src[0] + str(dst_bits), vid)
      src = src[0] + str(dst_bits)
    return vid if src == kind else self.op("Bitcast", kind, vid)

  def wrap(self, vid: int, dtype: DType) -> int:
    """A small integer computed in 32 bits, cut back to its width (C's assignment to char/short)."""
    if dtype not in (dtypes.int8, dtypes.int16, dtypes.uint8, dtypes.uint16): return vid
    bits = 8 * dtype.itemsize
    if not dtype.signed: return self.op("BitwiseAnd", "u32", vid, self.const((1 << bits) - 1, "u32"))
    shift = self.const(32 - bits, "i32")
    return self.op("ShiftRightArithmetic", "i32", self.op("ShiftLeftLogical", "i32", vid, shift), shift)

  # ---- expressions ----
  def value(self, node) -> tuple[int, str]:
    tag = node[0]
    if tag == "const":
      _, value, dtype = node
      kind = kind_of(dtype)
      if kind[0] == "f": return self.const(value, kind), kind
      if kind == "bool": return self.const(value, kind), kind
      return self.const(int(value), kind), kind
    if tag == "name":
      entry = self.values[node[1]]
      if entry[0] == "var": return self.m.emit_value("Load", self.type_of(entry[2]), entry[1]), entry[2]
      return entry
    if tag == "index": return self.index(node[1])
    if tag == "load": return self.load(*node[1:])
    if tag == "alu":
      args = [self.value(a) for a in node[2]]
      if node[3] == dtypes.int64 and self.is_index_math(node):
        return self.int_alu(node[1], [self.as_int(a) for a in args], self.index_kind)
      return self.alu(node[1], args, node[3])
    if tag == "cast": return self.cast(self.value(node[1]), *node[2:])
    raise NotImplementedError(f"SPIR-V: no value for {tag}")

  def index(self, expr) -> tuple[int, str]:
    k = self.index_kind
    if isinstance(expr, int): return self.const(expr, k), k
    if isinstance(expr, Variable):
      if expr.name in self.loop_ids: return self.loop_ids[expr.name]
      return self.variables[expr.name]
    if isinstance(expr, Sum):
      acc = self.as_int(self.index(expr.terms[0]))
      for t in expr.terms[1:]: acc = self.op("IAdd", k, acc, self.as_int(self.index(t)))
      return (self.op("IAdd", k, acc, self.const(expr.const, k)) if expr.const else acc), k
    if isinstance(expr, Mul):
      return self.op("IMul", k, self.as_int(self.index(expr.node)), self.as_int(self.index(expr.factor))), k
    if isinstance(expr, FloorDiv):
      a, b = self.as_int(self.index(expr.node)), self.const(expr.divisor, k)
      if expr.node.vmin >= 0: return self.op("SDiv", k, a, b), k
      q, r = self.signed_divrem(a, b, k)   # floor for a divisor > 0: one less where the remainder is negative
      below = self.op("SLessThan", "bool", r, self.const(0, k))
      return self.op("ISub", k, q, self.op("Select", k, below, self.const(1, k), self.const(0, k))), k
    if isinstance(expr, Mod):
      a, b = self.as_int(self.index(expr.node)), self.const(expr.divisor, k)
      if expr.node.vmin >= 0: return self.op("SRem", k, a, b), k
      _, r = self.signed_divrem(a, b, k)
      below = self.op("SLessThan", "bool", r, self.const(0, k))
      return self.op("IAdd", k, r, self.op("Select", k, below, b, self.const(0, k))), k
    if isinstance(expr, LessThan):
      return self.op("SLessThan", "bool", self.as_int(self.index(expr.left)), self.as_int(self.index(expr.right))), "bool"
    if isinstance(expr, And):
      acc = self.convert(self.index(expr.nodes[0]), "bool")
      for n in expr.nodes[1:]: acc = self.op("LogicalAnd", "bool", acc, self.convert(self.index(n), "bool"))
      return acc, "bool"
    if isinstance(expr, Not): return self.op("LogicalNot", "bool", self.convert(self.index(expr.node), "bool")), "bool"
    raise NotImplementedError(f"SPIR-V: no index rendering for {type(expr).__name__}")

  def as_int(self, value: tuple[int, str]) -> int: return self.convert(value, self.index_kind)

  # ---- buffers ----
  def element_pointer(self, buf: BufferArg, index: tuple[int, str]) -> int:
    """Pointer to element `index` of the buffer (to the 32-bit word, for a packed narrow buffer)."""
    var, elem = self.buffer_vars[buf.name]
    k = self.index_kind
    idx = self.as_int(index)
    ptr_type = self.m.t_pointer("StorageBuffer", elem)
    zero = self.const(0, "i32")
    if self.chunks[buf.name] == 1: return self.m.emit_value("AccessChain", ptr_type, var, zero, idx)
    per_chunk = self.const(CHUNK_BYTES // (4 if self.is_packed(buf.dtype) else buf.dtype.itemsize), k)
    chunk, inner = self.op("SDiv", k, idx, per_chunk), self.op("SRem", k, idx, per_chunk)
    return self.m.emit_value("AccessChain", ptr_type, var, chunk, zero, inner)

  def load(self, buf: BufferArg, index, valid) -> tuple[int, str]:
    dtype = buf.dtype
    idx = self.value(index)
    ok = None
    if valid is not None:
      # both sides of a select run: keep a masked-off load inside the buffer
      ok = self.convert(self.value(valid), "bool")
      idx = (self.op("Select", self.index_kind, ok, self.as_int(idx), self.const(0, self.index_kind)), self.index_kind)
    if self.is_packed(dtype): out = self.load_packed(buf, idx)
    else: out = self.widen(self.m.emit_value("Load", self.storage_type(dtype), self.element_pointer(buf, idx)), dtype)
    if ok is not None: out = (self.op("Select", out[1], ok, out[0], self.const(0, out[1])), out[1])
    return out

  # ---- narrow types packed in 32-bit words (devices without 8/16-bit storage buffers) ----
  def _word_and_shift(self, buf: BufferArg, index: tuple[int, str]) -> tuple[int, int]:
    k = self.index_kind
    per_word = self.const(4 // buf.dtype.itemsize, k)
    idx = self.as_int(index)
    word = self.element_pointer(buf, (self.op("SDiv", k, idx, per_word), k))
    lane = self.convert((self.op("SRem", k, idx, per_word), k), "u32")
    return word, self.op("IMul", "u32", lane, self.const(8 * buf.dtype.itemsize, "u32"))

  def load_packed(self, buf: BufferArg, index: tuple[int, str]) -> tuple[int, str]:
    dtype = buf.dtype
    word, shift = self._word_and_shift(buf, index)
    bits = self.op("ShiftRightLogical", "u32", self.m.emit_value("Load", self.type_of("u32"), word), shift)
    bits = self.op("BitwiseAnd", "u32", bits, self.const((1 << (8 * dtype.itemsize)) - 1, "u32"))
    if dtype == dtypes.bool: return self.op("INotEqual", "bool", bits, self.const(0, "u32")), "bool"
    if dtype == dtypes.float16: return self.unpack_half(bits), "f32"
    if dtype == dtypes.bfloat16: return self.op("Bitcast", "f32", self.op("ShiftLeftLogical", "u32", bits, self.const(16, "u32"))), "f32"
    if dtype.signed:
      up = self.const(32 - 8 * dtype.itemsize, "i32")
      return self.op("ShiftRightArithmetic", "i32", self.op("ShiftLeftLogical", "i32", self.op("Bitcast", "i32", bits), up), up), "i32"
    return bits, "u32"

  def store_packed(self, buf: BufferArg, index: tuple[int, str], value: tuple[int, str]) -> None:
    """Neighbouring invocations share a word: clear our lane, then set it, both atomically (they commute)."""
    dtype = buf.dtype
    if dtype == dtypes.bool: bits = self.convert((self.convert(value, "bool"), "bool"), "u32")
    elif dtype == dtypes.float16: bits = self.pack_half(self.convert(value, "f32"))
    elif dtype == dtypes.bfloat16: bits = self.bf16_bits(self.convert(value, "f32"))
    else: bits = self.convert(value, "u32")
    mask = (1 << (8 * dtype.itemsize)) - 1
    bits = self.op("BitwiseAnd", "u32", bits, self.const(mask, "u32"))
    word, shift = self._word_and_shift(buf, index)
    keep = self.op("Not", "u32", self.op("ShiftLeftLogical", "u32", self.const(mask, "u32"), shift))
    scope, relaxed = self.const(SCOPE["Device"], "u32"), self.const(0, "u32")
    self.op("AtomicAnd", "u32", word, scope, relaxed, keep)
    self.op("AtomicOr", "u32", word, scope, relaxed, self.op("ShiftLeftLogical", "u32", bits, shift))

  def pack_half(self, f: int) -> int:
    """fp32 to the bits of the nearest fp16, in the low half of a u32 (GLSL.std.450 PackHalf2x16)."""
    return self.m.glsl(self.type_of("u32"), "PackHalf2x16", self.vec2(f))

  def unpack_half(self, bits: int) -> int:
    pair = self.m.glsl(self.m.t_vector(self.type_of("f32"), 2), "UnpackHalf2x16", bits)
    return self.m.emit_value("CompositeExtract", self.type_of("f32"), pair, 0)

  def widen(self, raw: int, dtype: DType) -> tuple[int, str]:
    kind = kind_of(dtype)
    if dtype == dtypes.bool: return self.op("INotEqual", "bool", self.op("UConvert", "u32", raw), self.const(0, "u32")), "bool"
    if dtype == dtypes.bfloat16:
      wide = self.op("ShiftLeftLogical", "u32", self.op("UConvert", "u32", raw), self.const(16, "u32"))
      return self.op("Bitcast", "f32", wide), "f32"
    if dtype == dtypes.float16: return self.op("FConvert", "f32", raw), "f32"
    if dtype.itemsize < 4: return self.op("SConvert" if dtype.signed else "UConvert", kind, raw), kind
    return raw, kind

  def narrow(self, value: tuple[int, str], dtype: DType) -> int:
    if dtype == dtypes.bool:
      # 8-bit constants would need the Int8 capability: select in 32 bits, then narrow
      wide = self.op("Select", "u32", self.convert(value, "bool"), self.const(1, "u32"), self.const(0, "u32"))
      return self.m.emit_value("UConvert", self.storage_type(dtype), wide)
    if dtype == dtypes.bfloat16: return self.m.emit_value("UConvert", self.storage_type(dtype), self.bf16_bits(self.convert(value, "f32")))
    if dtype == dtypes.float16: return self.m.emit_value("FConvert", self.storage_type(dtype), self.convert(value, "f32"))
    vid = self.convert(value, kind_of(dtype))
    if dtype.itemsize < 4: return self.m.emit_value("SConvert" if dtype.signed else "UConvert", self.storage_type(dtype), vid)
    return vid

  def bf16_bits(self, f: int) -> int:
    """fp32 to bfloat16 bits (in a u32), rounding to nearest even and keeping NaN a NaN, as the C renderer does."""
    u = self.op("Bitcast", "u32", f)
    upper = self.op("ShiftRightLogical", "u32", u, self.const(16, "u32"))
    lsb = self.op("BitwiseAnd", "u32", upper, self.const(1, "u32"))
    rounded = self.op("IAdd", "u32", u, self.op("IAdd", "u32", self.const(0x7FFF, "u32"), lsb))
    rounded = self.op("ShiftRightLogical", "u32", rounded, self.const(16, "u32"))
    nan = self.op("UGreaterThan", "bool", self.op("BitwiseAnd", "u32", u, self.const(0x7FFFFFFF, "u32")), self.const(0x7F800000, "u32"))
    return self.op("Select", "u32", nan, self.op("BitwiseOr", "u32", upper, self.const(64, "u32")), rounded)

  # ---- ALU ----
  def alu(self, op: Ops, args: list[tuple[int, str]], dtype: DType) -> tuple[int, str]:
    if op is Ops.WHERE:
      kind = kind_of(dtype)
      return self.op("Select", kind, self.convert(args[0], "bool"), self.convert(args[1], kind), self.convert(args[2], kind)), kind
    kind = kind_of(dtype)
    ids = [self.convert(a, kind) for a in args]
    if kind == "bool": return self.bool_alu(op, ids), "bool"
    if kind[0] == "f": return self.float_alu(op, ids, kind)
    return self.int_alu(op, ids, kind)

  def bool_alu(self, op: Ops, ids: list[int]) -> int:
    table = {Ops.AND: "LogicalAnd", Ops.MUL: "LogicalAnd", Ops.OR: "LogicalOr", Ops.ADD: "LogicalOr", Ops.MAX: "LogicalOr",
             Ops.XOR: "LogicalNotEqual", Ops.CMPNE: "LogicalNotEqual"}
    if op in table: return self.op(table[op], "bool", *ids)
    if op is Ops.CMPLT: return self.op("LogicalAnd", "bool", self.op("LogicalNot", "bool", ids[0]), ids[1])
    # any other op on bools works on 0/1 integers, then reads back as "nonzero"
    value, _ = self.int_alu(op, [self.convert((i, "bool"), "i32") for i in ids], "i32")
    return self.convert((value, "i32"), "bool")

  def float_alu(self, op: Ops, ids: list[int], kind: str) -> tuple[int, str]:
    t = self.type_of(kind)
    a = ids[0]
    b = ids[1] if len(ids) > 1 else None
    if op in (Ops.EXP2, Ops.LOG2, Ops.SIN):
      if kind == "f64": return self.f64.call(op, a), kind
      return self.m.glsl(t, {Ops.EXP2: "Exp2", Ops.LOG2: "Log2", Ops.SIN: "Sin"}[op], a), kind
    if op is Ops.SQRT: return self.m.glsl(t, "Sqrt", a), kind
    if op is Ops.RECIPROCAL: return self.op("FDiv", kind, self.const(1.0, kind), a), kind
    simple = {Ops.ADD: "FAdd", Ops.MUL: "FMul", Ops.IDIV: "FDiv"}
    if op in simple: return self.op(simple[op], kind, a, b), kind
    if op is Ops.MAX: return self.fmax(a, b, kind), kind
    if op is Ops.CMPLT: return self.op("FOrdLessThan", "bool", a, b), "bool"
    if op is Ops.CMPNE: return self.op("FUnordNotEqual", "bool", a, b), "bool"
    if op is Ops.MOD: return self.op("FRem", kind, a, b), kind
    raise NotImplementedError(f"SPIR-V: no float rendering for {op}")

  def signed_divrem(self, a: int, b: int, kind: str) -> tuple[int, int]:
    """C's truncating quotient and remainder, computed on magnitudes with unsigned ops: drivers disagree on OpSDiv,
    OpSRem and OpSMod with negative operands (NVIDIA's differs from lavapipe's), unsigned division is exact."""
    unsigned, zero = "u" + kind[1:], self.const(0, kind)
    a_neg, b_neg = self.op("SLessThan", "bool", a, zero), self.op("SLessThan", "bool", b, zero)
    def magnitude(v, neg): return self.op("Bitcast", unsigned, self.op("Select", kind, neg, self.op("SNegate", kind, v), v))
    ua, ub = magnitude(a, a_neg), magnitude(b, b_neg)
    q = self.op("Bitcast", kind, self.op("UDiv", unsigned, ua, ub))
    r = self.op("Bitcast", kind, self.op("UMod", unsigned, ua, ub))
    q = self.op("Select", kind, self.op("LogicalNotEqual", "bool", a_neg, b_neg), self.op("SNegate", kind, q), q)
    r = self.op("Select", kind, a_neg, self.op("SNegate", kind, r), r)
    return q, r

  def fmax(self, a: int, b: int, kind: str) -> int:
    """(a != a || a > b) ? a : b: NaN in either argument comes out, as on the CPU."""
    pick_a = self.op("LogicalOr", "bool", self.op("IsNan", "bool", a), self.op("FOrdGreaterThan", "bool", a, b))
    return self.op("Select", kind, pick_a, a, b)

  def int_alu(self, op: Ops, ids: list[int], kind: str) -> tuple[int, str]:
    signed = kind[0] == "i"
    a = ids[0]
    b = ids[1] if len(ids) > 1 else None
    simple = {Ops.ADD: "IAdd", Ops.MUL: "IMul", Ops.AND: "BitwiseAnd", Ops.OR: "BitwiseOr", Ops.XOR: "BitwiseXor",
              Ops.SHL: "ShiftLeftLogical", Ops.SHR: "ShiftRightArithmetic" if signed else "ShiftRightLogical"}
    if op in simple: return self.op(simple[op], kind, a, b), kind
    if op in (Ops.IDIV, Ops.MOD):
      # a zero divisor gives 0 (the CPU's answer) and never reaches the division
      zero = self.op("IEqual", "bool", b, self.const(0, kind))
      safe = self.op("Select", kind, zero, self.const(1, kind), b)
      if signed: result = self.signed_divrem(a, safe, kind)[0 if op is Ops.IDIV else 1]
      else: result = self.op("UDiv" if op is Ops.IDIV else "UMod", kind, a, safe)
      return self.op("Select", kind, zero, self.const(0, kind), result), kind
    if op is Ops.MAX:
      return self.op("Select", kind, self.op("SGreaterThan" if signed else "UGreaterThan", "bool", a, b), a, b), kind
    if op is Ops.CMPLT: return self.op("SLessThan" if signed else "ULessThan", "bool", a, b), "bool"
    if op is Ops.CMPNE: return self.op("INotEqual", "bool", a, b), "bool"
    if op in (Ops.EXP2, Ops.LOG2, Ops.SIN, Ops.SQRT, Ops.RECIPROCAL):
      f, _ = self.float_alu(op, [self.convert((a, kind), "f32")], "f32")
      return self.convert((f, "f32"), kind), kind
    raise NotImplementedError(f"SPIR-V: no integer rendering for {op}")

  def cast(self, value: tuple[int, str], src: DType, dst: DType, bitcast: bool) -> tuple[int, str]:
    if bitcast: return self.bitcast(value, src, dst)
    kind = kind_of(dst)
    if dst == dtypes.float16:
      if self.is_packed(dst): return self.unpack_half(self.pack_half(self.convert(value, "f32"))), "f32"
      half = self.m.emit_value("FConvert", self.storage_type(dtypes.float16), self.convert(value, "f32"))
      return self.op("FConvert", "f32", half), "f32"
    if dst == dtypes.bfloat16:
      bits = self.bf16_bits(self.convert(value, "f32"))
      return self.op("Bitcast", "f32", self.op("ShiftLeftLogical", "u32", bits, self.const(16, "u32"))), "f32"
    return self.convert(value, kind), kind

  def bitcast(self, value: tuple[int, str], src: DType, dst: DType) -> tuple[int, str]:
    """Reinterpret the stored bits: narrow to src's storage form, reinterpret, widen as dst."""
    bits = 8 * src.itemsize
    if src == dtypes.float16: raw_u = self.pack_half(self.convert(value, "f32"))
    elif src == dtypes.bfloat16: raw_u = self.bf16_bits(self.convert(value, "f32"))
    elif src.is_float: raw_u = self.op("Bitcast", "u32" if bits == 32 else "u64", value[0])
    else: raw_u = self.convert(value, "u32" if bits <= 32 else "u64")
    if bits < 32: raw_u = self.op("BitwiseAnd", "u32", raw_u, self.const((1 << bits) - 1, "u32"))
    ukind = "u32" if bits <= 32 else "u64"
    if dst == dtypes.float16: return self.unpack_half(raw_u), "f32"
    if dst == dtypes.bfloat16:
      return self.op("Bitcast", "f32", self.op("ShiftLeftLogical", "u32", raw_u, self.const(16, "u32"))), "f32"
    if dst.is_float: return self.op("Bitcast", kind_of(dst), raw_u), kind_of(dst)
    kind = kind_of(dst)
    if dst.itemsize < 4 and dst.signed:   # sign-extend the narrow bits
      shift = self.const(32 - bits, "i32")
      as_int = self.op("Bitcast", "i32", raw_u)
      return self.op("ShiftRightArithmetic", "i32", self.op("ShiftLeftLogical", "i32", as_int, shift), shift), "i32"
    return self.convert((raw_u, ukind), kind), kind

  def vec2(self, x: int) -> int:
    vec = self.m.t_vector(self.type_of("f32"), 2)
    return self.m.emit_value("CompositeConstruct", vec, x, self.const(0.0, "f32"))

  # ---- statements ----
  def statement(self, stmt: tuple, uniform_guard: int | None) -> None:
    tag = stmt[0]
    if tag == "define":
      _, dtype, name, expr, mutable = stmt
      value = self.value(expr)
      kind = kind_of(dtype)
      if not mutable and self.is_index_math(expr):
        kind = value[1]   # index math staged loop by loop stays in the kernel's index width (32 bits where it fits)
        self.index_names.add(name)
      vid = self.wrap(self.convert(value, kind), dtype)
      if mutable:
        var = self.m.function_variable(self.type_of(kind))
        self.m.emit("Store", var, vid)
        self.values[name] = ("var", var, kind)
      else: self.values[name] = (vid, kind)
    elif tag == "accumulate":
      _, op, acc, value, dtype = stmt
      self.accumulate(op, acc[1], self.value(value), dtype)
    elif tag == "store":
      _, buf, index, value = stmt
      if uniform_guard is not None: self.if_then(uniform_guard, lambda: self.store(buf, index, value))
      else: self.store(buf, index, value)
    else: raise NotImplementedError(f"SPIR-V: no statement {tag}")

  def is_index_math(self, node) -> bool:
    if node[0] == "index": return True
    if node[0] == "name": return node[1] in self.index_names
    return node[0] == "alu" and node[1] in (Ops.ADD, Ops.AND) and all(self.is_index_math(a) for a in node[2])

  def store(self, buf: BufferArg, index, value) -> None:
    if self.is_packed(buf.dtype): return self.store_packed(buf, self.value(index), self.value(value))
    vid = self.narrow(self.value(value), buf.dtype)
    self.m.emit("Store", self.element_pointer(buf, self.value(index)), vid)

  def combine(self, op: Ops, a: int, b: int, dtype: DType) -> int:
    kind = kind_of(dtype)
    if kind == "bool": return self.op("LogicalOr", "bool", a, b)
    if op is Ops.SUM:
      return self.wrap(self.op("FAdd" if kind[0] == "f" else "IAdd", kind, a, b), dtype)
    if kind[0] == "f": return self.fmax(a, b, kind)
    return self.op("Select", kind, self.op("SGreaterThan" if kind[0] == "i" else "UGreaterThan", "bool", a, b), a, b)

  def accumulate(self, op: Ops, acc_name: str, value: tuple[int, str], dtype: DType) -> None:
    _, var, kind = self.values[acc_name]
    current = self.m.emit_value("Load", self.type_of(kind), var)
    self.m.emit("Store", var, self.combine(op, current, self.convert(value, kind), dtype))

  # ---- control flow ----
  def loop(self, name: str, start: int, bound: int, step: int, body) -> None:
    """for (name = start; name < bound; name += step) body(), as a structured loop with an OpPhi counter."""
    k = self.index_kind
    header, body_block, cont, merge = (self.m.new_id() for _ in range(4))
    counter, nxt = self.m.new_id(), self.m.new_id()
    pre = self.block
    self.m.emit("Branch", header)
    self.label(header)
    self.m.emit("Phi", self.type_of(k), counter, start, pre, nxt, cont)
    cond = self.op("SLessThan", "bool", counter, bound)
    self.m.emit("LoopMerge", merge, cont, 0)
    self.m.emit("BranchConditional", cond, body_block, merge)
    self.label(body_block)
    self.loop_ids[name] = (counter, k)
    body()
    self.m.emit("Branch", cont)
    self.label(cont)
    self.m.emit_value("IAdd", self.type_of(k), counter, step, result=nxt)
    self.m.emit("Branch", header)
    self.label(merge)

  def items(self, items: list, region: str, guard: int | None) -> None:
    """region: 'uniform' (every lane of the work-group runs it alike) or 'serial' (one lane's own work)."""
    for _, item in sorted(items, key=lambda it: it[0]):
      if isinstance(item, Stmt): self.statement(item.text, guard)
      elif region == "uniform" and item.kind == "reduce": self.split_reduce(item)
      elif region == "uniform": self.split_output_loop(item)
      else: self.serial_loop(item)

  def serial_loop(self, loop: Loop) -> None:
    self.loop(loop.var.name, self.const(0, self.index_kind), self.as_int(self.index(loop.size)), self.const(1, self.index_kind),
              lambda: self.items(loop.items, "serial", None))

  def split_output_loop(self, loop: Loop) -> None:
    step = self.const(self.local_size[0], self.index_kind)
    self.loop(loop.var.name, self.lane, self.as_int(self.index(loop.size)), step, lambda: self.items(loop.items, "serial", None))

  def split_reduce(self, loop: Loop) -> None:
    """Each lane reduces a strided part of the loop, then the lanes combine: subgroups first where the type and
    op allow, then Workgroup memory. Every lane ends with the whole result in the accumulator."""
    acc, op, dtype = loop.reduce_acc
    step = self.const(self.local_size[0], self.index_kind)
    self.loop(loop.var.name, self.lane, self.as_int(self.index(loop.size)), step, lambda: self.items(loop.items, "serial", None))
    _, var, kind = self.values[acc[1]]
    partial = self.m.emit_value("Load", self.type_of(kind), var)
    slot_kind = "u32" if kind == "bool" else kind
    shared = self.shared_array(slot_kind)
    slot_ptr_type = self.m.t_pointer("Workgroup", self.type_of(slot_kind))
    use_subgroup = self.r.subgroups and (op is Ops.SUM and kind in ("f32", "i32", "u32") or op is Ops.REDUCE_MAX and kind in ("i32", "u32"))
    if use_subgroup:
      self.m.capability("GroupNonUniform"); self.m.capability("GroupNonUniformArithmetic")
      name = {("f32", Ops.SUM): "GroupNonUniformFAdd", ("i32", Ops.SUM): "GroupNonUniformIAdd", ("u32", Ops.SUM): "GroupNonUniformIAdd",
              ("i32", Ops.REDUCE_MAX): "GroupNonUniformSMax", ("u32", Ops.REDUCE_MAX): "GroupNonUniformUMax"}[(kind, op)]
      reduced = self.op(name, kind, self.const(SCOPE["Subgroup"], "u32"), 0, partial)
      sg_lane = self.load_builtin("SubgroupLocalInvocationId")
      sg_id = self.load_builtin("SubgroupId")
      count = self.load_builtin("NumSubgroups")
      leader = self.op("IEqual", "bool", sg_lane, self.const(0, "u32"))
      self.if_then(leader, lambda: self.m.emit("Store", self.m.emit_value("AccessChain", slot_ptr_type, shared, sg_id), reduced))
    else:
      lane_u = self.load_builtin("LocalInvocationIndex")
      self.m.emit("Store", self.m.emit_value("AccessChain", slot_ptr_type, shared, lane_u), self.convert((partial, kind), slot_kind))
      count = self.const(self.local_size[0], "u32")
    self.barrier()
    self.m.emit("Store", var, self.const(0 if op is Ops.SUM else self._identity(op, dtype), kind))
    count_k = self.convert((count, "u32"), self.index_kind)

    def gather() -> None:
      i, _ = self.loop_ids[f"{acc[1]}_slot"]
      slot = self.m.emit_value("Load", self.type_of(slot_kind), self.m.emit_value("AccessChain", slot_ptr_type, shared, i))
      current = self.m.emit_value("Load", self.type_of(kind), var)
      self.m.emit("Store", var, self.combine(op, current, self.convert((slot, slot_kind), kind), dtype))
    self.loop(f"{acc[1]}_slot", self.const(0, self.index_kind), count_k, self.const(1, self.index_kind), gather)
    self.barrier()   # the slots are reused by the next reduce

  @staticmethod
  def _identity(op: Ops, dtype: DType):
    from teenygrad.ir.ops import REDUCE_IDENTITY
    return REDUCE_IDENTITY[op](dtype)

  def shared_array(self, kind: str) -> int:
    if kind not in self.shared:
      array = self.m.t_array(self.type_of(kind), self.local_size[0])
      self.shared[kind] = self.m.global_variable("Workgroup", array)
    return self.shared[kind]

  def barrier(self) -> None:
    scope = self.const(SCOPE["Workgroup"], "u32")
    semantics = self.const(SEMANTICS["AcquireRelease"] | SEMANTICS["WorkgroupMemory"], "u32")
    self.m.emit("ControlBarrier", scope, scope, semantics)

  def load_builtin(self, name: str, component: int | None = None) -> int:
    u32 = self.type_of("u32")
    if name in ("GlobalInvocationId", "WorkgroupId", "NumWorkgroups", "LocalInvocationId"):
      var = self.m.builtin(name, self.m.t_vector(u32, 3))
      vec = self.m.emit_value("Load", self.m.t_vector(u32, 3), var)
      return self.m.emit_value("CompositeExtract", u32, vec, component or 0)
    if name in ("SubgroupLocalInvocationId", "SubgroupId", "NumSubgroups", "SubgroupSize"):
      self.m.capability("GroupNonUniform")
    return self.m.emit_value("Load", u32, self.m.builtin(name, u32))

  def grid_body(self, sizes: list[int]) -> None:
    """Unflatten the grid index into the chain's loop indices, then run each level's statements in order."""
    k = self.index_kind
    flat = self.loop_ids["grid"][0]
    for lp, size in reversed(list(zip(self.grid_chain[1:], sizes[1:]))):
      self.loop_ids[lp.var.name] = (self.op("SRem", k, flat, size), k)
      flat = self.op("SDiv", k, flat, size)
    self.loop_ids[self.grid_chain[0].var.name] = (flat, k)
    for depth, lp in enumerate(self.grid_chain):
      inner = self.grid_chain[depth + 1] if depth + 1 < len(self.grid_chain) else None
      self.items([it for it in lp.items if it[1] is not inner], "serial", None)

  # ---- the kernel ----
  def declare_interface(self) -> None:
    self.buffer_vars: dict[str, tuple[int, int]] = {}
    for binding, buf in enumerate(self.p.buffers):
      elem = self.storage_type(buf.dtype)
      array = self.m.t_runtime_array(elem, 4 if self.is_packed(buf.dtype) else buf.dtype.itemsize)
      block = self.m.t_struct([array], [0], tag=f"buffer{elem}")
      count = self.chunks[buf.name]
      if count > 1: self.m.capability("StorageBufferArrayDynamicIndexing")
      var = self.m.global_variable("StorageBuffer", self.m.t_array(block, count) if count > 1 else block)
      self.m.decorate(var, "DescriptorSet", 0)
      self.m.decorate(var, "Binding", binding)
      self.m.name(var, buf.name)
      self.buffer_vars[buf.name] = (var, elem)
    if self.p.variables:
      # symbolic sizes are read from a small storage buffer bound after the data buffers, not push constants: a
      # recorded command buffer then serves every value, since a replay rewrites the buffer instead of recording again
      k = self.index_kind
      size = 8 if k == "i64" else 4
      block = self.m.t_struct([self.type_of(k)] * len(self.p.variables), [i * size for i in range(len(self.p.variables))], tag="variables")
      self.variables_var = self.m.global_variable("StorageBuffer", block)
      self.m.decorate(self.variables_var, "DescriptorSet", 0)
      self.m.decorate(self.variables_var, "Binding", len(self.p.buffers))
      self.m.decorate(self.variables_var, "NonWritable")
      self.m.name(self.variables_var, "variables")

  def load_variables(self) -> None:
    k = self.index_kind
    ptr = self.m.t_pointer("StorageBuffer", self.type_of(k))
    for i, v in enumerate(self.p.variables):
      chain = self.m.emit_value("AccessChain", ptr, self.variables_var, self.const(i, "i32"))
      self.variables[v.name] = (self.m.emit_value("Load", self.type_of(k), chain), k)

  def emit(self) -> bytes:
    self.declare_interface()
    entry = self.m.new_id()
    self.label(entry)
    self.load_variables()
    k = self.index_kind
    lane_u = self.load_builtin("LocalInvocationId", 0)
    self.lane = self.convert((lane_u, "u32"), k)
    group = self.convert((self.load_builtin("WorkgroupId", 0), "u32"), k)
    groups = self.convert((self.load_builtin("NumWorkgroups", 0), "u32"), k)
    first_lane = self.op("LogicalAnd", "bool", self.op("IEqual", "bool", self.lane, self.const(0, k)),
                         self.op("IEqual", "bool", group, self.const(0, k)))
    # the prologue is the same in every work-group: its reduces are split over lanes, its stores done once
    self.items(self.p.prologue, "uniform", first_lane)
    if self.p.root_loops:
      root = self.p.root_loops[0]
      bound = self.as_int(self.index(root.size))
      if self.mode == "row":
        lane_zero = self.op("IEqual", "bool", self.lane, self.const(0, k))
        self.loop(root.var.name, group, bound, groups, lambda: self.items(root.items, "uniform", lane_zero))
      else:
        local = self.const(self.local_size[0], k)
        start = self.op("IAdd", k, self.op("IMul", k, group, local), self.lane)
        sizes = [self.as_int(self.index(lp.size)) for lp in self.grid_chain]
        total = sizes[0]
        for size in sizes[1:]: total = self.op("IMul", k, total, size)
        self.loop("grid", start, total, self.op("IMul", k, groups, local), lambda: self.grid_body(sizes))
    self.m.emit("Return")
    return self.m.finish(self.p.name, tuple(self.local_size), entry)
