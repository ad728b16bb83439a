#include "device_buffer.h"

#include <cuda_runtime.h>

#include <string>

#include "check.h"

namespace sluice {

void DeviceBuffer::reserve(size_t want) {
  if (want <= bytes) return;
  release();
  const cudaError_t status = cudaMalloc(&ptr, want);
  if (status != cudaSuccess) {
    ptr = nullptr;
    cudaGetLastError();  // clear the (non-sticky) allocation error
    throw CudaError("out of device memory: cannot allocate " + std::to_string(want >> 20) + " MiB (" +
                    cudaGetErrorString(status) + ")");
  }
  bytes = want;
}

void DeviceBuffer::release() {
  if (ptr) cudaFree(ptr);
  ptr = nullptr;
  bytes = 0;
}

void PinnedBuffer::reserve(size_t want) {
  if (want <= bytes) return;
  release();
  CUDA_CHECK(cudaMallocHost(&ptr, want));
  bytes = want;
}

void PinnedBuffer::release() {
  if (ptr) cudaFreeHost(ptr);
  ptr = nullptr;
  bytes = 0;
}

}  // namespace sluice
