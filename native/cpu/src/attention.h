// Causal grouped-query attention over the cpu backend's paged f32 KV cache, on the host
// (--cpu-gemm native): the step's new K and V rows written to their slots, then every new
// token's query heads attend over their sequence's positions up to its own.
#pragma once
#include <cstddef>
#include <cstdint>

namespace sluice {
namespace cpu {

/**
 * A step's batch as the attention reads it. The cache of one layer holds K (or V) as
 * [numKvHeads, numSlots, headDim]; position p of sequence s lives in slot
 * pageTable[pageTableStart[s] + p / pageSize] * pageSize + p % pageSize. Sequence s's new
 * tokens are rows queryStart[s] .. queryStart[s + 1] - 1, the last kvLens[s] positions' last ones.
 */
struct AttentionBatch {
  size_t numHeads;
  size_t numKvHeads;
  size_t headDim;
  size_t pageSize;
  size_t numSlots;
  size_t numSeqs;
  size_t numTokens;
  const int32_t* queryStart;
  const int32_t* kvLens;
  const int32_t* pageTable;
  const int32_t* pageTableStart;
  const int32_t* slotMapping;
};

/**
 * k, v: [numTokens, numKvHeads * headDim] written into kCache and vCache at slotMapping; then
 * out[t, head] = softmax(q[t, head] . K / sqrt(headDim)) V over the sequence's positions up to
 * token t's (q and out: [numTokens, numHeads * headDim]).
 */
void pagedAttention(const float* q, const float* k, const float* v, float* kCache, float* vCache, const AttentionBatch& batch, float* out, int threads);

}  // namespace cpu
}  // namespace sluice
