"""Datasets, torch.utils.data style: anything with `__len__` and `__getitem__` is a map-style dataset."""
from __future__ import annotations

from typing import Any
from collections.abc import Sequence

import numpy as np

from teenygrad.tensor import Tensor


class Dataset:
  """A map-style dataset: `dataset[i]` is one sample, `len(dataset)` how many there are.

  Subclasses may also define `__getitems__(indices) -> list of samples` to fetch a whole batch at once (torch's
  hook); the DataLoader uses it when present."""
  def __getitem__(self, index: int) -> Any: raise NotImplementedError
  def __len__(self) -> int: raise NotImplementedError
  def __add__(self, other: Dataset) -> ConcatDataset: return ConcatDataset([self, other])


class TensorDataset(Dataset):
  """Samples are the i-th rows of equally long tensors or arrays: `TensorDataset(images, labels)[i] == (images[i], labels[i])`.

  Rows are read on the host (a Tensor is brought there once), so batching is a numpy gather, not a kernel per sample."""
  def __init__(self, *tensors: Tensor | np.ndarray):
    if not tensors: raise ValueError("TensorDataset needs at least one tensor")
    lengths = {int(t.shape[0]) if t.ndim else -1 for t in tensors}
    if len(lengths) != 1 or -1 in lengths:
      raise ValueError(f"Size mismatch between tensors: first dimensions {[tuple(t.shape)[:1] for t in tensors]}")
    self.tensors = tensors
    self._host = [t.numpy() if isinstance(t, Tensor) else np.asarray(t) for t in tensors]

  def __getitem__(self, index: int) -> tuple:
    return tuple(a[index] for a in self._host)

  def __getitems__(self, indices: Sequence[int]) -> list[tuple]:
    columns = [a[np.asarray(indices, dtype=np.int64)] for a in self._host]
    return [tuple(c[i] for c in columns) for i in range(len(indices))]

  def __len__(self) -> int: return len(self._host[0])


class ConcatDataset(Dataset):
  def __init__(self, datasets: Sequence[Dataset]):
    self.datasets = list(datasets)
    if not self.datasets: raise ValueError("ConcatDataset needs at least one dataset")
    self.ends = np.cumsum([len(d) for d in self.datasets])

  def __len__(self) -> int: return int(self.ends[-1])

  def __getitem__(self, index: int) -> Any:
    if index < 0: index += len(self)
    if not 0 <= index < len(self): raise IndexError(f"index {index} out of range for a dataset of {len(self)}")
    which = int(np.searchsorted(self.ends, index, side="right"))
    start = 0 if which == 0 else int(self.ends[which - 1])
    return self.datasets[which][index - start]


class Subset(Dataset):
  def __init__(self, dataset: Dataset, indices: Sequence[int]):
    self.dataset, self.indices = dataset, list(indices)

  def __getitem__(self, index: int) -> Any: return self.dataset[self.indices[index]]
  def __len__(self) -> int: return len(self.indices)

  def __getitems__(self, indices: Sequence[int]) -> list:
    picked = [self.indices[i] for i in indices]
    if hasattr(self.dataset, "__getitems__"): return self.dataset.__getitems__(picked)
    return [self.dataset[i] for i in picked]


def random_split(dataset: Dataset, lengths: Sequence[int], generator: np.random.Generator | None = None) -> list[Subset]:
  """Split into non-overlapping subsets of the given lengths (a shuffled partition, seeded like DataLoader)."""
  if sum(lengths) != len(dataset): raise ValueError(f"sum of lengths {sum(lengths)} does not equal the dataset's length {len(dataset)}")
  from teenygrad.data.loader import _generator
  order = _generator(generator).permutation(len(dataset))
  out, start = [], 0
  for n in lengths:
    out.append(Subset(dataset, order[start:start + n].tolist())); start += n
  return out
