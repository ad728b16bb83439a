// The CPU backend's native helpers, as backends/cpu/native-blocks.ts calls them.
#include <napi.h>

#include <algorithm>
#include <string>

#include "attention.h"
#include "layer_ops.h"
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

/** A Float32Array argument holding at least `length` values. */
Napi::Float32Array floatsArg(const Napi::CallbackInfo& info, size_t i, size_t length, const char* what) {
  auto array = info[i].As<Napi::Float32Array>();
  if (array.ElementLength() < length) throw Napi::RangeError::New(info.Env(), std::string(what) + " is too short");
  return array;
}

int threadsArg(const Napi::CallbackInfo& info, size_t i) { return int(std::max<size_t>(1, countArg(info, i, "threads"))); }

/** rmsNorm(x, rows, cols, weight, eps, out, threads) */
Napi::Value RmsNorm(const Napi::CallbackInfo& info) {
  const size_t rows = countArg(info, 1, "rows");
  const size_t cols = countArg(info, 2, "cols");
  auto x = floatsArg(info, 0, rows * cols, "rmsNorm: x");
  auto weight = floatsArg(info, 3, cols, "rmsNorm: weight");
  auto out = floatsArg(info, 5, rows * cols, "rmsNorm: out");
  sluice::cpu::rmsNorm(x.Data(), weight.Data(), rows, cols, info[4].As<Napi::Number>().FloatValue(), out.Data(), threadsArg(info, 6));
  return info.Env().Undefined();
}

/** addRmsNorm(x, residual, rows, cols, weight, eps, out, threads): x += residual, out = rmsNorm(x) */
Napi::Value AddRmsNorm(const Napi::CallbackInfo& info) {
  const size_t rows = countArg(info, 2, "rows");
  const size_t cols = countArg(info, 3, "cols");
  auto x = floatsArg(info, 0, rows * cols, "addRmsNorm: x");
  auto residual = floatsArg(info, 1, rows * cols, "addRmsNorm: residual");
  auto weight = floatsArg(info, 4, cols, "addRmsNorm: weight");
  auto out = floatsArg(info, 6, rows * cols, "addRmsNorm: out");
  sluice::cpu::addRmsNorm(x.Data(), residual.Data(), weight.Data(), rows, cols, info[5].As<Napi::Number>().FloatValue(), out.Data(), threadsArg(info, 7));
  return info.Env().Undefined();
}

/** addInPlace(x, y, n): x += y */
Napi::Value AddInPlace(const Napi::CallbackInfo& info) {
  const size_t n = countArg(info, 2, "n");
  auto x = floatsArg(info, 0, n, "addInPlace: x");
  auto y = floatsArg(info, 1, n, "addInPlace: y");
  sluice::cpu::addInPlace(x.Data(), y.Data(), n);
  return info.Env().Undefined();
}

/** siluMul(gate, up, n, out, threads) */
Napi::Value SiluMul(const Napi::CallbackInfo& info) {
  const size_t n = countArg(info, 2, "n");
  auto gate = floatsArg(info, 0, n, "siluMul: gate");
  auto up = floatsArg(info, 1, n, "siluMul: up");
  auto out = floatsArg(info, 3, n, "siluMul: out");
  sluice::cpu::siluMul(gate.Data(), up.Data(), n, out.Data(), threadsArg(info, 4));
  return info.Env().Undefined();
}

/** rope(x, rows, heads, headDim, cos, sin, threads): cos and sin [rows, headDim / 2] */
Napi::Value Rope(const Napi::CallbackInfo& info) {
  const size_t rows = countArg(info, 1, "rows");
  const size_t heads = countArg(info, 2, "heads");
  const size_t headDim = countArg(info, 3, "headDim");
  if (headDim % 2 != 0) throw Napi::RangeError::New(info.Env(), "rope: headDim must be even");
  auto x = floatsArg(info, 0, rows * heads * headDim, "rope: x");
  auto cos = floatsArg(info, 4, rows * headDim / 2, "rope: cos");
  auto sin = floatsArg(info, 5, rows * headDim / 2, "rope: sin");
  sluice::cpu::rope(x.Data(), rows, heads, headDim, cos.Data(), sin.Data(), threadsArg(info, 6));
  return info.Env().Undefined();
}

Napi::Int32Array intsArg(const Napi::Object& object, const char* name) { return object.Get(name).As<Napi::Int32Array>(); }

size_t countOf(const Napi::Object& object, const char* name) {
  const double value = object.Get(name).As<Napi::Number>().DoubleValue();
  if (!(value >= 0) || value != double(uint64_t(value))) throw Napi::RangeError::New(object.Env(), std::string("pagedAttention: ") + name + " must be a non-negative integer");
  return size_t(value);
}

/**
 * pagedAttention(q, k, v, kCache, vCache, batch, out, threads), batch: { numHeads, numKvHeads,
 * headDim, pageSize, numSlots, queryStart, kvLens, pageTable, pageTableStart, slotMapping }
 * (Int32Arrays; attention.h). Every slot the batch names is checked to lie in the cache.
 */
Napi::Value PagedAttention(const Napi::CallbackInfo& info) {
  const Napi::Env env = info.Env();
  const auto object = info[5].As<Napi::Object>();
  auto queryStart = intsArg(object, "queryStart");
  auto kvLens = intsArg(object, "kvLens");
  auto pageTable = intsArg(object, "pageTable");
  auto pageTableStart = intsArg(object, "pageTableStart");
  auto slotMapping = intsArg(object, "slotMapping");
  sluice::cpu::AttentionBatch b{countOf(object, "numHeads"), countOf(object, "numKvHeads"), countOf(object, "headDim"), countOf(object, "pageSize"), countOf(object, "numSlots"),
                                kvLens.ElementLength(), slotMapping.ElementLength(), queryStart.Data(), kvLens.Data(), pageTable.Data(), pageTableStart.Data(), slotMapping.Data()};
  const auto fail = [&](const std::string& why) { return Napi::RangeError::New(env, "pagedAttention: " + why); };
  if (b.numKvHeads == 0 || b.numHeads % b.numKvHeads != 0 || b.headDim == 0 || b.pageSize == 0) throw fail("numHeads must be a multiple of numKvHeads, headDim and pageSize positive");
  if (queryStart.ElementLength() != b.numSeqs + 1 || pageTableStart.ElementLength() < b.numSeqs || queryStart[0] != 0 || size_t(queryStart[b.numSeqs]) != b.numTokens) throw fail("queryStart must run from 0 to the token count, one entry a sequence and one more");
  for (size_t s = 0; s < b.numSeqs; s++) {
    const int64_t newTokens = int64_t(queryStart[s + 1]) - queryStart[s];
    if (newTokens < 0 || kvLens[s] < newTokens) throw fail("sequence " + std::to_string(s) + " has fewer cached positions than new tokens");
    const size_t pages = (size_t(kvLens[s]) + b.pageSize - 1) / b.pageSize;
    if (pageTableStart[s] < 0 || size_t(pageTableStart[s]) + pages > pageTable.ElementLength()) throw fail("sequence " + std::to_string(s) + "'s pages run past the page table");
    for (size_t i = 0; i < pages; i++) {
      const int32_t page = pageTable[size_t(pageTableStart[s]) + i];
      if (page < 0 || (size_t(page) + 1) * b.pageSize > b.numSlots) throw fail("page " + std::to_string(page) + " lies outside the cache");
    }
  }
  for (size_t t = 0; t < b.numTokens; t++)
    if (slotMapping[t] < 0 || size_t(slotMapping[t]) >= b.numSlots) throw fail("slot " + std::to_string(slotMapping[t]) + " lies outside the cache");
  const size_t qCols = b.numHeads * b.headDim;
  const size_t kvCols = b.numKvHeads * b.headDim;
  auto q = floatsArg(info, 0, b.numTokens * qCols, "pagedAttention: q");
  auto k = floatsArg(info, 1, b.numTokens * kvCols, "pagedAttention: k");
  auto v = floatsArg(info, 2, b.numTokens * kvCols, "pagedAttention: v");
  auto kCache = floatsArg(info, 3, b.numSlots * kvCols, "pagedAttention: kCache");
  auto vCache = floatsArg(info, 4, b.numSlots * kvCols, "pagedAttention: vCache");
  auto out = floatsArg(info, 6, b.numTokens * qCols, "pagedAttention: out");
  sluice::cpu::pagedAttention(q.Data(), k.Data(), v.Data(), kCache.Data(), vCache.Data(), b, out.Data(), threadsArg(info, 7));
  return env.Undefined();
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
  exports.Set("rmsNorm", Napi::Function::New(env, RmsNorm));
  exports.Set("addRmsNorm", Napi::Function::New(env, AddRmsNorm));
  exports.Set("addInPlace", Napi::Function::New(env, AddInPlace));
  exports.Set("siluMul", Napi::Function::New(env, SiluMul));
  exports.Set("rope", Napi::Function::New(env, Rope));
  exports.Set("pagedAttention", Napi::Function::New(env, PagedAttention));
  exports.Set("packQ4Tiles", Napi::Function::New(env, PackQ4Tiles));
  exports.Set("q4TilesGemm", Napi::Function::New(env, Q4TilesGemm));
  exports.Set("tilesKernel", Napi::String::New(env, sluice::cpu::tilesKernel()));
  exports.Set("q8GemmVectorized", Napi::Boolean::New(env, sluice::cpu::q8GemmVectorized()));
  return exports;
}

}  // namespace

NODE_API_MODULE(sluice_cpu, Init)
