"""Streaming detokenization for the scheduler: `StreamDecoder`'s text, mostly without calling the tokenizer.

`StreamDecoder.add` decodes two windows of recent tokens per token (two calls into `tokenizers`, ~13 us on the 2-core
dev VM): per generated token, the largest share of the scheduler's host work. A byte-level BPE tokenizer (GPT-2's
alphabet: SmolLM2, Llama 3, Qwen) decodes a list of ids as the UTF-8 of their bytes put end to end, so while the text
so far is whole characters, a token's text is the UTF-8 of the bytes held since the last piece plus its own: a dict
lookup and a `bytes.decode`. Anything else (a character split across tokens, invalid UTF-8) goes through
`StreamDecoder.add` itself, whose state is kept exactly as it would be, so the text is the same in every case.
"""
from __future__ import annotations

from teenygrad.llm.tokenizer import StreamDecoder, Tokenizer


def _byte_level_alphabet() -> dict[str, int]:
  """GPT-2's bytes_to_unicode, inverted: the character that stands for each byte in a byte-level vocabulary."""
  printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
  chars, extra = {}, 0
  for b in range(256):
    if b in printable: chars[chr(b)] = b
    else:
      chars[chr(256 + extra)] = b
      extra += 1
  return chars


class TokenBytes:
  """The bytes of every token id of a byte-level tokenizer, as its decoder joins them (special tokens: none, as
  `decode(..., skip_special=True)` skips them). `of` gives None for other tokenizers, or if any id's bytes do not
  decode to what the tokenizer decodes that id to alone."""
  def __init__(self, table: list[bytes]):
    self.table = table

  @classmethod
  def of(cls, tokenizer: Tokenizer) -> TokenBytes | None:
    try: from tokenizers import decoders
    except ImportError: return None
    backend = getattr(tokenizer, "backend", None)
    if not isinstance(getattr(backend, "decoder", None), decoders.ByteLevel): return None
    alphabet = _byte_level_alphabet()
    added = backend.get_added_tokens_decoder()
    size = backend.get_vocab_size(with_added_tokens=True)
    table = []
    for i in range(size):
      token = added[i].content if i in added else backend.id_to_token(i)
      if token is None or (i in added and added[i].special): table.append(b""); continue
      # the decoder maps a token's characters back to bytes; a token with a character outside the alphabet is its UTF-8
      table.append(bytes(alphabet[c] for c in token) if all(c in alphabet for c in token) else token.encode("utf-8"))
    expected = backend.decode_batch([[i] for i in range(size)], skip_special_tokens=True)
    if any(b.decode("utf-8", "replace") != text for b, text in zip(table, expected)): return None
    return cls(table)


class FastStreamDecoder(StreamDecoder):
  """A StreamDecoder that decodes from token bytes while the text so far is whole characters (see the module doc).

  Invariants: `pending` is the bytes of ids[read_offset:]; `clean` says ids[prefix_offset:read_offset] are valid,
  complete UTF-8, so the window StreamDecoder decodes is that prefix's text followed by the pending bytes' text."""
  def __init__(self, tokenizer: Tokenizer, token_bytes: TokenBytes):
    super().__init__(tokenizer)
    self.token_bytes = token_bytes.table
    self.pending, self.clean = b"", True

  def add(self, token_id: int) -> str:
    if self.clean and 0 <= token_id < len(self.token_bytes):
      data = self.pending + self.token_bytes[token_id]
      try: text = data.decode("utf-8")
      except UnicodeDecodeError: text = None
      if text is not None:
        self.ids.append(token_id)
        if not text or text.endswith("\ufffd"):   # StreamDecoder holds: nothing new, or its window ends in U+FFFD
          self.pending = data
          return ""
        self.prefix_offset, self.read_offset = self.read_offset, len(self.ids)
        self.pending = b""
        return text
    text = super().add(token_id)
    self.pending = self._bytes(self.ids[self.read_offset:])
    try:
      self._bytes(self.ids[self.prefix_offset:self.read_offset]).decode("utf-8")
      self.clean = True
    except UnicodeDecodeError: self.clean = False
    return text

  def _bytes(self, ids: list[int]) -> bytes:
    table = self.token_bytes
    return b"".join(table[i] if 0 <= i < len(table) else b"\xff" for i in ids)   # an unknown id: never clean

  def flush(self) -> str:
    self.pending, self.clean = b"", True
    return super().flush()


def stream_decoder_factory(tokenizer: Tokenizer):
  """A function making a new stream decoder for tokenizer: the fast one where its tokens have bytes."""
  token_bytes = TokenBytes.of(tokenizer)
  if token_bytes is None: return lambda: StreamDecoder(tokenizer)
  return lambda: FastStreamDecoder(tokenizer, token_bytes)
