"""Loop program to GPU kernel source: the part CUDA and OpenCL share.

The lowerer's loop program has output levels (L0 outermost) with reduce loops placed in the innermost level they
depend on. A GPU renderer maps it onto a 1-D grid in one of two ways:

- grid: one work-item per element of the outermost level L0 (`group * LOCAL + lane`, bounds-checked against the
  possibly symbolic size). Everything inside L0 (reduce loops, inner levels) runs serially in the work-item.
  Matmuls and elementwise kernels look like this.
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
  grid_loop: Loop | None       # the loop indexed by the global id (grid) or the group id (group)
  split_container: list        # group mode: the items whose reduce loops and next output loop are split over lanes
  reduces: list[Loop]          # group mode: the reduce loops combined across the work-group


class StoreText(str):
  """A rendered store, so group mode can let one lane write a value every lane holds."""


def _is_pow2(x: int) -> bool: return x > 0 and x & (x - 1) == 0


class GPURenderer(CStyleRenderer):
  # ---- what a subclass spells ----
  kernel_prefix = ""
  buffer_qualifier = ""
  index_type = "long"
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
      return self._group_plan(None, program.prologue + [(float("inf"), lp) for lp in program.root_loops], top_reduces)
    if program.root_loops:
      outer = program.root_loops[0]
      reduces = [item for _, item in outer.items if isinstance(item, Loop) and item.kind == "reduce"]
      if self._long(reduces) and vmax(outer.size) <= self.group_max_outputs:
        return self._group_plan(outer, outer.items, reduces)
      return GPUPlan("grid", self.grid_local, outer, [], [])
    return GPUPlan("grid", 1, None, [], [])

  def _long(self, reduces: list[Loop]) -> bool:
    return any(vmax(lp.size) >= self.group_min_reduce for lp in reduces)

  def _group_plan(self, grid_loop: Loop | None, container: list, reduces: list[Loop]) -> GPUPlan:
    # every combined reduce holds one shared slot per lane: stay inside the device's local memory
    local = self.group_local
    while local > 32 and len(reduces) * local * 8 > self.local_memory // 2: local //= 2
    return GPUPlan("group", local, grid_loop, container, reduces)

  def launch_dims(self, program: LoopProgram) -> LaunchDims:
    plan = self.plan(program)
    if plan.grid_loop is None: groups: sint = 1
    elif plan.mode == "group": groups = plan.grid_loop.size
    else: groups = (plan.grid_loop.size + plan.local - 1) // plan.local
    return LaunchDims(groups, plan.local, tuple(program.variables))

  # ---- statements ----
  def render_store(self, buf: BufferArg, index: str, value: str) -> StoreText:
    return StoreText(super().render_store(buf, index, value))

  def render_params(self, program: LoopProgram) -> list[str]:
    params = []
    for buf in program.buffers:
      const = "" if buf.is_output else "const "
      params.append(f"{self.buffer_qualifier}{const}{self.storage_type(buf.dtype)}* restrict {buf.name}")
    return params + [f"{self.index_type} {v.name}" for v in program.variables]

  def shared_type(self, dtype: DType) -> str:
    return "int" if dtype == dtypes.bool else self.compute_type(dtype)

  def combine(self, op: Ops, a: str, b: str, dtype: DType) -> str:
    if op is Ops.SUM: return f"({a}||{b})" if dtype.is_bool else f"({a}+{b})"
    return self.render_alu(Ops.MAX, [a, b], dtype)

  def render_group_reduce(self, acc: str, op: Ops, dtype: DType, shared: str, local: int, pad: str) -> list[str]:
    """Combine every lane's partial `acc` so that each lane holds the work-group's total."""
    lane = "lane"
    fmt = self.subgroup_reduce.get(op)
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

  def render_body(self, program: LoopProgram) -> list[str]:
    plan = self.plan(program)
    lines = [f"  const int lane = {self.local_id};"]
    for lp in plan.reduces:
      acc, _, dtype = lp.reduce_acc
      lines.append(f"  {self.shared_qualifier} {self.shared_type(dtype)} shared_{acc}[{plan.local}];")
    outer = plan.grid_loop
    if outer is not None:
      var, size = outer.var.name, render_sint(outer.size)
      index = f"(({self.index_type}){self.group_id})" if plan.mode == "group" else \
        f"(({self.index_type}){self.group_id} * {plan.local} + lane)"
      # the bound is uniform across a group in group mode, so no lane skips a barrier
      lines += [f"  const {self.index_type} {var} = {index};", f"  if ({var} >= {size}) return;"]
    if plan.mode == "group":
      if outer is None: return lines + self._render_items(plan.split_container, 1, plan, True)
      return lines + self._render_items(program.prologue, 1, plan, False) + self._render_items(outer.items, 1, plan, True)
    lines += self._render_items(program.prologue, 1, plan, False)
    if outer is not None: lines += self._render_items(outer.items, 1, plan, False)
    return lines

  def preamble(self, program: LoopProgram) -> str: return ""

  def render_kernel(self, program: LoopProgram) -> str:
    params = ", ".join(self.render_params(program))
    body = "\n".join(self.render_body(program))
    return f"{self.preamble(program)}{self.kernel_prefix}void {program.name}({params}) {{\n{body}\n}}\n"


__all__ = ["GPURenderer", "GPUPlan", "LaunchDims", "StoreText"]
