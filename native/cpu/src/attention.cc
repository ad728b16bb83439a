#include "attention.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <type_traits>
#include <vector>

#include "thread_pool.h"
#include "vec_math.h"

namespace sluice {
namespace cpu {
namespace {

/** New tokens of one sequence per unit of work: a long prompt's rows spread over the threads. */
constexpr size_t kQueriesPerItem = 16;

/** One unit of work: the query heads of one KV head, for new tokens [first, end) of a sequence. */
struct WorkItem {
  size_t seq;
  size_t kvHead;
  size_t first;
  size_t end;
};

void writeRows(const float* rows, float* cache, const AttentionBatch& b) {
  const size_t d = b.headDim;
  for (size_t t = 0; t < b.numTokens; t++) {
    const size_t slot = size_t(b.slotMapping[t]);
    for (size_t h = 0; h < b.numKvHeads; h++) std::memcpy(cache + (h * b.numSlots + slot) * d, rows + (t * b.numKvHeads + h) * d, d * sizeof(float));
  }
}

/** A thread's arrays, kept between items. */
struct Scratch {
  std::vector<float> scores;
  std::vector<float> sums;
  std::vector<float> totals;
  std::vector<float> queries;
  std::vector<float> keysT;
  std::vector<const float*> keys;
  std::vector<const float*> values;
};

/** An item's sequence as its rows see it: new tokens before the item's, and where each position's K and V rows are. */
struct ItemKeys {
  size_t firstRow;
  size_t past;
  size_t maxKeys;
};

ItemKeys gatherKeys(const float* kCache, const float* vCache, const AttentionBatch& b, const WorkItem& item, Scratch& s) {
  const size_t firstRow = size_t(b.queryStart[item.seq]);
  const size_t newTokens = size_t(b.queryStart[item.seq + 1]) - firstRow;
  const size_t past = size_t(b.kvLens[item.seq]) - newTokens;
  const size_t maxKeys = past + item.end;
  s.keys.resize(maxKeys);
  s.values.resize(maxKeys);
  const int32_t* pages = b.pageTable + b.pageTableStart[item.seq];
  for (size_t p = 0; p < maxKeys; p++) {
    const size_t slot = size_t(pages[p / b.pageSize]) * b.pageSize + p % b.pageSize;
    const size_t at = (item.kvHead * b.numSlots + slot) * b.headDim;
    s.keys[p] = kCache + at;
    s.values[p] = vCache + at;
  }
  return {firstRow, past, maxKeys};
}

/** Any head size, one key and one head at a time. */
void attendItemScalar(const float* q, const AttentionBatch& b, const WorkItem& item, const ItemKeys& at, float* out, Scratch& s) {
  const size_t d = b.headDim;
  const size_t group = b.numHeads / b.numKvHeads;
  const float scale = 1.0f / std::sqrt(float(d));
  s.scores.resize(group * at.maxKeys);
  s.sums.resize(group * d);
  s.totals.resize(group);
  for (size_t j = item.first; j < item.end; j++) {
    const size_t row = at.firstRow + j;
    const size_t keys = at.past + j + 1;
    const float* qRow = q + (row * b.numHeads + item.kvHead * group) * d;
    for (size_t p = 0; p < keys; p++)
      for (size_t h = 0; h < group; h++) s.scores[h * at.maxKeys + p] = dot(qRow + h * d, s.keys[p], d) * scale;
    for (size_t h = 0; h < group; h++) {
      float* scores = s.scores.data() + h * at.maxKeys;
      s.totals[h] = expShifted(scores, keys, maxOf(scores, keys));
    }
    std::fill(s.sums.begin(), s.sums.end(), 0.0f);
    for (size_t p = 0; p < keys; p++) {
      const float* vRow = s.values[p];
      for (size_t h = 0; h < group; h++) {
        const float w = s.scores[h * at.maxKeys + p];
        float* acc = s.sums.data() + h * d;
        for (size_t i = 0; i < d; i++) acc[i] += w * vRow[i];
      }
    }
    float* outRow = out + (row * b.numHeads + item.kvHead * group) * d;
    for (size_t h = 0; h < group; h++) {
      const float inverse = 1.0f / s.totals[h];
      for (size_t i = 0; i < d; i++) outRow[h * d + i] = s.sums[h * d + i] * inverse;
    }
  }
}

#if defined(__AVX512F__)
constexpr size_t kLanes = 16;

/**
 * Scores of R query rows (pre-scaled, headDim apart) against 16 keys held transposed (keysT[d * 16
 * + i] = key i's d): one multiply-add per dimension and row gives all 16 scores at once, no sums
 * across lanes; R independent chains keep the FMA units busy.
 */
template <int R>
void scoreRows(const float* queries, size_t headDim, const float* keysT, float* scores, size_t stride) {
  __m512 acc[R];
  for (int r = 0; r < R; r++) acc[r] = _mm512_setzero_ps();
  for (size_t d = 0; d < headDim; d++) {
    const __m512 k = _mm512_loadu_ps(keysT + d * kLanes);
    for (int r = 0; r < R; r++) acc[r] = _mm512_fmadd_ps(_mm512_set1_ps(queries[r * headDim + d]), k, acc[r]);
  }
  for (int r = 0; r < R; r++) _mm512_storeu_ps(scores + r * stride, acc[r]);
}

/** out rows = sum_p weights[r][p] V[p] * inverse[r] for R rows over keys [0, keys): each V row loaded once for all R. */
template <int R, int kVecs>
void weightValues(const float* weights, size_t stride, size_t keys, const float* const* values, const float* inverse, float* const* out) {
  __m512 acc[R][kVecs];
  for (int r = 0; r < R; r++)
    for (int v = 0; v < kVecs; v++) acc[r][v] = _mm512_setzero_ps();
  for (size_t p = 0; p < keys; p++) {
    __m512 row[kVecs];
    for (int v = 0; v < kVecs; v++) row[v] = _mm512_loadu_ps(values[p] + v * kLanes);
    for (int r = 0; r < R; r++) {
      const __m512 w = _mm512_set1_ps(weights[r * stride + p]);
      for (int v = 0; v < kVecs; v++) acc[r][v] = _mm512_fmadd_ps(w, row[v], acc[r][v]);
    }
  }
  for (int r = 0; r < R; r++)
    for (int v = 0; v < kVecs; v++) _mm512_storeu_ps(out[r] + v * kLanes, _mm512_mul_ps(acc[r][v], _mm512_set1_ps(inverse[r])));
}

/** Calls step<R>(row) over rows [first, rows) in runs of kMost (8 or 4), then 4, 2 and 1. */
template <int kMost, typename Step>
void inRuns(size_t first, size_t rows, const Step& step) {
  size_t r = first;
  for (; r + kMost <= rows; r += kMost) step(std::integral_constant<int, kMost>(), r);
  if constexpr (kMost > 4) {
    if (r + 4 <= rows) step(std::integral_constant<int, 4>(), r), r += 4;
  }
  if (r + 2 <= rows) step(std::integral_constant<int, 2>(), r), r += 2;
  if (r < rows) step(std::integral_constant<int, 1>(), r);
}

/**
 * Head sizes of kVecs * 16: an item's query rows (row r: new token first + r / group, head r %
 * group of the KV head) against blocks of 16 keys transposed once for all rows, then softmax and
 * the weighted values a few rows at a time.
 */
template <int kVecs>
void attendItemVector(const float* q, const AttentionBatch& b, const WorkItem& item, const ItemKeys& at, float* out, Scratch& s) {
  constexpr size_t d = kVecs * kLanes;
  const size_t group = b.numHeads / b.numKvHeads;
  const size_t rows = (item.end - item.first) * group;
  const size_t stride = (at.maxKeys + kLanes - 1) / kLanes * kLanes;
  const float scale = 1.0f / std::sqrt(float(d));
  const auto tokenOf = [&](size_t r) { return item.first + r / group; };
  const auto rowAt = [&](size_t r) { return ((at.firstRow + tokenOf(r)) * b.numHeads + item.kvHead * group + r % group) * d; };
  s.queries.resize(rows * d);
  for (size_t r = 0; r < rows; r++)
    for (size_t i = 0; i < d; i++) s.queries[r * d + i] = q[rowAt(r) + i] * scale;
  s.scores.resize(rows * stride);
  s.keysT.resize(d * kLanes);
  for (size_t p0 = 0; p0 < at.maxKeys; p0 += kLanes) {
    const size_t n = std::min(kLanes, at.maxKeys - p0);
    for (size_t i = 0; i < kLanes; i++)
      for (size_t k = 0; k < d; k++) s.keysT[k * kLanes + i] = i < n ? s.keys[p0 + i][k] : 0.0f;
    // Rows whose token comes before key p0 do not see this block.
    const size_t firstToken = p0 > at.past ? p0 - at.past : 0;
    const size_t firstRow = firstToken > item.first ? (firstToken - item.first) * group : 0;
    inRuns<8>(firstRow, rows, [&](auto runRows, size_t r) { scoreRows<decltype(runRows)::value>(s.queries.data() + r * d, d, s.keysT.data(), s.scores.data() + r * stride + p0, stride); });
  }
  s.totals.resize(rows);
  for (size_t r = 0; r < rows; r++) {
    float* scores = s.scores.data() + r * stride;
    const size_t keys = at.past + tokenOf(r) + 1;
    s.totals[r] = 1.0f / expShifted(scores, keys, maxOf(scores, keys));
    std::fill(scores + keys, scores + at.maxKeys, 0.0f);  // a run of rows sums over its last row's keys
  }
  // Up to 16 accumulators (of 32 registers) for a run's rows.
  inRuns<(kVecs <= 2 ? 8 : 16 / kVecs)>(0, rows, [&](auto runRows, size_t r) {
    constexpr int R = decltype(runRows)::value;
    float* outRows[R];
    for (int i = 0; i < R; i++) outRows[i] = out + rowAt(r + i);
    weightValues<R, kVecs>(s.scores.data() + r * stride, stride, at.past + tokenOf(r + R - 1) + 1, s.values.data(), s.totals.data() + r, outRows);
  });
}
#endif

void attendItem(const float* q, const float* kCache, const float* vCache, const AttentionBatch& b, const WorkItem& item, float* out, Scratch& s) {
  const ItemKeys at = gatherKeys(kCache, vCache, b, item, s);
#if defined(__AVX512F__)
  switch (b.headDim) {
    case 16: return attendItemVector<1>(q, b, item, at, out, s);
    case 32: return attendItemVector<2>(q, b, item, at, out, s);
    case 64: return attendItemVector<4>(q, b, item, at, out, s);
    case 128: return attendItemVector<8>(q, b, item, at, out, s);
    default: break;
  }
#endif
  attendItemScalar(q, b, item, at, out, s);
}

}  // namespace

void pagedAttention(const float* q, const float* k, const float* v, float* kCache, float* vCache, const AttentionBatch& b, float* out, int threads) {
  writeRows(k, kCache, b);
  writeRows(v, vCache, b);
  // The last queries of a long prompt see the most keys: their items go first, the short ones fill in.
  std::vector<WorkItem> items;
  for (size_t seq = 0; seq < b.numSeqs; seq++) {
    const size_t newTokens = size_t(b.queryStart[seq + 1] - b.queryStart[seq]);
    for (size_t end = newTokens; end > 0; end = end > kQueriesPerItem ? end - kQueriesPerItem : 0)
      for (size_t h = 0; h < b.numKvHeads; h++) items.push_back({seq, h, end > kQueriesPerItem ? end - kQueriesPerItem : 0, end});
  }
  auto work = [&](size_t i) {
    thread_local Scratch scratch;
    attendItem(q, kCache, vCache, b, items[i], out, scratch);
  };
  if (threads <= 1 || items.size() <= 1) {
    for (size_t i = 0; i < items.size(); i++) work(i);
    return;
  }
  sharedPool().run(items.size(), std::min<size_t>(threads, items.size()), work);
}

}  // namespace cpu
}  // namespace sluice
