"""Symbolic index simplification against brute force: a rewrite of // or % must give the same integer everywhere."""
import itertools

from hypothesis import given, settings, strategies as st

from teenygrad.ir.symbolic import Variable, evaluate, floordiv, mod, render

SIZES = st.lists(st.integers(1, 30), min_size=1, max_size=3)


@settings(max_examples=300, deadline=None)
@given(SIZES, st.lists(st.integers(-60, 60), min_size=3, max_size=3), st.integers(-40, 40), st.integers(1, 64),
       st.integers(1, 16))
def test_floordiv_and_mod_of_affine_sums(sizes, coefficients, const, divisor, second):
  variables = [Variable(f"v{i}", 0, n - 1) for i, n in enumerate(sizes)]
  expr = sum((v * c for v, c in zip(variables, coefficients)), const)
  div, rem, nested = floordiv(expr, divisor), mod(expr, divisor), mod(floordiv(expr, divisor), second)
  for values in itertools.product(*(range(n) for n in sizes)):
    env = {v: x for v, x in zip(variables, values)}
    exact = const + sum(c * x for c, x in zip(coefficients, values))
    assert evaluate(div, env) == exact // divisor, render(div)
    assert evaluate(rem, env) == exact % divisor, render(rem)
    assert evaluate(nested, env) == (exact // divisor) % second, render(nested)


def test_unraveled_index_simplifies():
  """(i*26 + j) with j < 26, regrouped by 52 then 13: the pattern conv backward and pooling produce."""
  l0, l1, l2, l3 = (Variable(f"L{i}", 0, n - 1) for i, n in enumerate((128, 32, 26, 26)))
  flat = l0 * 21632 + l1 * 676 + l2 * 26 + l3
  assert render(mod(floordiv(flat, 52), 13)) == "(L2/2)"
