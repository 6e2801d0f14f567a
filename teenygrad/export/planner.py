"""Static memory planning: place buffers with known lifetimes in one arena so that buffers whose lifetimes do not
overlap share space.

A lifetime is an inclusive range of step indices [first, last] (the kernel that writes the buffer to the last
kernel that reads it). The lower bound on any arena is the largest total size of the buffers live at one step.
Placement is greedy, as in TensorFlow Lite Micro's planner: buffers in some order, each at the lowest offset (or
in the tightest gap) free for its whole lifetime. A few orders (by size, by lifetime, by start), then seeded random
orders, each with both gap rules; the smallest arena is kept, stopping early at the bound. On the graphs models
make this reaches the bound (the tests and bench/export_sizes.py report both numbers). Pure Python, no device.
"""
from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True)
class Lifetime:
  key: object
  nbytes: int
  first: int
  last: int


@dataclass
class ArenaPlan:
  offsets: dict            # key -> byte offset in the arena
  size: int                # arena bytes
  lower_bound: int         # most bytes live at one step (after alignment)
  alignment: int

  @property
  def overhead(self) -> float:
    """Arena size over the lower bound, minus one (0.0 means optimal)."""
    return self.size / self.lower_bound - 1.0 if self.lower_bound else 0.0


def _align(n: int, alignment: int) -> int: return (n + alignment - 1) // alignment * alignment


def lower_bound(lifetimes: list[Lifetime], alignment: int = 8) -> int:
  """The most bytes live at any one step: no placement can use less."""
  events: dict[int, int] = {}
  for lt in lifetimes:
    size = _align(lt.nbytes, alignment)
    events[lt.first] = events.get(lt.first, 0) + size
    events[lt.last + 1] = events.get(lt.last + 1, 0) - size
  live = best = 0
  for step in sorted(events):
    live += events[step]
    best = max(best, live)
  return best


def _place(order: list[Lifetime], alignment: int, best_fit: bool) -> tuple[dict, int]:
  placed: list[tuple[int, int, Lifetime]] = []   # (offset, size, lifetime)
  offsets: dict = {}
  for lt in order:
    size = _align(lt.nbytes, alignment)
    busy = sorted((off, sz) for off, sz, other in placed if other.first <= lt.last and lt.first <= other.last)
    candidates, cursor = [], 0
    for off, sz in busy:
      if off - cursor >= size: candidates.append((off - cursor, cursor))
      cursor = max(cursor, off + sz)
    candidates.append((float("inf"), cursor))    # past everything live at the same time
    gap, offset = min(candidates) if best_fit else min(candidates, key=lambda c: c[1])
    offsets[lt.key] = offset
    placed.append((offset, size, lt))
  return offsets, max((off + sz for off, sz, _ in placed), default=0)


def plan_arena(lifetimes: list[Lifetime], alignment: int = 8) -> ArenaPlan:
  """Offsets for every buffer; tries several greedy orders and keeps the smallest arena."""
  for lt in lifetimes:
    if lt.first > lt.last: raise ValueError(f"buffer {lt.key!r} dies (step {lt.last}) before it is born (step {lt.first})")
    if lt.nbytes < 0: raise ValueError(f"buffer {lt.key!r} has a negative size")
  orders = [
    sorted(lifetimes, key=lambda lt: (-lt.nbytes, lt.first)),
    sorted(lifetimes, key=lambda lt: (-(lt.last - lt.first), -lt.nbytes)),
    sorted(lifetimes, key=lambda lt: (lt.first, -lt.nbytes)),
    sorted(lifetimes, key=lambda lt: (-lt.nbytes * (lt.last - lt.first + 1), lt.first)),
  ]
  bound = lower_bound(lifetimes, alignment)
  # then seeded shuffles until the bound is reached or the budget (about 2e5 placements) is spent
  rng = random.Random(0)
  shuffles = min(512, 200_000 // max(1, len(lifetimes) ** 2))
  for _ in range(shuffles):
    order = list(lifetimes)
    rng.shuffle(order)
    orders.append(order)
  best: tuple[dict, int] | None = None
  for order in orders:
    for best_fit in (False, True):
      offsets, size = _place(order, alignment, best_fit)
      if best is None or size < best[1]: best = (offsets, size)
    if best[1] == bound: break
  assert best is not None
  return ArenaPlan(best[0], best[1], bound, alignment)


def check_plan(lifetimes: list[Lifetime], plan: ArenaPlan) -> None:
  """Raise if two buffers live at the same step overlap in the arena (the tests run this on every plan)."""
  spans = [(plan.offsets[lt.key], plan.offsets[lt.key] + lt.nbytes, lt) for lt in lifetimes]
  for i, (a0, a1, a) in enumerate(spans):
    if a1 > plan.size: raise AssertionError(f"{a.key!r} ends past the arena")
    for b0, b1, b in spans[i + 1:]:
      if a.first <= b.last and b.first <= a.last and a0 < b1 and b0 < a1:
        raise AssertionError(f"{a.key!r} and {b.key!r} are live together and overlap in the arena")


__all__ = ["Lifetime", "ArenaPlan", "plan_arena", "lower_bound", "check_plan"]
