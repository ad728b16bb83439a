// The model on one CUDA device: BF16 weights, the paged KV cache, activation buffers, the compiled
// op list of src/model/graph.ts, CUDA graphs of decode steps per batch-size bucket, and sampling.
// model.cc holds setup and the step's outline; step_inputs.cc packs a step's metadata,
// step_run.cc runs or replays its forward pass, step_sampling.cc samples.
// Not thread-safe by itself: the addon serializes calls (one step at a time, off the JS thread).
#pragma once
#include <cuda_runtime.h>

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <tuple>
#include <vector>

#include "cublaslt.h"
#include "device_buffer.h"
#include "kernels.h"
#include "nccl_group.h"
#include "step_inputs.h"

namespace sluice {

/** Attention work splits per tile, and the largest decode batch with a CUDA graph. */
constexpr int kMaxSplits = 16;
constexpr int kMaxGraphBatch = 512;

enum class OpKind : int {
  Embedding = 0,
  Rmsnorm = 1,
  AddRmsnorm = 2,
  Linear = 3,
  Rope = 4,
  Attention = 5,
  SiluMul = 6,
  Add = 7,
  GatherLast = 8,
  Sample = 9,
  AllReduce = 10,
  AllGather = 11,
};

/** One graph op; operand meaning per kind is documented in backends/cuda/compile.ts. */
struct Op {
  OpKind kind;
  int a, b, c, d, layer;
};

struct ActivationSpec {
  bool perToken;
  int cols;
  DType dtype;
  /** A view: columns [colOffset, colOffset + cols) of activation viewOf's rows (-1: its own buffer). */
  int viewOf = -1;
  int colOffset = 0;
};

struct WeightSpec {
  int rows;
  int cols;  // 1-D tensors: rows = length, cols = 1
};

struct ModelConfig {
  int hiddenSize, intermediateSize, numLayers, numHeads, numKvHeads, headDim, vocabSize;
  float rmsNormEps;
  std::vector<double> invFreq;
};

struct StepResult {
  std::vector<int> tokens;
  bool hasLogprobs = false;
  std::vector<float> logprobs;
  int topK = 0;
  std::vector<int> topIds;
  std::vector<float> topLogprobs;
};

class Model {
 public:
  Model(int device, bool graphCapture);
  ~Model();
  Model(const Model&) = delete;
  Model& operator=(const Model&) = delete;

  /**
   * Makes this model rank `rank` of a tensor-parallel group (before configure(): a graph with
   * all_reduce / all_gather ops needs one). The group's device for the rank must be this model's.
   */
  void joinGroup(std::shared_ptr<NcclGroup> group, int rank);
  int rank() const { return rank_; }
  int tpSize() const { return group_ ? group_->size() : 1; }

  void configure(const ModelConfig& config, std::vector<ActivationSpec> activations, std::vector<Op> ops,
                 std::vector<WeightSpec> weights);
  /** Rows [rowOffset, rowOffset + byteLength / row bytes) of weight id (fused weights load part by part). */
  void setWeight(int id, const void* bytes, size_t byteLength, DType sourceType, int rowOffset = 0);
  /** `rows` rows (all when < 0) from rowOffset, generated as a tensor of their own. */
  void dummyWeight(int id, uint32_t key, double halfRange, double offset, int rowOffset = 0, int rows = -1);
  /**
   * `rows` rows from rowOffset generated as a window of a larger dummy tensor of sourceCols
   * columns, from its row sourceRowStart and column sourceColStart (a tensor-parallel rank's slice).
   */
  void dummyWeightWindow(int id, uint32_t key, double halfRange, double offset, int rowOffset, int rows, int sourceCols,
                         int sourceRowStart, int sourceColStart);
  /** Copies a weight back as f32 (tests compare it with the host generator). */
  std::vector<float> readWeight(int id);
  /** Test access to activation buffers: the first `rows` rows, as f32 (bf16 buffers converted). */
  std::vector<float> readActivation(int id, int rows);
  void writeActivation(int id, const std::vector<float>& values);
  /**
   * Prompt log-probs: the graph's final norm and lm-head over the given token rows of the last
   * step's residual stream (what gather_last reads), as f32 logits [rows, vocab]. Call after a
   * forward(), before the next one.
   */
  std::vector<float> headLogits(const std::vector<int>& rows);
  void allocateKv(int numPages, int pageSize);
  void memory(size_t& freeBytes, size_t& totalBytes);
  StepResult forward(const StepInput& input);
  /**
   * The same step in two calls, for a step whose token masks are still being computed on the
   * host: launchForward checks and packs the step (its mask fields are not read) and launches the
   * forward pass without waiting for it; sampleLaunched takes the masks, queues their upload
   * behind the forward pass on the stream, samples and reads back. A launchForward with a step
   * still unsampled drops that step's sampling.
   */
  void launchForward(StepInput input);
  StepResult sampleLaunched(StepMask mask);
  /** Both take the model's lock: the addon may ask while a step runs on a worker thread. */
  std::string description();
  int graphsCaptured() {
    std::lock_guard<std::mutex> guard(mutex_);
    return int(graphs_.size());
  }
  std::mutex& lock() { return mutex_; }

 private:
  void useDevice() const;
  /** Throws when an earlier step left the context unusable. */
  void checkNotFailed() const;
  /** Runs a step's device work; a CudaError other than out-of-memory marks the model failed. */
  template <typename F>
  auto failOnFault(F&& work) -> decltype(work());
  /** Packs a checked step, copies its metadata over and launches its forward pass; does not wait for the device. */
  StepShape launch(const StepInput& in);
  /** Host-to-device copy on the model's stream, finished before returning. */
  void upload(void* device, const void* host, size_t bytes);
  /** Forgets the configured model: graphs, weights, activations, KV cache and capacities. */
  void resetState();
  void ensureCapacity(int tokens, int seqs, int pageEntries, int maxTopK, int sortRows);
  void allocateActivations();
  void dropGraphs();
  // step_run.cc: the forward pass, replayed from a captured graph when the shape has a bucket.
  void runStep(const StepShape& shape, const PackedStep& packed);
  int chooseSplits(int numTiles, int maxRange, int tokens, bool forGraph) const;
  void runOps(int tokens, int seqs, int numTiles, int splits);
  void gemm(const bf16* x, const bf16* w, void* out, DType outType, int m, int n, int k);
  /** The GEMM without the GEMV: cuBLASLt, else our tensor-core kernel. */
  void libraryGemm(const bf16* x, const bf16* w, void* out, DType outType, int m, int n, int k);
  /** Times the GEMV against libraryGemm on this shape (eager runs only); true when the GEMV is faster. */
  bool gemvWins(const bf16* x, const bf16* w, void* out, DType outType, int m, int n, int k);
  int bucketFor(int seqs) const;
  // step_sampling.cc: next tokens (and log-probs) of the real sequences, read back to the host.
  StepResult sample(const StepInput& in, const StepShape& shape);

  int device_;
  bool graphCapture_;
  /** SLUICE_CUDA_FUSE=0: rope and the KV write as separate kernels (default: rope writes K and V). */
  bool fuseRopeKv_ = true;
  /** Per op: for a rope op followed by an attention op on the same q and k, that attention op. */
  std::vector<int> ropeAttention_;
  /** Largest decode batch replayed from a graph: SLUICE_CUDA_GRAPH_MAX (256 was the old limit). */
  int graphMaxBatch_ = kMaxGraphBatch;
  /** SLUICE_CUDA_SAMPLER=sort: the previous, sorting sampler (see sampling.cu). */
  bool sortSampler_ = false;
  /** SLUICE_CUDA_GEMV: m <= 16 GEMMs on our GEMV never (off), always (on) or when timed faster (auto). */
  enum class GemvMode { Off, On, Auto } gemvMode_ = GemvMode::Auto;
  /** Auto mode's verdict per (m, n, k, out type): true when the GEMV won. */
  std::map<std::tuple<int, int, int, int>, bool> gemvChoice_;
  /** Tensor parallelism: the communicators and this model's rank (none: a plain single-GPU model). */
  std::shared_ptr<NcclGroup> group_;
  int rank_ = 0;
  cudaStream_t stream_ = nullptr;
  int numSms_ = 0;
  std::string deviceName_;
  CublasLt lt_;
  DeviceBuffer workspace_;

  ModelConfig config_{};
  std::vector<ActivationSpec> activationSpecs_;
  std::vector<Op> ops_;
  std::vector<WeightSpec> weightSpecs_;
  std::vector<DeviceBuffer> weights_;
  std::vector<DeviceBuffer> activations_;
  int logitsBuffer_ = -1;
  /** Per activation: the columns its rows are allocated with, when more than its own (an all_gather's send buffer). */
  std::vector<int> allocCols_;
  /** all_gather: each rank sends capSeqs_ x gatherCols_ floats (the widest part) into gathered_. */
  int gatherCols_ = 0;
  DeviceBuffer gathered_;
  DeviceBuffer invFreq_;

  DeviceBuffer kv_;
  int numPages_ = 0;
  int pageSize_ = 0;

  // Capacities (rows) of the activation and metadata buffers; growing them drops captured graphs.
  int capTokens_ = 0, capSeqs_ = 0, capPageEntries_ = 0, capTopK_ = 0, capSortRows_ = 0;
  std::unique_ptr<StepLayout> layout_;  // offsets of the step metadata in meta_
  DeviceBuffer meta_;
  PinnedBuffer metaHost_;
  DeviceBuffer partialO_, partialML_;
  int partialTokenSplits_ = 0;
  DeviceBuffer sortedValues_, sortedIds_, iotaIds_, sortTemp_;
  size_t sortTempBytes_ = 0;
  DeviceBuffer penalties_;
  DeviceBuffer tokenMask_;
  PinnedBuffer tokenMaskHost_;  // staging for the masks' asynchronous upload
  /** The step launchForward() launched and sampleLaunched() has not sampled yet. */
  struct LaunchedStep {
    StepInput input;
    StepShape shape;
  };
  std::unique_ptr<LaunchedStep> launched_;
  DeviceBuffer logitBias_;
  DeviceBuffer outputs_;
  PinnedBuffer outputsHost_;

  std::map<int, cudaGraphExec_t> graphs_;
  std::string failed_;
  std::mutex mutex_;
};

/** cudaGetDeviceCount without throwing: count 0 and a reason when there is no usable device. */
struct DeviceProbe {
  int count = 0;
  int errorCode = 0;
  std::string message;
};
DeviceProbe probeDevices();

}  // namespace sluice
