"""Recognize a matrix multiply in a kernel (a SUM over k of A*B, each read straight from a buffer with strides that
are affine in (batch, i, j, k)) and lower it to the tiled GEMM of codegen/gemm.py, with the rest of the kernel as
its epilogue. Anything that doesn't match exactly falls back to the generic loop program."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from teenygrad.codegen.gemm import GEMM_PREAMBLE, GemmSpec, render_gemm_body
from teenygrad.codegen.lower import Loop, Lowerer, LoopProgram
from teenygrad.dtype import dtypes
from teenygrad.ir.lazy import LazyBuffer
from teenygrad.ir.ops import ELEMENTWISE, Ops
from teenygrad.ir.symbolic import Variable
from teenygrad.ir.view import View, strides_for_shape


@dataclass
class GemmKernel:
  program: LoopProgram
  body: str


def _find_reduce(root: LazyBuffer, is_boundary) -> LazyBuffer | None:
  """The single SUM the kernel inlines, if the rest of it is elementwise."""
  found, stack, seen = [], [root], set()
  while stack:
    lb = stack.pop().base
    if lb.id in seen or (is_boundary(lb) and lb is not root) or lb.op is Ops.CONST: continue
    seen.add(lb.id)
    if lb.op is Ops.SUM: found.append(lb); continue
    if lb.op not in ELEMENTWISE and lb.op is not Ops.CONTIGUOUS: return None
    stack.extend(lb.srcs)
  return found[0] if len(found) == 1 else None


def _affine_strides(lb: LazyBuffer, is_boundary) -> tuple | None:
  if not lb.is_view and not is_boundary(lb): return None
  if not is_boundary(lb.base) or lb.dtype != dtypes.float32: return None
  if len(lb.st.views) != 1 or lb.st.views[0].mask is not None or not isinstance(lb.st.views[0].offset, int): return None
  if not all(isinstance(s, int) for s in lb.st.views[0].strides + lb.shape): return None
  return lb.st.views[0].strides, lb.st.views[0].offset


@dataclass
class GemmMatch:
  """A kernel recognized as a matmul: the operands (pointer expressions and strides) and the epilogue as a store."""
  spec: GemmSpec
  a: str
  b: str
  store: Callable[[str, str, str, str], str]
  buffers: list
  params: list[str]
  name: str


def try_gemm(root: LazyBuffer, target: LazyBuffer, is_boundary, renderer) -> tuple | None:
  """(name, buffers, source, launch dims or None) of the kernel as a GEMM, or None when it isn't one.

  A renderer with `render_gemm(match)` (the GPU's tiled kernel) renders it, or declines with None; otherwise the
  CPU's AVX-512 GEMM."""
  match = match_gemm(root, target, is_boundary, renderer)
  if match is None: return None
  if hasattr(renderer, "render_gemm"): return renderer.render_gemm(match)
  body = render_gemm_body(match.spec, match.a, match.b, match.store, renderer.threads)
  return match.name, match.buffers, GEMM_PREAMBLE + f"void {match.name}({', '.join(match.params)}) {body}\n", None


def match_gemm(root: LazyBuffer, target: LazyBuffer, is_boundary, renderer) -> GemmMatch | None:
  if root.dtype != dtypes.float32 or renderer.check_bounds: return None
  reduce = _find_reduce(root, is_boundary)
  if reduce is None or len(reduce.arg) != 1: return None
  src = reduce.srcs[0]
  full = src.shape
  k_axis = reduce.arg[0]
  if src.is_view or src.op is not Ops.MUL or k_axis != len(full) - 1 or len(full) < 3: return None
  if not all(isinstance(s, int) for s in full): return None
  if reduce.shape[:-1] != root.shape[:len(reduce.shape) - 1] or root.shape != reduce.shape[:-1]: return None
  operands = [_affine_strides(s, is_boundary) for s in src.srcs]
  if any(o is None for o in operands): return None
  *batch_shape, M, N, K = full
  (sa, oa), (sb, ob) = operands
  # A must not move with j, B must not move with i
  if sa[-2] != 0 or sb[-3] != 0: return None
  batch_dims = len(batch_shape)
  batch = 1
  for s in batch_shape: batch *= s
  def flat_batch_stride(strides):
    nonunit = [(n, st) for n, st in zip(batch_shape, strides[:batch_dims]) if n != 1]
    if not nonunit: return 0
    if len(nonunit) > 1:
      for (n0, s0), (n1, s1) in zip(nonunit, nonunit[1:]):
        if s0 != s1 * n1: return None
    return nonunit[-1][1]
  a_batch, b_batch = flat_batch_stride(sa), flat_batch_stride(sb)
  if a_batch is None or b_batch is None: return None
  spec = GemmSpec(batch, M, N, K, (a_batch, sa[-3], sa[-1]), (b_batch, sb[-1], sb[-2]))

  lowerer = Lowerer(root, target, is_boundary, renderer)
  a_buf, b_buf = lowerer._buffer(src.srcs[0].base), lowerer._buffer(src.srcs[1].base)
  # the epilogue runs per element with as its indices and tg_acc as the reduce's value
  loop_vars = [Variable("ep_bi", 0, max(batch - 1, 0)), Variable("ep_i", 0, M - 1), Variable("ep_j", 0, N - 1)]
  fake = Loop(loop_vars[2], N, None, "output", 1)
  for v in loop_vars: lowerer.loops_by_var[v.name] = fake
  batch_idx = View.create(tuple(batch_shape)).unravel(loop_vars[0]) if batch_shape else []
  idxs = list(batch_idx) + [loop_vars[1], loop_vars[2]]
  lowerer.gemm_reduce = reduce
  value, _ = lowerer.value(root, idxs, 1)
  out = lowerer.buffers[target.id]
  flat = sum((i * st for i, st in zip(idxs, strides_for_shape(root.shape))), 0)
  store_stmt = renderer.render_store(out, lowerer.index_expr(flat), value)
  stmts = [item.text for _, item in sorted(fake.items, key=lambda it: it[0])] + [store_stmt]
  if lowerer.prologue or lowerer.variables: return None
  epilogue = " ".join(stmts)
  def store(acc: str, bi: str, i: str, j: str) -> str:
    return f"{{ long ep_bi = {bi}; long ep_i = {i}; long ep_j = {j}; float ep_acc = {acc}; (void)ep_bi; (void)ep_i; (void)ep_j; {epilogue} }}"
  params = renderer.render_params(LoopProgram("gemm", list(lowerer.buffers.values()), [], [], [], set(), 0, 0))
  return GemmMatch(spec, f"({a_buf.name} + {oa})", f"({b_buf.name} + {ob})", store, list(lowerer.buffers.values()), params,
                   f"gemm_{batch}_{M}_{N}_{K}")
