"""Vulkan kernels for decode's quantized weights: a matvec that dequantizes in registers, and embedding row gathers.

    qmatvec_<type>_<N>x<K>_m<M>[_r][_norm|_swiglu](out, x, w[, norm][, residual])
                                                         out (M, N) = prologue(x) (M, K) @ W.T (+ residual), W = N rows of K/32 blocks
    qrows_<type>_<N>x<K>_c<C>(out, ids, w, err)            out (C, K) = W[ids] (int64 ids), dequantized
    rows_<dtype>_<N>x<D>_c<C>(out, ids, table)             out (C, D) = table[ids] (int32 ids) as float32 (float16/bfloat16/float32)

Each is a SPIR-V module written here with renderer/spirv_shader.py's ComputeShader, without the loop
program: the kernels are a few loops, and their thread mapping is not one the renderer chooses. Every size is compiled
in (a pipeline per shape, a handful per model), so a dispatch takes no size arguments and a JIT replay records it as
is (nn/quant.py's `_launch`): a decode step stays one command buffer.

Reading the blocks: the weight buffer is bound as 32-bit words, which every device loads (8- and 16-bit storage are
optional features, and one path is the one lavapipe tests). GGUF blocks are 18 (Q4_0), 20 (Q4_1) and 34 (Q8_0)
bytes, so only Q4_1's fields are word aligned; the others' are 2-aligned, and 32 bits at byte o are the two words
around it funnel-shifted by 8 * (o % 4) (the word past the buffer's end is never read: its index is clamped).

The matvec: one subgroup per output row, like CUDA's warp per row. Four lanes share each 32-weight block (a lane takes
a quarter: 8 weights and the block's scale), the lanes of a subgroup walk the row's quarters side by side, so their
loads cover consecutive bytes, and x is read as vec4. The lanes' partial sums meet in OpGroupNonUniformFAdd: no shared
memory and no barrier. Lanes, rows and strides come from the SubgroupSize / SubgroupId / NumSubgroups built-ins, not
from the size the device reports, so the kernel is right whatever size the driver picks (lavapipe 8, NVIDIA 32, AMD
32 or 64); the reported size only sets how many work-groups are dispatched. A device without subgroup arithmetic in
compute shaders gets no kernels (the reference runs). A subgroup holds accumulators for up to GROUP_ROWS rows of x;
more rows (up to MAX_ROWS, a server's decode batch) are groups of the grid of their own, and past that (prefill)
`x @ dequantize().T` runs, whose matmul is a kernel of the renderer's.

Arithmetic: per block, the dot of the quarter's weights with x in float32, times the fp16 scale (plus min * sum(x)
for Q4_1), as CUDA's kernel does; the result differs from the reference by float32 reassociation only. The row gather
computes each weight as the reference does (scale times integer, then plus the min, never fused: NoContraction), so
its rows are bit-identical with it.
"""
from __future__ import annotations

from collections.abc import Callable

from teenygrad.device import Buffer, Device
from teenygrad.renderer.spirv_module import SCOPE
from teenygrad.renderer.spirv_shader import ComputeShader

GROUP_ROWS = 8      # rows of x one subgroup holds accumulators for
MAX_ROWS = 64       # rows of x the matvec takes; more go through the reference
LOCAL_SIZE = 128    # invocations per work-group (the spec guarantees 128): 4 subgroups of 32 on NVIDIA
TYPE_SIZES = {"Q4_0": 18, "Q4_1": 20, "Q8_0": 34}   # bytes per block of 32 weights
VULKAN_QUANT_TYPES = tuple(TYPE_SIZES)
MAX_WEIGHT_BYTES = 1 << 32   # byte offsets into the weights are 32-bit


class _Words:
  """The weight buffer as 32-bit words: fields of the blocks at byte offsets."""
  def __init__(self, s: ComputeShader, nbytes: int):
    self.s, self.total = s, -(-nbytes // 4)
    self.buf = s.buffer("w", s.u32, 4, nbytes, writable=False)

  def word(self, index: int) -> int: return self.s.load(self.buf, index)

  def aligned(self, offset: int) -> int:
    """The 32 bits at a byte offset that is a multiple of 4."""
    return self.word(self.s.shr(offset, 2))

  def unaligned(self, offset: int, count: int) -> list[int]:
    """`count` 32-bit values from a 2-aligned byte offset: each is the word pair around it funnel-shifted."""
    s = self.s
    first = s.shr(offset, 2)
    words = [self.word(first)] + [self.word(s.umin(s.add(first, s.u(i)), s.u(self.total - 1))) for i in range(1, count + 1)]
    shift = s.mul(s.op("BitwiseAnd", s.u32, offset, s.u(2)), s.u(8))    # 0 or 16
    back = s.op("ISub", s.u32, s.u(16), shift)
    # (hi << 16) << (16 - shift) is hi << 16 for shift 16 and 0 for shift 0: no shift by the full width
    return [s.op("BitwiseOr", s.u32, s.op("ShiftRightLogical", s.u32, lo, shift),
                 s.op("ShiftLeftLogical", s.u32, s.op("ShiftLeftLogical", s.u32, hi, s.u(16)), back))
            for lo, hi in zip(words, words[1:])]

  def half_at(self, offset: int) -> int:
    """The fp16 at a 2-aligned byte offset, as float32."""
    s = self.s
    shift = s.mul(s.op("BitwiseAnd", s.u32, offset, s.u(2)), s.u(8))
    return s.half(s.op("ShiftRightLogical", s.u32, self.aligned(offset), shift))

  def byte_at(self, offset: int) -> int:
    s = self.s
    shift = s.mul(s.op("BitwiseAnd", s.u32, offset, s.u(3)), s.u(8))
    return s.op("BitwiseAnd", s.u32, s.op("ShiftRightLogical", s.u32, self.aligned(offset), shift), s.u(255))


# ---- the matvec ----
# per type: a lane's quarter `sub` (0..3) of the block at byte `blk`, as [(4 weights as a vec4, the vec4 of the
# block's x they multiply, 0..7)], the scale, and the min (Q4_1) or None

def _nibble_vectors(s: ComputeShader, q: int, sub: int, offset: int) -> list[tuple[int, int]]:
  """Byte i of a block's 16 nibble bytes holds weight i (low nibble) and i + 16 (high); a quarter's four bytes in q are
  weights 4 sub.. (x vec4 `sub`) and 16 + 4 sub.. (x vec4 4 + sub), each minus `offset`."""
  def weights(first_bit: int) -> int:
    nibbles = [s.bits(q, first_bit + 8 * i, 4) for i in range(4)]
    if offset: return s.vec4_of(*(s.to_float(s.op("ISub", s.i32, s.op("Bitcast", s.i32, n), s.i(offset)), signed=True) for n in nibbles))
    return s.vec4_of(*(s.to_float(n) for n in nibbles))
  return [(weights(0), sub), (weights(4), s.add(sub, s.u(4)))]


def _quarter_q4_0(s: ComputeShader, w: _Words, blk: int, sub: int):
  (q,) = w.unaligned(s.add(blk, s.add(s.u(2), s.mul(sub, s.u(4)))), 1)
  return _nibble_vectors(s, q, sub, offset=8), w.half_at(blk), None


def _quarter_q4_1(s: ComputeShader, w: _Words, blk: int, sub: int):
  first = s.shr(blk, 2)   # 20-byte blocks: every field is word aligned
  dm, q = w.word(first), w.word(s.add(first, s.add(s.u(1), sub)))
  return _nibble_vectors(s, q, sub, offset=0), s.half(dm), s.half(s.shr(dm, 16))


def _quarter_q8_0(s: ComputeShader, w: _Words, blk: int, sub: int):
  """32 int8 weights from byte 2: a quarter is 8 of them (x vec4s 2 sub and 2 sub + 1)."""
  packed = w.unaligned(s.add(blk, s.add(s.u(2), s.mul(sub, s.u(8)))), 2)
  def weights(word: int) -> int:
    signed = s.op("Bitcast", s.i32, word)
    return s.vec4_of(*(s.to_float(s.op("BitFieldSExtract", s.i32, signed, s.u(8 * i), s.u(8)), signed=True) for i in range(4)))
  first = s.mul(sub, s.u(2))
  return [(weights(packed[0]), first), (weights(packed[1]), s.add(first, s.u(1)))], w.half_at(blk), None


_QUARTERS = {"Q4_0": _quarter_q4_0, "Q4_1": _quarter_q4_1, "Q8_0": _quarter_q8_0}


PROLOGUES = ("", "norm", "swiglu")   # what the matvec does to x first (llm/fused_linear.py): nothing, an RMSNorm, silu(gate) * up


def matvec_name(ggml_type: str, n: int, k: int, m: int, residual: bool, prologue: str = "") -> str:
  return f"qmatvec_{ggml_type.lower()}_{n}x{k}_m{m}{'_r' if residual else ''}{'_' + prologue if prologue else ''}"


def _groups_of(m: int) -> tuple[int, int]:
  """(groups of x rows, rows per group): one group for up to GROUP_ROWS rows."""
  if m <= GROUP_ROWS: return 1, m
  return -(-m // GROUP_ROWS), GROUP_ROWS


def render_matvec(ggml_type: str, n: int, k: int, m: int, residual: bool, subgroup_size: int, max_binding_range: int,
                  prologue: str = "", eps: float = 0.0) -> str:
  """The matvec of one GGML type and shape; `subgroup_size` (the device's report) only sizes the dispatch. The
  prologue (PROLOGUES) is applied to x as it is read: "norm" multiplies row r by rsqrt(mean(x_r^2) + eps) and the
  norm weight (every subgroup sums its rows' squares itself: cheaper than a launch at decode's widths), "swiglu"
  reads x (m, 2k) = [gate | up] as silu(gate) * up."""
  assert prologue in PROLOGUES, prologue
  s = ComputeShader(max_binding_range, LOCAL_SIZE)
  s.m.capability("GroupNonUniformArithmetic")
  type_size, nb = TYPE_SIZES[ggml_type], k // 32
  groups, per_group = _groups_of(m)
  x_quads = (2 * k if prologue == "swiglu" else k) // 4   # vec4s per row of x
  out = s.buffer("out", s.f32, 4, m * n * 4, writable=True)
  x = s.buffer("x", s.vec4, 16, m * x_quads * 16, writable=False)
  w = _Words(s, n * nb * type_size)
  norm = s.buffer("norm", s.vec4, 16, k * 4, writable=False) if prologue == "norm" else None
  res = s.buffer("residual", s.f32, 4, m * n * 4, writable=False) if residual else None
  lane, size = s.builtin("SubgroupLocalInvocationId"), s.builtin("SubgroupSize")
  subgroup, subgroups = s.builtin("SubgroupId"), s.builtin("NumSubgroups")
  first_item = s.add(s.mul(s.builtin("WorkgroupId"), subgroups), subgroup)
  item_step = s.mul(s.builtin("NumWorkgroups"), subgroups)

  def one_item(item: int) -> None:
    """W row `row` against x rows group * per_group.. : a whole subgroup, lane by lane over the row's quarters."""
    row, group = (item, s.u(0)) if groups == 1 else (s.op("UDiv", s.u32, item, s.u(groups)), s.op("UMod", s.u32, item, s.u(groups)))
    x_rows = [s.add(s.mul(group, s.u(per_group)), s.u(j)) for j in range(per_group)]
    ragged = groups * per_group != m   # the last group has fewer rows: its missing ones read the last row, store nothing
    x_read = [s.umin(r, s.u(m - 1)) if ragged else r for r in x_rows]
    accs = [s.variable(s.f(0.0)) for _ in x_rows]
    row_start = s.mul(row, s.u(nb * type_size))
    rms_scales = [_rms_scale(s, x, xr, k, eps, lane, size) for xr in x_read] if norm is not None else [None] * len(x_read)

    def load_x(xr: int, rms_scale: int | None, at: int) -> int:
      """vec4 `at` (0..k/4) of x row xr, the prologue applied."""
      first = s.mul(xr, s.u(x_quads))
      if prologue == "swiglu":
        gate, up = s.load(x, s.add(first, at)), s.load(x, s.add(first, s.add(at, s.u(k // 4))))
        ones = s.vec4_of(*[s.f(1.0)] * 4)
        sigmoid = s.op("FDiv", s.vec4, ones, s.op("FAdd", s.vec4, ones, s.m.glsl(s.vec4, "Exp", s.op("FNegate", s.vec4, gate))))
        return s.op("FMul", s.vec4, s.op("FMul", s.vec4, gate, sigmoid), up)
      value = s.load(x, s.add(first, at))
      if rms_scale is None: return value
      return s.op("FMul", s.vec4, s.op("VectorTimesScalar", s.vec4, value, rms_scale), s.load(norm, at))

    def one_quarter(quarter: int) -> None:
      block, sub = s.shr(quarter, 2), s.op("BitwiseAnd", s.u32, quarter, s.u(3))
      pairs, scale, minimum = _QUARTERS[ggml_type](s, w, s.add(row_start, s.mul(block, s.u(type_size))), sub)
      for acc, xr, rms_scale in zip(accs, x_read, rms_scales):
        x_block = s.mul(block, s.u(8))   # in vec4s of the row
        xs = [load_x(xr, rms_scale, s.add(x_block, at)) for _, at in pairs]
        total = s.dot(pairs[0][0], xs[0])
        for (weights, _), xv in zip(pairs[1:], xs[1:]): total = s.op("FAdd", s.f32, total, s.dot(weights, xv))
        term = s.op("FMul", s.f32, scale, total)
        if minimum is not None:
          x_sum = s.op("FAdd", s.f32, *(s.dot(xv, s.vec4_of(*[s.f(1.0)] * 4)) for xv in xs))
          term = s.op("FAdd", s.f32, term, s.op("FMul", s.f32, minimum, x_sum))
        s.m.emit("Store", acc, s.op("FAdd", s.f32, s.op("Load", s.f32, acc), term))
    s.loop(lane, s.u(nb * 4), size, one_quarter, unroll=True)   # so all of a row's loads can be in flight together

    is_leader = s.op("IEqual", s.bool, lane, s.u(0))
    for acc, xr in zip(accs, x_rows):
      total = s.op("GroupNonUniformFAdd", s.f32, s.u(SCOPE["Subgroup"]), 0, s.op("Load", s.f32, acc))   # 0: Reduce
      store_here = s.op("LogicalAnd", s.bool, is_leader, s.op("ULessThan", s.bool, xr, s.u(m))) if ragged else is_leader

      def store(xr=xr, total=total) -> None:
        at = s.add(s.mul(xr, s.u(n)), row)
        s.store(out, at, s.op("FAdd", s.f32, total, s.load(res, at)) if res is not None else total)
      s.if_then(store_here, store)
  s.loop(first_item, s.u(n * groups), item_step, one_item)
  per_workgroup = max(1, LOCAL_SIZE // max(subgroup_size, 1))
  return s.finish(matvec_name(ggml_type, n, k, m, residual, prologue), -(-n * groups // per_workgroup))


def _rms_scale(s: ComputeShader, x, xr: int, k: int, eps: float, lane: int, size: int) -> int:
  """rsqrt(mean(x_r^2) + eps) of x row xr (k floats as vec4s), summed by the lanes of the subgroup and met in a subgroup
  sum: every lane gets it."""
  squares = s.variable(s.f(0.0))
  def add(at: int) -> None:
    value = s.load(x, s.add(s.mul(xr, s.u(k // 4)), at))
    s.m.emit("Store", squares, s.op("FAdd", s.f32, s.op("Load", s.f32, squares), s.dot(value, value)))
  s.loop(lane, s.u(k // 4), size, add)
  total = s.op("GroupNonUniformFAdd", s.f32, s.u(SCOPE["Subgroup"]), 0, s.op("Load", s.f32, squares))
  return s.m.glsl(s.f32, "InverseSqrt", s.op("FAdd", s.f32, s.op("FMul", s.f32, total, s.f(1.0 / k)), s.f(eps)))


# ---- embedding rows ----
# a weight of the block at byte `blk`, element l (0..31), as the reference computes it

def _value_q4_0(s: ComputeShader, w: _Words, blk: int, l: int) -> int:
  nibble = _nibble(s, w, blk, 2, l)
  return s.exact("FMul", w.half_at(blk), s.to_float(s.op("ISub", s.i32, s.op("Bitcast", s.i32, nibble), s.i(8)), signed=True))


def _value_q4_1(s: ComputeShader, w: _Words, blk: int, l: int) -> int:
  dm = w.aligned(blk)
  return s.exact("FAdd", s.exact("FMul", s.half(dm), s.to_float(_nibble(s, w, blk, 4, l))), s.half(s.shr(dm, 16)))


def _value_q8_0(s: ComputeShader, w: _Words, blk: int, l: int) -> int:
  byte = s.op("Bitcast", s.i32, w.byte_at(s.add(blk, s.add(s.u(2), l))))
  return s.exact("FMul", s.to_float(s.op("BitFieldSExtract", s.i32, byte, s.u(0), s.u(8)), signed=True), w.half_at(blk))


def _nibble(s: ComputeShader, w: _Words, blk: int, first: int, l: int) -> int:
  """Weight l's nibble: byte l % 16 of the nibbles at `first`, low for l < 16, high past it."""
  byte = w.byte_at(s.add(blk, s.add(s.u(first), s.op("BitwiseAnd", s.u32, l, s.u(15)))))
  return s.op("BitwiseAnd", s.u32, s.op("ShiftRightLogical", s.u32, byte, s.mul(s.shr(l, 4), s.u(4))), s.u(15))


_VALUES = {"Q4_0": _value_q4_0, "Q4_1": _value_q4_1, "Q8_0": _value_q8_0}


def rows_name(ggml_type: str, n: int, k: int, count: int) -> str: return f"qrows_{ggml_type.lower()}_{n}x{k}_c{count}"


def render_rows(ggml_type: str, n: int, k: int, count: int, max_binding_range: int) -> str:
  """An invocation per output element: out (count, k) = the rows of W (n, k) the int64 ids name; an id outside
  [0, n) gives a zero row and sets err[0]. The ids are read as word pairs (no shaderInt64 needed)."""
  s = ComputeShader(max_binding_range, LOCAL_SIZE)
  type_size, row_bytes = TYPE_SIZES[ggml_type], k // 32 * TYPE_SIZES[ggml_type]
  out = s.buffer("out", s.f32, 4, count * k * 4, writable=True)
  ids = s.buffer("ids", s.u32, 4, count * 8, writable=False)
  w = _Words(s, n * row_bytes)
  err = s.buffer("err", s.u32, 4, 4, writable=True)
  first = s.add(s.mul(s.builtin("WorkgroupId"), s.u(LOCAL_SIZE)), s.builtin("LocalInvocationId"))

  def one_element(i: int) -> None:
    r, j = s.op("UDiv", s.u32, i, s.u(k)), s.op("UMod", s.u32, i, s.u(k))
    low, high = s.load(ids, s.mul(r, s.u(2))), s.load(ids, s.add(s.mul(r, s.u(2)), s.u(1)))
    valid = s.op("LogicalAnd", s.bool, s.op("IEqual", s.bool, high, s.u(0)), s.op("ULessThan", s.bool, low, s.u(n)))
    row = s.op("Select", s.u32, valid, low, s.u(0))   # a bad id reads row 0, then stores a zero
    blk = s.add(s.mul(row, s.u(row_bytes)), s.mul(s.shr(j, 5), s.u(type_size)))
    value = _VALUES[ggml_type](s, w, blk, s.op("BitwiseAnd", s.u32, j, s.u(31)))
    s.store(out, i, s.op("Select", s.f32, valid, value, s.f(0.0)))
    s.if_then(s.op("LogicalNot", s.bool, valid), lambda: s.store(err, s.u(0), s.u(1)))
  s.loop(first, s.u(count * k), s.mul(s.builtin("NumWorkgroups"), s.u(LOCAL_SIZE)), one_element)
  return s.finish(rows_name(ggml_type, n, k, count), -(-count * k // LOCAL_SIZE))


# ---- rows of a float table (llm/custom_ops.ROW_GATHERS) ----

FLOAT_ROW_DTYPES = ("float32", "float16", "bfloat16")


def float_rows_name(dtype_name: str, n: int, d: int, count: int) -> str: return f"rows_{dtype_name}_{n}x{d}_c{count}"


def render_float_rows(dtype_name: str, n: int, d: int, count: int, max_binding_range: int) -> str:
  """An invocation per output element: out (count, d) float32 = table (n, d)[ids] for int32 ids; an id out of range gives
  a zero row. float16 and bfloat16 tables are read as words holding two elements each."""
  s = ComputeShader(max_binding_range, LOCAL_SIZE)
  itemsize = 4 if dtype_name == "float32" else 2
  out = s.buffer("out", s.f32, 4, count * d * 4, writable=True)
  ids = s.buffer("ids", s.u32, 4, count * 4, writable=False)
  table = s.buffer("table", s.f32 if itemsize == 4 else s.u32, 4, n * d * itemsize, writable=False)
  first = s.add(s.mul(s.builtin("WorkgroupId"), s.u(LOCAL_SIZE)), s.builtin("LocalInvocationId"))

  def one_element(i: int) -> None:
    r, j = s.op("UDiv", s.u32, i, s.u(d)), s.op("UMod", s.u32, i, s.u(d))
    token = s.load(ids, r)
    valid = s.op("ULessThan", s.bool, token, s.u(n))   # a negative id is a huge unsigned one
    at = s.add(s.mul(s.op("Select", s.u32, valid, token, s.u(0)), s.u(d)), j)
    if itemsize == 4: value = s.load(table, at)
    else:
      shift = s.mul(s.op("BitwiseAnd", s.u32, at, s.u(1)), s.u(16))
      bits = s.op("ShiftRightLogical", s.u32, s.load(table, s.shr(at, 1)), shift)
      if dtype_name == "float16": value = s.half(bits)
      else: value = s.op("Bitcast", s.f32, s.op("ShiftLeftLogical", s.u32, bits, s.u(16)))   # bfloat16: the high half of a float32
    s.store(out, i, s.op("Select", s.f32, valid, value, s.f(0.0)))
  s.loop(first, s.u(count * d), s.mul(s.builtin("NumWorkgroups"), s.u(LOCAL_SIZE)), one_element)
  return s.finish(float_rows_name(dtype_name, n, d, count), -(-count * d // LOCAL_SIZE))


_float_rows: dict[tuple, object] = {}


def float_rows(out: Buffer, ids: Buffer, table: Buffer, count: int, n: int, d: int) -> None:
  """out (count, d) float32 = table (n, d)[ids] for int32 ids on a Vulkan device: one launch, recorded for the JIT (the
  kernel reads the ids from their buffer, so a replay gathers the new rows)."""
  from teenygrad.nn.quant import _launch
  key = (table.device, table.dtype.name, n, d, count)
  if key not in _float_rows:
    backend = Device[table.device]
    src = render_float_rows(table.dtype.name, n, d, count, backend.max_storage_range)
    _float_rows[key] = backend.program(float_rows_name(table.dtype.name, n, d, count), backend.compiler.compile_cached(src))
  _launch(f"rows_{table.dtype.name}", _float_rows[key], [out, ids, table], (), count * d, table.device, record=True)


# ---- the kernels object nn/quant.py calls ----

class VulkanQuantKernels:
  """The fused kernels of one GGML type on a Vulkan device, shaped like nn/quant.py's CPUQuantKernels: `linear` for
  up to MAX_ROWS rows of x (a residual added in the kernel), `rows` for embeddings. Both launches are recorded, so a
  JIT replay (one command buffer) runs them with its new inputs."""
  max_rows = MAX_ROWS
  fuses_residual = True

  def __init__(self, device: str, ggml_type: str):
    self.device, self.ggml_type = device, ggml_type
    self.backend = Device[device]
    self._programs: dict[tuple, object] = {}
    self.sources: dict[tuple, str] = {}   # the kernel text of each program (tests read the modules)

  def _program(self, key: tuple, name: str, render: Callable[[], str]):
    if key not in self._programs:
      n, k = key[1], key[2]
      if n * (k // 32) * TYPE_SIZES[self.ggml_type] >= MAX_WEIGHT_BYTES:
        raise NotImplementedError(f"Vulkan quantized kernels index weights with 32-bit byte offsets: a {n}x{k} {self.ggml_type} "
                                  "weight is 4 GiB or more")
      src = render()
      self.sources[key] = src
      self._programs[key] = self.backend.program(name, self.backend.compiler.compile_cached(src))
    return self._programs[key]

  def linear(self, out: Buffer, x: Buffer, w: Buffer, m: int, n: int, k: int, residual: Buffer | None = None,
             norm: Buffer | None = None, eps: float = 0.0, swiglu: bool = False) -> None:
    """out (m, n) = prologue(x) (m, k) @ W.T (+ residual (m, n)) for W (n, k) in blocks; m <= MAX_ROWS. The prologue is
    rms_norm(x, norm, eps) with `norm` (k,), silu(gate) * up of x (m, 2k) with `swiglu` (llm/fused_linear.py's launcher)."""
    from teenygrad.nn.quant import _launch
    has_residual = residual is not None
    prologue = "norm" if norm is not None else "swiglu" if swiglu else ""
    eps = eps if norm is not None else 0.0
    dev = self.backend
    program = self._program(("linear", n, k, m, has_residual, prologue, eps), matvec_name(self.ggml_type, n, k, m, has_residual, prologue),
                            lambda: render_matvec(self.ggml_type, n, k, m, has_residual, dev.subgroup_size, dev.max_storage_range,
                                                  prologue, eps))
    buffers = [out, x, w] + ([norm] if norm is not None else []) + ([residual] if has_residual else [])
    _launch(f"qmatvec_{self.ggml_type.lower()}", program, buffers, (), m * n * k, self.device, record=True)

  def rows(self, out: Buffer, ids: Buffer, w: Buffer, err: Buffer, count: int, n: int, k: int) -> None:
    """out (count, k) = W[ids] for int64 ids; an id outside [0, n) gives a zero row and sets err[0]. Recorded: a replay
    gathers the rows of its new ids (run() reads err outside replays only, and checks the ids itself)."""
    from teenygrad.nn.quant import _launch
    program = self._program(("rows", n, k, count), rows_name(self.ggml_type, n, k, count),
                            lambda: render_rows(self.ggml_type, n, k, count, self.backend.max_storage_range))
    _launch(f"qrows_{self.ggml_type.lower()}", program, [out, ids, w, err], (), count * k, self.device, record=True)


_cache: dict[tuple[str, str], VulkanQuantKernels] = {}


def vulkan_kernels(device: str, ggml_type: str) -> VulkanQuantKernels | None:
  """The Vulkan kernels of a type, or None where there are none (the caller runs the reference): types other than
  Q4_0/Q4_1/Q8_0, and devices without subgroup arithmetic in compute shaders."""
  if ggml_type not in TYPE_SIZES or not Device[device].subgroup_arithmetic: return None
  key = (device, ggml_type)
  if key not in _cache: _cache[key] = VulkanQuantKernels(device, ggml_type)
  return _cache[key]


__all__ = ["FLOAT_ROW_DTYPES", "GROUP_ROWS", "MAX_ROWS", "PROLOGUES", "VULKAN_QUANT_TYPES", "VulkanQuantKernels", "float_rows", "matvec_name",
           "render_float_rows", "render_matvec", "render_rows", "rows_name", "vulkan_kernels"]
