// Growable device and pinned host allocations: the only places the model calls cudaMalloc.
#pragma once
#include <cstddef>

namespace sluice {

// Owning: copies are deleted (a copy would free the same pointer twice); moves hand it over.
struct DeviceBuffer {
  void* ptr = nullptr;
  size_t bytes = 0;
  DeviceBuffer() = default;
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  DeviceBuffer(DeviceBuffer&& other) noexcept : ptr(other.ptr), bytes(other.bytes) {
    other.ptr = nullptr;
    other.bytes = 0;
  }
  DeviceBuffer& operator=(DeviceBuffer&& other) noexcept {
    if (this != &other) {
      release();
      ptr = other.ptr;
      bytes = other.bytes;
      other.ptr = nullptr;
      other.bytes = 0;
    }
    return *this;
  }
  void reserve(size_t want);  // grows (contents lost), never shrinks
  void release();
  ~DeviceBuffer() { release(); }
};

struct PinnedBuffer {
  void* ptr = nullptr;
  size_t bytes = 0;
  PinnedBuffer() = default;
  PinnedBuffer(const PinnedBuffer&) = delete;
  PinnedBuffer& operator=(const PinnedBuffer&) = delete;
  void reserve(size_t want);
  void release();
  ~PinnedBuffer() { release(); }
};

}  // namespace sluice
