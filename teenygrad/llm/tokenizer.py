"""Tokenizers built with Hugging Face `tokenizers`: from a GGUF vocabulary (tokens, merges, scores, types) or from
a model folder's tokenizer.json.

GGUF names the pre-tokenizer by preset (`tokenizer.ggml.pre`); each preset below is the split regex llama.cpp and
the original Hugging Face tokenizer use. `model == "llama"` is SentencePiece-style BPE: spaces become "▁", unknown
bytes fall back to <0xNN> tokens, and the merges are derived from the vocabulary's scores.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

# split regexes (the same ones llama.cpp's llama-vocab.cpp and the models' tokenizer.json use)
GPT2_SPLIT = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
LLAMA3_SPLIT = (r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"""
                r"""|\s+(?!\S)|\s+""")
QWEN2_SPLIT = (r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"""
               r"""|\s+(?!\S)|\s+""")
PRESETS = {   # tokenizer.ggml.pre -> (split regexes applied in order, digits one by one first)
  "default": ([GPT2_SPLIT], False), "gpt2": ([GPT2_SPLIT], False), "gpt-2": ([GPT2_SPLIT], False),
  "smollm": ([GPT2_SPLIT], True), "starcoder": ([GPT2_SPLIT], True),
  "llama-bpe": ([LLAMA3_SPLIT], False), "llama3": ([LLAMA3_SPLIT], False), "llama-v3": ([LLAMA3_SPLIT], False),
  "qwen2": ([QWEN2_SPLIT], False), "deepseek-r1-qwen": ([QWEN2_SPLIT], False),
}
# token types in GGUF (llama.cpp's llama_token_type)
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6
END_OF_TURN_NAMES = {"<|im_end|>", "<|eot_id|>", "<|end|>", "<end_of_turn>", "<|endoftext|>", "<|end_of_text|>", "</s>"}


def _require_tokenizers():
  try:
    import tokenizers
  except ImportError:
    raise ImportError("the tokenizer needs the 'tokenizers' package: pip install 'teenygrad[llm]'") from None
  return tokenizers


@dataclass
class Tokenizer:
  """Text <-> token ids, with the model's BOS/EOS conventions.

  Attributes:
    bos_id / eos_id: None when the model has none; add_bos: whether encode() prepends BOS by default.
    stop_ids: token ids that end a generation (EOS and end-of-turn markers).
  """
  backend: object
  bos_id: int | None = None
  eos_id: int | None = None
  add_bos: bool = False
  stop_ids: set[int] = field(default_factory=set)
  chat_template: str | None = None

  @property
  def vocab_size(self) -> int: return self.backend.get_vocab_size(with_added_tokens=True)

  def encode(self, text: str, add_bos: bool | None = None) -> list[int]:
    """Token ids of text; special tokens written in the text (chat markup) become their ids."""
    ids = self.backend.encode(text, add_special_tokens=False).ids
    if (self.add_bos if add_bos is None else add_bos) and self.bos_id is not None: ids = [self.bos_id] + ids
    return ids

  def decode(self, ids: list[int], skip_special: bool = False) -> str:
    return self.backend.decode(list(ids), skip_special_tokens=skip_special)

  def token_to_id(self, token: str) -> int | None: return self.backend.token_to_id(token)
  def id_to_token(self, token_id: int) -> str | None: return self.backend.id_to_token(token_id)

  # ---- construction ----
  @classmethod
  def from_gguf_metadata(cls, md: dict) -> Tokenizer:
    model = md.get("tokenizer.ggml.model")
    tokens = md.get("tokenizer.ggml.tokens")
    if not tokens: raise ValueError("GGUF metadata has no tokenizer.ggml.tokens")
    types = md.get("tokenizer.ggml.token_type") or [NORMAL] * len(tokens)
    if model == "gpt2": backend = _byte_level_bpe(tokens, md.get("tokenizer.ggml.merges") or [], md.get("tokenizer.ggml.pre", "default"))
    elif model == "llama": backend = _sentencepiece_bpe(tokens, md.get("tokenizer.ggml.scores") or [0.0] * len(tokens), types)
    else: raise ValueError(f"unsupported GGUF tokenizer model {model!r} (supported: gpt2, llama)")
    specials = [t for t, ty in zip(tokens, types) if ty in (CONTROL, USER_DEFINED)]
    _add_special_tokens(backend, specials)
    bos, eos = md.get("tokenizer.ggml.bos_token_id"), md.get("tokenizer.ggml.eos_token_id")
    add_bos = md.get("tokenizer.ggml.add_bos_token", model == "llama")
    stop = {eos} if eos is not None else set()
    if md.get("tokenizer.ggml.eot_token_id") is not None: stop.add(md["tokenizer.ggml.eot_token_id"])
    stop |= {i for i, (t, ty) in enumerate(zip(tokens, types)) if ty == CONTROL and t in END_OF_TURN_NAMES}
    return cls(backend, bos, eos, bool(add_bos), stop, md.get("tokenizer.chat_template"))

  @classmethod
  def from_folder(cls, folder: str) -> Tokenizer:
    tokenizers = _require_tokenizers()
    path = os.path.join(folder, "tokenizer.json")
    if not os.path.isfile(path): raise FileNotFoundError(f"{folder} has no tokenizer.json")
    backend = tokenizers.Tokenizer.from_file(path)
    config = _read_json(os.path.join(folder, "tokenizer_config.json"))
    gen = _read_json(os.path.join(folder, "generation_config.json"))
    def token_id(value):
      if isinstance(value, dict): value = value.get("content")
      return backend.token_to_id(value) if isinstance(value, str) else None
    bos, eos = token_id(config.get("bos_token")), token_id(config.get("eos_token"))
    add_bos = bool(config.get("add_bos_token", False))
    stop = {eos} if eos is not None else set()
    gen_eos = gen.get("eos_token_id")
    stop |= set(gen_eos if isinstance(gen_eos, list) else [gen_eos] if gen_eos is not None else [])
    stop |= {backend.token_to_id(t) for t in END_OF_TURN_NAMES if backend.token_to_id(t) is not None}
    template = config.get("chat_template")
    if isinstance(template, list): template = next((t["template"] for t in template if t.get("name") == "default"), None)
    return cls(backend, bos, eos, add_bos, stop, template)


def _read_json(path: str) -> dict:
  if not os.path.isfile(path): return {}
  with open(path, encoding="utf-8") as f: return json.load(f)


def _add_special_tokens(backend, specials: list[str]) -> None:
  tokenizers = _require_tokenizers()
  backend.add_special_tokens([tokenizers.AddedToken(t, special=True, normalized=False) for t in specials])


def _byte_level_bpe(tokens: list[str], merges: list[str], pre: str):
  tokenizers = _require_tokenizers()
  from tokenizers import decoders, models, pre_tokenizers
  if pre not in PRESETS: raise ValueError(f"unknown pre-tokenizer preset {pre!r} (known: {sorted(PRESETS)})")
  vocab = {t: i for i, t in enumerate(tokens)}
  pairs = [tuple(m.split(" ", 1)) for m in merges]
  backend = tokenizers.Tokenizer(models.BPE(vocab, pairs, fuse_unk=False, byte_fallback=False, ignore_merges=pre in ("llama-bpe", "llama3")))
  splits, individual_digits = PRESETS[pre]
  steps = [pre_tokenizers.Digits(individual_digits=True)] if individual_digits else []
  steps += [pre_tokenizers.Split(tokenizers.Regex(r), behavior="isolated") for r in splits]
  steps.append(pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False))
  backend.pre_tokenizer = pre_tokenizers.Sequence(steps)
  backend.decoder = decoders.ByteLevel()
  return backend


def _sentencepiece_bpe(tokens: list[str], scores: list[float], types: list[int]):
  """SentencePiece BPE as a tokenizers BPE: merges are every split of a token into two vocabulary pieces, ranked
  by the merged token's score (what Hugging Face's LlamaConverter does)."""
  tokenizers = _require_tokenizers()
  from tokenizers import decoders, models, normalizers
  vocab = {t: i for i, t in enumerate(tokens)}
  merges = []
  for token, score in zip(tokens, scores):
    for cut in range(1, len(token)):
      left, right = token[:cut], token[cut:]
      if left in vocab and right in vocab: merges.append((score, vocab[left], vocab[right], left, right))
  merges.sort(key=lambda m: (-m[0], m[1], m[2]))
  unk = next((t for t, ty in zip(tokens, types) if ty == UNKNOWN), None)
  backend = tokenizers.Tokenizer(models.BPE(vocab, [(m[3], m[4]) for m in merges], unk_token=unk, fuse_unk=True, byte_fallback=True))
  backend.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
  backend.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)])
  return backend


class StreamDecoder:
  """Turns token ids into text one token at a time without ever splitting a UTF-8 character.

  Decodes a small window of recent tokens and emits only the text past what was already emitted, holding back
  while the window ends in an incomplete character (U+FFFD from a partial byte sequence)."""
  def __init__(self, tokenizer: Tokenizer, skip_special: bool = True):
    self.tokenizer, self.skip_special = tokenizer, skip_special
    self.ids: list[int] = []
    self.prefix_offset = 0   # start of the window decoded for context
    self.read_offset = 0     # tokens up to here have been emitted

  def add(self, token_id: int) -> str:
    self.ids.append(token_id)
    prefix = self.tokenizer.decode(self.ids[self.prefix_offset:self.read_offset], self.skip_special)
    full = self.tokenizer.decode(self.ids[self.prefix_offset:], self.skip_special)
    if full.endswith("\ufffd") or len(full) <= len(prefix): return ""
    self.prefix_offset, self.read_offset = self.read_offset, len(self.ids)
    return full[len(prefix):]

  def flush(self) -> str:
    """Whatever is still held back (an incomplete character at the very end decodes as U+FFFD)."""
    prefix = self.tokenizer.decode(self.ids[self.prefix_offset:self.read_offset], self.skip_special)
    full = self.tokenizer.decode(self.ids[self.prefix_offset:], self.skip_special)
    self.prefix_offset = self.read_offset = len(self.ids)
    return full[len(prefix):]
