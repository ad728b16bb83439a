// cuBLASLt opened at run time with dlopen: the addon links no cuBLAS, so it builds where cuBLAS is
// absent (CUDA 13 here) and still uses it on machines that have it (the toolkit, LD_LIBRARY_PATH or
// the Python nvidia packages).
#pragma once
#include <cuda_runtime.h>

#include <cstdint>
#include <map>
#include <string>
#include <tuple>

#include "kernels.h"

namespace sluice {

class CublasLt {
 public:
  /** Searches the usual places; returns false (with why()) when no usable library is found. */
  bool open();
  ~CublasLt();

  bool ready() const { return handle_ != nullptr; }
  /** The library file that was loaded, or why none was. */
  const std::string& where() const { return where_; }

  /**
   * out[m, n] = x[m, k] @ w[n, k]^T (row-major, bf16 in, bf16 or f32 out, f32 accumulation).
   * Returns false when cuBLASLt has no algorithm for the shape (the caller falls back).
   */
  bool matmul(const bf16* x, const bf16* w, void* out, DType outType, int m, int n, int k, void* workspace,
              size_t workspaceBytes, cudaStream_t stream);

 private:
  struct Plan {
    void* desc = nullptr;
    void* layoutA = nullptr;
    void* layoutB = nullptr;
    void* layoutC = nullptr;
    alignas(16) uint64_t algo[8] = {};
    bool usable = false;
  };
  Plan& plan(int m, int n, int k, DType outType, size_t workspaceBytes);

  void* library_ = nullptr;
  void* handle_ = nullptr;
  std::string where_;
  std::map<std::tuple<int, int, int, int>, Plan> plans_;
  struct Api;
  Api* api_ = nullptr;
};

}  // namespace sluice
