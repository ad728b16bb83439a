// A tensor-parallel rank's kernels (tensor_parallel.cu) and the vocabulary split they share with
// src/model/shard.ts's splitRange: rank r of N holds rows [start, end) of the embedding and lm-head.
#pragma once
#include <cuda_runtime.h>

#include "dummy_hash.h"  // SLUICE_HOST_DEVICE
#include "kernels.h"

namespace sluice {

struct VocabPart {
  int start, end;
};

/** Part `rank` of `n` split in `parts`, the first n % parts parts one longer (splitRange in shard.ts). */
SLUICE_HOST_DEVICE VocabPart vocabPart(int n, int parts, int rank) {
  const int base = n / parts, extra = n % parts;
  const int start = rank * base + (rank < extra ? rank : extra);
  return {start, start + base + (rank < extra ? 1 : 0)};
}

/** out[t] = table[tokenIds[t] - vocabStart] for ids in the rank's slice of sliceRows rows, else a zero row. */
void launchEmbeddingSlice(const bf16* table, int vocabStart, int sliceRows, int cols, const int* tokenIds, int rows,
                          float* out, cudaStream_t stream);
/**
 * `gathered` holds tpSize blocks blockStride floats apart, block r being rank r's [rows, part r]
 * row-major (what ncclAllGather leaves); out [rows, fullCols] gets each rank's part at its columns.
 */
void launchGatherParts(const float* gathered, int tpSize, int rows, int blockStride, int fullCols, float* out,
                       cudaStream_t stream);

/**
 * A window of a dummy tensor (src/model/dummy-weights.ts's generator), as a rank's slice of it:
 * out[r, c] = element (sourceRowStart + r) * sourceCols + sourceColStart + c of the whole tensor.
 */
void launchDummyFillWindow(bf16* out, int rows, int cols, uint32_t key, double halfRange, double offset, int sourceCols,
                           int sourceRowStart, int sourceColStart, cudaStream_t stream);

}  // namespace sluice
