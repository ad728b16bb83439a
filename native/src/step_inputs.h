// The host half of a step: checks a StepInput against the model, decides the rows the forward pass
// runs (a decode step is padded to its CUDA-graph bucket), and packs the step's metadata into one
// host buffer laid out for the kernels. Nothing here touches the device; model.cc copies the
// packed words over and step_run.cc / step_sampling.cc read them there.
#pragma once
#include <cstddef>
#include <vector>

namespace sluice {

struct StepInput {
  std::vector<int> tokenIds, positions, queryStart, kvLens, pageTable, pageTableStart, slotMapping;
  std::vector<float> temperature, topP, minP, random;
  std::vector<int> topK, logprobs;
  bool hasPenalties = false;
  std::vector<float> repetition, frequency, presence;
  std::vector<int> penaltyStart, penaltyIds, penaltyCounts;
  // Allowed-token bitmasks of constrained rows (structured output): row maskRowOf[s] of maskBits
  // (maskWords words each, bit id % 32 of word id / 32 set = allowed), -1 for an unconstrained row.
  bool hasMask = false;
  int maskWords = 0;
  std::vector<int> maskRowOf, maskBits;
  // logit_bias / min_tokens: row s adds biasValues[i] to logit biasIds[i] for i in
  // [biasStart[s], biasStart[s + 1]); ids distinct within a row; -inf bans the token.
  bool hasBias = false;
  std::vector<int> biasStart, biasIds;
  std::vector<float> biasValues;
};

/** The mask fields of a StepInput on their own: what Model::sampleLaunched takes once they are computed. */
struct StepMask {
  bool present = false;
  int words = 0;
  std::vector<int> rowOf, bits;
};

/** Word offsets of each array in the step metadata (ints and floats share one buffer). */
struct StepLayout {
  size_t tokens, positions, slots, queryStart, kvLens, pageTableStart, tiles;
  size_t temperature, topP, minP, random, topK, logprobs, segBegin, segEnd, pageTable, words;
  StepLayout(int capTokens, int capSeqs, int capPages);
};

/** The rows a step runs and what its sampling must produce. */
struct StepShape {
  int tokens = 0, seqs = 0;        // the real batch (T, S)
  int bucket = -1;                 // CUDA-graph bucket of a captured decode step, else -1
  int rowTokens = 0, rowSeqs = 0;  // rows the forward pass runs, padded to the bucket
  int maxTopK = 0;
  bool wantLogprobs = false;
  int sortRows = 0;  // > 0 when some sequence samples with temperature or asks for top log-probs
};

/** What packing found out: the attention tiles written and the longest KV range. */
struct PackedStep {
  int numTiles = 0;
  int maxRange = 0;
  size_t words = 0;  // leading words of the metadata buffer to copy to the device
};

/**
 * A buffer's new capacity (elements) for `want`: at least double the old one, since each growth
 * reallocates (synchronizing the device) and drops every captured graph; a run that creeps
 * upwards then pays that a logarithmic number of times, not once per step.
 */
inline int grownCapacity(int have, int want) {
  if (want <= have) return have;
  const long doubled = 2L * (have > 1 ? have : 1);
  const long wanted = want > doubled ? want : doubled;
  return int(wanted < 0x3fffffffL ? wanted : 0x3fffffffL);
}

/** The page table's capacity sized from the KV pool: a step rarely lists more pages than exist. */
inline int pageTableCapacityFor(int numPages) { return numPages + numPages / 4 + 64; }

/** Throws CudaError naming the first malformed field (the mask's too, when it has one). */
void validateStep(const StepInput& in, int vocabSize, int numPages, int pageSize);

/** The token mask part of validateStep. */
void validateMask(const StepInput& in, int vocabSize);

/** `bucket` is the graph bucket chosen by the runner, or -1 to run the batch unpadded. */
StepShape shapeStep(const StepInput& in, int bucket);

/** Writes the step's metadata into `host` (at least `layout.words` words), padded rows included. */
PackedStep packStep(const StepInput& in, const StepShape& shape, const StepLayout& layout, int vocabSize,
                    int tileQueries, void* host);

}  // namespace sluice
