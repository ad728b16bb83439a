// Sampling a step's next tokens on the device from the logits the forward pass left, with the
// sampling parameters step_inputs.cc packed (plus logit biases, penalties and token masks, copied here), and reading the
// tokens and log-probs back to the host.
#include <cstring>
#include <vector>

#include "check.h"
#include "model.h"

namespace sluice {

StepResult Model::sample(const StepInput& in, const StepShape& shape) {
  const StepLayout& L = *layout_;
  const int S = shape.seqs, maxTopK = shape.maxTopK, sortRows = shape.sortRows;
  const bool wantLogprobs = shape.wantLogprobs;
  SamplingArgs sa{};
  sa.logits = static_cast<float*>(activations_[logitsBuffer_].ptr);
  sa.numSeqs = S;
  sa.vocab = config_.vocabSize;
  int* meta = static_cast<int*>(meta_.ptr);
  sa.temperature = reinterpret_cast<const float*>(meta + L.temperature);
  sa.topP = reinterpret_cast<const float*>(meta + L.topP);
  sa.minP = reinterpret_cast<const float*>(meta + L.minP);
  sa.random = reinterpret_cast<const float*>(meta + L.random);
  sa.topK = meta + L.topK;
  sa.logprobsK = meta + L.logprobs;
  if (in.hasPenalties) {
    const size_t ids = in.penaltyIds.size();
    const size_t words = 3 * size_t(S) + (S + 1) + 2 * ids;
    std::vector<int> packed(words);
    std::memcpy(packed.data(), in.repetition.data(), S * 4);
    std::memcpy(packed.data() + S, in.frequency.data(), S * 4);
    std::memcpy(packed.data() + 2 * S, in.presence.data(), S * 4);
    std::memcpy(packed.data() + 3 * S, in.penaltyStart.data(), (S + 1) * 4);
    std::memcpy(packed.data() + 4 * S + 1, in.penaltyIds.data(), ids * 4);
    std::memcpy(packed.data() + 4 * S + 1 + ids, in.penaltyCounts.data(), ids * 4);
    penalties_.reserve(words * 4);
    CUDA_CHECK(cudaMemcpyAsync(penalties_.ptr, packed.data(), words * 4, cudaMemcpyHostToDevice, stream_));
    int* p = static_cast<int*>(penalties_.ptr);
    sa.repetition = reinterpret_cast<const float*>(p);
    sa.frequency = reinterpret_cast<const float*>(p + S);
    sa.presence = reinterpret_cast<const float*>(p + 2 * S);
    sa.penaltyStart = p + 3 * S;
    sa.penaltyIds = p + 4 * S + 1;
    sa.penaltyCounts = p + 4 * S + 1 + ids;
    // The copy reads `packed`, which dies with this scope: wait for it.
    CUDA_CHECK(cudaStreamSynchronize(stream_));
  }
  if (in.hasBias) {
    const size_t entries = in.biasIds.size();
    const size_t words = size_t(S) + 1 + 2 * entries;
    std::vector<int> packed(words);
    std::memcpy(packed.data(), in.biasStart.data(), (S + 1) * 4);
    std::memcpy(packed.data() + S + 1, in.biasIds.data(), entries * 4);
    std::memcpy(packed.data() + S + 1 + entries, in.biasValues.data(), entries * 4);
    logitBias_.reserve(words * 4);
    CUDA_CHECK(cudaMemcpyAsync(logitBias_.ptr, packed.data(), words * 4, cudaMemcpyHostToDevice, stream_));
    const int* b = static_cast<const int*>(logitBias_.ptr);
    sa.biasStart = b;
    sa.biasIds = b + S + 1;
    sa.biasValues = reinterpret_cast<const float*>(b + S + 1 + entries);
    // The copy reads `packed`, which dies with this scope: wait for it.
    CUDA_CHECK(cudaStreamSynchronize(stream_));
  }
  if (in.hasMask) {
    // Staged in pinned memory and not waited for: the copy queues behind the forward pass (a step
    // launched by launchForward may still be running), and the wait for the outputs below covers
    // it, so the staging is free again before the next step writes it.
    const size_t words = size_t(S) + in.maskBits.size();
    tokenMask_.reserve(words * 4);
    tokenMaskHost_.reserve(words * 4);
    int* staged = static_cast<int*>(tokenMaskHost_.ptr);
    std::memcpy(staged, in.maskRowOf.data(), S * 4);
    std::memcpy(staged + S, in.maskBits.data(), in.maskBits.size() * 4);
    CUDA_CHECK(cudaMemcpyAsync(tokenMask_.ptr, staged, words * 4, cudaMemcpyHostToDevice, stream_));
    const int* m = static_cast<const int*>(tokenMask_.ptr);
    sa.maskRowOf = m;
    sa.maskBits = reinterpret_cast<const unsigned*>(m + S);
    sa.maskWords = in.maskWords;
  }
  sa.sortPath = sortSampler_;
  sa.needSort = sortSampler_ && sortRows > 0;
  sa.segBegin = meta + L.segBegin;
  sa.segEnd = meta + L.segEnd;
  if (sa.needSort) {
    const size_t bytes = samplingSortTempBytes(S, config_.vocabSize);
    sortTemp_.reserve(bytes);
    sa.sortedValues = static_cast<float*>(sortedValues_.ptr);
    sa.sortedIds = static_cast<int*>(sortedIds_.ptr);
    sa.iotaIds = static_cast<int*>(iotaIds_.ptr);
    sa.sortTemp = sortTemp_.ptr;
    sa.sortTempBytes = bytes;
  }
  sa.maxTopK = maxTopK;
  int* out = static_cast<int*>(outputs_.ptr);
  sa.tokens = out;
  sa.logprobs = wantLogprobs ? reinterpret_cast<float*>(out + S) : nullptr;
  sa.topIds = out + 2 * S;
  sa.topLogprobs = reinterpret_cast<float*>(out + 2 * S + size_t(S) * maxTopK);
  sa.rowLse = reinterpret_cast<float*>(out + 2 * S + 2 * size_t(S) * maxTopK);
  launchSampling(sa, stream_);

  const size_t outWords = 2 * size_t(S) + 2 * size_t(S) * maxTopK;
  CUDA_CHECK(cudaMemcpyAsync(outputsHost_.ptr, outputs_.ptr, outWords * 4, cudaMemcpyDeviceToHost, stream_));
  CUDA_CHECK(cudaStreamSynchronize(stream_));

  const int* h = static_cast<const int*>(outputsHost_.ptr);
  StepResult r;
  r.tokens.assign(h, h + S);
  r.hasLogprobs = wantLogprobs;
  if (wantLogprobs) r.logprobs.assign(reinterpret_cast<const float*>(h + S), reinterpret_cast<const float*>(h + 2 * S));
  r.topK = maxTopK;
  if (maxTopK > 0) {
    r.topIds.assign(h + 2 * S, h + 2 * S + size_t(S) * maxTopK);
    const float* top = reinterpret_cast<const float*>(h + 2 * S + size_t(S) * maxTopK);
    r.topLogprobs.assign(top, top + size_t(S) * maxTopK);
  }
  return r;
}

}  // namespace sluice
