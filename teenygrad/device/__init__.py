"""Devices. A backend is four small classes (Allocator, Compiler, Program, Device) in one file of this package,
or an out-of-tree package that registers itself under the `teenygrad.backends` entry point."""
from __future__ import annotations

import functools
import hashlib
import importlib
import os
import tempfile
from dataclasses import dataclass

import numpy as np

from teenygrad.dtype import DType, dtypes
from teenygrad.helpers import canonicalize, config

BUILTIN_BACKENDS = {"CPU": "teenygrad.device.cpu", "CUDA": "teenygrad.device.cuda",
                    "OPENCL": "teenygrad.device.opencl", "VULKAN": "teenygrad.device.vulkan"}


class Allocator:
  """Raw device memory. Subclasses implement _alloc/_free/copyin/copyout."""
  copyout_waits = False   # copyout waits for the device's queued work itself (else Buffer.numpy synchronizes first)
  def alloc(self, nbytes: int): return self._alloc(max(nbytes, 1))
  def _alloc(self, nbytes: int): raise NotImplementedError
  def free(self, raw, nbytes: int) -> None: pass
  def copyin(self, raw, src: memoryview) -> None: raise NotImplementedError
  def copyout(self, dest: memoryview, raw) -> None: raise NotImplementedError
  def copyout_start(self, raw, nbytes: int):
    """Queue a copy of `nbytes` from the device now and return finish(dest), which waits for it: None where the
    backend has no such copy (a read then waits for all the queued work)."""
    return None


class Compiler:
  """Source to binary, cached on disk by (source, compiler, flags)."""
  cache_tag = "base"

  def cache_key(self, src: str) -> str:
    return hashlib.sha256(f"{self.cache_tag}\0{src}".encode()).hexdigest()[:32]

  def compile_cached(self, src: str) -> bytes:
    path = config.cache_dir / "kernels" / self.cache_key(src)
    if path.exists(): return path.read_bytes()
    binary = self.compile(src)
    path.parent.mkdir(parents=True, exist_ok=True)
    # atomic: a concurrent process never sees half a file
    fd, tmp = tempfile.mkstemp(dir=path.parent)
    with os.fdopen(fd, "wb") as f: f.write(binary)
    os.replace(tmp, path)
    return binary

  def compile(self, src: str) -> bytes: raise NotImplementedError


class Program:
  """A compiled kernel. __call__(buffers, variable values) launches it and waits when wait=True."""
  def __call__(self, *bufs, vals: tuple[int, ...] = (), wait: bool = False) -> float | None: raise NotImplementedError

  def bind(self, cells: list):
    """This launch with its arguments (buffers, then ints) held in the backend's argument cells: a function of no
    arguments that launches with the cells' current values, or None where the backend has no cells."""
    return None


class Buffer:
  """`size` elements of `dtype` on a device; allocated on first use."""
  def __init__(self, device: str, size: int, dtype: DType, raw=None):
    self.device, self.size, self.dtype = device, size, dtype
    self._raw = raw
    self._owned = raw is None   # memory handed in (a memory-mapped file, a DLPack import) is not the allocator's to free

  @property
  def nbytes(self) -> int: return self.size * self.dtype.itemsize

  @property
  def raw(self):
    if self._raw is None: self._raw = Device[self.device].allocator.alloc(self.nbytes)
    return self._raw

  def copyin(self, data: np.ndarray) -> Buffer:
    data = np.ascontiguousarray(data)
    assert data.nbytes == self.nbytes, f"copyin of {data.nbytes} bytes into a {self.nbytes}-byte buffer"
    Device[self.device].allocator.copyin(self.raw, memoryview(data.reshape(-1).view(np.uint8)))
    return self

  def numpy(self) -> np.ndarray:
    out = np.empty(self.size, dtype=self.dtype.np)
    allocator = Device[self.device].allocator
    if not allocator.copyout_waits: Device[self.device].synchronize()
    allocator.copyout(memoryview(out.view(np.uint8)), self.raw)
    return out

  def read_later(self):
    """Start copying this buffer to the host and return read(), which waits for that copy and gives the array. The
    copy is queued behind the work that writes the buffer and before anything queued after this call, so a decode
    step queued next runs while the host waits for this one's token only. A backend without queued copies reads at
    read() time (everything queued by then has run)."""
    finish = Device[self.device].allocator.copyout_start(self.raw, self.nbytes)
    if finish is None: return self.numpy
    out = np.empty(self.size, dtype=self.dtype.np)
    def read() -> np.ndarray:
      finish(memoryview(out.view(np.uint8)))
      return out
    return read

  def __del__(self):
    if self._raw is not None and self._owned:
      try: Device[self.device].allocator.free(self._raw, self.nbytes)
      except Exception: pass  # interpreter shutdown

  def __repr__(self) -> str: return f"<Buffer {self.device} {self.size} {self.dtype.name}>"


class Backend:
  """One device instance: its allocator, compiler, renderer and how to make a Program."""
  allocator: Allocator
  compiler: Compiler
  renderer: object

  def __init__(self, name: str): self.name = name
  def program(self, name: str, binary: bytes, launch=None) -> Program:
    """A loaded kernel; `launch` is what a GPU renderer's launch_dims gave (grid and block sizes), None on a CPU."""
    raise NotImplementedError
  def synchronize(self) -> None: pass
  def supports(self, dtype: DType) -> bool: return True

  def gemm_kernel(self, root, target, is_boundary) -> GemmKernelSource | None:
    """The backend's own matrix multiply for this kernel (tiled, tensor cores...) or None for the generic lowering."""
    return None

  def transfer(self, dest: Buffer, src: Buffer) -> bool:
    """Copy src into dest without going through the host, if this backend can (peer copies); False otherwise."""
    return False

  # Argument cells (CPU: ctypes values), for backends whose programs `bind`: a JIT replay binds every launch once and
  # then only updates the cells that change (new input buffers, variable values) instead of rebuilding arguments.
  def buffer_cell(self, buffer: Buffer): return None
  def update_buffer_cell(self, cell, buffer: Buffer) -> None: raise NotImplementedError
  def int_cell(self, value: int): return None

  # A backend that can replay recorded launches as one device-side graph (CUDA graphs) defines
  #   graph(exec_items) -> object whose __call__(exec_items) relaunches them all at once
  # and the JIT uses it when present (see engine/realize.py ExecItem).
  graph = None


@dataclass
class GemmKernelSource:
  """A backend GEMM: kernel name, its parameters (output first, as codegen BufferArgs), source, and launch sizes in
  whatever form the backend's program() takes (None on a CPU)."""
  name: str
  buffers: list
  src: str
  launch: object = None


class _DeviceRegistry:
  """Device['CPU'] gives the backend instance, opened on first use."""
  @functools.cache
  def __getitem__(self, device: str) -> Backend:
    name, _, index = device.partition(":")
    module_name = BUILTIN_BACKENDS.get(name) or _entry_point_backends().get(name)
    if module_name is None: raise RuntimeError(f"unknown device {device!r}; known: {sorted(self.known())}")
    module = importlib.import_module(module_name)
    return module.open_device(device)

  @property
  def DEFAULT(self) -> str: return config.device

  def known(self) -> set[str]: return set(BUILTIN_BACKENDS) | set(_entry_point_backends())


@functools.cache
def _entry_point_backends() -> dict[str, str]:
  from importlib.metadata import entry_points
  return {ep.name.upper(): ep.value for ep in entry_points(group="teenygrad.backends")}


Device = _DeviceRegistry()

__all__ = ["Allocator", "Backend", "Buffer", "Compiler", "Device", "GemmKernelSource", "Program", "canonicalize", "dtypes"]
