// Kernels of a tensor-parallel rank's graph (src/model/shard.ts) beside the collectives NCCL runs:
// the embedding over the rank's slice of the vocabulary, and laying the all-gathered logits
// parts (one contiguous block per rank, as ncclAllGather leaves them) out as full rows.
#include <algorithm>

#include "check.h"
#include "tensor_parallel.h"

namespace sluice {

namespace {

__global__ void embeddingSliceKernel(const bf16* table, int vocabStart, int sliceRows, int cols, const int* tokenIds,
                                     float* out) {
  const int row = blockIdx.x;
  const int id = tokenIds[row] - vocabStart;
  float* dst = out + size_t(row) * cols;
  if (id < 0 || id >= sliceRows) {
    for (int c = threadIdx.x; c < cols; c += blockDim.x) dst[c] = 0.f;
    return;
  }
  const bf16* src = table + size_t(id) * cols;
  for (int c = threadIdx.x; c < cols; c += blockDim.x) dst[c] = __bfloat162float(src[c]);
}

// blockIdx.x: row, blockIdx.y: rank. Rank r's part starts at column start(r) of the full row.
__global__ void gatherPartsKernel(const float* gathered, int tpSize, int rows, int blockStride, int fullCols,
                                  float* out) {
  const int row = blockIdx.x;
  const int rank = blockIdx.y;
  const VocabPart part = vocabPart(fullCols, tpSize, rank);
  const int cols = part.end - part.start;
  const float* src = gathered + size_t(rank) * blockStride + size_t(row) * cols;
  float* dst = out + size_t(row) * fullCols + part.start;
  for (int c = threadIdx.x; c < cols; c += blockDim.x) dst[c] = src[c];
}

__global__ void dummyFillWindowKernel(uint16_t* out, int rows, int cols, uint32_t key, double halfRange, double offset,
                                      int sourceCols, int sourceRowStart, int sourceColStart) {
  const size_t n = size_t(rows) * cols;
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x) {
    const size_t r = i / cols, c = i % cols;
    const uint64_t index = uint64_t(sourceRowStart + r) * sourceCols + sourceColStart + c;
    out[i] = dummy::elementBf16(key, index, halfRange, offset);
  }
}

}  // namespace

void launchDummyFillWindow(bf16* out, int rows, int cols, uint32_t key, double halfRange, double offset, int sourceCols,
                           int sourceRowStart, int sourceColStart, cudaStream_t stream) {
  const size_t n = size_t(rows) * cols;
  if (n == 0) return;
  const size_t blocks = std::min<size_t>((n + 255) / 256, 65535 * 16);
  dummyFillWindowKernel<<<unsigned(blocks), 256, 0, stream>>>(reinterpret_cast<uint16_t*>(out), rows, cols, key, halfRange,
                                                              offset, sourceCols, sourceRowStart, sourceColStart);
  CUDA_CHECK_LAUNCH("dummy weight window kernel");
}

void launchEmbeddingSlice(const bf16* table, int vocabStart, int sliceRows, int cols, const int* tokenIds, int rows,
                          float* out, cudaStream_t stream) {
  if (rows == 0) return;
  embeddingSliceKernel<<<rows, 256, 0, stream>>>(table, vocabStart, sliceRows, cols, tokenIds, out);
  CUDA_CHECK_LAUNCH("embedding slice kernel");
}

void launchGatherParts(const float* gathered, int tpSize, int rows, int blockStride, int fullCols, float* out,
                       cudaStream_t stream) {
  if (rows == 0) return;
  gatherPartsKernel<<<dim3(rows, tpSize), 256, 0, stream>>>(gathered, tpSize, rows, blockStride, fullCols, out);
  CUDA_CHECK_LAUNCH("gather parts kernel");
}

}  // namespace sluice
