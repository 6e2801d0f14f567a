"""The HTTP side: an OpenAI-compatible API on FastAPI, the chat page, /health and /metrics.

Handlers validate a request (protocol.py), turn it into engine Sequences (one per prompt and per `n`), and relay
the events the scheduler thread emits, as one JSON answer or as server-sent events. A client that goes away
cancels its sequences, which frees their batch slots and KV blocks before the next step.
"""
from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
from dataclasses import dataclass

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException

from teenygrad.llm.sampling import SamplingParams
from teenygrad.serve.engine import DoneEvent, Engine, ErrorEvent, QueueFull, Sequence, TokenEvent
from teenygrad.serve.metrics import Metrics
from teenygrad.serve.protocol import APIError, GenerationRequest, invalid, parse_request
from teenygrad.serve.stream import ChunkFormat, EventPump, Mailbox

MAX_BODY = 4 << 20          # bytes: larger bodies are refused before they are read whole
DEFAULT_MAX_TOKENS = 1024   # when the request names none (bounded by the context left)
STATIC = os.path.join(os.path.dirname(__file__), "static")


@dataclass
class ServerState:
  engine: Engine
  template: object            # ChatTemplate
  model_name: str
  api_key: str | None
  metrics: Metrics
  created: int
  pump: EventPump | None = None

  def event_pump(self) -> EventPump:
    loop = asyncio.get_running_loop()
    if self.pump is None or self.pump.loop is not loop: self.pump = EventPump(loop)
    return self.pump


def create_app(engine: Engine, template, model_name: str, api_key: str | None = None, metrics: Metrics | None = None):
  """The ASGI app serving engine's model as model_name. The engine's scheduler starts with the app."""
  metrics = metrics or engine.metrics or Metrics()
  state = ServerState(engine, template, model_name, api_key, metrics, int(time.time()))

  async def lifespan(app):
    if engine._thread is None: engine.start()
    yield
    engine.shutdown()

  app = FastAPI(title="teenygrad serve", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None)
  app.state.server = state

  def error_response(e: APIError, endpoint: str) -> JSONResponse:
    metrics.requests.labels(endpoint, str(e.status)).inc()
    return JSONResponse(e.body(), status_code=e.status)

  @app.exception_handler(APIError)
  async def api_error(request: Request, e: APIError): return error_response(e, request.url.path)

  @app.exception_handler(HTTPException)
  async def http_error(request: Request, e: HTTPException):
    return error_response(APIError(e.status_code, str(e.detail), type="invalid_request_error" if e.status_code < 500 else "server_error"),
                          request.url.path)

  @app.exception_handler(RequestValidationError)
  async def validation_error(request: Request, e: RequestValidationError): return error_response(invalid(str(e)), request.url.path)

  @app.exception_handler(Exception)
  async def internal_error(request: Request, e: Exception):
    return error_response(APIError(500, f"internal error: {type(e).__name__}: {e}", type="server_error"), request.url.path)

  def authorize(request: Request) -> None:
    if state.api_key is None: return
    header = request.headers.get("authorization", "")
    scheme, _, key = header.partition(" ")
    if scheme.lower() != "bearer" or key.strip() != state.api_key:
      raise APIError(401, "Incorrect API key provided: pass it as 'Authorization: Bearer KEY'", type="invalid_request_error",
                     code="invalid_api_key")

  async def read_json(request: Request):
    length = request.headers.get("content-length")
    if length is not None and (not length.isdigit() or int(length) > MAX_BODY):
      raise APIError(413, f"the request body is larger than {MAX_BODY} bytes", code="request_too_large")
    data = bytearray()
    async for chunk in request.stream():
      data += chunk
      if len(data) > MAX_BODY: raise APIError(413, f"the request body is larger than {MAX_BODY} bytes", code="request_too_large")
    try: text = bytes(data).decode("utf-8")
    except UnicodeDecodeError as e: raise invalid(f"the request body is not valid UTF-8: {e}") from None
    try: return json.loads(text)
    except ValueError as e: raise invalid(f"the request body is not valid JSON: {e}") from None

  @app.get("/")
  async def index(): return FileResponse(os.path.join(STATIC, "index.html"), media_type="text/html")

  @app.get("/health")
  async def health():
    alive = engine._thread is not None and engine._thread.is_alive()
    return JSONResponse({"status": "ok" if alive else "scheduler stopped"}, status_code=200 if alive else 503)

  @app.get("/metrics")
  async def prometheus():
    body, content_type = metrics.render()
    return Response(body, media_type=content_type)

  @app.get("/v1/models")
  async def models(request: Request):
    authorize(request)
    metrics.requests.labels("/v1/models", "200").inc()
    return {"object": "list", "data": [{"id": state.model_name, "object": "model", "created": state.created, "owned_by": "teenygrad",
                                        "max_model_len": engine.max_len}]}

  async def generate(request: Request, chat: bool):
    endpoint = request.url.path
    authorize(request)
    req = parse_request(await read_json(request), chat)
    if req.model != state.model_name: raise APIError(404, f"The model '{req.model}' does not exist (this server has '{state.model_name}')",
                                                     "model", code="model_not_found")
    prompts = _encode_prompts(state, req)
    run = _Run(state, req, prompts, state.event_pump())
    run.submit()
    metrics.prompt_tokens.inc(sum(len(p) for p in prompts))
    if req.stream:
      metrics.requests.labels(endpoint, "200").inc()
      return StreamingResponse(run.sse(request), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
    try: body = await run.collect(request)
    finally: run.cancel()
    metrics.requests.labels(endpoint, "200").inc()
    return JSONResponse(body)

  @app.post("/v1/chat/completions")
  async def chat_completions(request: Request): return await generate(request, chat=True)

  @app.post("/v1/completions")
  async def completions(request: Request): return await generate(request, chat=False)

  return app


def _encode_prompts(state: ServerState, req: GenerationRequest) -> list[list[int]]:
  tokenizer, engine = state.engine.tokenizer, state.engine
  if req.chat:
    try: text = state.template.render(req.messages, add_generation_prompt=True)
    except ValueError as e: raise invalid(str(e), "messages") from None
    prompts = [tokenizer.encode(text, add_bos=False)]
  else:
    prompts = []
    for p in req.prompts:
      if isinstance(p, str): prompts.append(tokenizer.encode(p))
      else:
        bad = [t for t in p if not 0 <= t < engine.model.config.vocab_size]
        if bad: raise invalid(f"token id {bad[0]} is outside the vocabulary (0..{engine.model.config.vocab_size - 1})", "prompt")
        prompts.append(list(p))
  for p in prompts:
    if not p: raise invalid("the prompt is empty", "prompt")
    room = engine.max_len - len(p)
    if room < 1 or (req.max_tokens is not None and req.max_tokens > room):
      raise invalid(f"This model's maximum context length is {engine.max_len} tokens. However, you requested "
                    f"{len(p) + (req.max_tokens or 1)} tokens ({len(p)} in the prompt, {req.max_tokens or 1} for the completion).",
                    "messages" if req.chat else "prompt")
  return prompts


class _Run:
  """The sequences of one request and the events they send back."""
  def __init__(self, state: ServerState, req: GenerationRequest, prompts: list[list[int]], pump: EventPump):
    self.state, self.req, self.prompts, self.pump = state, req, prompts, pump
    self.id = ("chatcmpl-" if req.chat else "cmpl-") + uuid.uuid4().hex
    self.created = int(time.time())
    self.mailbox = Mailbox()
    self.format = ChunkFormat(self.id, "chat.completion.chunk" if req.chat else "text_completion", self.created, state.model_name,
                              req.include_usage)
    self.sequences: list[Sequence] = []

  def submit(self) -> None:
    req, engine = self.req, self.state.engine
    for p_index, prompt in enumerate(self.prompts):
      max_tokens = req.max_tokens if req.max_tokens is not None else min(DEFAULT_MAX_TOKENS, engine.max_len - len(prompt))
      for j in range(req.n):
        index = p_index * req.n + j
        params = SamplingParams(temperature=req.temperature, top_p=req.top_p, frequency_penalty=req.frequency_penalty,
                                presence_penalty=req.presence_penalty, seed=req.seed, max_tokens=max_tokens, stop=req.stop)
        emit = (lambda event, index=index: self.pump.push(self.mailbox, (index, event)))
        seq = Sequence(prompt, params, emit, top_logprobs=req.top_logprobs if req.logprobs else None, seed_offset=j)
        self.sequences.append(seq)
        if max_tokens == 0: self.mailbox.put((index, DoneEvent("length", ""))); seq.finished = True; continue
        try: engine.submit(seq)
        except QueueFull as e:
          self.cancel()
          raise APIError(503, str(e), type="server_error", code="queue_full") from None
        except ValueError as e:
          self.cancel()
          raise invalid(str(e)) from None

  def cancel(self) -> None:
    for seq in self.sequences:
      if not seq.finished: self.state.engine.cancel(seq)

  async def batches(self, request):
    """Lists of (index, event) pairs, each what arrived since the last, until every sequence is done; stops early
    if the client disconnects (checked each second without an event)."""
    remaining = len(self.sequences)
    while remaining:
      items = await self.mailbox.take(timeout=1.0)
      if not items:
        if await request.is_disconnected(): return
        continue
      for at, (_, event) in enumerate(items):
        if isinstance(event, ErrorEvent):
          if at: yield items[:at]
          raise APIError(500, event.message, type="server_error")
        if isinstance(event, DoneEvent): remaining -= 1
      yield items

  def _token_text(self, token_id: int) -> str: return self.state.engine.tokenizer.decode([token_id])

  def _chat_logprob(self, event: TokenEvent) -> dict:
    def entry(token_id: int, logprob: float) -> dict:
      text = self._token_text(token_id)
      return {"token": text, "logprob": logprob, "bytes": list(text.encode("utf-8"))}
    return {**entry(event.token_id, event.logprob), "top_logprobs": [entry(t, lp) for t, lp in (event.top_logprobs or [])]}

  def _usage(self, generated: int) -> dict:
    prompt = sum(len(p) for p in self.prompts)
    return {"prompt_tokens": prompt, "completion_tokens": generated, "total_tokens": prompt + generated}

  async def collect(self, request) -> dict:
    count = len(self.sequences)
    texts, reasons, tokens = [""] * count, [None] * count, [0] * count
    logprobs: list[list[TokenEvent]] = [[] for _ in range(count)]
    async for batch in self.batches(request):
      for index, event in batch:
        texts[index] += event.text
        if isinstance(event, TokenEvent):
          tokens[index] += 1
          if self.req.logprobs: logprobs[index].append(event)
        else: reasons[index] = event.finish_reason
    choices = []
    for i in range(count):
      if self.req.chat:
        lp = {"content": [self._chat_logprob(e) for e in logprobs[i]]} if self.req.logprobs else None
        choices.append({"index": i, "message": {"role": "assistant", "content": texts[i]}, "logprobs": lp, "finish_reason": reasons[i]})
      else:
        choices.append({"index": i, "text": texts[i], "logprobs": self._completion_logprobs(logprobs[i]) if self.req.logprobs else None,
                        "finish_reason": reasons[i]})
    return {"id": self.id, "object": "chat.completion" if self.req.chat else "text_completion", "created": self.created,
            "model": self.state.model_name, "choices": choices, "usage": self._usage(sum(tokens))}

  def _completion_logprobs(self, events: list[TokenEvent], offset: int = 0) -> dict:
    tokens, offsets = [], []
    for e in events:
      offsets.append(offset)
      tokens.append(self._token_text(e.token_id))
      offset += len(e.text)
    tops = [{self._token_text(t): lp for t, lp in (e.top_logprobs or [])} for e in events] if self.req.top_logprobs else None
    return {"tokens": tokens, "token_logprobs": [e.logprob for e in events], "top_logprobs": tops, "text_offset": offsets}

  def _sse_event(self, index: int, event, offsets: list[int]) -> str:
    """The SSE event of one engine event ("" for a token with no text yet and nothing else to say)."""
    form, chat = self.format, self.req.chat
    if isinstance(event, TokenEvent):
      if not self.req.logprobs: return form.token(index, event.text) if event.text else ""
      if chat: return form.chunk([{"index": index, "delta": {"content": event.text}, "logprobs": {"content": [self._chat_logprob(event)]},
                                   "finish_reason": None}])
      lp = self._completion_logprobs([event], offsets[index])
      offsets[index] += len(event.text)
      return form.chunk([{"index": index, "text": event.text, "logprobs": lp, "finish_reason": None}])
    if chat:
      delta = {"content": event.text} if event.text else {}
      return form.chunk([{"index": index, "delta": delta, "logprobs": None, "finish_reason": event.finish_reason}])
    return form.chunk([{"index": index, "text": event.text, "logprobs": None, "finish_reason": event.finish_reason}])

  async def sse(self, request):
    """The stream's events; what arrived together is written together (each event still a chunk of its own)."""
    generated, offsets = 0, [0] * len(self.sequences)
    try:
      if self.req.chat:
        yield "".join(self.format.chunk([{"index": i, "delta": {"role": "assistant", "content": ""}, "logprobs": None, "finish_reason": None}])
                      for i in range(len(self.sequences)))
      async for batch in self.batches(request):
        generated += sum(isinstance(event, TokenEvent) for _, event in batch)
        text = "".join([self._sse_event(index, event, offsets) for index, event in batch])
        if text: yield text
      yield (self.format.chunk([], self._usage(generated)) if self.req.include_usage else "") + "data: [DONE]\n\n"
    except APIError as e:
      yield f"data: {json.dumps(e.body())}\n\n"
    finally:
      self.cancel()
