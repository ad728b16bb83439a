#include "model.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>

#include "check.h"
#include "step_inputs.h"
#include "tensor_parallel.h"

namespace sluice {

namespace {
constexpr size_t kWorkspaceBytes = 32u << 20;
}  // namespace

DeviceProbe probeDevices() {
  DeviceProbe probe;
  const cudaError_t status = cudaGetDeviceCount(&probe.count);
  if (status != cudaSuccess) {
    probe.errorCode = int(status);
    probe.count = 0;
    probe.message = std::string("no CUDA device (") + cudaGetErrorName(status) + ": " + cudaGetErrorString(status) + ")";
    cudaGetLastError();
  } else if (probe.count == 0) {
    probe.message = "no CUDA device";
  }
  return probe;
}

Model::Model(int device, bool graphCapture) : device_(device), graphCapture_(graphCapture) {
  const char* sampler = std::getenv("SLUICE_CUDA_SAMPLER");
  sortSampler_ = sampler != nullptr && std::string(sampler) == "sort";
  const char* fuse = std::getenv("SLUICE_CUDA_FUSE");
  fuseRopeKv_ = !(fuse != nullptr && std::string(fuse) == "0");
  if (const char* graphMax = std::getenv("SLUICE_CUDA_GRAPH_MAX")) {
    graphMaxBatch_ = std::atoi(graphMax);
    if (graphMaxBatch_ < 0 || graphMaxBatch_ > kMaxGraphBatch)
      throw CudaError("SLUICE_CUDA_GRAPH_MAX must be 0 to " + std::to_string(kMaxGraphBatch));
  }
  const char* gemv = std::getenv("SLUICE_CUDA_GEMV");
  const std::string gemvMode = gemv ? gemv : "auto";
  if (gemvMode == "off") gemvMode_ = GemvMode::Off;
  else if (gemvMode == "on") gemvMode_ = GemvMode::On;
  else if (gemvMode == "auto") gemvMode_ = GemvMode::Auto;
  else throw CudaError("SLUICE_CUDA_GEMV must be off, on or auto, not " + gemvMode);
  const DeviceProbe probe = probeDevices();
  if (probe.count == 0) throw CudaError(probe.message);
  if (device < 0 || device >= probe.count)
    throw CudaError("CUDA device " + std::to_string(device) + " does not exist (" + std::to_string(probe.count) +
                    " found)");
  CUDA_CHECK(cudaSetDevice(device));
  cudaDeviceProp prop{};
  CUDA_CHECK(cudaGetDeviceProperties(&prop, device));
  if (prop.major < 8)
    throw CudaError(std::string(prop.name) + " has compute capability " + std::to_string(prop.major) + "." +
                    std::to_string(prop.minor) + "; the CUDA backend needs 8.0 or newer (bf16 tensor cores)");
  deviceName_ = prop.name;
  numSms_ = prop.multiProcessorCount;
  CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
  if (lt_.open()) workspace_.reserve(kWorkspaceBytes);
}

Model::~Model() {
  cudaSetDevice(device_);
  if (stream_) cudaStreamSynchronize(stream_);
  dropGraphs();
  if (stream_) cudaStreamDestroy(stream_);
}

void Model::useDevice() const { CUDA_CHECK(cudaSetDevice(device_)); }

std::string Model::description() {
  std::lock_guard<std::mutex> guard(mutex_);
  return "cuda: " + deviceName_ + " (" + std::to_string(numSms_) + " SMs), GEMM " +
         (lt_.ready() ? "cuBLASLt from " + lt_.where() : "own tensor-core kernel; " + lt_.where()) +
         (graphCapture_ ? ", CUDA graphs up to batch " + std::to_string(graphMaxBatch_) : ", no CUDA graphs") +
         (gemvMode_ == GemvMode::Off ? ", no GEMV" : gemvMode_ == GemvMode::On ? ", GEMV for m <= 16" : ", GEMV for m <= 16 where timed faster") +
         (sortSampler_ ? ", sorting sampler" : "") +
         (group_ ? "; tensor-parallel rank " + std::to_string(rank_) + " of " + std::to_string(group_->size()) + " (" +
                       group_->description() + ")"
                 : "") +
         (lt_.failures().empty() ? "" : "; cuBLASLt failed on " + lt_.failures() + ", our GEMM runs those");
}

void Model::joinGroup(std::shared_ptr<NcclGroup> group, int rank) {
  if (!group || rank < 0 || rank >= group->size()) throw CudaError("joinGroup: rank " + std::to_string(rank) + " is not in the group");
  if (group->device(rank) != device_)
    throw CudaError("joinGroup: rank " + std::to_string(rank) + "'s communicator is on GPU " + std::to_string(group->device(rank)) +
                    ", this model on GPU " + std::to_string(device_));
  if (!ops_.empty()) throw CudaError("joinGroup: join before configure()");
  group_ = std::move(group);
  rank_ = rank;
}

void Model::configure(const ModelConfig& config, std::vector<ActivationSpec> activations, std::vector<Op> ops,
                      std::vector<WeightSpec> weights) {
  useDevice();
  if (config.numKvHeads <= 0 || config.numHeads % config.numKvHeads != 0)
    throw CudaError("numHeads must be a multiple of numKvHeads");
  if (config.numHeads / config.numKvHeads > 32) throw CudaError("more than 32 query heads per KV head is not supported");
  if (int(config.invFreq.size()) != config.headDim / 2) throw CudaError("invFreq must have headDim / 2 entries");
  // A second configure() starts over: no graph, buffer or capacity of the last model survives.
  CUDA_CHECK(cudaStreamSynchronize(stream_));
  resetState();
  config_ = config;
  activationSpecs_ = std::move(activations);
  ops_ = std::move(ops);
  weightSpecs_ = std::move(weights);
  weights_ = std::vector<DeviceBuffer>(weightSpecs_.size());
  activations_ = std::vector<DeviceBuffer>(activationSpecs_.size());
  allocCols_.assign(activationSpecs_.size(), 0);
  gatherCols_ = 0;
  for (size_t i = 0; i < activationSpecs_.size(); i++) {
    const ActivationSpec& a = activationSpecs_[i];
    if (a.viewOf < 0) continue;
    if (a.viewOf >= int(activationSpecs_.size()) || activationSpecs_[a.viewOf].viewOf >= 0)
      throw CudaError("a view must be of an activation that is not itself a view");
    const ActivationSpec& parent = activationSpecs_[a.viewOf];
    if (parent.perToken != a.perToken || parent.dtype != a.dtype || a.colOffset < 0 || a.colOffset + a.cols > parent.cols)
      throw CudaError("a view must lie within its parent's columns, with the same rows and dtype");
  }
  auto checkBuffer = [&](int id, const char* what) {
    if (id < 0 || id >= int(activationSpecs_.size())) throw CudaError(std::string("op refers to a bad buffer: ") + what);
    return activationSpecs_[id];
  };
  // Only these operands read or write with a row stride; any other use of a view is refused.
  auto rowStride = [&](int id) {
    const ActivationSpec& a = activationSpecs_[id];
    return a.viewOf < 0 ? a.cols : activationSpecs_[a.viewOf].cols;
  };
  auto strided = [&](int id, const char* what) {
    checkBuffer(id, what);
  };
  auto plain = [&](int id, const char* what) {
    const ActivationSpec a = checkBuffer(id, what);
    if (a.viewOf >= 0) throw CudaError(std::string("this op cannot take a view (column slice) as ") + what);
    return a;
  };
  auto checkWeight = [&](int id) {
    if (id < 0 || id >= int(weightSpecs_.size())) throw CudaError("op refers to a bad weight");
    return weightSpecs_[id];
  };
  for (const Op& op : ops_) {
    switch (op.kind) {
      case OpKind::Embedding:
        checkWeight(op.a);
        // d: the first vocabulary id of a rank's slice of the table (-1: the whole table).
        if (op.d >= 0 && op.d + weightSpecs_[op.a].rows > config.vocabSize) throw CudaError("embedding: the table slice lies outside the vocabulary");
        if (checkBuffer(op.c, "embedding out").dtype != DType::F32) throw CudaError("embedding writes an f32 buffer");
        break;
      case OpKind::Rmsnorm:
        checkWeight(op.b);
        plain(op.a, "rmsnorm x");
        if (plain(op.c, "rmsnorm out").dtype != DType::BF16) throw CudaError("rmsnorm writes a bf16 buffer");
        break;
      case OpKind::AddRmsnorm:
        checkWeight(op.b);
        if (checkBuffer(op.a, "x").dtype != DType::F32 || checkBuffer(op.d, "residual").dtype != DType::BF16 ||
            checkBuffer(op.c, "out").dtype != DType::BF16)
          throw CudaError("add_rmsnorm needs x f32, residual bf16, out bf16");
        break;
      case OpKind::Linear: {
        const WeightSpec w = checkWeight(op.b);
        const ActivationSpec x = plain(op.a, "linear x");
        const ActivationSpec out = plain(op.c, "linear out");
        if (x.dtype != DType::BF16 || w.cols != x.cols || w.rows != out.cols)
          throw CudaError("linear: shapes or dtypes do not match");
        break;
      }
      case OpKind::Rope:
        strided(op.a, "q");
        strided(op.d, "k");
        break;
      case OpKind::Attention:
        strided(op.a, "q");
        strided(op.b, "k");
        strided(op.d, "v");
        plain(op.c, "attention out");
        if (op.layer < 0 || op.layer >= config_.numLayers) throw CudaError("attention: bad layer");
        break;
      case OpKind::SiluMul:
        strided(op.a, "gate");
        strided(op.d, "up");
        if (activationSpecs_[op.a].cols != activationSpecs_[op.d].cols || rowStride(op.a) != rowStride(op.d))
          throw CudaError("silu_mul: gate and up differ in width or row stride");
        plain(op.c, "out");
        break;
      case OpKind::GatherLast:
        plain(op.a, "x");
        plain(op.c, "out");
        break;
      case OpKind::Add:
        if (checkBuffer(op.a, "x").dtype != DType::F32 || checkBuffer(op.d, "y").dtype != DType::BF16)
          throw CudaError("add needs x f32 and y bf16");
        break;
      case OpKind::Sample:
        if (checkBuffer(op.a, "logits").dtype != DType::F32 || activationSpecs_[op.a].perToken)
          throw CudaError("sample reads an f32 per-sequence logits buffer");
        logitsBuffer_ = op.a;
        break;
      case OpKind::AllReduce: {
        if (!group_) throw CudaError("all_reduce: this model is in no tensor-parallel group (joinGroup first)");
        const ActivationSpec x = plain(op.a, "all_reduce x");
        if (x.dtype != DType::F32 && x.dtype != DType::BF16) throw CudaError("all_reduce: x must be f32 or bf16");
        break;
      }
      case OpKind::AllGather: {
        if (!group_) throw CudaError("all_gather: this model is in no tensor-parallel group (joinGroup first)");
        const ActivationSpec x = plain(op.a, "all_gather x");
        const ActivationSpec out = plain(op.c, "all_gather out");
        const VocabPart part = vocabPart(out.cols, group_->size(), rank_);
        if (x.dtype != DType::F32 || out.dtype != DType::F32 || x.perToken != out.perToken)
          throw CudaError("all_gather: x and out must be f32 buffers with the same rows");
        if (x.cols != part.end - part.start)
          throw CudaError("all_gather: rank " + std::to_string(rank_) + " must send " + std::to_string(part.end - part.start) +
                          " of " + std::to_string(out.cols) + " columns (the even split), not " + std::to_string(x.cols));
        const int widest = vocabPart(out.cols, group_->size(), 0).end;
        allocCols_[op.a] = std::max(allocCols_[op.a], widest);
        gatherCols_ = std::max(gatherCols_, widest);
        break;
      }
    }
  }
  if (logitsBuffer_ < 0) throw CudaError("the graph has no sample op");
  for (const Op& op : ops_) {
    if ((op.kind == OpKind::Embedding || op.kind == OpKind::AddRmsnorm || op.kind == OpKind::Add) &&
        ((op.c >= 0 && activationSpecs_[op.c].viewOf >= 0) || (op.a >= 0 && activationSpecs_[op.a].viewOf >= 0) ||
         (op.kind != OpKind::Embedding && op.d >= 0 && activationSpecs_[op.d].viewOf >= 0)))
      throw CudaError("this op cannot take a view (column slice)");
  }
  // Rope writes this step's K (rotated) and V into the cache itself when the attention op that
  // follows reads the same q, k and v: one kernel and one pass over K fewer per layer.
  ropeAttention_.assign(ops_.size(), -1);
  for (size_t i = 0; i < ops_.size(); i++) {
    if (ops_[i].kind != OpKind::Rope) continue;
    for (size_t j = i + 1; j < ops_.size(); j++) {
      if (ops_[j].kind != OpKind::Attention) continue;
      if (ops_[j].a == ops_[i].a && ops_[j].b == ops_[i].d) ropeAttention_[i] = int(j);
      break;
    }
  }
  invFreq_.reserve(config_.invFreq.size() * sizeof(double));
  upload(invFreq_.ptr, config_.invFreq.data(), config_.invFreq.size() * sizeof(double));
  ensureCapacity(512, 256, 1 << 16, 0, 0);
}

void Model::setWeight(int id, const void* bytes, size_t byteLength, DType sourceType, int rowOffset) {
  useDevice();
  if (id < 0 || id >= int(weightSpecs_.size())) throw CudaError("setWeight: bad weight id");
  const WeightSpec& spec = weightSpecs_[id];
  const size_t rowBytes = size_t(spec.cols) * dtypeSize(sourceType);
  const size_t rows = byteLength / rowBytes;
  if (byteLength % rowBytes != 0 || rows == 0 || rowOffset < 0 || rowOffset + rows > size_t(spec.rows))
    throw CudaError("setWeight: " + std::to_string(byteLength) + " bytes from row " + std::to_string(rowOffset) +
                    " do not fit a " + std::to_string(spec.rows) + " x " + std::to_string(spec.cols) + " weight");
  const size_t n = rows * spec.cols;
  weights_[id].reserve(size_t(spec.rows) * spec.cols * sizeof(bf16));
  bf16* target = static_cast<bf16*>(weights_[id].ptr) + size_t(rowOffset) * spec.cols;
  if (sourceType == DType::BF16) {
    upload(target, bytes, byteLength);
    return;
  }
  DeviceBuffer staging;
  staging.reserve(byteLength);
  upload(staging.ptr, bytes, byteLength);
  launchConvertToBf16(staging.ptr, sourceType, target, n, stream_);
  CUDA_CHECK(cudaStreamSynchronize(stream_));
}

void Model::dummyWeight(int id, uint32_t key, double halfRange, double offset, int rowOffset, int rows) {
  useDevice();
  if (id < 0 || id >= int(weightSpecs_.size())) throw CudaError("dummyWeight: bad weight id");
  const WeightSpec& spec = weightSpecs_[id];
  if (rows < 0) rows = spec.rows - rowOffset;
  if (rowOffset < 0 || rowOffset + rows > spec.rows) throw CudaError("dummyWeight: rows outside the weight");
  weights_[id].reserve(size_t(spec.rows) * spec.cols * sizeof(bf16));
  launchDummyFill(static_cast<bf16*>(weights_[id].ptr) + size_t(rowOffset) * spec.cols, size_t(rows) * spec.cols, key,
                  halfRange, offset, stream_);
  CUDA_CHECK(cudaStreamSynchronize(stream_));
}

void Model::dummyWeightWindow(int id, uint32_t key, double halfRange, double offset, int rowOffset, int rows,
                              int sourceCols, int sourceRowStart, int sourceColStart) {
  useDevice();
  if (id < 0 || id >= int(weightSpecs_.size())) throw CudaError("dummyWeightWindow: bad weight id");
  const WeightSpec& spec = weightSpecs_[id];
  if (rows <= 0 || rowOffset < 0 || rowOffset + rows > spec.rows) throw CudaError("dummyWeightWindow: rows outside the weight");
  if (sourceRowStart < 0 || sourceColStart < 0 || sourceColStart + spec.cols > sourceCols)
    throw CudaError("dummyWeightWindow: the window lies outside its source tensor");
  weights_[id].reserve(size_t(spec.rows) * spec.cols * sizeof(bf16));
  launchDummyFillWindow(static_cast<bf16*>(weights_[id].ptr) + size_t(rowOffset) * spec.cols, rows, spec.cols, key, halfRange,
                        offset, sourceCols, sourceRowStart, sourceColStart, stream_);
  CUDA_CHECK(cudaStreamSynchronize(stream_));
}

std::vector<float> Model::readWeight(int id) {
  useDevice();
  if (id < 0 || id >= int(weightSpecs_.size()) || !weights_[id].ptr) throw CudaError("readWeight: weight not loaded");
  const size_t n = size_t(weightSpecs_[id].rows) * weightSpecs_[id].cols;
  DeviceBuffer f32;
  f32.reserve(n * sizeof(float));
  launchBf16ToF32(static_cast<const bf16*>(weights_[id].ptr), static_cast<float*>(f32.ptr), n, stream_);
  std::vector<float> out(n);
  CUDA_CHECK(cudaMemcpyAsync(out.data(), f32.ptr, n * sizeof(float), cudaMemcpyDeviceToHost, stream_));
  CUDA_CHECK(cudaStreamSynchronize(stream_));
  return out;
}

std::vector<float> Model::readActivation(int id, int rows) {
  useDevice();
  if (id < 0 || id >= int(activationSpecs_.size())) throw CudaError("readActivation: bad buffer id");
  const ActivationSpec& a = activationSpecs_[id];
  if (a.viewOf >= 0) throw CudaError("readActivation: buffer " + std::to_string(id) + " is a view; read its parent");
  if (rows < 0 || rows > (a.perToken ? capTokens_ : capSeqs_)) throw CudaError("readActivation: more rows than the buffer holds");
  const size_t n = size_t(rows) * a.cols;
  std::vector<float> out(n);
  if (a.dtype == DType::F32) {
    CUDA_CHECK(cudaMemcpyAsync(out.data(), activations_[id].ptr, n * 4, cudaMemcpyDeviceToHost, stream_));
  } else {
    DeviceBuffer f32;
    f32.reserve(std::max<size_t>(n, 1) * 4);
    launchBf16ToF32(static_cast<const bf16*>(activations_[id].ptr), static_cast<float*>(f32.ptr), n, stream_);
    CUDA_CHECK(cudaMemcpyAsync(out.data(), f32.ptr, n * 4, cudaMemcpyDeviceToHost, stream_));
    CUDA_CHECK(cudaStreamSynchronize(stream_));
  }
  CUDA_CHECK(cudaStreamSynchronize(stream_));
  return out;
}

std::vector<float> Model::headLogits(const std::vector<int>& rows) {
  useDevice();
  if (tpSize() > 1) throw CudaError("headLogits: a tensor-parallel rank holds only its part of the lm-head");
  // The graph ends gather_last (a: residual stream, c: out), rmsnorm (a: that out, b: weight), linear (b: lm-head).
  int gather = -1;
  for (size_t i = 0; i < ops_.size(); i++)
    if (ops_[i].kind == OpKind::GatherLast) gather = int(i);
  if (gather < 0 || gather + 2 >= int(ops_.size()) || ops_[gather + 1].kind != OpKind::Rmsnorm ||
      ops_[gather + 2].kind != OpKind::Linear || ops_[gather + 1].a != ops_[gather].c)
    throw CudaError("headLogits: the graph does not end in gather_last, rmsnorm, linear");
  const Op& norm = ops_[gather + 1];
  const Op& head = ops_[gather + 2];
  const ActivationSpec& x = activationSpecs_[ops_[gather].a];
  if (x.viewOf >= 0 || !x.perToken) throw CudaError("headLogits: the residual stream is not a per-token buffer");
  const int n = int(rows.size());
  if (n == 0) return {};
  const int hidden = x.cols;
  const int vocab = weightSpecs_[head.b].rows;
  // gather_last's rule out[s] = x[queryStart[s + 1] - 1] with queryStart[s + 1] = row + 1.
  std::vector<int> ends(n + 1, 0);
  for (int i = 0; i < n; i++) {
    if (rows[i] < 0 || rows[i] >= capTokens_) throw CudaError("headLogits: row " + std::to_string(rows[i]) + " is outside the step");
    ends[i + 1] = rows[i] + 1;
  }
  DeviceBuffer starts, gathered, normed, logits;
  starts.reserve(size_t(n + 1) * 4);
  gathered.reserve(size_t(n) * hidden * dtypeSize(x.dtype));
  normed.reserve(size_t(n) * hidden * sizeof(bf16));
  logits.reserve(size_t(n) * vocab * 4);
  upload(starts.ptr, ends.data(), ends.size() * 4);
  launchGatherLast(activations_[ops_[gather].a].ptr, size_t(hidden) * dtypeSize(x.dtype), static_cast<const int*>(starts.ptr), n,
                   gathered.ptr, stream_);
  launchRmsnorm(gathered.ptr, x.dtype, static_cast<const bf16*>(weights_[norm.b].ptr), n, hidden, config_.rmsNormEps,
                static_cast<bf16*>(normed.ptr), stream_);
  gemm(static_cast<const bf16*>(normed.ptr), static_cast<const bf16*>(weights_[head.b].ptr), logits.ptr, DType::F32, n, vocab,
       weightSpecs_[head.b].cols);
  std::vector<float> out(size_t(n) * vocab);
  CUDA_CHECK(cudaMemcpyAsync(out.data(), logits.ptr, out.size() * 4, cudaMemcpyDeviceToHost, stream_));
  CUDA_CHECK(cudaStreamSynchronize(stream_));
  return out;
}

void Model::writeActivation(int id, const std::vector<float>& values) {
  useDevice();
  if (id < 0 || id >= int(activationSpecs_.size())) throw CudaError("writeActivation: bad buffer id");
  const ActivationSpec& a = activationSpecs_[id];
  if (a.viewOf >= 0) throw CudaError("writeActivation: buffer " + std::to_string(id) + " is a view; write its parent");
  if (values.size() % a.cols) throw CudaError("writeActivation: length is not a multiple of the buffer's columns");
  const int rows = int(values.size() / a.cols);
  ensureCapacity(a.perToken ? rows : 1, a.perToken ? 1 : rows, 1, 0, 0);
  if (a.dtype == DType::F32) {
    upload(activations_[id].ptr, values.data(), values.size() * 4);
    return;
  }
  DeviceBuffer staging;
  staging.reserve(std::max<size_t>(values.size(), 1) * 4);
  upload(staging.ptr, values.data(), values.size() * 4);
  launchConvertToBf16(staging.ptr, DType::F32, static_cast<bf16*>(activations_[id].ptr), values.size(), stream_);
  CUDA_CHECK(cudaStreamSynchronize(stream_));
}

void Model::allocateKv(int numPages, int pageSize) {
  useDevice();
  if (numPages <= 0 || pageSize <= 0) throw CudaError("allocateKv: numPages and pageSize must be positive");
  dropGraphs();
  kv_.release();
  const size_t slotBytes = size_t(config_.numKvHeads) * config_.headDim * sizeof(bf16);
  kv_.reserve(size_t(config_.numLayers) * 2 * size_t(numPages) * pageSize * slotBytes);
  CUDA_CHECK(cudaMemsetAsync(kv_.ptr, 0, kv_.bytes, stream_));
  CUDA_CHECK(cudaStreamSynchronize(stream_));
  numPages_ = numPages;
  pageSize_ = pageSize;
  // Sized from the pool once: a step's page table rarely passes one entry per page (shared
  // prefixes can, and then it doubles), so long runs at page size 1 never regrow it step by step.
  ensureCapacity(0, 0, pageTableCapacityFor(numPages), 0, 0);
}

void Model::memory(size_t& freeBytes, size_t& totalBytes) {
  useDevice();
  CUDA_CHECK(cudaMemGetInfo(&freeBytes, &totalBytes));
}

void Model::upload(void* device, const void* host, size_t bytes) {
  // On the model's stream (kernels there do not wait for the legacy default stream), then waited
  // for: `host` may be pageable memory the caller frees as soon as this returns.
  CUDA_CHECK(cudaMemcpyAsync(device, host, bytes, cudaMemcpyHostToDevice, stream_));
  CUDA_CHECK(cudaStreamSynchronize(stream_));
}

void Model::resetState() {
  dropGraphs();
  gemvChoice_.clear();
  weights_.clear();
  activations_.clear();
  kv_.release();
  numPages_ = pageSize_ = 0;
  logitsBuffer_ = -1;
  capTokens_ = capSeqs_ = capPageEntries_ = capTopK_ = capSortRows_ = 0;
  layout_.reset();
  partialTokenSplits_ = 0;
  launched_.reset();
}

void Model::dropGraphs() {
  for (auto& [bucket, exec] : graphs_) cudaGraphExecDestroy(exec);
  graphs_.clear();
}

void Model::ensureCapacity(int tokens, int seqs, int pageEntries, int maxTopK, int sortRows) {
  const bool grow = tokens > capTokens_ || seqs > capSeqs_ || pageEntries > capPageEntries_;
  if (grow) {
    dropGraphs();
    capTokens_ = grownCapacity(capTokens_, tokens);
    capSeqs_ = grownCapacity(capSeqs_, seqs);
    capPageEntries_ = grownCapacity(capPageEntries_, pageEntries);
    layout_ = std::make_unique<StepLayout>(capTokens_, capSeqs_, capPageEntries_);
    meta_.reserve(layout_->words * 4);
    metaHost_.reserve(layout_->words * 4);
    allocateActivations();
    const size_t headCols = size_t(config_.numHeads) * config_.headDim;
    partialTokenSplits_ = std::max(capTokens_, kMaxSplits * std::min(capSeqs_, kMaxGraphBatch));
    partialO_.reserve(size_t(partialTokenSplits_) * headCols * sizeof(float));
    partialML_.reserve(size_t(partialTokenSplits_) * config_.numHeads * 2 * sizeof(float));
    if (gatherCols_ > 0) gathered_.reserve(size_t(tpSize()) * capSeqs_ * gatherCols_ * sizeof(float));
  }
  if (grow || maxTopK > capTopK_) {
    capTopK_ = std::max(capTopK_, maxTopK);
    const size_t words = size_t(capSeqs_) * (2 + 2 * capTopK_) + size_t(capSeqs_);
    outputs_.reserve(words * 4);
    outputsHost_.reserve(words * 4);
  }
  if (sortRows > capSortRows_) {
    capSortRows_ = std::max(sortRows, capSeqs_ < 64 ? capSeqs_ : 64);
    capSortRows_ = std::max(capSortRows_, sortRows);
    const size_t n = size_t(capSortRows_) * config_.vocabSize;
    sortedValues_.reserve(n * sizeof(float));
    sortedIds_.reserve(n * sizeof(int));
    iotaIds_.reserve(n * sizeof(int));
  }
}

void Model::allocateActivations() {
  for (size_t i = 0; i < activationSpecs_.size(); i++) {
    const ActivationSpec& a = activationSpecs_[i];
    if (a.viewOf >= 0) continue;  // lives in its parent
    const size_t rows = a.perToken ? capTokens_ : capSeqs_;
    activations_[i].reserve(rows * std::max(a.cols, allocCols_[i]) * dtypeSize(a.dtype));
  }
}

void Model::checkNotFailed() const {
  if (!failed_.empty()) throw CudaError("the CUDA backend failed earlier and cannot continue: " + failed_);
  if (group_ && group_->aborted()) throw CudaError("a tensor-parallel rank failed earlier; the NCCL group was aborted");
}

template <typename F>
auto Model::failOnFault(F&& work) -> decltype(work()) {
  try {
    return work();
  } catch (const CudaError& e) {
    // Allocation failures leave the context usable; anything else (a fault in a kernel) does not.
    const std::string message = e.what();
    if (message.rfind("out of device memory", 0) != 0) failed_ = message;
    throw;
  }
}

// A step is three jobs: pack its metadata on the host and copy it over (step_inputs.cc), run or
// replay the forward pass (step_run.cc), and sample (step_sampling.cc).
StepShape Model::launch(const StepInput& in) {
  const int S = int(in.kvLens.size());
  const bool decode = int(in.tokenIds.size()) == S;
  const StepShape shape = shapeStep(in, graphCapture_ && decode ? bucketFor(S) : -1);
  ensureCapacity(shape.rowTokens, shape.rowSeqs, int(in.pageTable.size()), shape.maxTopK,
                 sortSampler_ && shape.sortRows > 0 ? S : 0);
  const PackedStep packed = packStep(in, shape, *layout_, config_.vocabSize,
                                     attentionTileQueries(config_.numHeads, config_.numKvHeads), metaHost_.ptr);
  CUDA_CHECK(cudaMemcpyAsync(meta_.ptr, metaHost_.ptr, packed.words * sizeof(int), cudaMemcpyHostToDevice, stream_));
  runStep(shape, packed);
  return shape;
}

StepResult Model::forward(const StepInput& in) {
  checkNotFailed();
  validateStep(in, config_.vocabSize, numPages_, pageSize_);
  useDevice();
  return failOnFault([&] {
    const StepShape shape = launch(in);
    // Every rank holds the gathered logits; rank 0 samples for the group.
    if (rank_ > 0) {
      CUDA_CHECK(cudaStreamSynchronize(stream_));
      return StepResult{};
    }
    return sample(in, shape);
  });
}

// Plain (single-GPU) models only: the addon refuses both on a tensor-parallel rank.
void Model::launchForward(StepInput in) {
  launched_.reset();
  checkNotFailed();
  in.hasMask = false;  // the masks come with sampleLaunched
  validateStep(in, config_.vocabSize, numPages_, pageSize_);
  useDevice();
  const StepShape shape = failOnFault([&] { return launch(in); });
  launched_ = std::make_unique<LaunchedStep>(LaunchedStep{std::move(in), shape});
}

StepResult Model::sampleLaunched(StepMask mask) {
  if (!launched_) throw CudaError("sampleLaunched: no step was launched (launchForward comes first)");
  const std::unique_ptr<LaunchedStep> step = std::move(launched_);
  checkNotFailed();
  StepInput& in = step->input;
  in.hasMask = mask.present;
  in.maskWords = mask.words;
  in.maskRowOf = std::move(mask.rowOf);
  in.maskBits = std::move(mask.bits);
  if (in.hasMask) validateMask(in, config_.vocabSize);
  // Possibly another thread of libuv's pool than the launch's.
  useDevice();
  return failOnFault([&] { return sample(in, step->shape); });
}

}  // namespace sluice
