// The N-API face of the CUDA backend (backends/cuda/native.ts declares its TypeScript types).
// Loading the addon touches no GPU; probe() reports "no CUDA device" where there is none. Forward
// steps run on libuv's worker pool, so the JS thread keeps streaming while the GPU computes.
#include <napi.h>

#include <atomic>
#include <functional>
#include <memory>
#include <optional>
#include <thread>

#include "model.h"
#include "nccl_group.h"

namespace sluice {
namespace {

template <typename T>
std::vector<T> copyTyped(const Napi::Object& obj, const char* field) {
  const Napi::Value v = obj.Get(field);
  if (!v.IsTypedArray()) throw Napi::TypeError::New(obj.Env(), std::string(field) + " must be a typed array");
  const Napi::TypedArray typed = v.As<Napi::TypedArray>();
  const napi_typedarray_type expected =
      std::is_same<T, float>::value ? napi_float32_array : (std::is_same<T, double>::value ? napi_float64_array : napi_int32_array);
  if (typed.TypedArrayType() != expected) throw Napi::TypeError::New(obj.Env(), std::string(field) + " has the wrong element type");
  const Napi::TypedArrayOf<T> arr = v.As<Napi::TypedArrayOf<T>>();
  return std::vector<T>(arr.Data(), arr.Data() + arr.ElementLength());
}

int intField(const Napi::Object& obj, const char* field) {
  const Napi::Value v = obj.Get(field);
  if (!v.IsNumber()) throw Napi::TypeError::New(obj.Env(), std::string(field) + " must be a number");
  return v.As<Napi::Number>().Int32Value();
}

Napi::Value probe(const Napi::CallbackInfo& info) {
  const DeviceProbe p = probeDevices();
  Napi::Object out = Napi::Object::New(info.Env());
  out.Set("count", p.count);
  out.Set("errorCode", p.errorCode);
  out.Set("message", p.message);
  Napi::Array devices = Napi::Array::New(info.Env());
  for (int i = 0; i < p.count; i++) {
    cudaDeviceProp prop{};
    if (cudaGetDeviceProperties(&prop, i) != cudaSuccess) continue;
    Napi::Object d = Napi::Object::New(info.Env());
    d.Set("name", prop.name);
    d.Set("totalBytes", double(prop.totalGlobalMem));
    d.Set("computeCapability", prop.major * 10 + prop.minor);
    d.Set("multiProcessors", prop.multiProcessorCount);
    devices.Set(uint32_t(i), d);
  }
  out.Set("devices", devices);
  return out;
}

/** A step's result as backends/cuda/native.ts's NativeStepOutput. */
Napi::Object stepResultToJs(Napi::Env env, const StepResult& result) {
  Napi::Object out = Napi::Object::New(env);
  const size_t S = result.tokens.size();
  Napi::Int32Array tokens = Napi::Int32Array::New(env, S);
  std::copy(result.tokens.begin(), result.tokens.end(), tokens.Data());
  out.Set("tokens", tokens);
  if (result.hasLogprobs) {
    Napi::Float32Array lp = Napi::Float32Array::New(env, S);
    std::copy(result.logprobs.begin(), result.logprobs.end(), lp.Data());
    out.Set("logprobs", lp);
  } else {
    out.Set("logprobs", env.Null());
  }
  out.Set("topK", result.topK);
  if (result.topK > 0) {
    Napi::Int32Array ids = Napi::Int32Array::New(env, result.topIds.size());
    std::copy(result.topIds.begin(), result.topIds.end(), ids.Data());
    Napi::Float32Array lps = Napi::Float32Array::New(env, result.topLogprobs.size());
    std::copy(result.topLogprobs.begin(), result.topLogprobs.end(), lps.Data());
    out.Set("topIds", ids);
    out.Set("topLogprobs", lps);
  }
  return out;
}

/** A TokenMaskBatch's rowOf, words and bits copied out of JS; absent when the value is not an object. */
StepMask maskFrom(const Napi::Value& value) {
  StepMask mask;
  if (!value.IsObject()) return mask;
  const Napi::Object m = value.As<Napi::Object>();
  mask.present = true;
  mask.words = intField(m, "words");
  mask.rowOf = copyTyped<int>(m, "rowOf");
  mask.bits = copyTyped<int>(m, "bits");
  return mask;
}

/**
 * A ForwardBatch (src/engine/backend.ts) copied out of JS, so a worker thread can read it; its
 * token mask too unless withMask is false (launchForward: the masks are not computed yet).
 */
StepInput stepInputFrom(const Napi::Object& b, bool withMask = true) {
  StepInput in;
  in.tokenIds = copyTyped<int>(b, "tokenIds");
  in.positions = copyTyped<int>(b, "positions");
  in.queryStart = copyTyped<int>(b, "queryStart");
  in.kvLens = copyTyped<int>(b, "kvLens");
  in.pageTable = copyTyped<int>(b, "pageTable");
  in.pageTableStart = copyTyped<int>(b, "pageTableStart");
  in.slotMapping = copyTyped<int>(b, "slotMapping");
  const Napi::Object s = b.Get("sampling").As<Napi::Object>();
  in.temperature = copyTyped<float>(s, "temperature");
  in.topP = copyTyped<float>(s, "topP");
  in.topK = copyTyped<int>(s, "topK");
  in.minP = copyTyped<float>(s, "minP");
  in.random = copyTyped<float>(s, "random");
  in.logprobs = copyTyped<int>(s, "logprobs");
  const Napi::Value pen = s.Get("penalties");
  if (pen.IsObject()) {
    const Napi::Object p = pen.As<Napi::Object>();
    in.hasPenalties = true;
    in.repetition = copyTyped<float>(p, "repetition");
    in.frequency = copyTyped<float>(p, "frequency");
    in.presence = copyTyped<float>(p, "presence");
    in.penaltyStart = copyTyped<int>(p, "tokenStart");
    in.penaltyIds = copyTyped<int>(p, "tokenIds");
    in.penaltyCounts = copyTyped<int>(p, "outputCounts");
  }
  const Napi::Value bias = s.Get("logitBias");
  if (bias.IsObject()) {
    const Napi::Object lb = bias.As<Napi::Object>();
    in.hasBias = true;
    in.biasStart = copyTyped<int>(lb, "rowStart");
    in.biasIds = copyTyped<int>(lb, "tokenIds");
    in.biasValues = copyTyped<float>(lb, "bias");
  }
  if (withMask) {
    StepMask mask = maskFrom(s.Get("tokenMask"));
    in.hasMask = mask.present;
    in.maskWords = mask.words;
    in.maskRowOf = std::move(mask.rowOf);
    in.maskBits = std::move(mask.bits);
  }
  return in;
}

/**
 * One step job on libuv's pool under the model's lock: a whole step (forward), its launch
 * (launchForward: nothing to return, the promise resolves undefined) or its sampling.
 */
class StepWorker : public Napi::AsyncWorker {
 public:
  using Job = std::function<std::optional<StepResult>(Model&)>;

  StepWorker(Napi::Env env, std::shared_ptr<Model> model, Job job)
      : Napi::AsyncWorker(env), deferred_(Napi::Promise::Deferred::New(env)), model_(std::move(model)), job_(std::move(job)) {}

  Napi::Promise promise() { return deferred_.Promise(); }

  void Execute() override {
    try {
      std::lock_guard<std::mutex> guard(model_->lock());
      result_ = job_(*model_);
    } catch (const std::exception& e) {
      SetError(e.what());
    }
  }

  void OnOK() override {
    if (result_) deferred_.Resolve(stepResultToJs(Env(), *result_));
    else deferred_.Resolve(Env().Undefined());
  }

  void OnError(const Napi::Error& e) override { deferred_.Reject(e.Value()); }

 private:
  Napi::Promise::Deferred deferred_;
  std::shared_ptr<Model> model_;
  Job job_;
  std::optional<StepResult> result_;
};

class CudaModel : public Napi::ObjectWrap<CudaModel> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "CudaModel",
                       {
                           InstanceMethod("configure", &CudaModel::Configure),
                           InstanceMethod("setWeight", &CudaModel::SetWeight),
                           InstanceMethod("dummyWeight", &CudaModel::DummyWeight),
                           InstanceMethod("dummyWeightWindow", &CudaModel::DummyWeightWindow),
                           InstanceMethod("readWeight", &CudaModel::ReadWeight),
                           InstanceMethod("allocateKv", &CudaModel::AllocateKv),
                           InstanceMethod("readActivation", &CudaModel::ReadActivation),
                           InstanceMethod("writeActivation", &CudaModel::WriteActivation),
                           InstanceMethod("headLogits", &CudaModel::HeadLogits),
                           InstanceMethod("memory", &CudaModel::Memory),
                           InstanceMethod("forward", &CudaModel::Forward),
                           InstanceMethod("launchForward", &CudaModel::LaunchForward),
                           InstanceMethod("sampleLaunched", &CudaModel::SampleLaunched),
                           InstanceMethod("description", &CudaModel::Description),
                           InstanceMethod("graphsCaptured", &CudaModel::GraphsCaptured),
                           InstanceMethod("close", &CudaModel::Close),
                       });
  }

  explicit CudaModel(const Napi::CallbackInfo& info) : Napi::ObjectWrap<CudaModel>(info) {
    const int device = info.Length() > 0 && info[0].IsNumber() ? info[0].As<Napi::Number>().Int32Value() : 0;
    const bool graphs = info.Length() > 1 && info[1].IsBoolean() ? info[1].As<Napi::Boolean>().Value() : true;
    try {
      model_ = std::make_shared<Model>(device, graphs);
    } catch (const std::exception& e) {
      throw Napi::Error::New(info.Env(), e.what());
    }
  }

 private:
  Model& model(const Napi::CallbackInfo& info) {
    if (!model_) throw Napi::Error::New(info.Env(), "the CUDA model was closed");
    return *model_;
  }

  template <typename F>
  auto guarded(const Napi::CallbackInfo& info, F&& f) -> decltype(f(model(info))) {
    Model& m = model(info);
    std::lock_guard<std::mutex> guard(m.lock());
    try {
      return f(m);
    } catch (const Napi::Error&) {
      throw;
    } catch (const std::exception& e) {
      throw Napi::Error::New(info.Env(), e.what());
    }
  }

  void Configure(const Napi::CallbackInfo& info) {
    const Napi::Object o = info[0].As<Napi::Object>();
    ModelConfig c{};
    c.hiddenSize = intField(o, "hiddenSize");
    c.intermediateSize = intField(o, "intermediateSize");
    c.numLayers = intField(o, "numLayers");
    c.numHeads = intField(o, "numHeads");
    c.numKvHeads = intField(o, "numKvHeads");
    c.headDim = intField(o, "headDim");
    c.vocabSize = intField(o, "vocabSize");
    c.rmsNormEps = o.Get("rmsNormEps").As<Napi::Number>().FloatValue();
    c.invFreq = copyTyped<double>(o, "invFreq");
    const std::vector<int> acts = copyTyped<int>(o, "activations");  // perToken, cols, dtype, viewOf, colOffset
    const std::vector<int> ops = copyTyped<int>(o, "ops");           // kind, a, b, c, d, layer
    const std::vector<int> weights = copyTyped<int>(o, "weights");   // rows, cols
    if (acts.size() % 5 || ops.size() % 6 || weights.size() % 2) throw Napi::TypeError::New(info.Env(), "configure: malformed tables");
    std::vector<ActivationSpec> activationSpecs;
    for (size_t i = 0; i < acts.size(); i += 5)
      activationSpecs.push_back({acts[i] != 0, acts[i + 1], DType(acts[i + 2]), acts[i + 3], acts[i + 4]});
    std::vector<Op> opList;
    for (size_t i = 0; i < ops.size(); i += 6)
      opList.push_back({OpKind(ops[i]), ops[i + 1], ops[i + 2], ops[i + 3], ops[i + 4], ops[i + 5]});
    std::vector<WeightSpec> weightSpecs;
    for (size_t i = 0; i < weights.size(); i += 2) weightSpecs.push_back({weights[i], weights[i + 1]});
    guarded(info, [&](Model& m) {
      m.configure(c, std::move(activationSpecs), std::move(opList), std::move(weightSpecs));
      return 0;
    });
  }

  void SetWeight(const Napi::CallbackInfo& info) {
    const int id = info[0].As<Napi::Number>().Int32Value();
    if (!info[1].IsTypedArray()) throw Napi::TypeError::New(info.Env(), "setWeight: bytes must be a Uint8Array");
    const Napi::Uint8Array bytes = info[1].As<Napi::Uint8Array>();
    const DType type = DType(info[2].As<Napi::Number>().Int32Value());
    const int rowOffset = info.Length() > 3 && info[3].IsNumber() ? info[3].As<Napi::Number>().Int32Value() : 0;
    guarded(info, [&](Model& m) {
      m.setWeight(id, bytes.Data(), bytes.ByteLength(), type, rowOffset);
      return 0;
    });
  }

  void DummyWeight(const Napi::CallbackInfo& info) {
    const int id = info[0].As<Napi::Number>().Int32Value();
    const uint32_t key = info[1].As<Napi::Number>().Uint32Value();
    const double halfRange = info[2].As<Napi::Number>().DoubleValue();
    const double offset = info[3].As<Napi::Number>().DoubleValue();
    const int rowOffset = info.Length() > 4 && info[4].IsNumber() ? info[4].As<Napi::Number>().Int32Value() : 0;
    const int rows = info.Length() > 5 && info[5].IsNumber() ? info[5].As<Napi::Number>().Int32Value() : -1;
    guarded(info, [&](Model& m) {
      m.dummyWeight(id, key, halfRange, offset, rowOffset, rows);
      return 0;
    });
  }

  // dummyWeightWindow(id, key, halfRange, offset, rowOffset, rows, sourceCols, sourceRowStart, sourceColStart)
  void DummyWeightWindow(const Napi::CallbackInfo& info) {
    for (size_t i = 0; i < 9; i++)
      if (!info[i].IsNumber()) throw Napi::TypeError::New(info.Env(), "dummyWeightWindow takes nine numbers");
    auto num = [&](size_t i) { return info[i].As<Napi::Number>(); };
    guarded(info, [&](Model& m) {
      m.dummyWeightWindow(num(0).Int32Value(), num(1).Uint32Value(), num(2).DoubleValue(), num(3).DoubleValue(), num(4).Int32Value(),
                          num(5).Int32Value(), num(6).Int32Value(), num(7).Int32Value(), num(8).Int32Value());
      return 0;
    });
  }

  Napi::Value ReadWeight(const Napi::CallbackInfo& info) {
    const int id = info[0].As<Napi::Number>().Int32Value();
    std::vector<float> values = guarded(info, [&](Model& m) { return m.readWeight(id); });
    Napi::Float32Array out = Napi::Float32Array::New(info.Env(), values.size());
    std::copy(values.begin(), values.end(), out.Data());
    return out;
  }

  Napi::Value ReadActivation(const Napi::CallbackInfo& info) {
    const int id = info[0].As<Napi::Number>().Int32Value();
    const int rows = info[1].As<Napi::Number>().Int32Value();
    std::vector<float> values = guarded(info, [&](Model& m) { return m.readActivation(id, rows); });
    Napi::Float32Array out = Napi::Float32Array::New(info.Env(), values.size());
    std::copy(values.begin(), values.end(), out.Data());
    return out;
  }

  Napi::Value HeadLogits(const Napi::CallbackInfo& info) {
    if (!info[0].IsTypedArray() || info[0].As<Napi::TypedArray>().TypedArrayType() != napi_int32_array)
      throw Napi::TypeError::New(info.Env(), "headLogits: rows must be an Int32Array");
    const Napi::Int32Array arr = info[0].As<Napi::Int32Array>();
    std::vector<int> rows(arr.Data(), arr.Data() + arr.ElementLength());
    std::vector<float> values = guarded(info, [&](Model& m) { return m.headLogits(rows); });
    Napi::Float32Array out = Napi::Float32Array::New(info.Env(), values.size());
    std::copy(values.begin(), values.end(), out.Data());
    return out;
  }

  void WriteActivation(const Napi::CallbackInfo& info) {
    const int id = info[0].As<Napi::Number>().Int32Value();
    if (!info[1].IsTypedArray() || info[1].As<Napi::TypedArray>().TypedArrayType() != napi_float32_array)
      throw Napi::TypeError::New(info.Env(), "writeActivation: values must be a Float32Array");
    const Napi::Float32Array arr = info[1].As<Napi::Float32Array>();
    std::vector<float> values(arr.Data(), arr.Data() + arr.ElementLength());
    guarded(info, [&](Model& m) {
      m.writeActivation(id, values);
      return 0;
    });
  }

  void AllocateKv(const Napi::CallbackInfo& info) {
    const int numPages = info[0].As<Napi::Number>().Int32Value();
    const int pageSize = info[1].As<Napi::Number>().Int32Value();
    guarded(info, [&](Model& m) {
      m.allocateKv(numPages, pageSize);
      return 0;
    });
  }

  Napi::Value Memory(const Napi::CallbackInfo& info) {
    size_t freeBytes = 0, totalBytes = 0;
    guarded(info, [&](Model& m) {
      m.memory(freeBytes, totalBytes);
      return 0;
    });
    Napi::Object out = Napi::Object::New(info.Env());
    out.Set("freeBytes", double(freeBytes));
    out.Set("totalBytes", double(totalBytes));
    return out;
  }

  Napi::Value Forward(const Napi::CallbackInfo& info) {
    refuseRank(info, "forward");
    StepInput in = stepInputFrom(info[0].As<Napi::Object>());
    return queue(info, [in = std::move(in)](Model& m) -> std::optional<StepResult> { return m.forward(in); });
  }

  // The first half of a step whose token masks are still being computed: resolves once the forward
  // pass is launched on the device (batch.sampling.tokenMask is not read).
  Napi::Value LaunchForward(const Napi::CallbackInfo& info) {
    refuseRank(info, "launchForward");
    StepInput in = stepInputFrom(info[0].As<Napi::Object>(), false);
    return queue(info, [in = std::move(in)](Model& m) mutable -> std::optional<StepResult> {
      m.launchForward(std::move(in));
      return std::nullopt;
    });
  }

  // The second half: the masks (a TokenMaskBatch, or null), sampling, and the step's tokens.
  Napi::Value SampleLaunched(const Napi::CallbackInfo& info) {
    refuseRank(info, "sampleLaunched");
    StepMask mask = maskFrom(info[0]);
    return queue(info, [mask = std::move(mask)](Model& m) mutable -> std::optional<StepResult> {
      return m.sampleLaunched(std::move(mask));
    });
  }

  void refuseRank(const Napi::CallbackInfo& info, const std::string& method) {
    if (model(info).tpSize() > 1)
      throw Napi::Error::New(info.Env(), method + ": this model is a tensor-parallel rank; its NcclGroup steps all ranks together");
  }

  Napi::Value queue(const Napi::CallbackInfo& info, StepWorker::Job job) {
    auto* worker = new StepWorker(info.Env(), model_, std::move(job));
    Napi::Promise promise = worker->promise();
    worker->Queue();
    return promise;
  }

  Napi::Value Description(const Napi::CallbackInfo& info) { return Napi::String::New(info.Env(), model(info).description()); }

  Napi::Value GraphsCaptured(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), model(info).graphsCaptured()); }

  // Drops this handle; the model itself is freed once no queued step holds it.
  void Close(const Napi::CallbackInfo&) { model_.reset(); }

 public:
  /** The model behind a handle (null once closed), for the NCCL group's rank threads. */
  std::shared_ptr<Model> shared() const { return model_; }

 private:
  std::shared_ptr<Model> model_;
};

/** Per-environment addon state: the CudaModel class, to recognize its instances. */
struct AddonData {
  Napi::FunctionReference cudaModel;
};

/**
 * One step on every rank of a tensor-parallel group, one thread per rank: each rank's launches,
 * NCCL's included, go to its own GPU's stream from its own thread, so no rank waits for another
 * to be launched (one thread launching all ranks in turn would block in the first rank's
 * synchronizing calls). Rank 0's sampled tokens are the group's.
 */
class RanksForwardWorker : public Napi::AsyncWorker {
 public:
  RanksForwardWorker(Napi::Env env, std::shared_ptr<NcclGroup> group, std::vector<std::shared_ptr<Model>> models, StepInput input)
      : Napi::AsyncWorker(env),
        deferred_(Napi::Promise::Deferred::New(env)),
        group_(std::move(group)),
        models_(std::move(models)),
        input_(std::move(input)) {}

  Napi::Promise promise() { return deferred_.Promise(); }

  void Execute() override {
    std::vector<std::string> errors(models_.size());
    std::atomic<int> firstFailed{-1};
    auto run = [&](size_t rank) {
      try {
        std::lock_guard<std::mutex> guard(models_[rank]->lock());
        StepResult result = models_[rank]->forward(input_);
        if (rank == 0) result_ = std::move(result);
      } catch (const std::exception& e) {
        errors[rank] = e.what();
        int none = -1;
        firstFailed.compare_exchange_strong(none, int(rank));
        // The other ranks may be waiting in a collective for this one: release them.
        group_->abort();
      }
    };
    std::vector<std::thread> threads;
    for (size_t rank = 1; rank < models_.size(); rank++) threads.emplace_back(run, rank);
    run(0);
    for (auto& t : threads) t.join();
    // The first rank to fail is the one to name; the others failed once the group was aborted.
    const int rank = firstFailed.load();
    if (rank >= 0) SetError("tensor-parallel rank " + std::to_string(rank) + ": " + errors[rank]);
  }

  void OnOK() override { deferred_.Resolve(stepResultToJs(Env(), result_)); }

  void OnError(const Napi::Error& e) override { deferred_.Reject(e.Value()); }

 private:
  Napi::Promise::Deferred deferred_;
  std::shared_ptr<NcclGroup> group_;
  std::vector<std::shared_ptr<Model>> models_;
  StepInput input_;
  StepResult result_;
};

/** JS `NcclGroup`: the communicators of cuda ranks on the given GPUs, the models attached as ranks, and their steps. */
class NcclGroupWrap : public Napi::ObjectWrap<NcclGroupWrap> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "NcclGroup",
                       {
                           InstanceMethod("attach", &NcclGroupWrap::Attach),
                           InstanceMethod("forward", &NcclGroupWrap::Forward),
                           InstanceMethod("description", &NcclGroupWrap::Description),
                           InstanceMethod("close", &NcclGroupWrap::Close),
                       });
  }

  explicit NcclGroupWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<NcclGroupWrap>(info) {
    if (!info[0].IsTypedArray() || info[0].As<Napi::TypedArray>().TypedArrayType() != napi_int32_array)
      throw Napi::TypeError::New(info.Env(), "NcclGroup: devices must be an Int32Array");
    const Napi::Int32Array arr = info[0].As<Napi::Int32Array>();
    const std::vector<int> devices(arr.Data(), arr.Data() + arr.ElementLength());
    try {
      group_ = std::make_shared<NcclGroup>(devices);
    } catch (const std::exception& e) {
      throw Napi::Error::New(info.Env(), e.what());
    }
    models_.resize(devices.size());
  }

 private:
  NcclGroup& group(const Napi::CallbackInfo& info) {
    if (!group_) throw Napi::Error::New(info.Env(), "the NCCL group was closed");
    return *group_;
  }

  // attach(model, rank): the model (not yet configured, on the rank's GPU) becomes that rank.
  void Attach(const Napi::CallbackInfo& info) {
    group(info);
    const Napi::Function modelClass = info.Env().GetInstanceData<AddonData>()->cudaModel.Value();
    if (!info[0].IsObject() || !info[0].As<Napi::Object>().InstanceOf(modelClass))
      throw Napi::TypeError::New(info.Env(), "attach: the first argument must be a CudaModel");
    if (!info[1].IsNumber()) throw Napi::TypeError::New(info.Env(), "attach: rank must be a number");
    const int rank = info[1].As<Napi::Number>().Int32Value();
    std::shared_ptr<Model> model = CudaModel::Unwrap(info[0].As<Napi::Object>())->shared();
    if (!model) throw Napi::Error::New(info.Env(), "attach: the CUDA model was closed");
    if (rank < 0 || rank >= group_->size()) throw Napi::RangeError::New(info.Env(), "attach: no rank " + std::to_string(rank) + " in this group");
    if (models_[rank]) throw Napi::Error::New(info.Env(), "attach: rank " + std::to_string(rank) + " already has a model");
    try {
      std::lock_guard<std::mutex> guard(model->lock());
      model->joinGroup(group_, rank);
    } catch (const std::exception& e) {
      throw Napi::Error::New(info.Env(), e.what());
    }
    models_[rank] = std::move(model);
  }

  Napi::Value Forward(const Napi::CallbackInfo& info) {
    group(info);
    for (size_t rank = 0; rank < models_.size(); rank++)
      if (!models_[rank]) throw Napi::Error::New(info.Env(), "forward: rank " + std::to_string(rank) + " has no model attached");
    StepInput in = stepInputFrom(info[0].As<Napi::Object>());
    auto* worker = new RanksForwardWorker(info.Env(), group_, models_, std::move(in));
    Napi::Promise promise = worker->promise();
    worker->Queue();
    return promise;
  }

  Napi::Value Description(const Napi::CallbackInfo& info) { return Napi::String::New(info.Env(), group(info).description()); }

  // Drops the group's hold on the models and communicators; each is freed once nothing else holds it.
  void Close(const Napi::CallbackInfo&) {
    models_.clear();
    group_.reset();
  }

  std::shared_ptr<NcclGroup> group_;
  std::vector<std::shared_ptr<Model>> models_;
};

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("probe", Napi::Function::New(env, probe));
  Napi::Function cudaModel = CudaModel::Define(env);
  auto* data = new AddonData();
  data->cudaModel = Napi::Persistent(cudaModel);
  env.SetInstanceData<AddonData>(data);
  exports.Set("CudaModel", cudaModel);
  exports.Set("NcclGroup", NcclGroupWrap::Define(env));
  return exports;
}

}  // namespace
}  // namespace sluice

static Napi::Object InitAddon(Napi::Env env, Napi::Object exports) { return sluice::Init(env, exports); }

NODE_API_MODULE(sluice_cuda, InitAddon)
