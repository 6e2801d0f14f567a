"""The engine: one scheduler thread that batches every running sequence's decode step (continuous batching).

Each turn of the loop: drop sequences whose client went away (their blocks return to the pool at once), admit
waiting sequences while there are batch slots and blocks for their worst case, run one prefill chunk of the oldest
sequence still reading its prompt, then one decode step for all sequences generating. A newcomer thus joins at the
next step, and its prompt is read in chunks between the decode steps of the others. Model calls run kernels that
release the GIL, so the HTTP side keeps serving meanwhile.
"""
from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field
from collections.abc import Callable

import numpy as np

from teenygrad.helpers import canonicalize
from teenygrad.llm.sampling import SamplingParams, sample
from teenygrad.llm.tokenizer import StreamDecoder, Tokenizer
from teenygrad.serve.detokenize import stream_decoder_factory
from teenygrad.serve.paged import NULL_BLOCK, PagedStep, StepResult


SHORT_PREFILL = 8   # tokens: the narrower prefill step's width


class QueueFull(RuntimeError):
  """More sequences are waiting than --max-queue allows."""


@dataclass
class TokenEvent:
  text: str                           # new text (may be empty: a partial character, or held back for a stop string)
  token_id: int
  logprob: float | None = None
  top_logprobs: list[tuple[int, float]] | None = None


@dataclass
class DoneEvent:
  finish_reason: str                  # "stop" or "length"
  text: str                           # text not yet sent (held back while it could have started a stop string)


@dataclass
class ErrorEvent:
  message: str


@dataclass
class Sequence:
  """One generated sequence. `emit` is called from the scheduler thread with TokenEvent/DoneEvent/ErrorEvent."""
  prompt: list[int]
  params: SamplingParams
  emit: Callable[[object], None]
  top_logprobs: int | None = None     # None: no logprobs; 0..20: that many alternatives per token
  seed_offset: int = 0
  # scheduler state
  generated: list[int] = field(default_factory=list)
  blocks: list[int] = field(default_factory=list)
  computed: int = 0                   # tokens whose keys/values are in the cache
  pending: int | None = None          # sampled token not yet run through the model
  prefix_checked: bool = False
  cancelled: bool = False
  finished: bool = False
  submitted: float = 0.0
  first_token_at: float | None = None
  text: str = ""
  held: str = ""
  decoder: StreamDecoder | None = None
  rng: np.random.Generator | None = None
  greedy_only: bool = False           # _plain_greedy, decided once at submit
  plain: bool = False                 # greedy_only, no stop strings or stop ids of its own, no logprobs: _decode's fast row
  limit: int = 0                      # generated tokens at which it ends with "length" (max_tokens, or the context's end)


def _plain_greedy(seq: Sequence) -> bool:
  """Greedy with nothing that needs the logits on the host: the step's device argmax is the token."""
  p = seq.params
  return (p.temperature == 0 and seq.top_logprobs is None and p.repetition_penalty == 1.0 and p.frequency_penalty == 0
          and p.presence_penalty == 0)


class Engine:
  """Runs sequences on a model with continuous batching.

  Args:
    model, tokenizer: from teenygrad.llm.load.load_model.
    max_batch: most sequences decoding together. max_queue: most sequences waiting for a slot.
    max_len: longest sequence (prompt + generated). block_size, num_blocks: the paged KV pool.
    prefill_chunk, prefill_rows: prompt tokens read per prefill step, and how many sequences read theirs together.
    metrics: a teenygrad.serve.metrics.Metrics or None.
  """
  def __init__(self, model, tokenizer: Tokenizer, max_batch: int = 32, max_queue: int = 256, max_len: int = 2048,
               block_size: int = 16, num_blocks: int | None = None, prefill_chunk: int = 32, prefill_rows: int | None = None,
               metrics=None):
    if max_batch < 1: raise ValueError(f"max_batch must be >= 1, got {max_batch}")
    if prefill_rows is None:
      # a CPU pays for every padded row of a prefill batch; an accelerator reads many prompts in about one's time,
      # which is what lets a burst of newcomers reach their first token together instead of four at a time
      prefill_rows = 4 if canonicalize(model.device).partition(":")[0] == "CPU" else 16
    if prefill_rows < 1: raise ValueError(f"prefill_rows must be >= 1, got {prefill_rows}")
    self.model, self.tokenizer, self.metrics = model, tokenizer, metrics
    self.max_batch, self.max_queue, self.prefill_chunk, self.prefill_rows = max_batch, max_queue, prefill_chunk, prefill_rows
    self.max_len = min(max_len, model.config.max_seq_len)
    num_blocks = num_blocks or max(max_batch * 512 // block_size, self.max_len // block_size) + 1
    self.step = PagedStep(model, num_blocks, block_size, self.max_len)
    # decode batches are padded up to a power of two (each a JIT capture of its own): a padded row costs a CPU as much as
    # a real one, so padding stays under 2x (32 streams run as 32, not 64) for a few more captures at warmup
    self.buckets = sorted({min(2 ** i, max_batch) for i in range(max_batch.bit_length() + 1)})
    # a prefill step costs about its padded tokens' compute (on a CPU 8 tokens ~0.4x of 32), so a short last chunk (the
    # rest of a prompt after a shared prefix) runs as a narrower step instead of padded to prefill_chunk, and a last
    # token alone (a prompt seen before: the rest is in the prefix cache) as a step of one token, a decode step's cost
    self.prefill_widths = sorted({1, min(SHORT_PREFILL, prefill_chunk), prefill_chunk})
    self.waiting: deque[Sequence] = deque()
    self.running: list[Sequence] = []
    self.stop_ids = set(tokenizer.stop_ids)
    self.new_decoder = stream_decoder_factory(tokenizer)
    self._wake = threading.Condition()
    self._thread: threading.Thread | None = None
    self._stopped = False
    self.steps = 0

  # ---- the client side (any thread) ----
  def submit(self, seq: Sequence) -> None:
    needed = len(seq.prompt) + seq.params.max_tokens
    if not seq.prompt: raise ValueError("the prompt is empty")
    if needed > self.max_len:
      raise ValueError(f"this model's maximum context length is {self.max_len} tokens; the prompt has {len(seq.prompt)} tokens and "
                       f"max_tokens is {seq.params.max_tokens}")
    with self._wake:
      if len(self.waiting) >= self.max_queue: raise QueueFull(f"the queue is full ({self.max_queue} waiting)")
      seq.submitted = time.perf_counter()
      seq.decoder = self.new_decoder()
      seq.greedy_only = _plain_greedy(seq)
      seq.plain = seq.greedy_only and not seq.params.stop and not seq.params.stop_token_ids
      seq.limit = min(seq.params.max_tokens, self.max_len - len(seq.prompt))
      seed = seq.params.seed
      seq.rng = np.random.default_rng(None if seed is None else seed + seq.seed_offset)
      self.waiting.append(seq)
      self._wake.notify()
    self._gauges()

  def cancel(self, seq: Sequence) -> None:
    """The client left: the scheduler frees the sequence's slot and blocks before its next step."""
    seq.cancelled = True
    with self._wake:
      if seq in self.waiting: self.waiting.remove(seq)   # its queue place is free at once, even while a step runs
      self._wake.notify()

  def start(self) -> None:
    self._thread = threading.Thread(target=self._loop, name="teenygrad-scheduler", daemon=True)
    self._thread.start()

  def shutdown(self) -> None:
    with self._wake:
      self._stopped = True
      self._wake.notify()
    if self._thread is not None: self._thread.join(timeout=30)

  def warmup(self) -> None:
    """Capture the prefill step and every decode batch size now, so that the first requests do not wait on it."""
    prefills = [(B, T, True) for B in sorted({1, self.prefill_rows}) for T in self.prefill_widths]
    for B, T, prefill in prefills + [(b, 1, False) for b in self.buckets]:
      for _ in range(3): self.step.run(self.step.empty_inputs(B, T, prefill)).greedy()   # read: the step has finished
    if self.step.keys[0].device == "CPU": self.step.copy_block(NULL_BLOCK, self.step.blocks.num_blocks - 1)   # its host views

  @property
  def kv_usage(self) -> float: return self.step.blocks.used / (self.step.blocks.num_blocks - 1)

  # ---- the scheduler thread ----
  def _loop(self) -> None:
    while True:
      with self._wake:
        while not self._stopped and not self.waiting and not self.running: self._wake.wait()
        if self._stopped: return
      try: self._turn()
      except Exception as e:   # a failed step fails the sequences in it, never the server
        for seq in list(self.running): self._finish(seq, error=f"{type(e).__name__}: {e}")
        self.running.clear()

  def _turn(self) -> None:
    for seq in [s for s in self.running if s.cancelled]: self._finish(seq)
    with self._wake:
      for seq in [s for s in self.waiting if s.cancelled]: self.waiting.remove(seq)
      while self.waiting and len(self.running) < self.max_batch and self._admit(self.waiting[0]): self.running.append(self.waiting.popleft())
    self._gauges()
    prefilling = self._prefill_rows()
    if prefilling: self._prefill_chunk(prefilling)
    decoding = [s for s in self.running if s.pending is not None and not s.finished]
    if decoding: self._decode(decoding)
    self.running = [s for s in self.running if not s.finished]
    self._gauges()
    if not decoding and not prefilling and self.running: time.sleep(0.001)

  def _prefill_rows(self) -> list[Sequence]:
    """The oldest sequences still reading their prompts, at most prefill_rows. A copy of a prompt being read (n > 1)
    waits for the first, then takes its blocks from the prefix cache instead of computing them again."""
    rows: list[Sequence] = []
    for seq in self.running:
      if seq.computed >= len(seq.prompt) or seq.cancelled: continue
      if any(other.prompt == seq.prompt for other in rows): continue   # n > 1: the copies wait for the first
      if seq.computed == 0 and not seq.prefix_checked: self._share_prefix(seq)
      rows.append(seq)
      if len(rows) == self.prefill_rows: break
    return rows

  def _share_prefix(self, seq: Sequence) -> None:
    """Swap the first blocks of seq for cached blocks that hold the same prompt prefix, then copy the keys and values
    of the cached block that starts like the next one into seq's own (BlockManager.lookup_partial)."""
    seq.prefix_checked = True
    blocks = self.step.blocks
    shared = blocks.lookup_prefix(seq.prompt)
    if shared:
      blocks.release(seq.blocks[:len(shared)])
      seq.blocks = shared + seq.blocks[len(shared):]
      seq.computed = len(shared) * self.step.block_size
    # sharing inside a block copies the cached block's keys and values: on the CPU through host views of the pools;
    # the device path (a JIT of the pools' gather and write) gave wrong tokens on CUDA in its one run there (H200,
    # 2026-12-02: test_serve_engine's prefix-cache rerun), so other devices share whole blocks only until it is fixed
    partial = blocks.lookup_partial(seq.prompt, len(shared)) if self.step.keys[0].device == "CPU" else None
    if partial is not None:
      source, count = partial
      self.step.copy_block(source, seq.blocks[len(shared)])
      seq.computed += count
    if self.metrics and seq.computed: self.metrics.prefix_tokens.inc(seq.computed)

  def _admit(self, seq: Sequence) -> bool:
    """Give seq blocks for its worst case; False if the pool lacks room now. Shared prefix blocks replace some of
    them when its prefill starts."""
    blocks = self.step.blocks
    total = -(-(len(seq.prompt) + seq.params.max_tokens) // blocks.block_size)
    if total > blocks.available: return False
    seq.blocks = [blocks.allocate() for _ in range(total)]
    return True

  def _prefill_chunk(self, seqs: list[Sequence]) -> None:
    """One chunk of prompt for each of seqs, as one batch."""
    B = 1 if len(seqs) == 1 else self.prefill_rows
    chunks = [seq.prompt[seq.computed:seq.computed + self.prefill_chunk] for seq in seqs]
    inputs = self.step.empty_inputs(B, next(T for T in self.prefill_widths if T >= max(len(c) for c in chunks)), prefill=True)
    for row, (seq, chunk) in enumerate(zip(seqs, chunks)): self.step.fill_row(inputs, row, chunk, seq.computed, seq.blocks)
    result = self.step.run(inputs)
    blocks, bs = self.step.blocks, self.step.block_size
    for row, (seq, chunk) in enumerate(zip(seqs, chunks)):
      first = seq.computed // bs
      seq.computed += len(chunk)
      hashes = blocks.chain_hashes(seq.prompt, -(-seq.computed // bs))
      for i in range(seq.computed // bs): blocks.register(seq.blocks[i], hashes[i])
      for i in range(first, len(hashes)):   # the blocks this chunk wrote: their prompt tokens, for lookup_partial
        blocks.record(seq.blocks[i], hashes[i - 1] if i else b"", seq.prompt[i * bs:min(seq.computed, (i + 1) * bs)])
      if seq.computed == len(seq.prompt): self._sample_row(seq, result, row)

  def _decode(self, seqs: list[Sequence]) -> None:
    B = next(b for b in self.buckets if b >= len(seqs))
    inputs = self.step.decode_inputs(B)
    self.step.fill_decode(inputs, [seq.pending for seq in seqs], [seq.computed for seq in seqs], [seq.blocks for seq in seqs])
    t0 = time.perf_counter()
    result = self.step.run(inputs)
    # wait for the step, reading back what sampling needs: the greedy tokens (B int32) if every row is plain greedy,
    # else the logits (B x vocab floats) and the greedy tokens too if some rows are
    greedy = all(seq.greedy_only for seq in seqs)
    tokens = result.greedy().tolist() if greedy else None
    if not greedy:
      result.logits()
      if any(seq.greedy_only for seq in seqs): tokens = result.greedy().tolist()
    self.steps += 1
    if self.metrics: self.metrics.time_per_token.observe(time.perf_counter() - t0)
    generated, stop_ids = 0, self.stop_ids
    for row, seq in enumerate(seqs):
      seq.computed += 1
      seq.pending = None
      if seq.cancelled: continue
      if seq.plain:   # the common row, what _sample does for it inlined: no stop string can hold text back
        token = tokens[row]
        if token in stop_ids:
          self._finish(seq, "stop")
          continue
        seq.generated.append(token)
        text = seq.decoder.add(token)
        seq.text += text
        seq.emit(TokenEvent(text, token))
        if len(seq.generated) >= seq.limit: self._finish(seq, "length")
        else: seq.pending = token
        generated += 1
      elif seq.greedy_only: generated += self._sample(seq, None, tokens[row])
      else: generated += self._sample(seq, result.logits()[row])
    if self.metrics and generated: self.metrics.generated_tokens.inc(generated)

  def _sample_row(self, seq: Sequence, result: StepResult, row: int) -> None:
    if seq.greedy_only: generated = self._sample(seq, None, int(result.greedy()[row]))
    else: generated = self._sample(seq, result.logits()[row])
    if self.metrics and generated: self.metrics.generated_tokens.inc()

  def _sample(self, seq: Sequence, logits: np.ndarray | None, token: int | None = None) -> int:
    """seq's next token: `token` when the device picked it (plain greedy), else sampled from logits. 1 if it is a
    generated token (counted by the caller), 0 if it ended the sequence as a stop token."""
    if token is None: token = sample(logits, seq.params, seq.prompt + seq.generated, seq.rng)
    if seq.first_token_at is None:
      seq.first_token_at = time.perf_counter()
      if self.metrics: self.metrics.time_to_first_token.observe(seq.first_token_at - seq.submitted)
    if token in self.stop_ids or token in seq.params.stop_token_ids:
      self._finish(seq, "stop")
      return 0
    logprob, top = None, None
    if seq.top_logprobs is not None:
      shifted = logits.astype(np.float64) - logits.max()
      logp = shifted - np.log(np.exp(shifted).sum())
      logprob = float(logp[token])
      if seq.top_logprobs: top = [(int(t), float(logp[t])) for t in np.argsort(-logp, kind="stable")[:seq.top_logprobs]]
    seq.generated.append(token)
    text, stopped = self._text(seq, token)
    seq.emit(TokenEvent(text, token, logprob, top))
    if stopped: self._finish(seq, "stop")
    elif len(seq.generated) >= seq.params.max_tokens or len(seq.prompt) + len(seq.generated) >= self.max_len: self._finish(seq, "length")
    else: seq.pending = token
    return 1

  def _text(self, seq: Sequence, token: int) -> tuple[str, bool]:
    """The text token adds that can be sent now, and whether a stop string ended the sequence."""
    piece = seq.held + seq.decoder.add(token)
    seq.held = ""
    if not seq.params.stop:
      seq.text += piece
      return piece, False
    for stop in seq.params.stop:
      # the text sent so far holds no stop string and ends in none's beginning (that is held back), so a stop can
      # only end inside piece: search the piece and the stop's length before it
      start = max(0, len(seq.text) - len(stop) + 1)
      at = (seq.text[start:] + piece).find(stop)
      if at >= 0:   # cut at the stop string
        before = (seq.text[start:] + piece)[:at][len(seq.text) - start:]
        seq.text += before
        return before, True
    # hold back a tail that could still grow into a stop string
    hold = max((k for stop in seq.params.stop for k in range(1, len(stop)) if piece.endswith(stop[:k])), default=0)
    emit, seq.held = (piece[:-hold], piece[-hold:]) if hold else (piece, "")
    seq.text += emit
    return emit, False

  def _finish(self, seq: Sequence, reason: str | None = None, error: str | None = None) -> None:
    if seq.finished: return
    seq.finished = True
    self.step.blocks.release(seq.blocks)
    seq.blocks = []
    if seq.cancelled: return
    if error is not None: seq.emit(ErrorEvent(error)); return
    tail = seq.held + (seq.decoder.flush() if reason == "length" else "")
    seq.text += tail
    seq.emit(DoneEvent(reason, tail))

  def _gauges(self) -> None:
    if not self.metrics: return
    self.metrics.queue_depth.set(len(self.waiting))
    self.metrics.running.set(len(self.running))
    self.metrics.kv_usage.set(self.kv_usage)
