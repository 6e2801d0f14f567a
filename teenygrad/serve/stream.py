"""The event path of the HTTP side: the scheduler thread's events to each request's handler, and the server-sent
event chunks they become.

Per generated token the event loop does: take the token's event, format its chunk, write it. Everything here keeps
that short, because on an accelerator the event loop's work per token holds the GIL that the scheduler thread
needs between steps:
  - `EventPump`: one loop wakeup per batch of events from the scheduler thread, not one per event;
  - `Mailbox`: a request's pending events, taken all at once (a stream that fell behind writes its chunks in one
    send), awaited on one future, with no asyncio task created per token (as `asyncio.wait_for` on a queue does);
  - `ChunkFormat`: a token's chunk is the request's pre-serialized head and tail around the escaped text, not a
    json.dumps of the whole object.
"""
from __future__ import annotations

import asyncio
import json
from collections import deque

_json_string = json.JSONEncoder(ensure_ascii=False).encode   # a str's JSON literal, as json.dumps(s, ensure_ascii=False)


class Mailbox:
  """The (index, event) items of one request, on the event loop's thread."""
  def __init__(self):
    self.items: list = []
    self.waiter: asyncio.Future | None = None

  def put(self, item) -> None:   # the loop's thread
    self.items.append(item)
    if self.waiter is not None and not self.waiter.done(): self.waiter.set_result(None)

  async def take(self, timeout: float | None = None) -> list:
    """Every item pending, waiting for the first if there is none; [] if none came within timeout seconds."""
    if not self.items:
      loop = asyncio.get_running_loop()
      self.waiter = waiter = loop.create_future()
      timer = loop.call_later(timeout, _wake, waiter) if timeout is not None else None
      try: await waiter
      finally:
        self.waiter = None
        if timer is not None: timer.cancel()
    items, self.items = self.items, []
    return items


def _wake(waiter: asyncio.Future) -> None:
  if not waiter.done(): waiter.set_result(None)


class EventPump:
  """Carries the scheduler thread's events to the event loop with one wakeup per batch of events, not one per event:
  a decode step of 32 rows emits 32 tokens at once, and every `call_soon_threadsafe` is a write to the loop's
  self-pipe and a separate turn of the loop, taken under the GIL the scheduler thread needs for its next step."""
  def __init__(self, loop: asyncio.AbstractEventLoop):
    self.loop = loop
    self.pending: deque = deque()   # (mailbox, item); deque appends and pops are atomic
    self.scheduled = False

  def push(self, mailbox: Mailbox, item) -> None:   # any thread
    self.pending.append((mailbox, item))
    if not self.scheduled:
      self.scheduled = True
      self.loop.call_soon_threadsafe(self._drain)

  def _drain(self) -> None:   # the loop's thread
    self.scheduled = False    # first: an event pushed from now on schedules another drain, so none is left behind
    while self.pending:
      mailbox, item = self.pending.popleft()
      mailbox.put(item)


class ChunkFormat:
  """The `data: {...}` events of one streamed request. Its chunks differ only in their choices (and the last one's
  usage), so the fixed fields are serialized once; `token` is byte for byte what `chunk` writes for a plain token.

  Args:
    id, object, created, model: the chunk's fixed fields. include_usage: every chunk carries "usage" (null but the last).
  """
  def __init__(self, id: str, object: str, created: int, model: str, include_usage: bool):
    self.fixed = {"id": id, "object": object, "created": created, "model": model}
    self.include_usage, self.chat = include_usage, object == "chat.completion.chunk"
    self.head = "data: " + json.dumps(self.fixed, ensure_ascii=False)[:-1] + ', "choices": ['
    self.tail = "]" + (', "usage": null' if include_usage else "") + "}\n\n"

  def chunk(self, choices: list[dict], usage: dict | None = None) -> str:
    body = {**self.fixed, "choices": choices}
    if self.include_usage: body["usage"] = usage
    return f"data: {json.dumps(body, ensure_ascii=False)}\n\n"

  def token(self, index: int, text: str) -> str:
    """The chunk of one plain token of choice `index` (no logprobs, not the last)."""
    piece = f'"delta": {{"content": {_json_string(text)}}}' if self.chat else f'"text": {_json_string(text)}'
    return f'{self.head}{{"index": {index}, {piece}, "logprobs": null, "finish_reason": null}}{self.tail}'
