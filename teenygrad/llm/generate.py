"""Generation: prefill the prompt in one pass, then decode token by token through the JIT.

One `Generator` owns a KV cache and a jitted decode step. The step's position is a BoundVariable (a symbolic size
for the kernels) plus the same number as a 1-element tensor (where the cache write goes), so one capture serves
every position. Several prompts run as one batch: shorter ones are left-padded and their padding hidden by a key
mask, so every row shares one position counter.
"""
from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from teenygrad.ir.symbolic import BoundVariable
from teenygrad.llm.custom_ops import greedy_tokens
from teenygrad.llm.model import KVCache, Transformer
from teenygrad.llm.sampling import SamplingParams, plain_greedy, sample
from teenygrad.llm.tokenizer import StreamDecoder, Tokenizer
from teenygrad.tensor import Tensor

PAD_MASK = -1e9   # finite: a row that sees only padding stays finite instead of 0 * inf = nan
CACHE_ROUNDING = 256


@dataclass
class Completion:
  """One finished sequence."""
  text: str
  token_ids: list[int]
  finish_reason: str                 # "stop" (stop token or string) or "length"


@dataclass
class GenerationStats:
  prompt_tokens: int = 0
  generated_tokens: int = 0
  prefill_seconds: float = 0.0
  decode_seconds: float = 0.0
  @property
  def prefill_tps(self) -> float: return self.prompt_tokens / self.prefill_seconds if self.prefill_seconds else 0.0
  @property
  def decode_tps(self) -> float: return self.generated_tokens / self.decode_seconds if self.decode_seconds else 0.0


@dataclass
class _Row:
  """The state of one sequence of a batch."""
  prompt: list[int]
  generated: list[int] = field(default_factory=list)
  text: str = ""
  held: str = ""                     # text not yet streamed: it might be the start of a stop string
  done: str | None = None
  decoder: StreamDecoder | None = None


class Generator:
  """Generates with a model and its tokenizer.

  Args:
    model: a Transformer. tokenizer: its Tokenizer.
    max_context: the largest cache allocated (default: the model's context length).
  """
  def __init__(self, model: Transformer, tokenizer: Tokenizer, max_context: int | None = None):
    self.model, self.tokenizer = model, tokenizer
    self.max_context = min(max_context or model.config.max_seq_len, model.config.max_seq_len)
    self.cache: KVCache | None = None
    self._decode = self._decode_greedy = None
    self.stats = GenerationStats()

  # ---- the cache and the jitted step ----
  def _prepare(self, batch: int, needed: int) -> KVCache:
    if needed > self.max_context: raise ValueError(f"prompt plus max_tokens ({needed}) exceed the context of {self.max_context}")
    if self.cache is None or self.cache.batch != batch or self.cache.max_len < needed:
      size = min(-(-needed // CACHE_ROUNDING) * CACHE_ROUNDING, self.max_context)
      self.cache = KVCache(self.model.config, batch, size, self.model.device)
      self._decode = None
    if self._decode is None:
      from teenygrad.engine.jit import jit
      cache, model = self.cache, self.model
      @jit
      def decode(tokens: Tensor, start_tensor: Tensor, key_mask: Tensor | None, start: BoundVariable) -> Tensor:
        return model(tokens, cache, start, start_tensor, key_mask=key_mask)
      @jit
      def decode_greedy(tokens: Tensor, start_tensor: Tensor, key_mask: Tensor | None, start: BoundVariable) -> Tensor:
        # (B, 1): the next step's tokens as they are, so a step can take the one before it's output on the device
        return greedy_tokens(model(tokens, cache, start, start_tensor, key_mask=key_mask))
      self._decode, self._decode_greedy = decode, decode_greedy
    return self.cache

  def _step(self, tokens: np.ndarray, position: int, key_mask: Tensor | None, greedy: bool = False) -> np.ndarray:
    """One decode step: the logits (B, vocab), or with `greedy` each row's argmax (B,) int32 taken on the device (B
    ints over the bus instead of B x vocab floats, and no host argmax: at batch 1 on a GPU that is a step's tail)."""
    out = self._launch(Tensor(tokens.astype(np.int32), device=self.model.device), position, key_mask, greedy)
    return out.numpy().reshape(-1) if greedy else out.numpy()

  def _launch(self, tokens: Tensor, position: int, key_mask: Tensor | None, greedy: bool) -> Tensor:
    """Queue one decode step on (B, 1) int32 tokens (on the device, or a previous greedy step's output) and return
    its output, not yet read."""
    device = self.model.device
    start = BoundVariable("start_pos", 0, self.cache.max_len - 1, position)
    decode = self._decode_greedy if greedy else self._decode
    return decode(tokens, Tensor(np.array([position], dtype=np.int32), device=device), key_mask, start)

  def _greedy_ahead(self, tokens: Tensor, position: int, key_mask: Tensor | None):
    """A greedy step queued, with its tokens' copy to the host queued right behind it: (its output on the device, the
    read that waits for it)."""
    out = self._launch(tokens, position, key_mask, greedy=True)
    return out, out.lazydata.base.realized.read_later()

  # ---- generation ----
  def generate_ids(self, prompts: list[list[int]], params: SamplingParams, on_token=None) -> list[_Row]:
    """Generate for a batch of token-id prompts. on_token(row_index, text_piece) streams text as it is produced."""
    if not prompts or any(len(p) == 0 for p in prompts): raise ValueError("every prompt needs at least one token")
    vocab = self.model.config.vocab_size
    # checked here, on the host: a device replay of the decode step (one CUDA graph) has no way to raise mid-step
    bad = next((t for p in prompts for t in p if not (isinstance(t, (int, np.integer)) and 0 <= t < vocab)), None)
    if bad is not None: raise IndexError(f"token id {bad!r} is outside the vocabulary (0..{vocab - 1})")
    rng = np.random.default_rng(params.seed)
    B, longest = len(prompts), max(len(p) for p in prompts)
    cache = self._prepare(B, longest + max(params.max_tokens, 1))
    stop_ids = set(params.stop_token_ids) | self.tokenizer.stop_ids
    rows = [_Row(list(p), decoder=StreamDecoder(self.tokenizer)) for p in prompts]
    # left padding, hidden from attention by the key mask
    pad_id = self.tokenizer.eos_id if self.tokenizer.eos_id is not None else 0
    tokens = np.array([[pad_id] * (longest - len(p)) + p for p in prompts], dtype=np.int32)
    key_mask = None
    if any(len(p) < longest for p in prompts):
      mask = np.zeros((B, cache.max_len), dtype=np.float32)
      for b, p in enumerate(prompts): mask[b, :longest - len(p)] = PAD_MASK
      key_mask = Tensor(mask, device=self.model.device).realize()
    self.stats = GenerationStats(prompt_tokens=sum(len(p) for p in prompts))
    t0 = time.perf_counter()
    logits = self.model(Tensor(tokens, device=self.model.device), cache, 0, key_mask=key_mask).numpy()
    self.stats.prefill_seconds = time.perf_counter() - t0
    position = longest
    greedy = plain_greedy(params)
    choices = None   # each row's token of the last decode step, taken on the device (greedy)
    # greedy decoding runs a step ahead: step n + 1 is queued on step n's tokens as the device holds them, before the
    # host reads step n's, so the host's work between steps (reading, detokenizing, queueing) overlaps the device's.
    # A finished row keeps decoding its own tokens (rows are independent: the others' are the same); where a step
    # ends generation, the step queued after it is wasted (its cache row lies past the end).
    ahead = None
    t0 = time.perf_counter()
    for step in range(params.max_tokens):
      next_tokens = np.zeros((B, 1), dtype=np.int32)
      for b, row in enumerate(rows):
        if row.done: next_tokens[b, 0] = pad_id; continue
        token = int(choices[b]) if choices is not None else sample(logits[b], params, row.prompt + row.generated, rng)
        next_tokens[b, 0] = token
        self._accept(b, row, token, stop_ids, params, on_token)
      if all(row.done for row in rows) or step == params.max_tokens - 1: break
      if greedy:
        current = ahead or self._greedy_ahead(Tensor(next_tokens, device=self.model.device), position, key_mask)
        ahead = self._greedy_ahead(current[0], position + 1, key_mask) if step + 1 < params.max_tokens - 1 else None
        choices = current[1]().reshape(B)
      else: logits = self._step(next_tokens, position, key_mask)
      position += 1
    self.stats.decode_seconds = time.perf_counter() - t0
    for b, row in enumerate(rows):
      if not row.done: row.done = "length"
      tail = row.held + (row.decoder.flush() if row.done == "length" else "")
      if tail and row.done == "length":
        row.text += tail
        if on_token: on_token(b, tail)
    self.stats.generated_tokens = sum(len(r.generated) for r in rows)
    return rows

  def _accept(self, b: int, row: _Row, token: int, stop_ids: set[int], params: SamplingParams, on_token) -> None:
    if token in stop_ids:
      row.done = "stop"; return
    row.generated.append(token)
    piece = row.held + row.decoder.add(token)
    row.held = ""
    for stop in params.stop:
      at = (row.text + piece).find(stop)
      if at >= 0:   # cut the text at the stop string; stream only what comes before it
        before = (row.text + piece)[:at][len(row.text):]
        row.text += before
        if before and on_token: on_token(b, before)
        row.done = "stop"; return
    # hold back a tail that could still grow into a stop string
    hold = max((k for stop in params.stop for k in range(1, len(stop)) if piece.endswith(stop[:k])), default=0)
    emit, row.held = (piece[:-hold], piece[-hold:]) if hold else (piece, "")
    row.text += emit
    if emit and on_token: on_token(b, emit)

  def complete(self, prompts: list[str] | str, params: SamplingParams | None = None, on_token=None) -> list[Completion] | Completion:
    """Completions of text prompts (BOS added as the tokenizer says)."""
    params = params or SamplingParams()
    single = isinstance(prompts, str)
    texts = [prompts] if single else list(prompts)
    rows = self.generate_ids([self.tokenizer.encode(t) for t in texts], params, on_token)
    out = [Completion(r.text, r.generated, r.done) for r in rows]
    return out[0] if single else out

  def stream(self, prompt: str, params: SamplingParams | None = None) -> Iterator[str]:
    """Text pieces of one completion as they are produced (never a split UTF-8 character)."""
    pieces: list[str] = []
    import threading
    import queue
    q: queue.Queue = queue.Queue()
    def run():
      try: self.generate_ids([self.tokenizer.encode(prompt)], params or SamplingParams(), lambda b, piece: q.put(piece))
      except BaseException as e: q.put(e)
      finally: q.put(None)
    threading.Thread(target=run, daemon=True).start()
    while (item := q.get()) is not None:
      if isinstance(item, BaseException): raise item
      pieces.append(item)
      yield item
