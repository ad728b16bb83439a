// NCCL loaded at run time (dlopen), as cuBLASLt is: the toolkit here ships no NCCL, and the GPU
// machine has it in Python's nvidia/nccl/lib. Only a small hand-declared subset of the C API is
// used: handles and enums, never the size of an opaque struct other than ncclUniqueId (128 bytes,
// fixed by NCCL's ABI).
#pragma once

#include <cstddef>
#include <string>

namespace nccl {

using Result = int;  // ncclResult_t: 0 is ncclSuccess
using Comm = void*;  // ncclComm_t
using Stream = void*;  // cudaStream_t
struct UniqueId {
  char internal[128];
};
// ncclDataType_t and ncclRedOp_t values from nccl.h (stable since NCCL 2.0 / 2.10).
enum DataType : int { kFloat32 = 7, kBfloat16 = 9 };
enum RedOp : int { kSum = 0 };

struct Api {
  Result (*getVersion)(int*);
  Result (*getUniqueId)(UniqueId*);
  Result (*commInitRank)(Comm*, int, UniqueId, int);
  Result (*commInitAll)(Comm*, int, const int*);
  Result (*commDestroy)(Comm);
  Result (*allReduce)(const void*, void*, size_t, int, int, Comm, Stream);
  Result (*allGather)(const void*, void*, size_t, int, Comm, Stream);
  const char* (*getErrorString)(Result);
  /** ncclCommAbort: optional (null when the library lacks it); stops a communicator's pending work. */
  Result (*commAbort)(Comm);
};

}  // namespace nccl

class NcclLib {
 public:
  // Finds and binds libnccl.so.2: $SLUICE_NCCL_LIB, the loader's path, then Python's
  // site-packages (nvidia/nccl/lib). False with where() saying what was looked at and why not.
  bool open();
  const nccl::Api* api() const { return api_; }
  // The file loaded, or why none was.
  const std::string& where() const { return where_; }
  // NCCL's version as a number (e.g. 22703 for 2.27.3); 0 before open().
  int version() const { return version_; }
  // Throws std::runtime_error with NCCL's text when result is not ncclSuccess.
  void check(nccl::Result result, const char* what) const;

 private:
  const nccl::Api* api_ = nullptr;
  std::string where_;
  int version_ = 0;
};
