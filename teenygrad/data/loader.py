"""DataLoader: batches, seeded shuffling, drop_last, collation and a background thread that prepares batches ahead."""
from __future__ import annotations

import collections.abc
import queue
import threading
from typing import Any
from collections.abc import Callable, Iterator, Sequence

import numpy as np

from teenygrad.dtype import dtypes
from teenygrad.tensor import Tensor


def _generator(generator: int | np.random.Generator | None) -> np.random.Generator:
  """A numpy Generator: the one given, one seeded by an int, or one seeded from teenygrad's RNG (manual_seed)."""
  if isinstance(generator, np.random.Generator): return generator
  if generator is not None: return np.random.default_rng(int(generator))
  from teenygrad.tensor.random import host_rng
  return np.random.default_rng(int(host_rng().integers(0, 2**63 - 1)))


def default_collate(batch: Sequence[Any]) -> Any:
  """torch's default_collate: arrays, Tensors and numbers stack into one Tensor with a new leading batch dim;
  tuples/lists are collated position by position (a list, as torch returns), dicts key by key, strings stay a list.

  Stacking happens on the host (numpy), so collating never launches a kernel from the prefetch thread."""
  if len(batch) == 0: raise ValueError("can't collate an empty batch")
  elem = batch[0]
  if isinstance(elem, Tensor):
    if elem.dtype == dtypes.bfloat16: return Tensor(np.stack([t.float().numpy() for t in batch])).bfloat16()
    return Tensor(np.stack([t.numpy() for t in batch]))
  if isinstance(elem, np.ndarray):
    if elem.dtype == object: raise TypeError("default_collate: numpy arrays of objects can't be collated")
    return Tensor(np.stack(batch))
  if isinstance(elem, (bool, np.bool_)): return Tensor(np.array(batch, dtype=np.bool_))
  if isinstance(elem, (int, np.integer)): return Tensor(np.array(batch, dtype=np.int64))
  if isinstance(elem, float): return Tensor(np.array(batch, dtype=np.float64))   # torch makes python floats float64
  if isinstance(elem, np.floating): return Tensor(np.array(batch, dtype=elem.dtype))
  if isinstance(elem, (str, bytes)): return list(batch)
  if isinstance(elem, collections.abc.Mapping): return {key: default_collate([d[key] for d in batch]) for key in elem}
  if isinstance(elem, tuple) and hasattr(elem, "_fields"): return type(elem)(*(default_collate(list(s)) for s in zip(*batch)))
  if isinstance(elem, collections.abc.Sequence):
    if any(len(s) != len(elem) for s in batch): raise RuntimeError("each element in list of batch should be of equal size")
    return [default_collate(list(samples)) for samples in zip(*batch)]
  raise TypeError(f"default_collate: batch must contain Tensors, numpy arrays, numbers, dicts or lists; found {type(elem).__name__}")


class DataLoader:
  """Iterate a dataset in batches (torch.utils.data.DataLoader's names).

  Args:
    dataset: a map-style dataset (`__len__`, `__getitem__`, optionally `__getitems__` for whole batches).
    batch_size: samples per batch.
    shuffle: a new random order every epoch, drawn from `generator`.
    drop_last: drop the last batch when it is smaller than batch_size.
    collate_fn: list of samples -> batch (default_collate).
    prefetch: how many batches a background thread prepares ahead (0: none, batches are built on the caller's thread).
      An exception in that thread is raised in the caller, at the batch where it happened.
    generator: an int seed or numpy Generator for shuffling; default: seeded from teenygrad.manual_seed's RNG,
      one draw per epoch, so a seeded run shuffles the same way every time.
    num_workers: accepted for torch compatibility; any value > 0 means prefetching in one background thread.
  """
  def __init__(self, dataset, batch_size: int = 1, shuffle: bool = False, drop_last: bool = False,
               collate_fn: Callable[[list], Any] | None = None, prefetch: int = 2,
               generator: int | np.random.Generator | None = None, num_workers: int = 0):
    if not isinstance(batch_size, int) or batch_size <= 0:
      raise ValueError(f"batch_size should be a positive integer value, but got batch_size={batch_size}")
    if not isinstance(prefetch, int) or prefetch < 0: raise ValueError(f"prefetch must be a non-negative int, got {prefetch!r}")
    self.dataset, self.batch_size, self.shuffle, self.drop_last = dataset, batch_size, shuffle, drop_last
    self.collate_fn = collate_fn or default_collate
    self.prefetch = prefetch if prefetch or num_workers <= 0 else 2
    self.generator = generator if isinstance(generator, np.random.Generator) or generator is None else np.random.default_rng(int(generator))

  def __len__(self) -> int:
    n = len(self.dataset)
    return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

  def batch_indices(self) -> list[np.ndarray]:
    """This epoch's index batches (draws from the shuffle generator)."""
    n = len(self.dataset)
    order = _generator(self.generator).permutation(n) if self.shuffle else np.arange(n)
    batches = [order[i:i + self.batch_size] for i in range(0, n, self.batch_size)]
    if self.drop_last and batches and len(batches[-1]) < self.batch_size: batches.pop()
    return batches

  def _fetch(self, indices: np.ndarray) -> Any:
    if hasattr(self.dataset, "__getitems__"): samples = self.dataset.__getitems__(indices.tolist())
    else: samples = [self.dataset[int(i)] for i in indices]
    return self.collate_fn(samples)

  def __iter__(self) -> Iterator[Any]:
    batches = (self._fetch(indices) for indices in self.batch_indices())
    return _PrefetchIterator(batches, self.prefetch) if self.prefetch else batches


class _PrefetchIterator:
  """Runs a batch generator in a daemon thread, `depth` batches ahead. close() (or dropping the iterator) stops it."""
  def __init__(self, batches: Iterator[Any], depth: int):
    self._queue: queue.Queue = queue.Queue(maxsize=depth)
    self._stop = threading.Event()
    self._done = False
    # the thread holds only the queue and the event, not this iterator, so dropping the iterator closes it
    self._thread = threading.Thread(target=_prefetch_worker, args=(batches, self._queue, self._stop), name="teenygrad-prefetch", daemon=True)
    self._thread.start()

  def __iter__(self) -> _PrefetchIterator: return self

  def __next__(self) -> Any:
    if self._done: raise StopIteration
    while True:
      try:
        kind, value = self._queue.get(timeout=0.1)
        break
      except queue.Empty:
        if not self._thread.is_alive() and self._queue.empty():
          self._done = True
          raise RuntimeError("the DataLoader's prefetch thread stopped without a result") from None
    if kind == "batch": return value
    self.close()
    if kind == "error": raise value
    raise StopIteration

  def close(self) -> None:
    """Stop the worker and wait for it (it finishes at most the batch it is building)."""
    self._done = True
    self._stop.set()
    while True:
      try: self._queue.get_nowait()
      except queue.Empty: break
    if self._thread is not threading.current_thread(): self._thread.join(timeout=10)

  def __del__(self) -> None:
    try: self.close()
    except Exception: pass


def _prefetch_worker(batches: Iterator[Any], out: queue.Queue, stop: threading.Event) -> None:
  def put(item) -> bool:
    while not stop.is_set():
      try:
        out.put(item, timeout=0.05)
        return True
      except queue.Full: continue
    return False
  try:
    for batch in batches:
      if not put(("batch", batch)): return
    put(("end", None))
  except BaseException as e:   # handed to the caller, raised there
    put(("error", e))
