// Paged attention over the KV cache, one kernel for prefill, extend (prefix-cache hits) and decode.
//
// A block takes one tile of a sequence's queries for one KV head: tileQueries queries times the
// `group` query heads that share the KV head, 32 rows in all, 4 threads per row each owning
// headDim/4 dimensions. It streams the sequence's keys through shared memory in pages of 32 with an
// online softmax (flash attention), causal per query. A decode tile (one query) gives its rows
// slices of each page of keys instead and merges them at the end. When tiles are few (decode), the
// key range is also split across blocks (split-KV flash decoding) and a second kernel merges the
// partial results by their log-sum-exp.
#include <cfloat>

#include "check.h"
#include "kernels.h"

namespace sluice {
namespace {

constexpr int kThreads = 128;
constexpr int kRows = 32;
constexpr int kKeysPerTile = 32;

__global__ void kvWriteKernel(const bf16* k, int kStride, const bf16* v, int vStride, bf16* kCache, bf16* vCache,
                              const int* slotMapping, int kvCols) {
  const int t = blockIdx.x;
  const int slot = slotMapping[t];
  if (slot < 0) return;
  const size_t dst = size_t(slot) * kvCols;
  for (int c = threadIdx.x; c < kvCols; c += blockDim.x) {
    kCache[dst + c] = k[size_t(t) * kStride + c];
    vCache[dst + c] = v[size_t(t) * vStride + c];
  }
}

// kSliced: every tile is a decode tile (one query) and the group is at most 8, so each row takes
// at most 8 keys of a page.
template <int HD, bool kSliced>
__global__ void __launch_bounds__(kThreads) attentionKernel(AttentionArgs a) {
  constexpr int kDims = HD / 4;  // per thread
  constexpr int kScores = kSliced ? 8 : kKeysPerTile;
  // Keys and values of the current page of 32 keys; reused at the end to merge key slices.
  __shared__ __align__(16) unsigned char tileMemory[2 * kKeysPerTile * HD * sizeof(bf16)];
  __shared__ float sliceMax[kRows];
  __shared__ float sliceSum[kRows];
  bf16 (*keys)[HD] = reinterpret_cast<bf16 (*)[HD]>(tileMemory);
  bf16 (*values)[HD] = reinterpret_cast<bf16 (*)[HD]>(tileMemory + kKeysPerTile * HD * sizeof(bf16));

  const int tile = blockIdx.x;
  const int kvHead = blockIdx.y;
  const int split = blockIdx.z;
  const int seq = a.tiles[2 * tile];
  const int j0 = a.tiles[2 * tile + 1];
  const int firstToken = a.queryStart[seq];
  const int count = a.queryStart[seq + 1] - firstToken;
  const int kvLen = a.kvLens[seq];
  const int group = a.numHeads / a.numKvHeads;
  const int tileQueries = kRows / group > 0 ? kRows / group : 1;
  // Decode tiles have one query: their rows split each page of keys between them instead (key
  // slices), merged at the end.
  const int slices = kSliced ? tileQueries : 1;

  const int row = threadIdx.x / 4;
  const int sub = threadIdx.x % 4;
  const int rowGroup = row / group;  // the query (prefill) or the key slice (decode)
  const int j = kSliced ? 0 : j0 + rowGroup;
  const int slice = kSliced ? rowGroup : 0;
  const int head = kvHead * group + row % group;
  const bool valid = row < tileQueries * group && j < count;
  const int lastVisible = kvLen - count + j;  // the query's own position
  const int lastQuery = min(j0 + tileQueries, count) - 1;
  const int range = max(0, kvLen - count + lastQuery + 1);
  const int keysPerSlice = (kKeysPerTile + slices - 1) / slices;

  int chunk = (range + a.splits - 1) / a.splits;
  chunk = (chunk + kKeysPerTile - 1) / kKeysPerTile * kKeysPerTile;
  const int kvBegin = split * chunk;
  const int kvEnd = min(range, kvBegin + chunk);

  const int token = firstToken + j;
  float q[kDims];
  float acc[kDims];
  for (int d = 0; d < kDims; d++) {
    q[d] = valid ? __bfloat162float(a.q[size_t(token) * a.qStride + size_t(head) * HD + sub * kDims + d]) : 0.f;
    acc[d] = 0.f;
  }
  float runningMax = -FLT_MAX;
  float runningSum = 0.f;
  const int pageBase = a.pageTableStart[seq];

  for (int k0 = kvBegin; k0 < kvEnd; k0 += kKeysPerTile) {
    for (int vec = threadIdx.x; vec < kKeysPerTile * HD / 8; vec += kThreads) {
      const int r = vec / (HD / 8);
      const int c = (vec % (HD / 8)) * 8;
      const int p = k0 + r;
      uint4 kv = make_uint4(0, 0, 0, 0);
      uint4 vv = make_uint4(0, 0, 0, 0);
      if (p < kvEnd) {
        const int slot = a.pageTable[pageBase + p / a.pageSize] * a.pageSize + p % a.pageSize;
        const size_t offset = (size_t(slot) * a.numKvHeads + kvHead) * HD + c;
        kv = *reinterpret_cast<const uint4*>(a.kCache + offset);
        vv = *reinterpret_cast<const uint4*>(a.vCache + offset);
      }
      *reinterpret_cast<uint4*>(&keys[r][c]) = kv;
      *reinterpret_cast<uint4*>(&values[r][c]) = vv;
    }
    __syncthreads();

    // This row's keys of the page: all 32, or every slices-th one from its slice on.
    float scores[kScores];
    float tileMax = -FLT_MAX;
#pragma unroll
    for (int n = 0; n < kScores; n++) {
      if (n >= keysPerSlice) break;  // uniform over the block
      const int i = slice + n * slices;
      const int at = i < kKeysPerTile ? i : kKeysPerTile - 1;
      float dot = 0.f;
#pragma unroll
      for (int d = 0; d < kDims; d++) dot += q[d] * __bfloat162float(keys[at][sub * kDims + d]);
      dot += __shfl_xor_sync(0xffffffffu, dot, 1);
      dot += __shfl_xor_sync(0xffffffffu, dot, 2);
      const int p = k0 + i;
      const bool visible = valid && i < kKeysPerTile && p < kvEnd && p <= lastVisible;
      scores[n] = visible ? dot * a.scale : -FLT_MAX;
      if (visible) tileMax = fmaxf(tileMax, scores[n]);
    }
    if (tileMax > -FLT_MAX) {
      const float newMax = fmaxf(runningMax, tileMax);
      const float correction = runningMax > -FLT_MAX ? __expf(runningMax - newMax) : 0.f;
      runningSum *= correction;
      for (int d = 0; d < kDims; d++) acc[d] *= correction;
#pragma unroll
      for (int n = 0; n < kScores; n++) {
        if (n >= keysPerSlice) break;
        if (scores[n] == -FLT_MAX) continue;
        const int i = slice + n * slices;
        const float p = __expf(scores[n] - newMax);
        runningSum += p;
#pragma unroll
        for (int d = 0; d < kDims; d++) acc[d] += p * __bfloat162float(values[i][sub * kDims + d]);
      }
      runningMax = newMax;
    }
    __syncthreads();
  }

  if (kSliced) {
    // Merge the key slices of each head into the rows of slice 0 (as the split merge does).
    float (*sliceAcc)[HD] = reinterpret_cast<float (*)[HD]>(tileMemory);
    if (valid) {
      for (int d = 0; d < kDims; d++) sliceAcc[row][sub * kDims + d] = acc[d];
      if (sub == 0) {
        sliceMax[row] = runningMax;
        sliceSum[row] = runningSum;
      }
    }
    __syncthreads();
    if (!valid || slice != 0) return;
    float mergedMax = -FLT_MAX;
    for (int s = 0; s < slices; s++) {
      const int r = s * group + row;
      if (sliceSum[r] > 0.f) mergedMax = fmaxf(mergedMax, sliceMax[r]);
    }
    float mergedSum = 0.f;
    for (int d = 0; d < kDims; d++) acc[d] = 0.f;
    for (int s = 0; s < slices; s++) {
      const int r = s * group + row;
      if (!(sliceSum[r] > 0.f)) continue;
      const float weight = __expf(sliceMax[r] - mergedMax);
      mergedSum += weight * sliceSum[r];
      for (int d = 0; d < kDims; d++) acc[d] += weight * sliceAcc[r][sub * kDims + d];
    }
    runningMax = mergedMax;
    runningSum = mergedSum;
  }

  if (!valid) return;
  if (a.splits == 1) {
    const float inv = runningSum > 0.f ? 1.f / runningSum : 0.f;
    bf16* dst = a.out + (size_t(token) * a.numHeads + head) * HD + sub * kDims;
    for (int d = 0; d < kDims; d++) dst[d] = __float2bfloat16_rn(acc[d] * inv);
  } else {
    const size_t index = (size_t(split) * a.numTokens + token) * a.numHeads + head;
    float* dst = a.partialO + index * HD + sub * kDims;
    for (int d = 0; d < kDims; d++) dst[d] = acc[d];
    if (sub == 0) {
      a.partialML[index * 2] = runningMax;
      a.partialML[index * 2 + 1] = runningSum;
    }
  }
}

// One block per (token, head), one thread per dimension.
__global__ void combineSplitsKernel(AttentionArgs a) {
  const int token = blockIdx.x;
  const int head = blockIdx.y;
  const int d = threadIdx.x;
  float globalMax = -FLT_MAX;
  for (int s = 0; s < a.splits; s++) {
    const size_t index = (size_t(s) * a.numTokens + token) * a.numHeads + head;
    if (a.partialML[index * 2 + 1] > 0.f) globalMax = fmaxf(globalMax, a.partialML[index * 2]);
  }
  float total = 0.f;
  float value = 0.f;
  for (int s = 0; s < a.splits; s++) {
    const size_t index = (size_t(s) * a.numTokens + token) * a.numHeads + head;
    const float sum = a.partialML[index * 2 + 1];
    if (sum <= 0.f) continue;
    const float weight = __expf(a.partialML[index * 2] - globalMax);
    total += weight * sum;
    value += weight * a.partialO[index * a.headDim + d];
  }
  a.out[(size_t(token) * a.numHeads + head) * a.headDim + d] = __float2bfloat16_rn(total > 0.f ? value / total : 0.f);
}

template <int HD>
void launchFor(const AttentionArgs& a, cudaStream_t stream) {
  const dim3 grid(a.numTiles, a.numKvHeads, a.splits);
  if (a.decodeOnly && a.numHeads / a.numKvHeads <= 8) {
    attentionKernel<HD, true><<<grid, kThreads, 0, stream>>>(a);
  } else {
    attentionKernel<HD, false><<<grid, kThreads, 0, stream>>>(a);
  }
  CUDA_CHECK_LAUNCH("attention kernel");
}

}  // namespace

int attentionTileQueries(int numHeads, int numKvHeads) {
  const int group = numHeads / numKvHeads;
  return kRows / group > 0 ? kRows / group : 1;
}

void launchAttention(const AttentionArgs& a, cudaStream_t stream) {
  if (a.numTokens == 0) return;
  const int kvCols = a.numKvHeads * a.headDim;
  if (!a.kvWritten) {
    kvWriteKernel<<<a.numTokens, 128, 0, stream>>>(a.k, a.kStride, a.v, a.vStride, a.kCache, a.vCache, a.slotMapping,
                                                   kvCols);
    CUDA_CHECK_LAUNCH("KV cache write kernel");
  }
  if (a.numTiles == 0) return;
  switch (a.headDim) {
    case 16: launchFor<16>(a, stream); break;
    case 64: launchFor<64>(a, stream); break;
    case 128: launchFor<128>(a, stream); break;
    default: throw CudaError("attention: head dimension " + std::to_string(a.headDim) + " is not supported (16, 64 and 128 are)");
  }
  if (a.splits > 1) {
    combineSplitsKernel<<<dim3(a.numTokens, a.numHeads), a.headDim, 0, stream>>>(a);
    CUDA_CHECK_LAUNCH("split-KV combine kernel");
  }
}

}  // namespace sluice
