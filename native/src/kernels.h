// Host-side launchers of the addon's CUDA kernels. Every launcher enqueues on `stream` and checks
// the launch; none synchronizes, so they can be captured into CUDA graphs.
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

namespace sluice {

using bf16 = __nv_bfloat16;

enum class DType : int { F32 = 0, BF16 = 1, F16 = 2 };

inline size_t dtypeSize(DType t) { return t == DType::F32 ? 4 : 2; }

// ---- elementwise.cu ----
/** out[t] = table[tokenIds[t]] (f32 residual stream). Ids outside [0, vocab) give a zero row. */
void launchEmbedding(const bf16* table, int vocab, int cols, const int* tokenIds, int rows, float* out,
                     cudaStream_t stream);
/** out = rmsnorm(x) * weight; x f32 or bf16. */
void launchRmsnorm(const void* x, DType xType, const bf16* weight, int rows, int cols, float eps, bf16* out,
                   cudaStream_t stream);
/** x += residual (x f32 in place), then out = rmsnorm(x) * weight. */
void launchAddRmsnorm(float* x, const bf16* residual, const bf16* weight, int rows, int cols, float eps, bf16* out,
                      cudaStream_t stream);
/** x += y, x f32, y bf16. */
void launchAdd(float* x, const bf16* y, size_t n, cudaStream_t stream);
/** Where rope fused with the KV write puts this step's K (rotated) and V: slot rows of the layer's cache. */
struct RopeKvWrite {
  const bf16* v;
  int vStride;
  bf16* kCache;
  bf16* vCache;
  const int* slotMapping;  // negative: padding, not written
};
/**
 * Rotates q and k in place (pairs i, i + headDim/2) at each token's position; invFreq has
 * headDim/2 entries. Rows of q and k are qStride / kStride elements apart (views of a fused qkv).
 * With kv, rotated K goes to the cache instead of back into k, and V is copied there too.
 */
void launchRope(bf16* q, int qStride, bf16* k, int kStride, const int* positions, int rows, int numHeads,
                int numKvHeads, int headDim, const double* invFreq, const RopeKvWrite* kv, cudaStream_t stream);
/** out[r] = silu(gate[r]) * up[r] over `rows` rows of `cols`; gate and up rows are inStride apart, out's cols. */
void launchSiluMul(const bf16* gate, const bf16* up, int inStride, bf16* out, int rows, int cols, cudaStream_t stream);
/** out[s] = x[queryStart[s + 1] - 1] for s < numSeqs; rows of rowBytes bytes. */
void launchGatherLast(const void* x, size_t rowBytes, const int* queryStart, int numSeqs, void* out,
                      cudaStream_t stream);
/** The dummy-weight generator of src/model/dummy-weights.ts, element by element, rounded to bf16. */
void launchDummyFill(bf16* out, size_t n, uint32_t key, double halfRange, double offset, cudaStream_t stream);
/** Converts raw f32 / f16 / bf16 elements to bf16. */
void launchConvertToBf16(const void* src, DType srcType, bf16* out, size_t n, cudaStream_t stream);
/** Converts bf16 to f32 (used by tests that read weights back). */
void launchBf16ToF32(const bf16* src, float* out, size_t n, cudaStream_t stream);

// ---- gemm.cu ----
/** out[m, n] = sum_k x[m, k] * w[n, k]: our own tensor-core GEMM, the fallback when cuBLASLt is absent. */
void launchGemmFallback(const bf16* x, const bf16* w, void* out, DType outType, int m, int n, int k,
                        cudaStream_t stream);

// ---- gemv.cu ----
/** The largest m the bandwidth GEMV takes. */
constexpr int kGemvMaxRows = 16;
bool gemvSupports(int m, int k);
/** out[m, n] = x[m, k] w[n, k]^T for m <= 16, streaming w once with 128-bit loads. */
void launchGemv(const bf16* x, const bf16* w, void* out, DType outType, int m, int n, int k, cudaStream_t stream);

// ---- attention.cu ----
struct AttentionArgs {
  const bf16* q;      // [T, numHeads, headDim], rows qStride apart
  const bf16* k;      // [T, numKvHeads, headDim]: this step's keys, rows kStride apart
  const bf16* v;      // [T, numKvHeads, headDim], rows vStride apart
  int qStride, kStride, vStride;
  /** This step's K and V are in the cache already (rope wrote them). */
  bool kvWritten;
  bf16* kCache;       // [slots, numKvHeads, headDim] for this layer
  bf16* vCache;
  bf16* out;          // [T, numHeads, headDim]
  float* partialO;    // [splits, T, numHeads, headDim] (when splits > 1)
  float* partialML;   // [splits, T, numHeads, 2]: running max and sum
  const int* slotMapping;    // [T]; negative: padding, not written
  const int* queryStart;     // [S + 1]
  const int* kvLens;         // [S]
  const int* pageTable;
  const int* pageTableStart; // [S + 1]
  const int* tiles;          // [numTiles, 2]: sequence, first query index within it
  int numTokens;
  int numTiles;
  int numHeads;
  int numKvHeads;
  int headDim;
  int pageSize;
  int splits;
  float scale;
  /** Every sequence has exactly one new token: the kernel then splits each page of keys between its rows. */
  bool decodeOnly;
};

/** Queries per tile the attention kernel takes for this head grouping. */
int attentionTileQueries(int numHeads, int numKvHeads);
/** Writes the step's K and V to their slots, then causal paged attention (split-KV when splits > 1). */
void launchAttention(const AttentionArgs& args, cudaStream_t stream);

// ---- sampling.cu ----
struct SamplingArgs {
  float* logits;  // [S, vocab], biases, penalties and masks applied in place
  int numSeqs;
  int vocab;
  const float* temperature;
  const float* topP;
  const int* topK;
  const float* minP;
  const float* random;
  const int* logprobsK;  // -1 none, 0 sampled only, k top
  // logit_bias / min_tokens (null when no row has any): row s adds biasValues[i] to logit biasIds[i]
  // for i in [biasStart[s], biasStart[s + 1]), before the penalties
  const int* biasStart;  // [S + 1]
  const int* biasIds;
  const float* biasValues;
  // penalties (null when none)
  const float* repetition;
  const float* frequency;
  const float* presence;
  const int* penaltyStart;  // [S + 1]
  const int* penaltyIds;
  const int* penaltyCounts;
  // token masks (null when no row is constrained): row maskRowOf[s] of maskBits, -1 unconstrained
  const int* maskRowOf;
  const unsigned* maskBits;
  int maskWords;
  // The previous path (SLUICE_CUDA_SAMPLER=sort): a segmented sort of the sampled rows.
  // The default (sortPath false) uses none of the fields below up to the outputs.
  bool sortPath;
  // sorting (segments empty for rows that need no sort)
  bool needSort;
  const int* segBegin;  // [S]
  const int* segEnd;    // [S]
  float* sortedValues;  // [S, vocab]
  int* sortedIds;       // [S, vocab]
  int* iotaIds;         // [S, vocab] scratch: ids 0..vocab-1 per row
  void* sortTemp;
  size_t sortTempBytes;
  // outputs
  int maxTopK;          // columns of topIds/topLogprobs
  int* tokens;          // [S]
  float* logprobs;      // [S]
  int* topIds;          // [S, maxTopK]
  float* topLogprobs;   // [S, maxTopK]
  float* rowLse;        // [S] scratch
};

/** Most top log-probs per token the device sampler returns (validateStep refuses more). */
constexpr int kMaxTopLogprobs = 256;
/** Bytes of temporary storage the segmented sort needs for numSeqs rows. */
size_t samplingSortTempBytes(int numSeqs, int vocab);
void launchSampling(const SamplingArgs& args, cudaStream_t stream);
// ---- sort.cu ----
/** Stable descending sort of each row's (logit, id) pairs over the segments [segBegin, segEnd). */
void launchSegmentedSort(const SamplingArgs& args, cudaStream_t stream);

}  // namespace sluice
