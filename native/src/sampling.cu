// Sampling on the device, the rule of backends/shared/host-sampler.ts: penalties, log-sum-exp and argmax
// (lowest id on ties), then for rows that sample or want top log-probs a stable descending sort of
// the row (ties keep the lower id first), top-k / top-p / min-p cuts and the inverse-CDF draw with
// the engine-supplied uniform number.
#include <cub/block/block_reduce.cuh>
#include <cub/block/block_scan.cuh>

#include <cfloat>

#include "check.h"
#include "kernels.h"

namespace sluice {
namespace {

constexpr int kThreads = 1024;
constexpr int kItems = 4;

__global__ void penaltiesKernel(SamplingArgs a) {
  const int s = blockIdx.x;
  float* row = a.logits + size_t(s) * a.vocab;
  const float rep = a.repetition[s];
  const float freq = a.frequency[s];
  const float pres = a.presence[s];
  for (int i = a.penaltyStart[s] + threadIdx.x; i < a.penaltyStart[s + 1]; i += blockDim.x) {
    const int id = a.penaltyIds[i];
    if (id < 0 || id >= a.vocab) continue;
    float x = row[id];
    if (rep != 1.f) x = x > 0.f ? x / rep : x * rep;
    const int count = a.penaltyCounts[i];
    if (count > 0) x -= freq * count + pres;
    row[id] = x;
  }
}

struct Best {
  float value;
  int id;
};

__device__ inline Best better(Best a, Best b) {
  if (b.value > a.value || (b.value == a.value && b.id < a.id)) return b;
  return a;
}

/** Per row: argmax (lowest id on ties) into tokens, and the log-sum-exp into rowLse. */
__global__ void __launch_bounds__(kThreads) rowStatsKernel(SamplingArgs a) {
  using Reduce = cub::BlockReduce<float, kThreads>;
  __shared__ typename Reduce::TempStorage reduceTemp;
  __shared__ Best warpBest[kThreads / 32];
  __shared__ Best rowBest;
  const int s = blockIdx.x;
  const float* row = a.logits + size_t(s) * a.vocab;
  Best best{-FLT_MAX, a.vocab};
  for (int i = threadIdx.x; i < a.vocab; i += kThreads) best = better(best, Best{row[i], i});
  for (int offset = 16; offset > 0; offset >>= 1) {
    Best other{__shfl_xor_sync(0xffffffffu, best.value, offset), __shfl_xor_sync(0xffffffffu, best.id, offset)};
    best = better(best, other);
  }
  if (threadIdx.x % 32 == 0) warpBest[threadIdx.x / 32] = best;
  __syncthreads();
  if (threadIdx.x == 0) {
    Best b = warpBest[0];
    for (int w = 1; w < kThreads / 32; w++) b = better(b, warpBest[w]);
    if (b.id >= a.vocab) b.id = 0;  // every logit NaN or -inf
    rowBest = b;
  }
  __syncthreads();
  const float max = rowBest.value;
  float sum = 0.f;
  for (int i = threadIdx.x; i < a.vocab; i += kThreads) sum += __expf(row[i] - max);
  sum = Reduce(reduceTemp).Sum(sum);
  if (threadIdx.x == 0) {
    a.tokens[s] = rowBest.id;
    a.rowLse[s] = max + logf(sum);
  }
}

__global__ void iotaKernel(SamplingArgs a) {
  const int s = blockIdx.x;
  if (a.segBegin[s] >= a.segEnd[s]) return;
  int* ids = a.iotaIds + size_t(s) * a.vocab;
  for (int i = threadIdx.x; i < a.vocab; i += blockDim.x) ids[i] = i;
}

/** exp((v_i - max) / T) for the i-th best candidate; 0 beyond the top-k. */
struct CandidateProb {
  const float* values;
  int count;
  double max;
  double temperature;
  __device__ double operator()(int i) const { return i < count ? exp((double(values[i]) - max) / temperature) : 0.0; }
};

using Scan = cub::BlockScan<double, kThreads>;
using SumReduce = cub::BlockReduce<double, kThreads>;

struct SampleShared {
  union {
    typename Scan::TempStorage scan;
    typename SumReduce::TempStorage reduce;
  } temp;
  double broadcast;
  int found;
};

__device__ double blockTotal(SampleShared& sh, const CandidateProb& prob, int n) {
  double local = 0.0;
  for (int i = threadIdx.x; i < n; i += kThreads) local += prob(i);
  const double total = SumReduce(sh.temp.reduce).Sum(local);
  if (threadIdx.x == 0) sh.broadcast = total;
  __syncthreads();
  const double result = sh.broadcast;
  __syncthreads();
  return result;
}

/**
 * The first index i < n whose inclusive cumulative probability reaches `threshold`
 * (cum >= threshold when orEqual, else cum > threshold); n when none does.
 */
__device__ int firstCumulative(SampleShared& sh, const CandidateProb& prob, int n, double threshold, bool orEqual) {
  if (threadIdx.x == 0) sh.found = n;
  __syncthreads();
  double carry = 0.0;
  for (int base = 0; base < n; base += kThreads * kItems) {
    double items[kItems];
    for (int k = 0; k < kItems; k++) {
      const int i = base + threadIdx.x * kItems + k;
      items[k] = i < n ? prob(i) : 0.0;
    }
    double aggregate;
    Scan(sh.temp.scan).InclusiveSum(items, items, aggregate);
    for (int k = 0; k < kItems; k++) {
      const int i = base + threadIdx.x * kItems + k;
      const double c = carry + items[k];
      if (i < n && (orEqual ? c >= threshold : c > threshold)) {
        atomicMin(&sh.found, i);
        break;
      }
    }
    carry += aggregate;
    __syncthreads();
    if (sh.found < n) break;
  }
  const int result = sh.found;
  __syncthreads();
  return result;
}

__global__ void __launch_bounds__(kThreads) finishKernel(SamplingArgs a) {
  __shared__ SampleShared sh;
  __shared__ int countAbove;
  const int s = blockIdx.x;
  const size_t rowBase = size_t(s) * a.vocab;
  int token = a.tokens[s];
  const float temperature = a.temperature[s];
  if (temperature > 0.f && a.needSort) {
    const float* values = a.sortedValues + rowBase;
    const int* ids = a.sortedIds + rowBase;
    const int k = a.topK[s] > 0 ? min(a.topK[s], a.vocab) : a.vocab;
    const CandidateProb prob{values, k, double(values[0]), double(temperature)};
    const double total = blockTotal(sh, prob, k);
    int keep = k;
    const float topP = a.topP[s];
    if (topP < 1.f) {
      const int cut = firstCumulative(sh, prob, k, double(topP) * total, true);
      keep = cut < k ? cut + 1 : k;
    }
    const float minP = a.minP[s];
    if (minP > 0.f) {
      // Probabilities are sorted, so the tokens at or above the threshold form a prefix.
      const double threshold = double(minP) * prob(0);
      if (threadIdx.x == 0) countAbove = 0;
      __syncthreads();
      int local = 0;
      for (int i = threadIdx.x; i < keep; i += kThreads) local += prob(i) >= threshold ? 1 : 0;
      atomicAdd(&countAbove, local);
      __syncthreads();
      keep = max(1, min(keep, countAbove));
      __syncthreads();
    }
    const double kept = blockTotal(sh, prob, keep);
    const double target = double(a.random[s]) * kept;
    const int index = firstCumulative(sh, prob, keep, target, false);
    token = ids[index < keep ? index : keep - 1];
  }
  if (threadIdx.x == 0) a.tokens[s] = token;
  const int want = a.logprobsK[s];
  if (want < 0 || a.logprobs == nullptr) return;
  const float lse = a.rowLse[s];
  if (threadIdx.x == 0) a.logprobs[s] = a.logits[rowBase + token] - lse;
  if (a.maxTopK <= 0) return;
  for (int i = threadIdx.x; i < a.maxTopK; i += kThreads) {
    const bool have = i < want && i < a.vocab && a.needSort;
    a.topIds[size_t(s) * a.maxTopK + i] = have ? a.sortedIds[rowBase + i] : 0;
    a.topLogprobs[size_t(s) * a.maxTopK + i] = have ? a.sortedValues[rowBase + i] - lse : 0.f;
  }
}

}  // namespace

void launchSampling(const SamplingArgs& a, cudaStream_t stream) {
  if (a.numSeqs == 0) return;
  if (a.repetition != nullptr) {
    penaltiesKernel<<<a.numSeqs, 256, 0, stream>>>(a);
    CUDA_CHECK_LAUNCH("penalties kernel");
  }
  rowStatsKernel<<<a.numSeqs, kThreads, 0, stream>>>(a);
  CUDA_CHECK_LAUNCH("log-sum-exp / argmax kernel");
  if (a.needSort) {
    iotaKernel<<<a.numSeqs, 256, 0, stream>>>(a);
    CUDA_CHECK_LAUNCH("iota kernel");
    launchSegmentedSort(a, stream);
  }
  finishKernel<<<a.numSeqs, kThreads, 0, stream>>>(a);
  CUDA_CHECK_LAUNCH("sampling kernel");
}

}  // namespace sluice
