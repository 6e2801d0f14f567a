"""A SPIR-V binary module builder: ids, types, constants, decorations and one compute entry point.

SPIR-V is a stream of 32-bit words: a 5-word header, then instructions, each `(word_count << 16) | opcode`
followed by its operands. The sections must come in the order the spec fixes (capabilities, extensions,
imports, memory model, entry point, execution modes, names, decorations, types/constants/globals, functions),
so the builder keeps one list per section and joins them at the end. Types and constants are deduplicated
(the spec forbids two OpTypeInt with the same width and signedness).

Opcode and enumerant numbers come from the SPIR-V 1.3 specification (spirv.core.grammar.json).
"""
from __future__ import annotations

import struct

MAGIC, VERSION_1_3, GENERATOR = 0x07230203, 0x00010300, 0

OP = dict(
  Name=5, Extension=10, ExtInstImport=11, ExtInst=12, MemoryModel=14, EntryPoint=15, ExecutionMode=16, Capability=17,
  TypeVoid=19, TypeBool=20, TypeInt=21, TypeFloat=22, TypeVector=23, TypeArray=28, TypeRuntimeArray=29, TypeStruct=30, CompositeConstruct=80,
  TypePointer=32, TypeFunction=33, ConstantTrue=41, ConstantFalse=42, Constant=43, Function=54, FunctionEnd=56,
  Variable=59, Load=61, Store=62, AccessChain=65, Decorate=71, MemberDecorate=72, CompositeExtract=81,
  ConvertFToU=109, ConvertFToS=110, ConvertSToF=111, ConvertUToF=112, UConvert=113, SConvert=114, FConvert=115,
  Bitcast=124, SNegate=126, FNegate=127, IAdd=128, FAdd=129, ISub=130, FSub=131, IMul=132, FMul=133, UDiv=134,
  SDiv=135, FDiv=136, UMod=137, SRem=138, SMod=139, VectorTimesScalar=142, Dot=148, IsNan=156, LogicalEqual=164,
  LogicalNotEqual=165, LogicalOr=166,
  LogicalAnd=167, LogicalNot=168, Select=169, IEqual=170, INotEqual=171, UGreaterThan=172, SGreaterThan=173,
  ULessThan=176, SLessThan=177, SLessThanEqual=179, FOrdEqual=180, FUnordNotEqual=183, FOrdLessThan=184,
  FOrdGreaterThan=186, ShiftRightLogical=194, ShiftRightArithmetic=195, ShiftLeftLogical=196, BitwiseOr=197,
  BitwiseXor=198, BitwiseAnd=199, Not=200, BitFieldSExtract=202, BitFieldUExtract=203,
  ControlBarrier=224, AtomicAnd=240, AtomicOr=241, Phi=245, LoopMerge=246, SelectionMerge=247, Label=248,
  Branch=249, BranchConditional=250, Return=253, GroupNonUniformIAdd=349, GroupNonUniformFAdd=350,
  GroupNonUniformSMax=356, GroupNonUniformUMax=357, GroupNonUniformFMax=358, GroupNonUniformLogicalOr=363,
)

CAP = dict(Shader=1, Float64=10, Int64=11, StorageBufferArrayDynamicIndexing=30, GroupNonUniform=61, GroupNonUniformArithmetic=63,
           StorageBuffer16BitAccess=4433, StorageBuffer8BitAccess=4448)
DECORATION = dict(Block=2, ArrayStride=6, BuiltIn=11, NonWritable=24, NoContraction=42, Binding=33, DescriptorSet=34, Offset=35)
BUILTIN = dict(NumWorkgroups=24, WorkgroupId=26, LocalInvocationId=27, GlobalInvocationId=28, LocalInvocationIndex=29,
               SubgroupSize=36, NumSubgroups=38, SubgroupId=40, SubgroupLocalInvocationId=41)
STORAGE = dict(Input=1, Uniform=2, Workgroup=4, Private=6, Function=7, PushConstant=9, StorageBuffer=12)
SCOPE = dict(Device=1, Workgroup=2, Subgroup=3)
SEMANTICS = dict(AcquireRelease=0x8, UniformMemory=0x40, WorkgroupMemory=0x100)
GLSL = dict(FAbs=4, Floor=8, Sin=13, Exp=27, Exp2=29, Log2=30, Sqrt=31, InverseSqrt=32, UMin=38, FMax=40, SMax=42, FClamp=43, Ldexp=53,
            PackHalf2x16=58, UnpackHalf2x16=62)
EXECUTION_MODEL_GLCOMPUTE, EXECUTION_MODE_LOCAL_SIZE = 5, 17


def _string_words(text: str) -> list[int]:
  """A literal string: UTF-8, nul-terminated, padded to a whole number of words."""
  data = text.encode() + b"\0"
  data += b"\0" * (-len(data) % 4)
  return list(struct.unpack(f"<{len(data) // 4}I", data))


class SpirvModule:
  """Collects the sections of one module; `emit` appends to the current function body."""
  def __init__(self):
    self.bound = 1
    self.capabilities: set[int] = set()
    self.extensions: set[str] = set()
    self.sections: dict[str, list[list[int]]] = {k: [] for k in ("ext_import", "entry", "mode", "names", "decorations", "globals")}
    self.body: list[list[int]] = []
    self.function_vars: list[list[int]] = []   # OpVariable Function must open the entry block
    self.interface: list[int] = []
    self._types: dict[tuple, int] = {}
    self._consts: dict[tuple, int] = {}
    self._glsl: int | None = None

  def new_id(self) -> int:
    self.bound += 1
    return self.bound - 1

  @staticmethod
  def _inst(opcode: int, operands: list[int]) -> list[int]:
    return [((len(operands) + 1) << 16) | opcode, *operands]

  def emit(self, op: str, *operands: int) -> None:
    self.body.append(self._inst(OP[op], list(operands)))

  def emit_value(self, op: str, result_type: int, *operands: int, result: int | None = None) -> int:
    rid = self.new_id() if result is None else result
    self.body.append(self._inst(OP[op], [result_type, rid, *operands]))
    return rid

  def capability(self, name: str) -> None: self.capabilities.add(CAP[name])

  def decorate(self, target: int, decoration: str, *values: int) -> None:
    self.sections["decorations"].append(self._inst(OP["Decorate"], [target, DECORATION[decoration], *values]))

  def member_decorate(self, struct_id: int, member: int, decoration: str, *values: int) -> None:
    self.sections["decorations"].append(self._inst(OP["MemberDecorate"], [struct_id, member, DECORATION[decoration], *values]))

  def name(self, target: int, text: str) -> None:
    self.sections["names"].append(self._inst(OP["Name"], [target, *_string_words(text)]))

  # ---- types (deduplicated) ----
  def _type(self, key: tuple, op: str, *operands: int) -> int:
    if key not in self._types:
      rid = self.new_id()
      self.sections["globals"].append(self._inst(OP[op], [rid, *operands]))
      self._types[key] = rid
    return self._types[key]

  def t_void(self) -> int: return self._type(("void",), "TypeVoid")
  def t_bool(self) -> int: return self._type(("bool",), "TypeBool")
  def t_int(self, width: int, signed: bool) -> int: return self._type(("int", width, signed), "TypeInt", width, int(signed))
  def t_float(self, width: int) -> int: return self._type(("float", width), "TypeFloat", width)
  def t_vector(self, elem: int, n: int) -> int: return self._type(("vec", elem, n), "TypeVector", elem, n)
  def t_pointer(self, storage: str, pointee: int) -> int:
    return self._type(("ptr", storage, pointee), "TypePointer", STORAGE[storage], pointee)
  def t_function(self, ret: int) -> int: return self._type(("fn", ret), "TypeFunction", ret)
  def t_array(self, elem: int, length: int) -> int:
    return self._type(("array", elem, length), "TypeArray", elem, self.const_int(length, 32, False))

  def t_runtime_array(self, elem: int, stride: int) -> int:
    key = ("rtarray", elem)
    if key not in self._types:
      self._type(key, "TypeRuntimeArray", elem)
      self.decorate(self._types[key], "ArrayStride", stride)
    return self._types[key]

  def t_struct(self, members: list[int], offsets: list[int], tag: str) -> int:
    """A Block struct (buffers and push constants): one per tag, since decorations attach to the id."""
    key = ("struct", tag, tuple(members))
    if key not in self._types:
      rid = self._type(key, "TypeStruct", *members)
      self.decorate(rid, "Block")
      for i, offset in enumerate(offsets): self.member_decorate(rid, i, "Offset", offset)
    return self._types[key]

  # ---- constants (deduplicated) ----
  def const_int(self, value: int, width: int, signed: bool) -> int:
    value &= (1 << width) - 1
    key = ("int", width, signed, value)
    if key not in self._consts:
      words = [value & 0xFFFFFFFF, value >> 32] if width == 64 else [value]
      rid = self.new_id()
      self.sections["globals"].append(self._inst(OP["Constant"], [self.t_int(width, signed), rid, *words]))
      self._consts[key] = rid
    return self._consts[key]

  def const_float(self, value: float, width: int) -> int:
    if width == 64: bits = struct.unpack("<Q", struct.pack("<d", value))[0]
    elif width == 32: bits = struct.unpack("<I", struct.pack("<f", value))[0]
    else: bits = struct.unpack("<H", struct.pack("<e", value))[0]
    key = ("float", width, bits)
    if key not in self._consts:
      words = [bits & 0xFFFFFFFF, bits >> 32] if width == 64 else [bits]
      rid = self.new_id()
      self.sections["globals"].append(self._inst(OP["Constant"], [self.t_float(width), rid, *words]))
      self._consts[key] = rid
    return self._consts[key]

  def const_bool(self, value: bool) -> int:
    key = ("bool", bool(value))
    if key not in self._consts:
      rid = self.new_id()
      self.sections["globals"].append(self._inst(OP["ConstantTrue" if value else "ConstantFalse"], [self.t_bool(), rid]))
      self._consts[key] = rid
    return self._consts[key]

  # ---- globals and built-ins ----
  def global_variable(self, storage: str, pointee: int) -> int:
    rid = self.new_id()
    self.sections["globals"].append(self._inst(OP["Variable"], [self.t_pointer(storage, pointee), rid, STORAGE[storage]]))
    if storage == "Input": self.interface.append(rid)
    return rid

  def builtin(self, name: str, type_id: int) -> int:
    key = ("builtin", name)
    if key not in self._types:
      var = self.global_variable("Input", type_id)
      self.decorate(var, "BuiltIn", BUILTIN[name])
      self._types[key] = var
    return self._types[key]

  def function_variable(self, pointee: int) -> int:
    rid = self.new_id()
    self.function_vars.append(self._inst(OP["Variable"], [self.t_pointer("Function", pointee), rid, STORAGE["Function"]]))
    return rid

  def glsl(self, result_type: int, instruction: str, *args: int) -> int:
    if self._glsl is None:
      self._glsl = self.new_id()
      self.sections["ext_import"].append(self._inst(OP["ExtInstImport"], [self._glsl, *_string_words("GLSL.std.450")]))
    return self.emit_value("ExtInst", result_type, self._glsl, GLSL[instruction], *args)

  # ---- the whole module ----
  def finish(self, entry_name: str, local_size: tuple[int, int, int], entry_block: int, body_start: int = 1) -> bytes:
    """Wraps the body (which starts with the entry block's OpLabel) in `void main()` and serializes."""
    void = self.t_void()
    fn_type = self.t_function(void)
    fn = self.new_id()
    entry = self._inst(OP["EntryPoint"], [EXECUTION_MODEL_GLCOMPUTE, fn, *_string_words(entry_name), *self.interface])
    mode = self._inst(OP["ExecutionMode"], [fn, EXECUTION_MODE_LOCAL_SIZE, *local_size])
    self.name(fn, entry_name)
    function = [self._inst(OP["Function"], [void, fn, 0, fn_type])]
    function += self.body[:body_start] + self.function_vars + self.body[body_start:]
    function += [self._inst(OP["FunctionEnd"], [])]
    words: list[int] = [MAGIC, VERSION_1_3, GENERATOR, self.bound, 0]
    for cap in sorted(self.capabilities): words += self._inst(OP["Capability"], [cap])
    for ext in sorted(self.extensions): words += self._inst(OP["Extension"], _string_words(ext))
    for inst in self.sections["ext_import"]: words += inst
    words += self._inst(OP["MemoryModel"], [0, 1])   # Logical, GLSL450
    words += entry + mode
    for section in ("names", "decorations", "globals"):
      for inst in self.sections[section]: words += inst
    for inst in function: words += inst
    return struct.pack(f"<{len(words)}I", *words)


class StructuredBlocks:
  """Labels and if-then selections, for an emitter that writes into `self.m` (a SpirvModule) and keeps the block it
  is in as `self.block` (the renderer and the hand-written shaders both are)."""
  m: SpirvModule
  block: int

  def label(self, lid: int) -> None:
    self.m.emit("Label", lid)
    self.block = lid

  def if_then(self, cond: int, body) -> None:
    then_block, merge = self.m.new_id(), self.m.new_id()
    self.m.emit("SelectionMerge", merge, 0)
    self.m.emit("BranchConditional", cond, then_block, merge)
    self.label(then_block)
    body()
    self.m.emit("Branch", merge)
    self.label(merge)
