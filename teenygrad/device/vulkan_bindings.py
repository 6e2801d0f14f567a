"""The slice of the Vulkan 1.1+ C API the compute backend uses, as ctypes structures (layouts from vulkan_core.h).

Handles are pointers or 64-bit integers; both are passed as c_void_p. Large property structures are read as raw
bytes at the offsets vulkan_core.h gives on 64-bit platforms, rather than spelled out field by field.
"""
from __future__ import annotations

import ctypes
import ctypes.util

u32, u64, ptr, f32 = ctypes.c_uint32, ctypes.c_uint64, ctypes.c_void_p, ctypes.c_float

ST_APPLICATION_INFO, ST_INSTANCE_CREATE_INFO, ST_DEVICE_QUEUE_CREATE_INFO, ST_DEVICE_CREATE_INFO = 0, 1, 2, 3
ST_SUBMIT_INFO, ST_MEMORY_ALLOCATE_INFO, ST_FENCE_CREATE_INFO, ST_BUFFER_CREATE_INFO = 4, 5, 8, 12
ST_SHADER_MODULE_CREATE_INFO, ST_PIPELINE_CACHE_CREATE_INFO, ST_PIPELINE_SHADER_STAGE_CREATE_INFO = 16, 17, 18
ST_COMPUTE_PIPELINE_CREATE_INFO, ST_PIPELINE_LAYOUT_CREATE_INFO = 29, 30
ST_DESCRIPTOR_SET_LAYOUT_CREATE_INFO, ST_DESCRIPTOR_POOL_CREATE_INFO, ST_DESCRIPTOR_SET_ALLOCATE_INFO = 32, 33, 34
ST_WRITE_DESCRIPTOR_SET, ST_COMMAND_POOL_CREATE_INFO, ST_COMMAND_BUFFER_ALLOCATE_INFO = 35, 39, 40
ST_COMMAND_BUFFER_BEGIN_INFO, ST_MEMORY_BARRIER = 42, 46
ST_FEATURES_2, ST_VULKAN_1_1_FEATURES, ST_VULKAN_1_2_FEATURES = 1000059000, 49, 51
ST_PROPERTIES_2, ST_VULKAN_1_1_PROPERTIES = 1000059001, 50

QUEUE_COMPUTE = 0x2
MEMORY_DEVICE_LOCAL, MEMORY_HOST_VISIBLE, MEMORY_HOST_COHERENT, MEMORY_HOST_CACHED = 0x1, 0x2, 0x4, 0x8
BUFFER_USAGE = 0x1 | 0x2 | 0x20          # transfer src, transfer dst, storage buffer
DESCRIPTOR_STORAGE_BUFFER = 7
SHADER_STAGE_COMPUTE = 0x20
PIPELINE_BIND_POINT_COMPUTE = 1
PIPELINE_STAGE_COMPUTE, PIPELINE_STAGE_TRANSFER, PIPELINE_STAGE_HOST = 0x800, 0x1000, 0x4000
ACCESS_SHADER_READ, ACCESS_SHADER_WRITE, ACCESS_TRANSFER_READ, ACCESS_TRANSFER_WRITE = 0x20, 0x40, 0x800, 0x1000
ACCESS_HOST_READ, ACCESS_HOST_WRITE = 0x2000, 0x4000
COMMAND_POOL_RESET_BUFFER = 0x2
DESCRIPTOR_POOL_FREE_SET = 0x1
COMMAND_BUFFER_ONE_TIME = 0x1
ERROR_FRAGMENTED_POOL, ERROR_OUT_OF_POOL_MEMORY = -12, -1000069000
SUBGROUP_ARITHMETIC = 0x4

# offsets inside VkPhysicalDeviceProperties (checked against vulkan_core.h with offsetof)
PROPS_SIZE, PROPS_NAME, PROPS_MAX_STORAGE_RANGE, PROPS_MIN_SB_ALIGN = 824, 20, 324, 624
PROPS_MAX_STAGE_STORAGE_BUFFERS, PROPS_TYPE, PROPS_MAX_INVOCATIONS = 372, 16, 528
DEVICE_TYPE_INTEGRATED, DEVICE_TYPE_DISCRETE, DEVICE_TYPE_VIRTUAL, DEVICE_TYPE_CPU = 1, 2, 3, 4
NOT_READY = 1   # VK_NOT_READY: a fence not yet signalled
FEATURES_SIZE, FEATURES_FLOAT64, FEATURES_INT64, FEATURES_INT16 = 220, 156, 160, 164
V12_STORAGE_8BIT, V12_FLOAT16, V12_INT8 = 24, 44, 48
V11_STORAGE_16BIT = 16
V11_PROPS_SUBGROUP_SIZE, V11_PROPS_SUBGROUP_STAGES, V11_PROPS_SUBGROUP_OPS = 64, 68, 72


class ApplicationInfo(ctypes.Structure):
  _fields_ = [("sType", u32), ("pNext", ptr), ("pApplicationName", ctypes.c_char_p), ("applicationVersion", u32),
              ("pEngineName", ctypes.c_char_p), ("engineVersion", u32), ("apiVersion", u32)]


class InstanceCreateInfo(ctypes.Structure):
  _fields_ = [("sType", u32), ("pNext", ptr), ("flags", u32), ("pApplicationInfo", ctypes.POINTER(ApplicationInfo)),
              ("enabledLayerCount", u32), ("ppEnabledLayerNames", ptr), ("enabledExtensionCount", u32),
              ("ppEnabledExtensionNames", ptr)]


class QueueFamilyProperties(ctypes.Structure):
  _fields_ = [("queueFlags", u32), ("queueCount", u32), ("timestampValidBits", u32), ("minImageTransferGranularity", u32 * 3)]


class DeviceQueueCreateInfo(ctypes.Structure):
  _fields_ = [("sType", u32), ("pNext", ptr), ("flags", u32), ("queueFamilyIndex", u32), ("queueCount", u32),
              ("pQueuePriorities", ctypes.POINTER(f32))]


class DeviceCreateInfo(ctypes.Structure):
  _fields_ = [("sType", u32), ("pNext", ptr), ("flags", u32), ("queueCreateInfoCount", u32),
              ("pQueueCreateInfos", ctypes.POINTER(DeviceQueueCreateInfo)), ("enabledLayerCount", u32),
              ("ppEnabledLayerNames", ptr), ("enabledExtensionCount", u32), ("ppEnabledExtensionNames", ptr),
              ("pEnabledFeatures", ptr)]


class MemoryType(ctypes.Structure):
  _fields_ = [("propertyFlags", u32), ("heapIndex", u32)]


class MemoryHeap(ctypes.Structure):
  _fields_ = [("size", u64), ("flags", u32)]


class MemoryProperties(ctypes.Structure):
  _fields_ = [("memoryTypeCount", u32), ("memoryTypes", MemoryType * 32), ("memoryHeapCount", u32), ("memoryHeaps", MemoryHeap * 16)]


class BufferCreateInfo(ctypes.Structure):
  _fields_ = [("sType", u32), ("pNext", ptr), ("flags", u32), ("size", u64), ("usage", u32), ("sharingMode", u32),
              ("queueFamilyIndexCount", u32), ("pQueueFamilyIndices", ptr)]


class MemoryRequirements(ctypes.Structure):
  _fields_ = [("size", u64), ("alignment", u64), ("memoryTypeBits", u32)]


class MemoryAllocateInfo(ctypes.Structure):
  _fields_ = [("sType", u32), ("pNext", ptr), ("allocationSize", u64), ("memoryTypeIndex", u32)]


class ShaderModuleCreateInfo(ctypes.Structure):
  _fields_ = [("sType", u32), ("pNext", ptr), ("flags", u32), ("codeSize", ctypes.c_size_t), ("pCode", ptr)]


class PipelineCacheCreateInfo(ctypes.Structure):
  _fields_ = [("sType", u32), ("pNext", ptr), ("flags", u32), ("initialDataSize", ctypes.c_size_t), ("pInitialData", ptr)]


class DescriptorSetLayoutBinding(ctypes.Structure):
  _fields_ = [("binding", u32), ("descriptorType", u32), ("descriptorCount", u32), ("stageFlags", u32),
              ("pImmutableSamplers", ptr)]


class DescriptorSetLayoutCreateInfo(ctypes.Structure):
  _fields_ = [("sType", u32), ("pNext", ptr), ("flags", u32), ("bindingCount", u32),
              ("pBindings", ctypes.POINTER(DescriptorSetLayoutBinding))]


class PushConstantRange(ctypes.Structure):
  _fields_ = [("stageFlags", u32), ("offset", u32), ("size", u32)]


class PipelineLayoutCreateInfo(ctypes.Structure):
  _fields_ = [("sType", u32), ("pNext", ptr), ("flags", u32), ("setLayoutCount", u32), ("pSetLayouts", ctypes.POINTER(ptr)),
              ("pushConstantRangeCount", u32), ("pPushConstantRanges", ctypes.POINTER(PushConstantRange))]


class PipelineShaderStageCreateInfo(ctypes.Structure):
  _fields_ = [("sType", u32), ("pNext", ptr), ("flags", u32), ("stage", u32), ("module", ptr), ("pName", ctypes.c_char_p),
              ("pSpecializationInfo", ptr)]


class ComputePipelineCreateInfo(ctypes.Structure):
  _fields_ = [("sType", u32), ("pNext", ptr), ("flags", u32), ("stage", PipelineShaderStageCreateInfo), ("layout", ptr),
              ("basePipelineHandle", ptr), ("basePipelineIndex", ctypes.c_int32)]


class DescriptorPoolSize(ctypes.Structure):
  _fields_ = [("type", u32), ("descriptorCount", u32)]


class DescriptorPoolCreateInfo(ctypes.Structure):
  _fields_ = [("sType", u32), ("pNext", ptr), ("flags", u32), ("maxSets", u32), ("poolSizeCount", u32),
              ("pPoolSizes", ctypes.POINTER(DescriptorPoolSize))]


class DescriptorSetAllocateInfo(ctypes.Structure):
  _fields_ = [("sType", u32), ("pNext", ptr), ("descriptorPool", ptr), ("descriptorSetCount", u32),
              ("pSetLayouts", ctypes.POINTER(ptr))]


class DescriptorBufferInfo(ctypes.Structure):
  _fields_ = [("buffer", ptr), ("offset", u64), ("range", u64)]


class WriteDescriptorSet(ctypes.Structure):
  _fields_ = [("sType", u32), ("pNext", ptr), ("dstSet", ptr), ("dstBinding", u32), ("dstArrayElement", u32),
              ("descriptorCount", u32), ("descriptorType", u32), ("pImageInfo", ptr),
              ("pBufferInfo", ctypes.POINTER(DescriptorBufferInfo)), ("pTexelBufferView", ptr)]


class CommandPoolCreateInfo(ctypes.Structure):
  _fields_ = [("sType", u32), ("pNext", ptr), ("flags", u32), ("queueFamilyIndex", u32)]


class CommandBufferAllocateInfo(ctypes.Structure):
  _fields_ = [("sType", u32), ("pNext", ptr), ("commandPool", ptr), ("level", u32), ("commandBufferCount", u32)]


class CommandBufferBeginInfo(ctypes.Structure):
  _fields_ = [("sType", u32), ("pNext", ptr), ("flags", u32), ("pInheritanceInfo", ptr)]


class MemoryBarrier(ctypes.Structure):
  _fields_ = [("sType", u32), ("pNext", ptr), ("srcAccessMask", u32), ("dstAccessMask", u32)]


class BufferCopy(ctypes.Structure):
  _fields_ = [("srcOffset", u64), ("dstOffset", u64), ("size", u64)]


class SubmitInfo(ctypes.Structure):
  _fields_ = [("sType", u32), ("pNext", ptr), ("waitSemaphoreCount", u32), ("pWaitSemaphores", ptr),
              ("pWaitDstStageMask", ptr), ("commandBufferCount", u32), ("pCommandBuffers", ctypes.POINTER(ptr)),
              ("signalSemaphoreCount", u32), ("pSignalSemaphores", ptr)]


class FenceCreateInfo(ctypes.Structure):
  _fields_ = [("sType", u32), ("pNext", ptr), ("flags", u32)]


class VulkanError(RuntimeError):
  pass


RESULTS = {-1: "VK_ERROR_OUT_OF_HOST_MEMORY", -2: "VK_ERROR_OUT_OF_DEVICE_MEMORY", -3: "VK_ERROR_INITIALIZATION_FAILED",
           -4: "VK_ERROR_DEVICE_LOST", -5: "VK_ERROR_MEMORY_MAP_FAILED", -7: "VK_ERROR_EXTENSION_NOT_PRESENT",
           -8: "VK_ERROR_FEATURE_NOT_PRESENT", -9: "VK_ERROR_INCOMPATIBLE_DRIVER", 2: "VK_TIMEOUT",
           -12: "VK_ERROR_FRAGMENTED_POOL", -1000069000: "VK_ERROR_OUT_OF_POOL_MEMORY",
           -1000012000: "VK_ERROR_INVALID_SHADER_NV"}


def load_library() -> ctypes.CDLL:
  """libvulkan.so.1 (the loader), with a clear error when it is missing."""
  for name in ("libvulkan.so.1", ctypes.util.find_library("vulkan"), "libvulkan.so", "libvulkan.1.dylib", "vulkan-1.dll"):
    if not name: continue
    try: return ctypes.CDLL(name)
    except OSError: continue
  raise VulkanError("DEV=VULKAN needs the Vulkan loader (libvulkan.so.1) and a driver: on Debian/Ubuntu "
                    "`apt-get install libvulkan1 mesa-vulkan-drivers` (lavapipe runs on the CPU)")


def check(result: int, what: str) -> None:
  if result != 0: raise VulkanError(f"{what} failed: {RESULTS.get(result, result)}")
