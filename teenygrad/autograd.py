"""Gradient rules, one per primitive, in a table. Each rule takes (grad of the output, the op's context) and
returns one gradient per input (None where an input gets none). Rules are written with Tensor ops, so the
backward pass is itself lazy and fuses like any other graph."""
from __future__ import annotations

import math
from typing import TYPE_CHECKING
from collections.abc import Callable

from teenygrad.ir.ops import Ops

if TYPE_CHECKING:
  from teenygrad.tensor.tensor import Tensor

LN2 = math.log(2)


class Context:
  """What backward needs from one primitive application."""
  __slots__ = ("op", "inputs", "arg", "output")

  def __init__(self, op: Ops, inputs: tuple, arg, output):
    self.op, self.inputs, self.arg, self.output = op, inputs, arg, output


def _max_grad(g, ctx):
  x, y = ctx.inputs
  x_wins = (x > y).cast(g.dtype) + (x == y).cast(g.dtype) * 0.5
  return g * x_wins, g * (1.0 - x_wins)


def _reduce_max_grad(g, ctx):
  x = ctx.inputs[0]
  out = ctx.output.detach()
  hits = (x == out.expand(*x.shape)).cast(g.dtype)
  count = hits._reduce(Ops.SUM, ctx.arg).expand(*x.shape)
  return (hits / count * g.expand(*x.shape),)


def _expand_grad(g, ctx):
  x = ctx.inputs[0]
  axes = tuple(i for i, (a, b) in enumerate(zip(x.shape, g.shape)) if a != b)
  return (_sum_product(g, axes) if axes else g,)


def _sum_product(g, axes: tuple[int, ...]):
  """Sum g over axes. When g is a product not yet computed (the backward of a matmul or a conv's weight), multiply its
  operands with the summed axes moved last and merged into one, so the reduction has the form the code generator
  tiles as a GEMM (a SUM over the last axis of A*B) instead of a strided reduce over a leading axis."""
  lb = g.lazydata
  trailing = axes == tuple(range(g.ndim - len(axes), g.ndim))
  if g.requires_grad or lb.is_view or lb.op is not Ops.MUL or lb.realized is not None or (trailing and len(axes) == 1):
    return g._reduce(Ops.SUM, axes)
  keep = tuple(i for i in range(g.ndim) if i not in axes)
  size = 1
  for a in axes: size *= g.shape[a]
  flat = tuple(g.shape[i] for i in keep) + (size,)
  for src in lb.srcs:
    # an operand computed inline (relu of the layer below) would keep the GEMM from reading it straight from memory
    if src.base.realized is None and src.base.op is not Ops.CONST: src.base.forced = True
  a, b = (src.permute(keep + axes).reshape(flat) for src in lb.srcs)
  summed = a.alu(Ops.MUL, b).reduce(Ops.SUM, (len(flat) - 1,))
  return type(g)(summed.reshape(tuple(1 if i in axes else s for i, s in enumerate(g.shape))))


def _inverse_permute(order): return tuple(sorted(range(len(order)), key=order.__getitem__))


GRADIENTS: dict[Ops, Callable] = {
  Ops.EXP2: lambda g, ctx: (g * ctx.output.detach() * LN2,),
  Ops.LOG2: lambda g, ctx: (g / (ctx.inputs[0].detach() * LN2),),
  Ops.SIN: lambda g, ctx: (g * (ctx.inputs[0].detach() + math.pi / 2)._apply(Ops.SIN),),
  Ops.SQRT: lambda g, ctx: (g / (ctx.output.detach() * 2),),
  Ops.RECIPROCAL: lambda g, ctx: (-g * ctx.output.detach() * ctx.output.detach(),),
  Ops.CAST: lambda g, ctx: (g.cast(ctx.inputs[0].dtype) if ctx.inputs[0].dtype.is_float else None,),
  Ops.ADD: lambda g, ctx: (g, g),
  Ops.MUL: lambda g, ctx: (g * ctx.inputs[1].detach(), g * ctx.inputs[0].detach()),
  Ops.MAX: lambda g, ctx: _max_grad(g, _detached_ctx(ctx)),
  Ops.WHERE: lambda g, ctx: (None, ctx.inputs[0].detach()._where(g, 0.0), ctx.inputs[0].detach()._where(0.0, g)),
  Ops.SUM: lambda g, ctx: (g.expand(*ctx.inputs[0].shape),),
  Ops.REDUCE_MAX: lambda g, ctx: _reduce_max_grad(g, _detached_ctx(ctx)),
  Ops.RESHAPE: lambda g, ctx: (g.reshape(ctx.inputs[0].shape),),
  Ops.PERMUTE: lambda g, ctx: (g.permute(_inverse_permute(ctx.arg)),),
  Ops.EXPAND: _expand_grad,
  Ops.PAD: lambda g, ctx: (g._shrink(tuple((p, s + p) for (p, _), s in zip(ctx.arg, ctx.inputs[0].shape))),),
  Ops.SHRINK: lambda g, ctx: (g._pad(tuple((b, s - e) for (b, e), s in zip(ctx.arg, ctx.inputs[0].shape))),),
  Ops.FLIP: lambda g, ctx: (g._flip(ctx.arg),),
  Ops.CONTIGUOUS: lambda g, ctx: (g,),
  Ops.COPY: lambda g, ctx: (g.to(ctx.inputs[0].device),),
}


def _detached_ctx(ctx: Context) -> Context:
  return Context(ctx.op, tuple(t.detach() for t in ctx.inputs), ctx.arg, ctx.output)


def backward(root: Tensor, gradient: Tensor, retain_graph: bool = False) -> None:
  """Reverse-mode sweep from root; leaves that require grad accumulate into .grad."""
  order: list = []
  seen: set[int] = set()
  stack = [(root, False)]
  while stack:
    node, done = stack.pop()
    if done: order.append(node); continue
    if id(node) in seen or node._ctx is None: continue
    seen.add(id(node))
    stack.append((node, True))
    for parent in node._ctx.inputs:
      if parent.requires_grad: stack.append((parent, False))
  grads: dict[int, Tensor] = {id(root): gradient}
  for node in reversed(order):
    g = grads.pop(id(node), None)
    if g is None: continue
    ctx = node._ctx
    if ctx.op in GRADIENTS: input_grads = GRADIENTS[ctx.op](g, ctx)
    elif ctx.op is Ops.CUSTOM: input_grads = ctx.arg.backward(g, ctx)
    else: raise RuntimeError(f"no gradient rule for {ctx.op.name}")
    for parent, pg in zip(ctx.inputs, input_grads):
      if pg is None or not parent.requires_grad: continue
      if pg.shape != parent.shape: raise AssertionError(f"grad shape {pg.shape} != {parent.shape} for {ctx.op}")
      if parent._ctx is None:   # a leaf
        pg = pg.cast(parent.dtype) if pg.dtype != parent.dtype else pg
        parent.grad = pg if parent.grad is None else parent.grad + pg
      else:
        grads[id(parent)] = pg if id(parent) not in grads else grads[id(parent)] + pg
  if not retain_graph:   # as torch: the graph is freed, which also lets its memory go
    for node in order:
      node._ctx = None
      node.graph_freed = True
