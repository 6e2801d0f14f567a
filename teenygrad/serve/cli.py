"""`teenygrad serve`: the OpenAI-compatible server on uvicorn."""
from __future__ import annotations

import argparse
import os


def add_subparser(commands) -> argparse.ArgumentParser:
  serve = commands.add_parser("serve", help="an OpenAI-compatible HTTP server with continuous batching")
  serve.add_argument("--model", help="a .gguf file or a Hugging Face model folder (default: SmolLM2-135M-Instruct)")
  serve.add_argument("--model-name", help="the id clients ask for (default: the model file's name without extension)")
  serve.add_argument("--device", help="CPU, CUDA, ... (default: $DEV or CPU)")
  serve.add_argument("--dtype", choices=["f32", "f16", "bf16"], help="expand weights to this type (default: keep the file's)")
  serve.add_argument("--host", default="127.0.0.1")
  serve.add_argument("--port", type=int, default=8000)
  serve.add_argument("--api-key", help="require 'Authorization: Bearer KEY' on /v1 endpoints")
  serve.add_argument("--max-batch", type=int, default=32, help="most sequences decoding together")
  serve.add_argument("--max-queue", type=int, default=256, help="most sequences waiting; more are answered 503")
  serve.add_argument("--max-context", type=int, default=2048, help="longest sequence, prompt plus completion")
  serve.add_argument("--kv-blocks", type=int, help="blocks of 16 tokens in the paged KV cache (default: 512 tokens per batch slot)")
  serve.add_argument("--prefill-rows", type=int, help="prompts read together in one prefill step (default: 4 on a CPU, where "
                     "a padded row costs a real one's compute, 16 on an accelerator)")
  serve.add_argument("--no-warmup", action="store_true", help="capture the batch sizes on first use instead of at start")
  return serve


def build(args):
  """The engine, the app and the model's name for parsed args."""
  from teenygrad.llm.chat import ChatTemplate
  from teenygrad.llm.load import default_model_path, load_model
  from teenygrad.serve.app import create_app
  from teenygrad.serve.engine import Engine
  from teenygrad.serve.metrics import Metrics
  path = args.model or default_model_path()
  model, tokenizer = load_model(path, args.device, args.dtype)
  bos = tokenizer.id_to_token(tokenizer.bos_id) if tokenizer.bos_id is not None else ""
  eos = tokenizer.id_to_token(tokenizer.eos_id) if tokenizer.eos_id is not None else ""
  template = ChatTemplate(tokenizer.chat_template, bos or "", eos or "")
  metrics = Metrics()
  engine = Engine(model, tokenizer, max_batch=args.max_batch, max_queue=args.max_queue, max_len=args.max_context, num_blocks=args.kv_blocks,
                  prefill_rows=args.prefill_rows, metrics=metrics)
  if not args.no_warmup: engine.warmup()
  name = args.model_name or os.path.splitext(os.path.basename(os.path.normpath(path)))[0]
  return engine, create_app(engine, template, name, args.api_key, metrics), name


def main(args) -> int:
  try: import uvicorn
  except ImportError: raise ImportError("serving needs the 'serve' extra: pip install 'teenygrad[serve]'") from None
  _, app, name = build(args)
  print(f"serving {name} on http://{args.host}:{args.port}", flush=True)
  uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
  return 0
