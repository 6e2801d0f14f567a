"""Graph to kernels: which bases get a buffer of their own, and in what order the kernels run.

Every unrealized base either becomes a kernel output (a "root") or is inlined into the kernels that read it:
- elementwise work is inlined into every consumer (recomputing a cheap chain beats a round trip to memory),
  unless it contains a reduce or reads many buffers (MAX_SHARED_READS) and its consumers end up in different kernels;
- a reduce is inlined when all its consumers land in one kernel (the matmul epilogue, the softmax row sums);
  the code generator may still hand one back (NeedsRealize) and the engine reschedules with it forced;
- copies, custom kernels (and the sources a custom kernel reads), assigns and explicit `contiguous()` are always roots.
This module is pure: it never touches a device.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from teenygrad.ir.lazy import LazyBuffer
from teenygrad.ir.ops import REDUCE, Ops

ALWAYS_ROOT = {Ops.COPY, Ops.CUSTOM, Ops.ASSIGN, Ops.CONTIGUOUS, Ops.LOAD}
# An elementwise chain read by several kernels is recomputed in each only while it reads at most this many buffers.
# A longer one (a residual stream summed over a model's layers) is stored once: recomputed, it would grow every
# kernel that reads it, and each of those kernels would be a new source to compile.
MAX_SHARED_READS = 8


@dataclass
class ScheduleItem:
  root: LazyBuffer                 # the base this item computes
  roots: set[int] = field(default_factory=set)   # the ids of every root of the schedule it belongs to

  @property
  def kind(self) -> str: return _ITEM_KINDS.get(self.root.op, "kernel")

  @property
  def inputs(self) -> list[LazyBuffer]:
    """The bases whose buffers it reads (walked on demand: the engine itself never asks)."""
    return [] if self.root.op is Ops.LOAD else _kernel_inputs(self.root, self.roots)


_ITEM_KINDS = {Ops.COPY: "copy", Ops.CUSTOM: "custom", Ops.LOAD: "alloc"}


def _unrealized_bases(outputs: list[LazyBuffer]) -> list[LazyBuffer]:
  """Producers before consumers."""
  order: list[LazyBuffer] = []
  seen: set[int] = set()
  stack = [(o.base, False) for o in outputs]
  while stack:
    node, expanded = stack.pop()
    if expanded: order.append(node); continue
    if node.id in seen or node.realized is not None: continue
    seen.add(node.id)
    stack.append((node, True))
    for src in node.srcs: stack.append((src.base, False))
  # the DFS above appends in postorder per branch; dedupe keeping the first (deepest) occurrence
  return order


def _contains_reduce(base: LazyBuffer, roots: set[int], memo: dict[int, bool]) -> bool:
  if base.id in memo: return memo[base.id]
  result = False
  if base.realized is None and base.id not in roots:
    result = base.op in REDUCE or any(_contains_reduce(s.base, roots, memo) for s in base.srcs)
  memo[base.id] = result
  return result


def _reads_many(base: LazyBuffer, roots: set[int], limit: int = MAX_SHARED_READS) -> bool:
  """Whether base, inlined, would read more than `limit` buffers; a reduce not placed yet counts as one."""
  leaves: set[int] = set()
  seen: set[int] = set()
  stack = [base]
  while stack:
    for src in stack.pop().srcs:
      b = src.base
      if b.id in seen or (b.op is Ops.CONST and b.realized is None): continue
      seen.add(b.id)
      if b.realized is not None or b.id in roots or b.op in REDUCE or b.op in ALWAYS_ROOT:
        leaves.add(b.id)
        if len(leaves) > limit: return True
      else: stack.append(b)
  return False


def find_roots(outputs: list[LazyBuffer]) -> tuple[list[LazyBuffer], set[int]]:
  order = _unrealized_bases(outputs)
  consumers: dict[int, list[LazyBuffer]] = {b.id: [] for b in order}
  for b in order:
    for src in b.srcs:
      if src.base.id in consumers and b not in consumers[src.base.id]: consumers[src.base.id].append(b)
  roots = {o.base.id for o in outputs if o.base.realized is None}
  roots |= {b.id for b in order if b.forced or b.op in ALWAYS_ROOT}
  # a custom kernel reads its sources as buffers, so they can't be inlined into it
  roots |= {s.base.id for b in order if b.op is Ops.CUSTOM for s in b.srcs if s.base.realized is None and s.base.op is not Ops.CONST}
  kernels_of: dict[int, frozenset[int]] = {}
  reduce_memo: dict[int, bool] = {}
  for b in reversed(order):   # consumers first
    if b.op is Ops.CONST: continue
    if b.id in roots:
      kernels_of[b.id] = frozenset([b.id]); continue
    kernel_sets = frozenset().union(*(kernels_of.get(c.id, frozenset()) for c in consumers[b.id]))
    single = len(kernel_sets) == 1
    if b.op in REDUCE: inline = single
    else: inline = single or not (_contains_reduce(b, roots, reduce_memo) or _reads_many(b, roots))
    if inline: kernels_of[b.id] = kernel_sets
    else:
      roots.add(b.id)
      kernels_of[b.id] = frozenset([b.id])
  return order, roots


def create_schedule(outputs: list[LazyBuffer]) -> list[ScheduleItem]:
  order, roots = find_roots(outputs)
  return [ScheduleItem(b, roots) for b in order if b.id in roots]


def _kernel_inputs(root: LazyBuffer, roots: set[int]) -> list[LazyBuffer]:
  found: dict[int, LazyBuffer] = {}
  seen: set[int] = set()
  stack = list(root.srcs)
  while stack:
    base = stack.pop().base
    if base.id in seen: continue
    seen.add(base.id)
    if base.realized is not None or base.id in roots:
      if base.op is not Ops.CONST or base.realized is not None: found[base.id] = base
      continue
    stack.extend(base.srcs)
  return list(found.values())
