// Growable device and pinned host allocations: the only places the model calls cudaMalloc.
#pragma once
#include <cstddef>

namespace sluice {

struct DeviceBuffer {
  void* ptr = nullptr;
  size_t bytes = 0;
  void reserve(size_t want);  // grows (contents lost), never shrinks
  void release();
  ~DeviceBuffer() { release(); }
};

struct PinnedBuffer {
  void* ptr = nullptr;
  size_t bytes = 0;
  void reserve(size_t want);
  void release();
  ~PinnedBuffer() { release(); }
};

}  // namespace sluice
