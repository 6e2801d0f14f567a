"""ctypes prototypes for the two NVIDIA libraries the CUDA backend drives: the driver (libcuda) and the run-time
compiler (libnvrtc). Nothing here loads a library at import: `import teenygrad.device.cuda` works on a machine with
no GPU, and only opening the device (or compiling a kernel) looks for the libraries, failing with a clear error.

NVRTC must not be newer than the driver: a newer NVRTC emits PTX/cubin versions an older driver rejects. It comes
from the `nvidia-cuda-nvrtc` wheel (the `cuda` extra pins it to the CUDA 13.0 of the GPU machine) or from a
CUDA toolkit's lib64; TEENYGRAD_NVRTC may name the library file directly.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import functools
import glob
import os
import sys
from pathlib import Path

c_ptr = ctypes.c_void_p
c_int = ctypes.c_int
c_uint = ctypes.c_uint
c_size = ctypes.c_size_t
c_u64 = ctypes.c_uint64
c_char_p = ctypes.c_char_p
POINTER = ctypes.POINTER

# driver API error codes the backend treats specially
CUDA_SUCCESS = 0
CUDA_ERROR_OUT_OF_MEMORY = 2
CUDA_ERROR_NOT_READY = 600
CUDA_ERROR_PEER_ACCESS_ALREADY_ENABLED = 704

# device attributes (cuDeviceGetAttribute)
ATTR_MAX_THREADS_PER_BLOCK = 1
ATTR_MAX_SHARED_MEMORY_PER_BLOCK = 8
ATTR_MULTIPROCESSOR_COUNT = 16
ATTR_COMPUTE_CAPABILITY_MAJOR = 75
ATTR_COMPUTE_CAPABILITY_MINOR = 76
ATTR_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN = 97
# function attribute (cuFuncSetAttribute)
FUNC_ATTR_MAX_DYNAMIC_SHARED_SIZE_BYTES = 8

CU_MEMHOSTALLOC_PORTABLE = 1
CU_STREAM_NON_BLOCKING = 1
CU_EVENT_DEFAULT = 0
CU_EVENT_DISABLE_TIMING = 2
CU_STREAM_CAPTURE_MODE_THREAD_LOCAL = 1

# (name, restype, argtypes); every driver entry point returns a CUresult (int)
_DRIVER_PROTOTYPES = {
  "cuInit": [c_uint],
  "cuDriverGetVersion": [POINTER(c_int)],
  "cuDeviceGetCount": [POINTER(c_int)],
  "cuDeviceGet": [POINTER(c_int), c_int],
  "cuDeviceGetName": [c_char_p, c_int, c_int],
  "cuDeviceGetAttribute": [POINTER(c_int), c_int, c_int],
  "cuDeviceCanAccessPeer": [POINTER(c_int), c_int, c_int],
  "cuDevicePrimaryCtxRetain": [POINTER(c_ptr), c_int],
  "cuCtxSetCurrent": [c_ptr],
  "cuCtxEnablePeerAccess": [c_ptr, c_uint],
  "cuCtxSynchronize": [],
  "cuGetErrorString": [c_int, POINTER(c_char_p)],
  "cuMemAlloc_v2": [POINTER(c_u64), c_size],
  "cuMemFree_v2": [c_u64],
  "cuMemGetInfo_v2": [POINTER(c_size), POINTER(c_size)],
  "cuMemHostAlloc": [POINTER(c_ptr), c_size, c_uint],
  "cuMemFreeHost": [c_ptr],
  "cuMemcpyHtoDAsync_v2": [c_u64, c_ptr, c_size, c_ptr],
  "cuMemcpyDtoHAsync_v2": [c_ptr, c_u64, c_size, c_ptr],
  "cuMemcpyDtoDAsync_v2": [c_u64, c_u64, c_size, c_ptr],
  "cuMemcpyPeerAsync": [c_u64, c_ptr, c_u64, c_ptr, c_size, c_ptr],
  "cuMemsetD8Async": [c_u64, ctypes.c_ubyte, c_size, c_ptr],
  "cuModuleLoadData": [POINTER(c_ptr), c_ptr],
  "cuModuleUnload": [c_ptr],
  "cuModuleGetFunction": [POINTER(c_ptr), c_ptr, c_char_p],
  "cuFuncSetAttribute": [c_ptr, c_int, c_int],
  "cuLaunchKernel": [c_ptr, c_uint, c_uint, c_uint, c_uint, c_uint, c_uint, c_uint, c_ptr, POINTER(c_ptr), POINTER(c_ptr)],
  "cuStreamCreate": [POINTER(c_ptr), c_uint],
  "cuStreamSynchronize": [c_ptr],
  "cuStreamWaitEvent": [c_ptr, c_ptr, c_uint],
  "cuEventCreate": [POINTER(c_ptr), c_uint],
  "cuEventRecord": [c_ptr, c_ptr],
  "cuEventQuery": [c_ptr],
  "cuEventSynchronize": [c_ptr],
  "cuEventElapsedTime": [POINTER(ctypes.c_float), c_ptr, c_ptr],
  "cuEventDestroy_v2": [c_ptr],
  "cuStreamBeginCapture_v2": [c_ptr, c_int],
  "cuStreamEndCapture": [c_ptr, POINTER(c_ptr)],
  "cuGraphCreate": [POINTER(c_ptr), c_uint],
  "cuGraphAddKernelNode_v2": [POINTER(c_ptr), c_ptr, POINTER(c_ptr), c_size, c_ptr],
  "cuGraphAddDependencies_v2": [c_ptr, POINTER(c_ptr), POINTER(c_ptr), c_ptr, c_size],
  "cuGraphExecKernelNodeSetParams_v2": [c_ptr, c_ptr, c_ptr],
  "cuGraphInstantiateWithFlags": [POINTER(c_ptr), c_ptr, ctypes.c_ulonglong],
  "cuGraphLaunch": [c_ptr, c_ptr],
  "cuGraphExecDestroy": [c_ptr],
  "cuGraphDestroy": [c_ptr],
  # (map, data type, rank, global address, dims, strides past the first, box, element strides, interleave, swizzle,
  #  L2 promotion, out-of-bounds fill): a TMA descriptor, encoded on the host (CUDA 12.0)
  "cuTensorMapEncodeTiled": [c_ptr, c_int, c_uint, c_u64, POINTER(c_u64), POINTER(c_u64), POINTER(c_uint), POINTER(c_uint),
                             c_int, c_int, c_int, c_int],
}

TENSOR_MAP_UINT16, TENSOR_MAP_SWIZZLE_128B, TENSOR_MAP_L2_PROMOTION_256B = 1, 3, 3


def encode_tensor_map(address: int, dims: tuple[int, ...], strides: tuple[int, ...], box: tuple[int, ...]) -> ctypes.Array:
  """The 128-byte CUtensorMap of a 16-bit tensor at `address` (dims innermost first, strides in bytes of the dims past
  the first), loaded box by box into shared memory in the 128-byte swizzled layout."""
  tensor_map = (ctypes.c_ubyte * 128)()
  rank = len(dims)
  result = libcuda().cuTensorMapEncodeTiled(
    ctypes.addressof(tensor_map), TENSOR_MAP_UINT16, rank, address, (c_u64 * rank)(*dims), (c_u64 * max(rank - 1, 1))(*strides),
    (c_uint * rank)(*box), (c_uint * rank)(*([1] * rank)), 0, TENSOR_MAP_SWIZZLE_128B, TENSOR_MAP_L2_PROMOTION_256B, 0)
  if result != 0: raise CUDAError(f"cuTensorMapEncodeTiled failed ({result}): dims {dims}, strides {strides}, box {box}", result)
  return tensor_map

_NVRTC_PROTOTYPES = {
  "nvrtcVersion": [POINTER(c_int), POINTER(c_int)],
  "nvrtcGetErrorString": [c_int],
  "nvrtcCreateProgram": [POINTER(c_ptr), c_char_p, c_char_p, c_int, POINTER(c_char_p), POINTER(c_char_p)],
  "nvrtcDestroyProgram": [POINTER(c_ptr)],
  "nvrtcCompileProgram": [c_ptr, c_int, POINTER(c_char_p)],
  "nvrtcGetProgramLogSize": [c_ptr, POINTER(c_size)],
  "nvrtcGetProgramLog": [c_ptr, c_char_p],
  "nvrtcGetCUBINSize": [c_ptr, POINTER(c_size)],
  "nvrtcGetCUBIN": [c_ptr, c_char_p],
  "nvrtcGetPTXSize": [c_ptr, POINTER(c_size)],
  "nvrtcGetPTX": [c_ptr, c_char_p],
}


class KernelNodeParams(ctypes.Structure):
  """CUDA_KERNEL_NODE_PARAMS_v2 (cuda.h): one kernel launch as a graph node; kern and ctx stay NULL (func, current context)."""
  _fields_ = [("func", c_ptr), ("gridDimX", c_uint), ("gridDimY", c_uint), ("gridDimZ", c_uint),
              ("blockDimX", c_uint), ("blockDimY", c_uint), ("blockDimZ", c_uint), ("sharedMemBytes", c_uint),
              ("kernelParams", POINTER(c_ptr)), ("extra", POINTER(c_ptr)), ("kern", c_ptr), ("ctx", c_ptr)]


class GraphEdgeData(ctypes.Structure):
  """CUgraphEdgeData (cuda.h, CUDA 12.3): how a graph edge orders its two nodes."""
  _fields_ = [("from_port", ctypes.c_ubyte), ("to_port", ctypes.c_ubyte), ("type", ctypes.c_ubyte), ("reserved", ctypes.c_ubyte * 5)]


GRAPH_KERNEL_NODE_PORT_PROGRAMMATIC = 1   # the edge opens once every block of the upstream kernel has triggered or exited
GRAPH_DEPENDENCY_TYPE_PROGRAMMATIC = 1    # ... and the downstream kernel waits for the upstream's memory itself


class CUDAError(RuntimeError):
  """A driver call failed; `code` is the CUresult."""
  def __init__(self, message: str, code: int):
    super().__init__(message)
    self.code = code


def _bind(lib, prototypes: dict, restype) -> None:
  for name, argtypes in prototypes.items():
    fn = getattr(lib, name, None)
    if fn is None: continue  # an older library: the backend checks for what it needs before using it
    fn.argtypes, fn.restype = argtypes, restype
  if "nvrtcGetErrorString" in prototypes and hasattr(lib, "nvrtcGetErrorString"): lib.nvrtcGetErrorString.restype = c_char_p


@functools.cache
def libcuda() -> ctypes.CDLL:
  """The driver library, with prototypes set. RuntimeError (naming libcuda) when there is no NVIDIA driver."""
  candidates = [os.environ.get("TEENYGRAD_LIBCUDA"), "libcuda.so.1", "libcuda.so", ctypes.util.find_library("cuda")]
  errors = []
  for name in filter(None, candidates):
    try: lib = ctypes.CDLL(name)
    except OSError as e: errors.append(str(e)); continue
    _bind(lib, _DRIVER_PROTOTYPES, c_int)
    return lib
  raise RuntimeError("the CUDA backend needs the NVIDIA driver, but libcuda was not found (" + "; ".join(errors) +
                     "). Install the driver or pick another device with DEV=CPU.")


def check(result: int, what: str) -> None:
  if result == CUDA_SUCCESS: return
  message = c_char_p()
  libcuda().cuGetErrorString(result, ctypes.byref(message))
  text = message.value.decode() if message.value else "unknown error"
  raise CUDAError(f"{what} failed: CUDA error {result} ({text})", result)


def nvrtc_search_paths() -> list[str]:
  """Where libnvrtc may live: an explicit path, the pip wheels (cu13 first), CUDA toolkits, the loader's path."""
  paths = [os.environ.get("TEENYGRAD_NVRTC", "")]
  for site in sys.path:
    for sub in ("nvidia/cu13/lib", "nvidia/cuda_nvrtc/lib"):
      paths += sorted(glob.glob(os.path.join(site, sub, "libnvrtc.so*")), key=len)
  for root in [os.environ.get("CUDA_HOME", ""), os.environ.get("CUDA_PATH", ""), "/usr/local/cuda", *sorted(glob.glob("/usr/local/cuda-*"))]:
    if root: paths += sorted(glob.glob(os.path.join(root, "lib64", "libnvrtc.so*")), key=len)
  paths += ["libnvrtc.so.13", "libnvrtc.so", ctypes.util.find_library("nvrtc") or ""]
  return [p for p in dict.fromkeys(paths) if p and "alt" not in Path(p).name]


@functools.cache
def libnvrtc() -> ctypes.CDLL:
  """The run-time compiler. Its builtins library sits next to it and is loaded first so dlopen finds it."""
  errors = []
  for path in nvrtc_search_paths():
    try:
      if os.path.isabs(path):
        for builtins in sorted(glob.glob(os.path.join(os.path.dirname(path), "libnvrtc-builtins.so*")), key=len):
          if "alt" not in Path(builtins).name:
            ctypes.CDLL(builtins, mode=ctypes.RTLD_GLOBAL); break
      lib = ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)
    except OSError as e: errors.append(str(e)); continue
    _bind(lib, _NVRTC_PROTOTYPES, c_int)
    return lib
  raise RuntimeError("compiling CUDA kernels needs NVRTC, but libnvrtc was not found: pip install 'teenygrad[cuda]' "
                     "(nvidia-cuda-nvrtc matching the driver's CUDA version) or set TEENYGRAD_NVRTC to libnvrtc.so. "
                     f"Tried: {'; '.join(errors[:4])}")


def nvrtc_version() -> tuple[int, int]:
  major, minor = c_int(), c_int()
  libnvrtc().nvrtcVersion(ctypes.byref(major), ctypes.byref(minor))
  return major.value, minor.value


def nvrtc_compile(src: str, name: str, options: list[str], output: str = "CUBIN") -> bytes:
  """CUDA C source to a cubin (or, with output="PTX" and a compute_XY architecture, its PTX text, which tests read).
  A compile error raises RuntimeError with NVRTC's log and the numbered source."""
  lib = libnvrtc()
  prog = c_ptr()
  result = lib.nvrtcCreateProgram(ctypes.byref(prog), src.encode(), f"{name}.cu".encode(), 0, None, None)
  if result != 0: raise RuntimeError(f"nvrtcCreateProgram failed: {lib.nvrtcGetErrorString(result).decode()}")
  try:
    opts = (c_char_p * len(options))(*[o.encode() for o in options])
    result = lib.nvrtcCompileProgram(prog, len(options), opts)
    size = c_size()
    lib.nvrtcGetProgramLogSize(prog, ctypes.byref(size))
    log = ctypes.create_string_buffer(size.value)
    lib.nvrtcGetProgramLog(prog, log)
    if result != 0:
      numbered = "\n".join(f"{i + 1:4d} {line}" for i, line in enumerate(src.splitlines()))
      raise RuntimeError(f"NVRTC could not compile {name} ({lib.nvrtcGetErrorString(result).decode()}):\n"
                         f"{log.value.decode(errors='replace')}\n--- source ---\n{numbered}")
    getattr(lib, f"nvrtcGet{output}Size")(prog, ctypes.byref(size))
    binary = ctypes.create_string_buffer(size.value)
    getattr(lib, f"nvrtcGet{output}")(prog, binary)
    return binary.raw
  finally:
    lib.nvrtcDestroyProgram(ctypes.byref(prog))
