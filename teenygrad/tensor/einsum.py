"""einsum: align every operand to one letter order with views, multiply, sum the letters the output drops."""
from __future__ import annotations

from teenygrad.tensor.tensor import Tensor


def _diagonal(x: Tensor, letters: str) -> tuple[Tensor, str]:
  """Collapse repeated letters in one operand ('ii' -> the diagonal 'i')."""
  while True:
    repeated = next((c for c in letters if letters.count(c) > 1), None)
    if repeated is None: return x, letters
    a = letters.index(repeated)
    b = letters.index(repeated, a + 1)
    n = x.shape[a]
    if x.shape[b] != n: raise RuntimeError(f"einsum(): subscript {repeated} is repeated for operand but the sizes don't match, {n} != {x.shape[b]}")
    x = x.movedim((a, b), (-2, -1)).flatten(-2)                  # (..., n*n)
    x = x[..., ::n + 1]                                            # the diagonal: every (n+1)-th element
    letters = "".join(c for i, c in enumerate(letters) if i not in (a, b)) + repeated


def einsum(equation: str, *operands) -> Tensor:
  if len(operands) == 1 and isinstance(operands[0], (list, tuple)): operands = tuple(operands[0])
  equation = equation.replace(" ", "")
  inputs, _, output = equation.partition("->")
  terms = inputs.split(",")
  if len(terms) != len(operands):
    raise RuntimeError("einsum(): more operands were provided than specified in the equation" if len(operands) > len(terms) else "einsum(): fewer operands were provided than specified in the equation")
  if "..." in equation: raise NotImplementedError("einsum with ellipsis is not supported yet")
  if not _:
    counts = {c: inputs.count(c) for c in inputs if c.isalpha()}
    output = "".join(sorted(c for c, n in counts.items() if n == 1))
  sizes: dict[str, int] = {}
  aligned_inputs = []
  for term, x in zip(terms, operands):
    if len(term) != x.ndim:
      raise RuntimeError(f"einsum(): the number of subscripts in the equation ({len(term)}) does not match the number of dimensions ({x.ndim}) for operand {len(aligned_inputs)}")
    x, term = _diagonal(x, term)
    for c, s in zip(term, x.shape):
      if sizes.setdefault(c, s) != s and s != 1 and sizes[c] != 1:
        raise RuntimeError(f"einsum(): operands do not broadcast with remapped shapes (original->remapped): subscript {c} has sizes {sizes[c]} and {s}")
      sizes[c] = max(sizes[c], s)
    aligned_inputs.append((x, term))
  letters = output + "".join(sorted(set("".join(t for _, t in aligned_inputs)) - set(output)))
  product = None
  for x, term in aligned_inputs:
    order = sorted(range(len(term)), key=lambda i: letters.index(term[i]))
    x = x.permute(order) if order else x
    present = [term[i] for i in order]
    shape = [x.shape[present.index(c)] if c in present else 1 for c in letters]
    x = x.reshape(shape).expand(*[sizes[c] for c in letters])
    product = x if product is None else product * x
  dropped = tuple(range(len(output), len(letters)))
  return product.sum(dropped) if dropped else product
