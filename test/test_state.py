"""safetensors and checkpoints: torch (through the `safetensors` package) is the oracle for the file format."""
import json
import os
import struct

import numpy as np
import pytest

import teenygrad as tg
from teenygrad.state import get_state_dict, load_checkpoint, load_file, load_state_dict, save_checkpoint, save_file
from teenygrad.state import safetensors as st

torch = pytest.importorskip("torch")
safetensors_torch = pytest.importorskip("safetensors.torch")

TORCH_DTYPES = {tg.float32: torch.float32, tg.float64: torch.float64, tg.float16: torch.float16, tg.bfloat16: torch.bfloat16,
                tg.int64: torch.int64, tg.int32: torch.int32, tg.int16: torch.int16, tg.int8: torch.int8,
                tg.uint8: torch.uint8, tg.bool: torch.bool}


def _values(dtype, shape, rng):
  if dtype.is_bool: return rng.random(shape) > 0.5
  if dtype.is_int: return rng.integers(-100 if dtype.signed else 0, 100, shape)
  return rng.standard_normal(shape)


def _as_float(t: tg.Tensor) -> np.ndarray:
  return (t.float() if t.dtype == tg.bfloat16 else t).numpy()


# ---- round trips ----

@pytest.mark.parametrize("dtype", list(TORCH_DTYPES), ids=lambda d: d.name)
def test_teenygrad_file_loads_in_torch_and_back(tmp_path, dtype):
  rng = np.random.default_rng(1)
  values = {"a.weight": _values(dtype, (3, 5), rng), "b": _values(dtype, (7,), rng), "scalar": _values(dtype, (), rng),
            "empty": _values(dtype, (0, 4), rng)}
  ours = {k: tg.Tensor(v, dtype=dtype) for k, v in values.items()}
  save_file(ours, tmp_path / "tg.safetensors", metadata={"who": "teenygrad"})
  theirs = safetensors_torch.load_file(str(tmp_path / "tg.safetensors"))
  assert set(theirs) == set(ours)
  for k, t in ours.items():
    assert theirs[k].dtype == TORCH_DTYPES[dtype] and tuple(theirs[k].shape) == t.shape
    np.testing.assert_array_equal(theirs[k].float().numpy() if dtype == tg.bfloat16 else theirs[k].numpy(), _as_float(t))
  # and torch's own file of the same tensors loads here with the same values
  safetensors_torch.save_file(theirs, str(tmp_path / "torch.safetensors"), metadata={"who": "torch"})
  back = load_file(tmp_path / "torch.safetensors")
  assert st.load_metadata(tmp_path / "torch.safetensors") == {"who": "torch"}
  for k, t in ours.items():
    assert back[k].dtype == dtype and back[k].shape == t.shape
    np.testing.assert_array_equal(_as_float(back[k]), _as_float(t))


def test_non_contiguous_and_lazy_tensors_are_saved_as_their_values(tmp_path):
  base = tg.arange(12).float().reshape(3, 4)
  tensors = {"transposed": base.T, "sliced": base[1:, ::2], "lazy": base * 2 + 1, "numpy": np.arange(6, dtype=np.int32).reshape(2, 3)}
  save_file(tensors, tmp_path / "x.safetensors")
  theirs = safetensors_torch.load_file(str(tmp_path / "x.safetensors"))
  np.testing.assert_array_equal(theirs["transposed"].numpy(), np.arange(12, dtype=np.float32).reshape(3, 4).T)
  np.testing.assert_array_equal(theirs["sliced"].numpy(), np.arange(12, dtype=np.float32).reshape(3, 4)[1:, ::2])
  np.testing.assert_array_equal(theirs["lazy"].numpy(), np.arange(12, dtype=np.float32).reshape(3, 4) * 2 + 1)
  np.testing.assert_array_equal(theirs["numpy"].numpy(), tensors["numpy"])


def test_torch_state_dict_round_trips_through_teenygrad(tmp_path):
  net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Flatten(), torch.nn.Linear(4 * 6 * 6, 10))
  reference = {k: v.clone() for k, v in net.state_dict().items()}
  safetensors_torch.save_file(net.state_dict(), str(tmp_path / "net.safetensors"))
  loaded = load_file(tmp_path / "net.safetensors")
  assert list(loaded) != [] and set(loaded) == set(reference)
  save_file(loaded, tmp_path / "again.safetensors")   # teenygrad writes what it read; torch reads it back
  net.load_state_dict(safetensors_torch.load_file(str(tmp_path / "again.safetensors")))
  for k, v in net.state_dict().items(): assert torch.equal(v, reference[k]), k


# ---- lazy, memory-mapped loading ----

def test_loading_maps_the_file_and_reads_nothing_until_used(tmp_path):
  data = np.arange(4096, dtype=np.float32)
  save_file({"w": tg.Tensor(data), "h": tg.Tensor(data[:3].astype(np.float16))}, tmp_path / "m.safetensors")
  loaded = load_file(tmp_path / "m.safetensors")
  buffer = loaded["w"].lazydata.realized
  assert isinstance(buffer, st._MappedBuffer) and buffer._raw is None, "loading must not touch the data"
  assert isinstance(buffer.source.base, np.memmap) or isinstance(buffer.source, np.memmap)
  np.testing.assert_array_equal((loaded["w"] * 1).numpy(), data)
  assert np.shares_memory(buffer.raw, buffer.source), "an aligned CPU tensor is the mapping itself (zero-copy)"
  np.testing.assert_array_equal(loaded["h"].numpy(), data[:3].astype(np.float16))


def test_writing_to_a_loaded_tensor_never_changes_the_file(tmp_path):
  path = tmp_path / "w.safetensors"
  save_file({"w": tg.ones(16)}, path)
  before = path.read_bytes()
  w = load_file(path)["w"]
  w.assign(w * 5).realize()
  np.testing.assert_array_equal(w.numpy(), np.full(16, 5, np.float32))
  assert path.read_bytes() == before
  np.testing.assert_array_equal(load_file(path)["w"].numpy(), np.ones(16, np.float32))


# ---- malformed files: a clear ValueError, never a crash or a huge allocation ----

def _valid_file(tmp_path) -> bytes:
  save_file({"a": tg.arange(6).float().reshape(2, 3), "b": tg.Tensor([1, 2, 3], dtype=tg.int16)}, tmp_path / "ok.safetensors")
  return (tmp_path / "ok.safetensors").read_bytes()


def _with_header(header: dict, data: bytes) -> bytes:
  encoded = json.dumps(header).encode()
  return struct.pack("<Q", len(encoded)) + encoded + data


BAD_FILES = {
  "empty": lambda ok: b"",
  "short": lambda ok: b"\x01\x00\x00",
  "huge_header_length": lambda ok: struct.pack("<Q", 2**63) + b"{}",
  "header_past_end": lambda ok: struct.pack("<Q", 1000) + b"{}",
  "truncated_data": lambda ok: ok[:-5],
  "trailing_bytes": lambda ok: ok + b"xx",
  "not_json": lambda ok: struct.pack("<Q", 4) + b"{no}",
  "not_utf8": lambda ok: struct.pack("<Q", 2) + b"\xff\xfe",
  "json_list": lambda ok: _with_header([], b""),  # type: ignore[arg-type]
  "unknown_dtype": lambda ok: _with_header({"x": {"dtype": "F8_E4M3X", "shape": [2], "data_offsets": [0, 2]}}, b"ab"),
  "absurd_shape": lambda ok: _with_header({"x": {"dtype": "F32", "shape": [2**40, 2**40], "data_offsets": [0, 8]}}, b"12345678"),
  "negative_dim": lambda ok: _with_header({"x": {"dtype": "F32", "shape": [-2], "data_offsets": [0, 8]}}, b"12345678"),
  "float_dim": lambda ok: _with_header({"x": {"dtype": "F32", "shape": [2.0], "data_offsets": [0, 8]}}, b"12345678"),
  "lying_size": lambda ok: _with_header({"x": {"dtype": "F32", "shape": [4], "data_offsets": [0, 8]}}, b"12345678"),
  "offsets_reversed": lambda ok: _with_header({"x": {"dtype": "U8", "shape": [0], "data_offsets": [4, 0]}}, b"1234"),
  "offsets_past_end": lambda ok: _with_header({"x": {"dtype": "U8", "shape": [8], "data_offsets": [4, 12]}}, b"12345678"),
  "overlap": lambda ok: _with_header({"x": {"dtype": "U8", "shape": [4], "data_offsets": [0, 4]},
                                      "y": {"dtype": "U8", "shape": [4], "data_offsets": [2, 6]}}, b"123456"),
  "gap": lambda ok: _with_header({"x": {"dtype": "U8", "shape": [2], "data_offsets": [2, 4]}}, b"1234"),
  "missing_field": lambda ok: _with_header({"x": {"dtype": "U8", "shape": [2]}}, b"12"),
  "bad_metadata": lambda ok: _with_header({"__metadata__": {"k": 1}}, b""),
  "duplicate_name": lambda ok: (lambda h: struct.pack("<Q", len(h)) + h + b"ab")(
    b'{"x":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},"x":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}}'),
}


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_malformed_file_raises_value_error(tmp_path, case):
  path = tmp_path / "bad.safetensors"
  path.write_bytes(BAD_FILES[case](_valid_file(tmp_path)))
  with pytest.raises(ValueError, match="bad.safetensors"):
    load_file(path)


def test_random_corruption_loads_or_raises_value_error(tmp_path):
  ok = _valid_file(tmp_path)
  rng = np.random.default_rng(0)
  path = tmp_path / "fuzz.safetensors"
  outcomes = set()
  for _ in range(300):
    data = bytearray(ok)
    for _ in range(rng.integers(1, 4)):
      position = int(rng.integers(0, len(data)))
      data[position] = int(rng.integers(0, 256))
    if rng.random() < 0.3: data = data[:int(rng.integers(0, len(data)))]
    path.write_bytes(bytes(data))
    try:
      for t in load_file(path).values(): (t.float() if t.dtype == tg.bfloat16 else t).numpy()
      outcomes.add("loaded")
    except ValueError:
      outcomes.add("rejected")
  assert outcomes == {"loaded", "rejected"}


# ---- state dicts ----

def test_state_dict_of_plain_objects_and_strict_loading():
  class Block:
    def __init__(self):
      self.weight, self.bias = tg.randn(3, 2), tg.zeros(3)
  model = {"layers": [Block(), Block()], "head": tg.ones(2)}
  sd = get_state_dict(model)
  assert list(sd) == ["layers.0.weight", "layers.0.bias", "layers.1.weight", "layers.1.bias", "head"]
  new = {k: tg.full(v.shape, 7.0) for k, v in sd.items()}
  load_state_dict(model, new)
  np.testing.assert_array_equal(model["layers"][1].weight.numpy(), np.full((3, 2), 7, np.float32))
  with pytest.raises(RuntimeError, match="missing keys"): load_state_dict(model, {k: v for k, v in new.items() if k != "head"})
  with pytest.raises(RuntimeError, match="size mismatch"): load_state_dict(model, {**new, "head": tg.ones(3)})
  np.testing.assert_array_equal(model["head"].numpy(), np.full(2, 7, np.float32))   # a failed load wrote nothing
  missing, unexpected = load_state_dict(model, {"head": tg.zeros(2), "other": tg.ones(1)}, strict=False)
  assert "layers.0.weight" in missing and unexpected == ["other"]


# ---- training checkpoints ----

class _Optimizer:
  """A stand-in with torch's state_dict layout: int keys, tensors, tuples, floats."""
  def __init__(self, params):
    self.params = params
    self.state = {i: {"step": tg.Tensor(3.0), "exp_avg": tg.randn(*p.shape)} for i, p in enumerate(params)}
    self.param_groups = [{"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-8, "amsgrad": False, "params": list(range(len(params)))}]
  def state_dict(self): return {"state": self.state, "param_groups": self.param_groups}
  def load_state_dict(self, sd): self.state, self.param_groups = sd["state"], sd["param_groups"]


class _Scheduler:
  def __init__(self): self.last_epoch, self.base_lrs = 5, [0.1]
  def state_dict(self): return {"last_epoch": self.last_epoch, "base_lrs": self.base_lrs}
  def load_state_dict(self, sd): self.__dict__.update(sd)


def _model():
  return {"fc.weight": tg.randn(4, 3), "fc.bias": tg.randn(4)}


def test_checkpoint_round_trip_with_rng(tmp_path):
  model, path = _model(), tmp_path / "ckpt.safetensors"
  optimizer, scheduler = _Optimizer(list(model.values())), _Scheduler()
  save_checkpoint(path, model=model, optimizer=optimizer, scheduler=scheduler, step=42, extra={"note": "hi", "best": 0.5})
  expected_next = tg.randn(5).numpy()
  tg.manual_seed(123)
  restored, opt2, sched2 = {k: tg.zeros(*v.shape) for k, v in model.items()}, _Optimizer(list(model.values())), _Scheduler()
  sched2.last_epoch = 0
  info = load_checkpoint(path, model=restored, optimizer=opt2, scheduler=sched2)
  assert info["step"] == 42 and info["extra"] == {"note": "hi", "best": 0.5}
  np.testing.assert_array_equal(tg.randn(5).numpy(), expected_next)
  for k in model: np.testing.assert_array_equal(restored[k].numpy(), model[k].numpy())
  assert opt2.param_groups == optimizer.param_groups and isinstance(opt2.param_groups[0]["betas"], tuple)
  assert set(opt2.state) == {0, 1}
  np.testing.assert_array_equal(opt2.state[1]["exp_avg"].numpy(), optimizer.state[1]["exp_avg"].numpy())
  assert sched2.last_epoch == 5
  # the model part is a plain safetensors file torch reads with torch's names
  theirs = safetensors_torch.load_file(str(path))
  np.testing.assert_array_equal(theirs["model.fc.weight"].numpy(), model["fc.weight"].numpy())


def _assert_unchanged(path, before: bytes, model):
  assert path.read_bytes() == before
  restored = {k: tg.zeros(*v.shape) for k, v in model.items()}
  assert load_checkpoint(path, model=restored)["step"] == 1
  for k in model: np.testing.assert_array_equal(restored[k].numpy(), model[k].numpy())
  assert [p.name for p in path.parent.iterdir()] == [path.name], "no temporary file is left behind"


def test_write_failing_half_way_leaves_previous_checkpoint(tmp_path, monkeypatch):
  model, path = _model(), tmp_path / "ckpt.safetensors"
  save_checkpoint(path, model=model, step=1)
  before = path.read_bytes()
  big = {"fc.weight": tg.randn(300, 300), "fc.bias": tg.randn(300)}
  real_write = st.write

  def write_half_then_fail(tensors, f, metadata=None):
    import io
    buffer = io.BytesIO()
    real_write(tensors, buffer, metadata)
    f.write(buffer.getvalue()[:len(buffer.getvalue()) // 2])
    raise OSError("disk full (injected)")
  monkeypatch.setattr(st, "write", write_half_then_fail)
  with pytest.raises(OSError, match="injected"): save_checkpoint(path, model=big, step=2)
  _assert_unchanged(path, before, model)


def test_tensor_failing_to_realize_mid_save_leaves_previous_checkpoint(tmp_path):
  from teenygrad.ir.lazy import LazyBuffer

  class FailingKernel:
    def run(self, root, buffers): raise RuntimeError("kernel failed (injected)")
  model, path = _model(), tmp_path / "ckpt.safetensors"
  save_checkpoint(path, model=model, step=1)
  before = path.read_bytes()
  x = tg.randn(8)
  broken = tg.Tensor(LazyBuffer.custom(FailingKernel(), (x.lazydata,), (8,), tg.float32))
  with pytest.raises(RuntimeError, match="injected"):
    save_checkpoint(path, model={"a": tg.randn(64, 64), "z": broken}, step=2)
  _assert_unchanged(path, before, model)


def test_checkpoint_refuses_what_json_cannot_hold(tmp_path):
  path = tmp_path / "ckpt.safetensors"
  save_checkpoint(path, model=_model(), step=1)
  before = path.read_bytes()

  class Odd:
    def state_dict(self): return {"fn": lambda x: x}
  with pytest.raises(TypeError, match="never pickle"): save_checkpoint(path, optimizer=Odd())
  assert path.read_bytes() == before


def test_plain_safetensors_file_is_not_a_checkpoint(tmp_path):
  save_file({"a": tg.ones(2)}, tmp_path / "plain.safetensors")
  with pytest.raises(ValueError, match="not a teenygrad checkpoint"): load_checkpoint(tmp_path / "plain.safetensors")


def test_save_into_missing_directory_raises(tmp_path):
  with pytest.raises(FileNotFoundError, match="does not exist"): save_file({"a": tg.ones(2)}, tmp_path / "nope" / "x.safetensors")
  assert not os.path.exists(tmp_path / "nope")
