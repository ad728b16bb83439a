// Error checking for every CUDA call: failures become C++ exceptions with the call's text, which
// the addon turns into JS exceptions.
#pragma once
#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

namespace sluice {

class CudaError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

inline void checkCuda(cudaError_t status, const char* what) {
  if (status != cudaSuccess) {
    throw CudaError(std::string("CUDA error ") + cudaGetErrorName(status) + " (" + cudaGetErrorString(status) +
                    ") in " + what);
  }
}

}  // namespace sluice

#define CUDA_CHECK(call) ::sluice::checkCuda((call), #call)
// After a kernel launch: catches bad launch configurations at once (asynchronous faults surface
// at the next synchronizing call, which is checked too).
#define CUDA_CHECK_LAUNCH(name) ::sluice::checkCuda(cudaGetLastError(), name)
