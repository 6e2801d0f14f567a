"""Recognize a matrix multiply in a kernel (a SUM over k of A*B, each read straight from a buffer with strides that
are affine in (batch, i, j, k)) and lower it to the tiled GEMM of codegen/gemm.py, with the rest of the kernel as
its epilogue. Anything that doesn't match exactly falls back to the generic loop program."""
from __future__ import annotations

from dataclasses import dataclass

from teenygrad.codegen.gemm import GEMM_PREAMBLE, GemmSpec, render_gemm_body
from teenygrad.codegen.lower import BufferArg, Loop, Lowerer, LoopProgram
from teenygrad.dtype import DType, dtypes
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


def _affine_strides(lb: LazyBuffer, is_boundary, operand_dtypes) -> tuple | None:
  if not lb.is_view and not is_boundary(lb): return None
  if not is_boundary(lb.base) or lb.dtype not in operand_dtypes: return None
  if len(lb.st.views) != 1 or lb.st.views[0].mask is not None or not isinstance(lb.st.views[0].offset, int): return None
  if not all(isinstance(s, int) for s in lb.st.views[0].strides + lb.shape): return None
  return lb.st.views[0].strides, lb.st.views[0].offset


@dataclass
class GemmMatch:
  """A kernel that is C[bi, i, j] = epilogue(sum_k A[bi, i, k] * B[bi, k, j]), with A and B read from buffers.

  `epilogue` is a statement (rendered by the backend's renderer) that reads `ep_acc` (the sum, float32) and the
  indices `ep_bi`, `ep_i`, `ep_j`, and stores the output element."""
  spec: GemmSpec
  a: BufferArg
  b: BufferArg
  a_offset: int
  b_offset: int
  buffers: list[BufferArg]   # the kernel's parameters, output first
  epilogue: str
  operand_dtype: DType


def match_gemm(root: LazyBuffer, target: LazyBuffer, is_boundary, renderer,
               operand_dtypes=(dtypes.float32,)) -> GemmMatch | None:
  """Recognize the matmul; operands may be any of operand_dtypes (half types reach the sum through a float cast)."""
  if root.dtype not in (dtypes.float32, dtypes.float16, dtypes.bfloat16) or renderer.check_bounds: return None
  reduce = _find_reduce(root, is_boundary)
  if reduce is None or len(reduce.arg) != 1 or reduce.dtype != dtypes.float32: return None
  src = reduce.srcs[0]
  full = src.shape
  k_axis = reduce.arg[0]
  if not src.is_view and src.op is Ops.CAST and src.srcs[0].dtype in (dtypes.float16, dtypes.bfloat16): src = src.srcs[0]
  if src.is_view or src.op is not Ops.MUL or k_axis != len(full) - 1 or len(full) < 3: return None
  if not all(isinstance(s, int) for s in full): return None
  keepdim = root.shape == reduce.shape   # the kernel is the reduce itself, its k axis kept as size 1
  if root.shape != reduce.shape[:-1] and not keepdim: return None
  operands = [_affine_strides(s, is_boundary, operand_dtypes) for s in src.srcs]
  if any(o is None for o in operands) or src.srcs[0].dtype != src.srcs[1].dtype: return None
  *batch_shape, M, N, K = full
  # each output one dot product (a norm's sum of squares): nothing to tile, and a GEMM kernel of its own would cut
  # the reduce out of the kernel that consumes it
  if M == 1 and N == 1: return None
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
  # the epilogue runs per element with as its indices and ep_acc as the reduce's value
  loop_vars = [Variable("ep_bi", 0, max(batch - 1, 0)), Variable("ep_i", 0, M - 1), Variable("ep_j", 0, N - 1)]
  fake = Loop(loop_vars[2], N, None, "output", 1)
  for v in loop_vars: lowerer.loops_by_var[v.name] = fake
  batch_idx = View.create(tuple(batch_shape)).unravel(loop_vars[0]) if batch_shape else []
  idxs = list(batch_idx) + [loop_vars[1], loop_vars[2]] + ([0] if keepdim else [])
  lowerer.gemm_reduce = reduce
  value, _ = lowerer.value(root, idxs, 1)
  out = lowerer.buffers[target.id]
  flat = sum((i * st for i, st in zip(idxs, strides_for_shape(root.shape))), 0)
  store_stmt = renderer.render_store(out, lowerer.index_expr(flat), value)
  stmts = [item.text for _, item in sorted(fake.items, key=lambda it: it[0])] + [store_stmt]
  if lowerer.prologue or lowerer.variables: return None
  return GemmMatch(spec, a_buf, b_buf, oa, ob, list(lowerer.buffers.values()), " ".join(stmts), src.srcs[0].dtype)


def try_gemm(root: LazyBuffer, target: LazyBuffer, is_boundary, renderer) -> tuple | None:
  """The CPU GEMM: (kernel name, buffers, C source), or None when the kernel is not a float32 matmul."""
  if root.dtype != dtypes.float32: return None
  match = match_gemm(root, target, is_boundary, renderer)
  if match is None: return None
  spec = match.spec
  def store(acc: str, bi: str, i: str, j: str) -> str:
    return (f"{{ long ep_bi = {bi}; long ep_i = {i}; long ep_j = {j}; float ep_acc = {acc}; (void)ep_bi; (void)ep_i; (void)ep_j; "
            f"{match.epilogue} }}")
  body = render_gemm_body(spec, f"({match.a.name} + {match.a_offset})", f"({match.b.name} + {match.b_offset})", store, renderer.threads)
  params = renderer.render_params(LoopProgram("gemm", match.buffers, [], [], [], set(), 0, 0))
  name = f"gemm_{spec.batch}_{spec.M}_{spec.N}_{spec.K}"
  return name, match.buffers, GEMM_PREAMBLE + f"void {name}({', '.join(params)}) {body}\n"
