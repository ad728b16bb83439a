// Running one step's forward pass on the device: the compiled op list as kernel launches, and for
// decode steps a CUDA graph per batch-size bucket, captured on the bucket's first step and
// replayed after. Reads the metadata that step_inputs.cc packed; sampling follows separately.
#include <algorithm>
#include <cmath>

#include "check.h"
#include "model.h"
#include "tensor_parallel.h"

namespace sluice {

namespace {
constexpr int kGraphBuckets[] = {1,   2,   4,   8,   12,  16,  24,  32,  48,  64,  80, 96,
                                 128, 160, 192, 224, 256, 320, 384, 448, 512};
}  // namespace

int Model::bucketFor(int seqs) const {
  for (int b : kGraphBuckets)
    if (b >= seqs) return b <= graphMaxBatch_ ? b : -1;
  return -1;
}

int Model::chooseSplits(int numTiles, int maxRange, int tokens, bool forGraph) const {
  const int blocks = std::max(1, numTiles * config_.numKvHeads);
  int splits = std::max(1, std::min(kMaxSplits, (2 * numSms_ + blocks - 1) / blocks));
  if (!forGraph) splits = std::min(splits, std::max(1, (maxRange + 255) / 256));
  while (splits > 1 && size_t(splits) * tokens > size_t(partialTokenSplits_)) splits--;
  return splits;
}

void Model::libraryGemm(const bf16* x, const bf16* w, void* out, DType outType, int m, int n, int k) {
  if (lt_.ready() && lt_.matmul(x, w, out, outType, m, n, k, workspace_.ptr, workspace_.bytes, stream_)) return;
  launchGemmFallback(x, w, out, outType, m, n, k, stream_);
}

bool Model::gemvWins(const bf16* x, const bf16* w, void* out, DType outType, int m, int n, int k) {
  cudaEvent_t marks[3];
  for (auto& e : marks) CUDA_CHECK(cudaEventCreate(&e));
  constexpr int kReps = 3;
  // One warm-up each (cuBLASLt picks its plan on the first call), then both timed back to back.
  launchGemv(x, w, out, outType, m, n, k, stream_);
  libraryGemm(x, w, out, outType, m, n, k);
  CUDA_CHECK(cudaEventRecord(marks[0], stream_));
  for (int i = 0; i < kReps; i++) launchGemv(x, w, out, outType, m, n, k, stream_);
  CUDA_CHECK(cudaEventRecord(marks[1], stream_));
  for (int i = 0; i < kReps; i++) libraryGemm(x, w, out, outType, m, n, k);
  CUDA_CHECK(cudaEventRecord(marks[2], stream_));
  CUDA_CHECK(cudaEventSynchronize(marks[2]));
  float gemvMs = 0.f, libraryMs = 0.f;
  CUDA_CHECK(cudaEventElapsedTime(&gemvMs, marks[0], marks[1]));
  CUDA_CHECK(cudaEventElapsedTime(&libraryMs, marks[1], marks[2]));
  for (auto& e : marks) cudaEventDestroy(e);
  return gemvMs < libraryMs;
}

void Model::gemm(const bf16* x, const bf16* w, void* out, DType outType, int m, int n, int k) {
  if (gemvMode_ != GemvMode::Off && gemvSupports(m, k)) {
    bool useGemv = gemvMode_ == GemvMode::On;
    if (gemvMode_ == GemvMode::Auto) {
      const auto shape = std::make_tuple(m, n, k, int(outType));
      auto choice = gemvChoice_.find(shape);
      if (choice == gemvChoice_.end()) {
        cudaStreamCaptureStatus capturing = cudaStreamCaptureStatusNone;
        CUDA_CHECK(cudaStreamIsCapturing(stream_, &capturing));
        // A graph's launches were all run eagerly just before its capture, so a shape first
        // seen while capturing is rare; it takes the library path until an eager run decides.
        if (capturing == cudaStreamCaptureStatusNone) choice = gemvChoice_.emplace(shape, gemvWins(x, w, out, outType, m, n, k)).first;
      }
      useGemv = choice != gemvChoice_.end() && choice->second;
    }
    if (useGemv) {
      launchGemv(x, w, out, outType, m, n, k, stream_);
      return;
    }
  }
  libraryGemm(x, w, out, outType, m, n, k);
}

void Model::runOps(int T, int S, int numTiles, int splits) {
  const StepLayout& L = *layout_;
  int* meta = static_cast<int*>(meta_.ptr);
  // A view's rows live in its parent's, from its column offset, parent-width apart.
  auto buf = [&](int id) -> void* {
    const ActivationSpec& a = activationSpecs_[id];
    if (a.viewOf < 0) return activations_[id].ptr;
    return static_cast<unsigned char*>(activations_[a.viewOf].ptr) + size_t(a.colOffset) * dtypeSize(a.dtype);
  };
  auto stride = [&](int id) {
    const ActivationSpec& a = activationSpecs_[id];
    return a.viewOf < 0 ? a.cols : activationSpecs_[a.viewOf].cols;
  };
  auto bf = [&](int id) { return static_cast<bf16*>(buf(id)); };
  auto weight = [&](int id) { return static_cast<const bf16*>(weights_[id].ptr); };
  auto rows = [&](int id) { return activationSpecs_[id].perToken ? T : S; };
  const size_t layerSlots = size_t(numPages_) * pageSize_ * config_.numKvHeads * config_.headDim;
  auto kCacheOf = [&](int layer) { return static_cast<bf16*>(kv_.ptr) + size_t(2 * layer) * layerSlots; };
  auto vCacheOf = [&](int layer) { return static_cast<bf16*>(kv_.ptr) + size_t(2 * layer + 1) * layerSlots; };
  std::vector<bool> kvWritten(ops_.size(), false);
  auto ncclCheck = [&](nccl::Result result, const char* what) {
    try {
      group_->lib().check(result, what);
    } catch (const std::runtime_error& e) {
      throw CudaError(e.what());
    }
  };
  for (size_t index = 0; index < ops_.size(); index++) {
    const Op& op = ops_[index];
    switch (op.kind) {
      case OpKind::Embedding:
        if (op.d >= 0) {  // a rank's slice of the table, from vocabulary id op.d
          launchEmbeddingSlice(weight(op.a), op.d, weightSpecs_[op.a].rows, activationSpecs_[op.c].cols, meta + L.tokens, T,
                               static_cast<float*>(buf(op.c)), stream_);
        } else {
          launchEmbedding(weight(op.a), config_.vocabSize, activationSpecs_[op.c].cols, meta + L.tokens, T,
                          static_cast<float*>(buf(op.c)), stream_);
        }
        break;
      case OpKind::Rmsnorm:
        launchRmsnorm(buf(op.a), activationSpecs_[op.a].dtype, weight(op.b), rows(op.a), activationSpecs_[op.a].cols,
                      config_.rmsNormEps, bf(op.c), stream_);
        break;
      case OpKind::AddRmsnorm:
        launchAddRmsnorm(static_cast<float*>(buf(op.a)), bf(op.d), weight(op.b), rows(op.a),
                         activationSpecs_[op.a].cols, config_.rmsNormEps, bf(op.c), stream_);
        break;
      case OpKind::Linear:
        gemm(bf(op.a), weight(op.b), buf(op.c), activationSpecs_[op.c].dtype, rows(op.a), weightSpecs_[op.b].rows,
             weightSpecs_[op.b].cols);
        break;
      case OpKind::Rope: {
        const int attention = fuseRopeKv_ ? ropeAttention_[index] : -1;
        RopeKvWrite kvWrite{};
        if (attention >= 0) {
          const Op& at = ops_[attention];
          kvWrite = RopeKvWrite{bf(at.d), stride(at.d), kCacheOf(at.layer), vCacheOf(at.layer), meta + L.slots};
          kvWritten[attention] = true;
        }
        launchRope(bf(op.a), stride(op.a), bf(op.d), stride(op.d), meta + L.positions, T, config_.numHeads,
                   config_.numKvHeads, config_.headDim, static_cast<const double*>(invFreq_.ptr),
                   attention >= 0 ? &kvWrite : nullptr, stream_);
        break;
      }
      case OpKind::Attention: {
        AttentionArgs a{};
        a.q = bf(op.a);
        a.k = bf(op.b);
        a.v = bf(op.d);
        a.qStride = stride(op.a);
        a.kStride = stride(op.b);
        a.vStride = stride(op.d);
        a.kvWritten = kvWritten[index];
        a.kCache = kCacheOf(op.layer);
        a.vCache = vCacheOf(op.layer);
        a.out = bf(op.c);
        a.partialO = static_cast<float*>(partialO_.ptr);
        a.partialML = static_cast<float*>(partialML_.ptr);
        a.slotMapping = meta + L.slots;
        a.queryStart = meta + L.queryStart;
        a.kvLens = meta + L.kvLens;
        a.pageTable = meta + L.pageTable;
        a.pageTableStart = meta + L.pageTableStart;
        a.tiles = meta + L.tiles;
        a.numTokens = T;
        a.numTiles = numTiles;
        a.numHeads = config_.numHeads;
        a.numKvHeads = config_.numKvHeads;
        a.headDim = config_.headDim;
        a.pageSize = pageSize_;
        a.splits = splits;
        a.scale = 1.f / std::sqrt(float(config_.headDim));
        a.decodeOnly = T == S;
        launchAttention(a, stream_);
        break;
      }
      case OpKind::SiluMul:
        launchSiluMul(bf(op.a), bf(op.d), stride(op.a), bf(op.c), rows(op.a), activationSpecs_[op.a].cols, stream_);
        break;
      case OpKind::Add:
        launchAdd(static_cast<float*>(buf(op.a)), bf(op.d), size_t(rows(op.a)) * activationSpecs_[op.a].cols, stream_);
        break;
      case OpKind::GatherLast:
        launchGatherLast(buf(op.a), activationSpecs_[op.a].cols * dtypeSize(activationSpecs_[op.a].dtype),
                         meta + L.queryStart, S, buf(op.c), stream_);
        break;
      case OpKind::Sample:
        break;  // sampling runs after the (possibly captured) forward pass
      // Collectives go on the compute stream like any kernel, so a captured graph holds them too;
      // every rank replays the same graph, one rank per thread (RanksForwardWorker in addon.cc).
      case OpKind::AllReduce: {
        const ActivationSpec& x = activationSpecs_[op.a];
        const size_t count = size_t(rows(op.a)) * x.cols;
        if (count == 0) break;
        const nccl::DataType type = x.dtype == DType::F32 ? nccl::kFloat32 : nccl::kBfloat16;
        ncclCheck(group_->lib().api()->allReduce(buf(op.a), buf(op.a), count, type, nccl::kSum, group_->comm(rank_), stream_),
                  "ncclAllReduce");
        break;
      }
      case OpKind::AllGather: {
        const int r = rows(op.a);
        if (r == 0) break;
        // Each rank sends r rows of its part plus the unused tail of a widest part, so all send
        // the same count; block k of gathered_ is then rank k's rows, row-major at its width.
        const size_t block = size_t(r) * gatherCols_;
        ncclCheck(group_->lib().api()->allGather(buf(op.a), gathered_.ptr, block, nccl::kFloat32, group_->comm(rank_), stream_),
                  "ncclAllGather");
        launchGatherParts(static_cast<const float*>(gathered_.ptr), group_->size(), r, int(block),
                          activationSpecs_[op.c].cols, static_cast<float*>(buf(op.c)), stream_);
        break;
      }
    }
  }
}

void Model::runStep(const StepShape& shape, const PackedStep& packed) {
  const int Tr = shape.rowTokens, Sr = shape.rowSeqs;
  if (shape.bucket > 0) {
    const int splits = chooseSplits(Sr, 0, Tr, true);
    auto graph = graphs_.find(shape.bucket);
    if (graph != graphs_.end()) {
      CUDA_CHECK(cudaGraphLaunch(graph->second, stream_));
    } else {
      // First step of this bucket: run it directly (which also settles cuBLASLt's choices),
      // then record the same launches for the next steps.
      runOps(Tr, Sr, packed.numTiles, splits);
      cudaGraph_t captured = nullptr;
      CUDA_CHECK(cudaStreamBeginCapture(stream_, cudaStreamCaptureModeThreadLocal));
      try {
        runOps(Tr, Sr, packed.numTiles, splits);
      } catch (...) {
        cudaStreamEndCapture(stream_, &captured);
        if (captured) cudaGraphDestroy(captured);
        throw;
      }
      CUDA_CHECK(cudaStreamEndCapture(stream_, &captured));
      cudaGraphExec_t exec = nullptr;
      const cudaError_t status = cudaGraphInstantiate(&exec, captured, 0);
      cudaGraphDestroy(captured);
      checkCuda(status, "cudaGraphInstantiate");
      graphs_[shape.bucket] = exec;
    }
  } else {
    runOps(shape.tokens, shape.seqs, packed.numTiles,
           chooseSplits(packed.numTiles, packed.maxRange, shape.tokens, false));
  }
}

}  // namespace sluice
