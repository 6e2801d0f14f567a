"""The one typed configuration object (environment variables are read here and nowhere else) and small utilities."""
from __future__ import annotations

import functools
import math
import operator
import os
from dataclasses import dataclass, field
from pathlib import Path


def _env_int(name: str, default: int) -> int:
  try: return int(os.environ.get(name, default))
  except ValueError: raise ValueError(f"environment variable {name} must be an integer, got {os.environ[name]!r}") from None


@dataclass
class Config:
  """Process-wide settings. Environment variables only choose the device, the debug level and paths."""
  device: str = field(default_factory=lambda: os.environ.get("DEV", "CPU").upper())
  debug: int = field(default_factory=lambda: _env_int("DEBUG", 0))
  threads: int = field(default_factory=lambda: _env_int("TEENYGRAD_THREADS", os.cpu_count() or 1))
  check_bounds: bool = field(default_factory=lambda: bool(_env_int("TEENYGRAD_CHECK", 0)))
  # run spirv-val on every SPIR-V module the Vulkan backend compiles (tests and CI)
  spirv_validate: bool = field(default_factory=lambda: bool(_env_int("TEENYGRAD_SPIRV_VAL", 0)))
  cache_dir: Path = field(default_factory=lambda: Path(os.environ.get(
    "TEENYGRAD_CACHE", Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "teenygrad")))
  # decode's fused kernels (llm/fused_linear.py, llm/custom_ops.py), to bisect a GPU failure: "all", "none" (the path
  # before them), or the parts to keep, comma-separated: linear (fused_linear at all; norm, swiglu and float need it),
  # norm, swiglu, float (the float16/bfloat16 matvec), repack (Q4_0/Q4_1/Q8_0 in CUDA's layout), rope (RoPE + KV-cache write), glu
  # (silu(gate) * up in the gate/up projection's epilogue)
  decode_fusion: str = field(default_factory=lambda: os.environ.get("TEENYGRAD_DECODE_FUSION", "all"))
  # CUDA graphs on sm_90 chain their kernels by programmatic dependent launch (device/cuda.py's CUDAGraph); 0: plain
  # edges. End-to-end decode on an H200 (scripts/gpu_pdl_ab.sh, bench/results/llm_gpu_h200.txt): Llama-3-8B Q4_0
  # 424 -> 495 tok/s, SmolLM2 Q4_1 1173 -> 1163 (1247 with the prefetch below)
  grid_dependency: bool = field(default_factory=lambda: bool(_env_int("TEENYGRAD_PDL", 1)))
  # a CUDA matvec whose weight has at most this many bytes asks all of it into L2 before its grid-dependency wait
  # (nn/matvec_cuda.py): SmolLM2's (<= 1.1 MB) yes, an 8B model's (>= 9.4 MB, where prefetching 8 MB of each cost
  # 495 -> 463 tok/s) no; 0: never
  matvec_prefetch: int = field(default_factory=lambda: _env_int("TEENYGRAD_MATVEC_PREFETCH", 2 << 20))
  # CUDA's int8-x matvec, where its weight is not prefetched whole, issues its first weight loads before that wait
  # (nn/matvec_cuda.early_loads): they overlap the end of the kernel before it; 0: after the wait
  matvec_early_loads: bool = field(default_factory=lambda: bool(_env_int("TEENYGRAD_MATVEC_EARLY_LOADS", 1)))
  # the CPU's quantized kernels (nn/quant_kernels.py ISAS): "native" the best the compiler targets, "avx2" the AVX2
  # code even where AVX-512 is there (or the scalar code where neither is). The AVX2 kernels round x to int8 or int16
  # as llama.cpp does and sum integers, so a row's result has the same bits at any row count; the AVX-512 ones keep
  # float x (transformers' greedy tokens exactly) and round differently by row count (~1e-6). On a 2-core Zen 4 VM
  # (bench/results/llm_cpu.txt) avx2 ran 994 / 181 tok/s prefill / decode against native's 763 / 144 (llama.cpp 306-344
  # / 126-134), but there its greedy tokens leave llama.cpp's recorded ones at a 0.77 logit gap (test_llm_golden's
  # bound is 0.5): native stays the default until that is settled
  quant_isa: str = field(default_factory=lambda: os.environ.get("TEENYGRAD_QUANT_ISA", "native"))
  # below this many output elements times work per element, a CPU kernel stays single-threaded
  parallel_threshold: int = 1 << 15


config = Config()


def prod(xs) -> int:
  return functools.reduce(operator.mul, xs, 1)


def argsort(xs) -> list[int]:
  return sorted(range(len(xs)), key=xs.__getitem__)


def normalize_dim(dim: int, ndim: int) -> int:
  """torch's dim wrapping, with torch's IndexError for a dim out of range."""
  low, high = (-1, 0) if ndim == 0 else (-ndim, ndim - 1)
  if not isinstance(dim, int): raise TypeError(f"dim must be an int, got {type(dim).__name__}")
  if not low <= dim <= high:
    raise IndexError(f"Dimension out of range (expected to be in range of [{low}, {high}], but got {dim})")
  return dim % max(ndim, 1)


def ceildiv(a: int, b: int) -> int:
  return -(-a // b)


def round_up(x: int, multiple: int) -> int:
  return ceildiv(x, multiple) * multiple


def all_int(xs) -> bool:
  return all(isinstance(x, int) for x in xs)


def flatten(xss) -> list:
  return [x for xs in xss for x in xs]


def is_finite_number(x) -> bool:
  return isinstance(x, (int, float)) and math.isfinite(x)


def canonicalize(device: str | None) -> str:
  """'cpu' -> 'CPU', 'cuda:0' -> 'CUDA', 'cuda:1' -> 'CUDA:1'."""
  if device is None: return config.device
  if not isinstance(device, str): device = str(device)
  name, _, index = device.partition(":")
  name = name.upper()
  if name == "GPU": name = "CUDA"
  return name if index in ("", "0") else f"{name}:{index}"
