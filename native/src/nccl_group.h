// The NCCL communicators of tensor-parallel cuda ranks driven from one process: one rank per GPU,
// all created together (ncclCommInitAll), each used only by its rank's Model on that rank's thread.
#pragma once
#include <atomic>
#include <string>
#include <vector>

#include "nccl.h"

namespace sluice {

class NcclGroup {
 public:
  /** Opens NCCL (throws CudaError naming where it looked) and creates one communicator per device. */
  explicit NcclGroup(const std::vector<int>& devices);
  ~NcclGroup();
  NcclGroup(const NcclGroup&) = delete;
  NcclGroup& operator=(const NcclGroup&) = delete;

  int size() const { return int(devices_.size()); }
  int device(int rank) const { return devices_.at(rank); }
  nccl::Comm comm(int rank) const { return comms_.at(rank); }
  const NcclLib& lib() const { return lib_; }
  /**
   * After one rank's step failed: aborts every communicator (ncclCommAbort), so ranks waiting in
   * a collective for the failed one return instead of waiting forever. The group is unusable after.
   */
  void abort();
  bool aborted() const { return aborted_; }
  /** "NCCL 2.27.3 from <file>, 2 ranks on GPUs 0, 1". */
  std::string description() const;

 private:
  NcclLib lib_;
  std::vector<int> devices_;
  std::vector<nccl::Comm> comms_;
  std::atomic<bool> aborted_{false};
};

}  // namespace sluice
