#include "model.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "check.h"

namespace sluice {

namespace {
constexpr size_t kWorkspaceBytes = 32u << 20;
constexpr int kMaxSplits = 16;
constexpr int kGraphBuckets[] = {1, 2, 4, 8, 12, 16, 24, 32, 48, 64, 80, 96, 128, 160, 192, 224, 256};
constexpr int kMaxGraphBatch = 256;

size_t roundUp(size_t x, size_t to) { return (x + to - 1) / to * to; }
}  // namespace

void DeviceBuffer::reserve(size_t want) {
  if (want <= bytes) return;
  release();
  const cudaError_t status = cudaMalloc(&ptr, want);
  if (status != cudaSuccess) {
    ptr = nullptr;
    cudaGetLastError();  // clear the (non-sticky) allocation error
    throw CudaError("out of device memory: cannot allocate " + std::to_string(want >> 20) + " MiB (" +
                    cudaGetErrorString(status) + ")");
  }
  bytes = want;
}

void DeviceBuffer::release() {
  if (ptr) cudaFree(ptr);
  ptr = nullptr;
  bytes = 0;
}

void PinnedBuffer::reserve(size_t want) {
  if (want <= bytes) return;
  release();
  CUDA_CHECK(cudaMallocHost(&ptr, want));
  bytes = want;
}

void PinnedBuffer::release() {
  if (ptr) cudaFreeHost(ptr);
  ptr = nullptr;
  bytes = 0;
}

/** Word offsets of each array in the step metadata (ints and floats share one buffer). */
struct Model::Layout {
  size_t tokens, positions, slots, queryStart, kvLens, pageTableStart, tiles;
  size_t temperature, topP, minP, random, topK, logprobs, segBegin, segEnd, pageTable, words;
  Layout(int capTokens, int capSeqs, int capPages) {
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
};

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

std::string Model::description() const {
  return "cuda: " + deviceName_ + " (" + std::to_string(numSms_) + " SMs), GEMM " +
         (lt_.ready() ? "cuBLASLt from " + lt_.where() : "own tensor-core kernel; " + lt_.where()) +
         (graphCapture_ ? ", CUDA graphs" : ", no CUDA graphs");
}

void Model::configure(const ModelConfig& config, std::vector<ActivationSpec> activations, std::vector<Op> ops,
                      std::vector<WeightSpec> weights) {
  useDevice();
  if (config.numKvHeads <= 0 || config.numHeads % config.numKvHeads != 0)
    throw CudaError("numHeads must be a multiple of numKvHeads");
  if (config.numHeads / config.numKvHeads > 32) throw CudaError("more than 32 query heads per KV head is not supported");
  if (int(config.invFreq.size()) != config.headDim / 2) throw CudaError("invFreq must have headDim / 2 entries");
  config_ = config;
  activationSpecs_ = std::move(activations);
  ops_ = std::move(ops);
  weightSpecs_ = std::move(weights);
  weights_ = std::vector<DeviceBuffer>(weightSpecs_.size());
  activations_ = std::vector<DeviceBuffer>(activationSpecs_.size());
  auto checkBuffer = [&](int id, const char* what) {
    if (id < 0 || id >= int(activationSpecs_.size())) throw CudaError(std::string("op refers to a bad buffer: ") + what);
    return activationSpecs_[id];
  };
  auto checkWeight = [&](int id) {
    if (id < 0 || id >= int(weightSpecs_.size())) throw CudaError("op refers to a bad weight");
    return weightSpecs_[id];
  };
  for (const Op& op : ops_) {
    switch (op.kind) {
      case OpKind::Embedding:
        checkWeight(op.a);
        if (checkBuffer(op.c, "embedding out").dtype != DType::F32) throw CudaError("embedding writes an f32 buffer");
        break;
      case OpKind::Rmsnorm:
        checkWeight(op.b);
        checkBuffer(op.a, "rmsnorm x");
        if (checkBuffer(op.c, "rmsnorm out").dtype != DType::BF16) throw CudaError("rmsnorm writes a bf16 buffer");
        break;
      case OpKind::AddRmsnorm:
        checkWeight(op.b);
        if (checkBuffer(op.a, "x").dtype != DType::F32 || checkBuffer(op.d, "residual").dtype != DType::BF16 ||
            checkBuffer(op.c, "out").dtype != DType::BF16)
          throw CudaError("add_rmsnorm needs x f32, residual bf16, out bf16");
        break;
      case OpKind::Linear: {
        const WeightSpec w = checkWeight(op.b);
        const ActivationSpec x = checkBuffer(op.a, "linear x");
        const ActivationSpec out = checkBuffer(op.c, "linear out");
        if (x.dtype != DType::BF16 || w.cols != x.cols || w.rows != out.cols)
          throw CudaError("linear: shapes or dtypes do not match");
        break;
      }
      case OpKind::Rope:
        checkBuffer(op.a, "q");
        checkBuffer(op.d, "k");
        break;
      case OpKind::Attention:
        checkBuffer(op.a, "q");
        checkBuffer(op.b, "k");
        checkBuffer(op.d, "v");
        checkBuffer(op.c, "attention out");
        if (op.layer < 0 || op.layer >= config_.numLayers) throw CudaError("attention: bad layer");
        break;
      case OpKind::SiluMul:
      case OpKind::GatherLast:
        checkBuffer(op.a, "x");
        checkBuffer(op.c, "out");
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
    }
  }
  if (logitsBuffer_ < 0) throw CudaError("the graph has no sample op");
  invFreq_.reserve(config_.invFreq.size() * sizeof(double));
  CUDA_CHECK(cudaMemcpy(invFreq_.ptr, config_.invFreq.data(), config_.invFreq.size() * sizeof(double),
                        cudaMemcpyHostToDevice));
  ensureCapacity(512, 256, 1 << 16, 0, 0);
}

void Model::setWeight(int id, const void* bytes, size_t byteLength, DType sourceType) {
  useDevice();
  if (id < 0 || id >= int(weightSpecs_.size())) throw CudaError("setWeight: bad weight id");
  const size_t n = size_t(weightSpecs_[id].rows) * weightSpecs_[id].cols;
  if (byteLength != n * dtypeSize(sourceType))
    throw CudaError("setWeight: " + std::to_string(byteLength) + " bytes given, " + std::to_string(n * dtypeSize(sourceType)) +
                    " expected");
  weights_[id].reserve(n * sizeof(bf16));
  if (sourceType == DType::BF16) {
    CUDA_CHECK(cudaMemcpy(weights_[id].ptr, bytes, byteLength, cudaMemcpyHostToDevice));
    return;
  }
  DeviceBuffer staging;
  staging.reserve(byteLength);
  CUDA_CHECK(cudaMemcpy(staging.ptr, bytes, byteLength, cudaMemcpyHostToDevice));
  launchConvertToBf16(staging.ptr, sourceType, static_cast<bf16*>(weights_[id].ptr), n, stream_);
  CUDA_CHECK(cudaStreamSynchronize(stream_));
}

void Model::dummyWeight(int id, uint32_t key, double halfRange, double offset) {
  useDevice();
  if (id < 0 || id >= int(weightSpecs_.size())) throw CudaError("dummyWeight: bad weight id");
  const size_t n = size_t(weightSpecs_[id].rows) * weightSpecs_[id].cols;
  weights_[id].reserve(n * sizeof(bf16));
  launchDummyFill(static_cast<bf16*>(weights_[id].ptr), n, key, halfRange, offset, stream_);
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

void Model::writeActivation(int id, const std::vector<float>& values) {
  useDevice();
  if (id < 0 || id >= int(activationSpecs_.size())) throw CudaError("writeActivation: bad buffer id");
  const ActivationSpec& a = activationSpecs_[id];
  if (values.size() % a.cols) throw CudaError("writeActivation: length is not a multiple of the buffer's columns");
  const int rows = int(values.size() / a.cols);
  ensureCapacity(a.perToken ? rows : 1, a.perToken ? 1 : rows, 1, 0, 0);
  if (a.dtype == DType::F32) {
    CUDA_CHECK(cudaMemcpy(activations_[id].ptr, values.data(), values.size() * 4, cudaMemcpyHostToDevice));
    return;
  }
  DeviceBuffer staging;
  staging.reserve(std::max<size_t>(values.size(), 1) * 4);
  CUDA_CHECK(cudaMemcpy(staging.ptr, values.data(), values.size() * 4, cudaMemcpyHostToDevice));
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
  CUDA_CHECK(cudaMemset(kv_.ptr, 0, kv_.bytes));
  numPages_ = numPages;
  pageSize_ = pageSize;
}

void Model::memory(size_t& freeBytes, size_t& totalBytes) {
  useDevice();
  CUDA_CHECK(cudaMemGetInfo(&freeBytes, &totalBytes));
}

void Model::dropGraphs() {
  for (auto& [bucket, exec] : graphs_) cudaGraphExecDestroy(exec);
  graphs_.clear();
}

void Model::ensureCapacity(int tokens, int seqs, int pageEntries, int maxTopK, int sortRows) {
  const bool grow = tokens > capTokens_ || seqs > capSeqs_ || pageEntries > capPageEntries_;
  if (grow) {
    dropGraphs();
    capTokens_ = std::max(capTokens_, tokens);
    capSeqs_ = std::max(capSeqs_, seqs);
    capPageEntries_ = std::max(capPageEntries_, pageEntries);
    layout_ = std::make_unique<Layout>(capTokens_, capSeqs_, capPageEntries_);
    meta_.reserve(layout_->words * 4);
    metaHost_.reserve(layout_->words * 4);
    allocateActivations();
    const size_t headCols = size_t(config_.numHeads) * config_.headDim;
    partialTokenSplits_ = std::max(capTokens_, kMaxSplits * std::min(capSeqs_, kMaxGraphBatch));
    partialO_.reserve(size_t(partialTokenSplits_) * headCols * sizeof(float));
    partialML_.reserve(size_t(partialTokenSplits_) * config_.numHeads * 2 * sizeof(float));
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
    const size_t rows = a.perToken ? capTokens_ : capSeqs_;
    activations_[i].reserve(rows * a.cols * dtypeSize(a.dtype));
  }
}

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

void Model::validate(const StepInput& in) const {
  const int T = int(in.tokenIds.size());
  const int S = int(in.kvLens.size());
  if (numPages_ == 0) throw CudaError("forward before allocateKvCache");
  if (S == 0 || T == 0) throw CudaError("forward: empty batch");
  if (int(in.positions.size()) != T || int(in.slotMapping.size()) != T) throw CudaError("forward: positions and slotMapping need one entry per token");
  if (int(in.queryStart.size()) != S + 1 || int(in.pageTableStart.size()) != S + 1)
    throw CudaError("forward: queryStart and pageTableStart need S + 1 entries");
  if (in.queryStart[0] != 0 || in.queryStart[S] != T) throw CudaError("forward: queryStart must run from 0 to the token count");
  if (int(in.temperature.size()) != S || int(in.topP.size()) != S || int(in.topK.size()) != S ||
      int(in.minP.size()) != S || int(in.random.size()) != S || int(in.logprobs.size()) != S)
    throw CudaError("forward: every sampling array needs one entry per sequence");
  const long slots = long(numPages_) * pageSize_;
  for (int t = 0; t < T; t++) {
    if (in.tokenIds[t] < 0 || in.tokenIds[t] >= config_.vocabSize) throw CudaError("forward: token id " + std::to_string(in.tokenIds[t]) + " is outside the vocabulary");
    if (in.slotMapping[t] < 0 || in.slotMapping[t] >= slots) throw CudaError("forward: KV slot " + std::to_string(in.slotMapping[t]) + " is outside the cache");
  }
  for (int p : in.pageTable)
    if (p < 0 || p >= numPages_) throw CudaError("forward: page " + std::to_string(p) + " is outside the cache");
  for (int s = 0; s < S; s++) {
    const int count = in.queryStart[s + 1] - in.queryStart[s];
    const int pages = in.pageTableStart[s + 1] - in.pageTableStart[s];
    if (count <= 0) throw CudaError("forward: sequence " + std::to_string(s) + " has no tokens");
    if (in.kvLens[s] < count) throw CudaError("forward: kvLens[" + std::to_string(s) + "] is smaller than its new tokens");
    if (long(pages) * pageSize_ < in.kvLens[s]) throw CudaError("forward: sequence " + std::to_string(s) + " has too few pages for its KV length");
    if (in.pageTableStart[s] < 0 || in.pageTableStart[s + 1] > int(in.pageTable.size())) throw CudaError("forward: pageTableStart out of range");
  }
  if (in.hasPenalties) {
    if (int(in.penaltyStart.size()) != S + 1 || int(in.repetition.size()) != S || int(in.frequency.size()) != S ||
        int(in.presence.size()) != S || in.penaltyIds.size() != in.penaltyCounts.size() ||
        in.penaltyStart[S] > int(in.penaltyIds.size()) || in.penaltyStart[0] < 0)
      throw CudaError("forward: malformed penalties");
  }
}

void Model::gemm(const bf16* x, const bf16* w, void* out, DType outType, int m, int n, int k) {
  if (lt_.ready() && lt_.matmul(x, w, out, outType, m, n, k, workspace_.ptr, workspace_.bytes, stream_)) return;
  launchGemmFallback(x, w, out, outType, m, n, k, stream_);
}

void Model::runOps(int T, int S, int numTiles, int splits) {
  const Layout& L = *layout_;
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

StepResult Model::forward(const StepInput& in) {
  if (!failed_.empty()) throw CudaError("the CUDA backend failed earlier and cannot continue: " + failed_);
  validate(in);
  useDevice();
  try {
    const int S = int(in.kvLens.size());
    const int T = int(in.tokenIds.size());
    const bool decode = T == S;
    const int bucket = graphCapture_ && decode ? bucketFor(S) : -1;
    const int Tr = bucket > 0 ? bucket : T;  // rows the forward pass runs (padded to the bucket)
    const int Sr = bucket > 0 ? bucket : S;
    const int tileQueries = attentionTileQueries(config_.numHeads, config_.numKvHeads);

    int maxTopK = 0;
    bool wantLogprobs = false;
    int sortRows = 0;
    for (int s = 0; s < S; s++) {
      maxTopK = std::max(maxTopK, in.logprobs[s]);
      wantLogprobs = wantLogprobs || in.logprobs[s] >= 0;
      if (in.temperature[s] > 0.f || in.logprobs[s] > 0) sortRows = s + 1;
    }
    ensureCapacity(Tr, Sr, int(in.pageTable.size()), maxTopK, sortRows > 0 ? S : 0);

    // Step metadata, padded rows included: padding reads token 0 at position 0, writes no KV and
    // attends over nothing.
    const Layout& L = *layout_;
    int* host = static_cast<int*>(metaHost_.ptr);
    float* hostF = static_cast<float*>(metaHost_.ptr);
    for (int t = 0; t < Tr; t++) {
      host[L.tokens + t] = t < T ? in.tokenIds[t] : 0;
      host[L.positions + t] = t < T ? in.positions[t] : 0;
      host[L.slots + t] = t < T ? in.slotMapping[t] : -1;
    }
    for (int s = 0; s <= Sr; s++) {
      host[L.queryStart + s] = s <= S ? in.queryStart[s] : in.queryStart[S] + (s - S);
      host[L.pageTableStart + s] = s <= S ? in.pageTableStart[s] : in.pageTableStart[S];
    }
    int maxRange = 0;
    for (int s = 0; s < Sr; s++) {
      host[L.kvLens + s] = s < S ? in.kvLens[s] : 0;
      if (s < S) maxRange = std::max(maxRange, in.kvLens[s]);
    }
    int numTiles = 0;
    for (int s = 0; s < Sr; s++) {
      const int count = host[L.queryStart + s + 1] - host[L.queryStart + s];
      for (int j0 = 0; j0 < count; j0 += tileQueries) {
        host[L.tiles + 2 * numTiles] = s;
        host[L.tiles + 2 * numTiles + 1] = j0;
        numTiles++;
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
      host[L.segBegin + s] = s * config_.vocabSize;
      host[L.segEnd + s] = sorts ? (s + 1) * config_.vocabSize : s * config_.vocabSize;
    }
    std::memcpy(host + L.pageTable, in.pageTable.data(), in.pageTable.size() * sizeof(int));
    CUDA_CHECK(cudaMemcpyAsync(meta_.ptr, metaHost_.ptr, (L.pageTable + in.pageTable.size()) * sizeof(int),
                               cudaMemcpyHostToDevice, stream_));

    if (bucket > 0) {
      const int splits = chooseSplits(Sr, 0, Tr, true);
      auto graph = graphs_.find(bucket);
      if (graph != graphs_.end()) {
        CUDA_CHECK(cudaGraphLaunch(graph->second, stream_));
      } else {
        // First step of this bucket: run it directly (which also settles cuBLASLt's choices),
        // then record the same launches for the next steps.
        runOps(Tr, Sr, numTiles, splits);
        cudaGraph_t captured = nullptr;
        CUDA_CHECK(cudaStreamBeginCapture(stream_, cudaStreamCaptureModeThreadLocal));
        try {
          runOps(Tr, Sr, numTiles, splits);
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
        graphs_[bucket] = exec;
      }
    } else {
      runOps(T, S, numTiles, chooseSplits(numTiles, maxRange, T, false));
    }

    // Sampling over the real sequences.
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
    sa.needSort = sortRows > 0;
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
  } catch (const CudaError& e) {
    // Allocation failures leave the context usable; anything else (a fault in a kernel) does not.
    const std::string message = e.what();
    if (message.rfind("out of device memory", 0) != 0) failed_ = message;
    throw;
  }
}

}  // namespace sluice
