"""Request validation for the OpenAI-compatible endpoints: JSON bodies in, checked parameters out.

Every problem raises `APIError` with OpenAI's error fields (message, type, param, code) and the HTTP status the
server answers with; nothing a client sends gets past here unchecked.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

MAX_N = 16
MAX_STOPS = 4
# accepted and ignored: they change nothing a local model does
IGNORED = {"user", "metadata", "store", "service_tier", "parallel_tool_calls", "logit_bias", "suffix", "echo", "best_of"}


class APIError(Exception):
  """An error answered in OpenAI's format: {"error": {"message", "type", "param", "code"}}."""
  def __init__(self, status: int, message: str, param: str | None = None, type: str = "invalid_request_error", code: str | None = None):
    super().__init__(message)
    self.status, self.message, self.param, self.type, self.code = status, message, param, type, code

  def body(self) -> dict:
    return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def invalid(message: str, param: str | None = None) -> APIError:
  return APIError(400, message, param, code="invalid_value" if param else None)


@dataclass
class GenerationRequest:
  """What both endpoints ask for, checked."""
  model: str
  chat: bool
  messages: list[dict] | None = None       # chat
  prompts: list[str | list[int]] = field(default_factory=list)   # completions
  max_tokens: int | None = None
  temperature: float = 1.0
  top_p: float = 1.0
  frequency_penalty: float = 0.0
  presence_penalty: float = 0.0
  seed: int | None = None
  n: int = 1
  stop: list[str] = field(default_factory=list)
  stream: bool = False
  include_usage: bool = False
  logprobs: bool = False
  top_logprobs: int = 0


def _number(body: dict, name: str, default: float, low: float, high: float, low_open: bool = False) -> float:
  value = body.get(name)
  if value is None: return default
  if isinstance(value, bool) or not isinstance(value, (int, float)): raise invalid(f"'{name}' must be a number, got {type(value).__name__}", name)
  if value != value or (value <= low if low_open else value < low) or value > high:
    raise invalid(f"'{name}' must be in {'(' if low_open else '['}{low}, {high}], got {value}", name)
  return float(value)


def _integer(body: dict, name: str, default: int | None, low: int, high: int | None = None) -> int | None:
  value = body.get(name)
  if value is None: return default
  if isinstance(value, bool) or not isinstance(value, int): raise invalid(f"'{name}' must be an integer, got {type(value).__name__}", name)
  if value < low or (high is not None and value > high):
    raise invalid(f"'{name}' must be {'>= ' + str(low) if high is None else f'in [{low}, {high}]'}, got {value}", name)
  return value


def _boolean(body: dict, name: str) -> bool:
  value = body.get(name)
  if value is None: return False
  if not isinstance(value, bool): raise invalid(f"'{name}' must be a boolean, got {type(value).__name__}", name)
  return value


def _content_text(content: Any, index: int) -> str:
  if isinstance(content, str): return content
  if isinstance(content, list):   # content parts: only text
    texts = []
    for part in content:
      if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
        raise invalid(f"messages[{index}].content: only text parts ({{'type': 'text', 'text': ...}}) are supported", "messages")
      texts.append(part["text"])
    return "".join(texts)
  if content is None: return ""
  raise invalid(f"messages[{index}].content must be a string or a list of text parts, got {type(content).__name__}", "messages")


def _messages(value: Any) -> list[dict]:
  if not isinstance(value, list) or not value: raise invalid("'messages' must be a non-empty list", "messages")
  out = []
  for i, m in enumerate(value):
    if not isinstance(m, dict): raise invalid(f"messages[{i}] must be an object, got {type(m).__name__}", "messages")
    role = m.get("role")
    if role not in ("system", "developer", "user", "assistant", "tool"):
      raise invalid(f"messages[{i}].role must be one of system, developer, user, assistant, tool; got {role!r}", "messages")
    out.append({"role": "system" if role == "developer" else role, "content": _content_text(m.get("content"), i)})
  return out


def _prompts(value: Any) -> list[str | list[int]]:
  if isinstance(value, str): return [value]
  if isinstance(value, list) and value:
    if all(isinstance(v, str) for v in value): return list(value)
    if all(isinstance(v, int) and not isinstance(v, bool) for v in value): return [list(value)]
    if all(isinstance(v, list) and v and all(isinstance(t, int) and not isinstance(t, bool) for t in v) for v in value):
      return [list(v) for v in value]
  raise invalid("'prompt' must be a string, a list of strings, a list of token ids or a list of such lists", "prompt")


def parse_request(body: Any, chat: bool) -> GenerationRequest:
  """Check a decoded JSON body of /v1/chat/completions (chat) or /v1/completions."""
  if not isinstance(body, dict): raise invalid(f"the request body must be a JSON object, got {type(body).__name__}")
  known = {"model", "max_tokens", "temperature", "top_p", "frequency_penalty", "presence_penalty", "seed", "n", "stop", "stream",
           "stream_options", "logprobs"} | ({"messages", "max_completion_tokens", "top_logprobs"} if chat else {"prompt"})
  for name in body:
    if name not in known and name not in IGNORED: raise invalid(f"Unrecognized request argument supplied: {name}", name)
  model = body.get("model")
  if not isinstance(model, str): raise invalid("'model' is required and must be a string", "model")
  req = GenerationRequest(model=model, chat=chat)
  if chat: req.messages = _messages(body.get("messages"))
  else:
    if "prompt" not in body: raise invalid("'prompt' is required", "prompt")
    req.prompts = _prompts(body["prompt"])
  req.max_tokens = _integer(body, "max_tokens", None, 0)
  if chat and body.get("max_completion_tokens") is not None: req.max_tokens = _integer(body, "max_completion_tokens", None, 0)
  req.temperature = _number(body, "temperature", 1.0, 0.0, 2.0)
  req.top_p = _number(body, "top_p", 1.0, 0.0, 1.0, low_open=True)
  req.frequency_penalty = _number(body, "frequency_penalty", 0.0, -2.0, 2.0)
  req.presence_penalty = _number(body, "presence_penalty", 0.0, -2.0, 2.0)
  req.seed = _integer(body, "seed", None, -(2 ** 63))
  req.n = _integer(body, "n", 1, 1, MAX_N)
  stop = body.get("stop")
  if isinstance(stop, str): req.stop = [stop]
  elif isinstance(stop, list) and all(isinstance(s, str) for s in stop) and len(stop) <= MAX_STOPS: req.stop = list(stop)
  elif stop is not None: raise invalid(f"'stop' must be a string or a list of at most {MAX_STOPS} strings", "stop")
  if any(not s for s in req.stop): raise invalid("'stop' strings must not be empty", "stop")
  req.stream = _boolean(body, "stream")
  options = body.get("stream_options")
  if options is not None:
    if not isinstance(options, dict): raise invalid("'stream_options' must be an object", "stream_options")
    if not req.stream: raise invalid("'stream_options' is only allowed when 'stream' is true", "stream_options")
    req.include_usage = _boolean(options, "include_usage")
  if chat:
    req.logprobs = _boolean(body, "logprobs")
    req.top_logprobs = _integer(body, "top_logprobs", 0, 0, 20)
    if body.get("top_logprobs") is not None and not req.logprobs: raise invalid("'top_logprobs' needs 'logprobs' set to true", "top_logprobs")
  else:
    count = _integer(body, "logprobs", None, 0, 5)
    req.logprobs, req.top_logprobs = count is not None, count or 0
  return req
