#include "attention.h"

#include <algorithm>
#include <cmath>
#include <cstring>
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
  std::vector<const float*> keys;
  std::vector<const float*> values;
};

void attendItem(const float* q, const float* kCache, const float* vCache, const AttentionBatch& b, const WorkItem& item, float* out, Scratch& s) {
  const size_t d = b.headDim;
  const size_t group = b.numHeads / b.numKvHeads;
  const size_t firstRow = size_t(b.queryStart[item.seq]);
  const size_t newTokens = size_t(b.queryStart[item.seq + 1]) - firstRow;
  const size_t past = size_t(b.kvLens[item.seq]) - newTokens;
  const size_t maxKeys = past + item.end;
  const float scale = 1.0f / std::sqrt(float(d));
  s.keys.resize(maxKeys);
  s.values.resize(maxKeys);
  const int32_t* pages = b.pageTable + b.pageTableStart[item.seq];
  for (size_t p = 0; p < maxKeys; p++) {
    const size_t slot = size_t(pages[p / b.pageSize]) * b.pageSize + p % b.pageSize;
    const size_t at = (item.kvHead * b.numSlots + slot) * d;
    s.keys[p] = kCache + at;
    s.values[p] = vCache + at;
  }
  s.scores.resize(group * maxKeys);
  s.sums.resize(group * d);
  s.totals.resize(group);
  for (size_t j = item.first; j < item.end; j++) {
    const size_t row = firstRow + j;
    const size_t keys = past + j + 1;
    const float* qRow = q + (row * b.numHeads + item.kvHead * group) * d;
    for (size_t p = 0; p < keys; p++)
      for (size_t h = 0; h < group; h++) s.scores[h * maxKeys + p] = dot(qRow + h * d, s.keys[p], d) * scale;
    for (size_t h = 0; h < group; h++) {
      float* scores = s.scores.data() + h * maxKeys;
      s.totals[h] = expShifted(scores, keys, *std::max_element(scores, scores + keys));
    }
    std::fill(s.sums.begin(), s.sums.end(), 0.0f);
    for (size_t p = 0; p < keys; p++) {
      const float* vRow = s.values[p];
      for (size_t h = 0; h < group; h++) {
        const float w = s.scores[h * maxKeys + p];
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
