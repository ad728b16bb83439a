// The per-row sort used by sampling, in its own file: CUB's segmented radix sort is the slowest
// part of the build, and a separate translation unit compiles in parallel with the rest.
#include <cub/device/device_segmented_radix_sort.cuh>

#include "check.h"
#include "kernels.h"

namespace sluice {

size_t samplingSortTempBytes(int numSeqs, int vocab) {
  size_t bytes = 0;
  CUDA_CHECK(cub::DeviceSegmentedRadixSort::SortPairsDescending(
      nullptr, bytes, static_cast<const float*>(nullptr), static_cast<float*>(nullptr), static_cast<const int*>(nullptr),
      static_cast<int*>(nullptr), numSeqs * vocab, numSeqs, static_cast<const int*>(nullptr),
      static_cast<const int*>(nullptr)));
  return bytes;
}

// Radix sort is stable: equal logits keep ascending ids, the tie rule of backends/shared/host-sampler.ts.
void launchSegmentedSort(const SamplingArgs& a, cudaStream_t stream) {
  size_t bytes = a.sortTempBytes;
  CUDA_CHECK(cub::DeviceSegmentedRadixSort::SortPairsDescending(
      a.sortTemp, bytes, static_cast<const float*>(a.logits), a.sortedValues, static_cast<const int*>(a.iotaIds),
      a.sortedIds, a.numSeqs * a.vocab, a.numSeqs, a.segBegin, a.segEnd, 0, 32, stream));
}

}  // namespace sluice
