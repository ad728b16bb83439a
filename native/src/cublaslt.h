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
  CublasLt() = default;
  ~CublasLt();
  CublasLt(const CublasLt&) = delete;
  CublasLt& operator=(const CublasLt&) = delete;

  bool ready() const { return handle_ != nullptr; }
  /**
   * The library file that was loaded, or why none was: "not found (...)" when no candidate file
   * exists, "found but failed to load (file: dlerror's text)" when one exists and cannot be used.
   */
  const std::string& where() const { return where_; }
  /** Shapes whose cublasLtMatmul call failed and now run on our own GEMM; empty when none. */
  std::string failures() const;

  /**
   * out[m, n] = x[m, k] @ w[n, k]^T (row-major, bf16 in, bf16 or f32 out, f32 accumulation).
   * Returns false when cuBLASLt has no algorithm for the shape or its call failed: the caller
   * falls back to its own GEMM for that shape, and the shape is not offered to cuBLASLt again.
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
  /** Plans are cached per (m bucket, n, k, type): at most a few dozen m buckets ever exist. */
  Plan& plan(int m, int n, int k, DType outType, size_t workspaceBytes);

  void* library_ = nullptr;
  void* handle_ = nullptr;
  std::string where_;
  std::map<std::tuple<int, int, int, int>, Plan> plans_;
  std::map<std::tuple<int, int, int, int>, std::string> failed_;  // exact shape -> status
  struct Api;
  Api* api_ = nullptr;
};

}  // namespace sluice
