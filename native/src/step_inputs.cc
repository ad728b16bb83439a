#include "step_inputs.h"

#include <algorithm>
#include <cstring>
#include <string>

#include "check.h"
#include "kernels.h"

namespace sluice {

namespace {
size_t roundUp(size_t x, size_t to) { return (x + to - 1) / to * to; }
}  // namespace

StepLayout::StepLayout(int capTokens, int capSeqs, int capPages) {
  size_t at = 0;
  auto take = [&](size_t n) {
    const size_t start = at;
    at += roundUp(n, 32);  // 128-byte alignment for every array
    return start;
  };
  tokens = take(capTokens);
  positions = take(capTokens);
  slots = take(capTokens);
  queryStart = take(capSeqs + 1);
  kvLens = take(capSeqs);
  pageTableStart = take(capSeqs + 1);
  tiles = take(2 * size_t(capTokens));
  temperature = take(capSeqs);
  topP = take(capSeqs);
  minP = take(capSeqs);
  random = take(capSeqs);
  topK = take(capSeqs);
  logprobs = take(capSeqs);
  segBegin = take(capSeqs);
  segEnd = take(capSeqs);
  pageTable = take(capPages);
  words = at;
}

void validateStep(const StepInput& in, int vocabSize, int numPages, int pageSize) {
  const int T = int(in.tokenIds.size());
  const int S = int(in.kvLens.size());
  if (numPages == 0) throw CudaError("forward before allocateKvCache");
  if (S == 0 || T == 0) throw CudaError("forward: empty batch");
  if (int(in.positions.size()) != T || int(in.slotMapping.size()) != T) throw CudaError("forward: positions and slotMapping need one entry per token");
  if (int(in.queryStart.size()) != S + 1 || int(in.pageTableStart.size()) != S + 1)
    throw CudaError("forward: queryStart and pageTableStart need S + 1 entries");
  if (in.queryStart[0] != 0 || in.queryStart[S] != T) throw CudaError("forward: queryStart must run from 0 to the token count");
  if (int(in.temperature.size()) != S || int(in.topP.size()) != S || int(in.topK.size()) != S ||
      int(in.minP.size()) != S || int(in.random.size()) != S || int(in.logprobs.size()) != S)
    throw CudaError("forward: every sampling array needs one entry per sequence");
  for (int k : in.logprobs)
    if (k > kMaxTopLogprobs) throw CudaError("forward: at most " + std::to_string(kMaxTopLogprobs) + " top log-probs per token, " + std::to_string(k) + " asked");
  const long slots = long(numPages) * pageSize;
  for (int t = 0; t < T; t++) {
    if (in.tokenIds[t] < 0 || in.tokenIds[t] >= vocabSize) throw CudaError("forward: token id " + std::to_string(in.tokenIds[t]) + " is outside the vocabulary");
    if (in.slotMapping[t] < 0 || in.slotMapping[t] >= slots) throw CudaError("forward: KV slot " + std::to_string(in.slotMapping[t]) + " is outside the cache");
  }
  for (int p : in.pageTable)
    if (p < 0 || p >= numPages) throw CudaError("forward: page " + std::to_string(p) + " is outside the cache");
  for (int s = 0; s < S; s++) {
    const int count = in.queryStart[s + 1] - in.queryStart[s];
    const int pages = in.pageTableStart[s + 1] - in.pageTableStart[s];
    if (count <= 0) throw CudaError("forward: sequence " + std::to_string(s) + " has no tokens");
    if (in.kvLens[s] < count) throw CudaError("forward: kvLens[" + std::to_string(s) + "] is smaller than its new tokens");
    if (long(pages) * pageSize < in.kvLens[s]) throw CudaError("forward: sequence " + std::to_string(s) + " has too few pages for its KV length");
    if (in.pageTableStart[s] < 0 || in.pageTableStart[s + 1] > int(in.pageTable.size())) throw CudaError("forward: pageTableStart out of range");
  }
  if (in.hasPenalties) {
    if (int(in.penaltyStart.size()) != S + 1 || int(in.repetition.size()) != S || int(in.frequency.size()) != S ||
        int(in.presence.size()) != S || in.penaltyIds.size() != in.penaltyCounts.size() ||
        in.penaltyStart[S] > int(in.penaltyIds.size()) || in.penaltyStart[0] < 0)
      throw CudaError("forward: malformed penalties");
  }
  if (in.hasBias) {
    if (int(in.biasStart.size()) != S + 1 || in.biasIds.size() != in.biasValues.size() || in.biasStart[0] < 0 ||
        in.biasStart[S] > int(in.biasIds.size()))
      throw CudaError("forward: malformed logit bias");
    for (int id : in.biasIds)
      if (id < 0 || id >= vocabSize) throw CudaError("forward: logit bias token id " + std::to_string(id) + " is outside the vocabulary");
  }
  if (in.hasMask) validateMask(in, vocabSize);
}

void validateMask(const StepInput& in, int vocabSize) {
  const int S = int(in.kvLens.size());
  if (int(in.maskRowOf.size()) != S || in.maskWords != (vocabSize + 31) / 32) throw CudaError("forward: malformed token mask");
  const size_t rows = in.maskBits.size() / size_t(in.maskWords);
  for (int r : in.maskRowOf)
    if (r >= int(rows)) throw CudaError("forward: token mask row out of range");
}

StepShape shapeStep(const StepInput& in, int bucket) {
  StepShape shape;
  shape.seqs = int(in.kvLens.size());
  shape.tokens = int(in.tokenIds.size());
  shape.bucket = bucket;
  shape.rowTokens = bucket > 0 ? bucket : shape.tokens;
  shape.rowSeqs = bucket > 0 ? bucket : shape.seqs;
  for (int s = 0; s < shape.seqs; s++) {
    shape.maxTopK = std::max(shape.maxTopK, in.logprobs[s]);
    shape.wantLogprobs = shape.wantLogprobs || in.logprobs[s] >= 0;
    if (in.temperature[s] > 0.f || in.logprobs[s] > 0) shape.sortRows = s + 1;
  }
  return shape;
}

// Padded rows read token 0 at position 0, write no KV and attend over nothing.
PackedStep packStep(const StepInput& in, const StepShape& shape, const StepLayout& L, int vocabSize,
                    int tileQueries, void* hostWords) {
  const int T = shape.tokens, S = shape.seqs, Tr = shape.rowTokens, Sr = shape.rowSeqs;
  int* host = static_cast<int*>(hostWords);
  float* hostF = static_cast<float*>(hostWords);
  PackedStep packed;
  for (int t = 0; t < Tr; t++) {
    host[L.tokens + t] = t < T ? in.tokenIds[t] : 0;
    host[L.positions + t] = t < T ? in.positions[t] : 0;
    host[L.slots + t] = t < T ? in.slotMapping[t] : -1;
  }
  for (int s = 0; s <= Sr; s++) {
    host[L.queryStart + s] = s <= S ? in.queryStart[s] : in.queryStart[S] + (s - S);
    host[L.pageTableStart + s] = s <= S ? in.pageTableStart[s] : in.pageTableStart[S];
  }
  for (int s = 0; s < Sr; s++) {
    host[L.kvLens + s] = s < S ? in.kvLens[s] : 0;
    if (s < S) packed.maxRange = std::max(packed.maxRange, in.kvLens[s]);
  }
  for (int s = 0; s < Sr; s++) {
    const int count = host[L.queryStart + s + 1] - host[L.queryStart + s];
    for (int j0 = 0; j0 < count; j0 += tileQueries) {
      host[L.tiles + 2 * packed.numTiles] = s;
      host[L.tiles + 2 * packed.numTiles + 1] = j0;
      packed.numTiles++;
    }
  }
  for (int s = 0; s < S; s++) {
    hostF[L.temperature + s] = in.temperature[s];
    hostF[L.topP + s] = in.topP[s];
    hostF[L.minP + s] = in.minP[s];
    hostF[L.random + s] = in.random[s];
    host[L.topK + s] = in.topK[s];
    host[L.logprobs + s] = in.logprobs[s];
    const bool sorts = in.temperature[s] > 0.f || in.logprobs[s] > 0;
    host[L.segBegin + s] = s * vocabSize;
    host[L.segEnd + s] = sorts ? (s + 1) * vocabSize : s * vocabSize;
  }
  std::memcpy(host + L.pageTable, in.pageTable.data(), in.pageTable.size() * sizeof(int));
  packed.words = L.pageTable + in.pageTable.size();
  return packed;
}

}  // namespace sluice
