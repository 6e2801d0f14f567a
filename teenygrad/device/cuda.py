"""The CUDA backend: kernels rendered as CUDA C, compiled by NVRTC to a cubin for the device's own architecture, and
driven through the driver API (libcuda) with ctypes. No CUDA Python package is used at run time.

Per device: the primary context, one stream (every copy and launch is ordered on it, so a freed block can be
handed to the next allocation at once), a caching allocator, pinned staging buffers for host copies, and events
for timing. Importing this module needs no driver; opening a device does.
"""
from __future__ import annotations

import ctypes
import threading

import numpy as np

from teenygrad.device import Allocator, Backend, Buffer, Compiler, GemmKernelSource, Program
from teenygrad.device.cuda_bindings import (ATTR_COMPUTE_CAPABILITY_MAJOR, ATTR_COMPUTE_CAPABILITY_MINOR, ATTR_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN,
                                            ATTR_MULTIPROCESSOR_COUNT, CU_EVENT_DEFAULT, CU_EVENT_DISABLE_TIMING, CU_MEMHOSTALLOC_PORTABLE,
                                            CU_STREAM_NON_BLOCKING, CUDA_ERROR_OUT_OF_MEMORY, CUDA_ERROR_PEER_ACCESS_ALREADY_ENABLED,
                                            FUNC_ATTR_MAX_DYNAMIC_SHARED_SIZE_BYTES, GRAPH_DEPENDENCY_TYPE_PROGRAMMATIC,
                                            GRAPH_KERNEL_NODE_PORT_PROGRAMMATIC, CUDAError, GraphEdgeData, KernelNodeParams,
                                            c_int, c_ptr, c_size, c_u64, check, encode_tensor_map, libcuda, nvrtc_compile,
                                            nvrtc_version)
from teenygrad.helpers import config
from teenygrad.renderer.cuda import CUDARenderer


class CUDAOutOfMemoryError(MemoryError):
  """The device has no room for an allocation even after the allocator gave back everything it cached."""


def _bucket(nbytes: int) -> int:
  """Allocation sizes the cache keeps apart: powers of two up to 1 MiB, then multiples of 2 MiB."""
  if nbytes <= 1 << 20: return max(512, 1 << (nbytes - 1).bit_length())
  return -(-nbytes // (2 << 20)) * (2 << 20)


class CUDAAllocator(Allocator):
  """Device memory with a size-bucketed cache of freed blocks; host copies go through pinned staging buffers."""
  STAGING_BYTES = 16 << 20

  def __init__(self, device: CUDABackend):
    self.device = device
    self.free_lists: dict[int, list[int]] = {}
    self.cached_bytes = 0
    self.lock = threading.Lock()
    self._staging: list[tuple[int, object]] = []   # (pinned host pointer, event guarding its last copy)
    self._readbacks: list[tuple[int, object]] = []   # small pinned buffers for copyout_start, free ones

  def _alloc(self, nbytes: int) -> int:
    size = _bucket(nbytes)
    with self.lock:
      if self.free_lists.get(size):
        self.cached_bytes -= size
        return self.free_lists[size].pop()
    self.device.activate()
    ptr = c_u64()
    result = libcuda().cuMemAlloc_v2(ctypes.byref(ptr), size)
    if result == CUDA_ERROR_OUT_OF_MEMORY:
      self.empty_cache()
      result = libcuda().cuMemAlloc_v2(ctypes.byref(ptr), size)
      if result == CUDA_ERROR_OUT_OF_MEMORY:
        free, total = self.device.memory_info()
        raise CUDAOutOfMemoryError(f"CUDA out of memory on {self.device.name}: tried to allocate {nbytes} bytes "
                                   f"({nbytes / 2**20:.1f} MiB); {free / 2**20:.0f} MiB free of {total / 2**20:.0f} MiB")
    check(result, f"cuMemAlloc({size})")
    return ptr.value

  def free(self, raw: int, nbytes: int) -> None:
    size = _bucket(max(nbytes, 1))
    with self.lock:
      self.free_lists.setdefault(size, []).append(raw)
      self.cached_bytes += size

  def empty_cache(self) -> None:
    """Give every cached block back to the driver (after the stream is idle, so none is still in use)."""
    self.device.synchronize()
    with self.lock:
      blocks = [ptr for ptrs in self.free_lists.values() for ptr in ptrs]
      self.free_lists.clear()
      self.cached_bytes = 0
    for ptr in blocks: check(libcuda().cuMemFree_v2(ptr), "cuMemFree")

  def _stage(self, index: int) -> tuple[int, object]:
    """The index-th pinned staging buffer, waited on so its previous copy has finished."""
    while len(self._staging) <= index:
      host = c_ptr()
      check(libcuda().cuMemHostAlloc(ctypes.byref(host), self.STAGING_BYTES, CU_MEMHOSTALLOC_PORTABLE), "cuMemHostAlloc")
      self._staging.append((host.value, self.device.new_event(timing=False)))
    host, event = self._staging[index]
    check(libcuda().cuEventSynchronize(event), "cuEventSynchronize")
    return host, event

  def copyin(self, raw: int, src: memoryview) -> None:
    """Host to device, asynchronous: each chunk is copied into pinned memory, then the DMA engine takes it."""
    self.device.activate()
    data = np.frombuffer(src, dtype=np.uint8)
    stream = self.device.stream
    for n, offset in enumerate(range(0, data.nbytes, self.STAGING_BYTES)):
      chunk = data[offset:offset + self.STAGING_BYTES]
      host, event = self._stage(n % 2)
      ctypes.memmove(host, chunk.ctypes.data, chunk.nbytes)
      check(libcuda().cuMemcpyHtoDAsync_v2(raw + offset, host, chunk.nbytes, stream), "cuMemcpyHtoDAsync")
      check(libcuda().cuEventRecord(event, stream), "cuEventRecord")

  def copyout(self, dest: memoryview, raw: int) -> None:
    """Device to host through two pinned buffers: the next chunk's DMA overlaps this chunk's host copy."""
    self.device.activate()
    out = np.frombuffer(dest, dtype=np.uint8)
    stream = self.device.stream
    pending = None
    for n, offset in enumerate(range(0, out.nbytes, self.STAGING_BYTES)):
      size = min(self.STAGING_BYTES, out.nbytes - offset)
      host, event = self._stage(n % 2)   # its last chunk (n - 2) was already copied out below
      check(libcuda().cuMemcpyDtoHAsync_v2(host, raw + offset, size, stream), "cuMemcpyDtoHAsync")
      check(libcuda().cuEventRecord(event, stream), "cuEventRecord")
      if pending is not None: self._finish_copyout(out, *pending)
      pending = (host, event, offset, size)
    if pending is not None: self._finish_copyout(out, *pending)

  READBACK_BYTES = 64 << 10

  def copyout_start(self, raw: int, nbytes: int):
    """A small device-to-host copy queued now into a pinned buffer of its own (a decode step's tokens); finish(dest)
    waits for it alone and gives the pinned buffer back. Larger reads take the plain copyout at finish time."""
    if nbytes > self.READBACK_BYTES: return None
    self.device.activate()
    with self.lock:
      slot = self._readbacks.pop() if self._readbacks else None
    if slot is None:
      host = c_ptr()
      check(libcuda().cuMemHostAlloc(ctypes.byref(host), self.READBACK_BYTES, CU_MEMHOSTALLOC_PORTABLE), "cuMemHostAlloc")
      slot = (host.value, self.device.new_event(timing=False))
    host, event = slot
    check(libcuda().cuMemcpyDtoHAsync_v2(host, raw, nbytes, self.device.stream), "cuMemcpyDtoHAsync")
    check(libcuda().cuEventRecord(event, self.device.stream), "cuEventRecord")
    def finish(dest: memoryview) -> None:
      check(libcuda().cuEventSynchronize(event), "copying from the device")
      ctypes.memmove(np.frombuffer(dest, dtype=np.uint8).ctypes.data, host, nbytes)
      with self.lock: self._readbacks.append(slot)
    return finish

  @staticmethod
  def _finish_copyout(out: np.ndarray, host: int, event, offset: int, size: int) -> None:
    check(libcuda().cuEventSynchronize(event), "copying from the device")
    ctypes.memmove(out.ctypes.data + offset, host, size)


# the first statements of every kernel compiled for sm_90 and later: wait until the grid before it in the stream has
# finished and its writes are visible (a no-op when it was launched the ordinary way), then let the grid after it
# launch. A graph whose edges are programmatic (CUDAGraph; TEENYGRAD_PDL=0 turns it off) then starts each kernel's
# blocks while the one before is still running, sparing a decode step's ~150-200 kernels part of their launch
# latencies (end-to-end 8B Q4_0 decode on an H200: 424 -> 495 tok/s). Waiting first keeps every read and write of a
# kernel after its predecessor's, as ordinary stream order would.
GRID_DEPENDENCY = 'asm volatile("griddepcontrol.wait;\\n" ::: "memory"); asm volatile("griddepcontrol.launch_dependents;\\n" ::: "memory");'


def with_grid_dependency(src: str) -> str:
  """src with GRID_DEPENDENCY at the top of each kernel's body (the first brace after each `extern "C" __global__`),
  unless the source places its own (a call of TG_GRID_WAIT, renderer/cuda.py's preamble). A kernel that does neither
  would run, under a programmatic graph edge, alongside the kernel whose output it reads."""
  if "TG_GRID_WAIT();" in src: return src
  parts, pos = [], 0
  while (at := src.find('extern "C" __global__', pos)) >= 0:
    body = src.index("{", at) + 1
    parts += [src[pos:body], " ", GRID_DEPENDENCY]
    pos = body
  return "".join(parts) + src[pos:]


def grid_dependency_supported(arch: str) -> bool: return int(arch.removeprefix("sm_").rstrip("a")) >= 90


class NVRTCCompiler(Compiler):
  """CUDA C to a cubin for one architecture; the disk cache key holds NVRTC's version, the architecture and whether
  kernels open with the grid-dependency wait."""
  def __init__(self, arch: str):
    self.arch = arch
    self.options = [f"--gpu-architecture={arch}", "-std=c++17", "--restrict", "-lineinfo"]
    self.grid_dependency = grid_dependency_supported(arch)
    major, minor = nvrtc_version()
    self.cache_tag = f"nvrtc {major}.{minor}\0{' '.join(self.options)}" + ("\0griddepcontrol" if self.grid_dependency else "")

  def compile(self, src: str) -> bytes:
    # warpgroup MMA exists only on the architecture-specific target (sm_90a), whose cubin runs on that chip alone
    options = [o + "a" if o == "--gpu-architecture=sm_90" and "wgmma." in src else o for o in self.options]
    return nvrtc_compile(with_grid_dependency(src) if self.grid_dependency else src, "kernel", options)


class CUDAProgram(Program):
  """One kernel of a loaded cubin. `launch` is the GPU renderer's LaunchDims (a 1-D grid, sized by the kernel's
  variable values) or, for the GEMMs, a dict of block, grid and dynamic shared-memory bytes."""
  def __init__(self, device: CUDABackend, name: str, binary: bytes, launch=None):
    self.device, self.name = device, name
    if launch is None: launch = {}
    # (buffer index, element offset, dims, byte strides, box) per TMA descriptor the kernel takes after its buffers
    self.tensor_maps = [tuple(tuple(x) if isinstance(x, list) else x for x in spec) for spec in launch.get("tensor_maps", ())] \
      if isinstance(launch, dict) else []
    self._encoded: dict[tuple, ctypes.Array] = {}
    if isinstance(launch, dict):
      self.block, self.grid, self.shared = launch.get("block", (1, 1, 1)), launch.get("grid", (1, 1, 1)), launch.get("shared", 0)
    else:
      self.block, self.shared = (launch.local, 1, 1), 0
      self.grid = lambda vals, dims=launch: (dims.sizes(vals)[0], 1, 1)
    device.activate()
    self.module = c_ptr()
    check(libcuda().cuModuleLoadData(ctypes.byref(self.module), binary), f"loading the cubin of {name}")
    self.function = c_ptr()
    check(libcuda().cuModuleGetFunction(ctypes.byref(self.function), self.module, name.encode()), f"finding kernel {name}")
    if self.shared > 48 * 1024:
      check(libcuda().cuFuncSetAttribute(self.function, FUNC_ATTR_MAX_DYNAMIC_SHARED_SIZE_BYTES, self.shared), f"{name}: shared memory")

  def launch_args(self, bufs, vals: tuple[int, ...]):
    """The argument block cuLaunchKernel reads (kept alive by the caller until the launch is enqueued): the buffers,
    the variables' values, then a TMA descriptor (CUtensorMap, by value) per entry of the launch's "tensor_maps"."""
    values = [c_u64(b) for b in bufs] + [ctypes.c_longlong(v) for v in vals] + [self.tensor_map(bufs, spec) for spec in self.tensor_maps]
    pointers = (c_ptr * max(len(values), 1))(*[ctypes.addressof(v) for v in values])
    return values, pointers

  def tensor_map(self, bufs, spec) -> ctypes.Array:
    """The descriptor of one operand for these buffers, encoded once per buffer address (~1 us on the host)."""
    index, offset, dims, strides, box = spec
    address = bufs[index] + 2 * offset
    key = (address, dims, strides, box)
    if key not in self._encoded:
      if len(self._encoded) > 64: self._encoded.clear()   # buffers come and go: keep the cache small
      self._encoded[key] = encode_tensor_map(address, dims, strides, box)
    return self._encoded[key]

  def node_params(self, bufs, vals: tuple[int, ...]):
    """This launch as a graph node's parameters, and what must stay alive until the driver has read them."""
    grid = self.grid(vals) if callable(self.grid) else self.grid
    values, pointers = self.launch_args(bufs, vals)
    params = KernelNodeParams(self.function, *grid, *self.block, self.shared, pointers, None, None, None)
    return params, (values, pointers)

  def __call__(self, *bufs, vals: tuple[int, ...] = (), wait: bool = False) -> float | None:
    self.device.activate()
    grid = self.grid(vals) if callable(self.grid) else self.grid
    values, pointers = self.launch_args(bufs, vals)
    stream = self.device.stream
    if wait:
      start, end = self.device.new_event(), self.device.new_event()
      check(libcuda().cuEventRecord(start, stream), "cuEventRecord")
    check(libcuda().cuLaunchKernel(self.function, *grid, *self.block, self.shared, stream, pointers, None), f"launching {self.name}")
    if not wait: return None
    check(libcuda().cuEventRecord(end, stream), "cuEventRecord")
    check(libcuda().cuEventSynchronize(end), f"running {self.name}")
    return self.device.elapsed(start, end)


class CUDAGraph:
  """Recorded launches replayed as one CUDA graph launch.

  The graph is built node by node (each kernel depends on the one before), so a replay whose launches differ only in
  their size arguments (a decode position, a cache length) sets those nodes' arguments and grids in place: one graph
  serves every value. Other buffers or other kernels re-record it."""
  def __init__(self, device: CUDABackend, exec_items: list):
    self.device = device
    self.exec = None
    self._record(exec_items)

  @staticmethod
  def _structure(exec_items) -> tuple:
    return tuple((id(ei.kernel), tuple(b.raw for b in ei.buffers)) for ei in exec_items)   # allocates every buffer

  def _record(self, exec_items) -> None:
    device, cuda = self.device, libcuda()
    device.activate()
    self.close()
    self.structure = self._structure(exec_items)
    self.programs = [ei.kernel.program for ei in exec_items]
    self.raws = [tuple(b.raw for b in ei.buffers) for ei in exec_items]
    self.values = [tuple(ei.var_values) for ei in exec_items]
    self.graph = c_ptr()
    check(cuda.cuGraphCreate(ctypes.byref(self.graph), 0), "cuGraphCreate")
    self.nodes: list[c_ptr] = []
    # every kernel of an sm_90 device opens with the grid-dependency wait (NVRTCCompiler), so consecutive kernels
    # may be chained programmatically: the next one's blocks launch while this one runs and wait in the kernel
    programmatic = device.compiler.grid_dependency and config.grid_dependency and hasattr(cuda, "cuGraphAddDependencies_v2")
    edge = GraphEdgeData(GRAPH_KERNEL_NODE_PORT_PROGRAMMATIC, 0, GRAPH_DEPENDENCY_TYPE_PROGRAMMATIC)
    for program, raws, vals in zip(self.programs, self.raws, self.values):
      params, _keep = program.node_params(raws, vals)
      node = c_ptr()
      deps = (c_ptr * 1)(self.nodes[-1]) if self.nodes and not programmatic else None
      check(cuda.cuGraphAddKernelNode_v2(ctypes.byref(node), self.graph, deps, 0 if deps is None else 1, ctypes.byref(params)),
            f"adding {program.name} to a graph")
      if programmatic and self.nodes:
        check(cuda.cuGraphAddDependencies_v2(self.graph, (c_ptr * 1)(self.nodes[-1]), (c_ptr * 1)(node), ctypes.byref(edge), 1),
              f"chaining {program.name} in a graph")
      self.nodes.append(node)
    self.exec = c_ptr()
    check(cuda.cuGraphInstantiateWithFlags(ctypes.byref(self.exec), self.graph, 0), "cuGraphInstantiate")

  def update(self, var_values: list[tuple[int, ...]]) -> None:
    """New size arguments per launch (in recording order): only the nodes whose values changed are touched."""
    cuda = libcuda()
    for i, vals in enumerate(var_values):
      if vals == self.values[i]: continue
      params, _keep = self.programs[i].node_params(self.raws[i], vals)
      check(cuda.cuGraphExecKernelNodeSetParams_v2(self.exec, self.nodes[i], ctypes.byref(params)), f"updating {self.programs[i].name}")
      self.values[i] = vals

  def __call__(self, exec_items=None) -> None:
    self.device.activate()
    if exec_items is not None:
      if self._structure(exec_items) != self.structure: self._record(exec_items)
      else: self.update([tuple(ei.var_values) for ei in exec_items])
    check(libcuda().cuGraphLaunch(self.exec, self.device.stream), "cuGraphLaunch")

  def close(self) -> None:
    if self.exec is not None:
      libcuda().cuGraphExecDestroy(self.exec)
      libcuda().cuGraphDestroy(self.graph)
      self.exec = None

  def __del__(self):
    try: self.close()
    except Exception: pass  # interpreter shutdown


class CUDABackend(Backend):
  _local = threading.local()

  def __init__(self, name: str):
    super().__init__(name)
    _, _, index = name.partition(":")
    self.index = int(index or 0)
    cuda = libcuda()
    check(cuda.cuInit(0), "cuInit")
    count = c_int()
    check(cuda.cuDeviceGetCount(ctypes.byref(count)), "cuDeviceGetCount")
    if self.index >= count.value:
      raise RuntimeError(f"CUDA device {self.index} ({name}) does not exist: this machine has {count.value} CUDA device(s)")
    self.handle = c_int()
    check(cuda.cuDeviceGet(ctypes.byref(self.handle), self.index), "cuDeviceGet")
    self.context = c_ptr()
    check(cuda.cuDevicePrimaryCtxRetain(ctypes.byref(self.context), self.handle), "cuDevicePrimaryCtxRetain")
    self.activate()
    self.compute_capability = (self.attribute(ATTR_COMPUTE_CAPABILITY_MAJOR), self.attribute(ATTR_COMPUTE_CAPABILITY_MINOR))
    self.arch = f"sm_{self.compute_capability[0]}{self.compute_capability[1]}"
    self.multiprocessors = self.attribute(ATTR_MULTIPROCESSOR_COUNT)
    self.max_shared = self.attribute(ATTR_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN)
    self.stream = c_ptr()
    check(cuda.cuStreamCreate(ctypes.byref(self.stream), CU_STREAM_NON_BLOCKING), "cuStreamCreate")
    self.allocator = CUDAAllocator(self)
    self.compiler = NVRTCCompiler(self.arch)
    self.renderer = CUDARenderer(self.arch)

  # ---- the device ----
  def activate(self) -> None:
    """Make this device's context current on the calling thread (the driver keeps one per thread)."""
    if getattr(CUDABackend._local, "context", None) != self.context.value:
      check(libcuda().cuCtxSetCurrent(self.context), "cuCtxSetCurrent")
      CUDABackend._local.context = self.context.value

  def attribute(self, attribute: int) -> int:
    value = c_int()
    check(libcuda().cuDeviceGetAttribute(ctypes.byref(value), attribute, self.handle), "cuDeviceGetAttribute")
    return value.value

  def name_string(self) -> str:
    buf = ctypes.create_string_buffer(256)
    check(libcuda().cuDeviceGetName(buf, 256, self.handle), "cuDeviceGetName")
    return buf.value.decode()

  def memory_info(self) -> tuple[int, int]:
    self.activate()
    free, total = c_size(), c_size()
    check(libcuda().cuMemGetInfo_v2(ctypes.byref(free), ctypes.byref(total)), "cuMemGetInfo")
    return free.value, total.value

  def synchronize(self) -> None:
    self.activate()
    check(libcuda().cuStreamSynchronize(self.stream), f"{self.name}: a kernel or copy")

  # ---- events ----
  def new_event(self, timing: bool = True):
    self.activate()
    event = c_ptr()
    check(libcuda().cuEventCreate(ctypes.byref(event), CU_EVENT_DEFAULT if timing else CU_EVENT_DISABLE_TIMING), "cuEventCreate")
    return _Event(event.value)

  def record(self, event) -> None: check(libcuda().cuEventRecord(event, self.stream), "cuEventRecord")

  def elapsed(self, start, end) -> float:
    """Seconds between two recorded events (waits for the second)."""
    check(libcuda().cuEventSynchronize(end), "cuEventSynchronize")
    ms = ctypes.c_float()
    check(libcuda().cuEventElapsedTime(ctypes.byref(ms), start, end), "cuEventElapsedTime")
    return ms.value / 1e3

  # ---- what the engine asks of a backend ----
  def program(self, name: str, binary: bytes, launch=None) -> CUDAProgram: return CUDAProgram(self, name, binary, launch)

  def gemm_kernel(self, root, target, is_boundary) -> GemmKernelSource | None:
    from teenygrad.renderer.cuda_gemm import cuda_gemm_kernel
    gemm = cuda_gemm_kernel(root, target, is_boundary, self.renderer, self.max_shared)
    return GemmKernelSource(*gemm) if gemm is not None else None

  def graph(self, exec_items: list) -> CUDAGraph: return CUDAGraph(self, exec_items)

  def transfer(self, dest: Buffer, src: Buffer) -> bool:
    """Device to device on this GPU, or a peer copy from another GPU, without a round trip through the host."""
    source = _open_backends.get(src.device)
    if not isinstance(source, CUDABackend): return False
    self.activate()
    # on one device the stream orders the copy after the kernels that wrote the source
    if source is self: check(libcuda().cuMemcpyDtoDAsync_v2(dest.raw, src.raw, src.nbytes, self.stream), "cuMemcpyDtoDAsync")
    else:
      source.synchronize()   # the copy runs on this device's stream: the source must be written first
      self.activate()
      self.enable_peer_access(source)
      check(libcuda().cuMemcpyPeerAsync(dest.raw, self.context, src.raw, source.context, src.nbytes, self.stream), "cuMemcpyPeerAsync")
      # the source's stream must not reuse the source block before this copy has read it
      done = self.new_event(timing=False)
      self.record(done)
      source.activate()
      check(libcuda().cuStreamWaitEvent(source.stream, done, 0), "cuStreamWaitEvent")
    return True

  def enable_peer_access(self, other: CUDABackend) -> None:
    """Direct access to the other GPU's memory where the hardware allows (otherwise the driver stages peer copies)."""
    can = c_int()
    check(libcuda().cuDeviceCanAccessPeer(ctypes.byref(can), self.handle, other.handle), "cuDeviceCanAccessPeer")
    if can.value:
      result = libcuda().cuCtxEnablePeerAccess(other.context, 0)
      if result not in (0, CUDA_ERROR_PEER_ACCESS_ALREADY_ENABLED): check(result, "cuCtxEnablePeerAccess")


class _Event(c_ptr):
  """A CUDA event handle destroyed with its Python object."""
  def __del__(self):
    try: libcuda().cuEventDestroy_v2(self)
    except Exception: pass  # interpreter shutdown


_open_backends: dict[str, CUDABackend] = {}


def open_device(name: str) -> CUDABackend:
  backend = CUDABackend(name)
  _open_backends[name] = backend
  return backend


__all__ = ["CUDABackend", "CUDAAllocator", "CUDAGraph", "CUDAOutOfMemoryError", "CUDAProgram", "CUDAError", "NVRTCCompiler",
           "open_device"]
