// Host check of the NCCL loader (test/backends/cuda-nccl.test.ts): prints where NCCL was found
// or why not. With SLUICE_NCCL_SINGLE_RANK=1 built by nvcc (-DSLUICE_NCCL_DEVICE_CHECK), also
// runs a one-rank communicator's all-reduce and all-gather on GPU 0 and checks the results.
#include <cstdio>
#include <cstdlib>
#include <vector>

#include "nccl.h"

#ifdef SLUICE_NCCL_DEVICE_CHECK
#include <cuda_runtime.h>

static int singleRank(const NcclLib& lib) {
  const nccl::Api& api = *lib.api();
  nccl::Comm comm = nullptr;
  const int devices[1] = {0};
  lib.check(api.commInitAll(&comm, 1, devices), "ncclCommInitAll");
  const size_t n = 1024;
  std::vector<float> host(n);
  for (size_t i = 0; i < n; i++) host[i] = 0.5f * static_cast<float>(i);
  float *x = nullptr, *gathered = nullptr;
  cudaMalloc(&x, n * sizeof(float));
  cudaMalloc(&gathered, n * sizeof(float));
  cudaMemcpy(x, host.data(), n * sizeof(float), cudaMemcpyHostToDevice);
  cudaStream_t stream;
  cudaStreamCreate(&stream);
  lib.check(api.allReduce(x, x, n, nccl::kFloat32, nccl::kSum, comm, stream), "ncclAllReduce");
  lib.check(api.allGather(x, gathered, n, nccl::kFloat32, comm, stream), "ncclAllGather");
  cudaStreamSynchronize(stream);
  std::vector<float> back(n);
  cudaMemcpy(back.data(), gathered, n * sizeof(float), cudaMemcpyDeviceToHost);
  for (size_t i = 0; i < n; i++) {
    if (back[i] != host[i]) {
      std::printf("mismatch at %zu: %g != %g\n", i, back[i], host[i]);
      return 1;
    }
  }
  api.commDestroy(comm);
  std::printf("single-rank all-reduce and all-gather: ok\n");
  return 0;
}
#endif

int main() {
  NcclLib lib;
  if (!lib.open()) {
    std::printf("missing: %s\n", lib.where().c_str());
    return 0;
  }
  std::printf("loaded NCCL %d from %s\n", lib.version(), lib.where().c_str());
#ifdef SLUICE_NCCL_DEVICE_CHECK
  if (std::getenv("SLUICE_NCCL_SINGLE_RANK")) return singleRank(lib);
#endif
  return 0;
}
