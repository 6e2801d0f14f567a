"""safetensors files, read and written here: memory-mapped, lazy, validated, byte-compatible with torch's.

The format (https://huggingface.co/docs/safetensors): an 8-byte little-endian header length N, N bytes of a
JSON object, then the raw data. Each JSON entry is `name: {"dtype": "F32", "shape": [..], "data_offsets": [b, e]}`
with offsets relative to the start of the data; the optional `__metadata__` entry maps strings to strings.
Tensors are row-major and little-endian, so a file written by torch loads here and the other way round.

Reading checks everything before touching the data: the header length against the file size, the JSON, every
dtype, shape and offset pair, that the byte ranges tile the data exactly (no gap, no overlap, nothing past the end).
A malformed file raises `ValueError` naming the problem; nothing is allocated from a size the file claims.

Loading is lazy: the data section is mapped copy-on-write (`np.memmap(mode="c")`), and each tensor's buffer is
that mapping itself when it is aligned for the CPU (no copy at all, pages are read on first touch), otherwise
copied into device memory the first time a kernel needs it. Writing to a loaded tensor never changes the file.
"""
from __future__ import annotations

import json
import math
import os
import struct
from pathlib import Path
from typing import Any
from collections.abc import Mapping

import numpy as np

from teenygrad.device import Buffer, Device, canonicalize
from teenygrad.dtype import DType, dtypes
from teenygrad.ir.lazy import LazyBuffer
from teenygrad.state.atomic import atomic_write
from teenygrad.tensor import Tensor

# safetensors dtype names <-> teenygrad dtypes (bf16 is kept as its raw 16 bits, as teenygrad stores it)
SAFETENSORS_DTYPES: dict[str, DType] = {
  "BOOL": dtypes.bool, "U8": dtypes.uint8, "I8": dtypes.int8, "I16": dtypes.int16, "U16": dtypes.uint16,
  "I32": dtypes.int32, "U32": dtypes.uint32, "I64": dtypes.int64, "F16": dtypes.float16, "BF16": dtypes.bfloat16,
  "F32": dtypes.float32, "F64": dtypes.float64,
}
DTYPE_NAMES = {dt: name for name, dt in SAFETENSORS_DTYPES.items()}

MAX_HEADER_BYTES = 100 * 1024 * 1024   # the reference implementation's limit: a larger header is not a real file
DATA_ALIGNMENT = 64                    # we pad the header so the data starts on a cache line


class _MappedBuffer(Buffer):
  """A device buffer whose contents come from a slice of a mapped file, read when a kernel first needs them."""
  def __init__(self, device: str, size: int, dtype: DType, source: np.ndarray):
    super().__init__(device, size, dtype)
    self.source = source   # uint8 view into the copy-on-write mapping

  @property
  def raw(self):
    if self._raw is None:
      if self.device == "CPU" and self.source.ctypes.data % DATA_ALIGNMENT == 0: self._raw = self.source
      else:
        self._raw = Device[self.device].allocator.alloc(self.nbytes)
        Device[self.device].allocator.copyin(self._raw, memoryview(np.ascontiguousarray(self.source)))
    return self._raw


# ---- reading ----

def read_header(path: str | os.PathLike) -> tuple[dict[str, dict], dict[str, str], int]:
  """(tensor entries, metadata, byte offset of the data section), after validating the whole layout."""
  path = Path(path)
  file_size = path.stat().st_size
  with open(path, "rb") as f:
    if file_size < 8: raise ValueError(f"{path}: not a safetensors file ({file_size} bytes, shorter than the 8-byte header length)")
    (header_len,) = struct.unpack("<Q", f.read(8))
    if header_len > file_size - 8:
      raise ValueError(f"{path}: header length {header_len} runs past the end of the {file_size}-byte file (truncated or not safetensors)")
    if header_len > MAX_HEADER_BYTES: raise ValueError(f"{path}: header length {header_len} is over the {MAX_HEADER_BYTES}-byte limit")
    raw_header = f.read(header_len)
  entries, metadata = parse_header(raw_header, file_size - 8 - header_len, str(path))
  return entries, metadata, 8 + header_len


def parse_header(raw_header: bytes, data_len: int, where: str = "safetensors") -> tuple[dict[str, dict], dict[str, str]]:
  """Validate a JSON header against a data section of data_len bytes."""
  def no_duplicates(pairs):
    keys = [k for k, _ in pairs]
    if len(set(keys)) != len(keys): raise ValueError(f"{where}: duplicate key in header: {sorted({k for k in keys if keys.count(k) > 1})}")
    return dict(pairs)
  try: header = json.loads(raw_header.decode("utf-8"), object_pairs_hook=no_duplicates)
  except (UnicodeDecodeError, json.JSONDecodeError) as e: raise ValueError(f"{where}: header is not valid UTF-8 JSON: {e}") from None
  if not isinstance(header, dict): raise ValueError(f"{where}: header must be a JSON object, got {type(header).__name__}")
  metadata = header.pop("__metadata__", None) or {}
  if not isinstance(metadata, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
    raise ValueError(f"{where}: __metadata__ must map strings to strings")
  spans = []
  for name, entry in header.items():
    if not isinstance(entry, dict) or set(entry) != {"dtype", "shape", "data_offsets"}:
      raise ValueError(f"{where}: entry {name!r} must have exactly dtype, shape and data_offsets, got {entry!r:.200}")
    dtype_name, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
    if dtype_name not in SAFETENSORS_DTYPES:
      raise ValueError(f"{where}: tensor {name!r} has unknown or unsupported dtype {dtype_name!r} (known: {sorted(SAFETENSORS_DTYPES)})")
    if not isinstance(shape, list) or not all(type(s) is int and s >= 0 for s in shape):
      raise ValueError(f"{where}: tensor {name!r} has an invalid shape {shape!r:.200} (need a list of non-negative ints)")
    if (not isinstance(offsets, list) or len(offsets) != 2 or not all(type(o) is int for o in offsets)
        or not 0 <= offsets[0] <= offsets[1]):
      raise ValueError(f"{where}: tensor {name!r} has invalid data_offsets {offsets!r:.200}")
    nbytes = math.prod(shape) * SAFETENSORS_DTYPES[dtype_name].itemsize   # python ints: an absurd shape cannot overflow
    if offsets[1] - offsets[0] != nbytes:
      raise ValueError(f"{where}: tensor {name!r} of shape {shape} and dtype {dtype_name} needs {nbytes} bytes, "
                       f"but its data_offsets {offsets} span {offsets[1] - offsets[0]}")
    if offsets[1] > data_len:
      raise ValueError(f"{where}: tensor {name!r} ends at byte {offsets[1]}, past the {data_len}-byte data section (truncated file?)")
    spans.append((offsets[0], offsets[1], name))
  position = 0
  for begin, end, name in sorted(spans):
    if begin != position:
      what = "overlaps the previous tensor" if begin < position else f"leaves a gap of {begin - position} bytes"
      raise ValueError(f"{where}: tensor {name!r} at data_offsets [{begin}, {end}] {what}")
    position = end
  if position != data_len: raise ValueError(f"{where}: {data_len - position} bytes after the last tensor are not described by the header")
  return header, metadata


def load_file(path: str | os.PathLike, device: str | None = None) -> dict[str, Tensor]:
  """name -> Tensor, lazily backed by the file (see the module docstring). Tensors are in file order."""
  entries, _, data_start = read_header(path)
  device = canonicalize(device)
  data_len = Path(path).stat().st_size - data_start
  mapped = np.memmap(path, dtype=np.uint8, mode="c", offset=data_start, shape=(data_len,)) if data_len else np.zeros(0, np.uint8)
  out = {}
  for name, entry in sorted(entries.items(), key=lambda kv: kv[1]["data_offsets"][0]):
    dtype, shape = SAFETENSORS_DTYPES[entry["dtype"]], tuple(entry["shape"])
    begin, end = entry["data_offsets"]
    numel = math.prod(shape)
    if numel == 0: out[name] = Tensor.zeros(*shape, dtype=dtype, device=device); continue
    buffer = _MappedBuffer(device, numel, dtype, mapped[begin:end])
    out[name] = Tensor(LazyBuffer.from_realized(buffer, shape, dtype, device))
  return out


def load_metadata(path: str | os.PathLike) -> dict[str, str]:
  return read_header(path)[1]


# ---- writing ----

def _host_bytes(value: Any, name: str) -> tuple[DType, tuple[int, ...], np.ndarray]:
  """(dtype, shape, contiguous little-endian host array) for a Tensor or numpy array."""
  if isinstance(value, Tensor):
    if any(not isinstance(s, int) for s in value.shape): raise ValueError(f"tensor {name!r} has a symbolic shape {value.shape}; bind it first")
    t = value.detach()
    if t.numel() == 0: return t.dtype, tuple(t.shape), np.zeros(0, np.uint8)
    t.realize()
    return t.dtype, tuple(t.shape), t.lazydata.base.realized.numpy()
  if isinstance(value, np.ndarray):
    dtype = dtypes.from_numpy(value.dtype)
    return dtype, tuple(value.shape), np.ascontiguousarray(value, dtype=value.dtype.newbyteorder("<"))
  raise TypeError(f"can't save {name!r}: expected a Tensor or numpy array, got {type(value).__name__}")


def save_file(tensors: Mapping[str, Any], path: str | os.PathLike, metadata: Mapping[str, str] | None = None) -> None:
  """Write tensors (name -> Tensor or numpy array) atomically: the file at path is the old one or the whole new one."""
  with atomic_write(path) as f: write(tensors, f, metadata)


def write(tensors: Mapping[str, Any], f, metadata: Mapping[str, str] | None = None) -> None:
  """Write a safetensors stream to the binary file object f."""
  if metadata is not None and not all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
    raise TypeError("safetensors metadata must map strings to strings")
  for name in tensors:
    if not isinstance(name, str): raise TypeError(f"tensor names must be strings, got {name!r}")
    if name == "__metadata__": raise ValueError("'__metadata__' is reserved and can't name a tensor")
  # like the reference writer: widest dtype first (keeps every tensor aligned to its itemsize), then by name
  order = sorted(tensors, key=lambda n: (-_itemsize(tensors[n]), n))
  header: dict[str, Any] = {"__metadata__": dict(metadata)} if metadata else {}
  position, shapes = 0, {}
  for name in order:
    dtype, shape = _describe(tensors[name], name)
    nbytes = math.prod(shape) * dtype.itemsize
    header[name] = {"dtype": DTYPE_NAMES[dtype], "shape": list(shape), "data_offsets": [position, position + nbytes]}
    shapes[name] = (dtype, shape)
    position += nbytes
  encoded = json.dumps(header, separators=(",", ":")).encode()
  encoded += b" " * (-(8 + len(encoded)) % DATA_ALIGNMENT)   # trailing spaces are valid JSON and align the data
  f.write(struct.pack("<Q", len(encoded)))
  f.write(encoded)
  for name in order:
    dtype, shape, host = _host_bytes(tensors[name], name)
    if (dtype, shape) != shapes[name]: raise RuntimeError(f"tensor {name!r} changed while it was being saved")
    f.write(memoryview(host.reshape(-1).view(np.uint8)))


def _describe(value: Any, name: str) -> tuple[DType, tuple[int, ...]]:
  if isinstance(value, Tensor): return value.dtype, tuple(value.shape)
  if isinstance(value, np.ndarray): return dtypes.from_numpy(value.dtype), tuple(value.shape)
  raise TypeError(f"can't save {name!r}: expected a Tensor or numpy array, got {type(value).__name__}")


def _itemsize(value: Any) -> int:
  return value.dtype.itemsize if isinstance(value, (Tensor, np.ndarray)) else 0
