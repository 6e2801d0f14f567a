"""The CPU backend: C with OpenMP, compiled by the system's gcc or clang, loaded through ctypes."""
from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

from teenygrad.codegen.gemm_match import try_gemm
from teenygrad.device import Allocator, Backend, Compiler, GemmKernelSource, Program
from teenygrad.helpers import config
from teenygrad.renderer.c import CRenderer


class CPUAllocator(Allocator):
  """Host memory as 64-byte aligned numpy arrays (so DLPack can hand them to torch without a copy).

  Freed buffers of 1 MiB and more are kept (up to CACHE_LIMIT bytes) and handed out again for the same size: fresh
  large allocations come from the OS page by page, and faulting in a 64 MiB output costs more than computing it."""
  CACHE_MIN, CACHE_LIMIT = 1 << 20, 1 << 30

  def __init__(self):
    self.cache: dict[int, list[np.ndarray]] = {}
    self.cached_bytes = 0

  def alloc(self, nbytes: int) -> np.ndarray:
    nbytes = max(nbytes, 1)
    free_list = self.cache.get(nbytes)
    if free_list:
      self.cached_bytes -= nbytes
      return free_list.pop()
    return self._alloc(nbytes)

  def free(self, raw: np.ndarray, nbytes: int) -> None:
    # only memory nobody else sees (a buffer exported through DLPack is never handed back here: Tensor.__dlpack__
    # disowns it); the reference count catches other arrays still holding raw itself
    if nbytes < self.CACHE_MIN or self.cached_bytes + nbytes > self.CACHE_LIMIT or sys.getrefcount(raw) > _UNSHARED_REFS: return
    self.cache.setdefault(nbytes, []).append(raw)
    self.cached_bytes += nbytes

  def _alloc(self, nbytes: int) -> np.ndarray:
    raw = np.empty(nbytes + 64, dtype=np.uint8)
    start = (-raw.ctypes.data) % 64
    return raw[start:start + nbytes]

  def copyin(self, raw: np.ndarray, src: memoryview) -> None:
    raw[:] = np.frombuffer(src, dtype=np.uint8)

  def copyout(self, dest: memoryview, raw: np.ndarray) -> None:
    np.frombuffer(dest, dtype=np.uint8)[:] = raw


# references to a buffer's array while Buffer.__del__ frees it: the Buffer's attribute, free()'s argument, getrefcount's
_UNSHARED_REFS = 3


@functools.cache
def find_c_compiler() -> str:
  for candidate in (os.environ.get("CC"), "gcc", "clang", "cc"):
    if candidate and shutil.which(candidate): return candidate
  raise RuntimeError("the CPU backend needs a C compiler: install gcc or clang (apt-get install gcc)")


@functools.cache
def has_vector_math() -> bool:
  """glibc's libmvec has SIMD exp2/log2/sin: with it, loops over them vectorize instead of calling libm per element."""
  return ctypes.util.find_library("mvec") is not None


class ClangCompiler(Compiler):
  # -fno-trapping-math: no kernel reads the floating-point exception flags, and with them kept GCC will not turn a
  # select between float values into a blend, so a loop holding one stays scalar (silu's stable sigmoid over 1536
  # floats: 10.4 -> 2.6 us; the argmax over a 49152-word vocabulary: 162 -> 78 us). Values are unchanged: no
  # reassociation, contraction or flush to zero comes with it.
  flags = ("-O3", "-march=native", "-fopenmp", "-shared", "-fPIC", "-std=gnu11", "-fno-math-errno", "-fno-trapping-math",
           "-fwrapv", "-ffp-contract=off", "-Wno-unused-variable")

  def __init__(self):
    self.cc = find_c_compiler()
    self.libs = ("-lmvec", "-lm") if has_vector_math() else ("-lm",)
    version = subprocess.run([self.cc, "--version"], capture_output=True, text=True).stdout.splitlines()[0]
    self.cache_tag = f"{version}\0{' '.join(self.flags + self.libs)}"

  def compile(self, src: str) -> bytes:
    with tempfile.TemporaryDirectory() as tmp:
      source, library = os.path.join(tmp, "kernel.c"), os.path.join(tmp, "kernel.so")
      with open(source, "w") as f: f.write(src)
      result = subprocess.run([self.cc, *self.flags, source, "-o", library, *self.libs], capture_output=True, text=True)
      if result.returncode != 0:
        raise RuntimeError(f"C compile failed:\n{result.stderr}\n--- source ---\n{src}")
      with open(library, "rb") as f: return f.read()


def _address(array: np.ndarray) -> int:
  """The address of an array's first byte: through ctypes' buffer view, a third of the cost of `array.ctypes.data`
  (which builds a numpy helper object; a 512x512 matmul's launch asks for three); read-only arrays take that way."""
  try: return ctypes.addressof(ctypes.c_char.from_buffer(array))
  except (TypeError, ValueError): return array.ctypes.data


class CPUProgram(Program):
  def __init__(self, name: str, binary: bytes):
    self.name = name
    # dlopen needs a file; keep it next to the cache so the same library is mapped once
    fd, path = tempfile.mkstemp(suffix=".so")
    with os.fdopen(fd, "wb") as f: f.write(binary)
    self.lib = ctypes.CDLL(path)
    os.unlink(path)
    self.fn = getattr(self.lib, name)
    self.fn.restype = None

  def __call__(self, *bufs, vals: tuple[int, ...] = (), wait: bool = False) -> float | None:
    args = [ctypes.c_void_p(_address(b)) for b in bufs] + [ctypes.c_longlong(v) for v in vals]
    start = time.perf_counter()
    self.fn(*args)  # ctypes releases the GIL for the call
    return time.perf_counter() - start if wait else None

  def bind(self, cells: list): return functools.partial(self.fn, *cells)


class CPUBackend(Backend):

  def __init__(self, name: str):
    super().__init__(name)
    self.allocator = CPUAllocator()
    self.compiler = ClangCompiler()
    self.renderer = CRenderer(threads=max(config.threads, 1), check_bounds=config.check_bounds,
                              parallel_threshold=config.parallel_threshold, vector_math=has_vector_math())

  def program(self, name: str, binary: bytes, launch=None) -> CPUProgram: return CPUProgram(name, binary)

  # ctypes passes a c_void_p / c_longlong by its value at call time, so a bound launch sees every update
  def buffer_cell(self, buffer): return ctypes.c_void_p(buffer.raw.ctypes.data)
  def update_buffer_cell(self, cell, buffer) -> None: cell.value = buffer.raw.ctypes.data
  def int_cell(self, value: int): return ctypes.c_longlong(value)

  def gemm_kernel(self, root, target, is_boundary) -> GemmKernelSource | None:
    """float32 matmuls lower to the tiled GEMM of codegen/gemm.py, the rest of the kernel fused as epilogue."""
    gemm = try_gemm(root, target, is_boundary, self.renderer)
    return GemmKernelSource(*gemm) if gemm is not None else None


def open_device(name: str) -> CPUBackend: return CPUBackend(name)
