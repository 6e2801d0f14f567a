"""A JIT replay on Vulkan: the captured dispatches recorded once into a command buffer that every replay resubmits.

What changes between replays must not be baked into the recording:
- buffers: the JIT runs a graph on buffers of its own (inputs copied in on the device, outputs copied out), so
  the descriptor sets written at recording time stay right;
- symbolic sizes (a decode position): each kernel reads them from its own slot of the graph's argument buffer
  (its descriptor points there), which the command buffer fills from a host-visible staging copy as its first
  command. `update` rewrites the host copy, a call uploads it: one recording serves every value.

Dispatches are ordered by barriers only where one depends on another (reads or writes a buffer an earlier one in the
same barrier-free run wrote, or writes one it read): kernels store only into their first buffer, so that is cheap
to tell. Independent neighbours (the q, k and v projections of a layer) run concurrently.
"""
from __future__ import annotations

import ctypes
import itertools
import struct

from teenygrad.device import vulkan_bindings as vk
from teenygrad.device.vulkan_bindings import check


def _structure(exec_items) -> tuple:
  return tuple((id(ei.kernel), tuple(id(b.raw) for b in ei.buffers)) for ei in exec_items)   # allocates every buffer


class VulkanGraph:
  """Recorded dispatches, resubmitted as one command buffer. `recordings` counts how often they were recorded."""
  def __init__(self, dev, exec_items: list):
    self.dev = dev
    self.command_buffer = None
    self.recordings = 0
    self._record(exec_items)

  def _record(self, exec_items: list) -> None:
    dev, commands = self.dev, self.dev.commands
    with dev.lock:
      self.close()
      self.structure = _structure(exec_items)
      self.buffers = [list(ei.buffers) for ei in exec_items]   # what the recording points at stays alive with it
      programs = [ei.kernel.program for ei in exec_items]
      raws = [[b.raw for b in ei.buffers] for ei in exec_items]
      # each dispatch with sizes gets a slot of the argument buffer; the host keeps a copy laid out the same way
      self.slots: list[int | None] = []
      used = 0
      for program in programs:
        self.slots.append(used if program.args_bytes else None)
        used += program.args_stride if program.args_bytes else 0
      self.args = dev.create_buffer(max(used, 16), staging=False)
      self.staging = dev.create_buffer(max(used, 16), staging=True)
      self.host = bytearray(max(used, 16))
      # every dispatch's values, in order, packed by one struct call: each slot's fields, padded to its stride
      self.layout = "<" + "".join(program.args_format[1:] + f"{program.args_stride - program.args_bytes}x"
                                  for program in programs if program.args_bytes)
      self.update([tuple(ei.var_values) for ei in exec_items])

      self.pool = commands.new_pool(len(programs), sum(sum(p.bindings) + (p.args_bytes > 0) for p in programs), free=False)
      sets = []
      for program, bufs, slot in zip(programs, raws, self.slots):
        result, descriptor_set = commands.allocate_set(self.pool, program.set_layout)
        check(result, "vkAllocateDescriptorSets")
        commands.write_set(descriptor_set, program, bufs, self.args, slot or 0)
        sets.append(descriptor_set)

      cb = self.command_buffer = commands.allocate_command_buffer()
      commands.begin(cb, one_time=False)
      commands.barrier(cb)   # after whatever ran before (and the last replay's reads of the argument buffer)
      region = vk.BufferCopy(0, 0, max(used, 16))
      commands.cmd_copy_buffer(cb, self.staging.buffer, self.args.buffer, 1, ctypes.byref(region))
      commands.barrier(cb)
      self.barriers = 0
      written: set[int] = set()
      read: set[int] = set()
      bound = None
      for program, bufs, descriptor_set in zip(programs, raws, sets):
        out, ins = {id(bufs[0])}, {id(b) for b in bufs[1:]}
        if written & (out | ins) or read & out:
          commands.barrier(cb)
          self.barriers += 1
          written, read = set(), set()
        written |= out
        read |= ins
        if program.pipeline is not bound:
          commands.cmd_bind_pipeline(cb, vk.PIPELINE_BIND_POINT_COMPUTE, program.pipeline)
          bound = program.pipeline
        commands.cmd_bind_sets(cb, vk.PIPELINE_BIND_POINT_COMPUTE, program.layout, 0, 1, ctypes.byref(descriptor_set), 0, None)
        commands.cmd_dispatch(cb, program.meta["groups"], 1, 1)
      check(dev._fn("vkEndCommandBuffer")(cb), "vkEndCommandBuffer")
      self.recordings += 1

  def update(self, var_values: list[tuple[int, ...]]) -> None:
    """New size arguments per dispatch (in recording order; () for a kernel without sizes), written to the host
    copy of the argument buffer: the next call uploads it."""
    struct.pack_into(self.layout, self.host, 0, *itertools.chain.from_iterable(var_values))

  def __call__(self, exec_items=None) -> None:
    dev = self.dev
    with dev.lock:
      if exec_items is not None:
        if _structure(exec_items) != self.structure: self._record(exec_items)
        else: self.update([tuple(ei.var_values) for ei in exec_items])
      # a replay still queued would read the arguments written below: it is submitted first
      if any(g is self for g in dev.commands.queued_graphs): dev.commands.synchronize()
      ctypes.memmove(self.staging.mapped, (ctypes.c_char * len(self.host)).from_buffer(self.host), len(self.host))
      dev.commands.enqueue_graph(self)

  def close(self) -> None:
    if self.command_buffer is None: return
    dev = self.dev
    with dev.lock:
      if any(g is self for g in dev.commands.queued_graphs): dev.commands.synchronize()
      dev.commands.free_command_buffer(self.command_buffer)
      dev._fn("vkDestroyDescriptorPool", None)(dev.device, self.pool, None)
      dev.release(self.args)
      dev.release(self.staging)
      self.command_buffer = None

  def __del__(self):
    try: self.close()
    except Exception: pass  # interpreter shutdown


__all__ = ["VulkanGraph"]
