// The N-API face of the CUDA backend (backends/cuda/native.ts declares its TypeScript types).
// Loading the addon touches no GPU; probe() reports "no CUDA device" where there is none. Forward
// steps run on libuv's worker pool, so the JS thread keeps streaming while the GPU computes.
#include <napi.h>

#include <memory>

#include "model.h"

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

class ForwardWorker : public Napi::AsyncWorker {
 public:
  ForwardWorker(Napi::Env env, std::shared_ptr<Model> model, StepInput input)
      : Napi::AsyncWorker(env), deferred_(Napi::Promise::Deferred::New(env)), model_(std::move(model)), input_(std::move(input)) {}

  Napi::Promise promise() { return deferred_.Promise(); }

  void Execute() override {
    try {
      std::lock_guard<std::mutex> guard(model_->lock());
      result_ = model_->forward(input_);
    } catch (const std::exception& e) {
      SetError(e.what());
    }
  }

  void OnOK() override {
    Napi::Env env = Env();
    Napi::Object out = Napi::Object::New(env);
    const size_t S = result_.tokens.size();
    Napi::Int32Array tokens = Napi::Int32Array::New(env, S);
    std::copy(result_.tokens.begin(), result_.tokens.end(), tokens.Data());
    out.Set("tokens", tokens);
    if (result_.hasLogprobs) {
      Napi::Float32Array lp = Napi::Float32Array::New(env, S);
      std::copy(result_.logprobs.begin(), result_.logprobs.end(), lp.Data());
      out.Set("logprobs", lp);
    } else {
      out.Set("logprobs", env.Null());
    }
    out.Set("topK", result_.topK);
    if (result_.topK > 0) {
      Napi::Int32Array ids = Napi::Int32Array::New(env, result_.topIds.size());
      std::copy(result_.topIds.begin(), result_.topIds.end(), ids.Data());
      Napi::Float32Array lps = Napi::Float32Array::New(env, result_.topLogprobs.size());
      std::copy(result_.topLogprobs.begin(), result_.topLogprobs.end(), lps.Data());
      out.Set("topIds", ids);
      out.Set("topLogprobs", lps);
    }
    deferred_.Resolve(out);
  }

  void OnError(const Napi::Error& e) override { deferred_.Reject(e.Value()); }

 private:
  Napi::Promise::Deferred deferred_;
  std::shared_ptr<Model> model_;
  StepInput input_;
  StepResult result_;
};

class CudaModel : public Napi::ObjectWrap<CudaModel> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "CudaModel",
                       {
                           InstanceMethod("configure", &CudaModel::Configure),
                           InstanceMethod("setWeight", &CudaModel::SetWeight),
                           InstanceMethod("dummyWeight", &CudaModel::DummyWeight),
                           InstanceMethod("readWeight", &CudaModel::ReadWeight),
                           InstanceMethod("allocateKv", &CudaModel::AllocateKv),
                           InstanceMethod("readActivation", &CudaModel::ReadActivation),
                           InstanceMethod("writeActivation", &CudaModel::WriteActivation),
                           InstanceMethod("headLogits", &CudaModel::HeadLogits),
                           InstanceMethod("memory", &CudaModel::Memory),
                           InstanceMethod("forward", &CudaModel::Forward),
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
    model(info);
    const Napi::Object b = info[0].As<Napi::Object>();
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
    const Napi::Value mask = s.Get("tokenMask");
    if (mask.IsObject()) {
      const Napi::Object m = mask.As<Napi::Object>();
      in.hasMask = true;
      in.maskWords = intField(m, "words");
      in.maskRowOf = copyTyped<int>(m, "rowOf");
      in.maskBits = copyTyped<int>(m, "bits");
    }
    auto* worker = new ForwardWorker(info.Env(), model_, std::move(in));
    Napi::Promise promise = worker->promise();
    worker->Queue();
    return promise;
  }

  Napi::Value Description(const Napi::CallbackInfo& info) { return Napi::String::New(info.Env(), model(info).description()); }

  Napi::Value GraphsCaptured(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), model(info).graphsCaptured()); }

  // Drops this handle; the model itself is freed once no queued step holds it.
  void Close(const Napi::CallbackInfo&) { model_.reset(); }

  std::shared_ptr<Model> model_;
};

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("probe", Napi::Function::New(env, probe));
  exports.Set("CudaModel", CudaModel::Define(env));
  return exports;
}

}  // namespace
}  // namespace sluice

static Napi::Object InitAddon(Napi::Env env, Napi::Object exports) { return sluice::Init(env, exports); }

NODE_API_MODULE(sluice_cuda, InitAddon)
