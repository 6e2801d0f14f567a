"""The Vulkan backend: SPIR-V from teenygrad's own emitter, run through libvulkan with ctypes.

Kernels are recorded into a command buffer (device/vulkan_commands.py) and submitted when the host needs a result,
so a graph of small kernels costs one submit; a JIT replay is one command buffer recorded once and resubmitted
(device/vulkan_graph.py). Buffers live in device-local memory; where that memory is not host-visible (discrete
GPUs) copies go through a staging buffer. Compiled pipelines are kept in a VkPipelineCache saved under the compile
cache directory.
"""
from __future__ import annotations

import atexit
import ctypes
import os
import shutil
import struct
import subprocess
import tempfile
import threading
import time

import numpy as np

from teenygrad.device import Allocator, Backend, Buffer, Compiler, Program
from teenygrad.device import vulkan_bindings as vk
from teenygrad.device.vulkan_bindings import VulkanError, check
from teenygrad.device.vulkan_commands import Commands, align
from teenygrad.device.vulkan_graph import VulkanGraph
from teenygrad.dtype import DType, dtypes
from teenygrad.helpers import config
from teenygrad.renderer.spirv import SPIRV_TAG, SpirvRenderer, parse_kernel

class SpirvCompiler(Compiler):
  """The renderer already wrote the binary; compiling is checking it (spirv-val when TEENYGRAD_SPIRV_VAL=1)."""
  def __init__(self):
    self.validate = config.spirv_validate
    self.cache_tag = f"{SPIRV_TAG}\0validated={self.validate}"

  def compile(self, src: str) -> bytes:
    if self.validate:
      _, module = parse_kernel(src)
      validate_spirv(module)
    return src.encode()


def validate_spirv(module: bytes) -> None:
  """Run spirv-val (Vulkan 1.1 rules); a module it rejects raises with the validator's message."""
  tool = shutil.which("spirv-val")
  if tool is None: raise RuntimeError("TEENYGRAD_SPIRV_VAL=1 needs spirv-val: apt-get install spirv-tools")
  with tempfile.NamedTemporaryFile(suffix=".spv") as f:
    f.write(module); f.flush()
    result = subprocess.run([tool, "--target-env", "vulkan1.1", f.name], capture_output=True, text=True)
    dis = shutil.which("spirv-dis")
    listing = subprocess.run([dis, f.name], capture_output=True, text=True).stdout if dis and result.returncode != 0 else ""
  if result.returncode != 0:
    raise RuntimeError(f"spirv-val rejected a module:\n{result.stdout}{result.stderr}{listing[:20000]}")


class VulkanBuffer:
  __slots__ = ("buffer", "memory", "size", "mapped", "sets")

  def __init__(self, buffer, memory, size: int, mapped):
    self.buffer, self.memory, self.size, self.mapped = buffer, memory, size, mapped
    self.sets: list[tuple] = []   # keys of the cached descriptor sets that point at this buffer


def _address(view: memoryview) -> int:
  """The address of a (possibly read-only, e.g. memory-mapped) host buffer."""
  return np.frombuffer(view, dtype=np.uint8).ctypes.data


UPDATE_BYTES = 65536   # vkCmdUpdateBuffer's limit: uploads up to this size are recorded, not waited for


class VulkanAllocator(Allocator):
  """Device buffers. Freed ones are kept by size for reuse (up to CACHE_BYTES in all): vkAllocateMemory is slow on
  GPU drivers, and a decode step frees and allocates the same sizes every call. Reuse needs no wait: every use of
  a buffer is ordered on the one queue (barriers between dispatches; host copies synchronize first). Host copies
  go through one staging buffer kept for copies up to STAGING_BYTES; small uploads are recorded with the other work,
  and `copyout` waits for the work queued before it itself (`copyout_waits`: Buffer.numpy need not synchronize first)."""
  copyout_waits = True
  CACHE_BYTES = 1 << 30
  STAGING_BYTES = 16 << 20

  def __init__(self, dev: VulkanDevice):
    self.dev = dev
    self.cache: dict[tuple[int, bool], list[VulkanBuffer]] = {}   # (bytes, host-mapped) -> kept buffers
    self.cached_bytes = 0
    self.staging: VulkanBuffer | None = None

  def _alloc(self, nbytes: int) -> VulkanBuffer:
    key = (max(4, (nbytes + 3) // 4 * 4), self.dev.direct_access)
    with self.dev.lock:
      kept = self.cache.get(key)
      if kept:
        self.cached_bytes -= key[0]
        return kept.pop()
      try: return self.dev.create_buffer(nbytes, staging=False)
      except MemoryError:
        self.empty_cache()   # the kept buffers may be what is missing
        return self.dev.create_buffer(nbytes, staging=False)

  def free(self, raw: VulkanBuffer, nbytes: int) -> None:
    with self.dev.lock:
      if raw.size > self.CACHE_BYTES // 4: self.dev.release(raw); return
      self.cache.setdefault((raw.size, raw.mapped is not None), []).append(raw)
      self.cached_bytes += raw.size
      while self.cached_bytes > self.CACHE_BYTES:   # drop the largest kept sizes first
        key = max(self.cache)
        self.dev.release(self.cache[key].pop())
        self.cached_bytes -= key[0]
        if not self.cache[key]: del self.cache[key]

  def empty_cache(self) -> None:
    with self.dev.lock:
      for kept in self.cache.values():
        for raw in kept: self.dev.release(raw)
      self.cache, self.cached_bytes = {}, 0
      self.dev.synchronize()   # releases wait for recorded work: let them happen now

  def _staging(self, nbytes: int) -> tuple[VulkanBuffer, bool]:
    """A host-visible buffer of at least nbytes, and whether it is a temporary to destroy after use."""
    if nbytes > self.STAGING_BYTES: return self.dev.create_buffer(nbytes, staging=True), True
    if self.staging is None or self.staging.size < nbytes:
      if self.staging is not None: self.dev.release(self.staging)
      self.staging = self.dev.create_buffer(max(nbytes, 1 << 16), staging=True)
    return self.staging, False

  def copyin(self, raw: VulkanBuffer, src: memoryview) -> None:
    with self.dev.lock:
      if len(src) <= UPDATE_BYTES:
        # small (a decode step's token and position): the bytes go into the command stream, ordered after the
        # work queued before: no submit, no wait, no staging copy
        self.dev.commands.update(raw, bytes(src) + bytes(-len(src) % 4))
        return
      self.dev.synchronize()   # a pending kernel may still read the old contents
      if raw.mapped is not None:
        ctypes.memmove(raw.mapped, _address(src), len(src)); return
      staging, temporary = self._staging(len(src))
      ctypes.memmove(staging.mapped, _address(src), len(src))
      self.dev.copy_buffer(staging, raw, len(src))
      if temporary: self.dev.destroy(staging)

  def copyout(self, dest: memoryview, raw: VulkanBuffer) -> None:
    with self.dev.lock:
      if raw.mapped is not None:
        self.dev.synchronize()
        ctypes.memmove((ctypes.c_char * len(dest)).from_buffer(dest), raw.mapped, len(dest)); return
      staging, temporary = self._staging(len(dest))
      self.dev.copy_buffer(raw, staging, len(dest))   # queued after the work that writes raw: one submit waited for
      ctypes.memmove((ctypes.c_char * len(dest)).from_buffer(dest), staging.mapped, len(dest))
      if temporary: self.dev.destroy(staging)


class VulkanProgram(Program):
  def __init__(self, dev: VulkanDevice, name: str, binary: bytes):
    self.dev, self.name = dev, name
    self.meta, module = parse_kernel(binary.decode())
    self.bindings: list[int] = self.meta["bindings"]
    # symbolic sizes are read from a small buffer: eager launches use the program's own (`args`, rewritten before
    # each dispatch), a graph a slot of its argument buffer (args_stride apart: descriptor offsets must be aligned)
    kinds = self.meta["variables"]
    self.args_format = "<" + "".join("q" if k == "i64" else "i" for k in kinds)
    self.args_bytes = struct.calcsize(self.args_format) if kinds else 0
    self.args_stride = align(self.args_bytes, dev.storage_alignment)
    self.args = dev.create_buffer(self.args_bytes, staging=False) if kinds else None
    self.set_layout, self.layout, self.pipeline = dev.create_pipeline(module, self.meta)

  def __call__(self, *bufs: VulkanBuffer, vals: tuple[int, ...] = (), wait: bool = False) -> float | None:
    dev = self.dev
    with dev.lock:
      dev.commands.dispatch(self, bufs, vals)
      if not wait: return None
      start = time.perf_counter()
      dev.synchronize()
      return time.perf_counter() - start


class VulkanDevice(Backend):
  """One physical device, one compute queue."""
  def __init__(self, name: str):
    super().__init__(name)
    self.lib = vk.load_library()
    self.lock = threading.RLock()
    index = int(name.partition(":")[2] or 0)
    self._create_instance()
    self._pick_physical_device(index)
    self._create_device()
    self._choose_memory()
    self.commands = Commands(self)
    self._open_pipeline_cache()
    self.allocator = VulkanAllocator(self)
    self.compiler = SpirvCompiler()
    self.renderer = SpirvRenderer(max_binding_range=self.max_storage_range, subgroups=self.subgroup_arithmetic,
                                  float64=self.features["float64"], device_name=self.device_name,
                                  max_buffers=min(self.max_storage_buffers, 4096) - 8,   # headroom for chunked big buffers
                                  narrow_storage=self.features["storage8"] and self.features["storage16"], int64=self.features["int64"],
                                  max_group=self.max_invocations)
    atexit.register(self.save_pipeline_cache)

  # ---- setup ----
  def _fn(self, name: str, restype=ctypes.c_int32):
    fn = getattr(self.lib, name)   # ctypes caches the function object: its restype is set once
    if fn.restype is not restype: fn.restype = restype
    return fn

  def _create_instance(self) -> None:
    app = vk.ApplicationInfo(vk.ST_APPLICATION_INFO, None, b"teenygrad", 1, b"teenygrad", 1, (1 << 22) | (2 << 12))
    info = vk.InstanceCreateInfo(vk.ST_INSTANCE_CREATE_INFO, None, 0, ctypes.pointer(app), 0, None, 0, None)
    self.instance = ctypes.c_void_p()
    result = self._fn("vkCreateInstance")(ctypes.byref(info), None, ctypes.byref(self.instance))
    if result != 0:
      raise VulkanError(f"vkCreateInstance failed ({vk.RESULTS.get(result, result)}): no Vulkan 1.2 driver found; "
                        "install one (apt-get install mesa-vulkan-drivers for lavapipe)")

  def _pick_physical_device(self, index: int) -> None:
    count = ctypes.c_uint32()
    self._fn("vkEnumeratePhysicalDevices")(self.instance, ctypes.byref(count), None)
    if count.value == 0: raise VulkanError("Vulkan found no physical device (is a driver such as mesa-vulkan-drivers installed?)")
    handles = (ctypes.c_void_p * count.value)()
    check(self._fn("vkEnumeratePhysicalDevices")(self.instance, ctypes.byref(count), handles), "vkEnumeratePhysicalDevices")
    if index >= count.value: raise VulkanError(f"VULKAN:{index} requested but only {count.value} Vulkan device(s) exist")
    # GPUs first (discrete, integrated, virtual), CPU implementations such as lavapipe last: VULKAN is the best one
    all_props = []
    for handle in handles:
      props = (ctypes.c_uint8 * vk.PROPS_SIZE)()
      self._fn("vkGetPhysicalDeviceProperties", None)(ctypes.c_void_p(handle), props)
      all_props.append((handle, bytes(props)))
    rank = {vk.DEVICE_TYPE_DISCRETE: 0, vk.DEVICE_TYPE_INTEGRATED: 1, vk.DEVICE_TYPE_VIRTUAL: 2, vk.DEVICE_TYPE_CPU: 4}
    all_props.sort(key=lambda hp: rank.get(int.from_bytes(hp[1][vk.PROPS_TYPE:vk.PROPS_TYPE + 4], "little"), 3))
    handle, raw = all_props[index]
    self.physical = ctypes.c_void_p(handle)
    api_version = int.from_bytes(raw[0:4], "little")
    self.device_name = raw[vk.PROPS_NAME:vk.PROPS_NAME + 256].split(b"\0")[0].decode()
    self.is_cpu = int.from_bytes(raw[vk.PROPS_TYPE:vk.PROPS_TYPE + 4], "little") == vk.DEVICE_TYPE_CPU
    if api_version < ((1 << 22) | (2 << 12)):
      major, minor = api_version >> 22, (api_version >> 12) & 0x3FF
      raise VulkanError(f"{self.device_name} supports Vulkan {major}.{minor}; teenygrad needs 1.2")
    self.max_storage_range = int.from_bytes(raw[vk.PROPS_MAX_STORAGE_RANGE:vk.PROPS_MAX_STORAGE_RANGE + 4], "little")
    self.min_storage_alignment = int.from_bytes(raw[vk.PROPS_MIN_SB_ALIGN:vk.PROPS_MIN_SB_ALIGN + 8], "little")
    self.storage_alignment = max(16, self.min_storage_alignment)   # offsets of the size-argument slots
    self.max_invocations = int.from_bytes(raw[vk.PROPS_MAX_INVOCATIONS:vk.PROPS_MAX_INVOCATIONS + 4], "little")
    self.max_storage_buffers = int.from_bytes(raw[vk.PROPS_MAX_STAGE_STORAGE_BUFFERS:vk.PROPS_MAX_STAGE_STORAGE_BUFFERS + 4], "little")
    # subgroup support (VkPhysicalDeviceVulkan11Properties through vkGetPhysicalDeviceProperties2)
    v11 = (ctypes.c_uint8 * 112)()
    ctypes.cast(v11, ctypes.POINTER(ctypes.c_uint32))[0] = vk.ST_VULKAN_1_1_PROPERTIES
    props2 = (ctypes.c_uint8 * (16 + vk.PROPS_SIZE))()
    ctypes.cast(props2, ctypes.POINTER(ctypes.c_uint32))[0] = vk.ST_PROPERTIES_2
    ctypes.cast(ctypes.addressof(props2) + 8, ctypes.POINTER(ctypes.c_void_p))[0] = ctypes.addressof(v11)
    self._fn("vkGetPhysicalDeviceProperties2", None)(self.physical, props2)
    v11_raw = bytes(v11)
    stages = int.from_bytes(v11_raw[vk.V11_PROPS_SUBGROUP_STAGES:vk.V11_PROPS_SUBGROUP_STAGES + 4], "little")
    ops = int.from_bytes(v11_raw[vk.V11_PROPS_SUBGROUP_OPS:vk.V11_PROPS_SUBGROUP_OPS + 4], "little")
    self.subgroup_size = int.from_bytes(v11_raw[vk.V11_PROPS_SUBGROUP_SIZE:vk.V11_PROPS_SUBGROUP_SIZE + 4], "little")
    self.subgroup_arithmetic = bool(stages & vk.SHADER_STAGE_COMPUTE) and bool(ops & vk.SUBGROUP_ARITHMETIC)

  def _query_features(self):
    """(features2, v11, v12) buffers, chained, filled by the driver."""
    v12 = (ctypes.c_uint8 * 208)()
    v11 = (ctypes.c_uint8 * 64)()
    features2 = (ctypes.c_uint8 * (16 + vk.FEATURES_SIZE + 4))()
    for buf, stype, nxt in ((v12, vk.ST_VULKAN_1_2_FEATURES, None), (v11, vk.ST_VULKAN_1_1_FEATURES, v12),
                            (features2, vk.ST_FEATURES_2, v11)):
      ctypes.cast(buf, ctypes.POINTER(ctypes.c_uint32))[0] = stype
      ctypes.cast(ctypes.addressof(buf) + 8, ctypes.POINTER(ctypes.c_void_p))[0] = ctypes.addressof(nxt) if nxt is not None else None
    self._fn("vkGetPhysicalDeviceFeatures2", None)(self.physical, features2)
    return features2, v11, v12

  def _create_device(self) -> None:
    features2, v11, v12 = self._query_features()
    def flag(buf, offset: int) -> bool: return bool(int.from_bytes(bytes(buf[offset:offset + 4]), "little"))
    base = 16
    self.features = {"float64": flag(features2, base + vk.FEATURES_FLOAT64), "int64": flag(features2, base + vk.FEATURES_INT64),
                     "int16": flag(features2, base + vk.FEATURES_INT16), "storage16": flag(v11, vk.V11_STORAGE_16BIT),
                     "storage8": flag(v12, vk.V12_STORAGE_8BIT), "float16": flag(v12, vk.V12_FLOAT16), "int8": flag(v12, vk.V12_INT8)}
    # enable exactly what the shaders may use: keep the queried flags for those, clear everything else
    keep_base = {vk.FEATURES_FLOAT64, vk.FEATURES_INT64, vk.FEATURES_INT16}
    for offset in range(0, vk.FEATURES_SIZE, 4):
      if offset not in keep_base: ctypes.memset(ctypes.addressof(features2) + base + offset, 0, 4)
    for buf, size, keep in ((v11, 64, {vk.V11_STORAGE_16BIT}), (v12, 208, {vk.V12_STORAGE_8BIT, vk.V12_FLOAT16, vk.V12_INT8})):
      for offset in range(16, size, 4):
        if offset not in keep: ctypes.memset(ctypes.addressof(buf) + offset, 0, 4)
    count = ctypes.c_uint32()
    get_families = self._fn("vkGetPhysicalDeviceQueueFamilyProperties", None)
    get_families(self.physical, ctypes.byref(count), None)
    families = (vk.QueueFamilyProperties * count.value)()
    get_families(self.physical, ctypes.byref(count), families)
    compute = [i for i, f in enumerate(families) if f.queueFlags & vk.QUEUE_COMPUTE]
    if not compute: raise VulkanError(f"{self.device_name} has no compute queue")
    self.queue_family = compute[0]
    priority = ctypes.c_float(1.0)
    queue_info = vk.DeviceQueueCreateInfo(vk.ST_DEVICE_QUEUE_CREATE_INFO, None, 0, self.queue_family, 1, ctypes.pointer(priority))
    info = vk.DeviceCreateInfo(vk.ST_DEVICE_CREATE_INFO, ctypes.addressof(features2), 0, 1, ctypes.pointer(queue_info), 0, None, 0, None, None)
    self.device = ctypes.c_void_p()
    check(self._fn("vkCreateDevice")(self.physical, ctypes.byref(info), None, ctypes.byref(self.device)), "vkCreateDevice")
    self.queue = ctypes.c_void_p()
    self._fn("vkGetDeviceQueue", None)(self.device, self.queue_family, 0, ctypes.byref(self.queue))

  def _choose_memory(self) -> None:
    props = vk.MemoryProperties()
    self._fn("vkGetPhysicalDeviceMemoryProperties", None)(self.physical, ctypes.byref(props))
    types = [props.memoryTypes[i].propertyFlags for i in range(props.memoryTypeCount)]
    host = vk.MEMORY_HOST_VISIBLE | vk.MEMORY_HOST_COHERENT
    cached = host | vk.MEMORY_HOST_CACHED
    # staging prefers cached host memory: reading results back from uncached memory crawls
    staging = [i for i, f in enumerate(types) if f & cached == cached] or [i for i, f in enumerate(types) if f & host == host]
    self.staging_memory_type = staging[0]
    local = [i for i, f in enumerate(types) if f & vk.MEMORY_DEVICE_LOCAL]
    # device-local memory the CPU reads through its caches (lavapipe, integrated GPUs) needs no staging copies;
    # a discrete GPU's BAR window is host-visible too, but uncached, so it goes through staging buffers
    direct = [i for i in local if types[i] & cached == cached]
    self.buffer_memory_type = (direct or local or [self.staging_memory_type])[0]
    self.direct_access = bool(direct)

  # ---- pipeline cache ----
  def _pipeline_cache_path(self):
    safe = "".join(c if c.isalnum() else "_" for c in self.device_name)
    return config.cache_dir / "vulkan" / f"pipelines_{safe}.bin"

  def _open_pipeline_cache(self) -> None:
    path = self._pipeline_cache_path()
    data = path.read_bytes() if path.exists() else b""
    buf = ctypes.create_string_buffer(data, len(data)) if data else None
    info = vk.PipelineCacheCreateInfo(vk.ST_PIPELINE_CACHE_CREATE_INFO, None, 0, len(data), ctypes.cast(buf, ctypes.c_void_p) if buf else None)
    self.pipeline_cache = ctypes.c_void_p()
    # a cache from another driver version is ignored by the driver; a corrupt one we drop and start empty
    if self._fn("vkCreatePipelineCache")(self.device, ctypes.byref(info), None, ctypes.byref(self.pipeline_cache)) != 0:
      info.initialDataSize, info.pInitialData = 0, None
      check(self._fn("vkCreatePipelineCache")(self.device, ctypes.byref(info), None, ctypes.byref(self.pipeline_cache)), "vkCreatePipelineCache")

  def save_pipeline_cache(self) -> None:
    try:
      size = ctypes.c_size_t()
      get = self._fn("vkGetPipelineCacheData")
      if get(self.device, self.pipeline_cache, ctypes.byref(size), None) != 0 or size.value == 0: return
      data = ctypes.create_string_buffer(size.value)
      if get(self.device, self.pipeline_cache, ctypes.byref(size), data) != 0: return
      path = self._pipeline_cache_path()
      path.parent.mkdir(parents=True, exist_ok=True)
      fd, tmp = tempfile.mkstemp(dir=path.parent)
      with os.fdopen(fd, "wb") as f:
        f.write(data.raw[:size.value]); f.flush(); os.fsync(f.fileno())
      os.replace(tmp, path)
    except OSError: pass   # a read-only cache directory only costs compile time

  # ---- memory ----
  def create_buffer(self, nbytes: int, staging: bool) -> VulkanBuffer:
    memory_type = self.staging_memory_type if staging else self.buffer_memory_type
    nbytes = max(4, (nbytes + 3) // 4 * 4)   # whole words: narrow types may be packed in them
    info = vk.BufferCreateInfo(vk.ST_BUFFER_CREATE_INFO, None, 0, nbytes, vk.BUFFER_USAGE, 0, 0, None)
    buffer = ctypes.c_void_p()
    check(self._fn("vkCreateBuffer")(self.device, ctypes.byref(info), None, ctypes.byref(buffer)), "vkCreateBuffer")
    req = vk.MemoryRequirements()
    self._fn("vkGetBufferMemoryRequirements", None)(self.device, buffer, ctypes.byref(req))
    alloc = vk.MemoryAllocateInfo(vk.ST_MEMORY_ALLOCATE_INFO, None, req.size, memory_type)
    memory = ctypes.c_void_p()
    result = self._fn("vkAllocateMemory")(self.device, ctypes.byref(alloc), None, ctypes.byref(memory))
    if result != 0:
      self._fn("vkDestroyBuffer", None)(self.device, buffer, None)
      raise MemoryError(f"Vulkan could not allocate {nbytes} bytes on {self.device_name} ({vk.RESULTS.get(result, result)})")
    check(self._fn("vkBindBufferMemory")(self.device, buffer, memory, ctypes.c_uint64(0)), "vkBindBufferMemory")
    mapped = None
    if staging or self.direct_access:
      pointer = ctypes.c_void_p()
      check(self._fn("vkMapMemory")(self.device, memory, ctypes.c_uint64(0), ctypes.c_uint64(req.size), 0, ctypes.byref(pointer)), "vkMapMemory")
      mapped = pointer.value
    return VulkanBuffer(buffer, memory, nbytes, mapped)

  def destroy(self, raw: VulkanBuffer) -> None:
    if raw.sets: self.commands.forget_sets(raw)
    self._fn("vkDestroyBuffer", None)(self.device, raw.buffer, None)
    self._fn("vkFreeMemory", None)(self.device, raw.memory, None)

  def release(self, raw: VulkanBuffer) -> None:
    """Free now, or after the recorded work that may still use it."""
    with self.lock:
      if self.commands.busy: self.commands.pending_frees.append(raw)
      else: self.destroy(raw)

  # ---- pipelines and descriptors ----
  def create_pipeline(self, module: bytes, meta: dict):
    bindings = meta["bindings"]
    has_sizes = bool(meta["variables"])
    if sum(bindings) + has_sizes > self.max_storage_buffers:
      raise VulkanError(f"kernel {meta['name']} reads {len(bindings)} buffers ({sum(bindings) + has_sizes} storage-buffer descriptors); "
                        f"{self.device_name} allows {self.max_storage_buffers} per shader: realize some inputs first")
    # the data buffers, then (for a kernel with symbolic sizes) the buffer its sizes are read from
    counts = bindings + [1] * has_sizes
    layout_bindings = [vk.DescriptorSetLayoutBinding(i, vk.DESCRIPTOR_STORAGE_BUFFER, n, vk.SHADER_STAGE_COMPUTE, None) for i, n in enumerate(counts)]
    binding_array = (vk.DescriptorSetLayoutBinding * len(layout_bindings))(*layout_bindings)
    info = vk.DescriptorSetLayoutCreateInfo(vk.ST_DESCRIPTOR_SET_LAYOUT_CREATE_INFO, None, 0, len(layout_bindings), binding_array)
    set_layout = ctypes.c_void_p()
    check(self._fn("vkCreateDescriptorSetLayout")(self.device, ctypes.byref(info), None, ctypes.byref(set_layout)), "vkCreateDescriptorSetLayout")
    layouts = (ctypes.c_void_p * 1)(set_layout.value)
    layout_info = vk.PipelineLayoutCreateInfo(vk.ST_PIPELINE_LAYOUT_CREATE_INFO, None, 0, 1, layouts, 0, None)
    layout = ctypes.c_void_p()
    check(self._fn("vkCreatePipelineLayout")(self.device, ctypes.byref(layout_info), None, ctypes.byref(layout)), "vkCreatePipelineLayout")
    code = ctypes.create_string_buffer(module, len(module))
    shader_info = vk.ShaderModuleCreateInfo(vk.ST_SHADER_MODULE_CREATE_INFO, None, 0, len(module), ctypes.cast(code, ctypes.c_void_p))
    shader = ctypes.c_void_p()
    check(self._fn("vkCreateShaderModule")(self.device, ctypes.byref(shader_info), None, ctypes.byref(shader)), "vkCreateShaderModule")
    entry = meta["name"].encode()
    stage = vk.PipelineShaderStageCreateInfo(vk.ST_PIPELINE_SHADER_STAGE_CREATE_INFO, None, 0, vk.SHADER_STAGE_COMPUTE, shader, entry, None)
    pipeline_info = vk.ComputePipelineCreateInfo(vk.ST_COMPUTE_PIPELINE_CREATE_INFO, None, 0, stage, layout, None, -1)
    pipeline = ctypes.c_void_p()
    result = self._fn("vkCreateComputePipelines")(self.device, self.pipeline_cache, 1, ctypes.byref(pipeline_info), None, ctypes.byref(pipeline))
    self._fn("vkDestroyShaderModule", None)(self.device, shader, None)
    check(result, f"vkCreateComputePipelines for {meta['name']}")
    return set_layout, layout, pipeline

  # ---- copies and submitting ----
  def copy_buffer(self, src: VulkanBuffer, dst: VulkanBuffer, nbytes: int) -> None:
    """A copy the host waits for (staging uploads and read-backs)."""
    with self.lock:
      self.commands.copy(src, dst, nbytes)
      self.commands.synchronize()

  def synchronize(self) -> None:
    with self.lock: self.commands.synchronize()

  def transfer(self, dest: Buffer, src: Buffer) -> bool:
    """Device to device on this GPU, recorded with the other work (a JIT graph's inputs and outputs)."""
    if src.device != self.name or dest.device != self.name: return False
    nbytes = min(src.nbytes, dest.nbytes)
    if nbytes:
      with self.lock: self.commands.copy(src.raw, dest.raw, nbytes)
    return True

  def graph(self, exec_items: list) -> VulkanGraph: return VulkanGraph(self, exec_items)

  def program(self, name: str, binary: bytes) -> VulkanProgram: return VulkanProgram(self, name, binary)

  def supports(self, dtype: DType) -> bool:
    return (dtype != dtypes.float64 or self.features["float64"]) and (dtype != dtypes.int64 or self.features["int64"])


def open_device(name: str) -> VulkanDevice: return VulkanDevice(name)
