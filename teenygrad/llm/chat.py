"""Chat templates: the Jinja template a model ships (GGUF `tokenizer.chat_template` or tokenizer_config.json),
rendered in jinja2's ImmutableSandboxedEnvironment so that a hostile template cannot reach Python internals
(attributes starting with `_`, `__class__`/`__subclasses__`, mutating lists or dicts): it raises ChatTemplateError.
"""
from __future__ import annotations

import datetime

# used when a model has no template of its own (ChatML, what SmolLM2 and Qwen use)
CHATML_TEMPLATE = ("{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
                   "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")


class ChatTemplateError(ValueError):
  """The chat template is invalid, or tried something the sandbox forbids."""


def _raise(message: str):
  raise ChatTemplateError(f"chat template raised: {message}")


class ChatTemplate:
  """A compiled chat template.

  Args:
    source: the Jinja source.
    bos_token / eos_token: strings the template may refer to.
  """
  def __init__(self, source: str | None, bos_token: str = "", eos_token: str = ""):
    try:
      import jinja2
      from jinja2.sandbox import ImmutableSandboxedEnvironment
    except ImportError:
      raise ImportError("chat templates need the 'jinja2' package: pip install 'teenygrad[llm]'") from None
    self.source = source or CHATML_TEMPLATE
    self.bos_token, self.eos_token = bos_token, eos_token
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"])
    env.globals["raise_exception"] = _raise
    env.globals["strftime_now"] = lambda fmt: datetime.datetime.now().strftime(fmt)
    env.filters["tojson"] = _tojson
    try: self.template = env.from_string(self.source)
    except jinja2.TemplateError as e: raise ChatTemplateError(f"invalid chat template: {e}") from None

  def render(self, messages: list[dict], add_generation_prompt: bool = True, **extra) -> str:
    """The prompt text for a conversation: messages are {"role": ..., "content": ...} dicts."""
    import jinja2
    from jinja2.sandbox import SecurityError
    for m in messages:
      if not isinstance(m, dict) or "role" not in m or "content" not in m:
        raise ValueError(f"each message needs 'role' and 'content', got {m!r}")
    try:
      return self.template.render(messages=messages, add_generation_prompt=add_generation_prompt,
                                  bos_token=self.bos_token, eos_token=self.eos_token, **extra)
    except SecurityError as e: raise ChatTemplateError(f"chat template tried something unsafe: {e}") from None
    except (jinja2.TemplateError, TypeError, ValueError, KeyError, AttributeError) as e:
      if isinstance(e, ChatTemplateError): raise
      raise ChatTemplateError(f"chat template failed: {type(e).__name__}: {e}") from None


def _tojson(value, indent=None, **_) -> str:
  import json
  return json.dumps(value, indent=indent, ensure_ascii=False)
