"""Kernel to loop program.

A kernel is one output base and the graph it inlines. Lowering walks that graph from the output with symbolic
index expressions: a view rewrites the indices, a load turns them into a flat offset, a reduce opens a loop of
its own. Every value becomes a statement tagged with the loop variables it depends on, and each statement is
placed in the innermost loop among those, so loop-invariant work is hoisted by construction: in a softmax the
row max and row sum are computed once per row, outside the loop that writes the row.

Output axes are grouped into levels (one flattened loop per level) so that every reduce depends on a prefix of
the levels; a reduce that can't be placed that way is handed back to the scheduler to become its own kernel.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field

from teenygrad.dtype import DType, dtypes
from teenygrad.helpers import prod
from teenygrad.ir.lazy import LazyBuffer
from teenygrad.ir.ops import REDUCE, REDUCE_IDENTITY, Ops
from teenygrad.ir.symbolic import And, Node, Sum, Variable, divmod_variables, logical_and, make_sum, sint, vmax, vmin
from teenygrad.ir.view import View, strides_for_shape


# work inlined into a kernel that evaluates it more often than it has results (see Lowerer._recomputed) becomes a
# kernel of its own when the repeated work exceeds both this many statements and REALIZE_COST per result (writing
# and reading back a buffer element); below that the extra kernel and buffer cost more than recomputing
RECOMPUTE_LIMIT = 1 << 16
REALIZE_COST = 4


class NeedsRealize(Exception):
  """Lowering found a base that must be its own kernel (a reduce that would be recomputed too often)."""
  def __init__(self, lb: LazyBuffer):
    super().__init__(f"realize {lb}")
    self.lb = lb


@dataclass
class Loop:
  var: Variable
  size: sint
  parent: Loop | None
  kind: str                      # "output" or "reduce"
  depth: int
  items: list = field(default_factory=list)   # (order, Stmt | Loop)
  order: float = 0.0
  reduce_acc: tuple | None = None  # (accumulator name, reduce op, dtype)   # accumulator this loop reduces into, for omp pragmas
  parallel: bool = False


@dataclass
class Stmt:
  text: object   # what the renderer's hooks returned: a line of source for the C family, an instruction tree for SPIR-V


@dataclass
class BufferArg:
  name: str
  lb: LazyBuffer          # the base whose buffer this is
  dtype: DType
  size: sint              # elements
  is_output: bool


@dataclass
class LoopProgram:
  name: str
  buffers: list[BufferArg]
  variables: list[Variable]        # symbolic sizes passed as int arguments
  prologue: list                    # items outside every loop
  root_loops: list[Loop]
  dtype_used: set[DType]
  work: int                          # rough count of inner-loop iterations, for the threading decision
  output_numel: sint
  # loop variables that step some load through consecutive elements (a term of stride 1 in its offset): GPU
  # renderers split such a reduce across lanes, whose reads then coalesce
  unit_stride: frozenset[str] = frozenset()


class Lowerer:
  def __init__(self, root: LazyBuffer, output_target: LazyBuffer, is_boundary, renderer, levels=None):
    self.root, self.target, self.is_boundary, self.r = root, output_target, is_boundary, renderer
    self.counter = itertools.count()
    # open reduce loops sit below everything placed so far until their body tells where they belong
    self.provisional_depth = itertools.count(1_000_000)
    self.names = itertools.count()
    self.memo: dict = {}
    self.emitted = 0   # statements emitted so far: what a subgraph cost to lower
    self.buffers: dict[int, BufferArg] = {}
    self.loops_by_var: dict[str, Loop] = {}
    self.prologue: list = []
    self.variables: dict[str, Variable] = {}
    self.dtypes: set[DType] = set()
    self.reduce_deps: list[tuple[LazyBuffer, frozenset[str]]] = []
    self.levels = levels
    self.work = 0
    self.divmod_vars: set[str] = set()   # loop variables some index has to unravel with // or %
    self.unit_stride: set[str] = set()   # loop variables with stride 1 in some load (LoopProgram.unit_stride)
    self.out_shape = root.shape
    # the output buffer is argument 0
    self._buffer(output_target, is_output=True)

  # ---- bookkeeping ----
  def _buffer(self, base: LazyBuffer, is_output=False) -> BufferArg:
    key = base.id
    if key not in self.buffers:
      # a symbolic size stays symbolic even once realized: the kernel serves every value, so prove bounds for all
      size = base.realized.size if base.realized is not None and not isinstance(base.size, Node) else base.size
      self.buffers[key] = BufferArg(f"data{len(self.buffers)}", base, base.dtype, size, is_output)
      self.dtypes.add(base.dtype)
    return self.buffers[key]

  def _note_variables(self, expr: sint) -> None:
    """Symbolic sizes (not loop indices) become int arguments of the kernel."""
    if isinstance(expr, Node):
      for v in expr.variables():
        if v.name not in self.loops_by_var: self.variables.setdefault(v.name, v)

  def _deps(self, expr: sint) -> frozenset[str]:
    if not isinstance(expr, Node): return frozenset()
    return frozenset(v.name for v in expr.variables() if v.name in self.loops_by_var)

  def _place(self, deps: frozenset[str]) -> Loop | None:
    loops = [self.loops_by_var[d] for d in deps]
    return max(loops, key=lambda lp: lp.depth) if loops else None

  def _emit(self, text: str, deps: frozenset[str], order: float | None = None) -> None:
    loop = self._place(deps)
    item = (next(self.counter) if order is None else order, Stmt(text))
    self.emitted += 1
    (loop.items if loop is not None else self.prologue).append(item)

  def _value(self, dtype: DType, expr, deps: frozenset[str]) -> tuple[str, frozenset[str]]:
    name = f"v{next(self.names)}"
    self._emit(self.r.render_define(dtype, name, expr), deps)
    return self.r.render_name(name, dtype), deps

  def _select(self, dtype: DType, cond, value) -> object:
    """`value` where `cond` holds, else zero (masked loads, padding)."""
    return self.r.render_alu(Ops.WHERE, [cond, value, self.r.render_const(0, dtype)], dtype)

  def _check_bounds(self, lb: LazyBuffer, buf: BufferArg) -> None:
    """Prove at compile time that every valid element of this view lies inside the buffer."""
    low, high = lb.st.bounds()
    if high < low: return
    if low < 0 or high >= vmax(buf.size):
      raise IndexError(f"kernel would read {buf.name}[{low}..{high}] outside its {buf.size} elements")

  # ---- the walk ----
  def index_expr(self, expr: sint) -> str:
    self._note_variables(expr)
    self.divmod_vars |= divmod_variables(expr)
    return self.r.render_index(expr)

  def staged_expr(self, expr: sint, dtype: DType) -> tuple[str, frozenset[str]]:
    """An index (a sum) or a mask (a conjunction) built up loop by loop: each part is computed in the outermost
    loop it depends on, so the inner loop adds one term instead of redoing all the index math and mask tests."""
    if isinstance(expr, Sum): parts, combine, op = list(expr.terms) + ([expr.const] if expr.const else []), make_sum, Ops.ADD
    elif isinstance(expr, And): parts, combine, op = list(expr.nodes), logical_and, Ops.AND
    else: return self.index_expr(expr), self._deps(expr)
    groups: dict[int, list] = {}
    for part in parts:
      loop = self._place(self._deps(part))
      groups.setdefault(loop.depth if loop is not None else 0, []).append(part)
    if len(groups) == 1: return self.index_expr(expr), self._deps(expr)
    acc, acc_deps = None, frozenset()
    for depth in sorted(groups):
      group = combine(groups[depth])
      text = self.index_expr(group)
      if acc is not None: text = self.r.render_alu(op, [acc, text], dtype)
      acc, acc_deps = self._value(dtype, text, acc_deps | self._deps(group))
    return acc, acc_deps

  def value(self, lb: LazyBuffer, idxs: list[sint], valid: sint) -> tuple[str, frozenset[str]]:
    key = (lb.id, tuple(i.key() if isinstance(i, Node) else i for i in idxs), valid.key() if isinstance(valid, Node) else valid)
    if key not in self.memo: self.memo[key] = self._value_uncached(lb, idxs, valid)
    return self.memo[key]

  def _value_uncached(self, lb: LazyBuffer, idxs: list[sint], valid: sint) -> tuple[str, frozenset[str]]:
    base = lb.base
    if isinstance(valid, int) and valid == 0: return self.r.render_const(0, lb.dtype), frozenset()
    if base.op is Ops.CONST and not base.realized:
      _, view_valid = lb.st.index(idxs)
      const = self.r.render_const(base.arg, lb.dtype)
      valid_all = logical_and([valid, view_valid])
      if isinstance(valid_all, int): return (const if valid_all else self.r.render_const(0, lb.dtype)), frozenset()
      cond = self.index_expr(valid_all)
      return self._value(lb.dtype, self._select(lb.dtype, cond, const), self._deps(valid_all))
    if self.is_boundary(base) and base is not self.root:
      buf = self._buffer(base)
      offset, view_valid = lb.st.index(idxs)
      valid_all = logical_and([valid, view_valid])
      if isinstance(valid_all, int) and valid_all == 0: return self.r.render_const(0, lb.dtype), frozenset()
      deps = self._deps(offset) | self._deps(valid_all)
      self._check_bounds(lb, buf)
      terms = offset.terms if isinstance(offset, Sum) else [offset]
      self.unit_stride |= {t.name for t in terms if isinstance(t, Variable) and t.name in self.loops_by_var}
      index, index_deps = self.staged_expr(offset, dtypes.int64)
      mask = None if valid_all == 1 else self.staged_expr(valid_all, dtypes.bool)[0]
      if mask is not None and 0 <= vmin(offset) and vmax(offset) < vmin(buf.size):
        # the index stays inside the buffer even where the mask is off (an inner tap of col2im, a padded read away
        # from the buffer's ends): load unconditionally and select, which vectorizes; a guarded load doesn't
        loaded, _ = self._value(lb.dtype, self.r.render_load(buf, index, None), index_deps)
        return self._value(lb.dtype, self._select(lb.dtype, mask, loaded), deps)
      return self._value(lb.dtype, self.r.render_load(buf, index, mask), deps)
    if lb.is_view:
      offset, view_valid = lb.st.index(idxs)
      base_idxs = _direct_base_indices(lb.st, base.shape, idxs)
      if base_idxs is None: base_idxs = View.create(base.shape).unravel(offset) if base.shape else []
      emitted = self.emitted
      value, deps = self.value(base, base_idxs, logical_and([valid, view_valid]))
      if self._recomputed(base, deps, self.emitted - emitted): raise NeedsRealize(base)
      if isinstance(view_valid, int): return value, deps
      # padding reads as zero, whatever the padded computation would give at those positions
      cond = self.index_expr(view_valid)
      return self._value(lb.dtype, self._select(lb.dtype, cond, value), deps | self._deps(view_valid))
    return self._compute(base, idxs, valid)

  def _compute(self, lb: LazyBuffer, idxs: list[sint], valid: sint) -> tuple[str, frozenset[str]]:
    op = lb.op
    if lb is getattr(self, "gemm_reduce", None): return "ep_acc", frozenset(("ep_bi", "ep_i", "ep_j"))
    if op is Ops.CONTIGUOUS: return self.value(lb.srcs[0], idxs, valid)
    if op in REDUCE: return self._reduce(lb, idxs, valid)
    if op in (Ops.CAST, Ops.BITCAST):
      src, deps = self.value(lb.srcs[0], idxs, valid)
      return self._value(lb.dtype, self.r.render_cast(src, lb.srcs[0].dtype, lb.dtype, op is Ops.BITCAST), deps)
    args = [self.value(src, idxs, valid) for src in lb.srcs]
    self._check_buffer_count(lb)
    deps = frozenset().union(*(d for _, d in args))
    in_dtype = lb.srcs[-1].dtype
    self.dtypes.add(in_dtype)
    return self._value(lb.dtype, self.r.render_alu(op, [a for a, _ in args], in_dtype), deps)

  def _check_buffer_count(self, lb: LazyBuffer) -> None:
    """A device may bind only so many buffers per kernel (32 on lavapipe): past that, an operand's subgraph becomes
    a kernel of its own, and again inside it if that is still too many."""
    limit = getattr(self.r, "max_buffers", None)
    if limit is None or len(self.buffers) <= limit: return
    computed = [s.base for s in lb.srcs if s.base.realized is None and s.base.op is not Ops.CONST and s.base is not self.root]
    if computed: raise NeedsRealize(computed[0])
    if lb is not self.root: raise NeedsRealize(lb)

  def _reduce(self, lb: LazyBuffer, idxs: list[sint], valid: sint) -> tuple[str, frozenset[str]]:
    src = lb.srcs[0]
    axes = lb.arg
    parent_vars = set(self.loops_by_var)
    loops = []
    inner_idxs = list(idxs)
    for axis in axes:
      name = f"r{next(self.names)}"
      var = Variable(name, 0, vmax(src.shape[axis]) - 1)
      loop = Loop(var, src.shape[axis], None, "reduce", 0)
      self._note_variables(src.shape[axis])
      self.loops_by_var[name] = loop
      loops.append(loop)
      inner_idxs[axis] = var
    acc_name = f"acc{next(self.names)}"
    acc = self.r.render_name(acc_name, lb.dtype)
    # a provisional depth below everything open, fixed once the body tells us what it depends on
    for lp in loops: lp.depth = next(self.provisional_depth)
    body, body_deps = self.value(src, inner_idxs, valid)
    own = frozenset(lp.var.name for lp in loops)
    outer_deps = body_deps - own
    enclosing_reduces = {d for d in outer_deps if self.loops_by_var[d].kind == "reduce" and d in parent_vars}
    if enclosing_reduces and prod(vmax(s) for s in src.shape) > 64:
      raise NeedsRealize(lb)
    if self._recomputed(lb, outer_deps, prod(vmax(lp.size) for lp in loops)): raise NeedsRealize(lb)
    self.reduce_deps.append((lb, frozenset(d for d in outer_deps if self.loops_by_var[d].kind == "output")))
    parent = self._place(outer_deps)
    base_depth = parent.depth if parent is not None else 0
    for i, lp in enumerate(loops):
      lp.parent = parent if i == 0 else loops[i - 1]
      lp.depth = base_depth + 1 + i
    identity = self.r.render_const(REDUCE_IDENTITY[lb.op](lb.dtype), lb.dtype)
    order = next(self.counter)
    container = parent.items if parent is not None else self.prologue
    container.append((order - 0.5, Stmt(self.r.render_define(lb.dtype, acc_name, identity, mutable=True))))
    innermost = loops[-1]
    innermost.items.append((next(self.counter), Stmt(self.r.render_accumulate(lb.op, acc, body, lb.dtype))))
    for i, lp in enumerate(loops):
      lp.order = order
      lp.reduce_acc = (acc, lb.op, lb.dtype)
      if i > 0: loops[i - 1].items.append((order, lp))
    container.append((order, loops[0]))
    runs, around = 1, parent   # the reduce runs once per iteration of every loop around it
    while around is not None: runs, around = runs * vmax(around.size), around.parent
    self.work += runs * prod(vmax(lp.size) for lp in loops)
    return acc, outer_deps

  def _recomputed(self, lb: LazyBuffer, deps: frozenset[str], cost: int) -> bool:
    """True when the kernel would compute each result of `lb` (a reduce, or inlined work read through a view) several
    times over: the loops its value depends on visit more points than it has results, because it is read through
    a view that repeats elements (a pooled map read by every im2col tap, a pooling window's max read by each
    input of the window, col2im read by a pooling backward). Then it is cheaper as a kernel of its own. A broadcast
    (a softmax's row max) repeats along loops the value doesn't depend on: it is hoisted instead and doesn't count.
    `cost` is the work of one evaluation (reduce iterations, or statements emitted)."""
    if lb is self.root or cost == 0: return False
    visits = prod(vmax(self.loops_by_var[d].size) for d in deps)
    results = prod(vmax(s) for s in lb.shape)
    extra = (visits - results) * cost
    return visits >= 2 * results and extra >= RECOMPUTE_LIMIT and extra >= REALIZE_COST * results


def lower(root: LazyBuffer, target: LazyBuffer, is_boundary, renderer, name_hint: str = "") -> LoopProgram:
  """Lower a kernel: probe which output axes each reduce depends on, group them into levels, then emit."""
  shape = root.shape
  axes = [i for i, s in enumerate(shape) if not (isinstance(s, int) and s == 1)]
  probe = Lowerer(root, target, is_boundary, renderer)
  probe_loops = _open_axis_loops(probe, [[a] for a in axes], shape)
  probe.value(root, _axis_indices(probe_loops, shape, axes, per_axis=True), 1)
  levels = _levels(probe, axes, probe_loops)
  # a level is one flattened loop unravelled by its sizes; a symbolic size there would need symbolic division
  levels = [sub for level in levels for sub in ([[a] for a in level] if any(isinstance(shape[a], Node) for a in level) else [level])]
  lowerer = _lower_levels(root, target, is_boundary, renderer, levels, shape, axes)
  split = getattr(renderer, "split_unraveled_levels", False)   # CPUs want hoisted index math; GPUs a flat grid
  if split and levels and len(levels[-1]) > 1 and f"L{len(levels) - 1}" in lowerer.divmod_vars:
    # the innermost level's flat index doesn't simplify (a transpose, im2col): give its inner axes loops of their
    # own so index math is hoisted out of the inner loop, keeping enough leading axes together for the threads
    outer, inner = _split_level(levels[-1], shape)
    levels = levels[:-1] + ([outer] if outer else []) + [[a] for a in inner]
    lowerer = _lower_levels(root, target, is_boundary, renderer, levels, shape, axes)
  return _finish_program(lowerer, root, shape, name_hint)


def _split_level(level: list[int], shape, parallel_rows: int = 64) -> tuple[list[int], list[int]]:
  outer, rows = [], 1
  for a in level[:-1]:
    if rows >= parallel_rows: break
    outer.append(a)
    rows *= vmax(shape[a])
  return outer, level[len(outer):]


def _lower_levels(root, target, is_boundary, renderer, levels, shape, axes) -> Lowerer:
  lowerer = Lowerer(root, target, is_boundary, renderer, levels)
  level_loops = _open_axis_loops(lowerer, levels, shape)
  idxs = _axis_indices(level_loops, shape, axes, per_axis=False, levels=levels)
  value, deps = lowerer.value(root, idxs, 1)
  out = lowerer.buffers[target.id]
  flat = sum((i * st for i, st in zip(idxs, strides_for_shape(shape))), 0)
  lowerer._emit(renderer.render_store(out, lowerer.index_expr(flat), value), frozenset(lp.var.name for lp in level_loops))
  lowerer.level_loops = level_loops
  return lowerer


def _finish_program(lowerer: Lowerer, root: LazyBuffer, shape, name_hint: str) -> LoopProgram:
  level_loops = lowerer.level_loops
  output_numel = prod(vmax(s) for s in shape)
  lowerer.work += output_numel
  roots = level_loops[:1]
  variables = sorted(lowerer.variables.values(), key=lambda v: v.name)
  name = _kernel_name(name_hint, root, shape, lowerer.is_boundary)
  return LoopProgram(name, list(lowerer.buffers.values()), variables, lowerer.prologue, roots, lowerer.dtypes,
                     max(lowerer.work, 1), output_numel, frozenset(lowerer.unit_stride))


def _open_axis_loops(lowerer: Lowerer, levels: list[list[int]], shape) -> list[Loop]:
  loops: list[Loop] = []
  for depth, level in enumerate(levels):
    size = 1
    for a in level: size = size * shape[a]
    name = f"L{depth}"
    loop = Loop(Variable(name, 0, vmax(size) - 1), size, loops[-1] if loops else None, "output", depth + 1)
    lowerer.loops_by_var[name] = loop
    lowerer._note_variables(size)
    if loops: loops[-1].items.append((float("inf"), loop))
    loops.append(loop)
  return loops


def _axis_indices(loops: list[Loop], shape, axes, per_axis: bool, levels=None) -> list[sint]:
  idxs: list[sint] = [0] * len(shape)
  if per_axis:
    for loop, a in zip(loops, axes): idxs[a] = loop.var
    return idxs
  for loop, level in zip(loops, levels):
    sizes = [shape[a] for a in level]
    for a, idx in zip(level, View.create(tuple(sizes)).unravel(loop.var) if len(level) > 1 else [loop.var]):
      idxs[a] = idx
  return idxs


def _levels(probe: Lowerer, axes: list[int], probe_loops: list[Loop]) -> list[list[int]]:
  """Order the output axes so each reduce depends on a prefix; fail with NeedsRealize if impossible."""
  axis_of = {lp.var.name: a for lp, a in zip(probe_loops, axes)}
  dep_sets = sorted({frozenset(axis_of[d] for d in deps if d in axis_of) for _, deps in probe.reduce_deps}, key=len)
  for lb, deps in probe.reduce_deps:
    mine = frozenset(axis_of[d] for d in deps if d in axis_of)
    if any(not (mine <= other or other <= mine) for other in dep_sets): raise NeedsRealize(lb)
  levels, seen = [], frozenset()
  for deps in dep_sets + [frozenset(axes)]:
    new = sorted(deps - seen)
    if new: levels.append(new)
    seen = seen | deps
  return levels


def _kernel_name(hint: str, root: LazyBuffer, shape, is_boundary) -> str:
  kind = "r" if _has_reduce(root, is_boundary) else "E"
  dims = "_".join(str(s) if isinstance(s, int) else "s" for s in shape) or "0"
  return f"{hint or kind}_{dims}"


def _has_reduce(root: LazyBuffer, is_boundary) -> bool:
  """Whether the kernel computing root reduces: a walk of its own graph, stopping at the buffers it reads."""
  seen, stack = set(), [root]
  while stack:
    base = stack.pop().base
    if base.id in seen or base.realized is not None or (base is not root.base and is_boundary(base)): continue
    if base.op in REDUCE: return True
    seen.add(base.id)
    stack.extend(base.srcs)
  return False


__all__ = ["lower", "LoopProgram", "Loop", "Stmt", "BufferArg", "NeedsRealize", "dtypes"]


def _same_size(a: sint, b: sint) -> bool:
  if isinstance(a, int) or isinstance(b, int): return isinstance(a, int) and isinstance(b, int) and a == b
  return a.key() == b.key()


def _direct_base_indices(st, base_shape: tuple, idxs: list[sint]) -> list[sint] | None:
  """Base indices read straight off a view that only permutes, expands or adds/removes size-1 dims of its base.

  The general path flattens the view's offset and unravels it over the base's shape, which divides by the base's
  strides: impossible when they are symbolic (a KV cache length). None when the view is anything else."""
  if len(st.views) != 1: return None
  view = st.views[0]
  if view.mask is not None or not (isinstance(view.offset, int) and view.offset == 0): return None
  used = set()
  out: list[sint] = []
  for size, stride in zip(base_shape, strides_for_shape(base_shape)):
    if isinstance(size, int) and size == 1: out.append(0); continue
    match = [d for d, (s, st_) in enumerate(zip(view.shape, view.strides)) if _same_size(st_, stride) and _same_size(s, size)]
    if len(match) != 1: return None
    used.add(match[0])
    out.append(idxs[match[0]])
  if any(d not in used and not (isinstance(st_, int) and st_ == 0) for d, st_ in enumerate(view.strides)): return None
  return out
