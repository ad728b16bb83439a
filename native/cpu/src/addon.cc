// The CPU backend's native helpers, as backends/cpu/native-blocks.ts calls them.
#include <napi.h>

#include <algorithm>
#include <string>

#include "q4_tiles.h"
#include "q8_gemm.h"
#include "q8_tiles.h"
#include "weight_blocks.h"

namespace {

using sluice::cpu::BlockOutput;
using sluice::cpu::BlockType;
using sluice::cpu::kBlockSize;

BlockType blockTypeArg(const Napi::CallbackInfo& info, size_t i) {
  const std::string name = info[i].As<Napi::String>().Utf8Value();
  if (name == "q8_0") return BlockType::q8_0;
  if (name == "q4_0") return BlockType::q4_0;
  throw Napi::TypeError::New(info.Env(), "unknown block type " + name + " (q8_0 or q4_0)");
}

size_t countArg(const Napi::CallbackInfo& info, size_t i, const char* what) {
  const double value = info[i].As<Napi::Number>().DoubleValue();
  if (!(value >= 0) || value != double(uint64_t(value))) throw Napi::RangeError::New(info.Env(), std::string(what) + " must be a non-negative integer");
  return size_t(value);
}

/** The output arrays, checked to hold `rows` rows of `cols` values. */
BlockOutput outputArgs(const Napi::CallbackInfo& info, size_t at, size_t rows, size_t cols) {
  auto codes = info[at].As<Napi::Uint8Array>();
  auto scales = info[at + 1].As<Napi::Float32Array>();
  const size_t blocks = rows * ((cols + kBlockSize - 1) / kBlockSize);
  if (codes.ElementLength() < blocks * kBlockSize || scales.ElementLength() < blocks) throw Napi::RangeError::New(info.Env(), "codes or scales too short for the rows");
  return {codes.Data(), scales.Data()};
}

/** quantizeRows(type, values: Float32Array, rows, cols, codes: Uint8Array, scales: Float32Array) */
Napi::Value QuantizeRows(const Napi::CallbackInfo& info) {
  const BlockType type = blockTypeArg(info, 0);
  auto values = info[1].As<Napi::Float32Array>();
  const size_t rows = countArg(info, 2, "rows");
  const size_t cols = countArg(info, 3, "cols");
  if (values.ElementLength() < rows * cols) throw Napi::RangeError::New(info.Env(), "values too short for the rows");
  sluice::cpu::quantizeRows(type, values.Data(), rows, cols, outputArgs(info, 4, rows, cols));
  return info.Env().Undefined();
}

/** dummyRows(type, key, halfRange, offset, dtype: 'f32' | 'bf16', firstIndex, rows, cols, codes, scales) */
Napi::Value DummyRows(const Napi::CallbackInfo& info) {
  const BlockType type = blockTypeArg(info, 0);
  sluice::cpu::DummyRecipe recipe{};
  recipe.key = info[1].As<Napi::Number>().Uint32Value();
  recipe.halfRange = info[2].As<Napi::Number>().DoubleValue();
  recipe.offset = info[3].As<Napi::Number>().DoubleValue();
  const std::string dtype = info[4].As<Napi::String>().Utf8Value();
  if (dtype != "f32" && dtype != "bf16") throw Napi::TypeError::New(info.Env(), "dummyRows: dtype " + dtype + " (f32 or bf16)");
  recipe.bf16 = dtype == "bf16";
  const size_t firstIndex = countArg(info, 5, "firstIndex");
  const size_t rows = countArg(info, 6, "rows");
  const size_t cols = countArg(info, 7, "cols");
  sluice::cpu::dummyRows(type, recipe, firstIndex, rows, cols, outputArgs(info, 8, rows, cols));
  return info.Env().Undefined();
}

/** The arguments of the GEMMs: (x, m, k, codes, scales, n, y, threads), the weights holding storedRows(n) rows of `bitsPerCode` codes. */
template <typename Codes, typename Scales>
struct GemmArgs {
  Napi::Float32Array x;
  size_t m;
  size_t k;
  Codes codes;
  Scales scales;
  size_t n;
  Napi::Float32Array y;
  int threads;
};

template <typename Codes, typename Scales>
GemmArgs<Codes, Scales> gemmArgs(const Napi::CallbackInfo& info, const std::string& name, size_t storedRowsPerRow(size_t), size_t bitsPerCode = 8) {
  GemmArgs<Codes, Scales> a{info[0].As<Napi::Float32Array>(), countArg(info, 1, "m"), countArg(info, 2, "k"), info[3].As<Codes>(), info[4].As<Scales>(),
                            countArg(info, 5, "n"), info[6].As<Napi::Float32Array>(), int(std::max<size_t>(1, countArg(info, 7, "threads")))};
  if (a.k % kBlockSize != 0) throw Napi::RangeError::New(info.Env(), name + ": k must be a multiple of 32");
  const size_t rows = storedRowsPerRow(a.n);
  if (a.x.ElementLength() < a.m * a.k || a.codes.ElementLength() < rows * a.k * bitsPerCode / 8 || a.scales.ElementLength() < rows * a.k / kBlockSize || a.y.ElementLength() < a.m * a.n) {
    throw Napi::RangeError::New(info.Env(), name + ": an array is too short for m, k and n");
  }
  return a;
}

size_t sameRows(size_t n) { return n; }

/** q8Gemm(x: Float32Array, m, k, codes: Uint8Array, scales: Float32Array, n, y: Float32Array, threads) */
Napi::Value Q8Gemm(const Napi::CallbackInfo& info) {
  auto a = gemmArgs<Napi::Uint8Array, Napi::Float32Array>(info, "q8Gemm", sameRows);
  sluice::cpu::q8Gemm(a.x.Data(), a.m, a.k, a.codes.Data(), a.scales.Data(), a.n, a.y.Data(), a.threads);
  return info.Env().Undefined();
}

/** The arguments of the tile packers: (codes, scales, n, k, packedCodes, packedScales), the packed codes `bitsPerCode` bits each. */
template <typename PackedCodes>
struct PackArgs {
  Napi::Uint8Array codes;
  Napi::Float32Array scales;
  size_t n;
  size_t k;
  PackedCodes packedCodes;
  Napi::Uint16Array packedScales;
};

template <typename PackedCodes>
PackArgs<PackedCodes> packArgs(const Napi::CallbackInfo& info, const std::string& name, size_t bitsPerCode) {
  PackArgs<PackedCodes> a{info[0].As<Napi::Uint8Array>(), info[1].As<Napi::Float32Array>(), countArg(info, 2, "n"), countArg(info, 3, "k"), info[4].As<PackedCodes>(), info[5].As<Napi::Uint16Array>()};
  if (a.k % kBlockSize != 0) throw Napi::RangeError::New(info.Env(), name + ": k must be a multiple of 32");
  const size_t rows = sluice::cpu::packedRows(a.n);
  if (a.codes.ElementLength() < a.n * a.k || a.scales.ElementLength() < a.n * a.k / kBlockSize || a.packedCodes.ElementLength() < rows * a.k * bitsPerCode / 8 ||
      a.packedScales.ElementLength() < rows * a.k / kBlockSize) {
    throw Napi::RangeError::New(info.Env(), name + ": an array is too short for n and k");
  }
  return a;
}

/** packQ8Tiles(codes: Uint8Array, scales: Float32Array, n, k, packedCodes: Int8Array, packedScales: Uint16Array) */
Napi::Value PackQ8Tiles(const Napi::CallbackInfo& info) {
  auto a = packArgs<Napi::Int8Array>(info, "packQ8Tiles", 8);
  sluice::cpu::packQ8Tiles(a.codes.Data(), a.scales.Data(), a.n, a.k, a.packedCodes.Data(), a.packedScales.Data());
  return info.Env().Undefined();
}

/** q8TilesGemm(x: Float32Array, m, k, packedCodes: Int8Array, packedScales: Uint16Array, n, y: Float32Array, threads) */
Napi::Value Q8TilesGemm(const Napi::CallbackInfo& info) {
  auto a = gemmArgs<Napi::Int8Array, Napi::Uint16Array>(info, "q8TilesGemm", sluice::cpu::packedRows);
  sluice::cpu::q8TilesGemm(a.x.Data(), a.m, a.k, a.codes.Data(), a.scales.Data(), a.n, a.y.Data(), a.threads);
  return info.Env().Undefined();
}

/** packQ4Tiles(codes: Uint8Array, scales: Float32Array, n, k, packedCodes: Uint8Array, packedScales: Uint16Array) */
Napi::Value PackQ4Tiles(const Napi::CallbackInfo& info) {
  auto a = packArgs<Napi::Uint8Array>(info, "packQ4Tiles", 4);
  sluice::cpu::packQ4Tiles(a.codes.Data(), a.scales.Data(), a.n, a.k, a.packedCodes.Data(), a.packedScales.Data());
  return info.Env().Undefined();
}

/** q4TilesGemm(x: Float32Array, m, k, packedCodes: Uint8Array, packedScales: Uint16Array, n, y: Float32Array, threads) */
Napi::Value Q4TilesGemm(const Napi::CallbackInfo& info) {
  auto a = gemmArgs<Napi::Uint8Array, Napi::Uint16Array>(info, "q4TilesGemm", sluice::cpu::packedRows, 4);
  sluice::cpu::q4TilesGemm(a.x.Data(), a.m, a.k, a.codes.Data(), a.scales.Data(), a.n, a.y.Data(), a.threads);
  return info.Env().Undefined();
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("quantizeRows", Napi::Function::New(env, QuantizeRows));
  exports.Set("dummyRows", Napi::Function::New(env, DummyRows));
  exports.Set("q8Gemm", Napi::Function::New(env, Q8Gemm));
  exports.Set("packQ8Tiles", Napi::Function::New(env, PackQ8Tiles));
  exports.Set("q8TilesGemm", Napi::Function::New(env, Q8TilesGemm));
  exports.Set("packQ4Tiles", Napi::Function::New(env, PackQ4Tiles));
  exports.Set("q4TilesGemm", Napi::Function::New(env, Q4TilesGemm));
  exports.Set("tilesKernel", Napi::String::New(env, sluice::cpu::tilesKernel()));
  exports.Set("q8GemmVectorized", Napi::Boolean::New(env, sluice::cpu::q8GemmVectorized()));
  return exports;
}

}  // namespace

NODE_API_MODULE(sluice_cpu, Init)
