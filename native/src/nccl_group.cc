#include "nccl_group.h"

#include <cuda_runtime.h>

#include "check.h"

namespace sluice {

NcclGroup::NcclGroup(const std::vector<int>& devices) : devices_(devices) {
  if (devices.empty()) throw CudaError("an NCCL group needs at least one rank");
  int count = 0;
  CUDA_CHECK(cudaGetDeviceCount(&count));
  for (size_t i = 0; i < devices.size(); i++) {
    if (devices[i] < 0 || devices[i] >= count)
      throw CudaError("NCCL rank " + std::to_string(i) + ": CUDA device " + std::to_string(devices[i]) + " does not exist (" +
                      std::to_string(count) + " found)");
    for (size_t j = 0; j < i; j++)
      if (devices[j] == devices[i]) throw CudaError("NCCL ranks need one GPU each; GPU " + std::to_string(devices[i]) + " is named twice");
  }
  if (!lib_.open()) throw CudaError("tensor-parallel cuda ranks need NCCL: " + lib_.where());
  comms_.assign(devices.size(), nullptr);
  try {
    lib_.check(lib_.api()->commInitAll(comms_.data(), int(devices.size()), devices.data()), "ncclCommInitAll");
  } catch (const std::runtime_error& e) {
    throw CudaError(e.what());
  }
}

NcclGroup::~NcclGroup() {
  if (aborted_) return;  // aborted communicators are freed
  for (nccl::Comm comm : comms_)
    if (comm) lib_.api()->commDestroy(comm);
}

void NcclGroup::abort() {
  if (aborted_.exchange(true)) return;
  // Without ncclCommAbort the ranks still waiting cannot be released: they stay blocked, as before.
  if (!lib_.api()->commAbort) return;
  for (nccl::Comm comm : comms_)
    if (comm) lib_.api()->commAbort(comm);
}

std::string NcclGroup::description() const {
  const int v = lib_.version();
  // NCCL_VERSION_CODE: major * 10000 + minor * 100 + patch since 2.9.
  std::string text = "NCCL " + std::to_string(v / 10000) + "." + std::to_string(v / 100 % 100) + "." + std::to_string(v % 100) +
                     " from " + lib_.where() + ", " + std::to_string(size()) + " rank" + (size() == 1 ? "" : "s") + " on GPU" +
                     (size() == 1 ? " " : "s ");
  for (int r = 0; r < size(); r++) text += (r ? ", " : "") + std::to_string(devices_[r]);
  return text;
}

}  // namespace sluice
