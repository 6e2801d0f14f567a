"""GGUF files (llama.cpp's model format) read through the `gguf` package, memory-mapped.

`load_gguf(path)` returns the metadata as a plain dict and the tensors by name: F32/F16/BF16 become Tensors that
point straight into the memory map on the CPU (no copy), quantized types (Q4_0, Q4_1, Q8_0, K-quants...) become
`QuantizedTensor`s that keep the GGUF block bytes. Every structural fact the file states (magic, counts, string
lengths, tensor dims, types, offsets) is checked before it is trusted: a malformed file raises ValueError.
"""
from __future__ import annotations

import hashlib
import json
import os
from typing import Any

import numpy as np

from teenygrad.dtype import DType, dtypes

GGUF_MAGIC = b"GGUF"
MAX_DIMS = 4
MAX_DIM_SIZE = 1 << 40           # a dimension larger than this cannot be a real weight
FLOAT_TYPES = {"F32": dtypes.float32, "F16": dtypes.float16, "BF16": dtypes.bfloat16}


def _require_gguf():
  try:
    import gguf
  except ImportError:
    raise ImportError("reading GGUF files needs the 'gguf' package: pip install 'teenygrad[llm]'") from None
  return gguf


def _field_value(field) -> Any:
  """A ReaderField as plain Python: str, int, float, bool or a list of those."""
  value = field.contents()
  if isinstance(value, np.generic): value = value.item()
  return value


def _check_header(path: str) -> int:
  """Cheap checks before the gguf package parses anything: the file exists, is long enough and starts with GGUF."""
  if not os.path.isfile(path): raise FileNotFoundError(f"no GGUF file at {path!r}")
  size = os.path.getsize(path)
  with open(path, "rb") as f: head = f.read(24)
  if len(head) < 24: raise ValueError(f"{path}: not a GGUF file (only {size} bytes, the header alone is 24)")
  if head[:4] != GGUF_MAGIC: raise ValueError(f"{path}: not a GGUF file (magic is {head[:4]!r}, expected b'GGUF')")
  return size


# what a parsed header is cached as (bump when the cached layout changes)
HEADER_CACHE_VERSION = 1


class GGUFFile:
  """A parsed GGUF file: `metadata` (dict), `tensor_infos` (name -> (ggml type name, shape, byte offset, nbytes)).

  Shapes are given in numpy/torch order (rows first), the reverse of how GGUF lists them.

  The gguf package parses a header field by field: SmolLM2's 49152 tokens and 48900 merges take it ~5 s on a 2-core
  VM, every time a model loads. So a header once parsed and checked is kept as JSON in the cache directory, keyed by
  the file's path, size and modification time (and the gguf package's version); a later load reads that and maps the
  file itself. A cache entry that doesn't parse or doesn't fit the file is ignored (parsed again and rewritten).
  """
  def __init__(self, path: str | os.PathLike):
    self.path = os.fspath(path)
    self.file_size = _check_header(self.path)
    cached = _read_header_cache(self.path, self.file_size)
    if cached is not None:
      self.metadata, self.tensor_infos = cached
      self.data = np.memmap(self.path, dtype=np.uint8, mode="r")
      return
    gguf = _require_gguf()
    try:
      self.reader = gguf.GGUFReader(self.path, "r")
    except (ValueError, KeyError, IndexError, OverflowError, TypeError, UnicodeDecodeError, MemoryError) as e:
      raise ValueError(f"{self.path}: malformed GGUF file ({type(e).__name__}: {e})") from None
    self.data = self.reader.data
    self.metadata: dict[str, Any] = {}
    for name, field in self.reader.fields.items():
      if name.startswith("GGUF."): continue
      try: self.metadata[name] = _field_value(field)
      except Exception as e: raise ValueError(f"{self.path}: malformed metadata value {name!r} ({e})") from None
    self.tensor_infos: dict[str, tuple[str, tuple[int, ...], int, int]] = {}
    for t in self.reader.tensors: self.tensor_infos[t.name] = self._check_tensor(t, gguf)
    _write_header_cache(self.path, self.metadata, self.tensor_infos)

  def _check_tensor(self, t, gguf) -> tuple[str, tuple[int, ...], int, int]:
    dims = [int(d) for d in t.shape]
    if not 1 <= len(dims) <= MAX_DIMS: raise ValueError(f"{self.path}: tensor {t.name!r} has {len(dims)} dims (1..{MAX_DIMS} allowed)")
    if any(d <= 0 or d > MAX_DIM_SIZE for d in dims): raise ValueError(f"{self.path}: tensor {t.name!r} has absurd dims {dims}")
    type_name = t.tensor_type.name
    block, type_size = gguf.GGML_QUANT_SIZES[t.tensor_type]
    if dims[0] % block: raise ValueError(f"{self.path}: tensor {t.name!r} ({type_name}) row of {dims[0]} is not a multiple of its block {block}")
    numel = 1
    for d in dims: numel *= d
    nbytes = numel // block * type_size
    start = int(t.data_offset)
    if start < self.reader.data_offset or start + nbytes > self.file_size:
      raise ValueError(f"{self.path}: tensor {t.name!r} claims bytes [{start}, {start + nbytes}) but the file has {self.file_size}")
    if t.data.nbytes != nbytes: raise ValueError(f"{self.path}: tensor {t.name!r} is truncated ({t.data.nbytes} of {nbytes} bytes)")
    return type_name, tuple(reversed(dims)), start, nbytes

  def raw(self, name: str) -> np.ndarray:
    """The tensor's bytes as a read-only uint8 view of the memory map."""
    _, _, start, nbytes = self.tensor_infos[name]
    return self.data[start:start + nbytes]


def _header_cache_path(path: str):
  """Where the parsed header of the file at `path`, as it is now (size, modification time), is cached."""
  from teenygrad.helpers import config
  try: import gguf; version = getattr(gguf, "__version__", "")
  except ImportError: version = ""
  st = os.stat(path)
  key = f"{HEADER_CACHE_VERSION}\0{os.path.realpath(path)}\0{st.st_size}\0{st.st_mtime_ns}\0{version}"
  return config.cache_dir / "gguf" / f"{hashlib.sha256(key.encode()).hexdigest()[:32]}.json"


def _read_header_cache(path: str, file_size: int) -> tuple[dict, dict] | None:
  """(metadata, tensor_infos) from the cache, or None where there is no usable entry."""
  try:
    with open(_header_cache_path(path), encoding="utf-8") as f: entry = json.load(f)
    metadata, infos = entry["metadata"], {}
    if not isinstance(metadata, dict): return None
    for name, (type_name, shape, start, nbytes) in entry["tensors"].items():
      shape = tuple(int(d) for d in shape)
      if not (isinstance(type_name, str) and 0 <= start and 0 < nbytes and start + nbytes <= file_size): return None
      infos[name] = (type_name, shape, int(start), int(nbytes))
    return metadata, infos
  except (OSError, ValueError, KeyError, TypeError):
    return None


def _write_header_cache(path: str, metadata: dict, tensor_infos: dict) -> None:
  """Cache a parsed header (best effort: a read-only cache directory only costs the next load its parse)."""
  from teenygrad.state.atomic import atomic_write
  try:
    cache = _header_cache_path(path)
    cache.parent.mkdir(parents=True, exist_ok=True)
    entry = {"metadata": metadata, "tensors": {name: list(info) for name, info in tensor_infos.items()}}
    with atomic_write(cache) as f: f.write(json.dumps(entry).encode())
  except (OSError, TypeError, ValueError):
    pass


def tensor_from_memmap(raw: np.ndarray, shape: tuple[int, ...], dtype: DType, device: str | None = None):
  """A Tensor over `raw` bytes: zero-copy on the CPU (the kernels only read weights), a copy elsewhere."""
  from teenygrad.device import Buffer, canonicalize
  from teenygrad.ir.lazy import LazyBuffer
  from teenygrad.tensor import Tensor
  device = canonicalize(device)
  numel = int(np.prod(shape))
  raw = raw.view(np.uint8).reshape(-1)
  if device == "CPU" and raw.ctypes.data % 16 == 0:
    buffer = Buffer(device, numel, dtype, raw=raw)
  else:
    buffer = Buffer(device, numel, dtype).copyin(np.array(raw))
  return Tensor(LazyBuffer.from_realized(buffer, tuple(shape), dtype, device))


def load_tensor(f: GGUFFile, name: str, device: str | None = None, dequantize: bool = False):
  """One tensor of a parsed file: a Tensor for float types, a QuantizedTensor for quantized ones (or float32 with
  dequantize=True, through gguf's reference dequantizer)."""
  type_name, shape, _, _ = f.tensor_infos[name]
  raw = f.raw(name)
  if type_name in FLOAT_TYPES: return tensor_from_memmap(raw, shape, FLOAT_TYPES[type_name], device)
  if dequantize or not _have_quant(): return _dequantize_reference(raw, type_name, shape, device)
  from teenygrad.nn.quant import QuantizedTensor
  if len(shape) != 2: raise ValueError(f"{f.path}: quantized tensor {name!r} has shape {shape}; only 2-D quantized weights are supported")
  return QuantizedTensor.from_gguf_bytes(type_name, raw, shape, device=device)


def load_gguf(path: str | os.PathLike, device: str | None = None, dequantize: bool = False) -> tuple[dict, dict]:
  """Metadata (plain dict) and tensors by name of a GGUF file.

  Args:
    dequantize: expand quantized tensors to float32 Tensors at load time (gguf's reference dequantizer) instead of
      keeping them as QuantizedTensor.
  """
  f = GGUFFile(path)
  return f.metadata, {name: load_tensor(f, name, device, dequantize) for name in f.tensor_infos}


def _have_quant() -> bool:
  try: import teenygrad.nn.quant  # noqa: F401
  except ImportError: return False
  return True


def _dequantize_reference(raw: np.ndarray, type_name: str, shape: tuple[int, ...], device: str | None):
  gguf = _require_gguf()
  from teenygrad.tensor import Tensor
  try: qtype = gguf.GGMLQuantizationType[type_name]
  except KeyError: raise ValueError(f"unknown GGUF tensor type {type_name}") from None
  byte_shape = gguf.quants.quant_shape_to_byte_shape(shape, qtype)
  values = gguf.quants.dequantize(np.asarray(raw).reshape(byte_shape), qtype)
  return Tensor(np.ascontiguousarray(values, dtype=np.float32).reshape(shape), device=device)
