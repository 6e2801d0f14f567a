"""Symbolic integers: index math for kernels and sizes that are bound per call (a sequence position).

An expression is a python `int` or a `Node`. Every node knows its bounds (`vmin`, `vmax`), which is what
lets the code generator drop index wrap-arounds and prove at compile time that a load stays in its buffer.
Simplification happens on construction, so equal expressions usually render to equal strings.
"""
from __future__ import annotations

import math
from typing import Union

sint = Union[int, "Node"]


class Node:
  vmin: int
  vmax: int

  # ---- arithmetic builds simplified nodes ----
  def __add__(self, other: sint) -> sint: return make_sum([self, other])
  def __radd__(self, other: sint) -> sint: return make_sum([other, self])
  def __sub__(self, other: sint) -> sint: return make_sum([self, mul(other, -1)])
  def __rsub__(self, other: sint) -> sint: return make_sum([other, mul(self, -1)])
  def __neg__(self) -> sint: return mul(self, -1)
  def __mul__(self, other: sint) -> sint: return mul(self, other)
  def __rmul__(self, other: sint) -> sint: return mul(self, other)
  def __floordiv__(self, other: sint) -> sint: return floordiv(self, other)
  def __mod__(self, other: sint) -> sint: return mod(self, other)
  def __lt__(self, other: sint) -> sint: return less_than(self, other)
  def __ge__(self, other: sint) -> sint: return logical_not(less_than(self, other))
  def __gt__(self, other: sint) -> sint: return less_than(other, self)
  def __le__(self, other: sint) -> sint: return logical_not(less_than(other, self))

  # Nodes are hashed structurally so they can key caches (a kernel compiled for `seq_len`, not for 17).
  def key(self) -> tuple: raise NotImplementedError
  def __hash__(self) -> int: return hash(self.key())
  def __eq__(self, other) -> bool:  # type: ignore[override]
    return isinstance(other, Node) and self.key() == other.key()

  def variables(self) -> set[Variable]: raise NotImplementedError
  def substitute(self, values: dict[Variable, sint]) -> sint: raise NotImplementedError
  def render(self) -> str: raise NotImplementedError
  def __repr__(self) -> str: return f"<{self.render()}>"
  def __bool__(self) -> bool:
    if self.vmin == self.vmax: return bool(self.vmin)
    raise TypeError(f"the truth of symbolic {self.render()} is unknown until it is bound")


class Variable(Node):
  """A named integer in [vmin, vmax]: a loop index, or a size bound to a value at each call."""
  def __init__(self, name: str, vmin: int, vmax: int):
    if vmin > vmax: raise ValueError(f"empty range for variable {name}: [{vmin}, {vmax}]")
    self.name, self.vmin, self.vmax = name, vmin, vmax
  def key(self) -> tuple: return ("var", self.name, self.vmin, self.vmax)
  def variables(self) -> set[Variable]: return {self}
  def substitute(self, values: dict[Variable, sint]) -> sint: return values.get(self, self)
  def render(self) -> str: return self.name
  def bind(self, value: int) -> BoundVariable:
    """This variable with a value for one call (what the JIT and symbolic shapes take)."""
    return BoundVariable(self.name, self.vmin, self.vmax, value)


class BoundVariable(Variable):
  """A variable together with the value it has for one call (what a symbolic shape holds)."""
  def __init__(self, name: str, vmin: int, vmax: int, value: int):
    super().__init__(name, vmin, vmax)
    if not vmin <= value <= vmax: raise ValueError(f"{name}={value} is outside its range [{vmin}, {vmax}]")
    self.value = value
  def unbind(self) -> tuple[Variable, int]: return Variable(self.name, self.vmin, self.vmax), self.value


class Sum(Node):
  def __init__(self, terms: list[Node], const: int):
    self.terms, self.const = terms, const
    self.vmin = const + sum(t.vmin for t in terms)
    self.vmax = const + sum(t.vmax for t in terms)
  def key(self) -> tuple: return ("sum", tuple(t.key() for t in self.terms), self.const)
  def variables(self) -> set[Variable]: return set().union(*(t.variables() for t in self.terms))
  def substitute(self, values): return make_sum([t.substitute(values) for t in self.terms] + [self.const])
  def render(self) -> str:
    parts = [t.render() for t in self.terms] + ([str(self.const)] if self.const else [])
    return "(" + "+".join(parts).replace("+-", "-") + ")"


class Mul(Node):
  """node * factor, factor an int or another node (a symbolic stride)."""
  def __init__(self, node: Node, factor: sint):
    self.node, self.factor = node, factor
    if isinstance(factor, int):
      ends = (node.vmin * factor, node.vmax * factor)
    else:
      ends = tuple(a * b for a in (node.vmin, node.vmax) for b in (factor.vmin, factor.vmax))
    self.vmin, self.vmax = min(ends), max(ends)
  def key(self) -> tuple: return ("mul", self.node.key(), _key(self.factor))
  def variables(self) -> set[Variable]: return self.node.variables() | _vars(self.factor)
  def substitute(self, values): return mul(self.node.substitute(values), _subst(self.factor, values))
  def render(self) -> str: return f"({self.node.render()}*{_render(self.factor)})"


class FloorDiv(Node):
  def __init__(self, node: Node, divisor: int):
    self.node, self.divisor = node, divisor
    self.vmin, self.vmax = node.vmin // divisor, node.vmax // divisor
  def key(self) -> tuple: return ("div", self.node.key(), self.divisor)
  def variables(self) -> set[Variable]: return self.node.variables()
  def substitute(self, values): return floordiv(self.node.substitute(values), self.divisor)
  def render(self) -> str:
    if self.node.vmin >= 0: return f"({self.node.render()}/{self.divisor})"
    # C division truncates; floor it for numerators that can be negative
    return f"floordiv_i({self.node.render()},{self.divisor})"


class Mod(Node):
  def __init__(self, node: Node, divisor: int):
    self.node, self.divisor = node, divisor
    self.vmin, self.vmax = 0, divisor - 1
  def key(self) -> tuple: return ("mod", self.node.key(), self.divisor)
  def variables(self) -> set[Variable]: return self.node.variables()
  def substitute(self, values): return mod(self.node.substitute(values), self.divisor)
  def render(self) -> str:
    if self.node.vmin >= 0: return f"({self.node.render()}%{self.divisor})"
    return f"floormod_i({self.node.render()},{self.divisor})"


class LessThan(Node):
  """1 if left < right else 0."""
  def __init__(self, left: Node, right: sint):
    self.left, self.right = left, right
    self.vmin, self.vmax = 0, 1
  def key(self) -> tuple: return ("lt", self.left.key(), _key(self.right))
  def variables(self) -> set[Variable]: return self.left.variables() | _vars(self.right)
  def substitute(self, values): return less_than(self.left.substitute(values), _subst(self.right, values))
  def render(self) -> str: return f"({self.left.render()}<{_render(self.right)})"


class And(Node):
  def __init__(self, nodes: list[Node]):
    self.nodes = nodes
    self.vmin, self.vmax = 0, 1
  def key(self) -> tuple: return ("and", tuple(n.key() for n in self.nodes))
  def variables(self) -> set[Variable]: return set().union(*(n.variables() for n in self.nodes))
  def substitute(self, values): return logical_and([n.substitute(values) for n in self.nodes])
  def render(self) -> str: return "(" + "&&".join(n.render() for n in self.nodes) + ")"


class Not(Node):
  def __init__(self, node: Node):
    self.node = node
    self.vmin, self.vmax = 0, 1
  def key(self) -> tuple: return ("not", self.node.key())
  def variables(self) -> set[Variable]: return self.node.variables()
  def substitute(self, values): return logical_not(self.node.substitute(values))
  def render(self) -> str: return f"(!{self.node.render()})"


# ---- helpers on sint ----

def _key(x: sint): return x.key() if isinstance(x, Node) else x
def _vars(x: sint) -> set[Variable]: return x.variables() if isinstance(x, Node) else set()
def _subst(x: sint, values) -> sint: return x.substitute(values) if isinstance(x, Node) else x
def _render(x: sint) -> str: return x.render() if isinstance(x, Node) else str(x)


def render(x: sint) -> str: return _render(x)
def vmin(x: sint) -> int: return x.vmin if isinstance(x, Node) else x
def vmax(x: sint) -> int: return x.vmax if isinstance(x, Node) else x
def variables(x: sint) -> set[Variable]: return _vars(x)


def divmod_variables(x: sint) -> set[str]:
  """Names of the variables that appear under a // or % (what a flattened loop index costs to unravel)."""
  if not isinstance(x, Node): return set()
  if isinstance(x, (FloorDiv, Mod)): return {v.name for v in x.variables()}
  children = {Sum: lambda n: n.terms, Mul: lambda n: (n.node, n.factor), LessThan: lambda n: (n.left, n.right),
              And: lambda n: n.nodes, Not: lambda n: (n.node,)}.get(type(x), lambda n: ())(x)
  return set().union(*(divmod_variables(c) for c in children))
def substitute(x: sint, values: dict[Variable, sint]) -> sint: return _subst(x, values)


def _const(x: Node) -> sint:
  return x.vmin if x.vmin == x.vmax else x


def _split_term(t: Node) -> tuple[Node, int]:
  """A term as (base, integer coefficient) so like terms combine."""
  if isinstance(t, Mul) and isinstance(t.factor, int): return t.node, t.factor
  return t, 1


def make_sum(items: list[sint]) -> sint:
  const, coefficients, bases = 0, {}, {}
  for item in items:
    if isinstance(item, int): const += item; continue
    sub = item.terms + [item.const] if isinstance(item, Sum) else [item]
    for t in sub:
      if isinstance(t, int): const += t; continue
      base, coefficient = _split_term(t)
      key = base.key()
      bases[key] = base
      coefficients[key] = coefficients.get(key, 0) + coefficient
  const += _fold_div_mod_pairs(bases, coefficients)
  terms = [bases[k] if c == 1 else Mul(bases[k], c) for k, c in coefficients.items() if c != 0]
  if not terms: return const
  if len(terms) == 1 and const == 0: return terms[0]
  return _const(Sum(terms, const))


def _fold_div_mod_pairs(bases: dict, coefficients: dict) -> int:
  """(x//c)*c*k + (x%c)*k == x*k: what flattening a loop and unflattening it again leaves behind."""
  extra_const = 0
  for key, base in list(bases.items()):
    if not isinstance(base, Mod) or coefficients.get(key, 0) == 0: continue
    k = coefficients[key]
    div_key = ("div", base.node.key(), base.divisor)
    if coefficients.get(div_key) == k * base.divisor:
      coefficients[key] = coefficients[div_key] = 0
      inner = base.node
      parts = inner.terms + [inner.const] if isinstance(inner, Sum) else [inner]
      for part in parts:
        if isinstance(part, int): extra_const += part * k; continue
        part_base, c = _split_term(part)
        bases[part_base.key()] = part_base
        coefficients[part_base.key()] = coefficients.get(part_base.key(), 0) + c * k
  return extra_const


def mul(a: sint, b: sint) -> sint:
  if isinstance(a, int) and isinstance(b, int): return a * b
  if isinstance(a, int): a, b = b, a
  assert isinstance(a, Node)
  if isinstance(b, int):
    if b == 0: return 0
    if b == 1: return a
    if isinstance(a, Sum): return make_sum([mul(t, b) for t in a.terms] + [a.const * b])
    if isinstance(a, Mul) and isinstance(a.factor, int): return mul(a.node, a.factor * b)
    return _const(Mul(a, b))
  if isinstance(b, Node) and b.vmin == b.vmax: return mul(a, b.vmin)
  if a.vmin == a.vmax: return mul(b, a.vmin)
  return Mul(a, b)


def floordiv(a: sint, b: sint) -> sint:
  if isinstance(b, Node):
    if b.vmin == b.vmax: b = b.vmin
    elif isinstance(a, Node) and a.key() == b.key(): return 1
    else: raise NotImplementedError(f"division by a symbolic value: {_render(a)} // {b.render()}")
  if b <= 0: raise ZeroDivisionError(f"index division by {b}")
  if isinstance(a, int): return a // b
  if b == 1: return a
  if a.vmin >= 0 and a.vmax < b: return 0
  if a.vmin // b == a.vmax // b: return a.vmin // b
  if isinstance(a, Mul) and isinstance(a.factor, int) and a.factor % b == 0: return mul(a.node, a.factor // b)
  if isinstance(a, FloorDiv): return floordiv(a.node, a.divisor * b)
  if isinstance(a, Sum):
    # pull out terms whose coefficient b divides; the rest must stay in [0, b) for the split to be exact
    whole, rest = [], []
    for t in a.terms:
      base, coefficient = _split_term(t)
      (whole if coefficient % b == 0 else rest).append((base, coefficient))
    rest_sum = make_sum([mul(base, c) for base, c in rest] + [a.const % b])
    if whole:   # floor((b*W + r) / b) == W + floor(r / b) for any integers
      return make_sum([mul(base, c // b) for base, c in whole] + [a.const // b, floordiv(rest_sum, b)])
    split = _common_factor_split(a, b)
    if split is not None:   # (g*B + r) // b == B // (b/g) when g divides b and 0 <= r < g
      g, big, _ = split
      return floordiv(big, b // g)
  return FloorDiv(a, b)


def _common_factor_split(a: Sum, b: int):
  """Write a as g*big + small with g a divisor of b (g > 1) and small in [0, g), if some g allows it: what an
  unraveled index looks like ((i*26 + j) with j < 26, divided or taken modulo 52)."""
  terms = [_split_term(t) for t in a.terms]
  for g in sorted({math.gcd(c, b) for _, c in terms} - {1}, reverse=True):
    big = [(base, c) for base, c in terms if c % g == 0]
    small = make_sum([mul(base, c) for base, c in terms if c % g] + [a.const % g])
    if big and vmin(small) >= 0 and vmax(small) < g:
      return g, make_sum([mul(base, c // g) for base, c in big] + [a.const // g]), small
  return None


def mod(a: sint, b: sint) -> sint:
  if isinstance(b, Node):
    if b.vmin == b.vmax: b = b.vmin
    else: raise NotImplementedError(f"modulo by a symbolic value: {_render(a)} % {b.render()}")
  if b <= 0: raise ZeroDivisionError(f"index modulo by {b}")
  if isinstance(a, int): return a % b
  if b == 1: return 0
  if a.vmin >= 0 and a.vmax < b: return a
  if isinstance(a, Mul) and isinstance(a.factor, int) and a.factor % b == 0: return 0
  if isinstance(a, Mod) and a.divisor % b == 0: return mod(a.node, b)
  if isinstance(a, Sum):
    kept = []
    for t in a.terms:
      base, coefficient = _split_term(t)
      if coefficient % b: kept.append(mul(base, coefficient % b))
    reduced = make_sum(kept + [a.const % b])
    if isinstance(reduced, int) or reduced.key() != a.key():
      return mod(reduced, b) if (isinstance(reduced, int) or reduced.vmin >= 0) else Mod(reduced, b)
    split = _common_factor_split(a, b)
    if split is not None:   # (g*B + r) % b == g*(B % (b/g)) + r when g divides b and 0 <= r < g
      g, big, small = split
      return make_sum([mul(mod(big, b // g), g), small])
  if a.vmin >= 0 and a.vmax // b == a.vmin // b: return a - (a.vmin // b) * b
  return Mod(a, b)


def less_than(a: sint, b: sint) -> sint:
  if isinstance(a, int) and isinstance(b, int): return int(a < b)
  if vmax(a) < vmin(b): return 1
  if vmin(a) >= vmax(b): return 0
  if isinstance(a, int):  # a < b  <=>  -b < -a
    return less_than(mul(b, -1), -a)
  return LessThan(a, b)


def logical_not(a: sint) -> sint:
  if isinstance(a, int): return int(not a)
  return Not(a)


def logical_and(items: list[sint]) -> sint:
  nodes: list[Node] = []
  for item in items:
    if isinstance(item, int):
      if not item: return 0
      continue
    for n in (item.nodes if isinstance(item, And) else [item]):
      if all(n.key() != m.key() for m in nodes): nodes.append(n)
  if not nodes: return 1
  return nodes[0] if len(nodes) == 1 else And(nodes)


def sym_max(a: sint, b: sint) -> sint:
  if isinstance(a, int) and isinstance(b, int): return max(a, b)
  if vmin(a) >= vmax(b): return a
  if vmin(b) >= vmax(a): return b
  raise NotImplementedError(f"max of symbolic values {_render(a)}, {_render(b)}")


def sym_prod(xs) -> sint:
  out: sint = 1
  for x in xs: out = mul(out, x)
  return out


def bind_values(shape_or_nodes) -> dict[Variable, int]:
  """The values of the BoundVariables found in a shape (or any iterable of sint)."""
  values: dict[Variable, int] = {}
  for x in shape_or_nodes:
    for v in _vars(x):
      if isinstance(v, BoundVariable): values[v] = v.value
  return values


def evaluate(x: sint, values: dict[Variable, int]) -> int:
  out = _subst(x, values)
  if isinstance(out, Node):
    if out.vmin == out.vmax: return out.vmin
    raise ValueError(f"{out.render()} still has unbound variables {sorted(v.name for v in out.variables())}")
  return out


def gcd_of_terms(x: sint) -> int:
  if isinstance(x, int): return abs(x)
  if isinstance(x, Sum): return math.gcd(*(gcd_of_terms(t) for t in x.terms), abs(x.const))
  if isinstance(x, Mul) and isinstance(x.factor, int): return abs(x.factor)
  return 1
