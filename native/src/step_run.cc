// Running one step's forward pass on the device: the compiled op list as kernel launches, and for
// decode steps a CUDA graph per batch-size bucket, captured on the bucket's first step and
// replayed after. Reads the metadata that step_inputs.cc packed; sampling follows separately.
#include <algorithm>
#include <cmath>

#include "check.h"
#include "model.h"

namespace sluice {

namespace {
constexpr int kGraphBuckets[] = {1, 2, 4, 8, 12, 16, 24, 32, 48, 64, 80, 96, 128, 160, 192, 224, 256};
}  // namespace

int Model::bucketFor(int seqs) const {
  for (int b : kGraphBuckets)
    if (b >= seqs) return b;
  return -1;
}

int Model::chooseSplits(int numTiles, int maxRange, int tokens, bool forGraph) const {
  const int blocks = std::max(1, numTiles * config_.numKvHeads);
  int splits = std::max(1, std::min(kMaxSplits, (2 * numSms_ + blocks - 1) / blocks));
  if (!forGraph) splits = std::min(splits, std::max(1, (maxRange + 255) / 256));
  while (splits > 1 && size_t(splits) * tokens > size_t(partialTokenSplits_)) splits--;
  return splits;
}

void Model::gemm(const bf16* x, const bf16* w, void* out, DType outType, int m, int n, int k) {
  if (lt_.ready() && lt_.matmul(x, w, out, outType, m, n, k, workspace_.ptr, workspace_.bytes, stream_)) return;
  launchGemmFallback(x, w, out, outType, m, n, k, stream_);
}

void Model::runOps(int T, int S, int numTiles, int splits) {
  const StepLayout& L = *layout_;
  int* meta = static_cast<int*>(meta_.ptr);
  auto buf = [&](int id) { return activations_[id].ptr; };
  auto bf = [&](int id) { return static_cast<bf16*>(activations_[id].ptr); };
  auto weight = [&](int id) { return static_cast<const bf16*>(weights_[id].ptr); };
  auto rows = [&](int id) { return activationSpecs_[id].perToken ? T : S; };
  const size_t layerSlots = size_t(numPages_) * pageSize_ * config_.numKvHeads * config_.headDim;
  for (const Op& op : ops_) {
    switch (op.kind) {
      case OpKind::Embedding:
        launchEmbedding(weight(op.a), config_.vocabSize, activationSpecs_[op.c].cols, meta + L.tokens, T,
                        static_cast<float*>(buf(op.c)), stream_);
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
      case OpKind::Rope:
        launchRope(bf(op.a), bf(op.d), meta + L.positions, T, config_.numHeads, config_.numKvHeads, config_.headDim,
                   static_cast<const double*>(invFreq_.ptr), stream_);
        break;
      case OpKind::Attention: {
        AttentionArgs a{};
        a.q = bf(op.a);
        a.k = bf(op.b);
        a.v = bf(op.d);
        a.kCache = static_cast<bf16*>(kv_.ptr) + size_t(2 * op.layer) * layerSlots;
        a.vCache = static_cast<bf16*>(kv_.ptr) + size_t(2 * op.layer + 1) * layerSlots;
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
        launchSiluMul(bf(op.a), bf(op.d), bf(op.c), size_t(rows(op.a)) * activationSpecs_[op.a].cols, stream_);
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
