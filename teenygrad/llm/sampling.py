"""Choosing the next token from logits: penalties, temperature, top-k, top-p, min-p, on the host with numpy.

The logits of one position are a vocabulary-sized vector, so host-side sampling costs microseconds and keeps every
rule easy to read (and to compare with llama.cpp's and transformers' definitions, which these follow).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class SamplingParams:
  """How to pick tokens. temperature 0 is greedy (argmax); the filters apply in llama.cpp's order:
  penalties, top-k, top-p, min-p, then temperature."""
  temperature: float = 0.0
  top_k: int = 0                     # 0: off
  top_p: float = 1.0                 # 1: off
  min_p: float = 0.0                 # 0: off
  repetition_penalty: float = 1.0    # divide positive / multiply negative logits of seen tokens (CTRL paper)
  frequency_penalty: float = 0.0     # minus count * penalty (OpenAI)
  presence_penalty: float = 0.0      # minus penalty once a token appeared (OpenAI)
  seed: int | None = None
  max_tokens: int = 256
  stop: list[str] = field(default_factory=list)
  stop_token_ids: list[int] = field(default_factory=list)

  def __post_init__(self):
    if self.temperature < 0: raise ValueError(f"temperature must be >= 0, got {self.temperature}")
    if self.top_k < 0: raise ValueError(f"top_k must be >= 0, got {self.top_k}")
    if not 0 < self.top_p <= 1: raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
    if not 0 <= self.min_p <= 1: raise ValueError(f"min_p must be in [0, 1], got {self.min_p}")
    if self.repetition_penalty <= 0: raise ValueError(f"repetition_penalty must be > 0, got {self.repetition_penalty}")
    if self.max_tokens < 0: raise ValueError(f"max_tokens must be >= 0, got {self.max_tokens}")


def apply_penalties(logits: np.ndarray, history: list[int], params: SamplingParams) -> np.ndarray:
  if not history or (params.repetition_penalty == 1.0 and params.frequency_penalty == 0 and params.presence_penalty == 0): return logits
  logits = logits.astype(np.float64, copy=True)
  tokens, counts = np.unique(np.asarray(history, dtype=np.int64), return_counts=True)
  seen = logits[tokens]
  if params.repetition_penalty != 1.0:
    seen = np.where(seen > 0, seen / params.repetition_penalty, seen * params.repetition_penalty)
  seen = seen - counts * params.frequency_penalty - params.presence_penalty
  logits[tokens] = seen
  return logits


def plain_greedy(params: SamplingParams) -> bool:
  """Greedy with nothing that changes the logits first: the token is the logits' argmax, which the device can take."""
  return params.temperature == 0 and params.repetition_penalty == 1.0 and params.frequency_penalty == 0 and params.presence_penalty == 0


def sample(logits: np.ndarray, params: SamplingParams, history: list[int], rng: np.random.Generator) -> int:
  """One token id from logits (vocab,)."""
  logits = apply_penalties(np.asarray(logits), history, params)
  if params.temperature == 0: return int(np.argmax(logits))
  logits = logits.astype(np.float64)
  order = np.argsort(-logits, kind="stable")
  if params.top_k > 0: order = order[:params.top_k]
  candidates = logits[order]
  probs = np.exp(candidates - candidates[0])
  probs /= probs.sum()
  if params.top_p < 1.0:   # smallest prefix whose mass reaches top_p
    keep = int(np.searchsorted(np.cumsum(probs), params.top_p) + 1)
    order, candidates = order[:keep], candidates[:keep]
  if params.min_p > 0:     # tokens at least min_p times as likely as the best
    keep = candidates >= candidates[0] + np.log(params.min_p)
    order, candidates = order[keep], candidates[keep]
  scaled = (candidates - candidates[0]) / params.temperature
  probs = np.exp(scaled)
  probs /= probs.sum()
  return int(order[rng.choice(len(order), p=probs)])
