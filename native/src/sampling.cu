// Sampling on the device, the rule of backends/shared/host-sampler.ts: logit biases, penalties, token masks, log-sum-exp and argmax
// (lowest id on ties), then for rows that sample or want top log-probs the top-k / top-p / min-p
// cuts and the inverse-CDF draw with the engine-supplied uniform number.
//
// The default path sorts nothing and needs no scratch memory: every cut-off is found by a radix
// search over a 64-bit key per token (high word the logit's order-preserving bits, low word
// vocab - 1 - id, so a larger key comes first in the rule's order: descending logit, lower id
// first on ties). One pass per 8-bit digit builds a 256-bin histogram of counts or of fixed-point
// probability mass over the tokens that match the digits found so far; at most 4 + 3 passes
// (128K vocabulary) find the token where the cumulative count or mass first reaches a goal.
// Integer mass keeps the sums independent of the order atomics land in. Only rows that sample
// or want top log-probs do this work (the others return after their argmax).
//
// SLUICE_CUDA_SAMPLER=sort selects the previous path (a segmented radix sort of every sampled
// row, with scratch of several rows x vocab buffers) so a GPU run can compare the two.
#include <cub/block/block_reduce.cuh>
#include <cub/block/block_scan.cuh>

#include <cfloat>

#include "check.h"
#include "kernels.h"

namespace sluice {
namespace {

constexpr int kThreads = 1024;
constexpr int kItems = 4;

/** logit_bias and min_tokens' bans (-inf): one block per row, each entry's id distinct within its row. */
__global__ void logitBiasKernel(SamplingArgs a) {
  const int s = blockIdx.x;
  float* row = a.logits + size_t(s) * a.vocab;
  for (int i = a.biasStart[s] + threadIdx.x; i < a.biasStart[s + 1]; i += blockDim.x) row[a.biasIds[i]] += a.biasValues[i];
}

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

/** Structured output: -inf for the ids a constrained row's allowed-token mask leaves out. */
__global__ void tokenMaskKernel(SamplingArgs a) {
  const int s = blockIdx.x;
  const int r = a.maskRowOf[s];
  if (r < 0) return;
  float* row = a.logits + size_t(s) * a.vocab;
  const unsigned* bits = a.maskBits + size_t(r) * a.maskWords;
  for (int i = threadIdx.x; i < a.vocab; i += blockDim.x) {
    if (((bits[i >> 5] >> (i & 31)) & 1u) == 0u) row[i] = -INFINITY;
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

__global__ void __launch_bounds__(kThreads) sortedFinishKernel(SamplingArgs a) {
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

// ---- the default path: radix search, no sort ----

constexpr int kWarps = kThreads / 32;

__device__ inline uint32_t orderedBits(float x) {
  const uint32_t u = __float_as_uint(x);
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

__device__ inline float fromOrderedBits(uint32_t k) {
  return (k & 0x80000000u) ? __uint_as_float(k & 0x7fffffffu) : __uint_as_float(~k);
}

struct RowView {
  const float* logits;
  int vocab;
  int idBits;        // vocab - 1 < 2^idBits
  float maxLogit;
  float invTemperature;
  float massScale;   // 2^(62 - idBits): a whole row's mass stays below 2^62
};

__device__ inline uint64_t keyOf(const RowView& r, int id, float v) {
  return (uint64_t(orderedBits(v)) << 32) | uint32_t(r.vocab - 1 - id);
}

/** Which tokens count, and how much: key >= cutoff, and (weighted) probability >= minP. */
struct Filter {
  uint64_t cutoff;
  float minP;
  bool weighted;
};

__device__ inline uint64_t weightOf(const RowView& r, const Filter& f, float v, uint64_t key) {
  if (key < f.cutoff) return 0;
  if (!f.weighted) return 1;
  const float p = expf((v - r.maxLogit) * r.invTemperature);
  if (!(p >= f.minP)) return 0;  // NaN too
  return __float2ull_rn(p * r.massScale);
}

struct SelectShared {
  unsigned long long mass[256];
  unsigned long long maxKey[256];
  unsigned int count[256];
  unsigned long long stageWeight[kWarps][32];
  unsigned long long stageKey[kWarps][32];
  unsigned long long total;
  unsigned long long above;
  unsigned long long uniqueKey;
  int digit;
  int unique;
  int gathered;
  unsigned long long topKeys[kMaxTopLogprobs];
};

/** Sum of the filter's weights over the row. */
__device__ uint64_t totalWeight(SelectShared& sh, const RowView& r, const Filter& f) {
  if (threadIdx.x == 0) sh.total = 0;
  __syncthreads();
  unsigned long long local = 0;
  for (int i = threadIdx.x; i < r.vocab; i += blockDim.x) {
    const float v = r.logits[i];
    local += weightOf(r, f, v, keyOf(r, i, v));
  }
  for (int offset = 16; offset > 0; offset >>= 1) local += __shfl_xor_sync(0xffffffffu, local, offset);
  if ((threadIdx.x & 31) == 0 && local) atomicAdd(&sh.total, local);
  __syncthreads();
  const uint64_t total = sh.total;
  __syncthreads();
  return total;
}

/**
 * The key of the first token, in the rule's order over the filtered tokens, whose inclusive
 * cumulative weight reaches `goal` (1 <= goal <= the filter's total weight).
 */
__device__ uint64_t searchKey(SelectShared& sh, const RowView& r, const Filter& f, uint64_t goal) {
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  uint64_t prefix = 0, prefixMask = 0, above = 0;
  const int loTop = ((r.idBits + 7) / 8) * 8 - 8;
  for (int shift = 56; shift >= 0; shift -= 8) {
    if (shift < 32 && shift > loTop) continue;  // id digits that are zero for every token
    for (int b = threadIdx.x; b < 256; b += blockDim.x) {
      sh.mass[b] = 0;
      sh.maxKey[b] = 0;
      sh.count[b] = 0;
    }
    __syncthreads();
    for (int base = 0; base < r.vocab; base += blockDim.x) {
      const int i = base + threadIdx.x;
      uint64_t weight = 0, key = 0;
      int digit = 256;
      if (i < r.vocab) {
        const float v = r.logits[i];
        key = keyOf(r, i, v);
        if ((key & prefixMask) == prefix) {
          weight = weightOf(r, f, v, key);
          if (weight) digit = int((key >> shift) & 255);
        }
      }
      // One shared atomic per distinct digit per warp: logits cluster in a few bins.
      const unsigned peers = __match_any_sync(0xffffffffu, digit);
      sh.stageWeight[warp][lane] = weight;
      sh.stageKey[warp][lane] = key;
      __syncwarp();
      if (digit < 256 && lane == __ffs(peers) - 1) {
        unsigned long long sum = 0, best = 0;
        for (unsigned m = peers; m; m &= m - 1) {
          const int l = __ffs(m) - 1;
          sum += sh.stageWeight[warp][l];
          const unsigned long long key = sh.stageKey[warp][l];
          best = key > best ? key : best;
        }
        atomicAdd(&sh.mass[digit], sum);
        atomicAdd(&sh.count[digit], unsigned(__popc(peers)));
        atomicMax(&sh.maxKey[digit], best);
      }
      __syncwarp();
    }
    __syncthreads();
    if (threadIdx.x == 0) {
      uint64_t run = above;
      int chosen = -1;
      for (int b = 255; b >= 0; b--) {
        if (run + sh.mass[b] >= goal) {
          chosen = b;
          break;
        }
        run += sh.mass[b];
      }
      if (chosen < 0) {  // goal past the total (cannot happen for a valid goal): the last token
        for (int b = 0; b < 256 && chosen < 0; b++)
          if (sh.count[b]) chosen = b;
        run -= sh.mass[chosen < 0 ? 0 : chosen];
        if (chosen < 0) chosen = 0;
      }
      sh.above = run;
      sh.digit = chosen;
      sh.unique = sh.count[chosen] == 1;
      sh.uniqueKey = sh.maxKey[chosen];
    }
    __syncthreads();
    above = sh.above;
    prefix |= uint64_t(sh.digit) << shift;
    prefixMask |= uint64_t(255) << shift;
    const bool unique = sh.unique;
    const uint64_t uniqueKey = sh.uniqueKey;
    __syncthreads();
    if (unique) return uniqueKey;
  }
  return prefix;
}

__global__ void __launch_bounds__(kThreads) selectKernel(SamplingArgs a) {
  __shared__ SelectShared sh;
  const int s = blockIdx.x;
  const size_t rowBase = size_t(s) * a.vocab;
  int token = a.tokens[s];
  const float temperature = a.temperature[s];
  const int want = a.logprobsK[s];
  int idBits = 1;
  while ((1u << idBits) < unsigned(a.vocab)) idBits++;
  RowView r{a.logits + rowBase, a.vocab, idBits, a.logits[rowBase + token], 1.f, ldexpf(1.f, 62 - idBits)};
  if (temperature > 0.f) {
    r.invTemperature = 1.f / temperature;
    Filter f{0, 0.f, false};
    const int k = a.topK[s] > 0 ? min(a.topK[s], a.vocab) : a.vocab;
    if (k < a.vocab) f.cutoff = searchKey(sh, r, f, uint64_t(k));
    f.weighted = true;
    const float topP = a.topP[s];
    // A row without a finite maximum has no mass anywhere: it keeps its argmax.
    if (topP < 1.f) {
      const uint64_t total = totalWeight(sh, r, f);
      const uint64_t goal = uint64_t(ceil(double(topP) * double(total)));
      if (total > 0) f.cutoff = searchKey(sh, r, f, min(max(goal, uint64_t(1)), total));
    }
    f.minP = min(a.minP[s], 1.f);
    const uint64_t kept = totalWeight(sh, r, f);
    // cumulative > random * kept  <=>  cumulative >= floor(random * kept) + 1
    const uint64_t target = uint64_t(floor(double(a.random[s]) * double(kept))) + 1;
    if (kept > 0) token = a.vocab - 1 - int(uint32_t(searchKey(sh, r, f, min(target, kept))));
  }
  if (threadIdx.x == 0) a.tokens[s] = token;
  if (want < 0 || a.logprobs == nullptr) return;
  const float lse = a.rowLse[s];
  if (threadIdx.x == 0) a.logprobs[s] = a.logits[rowBase + token] - lse;
  if (a.maxTopK <= 0) return;
  const int n = min(min(want, a.vocab), kMaxTopLogprobs);
  if (n > 0) {
    // The n best tokens are those with a key at or above the n-th best key: gather, then rank.
    const uint64_t nth = searchKey(sh, r, Filter{0, 0.f, false}, uint64_t(n));
    if (threadIdx.x == 0) sh.gathered = 0;
    __syncthreads();
    for (int i = threadIdx.x; i < a.vocab; i += blockDim.x) {
      const float v = r.logits[i];
      const uint64_t key = keyOf(r, i, v);
      if (key >= nth) {
        const int slot = atomicAdd(&sh.gathered, 1);
        if (slot < n) sh.topKeys[slot] = key;
      }
    }
    __syncthreads();
  }
  for (int i = threadIdx.x; i < a.maxTopK; i += blockDim.x) {
    int id = 0;
    float lp = 0.f;
    int rank = i;
    if (i < n) {
      const uint64_t key = sh.topKeys[i];
      rank = 0;
      for (int j = 0; j < n; j++) rank += sh.topKeys[j] > key ? 1 : 0;
      id = a.vocab - 1 - int(uint32_t(key));
      lp = fromOrderedBits(uint32_t(key >> 32)) - lse;
    }
    a.topIds[size_t(s) * a.maxTopK + rank] = id;
    a.topLogprobs[size_t(s) * a.maxTopK + rank] = lp;
  }
}

}  // namespace

void launchSampling(const SamplingArgs& a, cudaStream_t stream) {
  if (a.numSeqs == 0) return;
  if (a.biasStart != nullptr) {
    logitBiasKernel<<<a.numSeqs, 256, 0, stream>>>(a);
    CUDA_CHECK_LAUNCH("logit bias kernel");
  }
  if (a.repetition != nullptr) {
    penaltiesKernel<<<a.numSeqs, 256, 0, stream>>>(a);
    CUDA_CHECK_LAUNCH("penalties kernel");
  }
  if (a.maskRowOf != nullptr) {
    tokenMaskKernel<<<a.numSeqs, 256, 0, stream>>>(a);
    CUDA_CHECK_LAUNCH("token mask kernel");
  }
  rowStatsKernel<<<a.numSeqs, kThreads, 0, stream>>>(a);
  CUDA_CHECK_LAUNCH("log-sum-exp / argmax kernel");
  if (!a.sortPath) {
    selectKernel<<<a.numSeqs, kThreads, 0, stream>>>(a);
    CUDA_CHECK_LAUNCH("sampling (radix select) kernel");
    return;
  }
  if (a.needSort) {
    iotaKernel<<<a.numSeqs, 256, 0, stream>>>(a);
    CUDA_CHECK_LAUNCH("iota kernel");
    launchSegmentedSort(a, stream);
  }
  sortedFinishKernel<<<a.numSeqs, kThreads, 0, stream>>>(a);
  CUDA_CHECK_LAUNCH("sampling (sorted) kernel");
}

}  // namespace sluice
