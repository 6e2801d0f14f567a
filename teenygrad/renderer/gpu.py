"""Loop program to GPU kernel source: the part CUDA and OpenCL share.

The lowerer's loop program has output levels (L0 outermost) with reduce loops placed in the innermost level they
depend on. A GPU renderer maps it onto a 1-D grid in one of two ways:

- grid: one work-item per element of the outermost level L0 (`group * LOCAL + lane`, bounds-checked against the
  possibly symbolic size). Everything inside L0 (reduce loops, inner levels) runs serially in the work-item.
  Matmuls and elementwise kernels look like this.
  Where the backend's buffers are aligned (CUDA: cuMemAlloc bases), an elementwise grid of a static size gives each
  work-item `vector` consecutive elements instead (16 bytes of its widest buffer), unrolled, with the pointers
  declared 16-byte aligned, so the compiler turns contiguous loads and stores into 16-byte vector ones.
- group: when the kernel reduces a long axis for few outputs (a full reduction, softmax over a 32k row, layernorm
  rows), one work-group handles one element of L0 (or the whole kernel, when a reduce sits above every output
  loop). The work-items split every reduce loop of that level between them (`for (r = lane; r < n; r += LOCAL)`),
  their partial results are combined through shared memory (with subgroup/warp operations where the device has
  them) so every work-item holds the total, and the next output level is split the same way.

What differs between CUDA and OpenCL is spelled by attributes on a subclass (ids, the shared-memory qualifier,
the barrier, the subgroup reduce); `launch_dims` tells the device the grid as a function of the kernel's
symbolic sizes.
"""
from __future__ import annotations

from dataclasses import dataclass

from teenygrad.codegen.lower import BufferArg, Loop, LoopProgram, Stmt
from teenygrad.dtype import DType, dtypes
from teenygrad.ir.ops import REDUCE_IDENTITY, Ops
from teenygrad.helpers import prod
from teenygrad.ir.symbolic import Variable, evaluate, sint, vmax
from teenygrad.ir.symbolic import render as render_sint
from teenygrad.renderer.cstyle import CStyleRenderer


@dataclass(frozen=True)
class LaunchDims:
  """A 1-D launch: `groups` work-groups (symbolic in the kernel's size variables) of `local` work-items."""
  groups: sint
  local: int
  variables: tuple[Variable, ...]   # the kernel's int arguments, in order

  def sizes(self, vals: tuple[int, ...] = ()) -> tuple[int, int]:
    """(number of groups, work-items per group) for these variable values."""
    groups = evaluate(self.groups, dict(zip(self.variables, vals))) if not isinstance(self.groups, int) else self.groups
    return max(int(groups), 1), self.local


@dataclass
class GPUPlan:
  """How a loop program maps onto the grid."""
  mode: str                    # "grid" or "group"
  local: int
  grid_loops: list[Loop]       # nested output loops flattened onto the global id (grid) or the group id (group)
  split_container: list        # group mode: the items whose reduce loops and next output loop are split over lanes
  reduces: list[Loop]          # group mode: the reduce loops combined across the work-group
  vector: int = 1              # grid mode: consecutive elements per work-item

  @property
  def count(self) -> sint:
    """How many elements the grid loops cover together (work-items in grid mode, groups in group mode)."""
    return prod(lp.size for lp in self.grid_loops)


class StoreText(str):
  """A rendered store, so group mode can let one lane write a value every lane holds."""


def _is_pow2(x: int) -> bool: return x > 0 and x & (x - 1) == 0


class GPURenderer(CStyleRenderer):
  # ---- what a subclass spells ----
  kernel_prefix = ""
  buffer_qualifier = ""
  index_type = "long"
  restrict = "restrict"           # how the language spells C99's restrict
  variable_type: str | None = None   # symbolic sizes' parameter type (None: the index type)
  group_id = ""                     # this work-group's index in the 1-D grid
  local_id = ""                     # this work-item's index in its group
  shared_qualifier = ""             # work-group shared memory
  barrier = ""                      # work-group barrier that also orders shared-memory accesses
  # subgroup (warp) reduction, if the device has one: a reduce op -> format string of the value, plus the
  # lane/subgroup numbering to combine subgroup partials
  subgroup_reduce: dict = {}
  subgroup_lane = ""
  subgroup_index = ""
  subgroup_count = ""
  subgroup_dtypes: tuple[DType, ...] = (dtypes.float32, dtypes.int32, dtypes.uint32, dtypes.int64, dtypes.float16, dtypes.bfloat16)
  # bytes a work-item of an elementwise grid covers in its widest buffer (0: one element each); a subclass sets it
  # only where every buffer argument is an allocation base aligned to at least that much
  vector_bytes = 0
  vector_min_elements = 1 << 16   # smaller grids keep one element per work-item, for enough work-items
  subgroup_width: int | None = None   # lanes of a subgroup where fixed (CUDA's warp): a group that size needs no shared memory
  min_group_local = 32                # the fewest lanes a work-group shares a reduce between
  lane_work = 16                      # reduce iterations per lane worth a lane of its own

  def __init__(self, max_local: int = 256, grid_local: int = 128, group_local: int = 256, local_memory: int = 32768,
               group_min_reduce: int = 128, group_max_outputs: int = 32768):
    super().__init__(threads=1, check_bounds=False)
    cap = 1 << (max(max_local, 1).bit_length() - 1)   # largest power of two the device takes
    self.grid_local = min(grid_local, cap)
    self.group_local = min(group_local, cap)
    self.local_memory = local_memory
    self.group_min_reduce, self.group_max_outputs = group_min_reduce, group_max_outputs

  # ---- planning ----
  def plan(self, program: LoopProgram) -> GPUPlan:
    top_reduces = [item for _, item in program.prologue if isinstance(item, Loop) and item.kind == "reduce"]
    if self._long(top_reduces):
      return self._group_plan([], program.prologue + [(float("inf"), lp) for lp in program.root_loops], top_reduces)
    if not program.root_loops: return GPUPlan("grid", 1, [], [], [])
    # the output loops down to the first one that holds a reduce go on the grid: everything they hold is per element
    chain, loop = [], program.root_loops[0]
    while True:
      chain.append(loop)
      children = [item for _, item in loop.items if isinstance(item, Loop)]
      reduces = [lp for lp in children if lp.kind == "reduce"]
      outputs = [lp for lp in children if lp.kind == "output"]
      if reduces or len(outputs) != 1: break
      loop = outputs[0]
    if self._long(reduces):
      # past group_max_outputs a work-group per output pays only where the lanes' reads coalesce (a matvec over
      # contiguous rows, a wide LM head); a reduce down a column is faster as a thread per output, whose neighbours
      # read neighbouring elements
      coalesced = all(lp.var.name in program.unit_stride for lp in reduces)
      if vmax(prod(lp.size for lp in chain)) <= self.group_max_outputs or coalesced:
        return self._group_plan(chain, chain[-1].items, reduces)
    plan = GPUPlan("grid", self.grid_local, chain, [], [])
    plan.vector = self._vector_width(program, plan, children)
    return plan

  def _vector_width(self, program: LoopProgram, plan: GPUPlan, innermost: list) -> int:
    """Consecutive elements per work-item of an elementwise grid: a static size that splits evenly, no inner loops."""
    widest = max((buf.dtype.itemsize for buf in program.buffers), default=0)
    if not self.vector_bytes or not widest or innermost: return 1
    width = max(self.vector_bytes // widest, 1)
    count = plan.count
    if width == 1 or not isinstance(count, int) or count % width or count < self.vector_min_elements: return 1
    return width

  def _iterations(self, loop: Loop) -> int:
    """Iterations of a reduce nest (a full sum over (64, 300) is 19200, not 64)."""
    inner = [self._iterations(item) for _, item in loop.items if isinstance(item, Loop) and item.kind == "reduce"]
    return vmax(loop.size) * max(inner, default=1)

  def _long(self, reduces: list[Loop]) -> bool:
    return any(vmax(lp.size) >= self.group_min_reduce for lp in reduces)

  def _group_plan(self, grid_loops: list[Loop], container: list, reduces: list[Loop]) -> GPUPlan:
    # as many lanes as the reduce gives work for (lane_work iterations each), down to one subgroup: a 576-long
    # matvec row is one warp, a 32k softmax row the whole group
    local, work = self.group_local, max(self._iterations(lp) for lp in reduces)
    while local > self.min_group_local and local * self.lane_work > work: local //= 2
    # every combined reduce holds one shared slot per lane: stay inside the device's local memory
    while local > 32 and len(reduces) * local * 8 > self.local_memory // 2: local //= 2
    return GPUPlan("group", local, grid_loops, container, reduces)

  def launch_dims(self, program: LoopProgram) -> LaunchDims:
    plan = self.plan(program)
    per_group = plan.local * plan.vector
    groups = plan.count if plan.mode == "group" else (plan.count + per_group - 1) // per_group
    return LaunchDims(groups, plan.local, tuple(program.variables))

  # ---- statements ----
  def render_store(self, buf: BufferArg, index: str, value: str) -> StoreText:
    return StoreText(super().render_store(buf, index, value))

  def render_params(self, program: LoopProgram) -> list[str]:
    params = []
    for buf in program.buffers:
      const = "" if buf.is_output else "const "
      params.append(f"{self.buffer_qualifier}{const}{self.storage_type(buf.dtype)}* {self.restrict} {buf.name}")
    return params + [f"{self.variable_type or self.index_type} {v.name}" for v in program.variables]

  def shared_type(self, dtype: DType) -> str:
    return "int" if dtype == dtypes.bool else self.compute_type(dtype)

  def combine(self, op: Ops, a: str, b: str, dtype: DType) -> str:
    if op is Ops.SUM: return f"({a}||{b})" if dtype.is_bool else f"({a}+{b})"
    return self.render_alu(Ops.MAX, [a, b], dtype)

  def render_group_reduce(self, acc: str, op: Ops, dtype: DType, shared: str, local: int, pad: str) -> list[str]:
    """Combine every lane's partial `acc` so that each lane holds the work-group's total."""
    lane = "lane"
    fmt = self.subgroup_reduce.get(op)
    if fmt is not None and dtype in self.subgroup_dtypes and local == self.subgroup_width:
      return [f"{pad}{acc} = {fmt.format(value=acc)};"]   # the group is one subgroup: its reduce gives every lane the total
    if fmt is not None and dtype in self.subgroup_dtypes:
      identity = self.render_const(REDUCE_IDENTITY[op](dtype), dtype)
      return [f"{pad}{acc} = {fmt.format(value=acc)};",
              f"{pad}if ({self.subgroup_lane} == 0) {shared}[{self.subgroup_index}] = {acc};",
              f"{pad}{self.barrier}",
              f"{pad}{acc} = {identity};",
              f"{pad}for (int s = 0; s < {self.subgroup_count}; s++) {acc} = {self.combine(op, acc, f'{shared}[s]', dtype)};"]
    return [f"{pad}{shared}[{lane}] = {acc};",
            f"{pad}{self.barrier}",
            f"{pad}for (int s = {local // 2}; s > 0; s >>= 1) {{",
            f"{pad}  if ({lane} < s) {shared}[{lane}] = {self.combine(op, f'{shared}[{lane}]', f'{shared}[{lane}+s]', dtype)};",
            f"{pad}  {self.barrier}",
            f"{pad}}}",
            f"{pad}{acc} = {shared}[0];"]

  # ---- loops ----
  def _render_items(self, items: list, indent: int, plan: GPUPlan, split: bool) -> list[str]:
    """`split`: these items are the group level, whose reduces and next output loop are shared by the lanes."""
    lines: list[str] = []
    pad = "  " * indent
    for _, item in sorted(items, key=lambda it: it[0]):
      if isinstance(item, Stmt):
        text = item.text
        lines.append(f"{pad}if (lane == 0) {text}" if split and isinstance(text, StoreText) else pad + text)
        continue
      lines += self._render_loop(item, indent, plan, split)
      if split and item in plan.reduces:
        acc, op, dtype = item.reduce_acc
        lines += self.render_group_reduce(acc, op, dtype, f"shared_{acc}", plan.local, pad)
    return lines

  def _render_loop(self, loop: Loop, indent: int, plan: GPUPlan, split: bool) -> list[str]:
    pad, var, size = "  " * indent, loop.var.name, render_sint(loop.size)
    start, step = ("lane", str(plan.local)) if split else ("0", "1")
    head = f"{pad}for ({self.index_type} {var} = {start}; {var} < {size}; {var} += {step}) {{"
    return [head, *self._render_items(loop.items, indent + 1, plan, False), pad + "}"]

  def render_aligned(self, buf: BufferArg, align: int) -> str:
    """A statement telling the compiler that `buf` is `align`-byte aligned (vector grids only)."""
    raise NotImplementedError(f"{type(self).__name__} sets vector_bytes but cannot declare alignment")

  def _render_vector_grid(self, program: LoopProgram, plan: GPUPlan) -> list[str]:
    """Each work-item covers `plan.vector` consecutive elements: the size divides evenly, so one bound check."""
    it = self.index_type
    lines = [f"  const int lane = {self.local_id};",
             f"  const {it} gbase = (({it}){self.group_id} * {plan.local} + lane) * {plan.vector};",
             f"  if (gbase >= {render_sint(plan.count)}) return;"]
    lines += [self.render_aligned(buf, self.vector_bytes) for buf in program.buffers]
    lines += self._render_items(program.prologue, 1, plan, False)
    lines += ["  #pragma unroll", f"  for (int u = 0; u < {plan.vector}; u++) {{", f"    const {it} gidx = gbase + u;"]
    lines += ["  " + line for line in self._grid_index_lines(plan)]
    for i, lp in enumerate(plan.grid_loops):
      items = [item for item in lp.items if i + 1 == len(plan.grid_loops) or item[1] is not plan.grid_loops[i + 1]]
      lines += self._render_items(items, 2, plan, False)
    return lines + ["  }"]

  def _grid_index_lines(self, plan: GPUPlan) -> list[str]:
    """The grid loops' indices, unravelled from `gidx`."""
    lines = []
    for i, lp in enumerate(plan.grid_loops):
      inner = prod(inner_lp.size for inner_lp in plan.grid_loops[i + 1:])
      value = "gidx" if isinstance(inner, int) and inner == 1 else f"(gidx / {render_sint(inner)})"
      if i > 0: value = f"({value} % {render_sint(lp.size)})"
      lines.append(f"  const {self.index_type} {lp.var.name} = {value};")
    return lines

  def render_body(self, program: LoopProgram) -> list[str]:
    plan = self.plan(program)
    if plan.vector > 1: return self._render_vector_grid(program, plan)
    it = self.index_type
    lines = [f"  const int lane = {self.local_id};"]
    for lp in plan.reduces:
      acc, _, dtype = lp.reduce_acc
      lines.append(f"  {self.shared_qualifier} {self.shared_type(dtype)} shared_{acc}[{plan.local}];")
    if plan.grid_loops:
      index = f"(({it}){self.group_id})" if plan.mode == "group" else f"(({it}){self.group_id} * {plan.local} + lane)"
      # the bound is uniform across a group in group mode, so no lane skips a barrier
      lines += [f"  const {it} gidx = {index};", f"  if (gidx >= {render_sint(plan.count)}) return;"]
      lines += self._grid_index_lines(plan)
    if plan.mode == "group" and not plan.grid_loops: return lines + self._render_items(plan.split_container, 1, plan, True)
    lines += self._render_items(program.prologue, 1, plan, False)
    for i, lp in enumerate(plan.grid_loops):
      last = i == len(plan.grid_loops) - 1
      items = lp.items if last else [item for item in lp.items if item[1] is not plan.grid_loops[i + 1]]
      lines += self._render_items(items, 1, plan, last and plan.mode == "group")
    return lines

  # ---- matmul ----
  gemm_tile = 64       # output tile of one work-group (gemm_tile x gemm_tile)
  gemm_k_tile = 16     # k-slice staged in shared memory per step
  gemm_threads = 16    # work-group is gemm_threads x gemm_threads lanes; each computes a (tile/threads)^2 block

  def render_gemm(self, match) -> tuple[str, list, str, LaunchDims] | None:
    """A float32 matmul (codegen/gemm_match.py's GemmMatch) as a shared-memory tiled kernel, epilogue fused:
    (name, buffers, source, launch dims).

    Each work-group stages a gemm_tile x gemm_k_tile slice of A and of B in shared memory and every lane
    accumulates a small block of outputs in registers, so each loaded element is used gemm_tile times.
    None for products too thin to fill the tiles."""
    spec = match.spec
    tile, kt, threads = self.gemm_tile, self.gemm_k_tile, self.gemm_threads
    # a thin product (a matrix-vector product in decoding) would leave most of each tile idle: plain loops do better
    if min(spec.M, spec.N) < tile // 2 or spec.K < kt: return None
    if match.operand_dtype != dtypes.float32: return None
    per = tile // threads
    sa_b, sa_i, sa_k = spec.a_strides
    sb_b, sb_k, sb_j = spec.b_strides
    tiles_m, tiles_n = -(-spec.M // tile), -(-spec.N // tile)
    local = threads * threads
    shared = self.shared_qualifier
    store = f"{{ long ep_bi = bi; long ep_i = i; long ep_j = j; float ep_acc = acc[m][n]; {match.epilogue} }}"
    name = f"gemm_{spec.batch}_{spec.M}_{spec.N}_{spec.K}"
    params = self.render_params(LoopProgram(name, match.buffers, [], [], [], set(), 0, 0))
    src = f"""{self.kernel_prefix}void {name}({', '.join(params)}) {{
  /* gemm {spec.batch}x{spec.M}x{spec.N}x{spec.K}: {tile}x{tile} tiles, k-steps of {kt} through shared memory */
  {shared} float a_tile[{kt}][{tile}];
  {shared} float b_tile[{kt}][{tile}];
  const int lane = {self.local_id};
  const int tx = lane % {threads}, ty = lane / {threads};
  const long group = (long){self.group_id};
  const long bi = group / {tiles_m * tiles_n};
  const long i0 = (group % {tiles_m * tiles_n}) / {tiles_n} * {tile}, j0 = (group % {tiles_n}) * {tile};
  {self.buffer_qualifier}const float* a = {match.a.name} + {match.a_offset} + bi * {sa_b};
  {self.buffer_qualifier}const float* b = {match.b.name} + {match.b_offset} + bi * {sb_b};
  float acc[{per}][{per}];
  for (int m = 0; m < {per}; m++) for (int n = 0; n < {per}; n++) acc[m][n] = 0.0f;
  for (long k0 = 0; k0 < {spec.K}; k0 += {kt}) {{
    for (int l = lane; l < {tile * kt}; l += {local}) {{
      const int r = l / {kt}, c = l % {kt};
      const long i = i0 + r, k = k0 + c;
      a_tile[c][r] = (i < {spec.M} && k < {spec.K}) ? a[i * {sa_i} + k * {sa_k}] : 0.0f;
    }}
    for (int l = lane; l < {tile * kt}; l += {local}) {{
      const int r = l / {tile}, c = l % {tile};
      const long k = k0 + r, j = j0 + c;
      b_tile[r][c] = (k < {spec.K} && j < {spec.N}) ? b[k * {sb_k} + j * {sb_j}] : 0.0f;
    }}
    {self.barrier}
    for (int kk = 0; kk < {kt}; kk++) {{
      float a_reg[{per}], b_reg[{per}];
      for (int m = 0; m < {per}; m++) a_reg[m] = a_tile[kk][ty + {threads} * m];
      for (int n = 0; n < {per}; n++) b_reg[n] = b_tile[kk][tx + {threads} * n];
      for (int m = 0; m < {per}; m++) for (int n = 0; n < {per}; n++) acc[m][n] += a_reg[m] * b_reg[n];
    }}
    {self.barrier}
  }}
  for (int m = 0; m < {per}; m++) for (int n = 0; n < {per}; n++) {{
    const long i = i0 + ty + {threads} * m, j = j0 + tx + {threads} * n;
    if (i < {spec.M} && j < {spec.N}) {store}
  }}
}}
"""
    launch = LaunchDims(spec.batch * tiles_m * tiles_n, local, ())
    return name, match.buffers, self.gemm_preamble() + src, launch

  def gemm_preamble(self) -> str: return ""

  def preamble(self, program: LoopProgram) -> str: return ""

  def render_kernel(self, program: LoopProgram) -> str:
    params = ", ".join(self.render_params(program))
    body = "\n".join(self.render_body(program))
    return f"{self.preamble(program)}{self.kernel_prefix}void {program.name}({params}) {{\n{body}\n}}\n"


__all__ = ["GPURenderer", "GPUPlan", "LaunchDims", "StoreText"]
