"""The HTTP side's event path without a model: chunk formatting, and events from another thread to the loop."""
import asyncio
import json
import threading

import pytest

from teenygrad.serve.stream import ChunkFormat, EventPump, Mailbox

TEXTS = ["", "plain", ' "quoted" \\ back', "new\nline\ttab", "caf\u00e9 \u4e2d\u6587 \U0001f600", "\u2028\u2029 \x00\x1f", "\ufffd"]


@pytest.mark.parametrize("chat", [True, False])
@pytest.mark.parametrize("include_usage", [True, False])
def test_token_chunk_is_what_the_general_chunk_writes(chat, include_usage):
  form = ChunkFormat('cmpl-"1"', "chat.completion.chunk" if chat else "text_completion", 1700000000, "m\u00f6del", include_usage)
  for index in (0, 7):
    for text in TEXTS:
      choice = {"index": index, "delta": {"content": text}} if chat else {"index": index, "text": text}
      expected = form.chunk([{**choice, "logprobs": None, "finish_reason": None}])
      assert form.token(index, text) == expected
      body = json.loads(expected[len("data: "):])
      assert body["choices"][0]["delta" if chat else "text"] == ({"content": text} if chat else text)
      assert ("usage" in body) == include_usage and body.get("usage") is None


def test_pump_delivers_every_event_in_order_across_threads():
  async def main():
    pump, boxes = EventPump(asyncio.get_running_loop()), [Mailbox(), Mailbox()]
    count = 5000
    def produce():
      for i in range(count): pump.push(boxes[i % 2], i)
    thread = threading.Thread(target=produce)
    thread.start()
    got, takes = [[], []], 0
    while len(got[0]) + len(got[1]) < count:
      for box, out in zip(boxes, got):
        if box.items or len(out) < count // 2:
          out.extend(await box.take(timeout=5.0))
          takes += 1
    thread.join()
    return got, takes
  got, takes = asyncio.run(main())
  assert got == [list(range(0, 5000, 2)), list(range(1, 5000, 2))]
  assert takes < 5000   # events that arrived together were taken together


def test_mailbox_take_times_out_empty_and_wakes_on_put():
  async def main():
    box = Mailbox()
    assert await box.take(timeout=0.01) == []
    asyncio.get_running_loop().call_later(0.01, box.put, "a")
    assert await box.take(timeout=5.0) == ["a"]
    box.put("b"); box.put("c")
    assert await box.take() == ["b", "c"]
    waiting = asyncio.ensure_future(box.take())
    await asyncio.sleep(0)
    waiting.cancel()                 # a handler cancelled mid-wait (its client went away) leaves the box usable
    with pytest.raises(asyncio.CancelledError): await waiting
    box.put("d")
    assert box.waiter is None and await box.take() == ["d"]
  asyncio.run(main())
