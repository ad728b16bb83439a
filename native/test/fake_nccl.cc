// A stand-in libnccl.so.2 for the loader's host test: the symbols sluice binds, version 2.27.3.
// It moves no data; the real NCCL is tested on a GPU machine (test/backends/cuda-nccl.test.ts).
#include <cstddef>

extern "C" {
int ncclGetVersion(int* v) { *v = 22703; return 0; }
int ncclGetUniqueId(void*) { return 0; }
struct UniqueId { char internal[128]; };
int ncclCommInitRank(void**, int, UniqueId, int) { return 0; }
int ncclCommInitAll(void**, int, const int*) { return 0; }
int ncclCommDestroy(void*) { return 0; }
int ncclAllReduce(const void*, void*, size_t, int, int, void*, void*) { return 0; }
int ncclAllGather(const void*, void*, size_t, int, void*, void*) { return 0; }
const char* ncclGetErrorString(int) { return "fake"; }
}
