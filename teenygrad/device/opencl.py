"""The OpenCL backend: libOpenCL through ctypes, kernels in OpenCL C from renderer/opencl.py.

`OPENCL` is the first GPU device found, else the first device of any type (PoCL's CPU device in CI);
`OPENCL:n` is the n-th. Built program binaries are cached on disk like the CPU's shared libraries.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import functools
import time

from teenygrad.codegen.gemm_match import match_gemm
from teenygrad.device import Allocator, Backend, Compiler, GemmKernelSource, Program
from teenygrad.dtype import DType, dtypes
from teenygrad.renderer.gpu import LaunchDims
from teenygrad.renderer.opencl import OpenCLRenderer

CL_SUCCESS = 0
CL_DEVICE_TYPE_CPU, CL_DEVICE_TYPE_GPU, CL_DEVICE_TYPE_ALL = 1 << 1, 1 << 2, 0xFFFFFFFF
CL_DEVICE_TYPE = 0x1000
CL_DEVICE_NAME, CL_DEVICE_VERSION, CL_DRIVER_VERSION = 0x102B, 0x102F, 0x102D
CL_DEVICE_EXTENSIONS, CL_DEVICE_MAX_WORK_GROUP_SIZE, CL_DEVICE_LOCAL_MEM_SIZE = 0x1030, 0x1004, 0x1023
CL_DEVICE_GLOBAL_MEM_SIZE, CL_DEVICE_MAX_MEM_ALLOC_SIZE = 0x101F, 0x1010
CL_MEM_READ_WRITE = 1 << 0
CL_PROGRAM_BUILD_LOG, CL_PROGRAM_BINARY_SIZES, CL_PROGRAM_BINARIES = 0x1183, 0x1165, 0x1166
CL_PROFILING_COMMAND_START, CL_PROFILING_COMMAND_END = 0x1282, 0x1283
CL_QUEUE_PROFILING_ENABLE = 1 << 1
CL_BUILD_PROGRAM_FAILURE, CL_MEM_OBJECT_ALLOCATION_FAILURE, CL_OUT_OF_RESOURCES, CL_OUT_OF_HOST_MEMORY = -11, -4, -5, -6
CL_INVALID_BINARY, CL_DEVICE_NOT_FOUND, CL_PLATFORM_NOT_FOUND_KHR = -42, -1, -1001

ERROR_NAMES = {0: "CL_SUCCESS", -1: "CL_DEVICE_NOT_FOUND", -2: "CL_DEVICE_NOT_AVAILABLE", -3: "CL_COMPILER_NOT_AVAILABLE",
               -4: "CL_MEM_OBJECT_ALLOCATION_FAILURE", -5: "CL_OUT_OF_RESOURCES", -6: "CL_OUT_OF_HOST_MEMORY",
               -11: "CL_BUILD_PROGRAM_FAILURE", -30: "CL_INVALID_VALUE", -33: "CL_INVALID_DEVICE", -34: "CL_INVALID_CONTEXT",
               -36: "CL_INVALID_COMMAND_QUEUE", -38: "CL_INVALID_MEM_OBJECT", -42: "CL_INVALID_BINARY",
               -44: "CL_INVALID_PROGRAM", -45: "CL_INVALID_PROGRAM_EXECUTABLE", -46: "CL_INVALID_KERNEL_NAME",
               -48: "CL_INVALID_KERNEL", -49: "CL_INVALID_ARG_INDEX", -50: "CL_INVALID_ARG_VALUE", -51: "CL_INVALID_ARG_SIZE",
               -52: "CL_INVALID_KERNEL_ARGS", -54: "CL_INVALID_WORK_GROUP_SIZE", -55: "CL_INVALID_WORK_ITEM_SIZE",
               -61: "CL_INVALID_BUFFER_SIZE", -1001: "CL_PLATFORM_NOT_FOUND_KHR"}


class OpenCLError(RuntimeError):
  def __init__(self, what: str, code: int):
    super().__init__(f"{what} failed: {ERROR_NAMES.get(code, 'error')} ({code})")
    self.code = code


@functools.cache
def libopencl() -> ctypes.CDLL:
  path = ctypes.util.find_library("OpenCL") or "libOpenCL.so.1"
  try: lib = ctypes.CDLL(path)
  except OSError:
    raise RuntimeError("DEV=OPENCL needs libOpenCL and a driver: apt-get install ocl-icd-libopencl1 pocl-opencl-icd") from None
  vp, sz, u32, i32p = ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint32, ctypes.POINTER(ctypes.c_int32)
  signatures = {
    "clGetPlatformIDs": (ctypes.c_int32, [u32, vp, ctypes.POINTER(u32)]),
    "clGetDeviceIDs": (ctypes.c_int32, [vp, ctypes.c_uint64, u32, vp, ctypes.POINTER(u32)]),
    "clGetDeviceInfo": (ctypes.c_int32, [vp, u32, sz, vp, ctypes.POINTER(sz)]),
    "clCreateContext": (vp, [vp, u32, vp, vp, vp, i32p]),
    "clCreateCommandQueue": (vp, [vp, vp, ctypes.c_uint64, i32p]),
    "clCreateBuffer": (vp, [vp, ctypes.c_uint64, sz, vp, i32p]),
    "clReleaseMemObject": (ctypes.c_int32, [vp]),
    "clEnqueueWriteBuffer": (ctypes.c_int32, [vp, vp, u32, sz, sz, vp, u32, vp, vp]),
    "clEnqueueReadBuffer": (ctypes.c_int32, [vp, vp, u32, sz, sz, vp, u32, vp, vp]),
    "clCreateProgramWithSource": (vp, [vp, u32, ctypes.POINTER(ctypes.c_char_p), ctypes.POINTER(sz), i32p]),
    "clCreateProgramWithBinary": (vp, [vp, u32, vp, ctypes.POINTER(sz), ctypes.POINTER(ctypes.c_char_p), i32p, i32p]),
    "clBuildProgram": (ctypes.c_int32, [vp, u32, vp, ctypes.c_char_p, vp, vp]),
    "clGetProgramBuildInfo": (ctypes.c_int32, [vp, vp, u32, sz, vp, ctypes.POINTER(sz)]),
    "clGetProgramInfo": (ctypes.c_int32, [vp, u32, sz, vp, ctypes.POINTER(sz)]),
    "clReleaseProgram": (ctypes.c_int32, [vp]),
    "clCreateKernel": (vp, [vp, ctypes.c_char_p, i32p]),
    "clReleaseKernel": (ctypes.c_int32, [vp]),
    "clSetKernelArg": (ctypes.c_int32, [vp, u32, sz, vp]),
    "clEnqueueNDRangeKernel": (ctypes.c_int32, [vp, vp, u32, vp, ctypes.POINTER(sz), ctypes.POINTER(sz), u32, vp, vp]),
    "clGetEventProfilingInfo": (ctypes.c_int32, [vp, u32, sz, vp, ctypes.POINTER(sz)]),
    "clReleaseEvent": (ctypes.c_int32, [vp]),
    "clFinish": (ctypes.c_int32, [vp]),
  }
  for name, (restype, argtypes) in signatures.items():
    fn = getattr(lib, name)
    fn.restype, fn.argtypes = restype, argtypes
  return lib


def check(code: int, what: str) -> None:
  if code == CL_SUCCESS: return
  if code in (CL_MEM_OBJECT_ALLOCATION_FAILURE, CL_OUT_OF_HOST_MEMORY):
    raise MemoryError(f"OpenCL {what}: out of device memory ({ERROR_NAMES[code]})")
  raise OpenCLError(what, code)


def _call_create(fn, *args):
  """Call a clCreate* function, which reports its error through the last argument."""
  err = ctypes.c_int32(0)
  handle = fn(*args, ctypes.byref(err))
  check(err.value, fn.__name__)
  return handle


def _device_info(device, param: int, kind: str):
  lib = libopencl()
  if kind == "str":
    size = ctypes.c_size_t(0)
    check(lib.clGetDeviceInfo(device, param, 0, None, ctypes.byref(size)), "clGetDeviceInfo")
    buf = ctypes.create_string_buffer(size.value)
    check(lib.clGetDeviceInfo(device, param, size.value, buf, None), "clGetDeviceInfo")
    return buf.value.decode(errors="replace")
  value = ctypes.c_uint64(0) if kind == "u64" else ctypes.c_size_t(0)
  check(lib.clGetDeviceInfo(device, param, ctypes.sizeof(value), ctypes.byref(value), None), "clGetDeviceInfo")
  return value.value


def find_devices() -> list[int]:
  """GPU devices of every platform first, then every other device."""
  lib = libopencl()
  count = ctypes.c_uint32(0)
  code = lib.clGetPlatformIDs(0, None, ctypes.byref(count))
  if code == CL_PLATFORM_NOT_FOUND_KHR or count.value == 0:
    raise RuntimeError("no OpenCL platform found: install a driver (CI uses PoCL: apt-get install pocl-opencl-icd)")
  check(code, "clGetPlatformIDs")
  platforms = (ctypes.c_void_p * count.value)()
  check(lib.clGetPlatformIDs(count.value, platforms, None), "clGetPlatformIDs")
  found: dict[int, list[int]] = {CL_DEVICE_TYPE_GPU: [], CL_DEVICE_TYPE_ALL: []}
  for platform in platforms:
    for kind in found:
      n = ctypes.c_uint32(0)
      if lib.clGetDeviceIDs(platform, kind, 0, None, ctypes.byref(n)) != CL_SUCCESS or n.value == 0: continue
      ids = (ctypes.c_void_p * n.value)()
      check(lib.clGetDeviceIDs(platform, kind, n.value, ids, None), "clGetDeviceIDs")
      found[kind] += [d for d in ids if d not in found[CL_DEVICE_TYPE_GPU] or kind == CL_DEVICE_TYPE_GPU]
  devices = found[CL_DEVICE_TYPE_GPU] + [d for d in found[CL_DEVICE_TYPE_ALL] if d not in found[CL_DEVICE_TYPE_GPU]]
  if not devices: raise RuntimeError("no OpenCL device found on any platform")
  return devices


class CLAllocator(Allocator):
  def __init__(self, backend: OpenCLBackend): self.backend = backend

  def _alloc(self, nbytes: int) -> ctypes.c_void_p:
    lib, limit = libopencl(), self.backend.max_alloc
    if nbytes > limit:
      raise MemoryError(f"OpenCL: a {nbytes}-byte buffer is larger than {self.backend.device_name}'s {limit}-byte allocation limit")
    return ctypes.c_void_p(_call_create(lib.clCreateBuffer, self.backend.context, CL_MEM_READ_WRITE, nbytes, None))

  def free(self, raw, nbytes: int) -> None: libopencl().clReleaseMemObject(raw)

  def copyin(self, raw, src: memoryview) -> None:
    host = (ctypes.c_char * len(src)).from_buffer(src) if not src.readonly else ctypes.create_string_buffer(bytes(src), len(src))
    check(libopencl().clEnqueueWriteBuffer(self.backend.queue, raw, 1, 0, len(src), host, 0, None, None), "clEnqueueWriteBuffer")

  def copyout(self, dest: memoryview, raw) -> None:
    host = (ctypes.c_char * len(dest)).from_buffer(dest)
    check(libopencl().clEnqueueReadBuffer(self.backend.queue, raw, 1, 0, len(dest), host, 0, None, None), "clEnqueueReadBuffer")


class CLCompiler(Compiler):
  """OpenCL C to the driver's program binary (CL_PROGRAM_BINARIES)."""
  options = b"-cl-std=CL1.2"

  def __init__(self, backend: OpenCLBackend):
    self.backend = backend
    self.cache_tag = f"opencl\0{backend.device_name}\0{backend.driver_version}\0{self.options.decode()}"

  def build(self, program) -> None:
    lib = libopencl()
    code = lib.clBuildProgram(program, 1, ctypes.byref(self.backend.device), self.options, None, None)
    if code != CL_SUCCESS:
      log = self.build_log(program)
      lib.clReleaseProgram(program)
      if code == CL_BUILD_PROGRAM_FAILURE: raise RuntimeError(f"OpenCL build failed on {self.backend.device_name}:\n{log}")
      check(code, "clBuildProgram")

  def build_log(self, program) -> str:
    lib, size = libopencl(), ctypes.c_size_t(0)
    lib.clGetProgramBuildInfo(program, self.backend.device, CL_PROGRAM_BUILD_LOG, 0, None, ctypes.byref(size))
    buf = ctypes.create_string_buffer(size.value + 1)
    lib.clGetProgramBuildInfo(program, self.backend.device, CL_PROGRAM_BUILD_LOG, size.value, buf, None)
    return buf.value.decode(errors="replace")

  def compile(self, src: str) -> bytes:
    lib = libopencl()
    source = ctypes.c_char_p(src.encode())
    program = _call_create(lib.clCreateProgramWithSource, self.backend.context, 1, ctypes.byref(source), None)
    try: self.build(program)
    except RuntimeError as e: raise RuntimeError(f"{e}\n--- source ---\n{src}") from None
    size = ctypes.c_size_t(0)
    check(lib.clGetProgramInfo(program, CL_PROGRAM_BINARY_SIZES, ctypes.sizeof(size), ctypes.byref(size), None), "clGetProgramInfo")
    binary = ctypes.create_string_buffer(size.value)
    pointers = (ctypes.c_char_p * 1)(ctypes.cast(binary, ctypes.c_char_p))
    check(lib.clGetProgramInfo(program, CL_PROGRAM_BINARIES, ctypes.sizeof(pointers), pointers, None), "clGetProgramInfo")
    lib.clReleaseProgram(program)
    return binary.raw


class CLProgram(Program):
  def __init__(self, backend: OpenCLBackend, name: str, binary: bytes, launch: LaunchDims):
    lib = libopencl()
    self.backend, self.name, self.launch = backend, name, launch
    size, data, status = ctypes.c_size_t(len(binary)), ctypes.c_char_p(binary), ctypes.c_int32(0)
    self.program = _call_create(lib.clCreateProgramWithBinary, backend.context, 1, ctypes.byref(backend.device),
                                ctypes.byref(size), ctypes.byref(data), ctypes.byref(status))
    check(status.value, f"loading the binary of {name}")
    backend.compiler.build(self.program)
    self.kernel = _call_create(lib.clCreateKernel, self.program, name.encode())

  def __call__(self, *bufs, vals: tuple[int, ...] = (), wait: bool = False) -> float | None:
    lib = libopencl()
    for i, buf in enumerate(bufs):
      check(lib.clSetKernelArg(self.kernel, i, ctypes.sizeof(ctypes.c_void_p), ctypes.byref(buf)), "clSetKernelArg")
    for i, value in enumerate(vals, start=len(bufs)):
      arg = ctypes.c_int64(value)
      check(lib.clSetKernelArg(self.kernel, i, 8, ctypes.byref(arg)), "clSetKernelArg")
    groups, local = self.launch.sizes(vals)
    global_size, local_size = (ctypes.c_size_t * 1)(groups * local), (ctypes.c_size_t * 1)(local)
    event = ctypes.c_void_p() if wait else None
    start = time.perf_counter()
    check(lib.clEnqueueNDRangeKernel(self.backend.queue, self.kernel, 1, None, global_size, local_size, 0, None,
                                     ctypes.byref(event) if wait else None), f"launching {self.name}")
    if not wait: return None
    check(lib.clFinish(self.backend.queue), "clFinish")
    elapsed = time.perf_counter() - start
    begin, end = ctypes.c_uint64(0), ctypes.c_uint64(0)
    if (lib.clGetEventProfilingInfo(event, CL_PROFILING_COMMAND_START, 8, ctypes.byref(begin), None) == CL_SUCCESS and
        lib.clGetEventProfilingInfo(event, CL_PROFILING_COMMAND_END, 8, ctypes.byref(end), None) == CL_SUCCESS and end.value > begin.value):
      elapsed = (end.value - begin.value) * 1e-9
    lib.clReleaseEvent(event)
    return elapsed

  def __del__(self):
    try:
      libopencl().clReleaseKernel(self.kernel)
      libopencl().clReleaseProgram(self.program)
    except Exception: pass  # interpreter shutdown


class OpenCLBackend(Backend):
  def __init__(self, name: str):
    super().__init__(name)
    _, _, index = name.partition(":")
    devices = find_devices()
    ordinal = int(index or 0)
    if ordinal >= len(devices): raise RuntimeError(f"{name}: only {len(devices)} OpenCL device(s) found")
    self.device = ctypes.c_void_p(devices[ordinal])
    lib = libopencl()
    self.device_name = _device_info(self.device, CL_DEVICE_NAME, "str")
    self.driver_version = _device_info(self.device, CL_DRIVER_VERSION, "str")
    self.extensions = set(_device_info(self.device, CL_DEVICE_EXTENSIONS, "str").split())
    self.max_work_group = _device_info(self.device, CL_DEVICE_MAX_WORK_GROUP_SIZE, "size")
    self.local_memory = _device_info(self.device, CL_DEVICE_LOCAL_MEM_SIZE, "u64")
    self.global_memory = _device_info(self.device, CL_DEVICE_GLOBAL_MEM_SIZE, "u64")
    self.max_alloc = _device_info(self.device, CL_DEVICE_MAX_MEM_ALLOC_SIZE, "u64")
    self.context = ctypes.c_void_p(_call_create(lib.clCreateContext, None, 1, ctypes.byref(self.device), None, None))
    self.queue = ctypes.c_void_p(_call_create(lib.clCreateCommandQueue, self.context, self.device, CL_QUEUE_PROFILING_ENABLE))
    self.allocator = CLAllocator(self)
    self.compiler = CLCompiler(self)
    self.is_cpu = bool(_device_info(self.device, CL_DEVICE_TYPE, "u64") & CL_DEVICE_TYPE_CPU)
    # a CPU driver (PoCL) runs a work-group's lanes as a loop split at every barrier: sharing a row between lanes
    # costs more than it saves (a 576x576 matvec ran 7x slower), so only whole-kernel reductions use a group there
    limits = {"group_max_outputs": 0} if self.is_cpu else {}
    self.renderer = OpenCLRenderer(fp64="cl_khr_fp64" in self.extensions, subgroups="cl_khr_subgroups" in self.extensions,
                                   device_name=self.device_name, max_local=self.max_work_group, local_memory=self.local_memory,
                                   **limits)

  def supports(self, dtype: DType) -> bool: return dtype != dtypes.float64 or self.renderer.fp64

  def program(self, name: str, binary: bytes, launch: LaunchDims | None = None) -> CLProgram:
    if launch is None: raise ValueError(f"OpenCL kernel {name} needs its launch dimensions")
    return CLProgram(self, name, binary, launch)

  def synchronize(self) -> None: check(libopencl().clFinish(self.queue), "clFinish")

  def gemm_kernel(self, root, target, is_boundary) -> GemmKernelSource | None:
    """float32 matmuls that fill the tiles use the shared-memory tiled kernel of renderer/gpu.py."""
    match = match_gemm(root, target, is_boundary, self.renderer)
    gemm = self.renderer.render_gemm(match) if match is not None and root.dtype == dtypes.float32 else None
    return GemmKernelSource(*gemm) if gemm is not None else None


def open_device(name: str) -> OpenCLBackend: return OpenCLBackend(name)
