"""Recording and submitting Vulkan work: descriptor sets, the size arguments of dispatches, command buffers, the queue.

Eager launches are recorded into an open command buffer (a barrier before each one) that is submitted when the host
needs a result. A kernel's symbolic sizes are read from a small storage buffer, not push constants, so that a
recorded graph can take new values: an eager dispatch writes them into the program's own buffer with
vkCmdUpdateBuffer just before it runs. Descriptor sets are cached per (kernel, buffers), so a launch on buffers seen
before (a replay that is not a graph, the same weights) writes no descriptors. A `VulkanGraph`
(device/vulkan_graph.py) is a command buffer recorded once and queued here between eager ones; everything queued
goes out in one vkQueueSubmit.
"""
from __future__ import annotations

import ctypes
import struct
import time

from teenygrad.device import vulkan_bindings as vk
from teenygrad.device.vulkan_bindings import VulkanError, check

BATCH_DISPATCHES = 512    # submit after this many recorded eager dispatches even if nobody waits
SETS_PER_POOL = 1024

# one global barrier orders everything recorded before it against everything after (compute and copies)
_STAGES = vk.PIPELINE_STAGE_COMPUTE | vk.PIPELINE_STAGE_TRANSFER
_BARRIER = vk.MemoryBarrier(vk.ST_MEMORY_BARRIER, None, vk.ACCESS_SHADER_WRITE | vk.ACCESS_TRANSFER_WRITE,
                            vk.ACCESS_SHADER_READ | vk.ACCESS_SHADER_WRITE | vk.ACCESS_TRANSFER_READ | vk.ACCESS_TRANSFER_WRITE)


def align(n: int, to: int) -> int: return -(-n // to) * to


SPIN_SECONDS = 0.05   # how long a GPU's fence is polled before the wait blocks in the driver


class Commands:
  """The command recording of one VulkanDevice (its lock held by every caller that records or submits)."""
  def __init__(self, dev):
    self.dev = dev
    fn = dev._fn
    # hot entry points looked up once: per call, a ctypes attribute lookup and restype assignment add up
    self.cmd_barrier_fn = fn("vkCmdPipelineBarrier", None)
    self.cmd_bind_pipeline = fn("vkCmdBindPipeline", None)
    self.cmd_bind_sets = fn("vkCmdBindDescriptorSets", None)
    self.cmd_dispatch = fn("vkCmdDispatch", None)
    self.cmd_update_buffer = fn("vkCmdUpdateBuffer", None)
    self.cmd_copy_buffer = fn("vkCmdCopyBuffer", None)
    info = vk.CommandPoolCreateInfo(vk.ST_COMMAND_POOL_CREATE_INFO, None, vk.COMMAND_POOL_RESET_BUFFER, dev.queue_family)
    self.command_pool = ctypes.c_void_p()
    check(fn("vkCreateCommandPool")(dev.device, ctypes.byref(info), None, ctypes.byref(self.command_pool)), "vkCreateCommandPool")
    fence_info = vk.FenceCreateInfo(vk.ST_FENCE_CREATE_INFO, None, 0)
    self.fence = ctypes.c_void_p()
    check(fn("vkCreateFence")(dev.device, ctypes.byref(fence_info), None, ctypes.byref(self.fence)), "vkCreateFence")
    self.current = None                 # the open eager command buffer
    self.bound_pipeline = None          # what `current` has bound last
    self.spare: list = []               # eager command buffers ready for reuse
    self.queued: list = []              # ended command buffers waiting for the next submit, in order
    self.queued_graphs: list = []       # the graphs among them (kept alive until their work is done)
    self.recorded = 0                   # eager dispatches since the last submit
    self.pending_frees: list = []
    # cached descriptor sets: (set layout, buffer ids) -> (pool, set, buffers); each buffer lists its keys, so
    # destroying it frees its sets (a Vulkan handle, and a Python id, may be reused by the next buffer)
    self.set_cache: dict[tuple, tuple] = {}
    self.set_pools: list = []

  @property
  def busy(self) -> bool: return self.current is not None or bool(self.queued)

  # ---- descriptor sets ----
  def new_pool(self, sets: int, descriptors: int, free: bool):
    sizes = vk.DescriptorPoolSize(vk.DESCRIPTOR_STORAGE_BUFFER, max(descriptors, 1))
    info = vk.DescriptorPoolCreateInfo(vk.ST_DESCRIPTOR_POOL_CREATE_INFO, None, vk.DESCRIPTOR_POOL_FREE_SET if free else 0,
                                       sets, 1, ctypes.pointer(sizes))
    pool = ctypes.c_void_p()
    check(self.dev._fn("vkCreateDescriptorPool")(self.dev.device, ctypes.byref(info), None, ctypes.byref(pool)), "vkCreateDescriptorPool")
    return pool

  def allocate_set(self, pool, set_layout) -> tuple[int, ctypes.c_void_p]:
    """A descriptor set from pool: (VkResult, set); a full or fragmented pool gives its error code."""
    descriptor_set = ctypes.c_void_p()
    layouts = (ctypes.c_void_p * 1)(set_layout.value)
    info = vk.DescriptorSetAllocateInfo(vk.ST_DESCRIPTOR_SET_ALLOCATE_INFO, None, pool, 1, layouts)
    return self.dev._fn("vkAllocateDescriptorSets")(self.dev.device, ctypes.byref(info), ctypes.byref(descriptor_set)), descriptor_set

  def write_set(self, descriptor_set, program, bufs, args_buffer=None, args_offset: int = 0) -> None:
    """Point the set at bufs and, for a kernel with sizes, at its size arguments (args_buffer at args_offset)."""
    infos, writes = [], []
    chunk_bytes = program.meta["chunk_bytes"]
    for binding, (buf, count) in enumerate(zip(bufs, program.bindings)):
      if count == 1: chunk_infos = [vk.DescriptorBufferInfo(buf.buffer, 0, buf.size)]
      else:
        # a buffer bigger than one binding's range: consecutive views; the last ones may be empty past the end
        # (views past the end, where a symbolic size is bound smaller than its maximum, are never read: any valid one will do)
        chunk_infos = [vk.DescriptorBufferInfo(buf.buffer, i * chunk_bytes, min(chunk_bytes, buf.size - i * chunk_bytes))
                       if i * chunk_bytes < buf.size else vk.DescriptorBufferInfo(buf.buffer, 0, min(chunk_bytes, buf.size))
                       for i in range(count)]
      infos.append((vk.DescriptorBufferInfo * count)(*chunk_infos))
      writes.append(vk.WriteDescriptorSet(vk.ST_WRITE_DESCRIPTOR_SET, None, descriptor_set, binding, 0, count,
                                          vk.DESCRIPTOR_STORAGE_BUFFER, None, infos[-1], None))
    if program.args_bytes:
      infos.append((vk.DescriptorBufferInfo * 1)(vk.DescriptorBufferInfo(args_buffer.buffer, args_offset, program.args_bytes)))
      writes.append(vk.WriteDescriptorSet(vk.ST_WRITE_DESCRIPTOR_SET, None, descriptor_set, len(program.bindings), 0, 1,
                                          vk.DESCRIPTOR_STORAGE_BUFFER, None, infos[-1], None))
    write_array = (vk.WriteDescriptorSet * len(writes))(*writes)
    self.dev._fn("vkUpdateDescriptorSets", None)(self.dev.device, len(writes), write_array, 0, None)

  def cached_set(self, program, bufs) -> ctypes.c_void_p:
    key = (program.set_layout.value, *map(id, bufs))
    found = self.set_cache.get(key)
    if found is not None: return found[1]
    # the newest pool first, then older ones (sets freed with their buffers leave room there), then a new pool
    for pool in reversed(self.set_pools):
      result, descriptor_set = self.allocate_set(pool, program.set_layout)
      if result == 0: break
      if result not in (vk.ERROR_OUT_OF_POOL_MEMORY, vk.ERROR_FRAGMENTED_POOL): check(result, "vkAllocateDescriptorSets")
    else:
      descriptors = sum(program.bindings) + (program.args_bytes > 0)
      pool = self.new_pool(SETS_PER_POOL, max(SETS_PER_POOL * 16, descriptors), free=True)
      self.set_pools.append(pool)
      result, descriptor_set = self.allocate_set(pool, program.set_layout)
      check(result, "vkAllocateDescriptorSets")
    self.write_set(descriptor_set, program, bufs, program.args)
    self.set_cache[key] = (pool, descriptor_set, bufs)
    for buf in bufs: buf.sets.append(key)
    return descriptor_set

  def forget_sets(self, buf) -> None:
    """buf is being destroyed: free the cached sets that point at it (nothing recorded uses them any more)."""
    free = self.dev._fn("vkFreeDescriptorSets")
    for key in buf.sets:
      entry = self.set_cache.pop(key, None)
      if entry is not None: free(self.dev.device, entry[0], 1, ctypes.byref(entry[1]))
    buf.sets.clear()

  # ---- recording ----
  def allocate_command_buffer(self) -> ctypes.c_void_p:
    alloc = vk.CommandBufferAllocateInfo(vk.ST_COMMAND_BUFFER_ALLOCATE_INFO, None, self.command_pool, 0, 1)
    command_buffer = ctypes.c_void_p()
    check(self.dev._fn("vkAllocateCommandBuffers")(self.dev.device, ctypes.byref(alloc), ctypes.byref(command_buffer)), "vkAllocateCommandBuffers")
    return command_buffer

  def free_command_buffer(self, command_buffer) -> None:
    self.dev._fn("vkFreeCommandBuffers", None)(self.dev.device, self.command_pool, 1, ctypes.byref(command_buffer))

  def begin(self, command_buffer, one_time: bool) -> None:
    begin = vk.CommandBufferBeginInfo(vk.ST_COMMAND_BUFFER_BEGIN_INFO, None, vk.COMMAND_BUFFER_ONE_TIME if one_time else 0, None)
    check(self.dev._fn("vkBeginCommandBuffer")(command_buffer, ctypes.byref(begin)), "vkBeginCommandBuffer")

  def barrier(self, command_buffer) -> None:
    self.cmd_barrier_fn(command_buffer, _STAGES, _STAGES, 0, 1, ctypes.byref(_BARRIER), 0, None, 0, None)

  def open(self):
    """The eager command buffer, begun if it wasn't."""
    if self.current is None:
      self.current = self.spare.pop() if self.spare else self.allocate_command_buffer()
      self.begin(self.current, one_time=True)
      self.bound_pipeline = None
    return self.current

  def close_eager(self) -> None:
    if self.current is None: return
    check(self.dev._fn("vkEndCommandBuffer")(self.current), "vkEndCommandBuffer")
    self.queued.append(self.current)
    self.current = None

  def dispatch(self, program, bufs, vals: tuple[int, ...]) -> None:
    """Record one eager dispatch: a barrier after everything before it, then (for a kernel with sizes) the sizes
    written into the program's argument buffer and a second barrier, then the dispatch."""
    cb = self.open()
    descriptor_set = self.cached_set(program, bufs)
    self.barrier(cb)   # also keeps the write below from overtaking an earlier dispatch of this program
    if program.args_bytes:
      data = struct.pack(program.args_format, *vals)
      self.cmd_update_buffer(cb, program.args.buffer, ctypes.c_uint64(0), ctypes.c_uint64(len(data)), data)
      self.barrier(cb)
    if self.bound_pipeline is not program.pipeline:
      self.cmd_bind_pipeline(cb, vk.PIPELINE_BIND_POINT_COMPUTE, program.pipeline)
      self.bound_pipeline = program.pipeline
    self.cmd_bind_sets(cb, vk.PIPELINE_BIND_POINT_COMPUTE, program.layout, 0, 1, ctypes.byref(descriptor_set), 0, None)
    self.cmd_dispatch(cb, program.meta["groups"], 1, 1)
    self.recorded += 1
    if self.recorded >= BATCH_DISPATCHES: self.synchronize()

  def copy(self, src, dst, nbytes: int) -> None:
    """A buffer-to-buffer copy, ordered after everything recorded before it (later work barriers itself)."""
    cb = self.open()
    self.barrier(cb)
    region = vk.BufferCopy(0, 0, nbytes)
    self.cmd_copy_buffer(cb, src.buffer, dst.buffer, 1, ctypes.byref(region))

  def update(self, dst, data: bytes) -> None:
    """Write data (a multiple of 4 bytes, at most 64 KiB) to the start of dst, ordered after everything recorded before
    it: the bytes travel inside the command buffer (vkCmdUpdateBuffer), so the host neither waits nor stages."""
    cb = self.open()
    self.barrier(cb)
    self.cmd_update_buffer(cb, dst.buffer, ctypes.c_uint64(0), ctypes.c_uint64(len(data)), data)
    self.recorded += 1   # many uploads with no read-back (loading small tensors) still go out in batches
    if self.recorded >= BATCH_DISPATCHES: self.synchronize()

  def enqueue_graph(self, graph) -> None:
    """Queue a recorded graph after the eager work so far; a graph already queued is submitted first (its size
    arguments are about to be rewritten, and a command buffer may be pending only once)."""
    if any(g is graph for g in self.queued_graphs): self.synchronize()
    self.close_eager()
    self.queued.append(graph.command_buffer)
    self.queued_graphs.append(graph)

  # ---- submitting ----
  def wait_for_fence(self, fences) -> None:
    """Wait for the submit's fence. On a GPU the fence is polled for up to SPIN_SECONDS first, as CUDA's own
    synchronization spins: a blocking vkWaitForFences sleeps in the driver, and the thread's wake-up is what a decode
    step waits on after the GPU is done. On a CPU implementation (lavapipe) the driver's threads need the cores, so
    the wait blocks at once."""
    dev, fn = self.dev, self.dev._fn
    if not dev.is_cpu:
      status, deadline = fn("vkGetFenceStatus"), time.perf_counter() + SPIN_SECONDS
      while (result := status(dev.device, self.fence)) == vk.NOT_READY and time.perf_counter() < deadline: pass
      if result != vk.NOT_READY: return check(result, "vkGetFenceStatus")
    check(fn("vkWaitForFences")(dev.device, 1, fences, 1, ctypes.c_uint64(-1 & 0xFFFFFFFFFFFFFFFF)), "vkWaitForFences")

  def synchronize(self) -> None:
    """Submit everything queued in one vkQueueSubmit and wait for it."""
    self.close_eager()
    if not self.queued: return
    dev, fn = self.dev, self.dev._fn
    buffers = (ctypes.c_void_p * len(self.queued))(*[cb.value for cb in self.queued])
    submit = vk.SubmitInfo(vk.ST_SUBMIT_INFO, None, 0, None, None, len(self.queued), buffers, 0, None)
    check(fn("vkQueueSubmit")(dev.queue, 1, ctypes.byref(submit), self.fence), "vkQueueSubmit")
    fences = (ctypes.c_void_p * 1)(self.fence.value)
    self.wait_for_fence(fences)
    check(fn("vkResetFences")(dev.device, 1, fences), "vkResetFences")
    graph_buffers = {g.command_buffer.value for g in self.queued_graphs}
    for cb in self.queued:
      if cb.value in graph_buffers: continue
      check(fn("vkResetCommandBuffer")(cb, 0), "vkResetCommandBuffer")
      self.spare.append(cb)
    self.queued, self.queued_graphs = [], []
    self.recorded = 0
    for raw in self.pending_frees: dev.destroy(raw)
    self.pending_frees = []


__all__ = ["Commands", "VulkanError", "align"]
