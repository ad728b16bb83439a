#include "weight_blocks.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "dummy_hash.h"

namespace sluice {
namespace cpu {
namespace {

uint32_t bitsOf(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, sizeof bits);
  return bits;
}

float floatOf(uint32_t bits) {
  float f;
  std::memcpy(&f, &bits, sizeof f);
  return f;
}

}  // namespace

uint16_t f16Bits(float x) {
  const uint32_t bits = bitsOf(x);
  const uint32_t sign = (bits >> 16) & 0x8000u;
  const int exp = int((bits >> 23) & 0xffu);
  uint32_t mant = bits & 0x7fffffu;
  if (exp == 0xff) return uint16_t(sign | 0x7c00u | (mant ? 0x200u : 0u));
  const int e = exp - 127 + 15;
  if (e >= 0x1f) return uint16_t(sign | 0x7c00u);
  if (e <= 0) {
    if (e < -10) return uint16_t(sign);
    mant |= 0x800000u;
    const int shift = 14 - e;
    uint32_t half = mant >> shift;
    const uint32_t rest = mant & ((1u << shift) - 1u);
    const uint32_t halfway = 1u << (shift - 1);
    if (rest > halfway || (rest == halfway && (half & 1u))) half++;
    return uint16_t(sign | half);
  }
  uint32_t half = (uint32_t(e) << 10) | (mant >> 13);
  const uint32_t rest = mant & 0x1fffu;
  if (rest > 0x1000u || (rest == 0x1000u && (half & 1u))) half++;
  return uint16_t(sign | half);
}

float f16Value(uint16_t h) {
  const uint32_t sign = uint32_t(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1fu;
  const uint32_t mant = h & 0x3ffu;
  if (exp == 0) return floatOf(sign) + (sign ? -1.0f : 1.0f) * float(mant) * (1.0f / 16777216.0f);
  if (exp == 0x1f) return floatOf(sign | 0x7f800000u | (mant << 13));
  return floatOf(sign | ((exp + 112) << 23) | (mant << 13));
}

namespace {

/** The nearest f16 value (the scale a GGUF file stores), as an f32. */
float roundToF16(float x) {
  const uint32_t bits = bitsOf(x);
  const uint32_t exp = (bits >> 23) & 0xffu;
  if (exp >= 113 && exp <= 141) return floatOf((bits + 0xfffu + ((bits >> 13) & 1u)) & 0xffffe000u);
  return f16Value(f16Bits(x));
}

// One block of `n` <= 32 values. Arithmetic is f32 throughout: ggml-blocks.ts rounds every
// double operation to f32 (Math.fround), which for +, * and / of f32 operands gives the same
// result as the f32 operation.

/** f32 values read as their bits in a loop the compiler can vectorize (memcpy per element stops it). */
typedef uint32_t __attribute__((may_alias)) MayAliasU32;

/**
 * The largest |x[i]| as f32 bits, NaN left out (as `a > maxAbs` leaves it out): for non-negative
 * floats the bits order as the values do, and an integer maximum vectorizes where a float one,
 * with its NaN rules, does not.
 */
uint32_t maxAbsBits(const float* x, size_t n) {
  const MayAliasU32* bits = reinterpret_cast<const MayAliasU32*>(x);
  int32_t best = 0;
  for (size_t i = 0; i < n; i++) {
    const int32_t magnitude = int32_t(bits[i] & 0x7fffffffu);
    best = std::max(best, magnitude > 0x7f800000 ? 0 : magnitude);
  }
  return uint32_t(best);
}

void quantizeBlockQ8(const float* x, size_t n, uint8_t* codes, float* scale) {
  const float maxAbs = floatOf(maxAbsBits(x, n));
  const float d = maxAbs / 127.0f;
  const float inverse = d == 0.0f ? 0.0f : 1.0f / d;
  *scale = roundToF16(d);
  for (size_t i = 0; i < n; i++) {
    const float product = x[i] * inverse;
    // `| 0` makes NaN code 0. Rounding is half away from zero, in double so that v + 0.5 is
    // exact, and without a branch on the sign (random signs mispredicted once per weight).
    const double v = product == product ? double(product) : 0.0;
    codes[i] = uint8_t(int32_t(v + std::copysign(0.5, v)) + 128);
  }
  for (size_t i = n; i < kBlockSize; i++) codes[i] = 128;
}

void quantizeBlockQ4(const float* x, size_t n, uint8_t* codes, float* scale) {
  // The element of largest magnitude, sign kept; the first of equal magnitudes.
  const uint32_t maxBits = maxAbsBits(x, n);
  float max = 0.0f;
  if (maxBits != 0) {
    for (size_t i = 0; i < n; i++) {
      if ((bitsOf(x[i]) & 0x7fffffffu) == maxBits) {
        max = x[i];
        break;
      }
    }
  }
  const float d = max / -8.0f;
  const float inverse = d == 0.0f ? 0.0f : 1.0f / d;
  *scale = roundToF16(d);
  for (size_t i = 0; i < n; i++) {
    const float t = x[i] * inverse + 8.5f;
    // Math.min(15, Math.trunc(t)) stored in a Uint8Array: NaN stores 0.
    codes[i] = uint8_t(std::min(15, int32_t(t == t ? t : 0.0f)));
  }
  for (size_t i = n; i < kBlockSize; i++) codes[i] = 8;
}

void quantizeRow(BlockType type, const float* row, size_t cols, uint8_t* codes, float* scales) {
  const size_t blocks = (cols + kBlockSize - 1) / kBlockSize;
  for (size_t b = 0; b < blocks; b++) {
    const size_t start = b * kBlockSize;
    const size_t n = std::min(kBlockSize, cols - start);
    if (type == BlockType::q8_0) quantizeBlockQ8(row + start, n, codes + start, scales + b);
    else quantizeBlockQ4(row + start, n, codes + start, scales + b);
  }
}

/** Elements [base, base + n) of a dummy tensor as the tensor's dtype stores them, widened to f32. */
void dummyRow(const DummyRecipe& recipe, uint64_t base, size_t n, float* row) {
  const uint64_t last = base + n - 1;
  const bool oneHighWord = (base >> 32) == (last >> 32);
  const uint32_t hiHash = dummy::hash32(uint32_t(base >> 32) ^ 0x9e3779b9u);
  const uint32_t lo0 = uint32_t(base);
  const auto value = [&](uint32_t h) {
    const double centered = double(h >> 8) * (2.0 / 16777216.0) - 1.0;
    return float(recipe.offset + centered * recipe.halfRange);
  };
  // Two loops rather than a choice per element, so the common one vectorizes.
  if (oneHighWord) {
    for (size_t i = 0; i < n; i++) row[i] = value(dummy::hash32(dummy::hash32(dummy::hash32(lo0 + uint32_t(i)) ^ hiHash) + recipe.key));
  } else {
    for (size_t i = 0; i < n; i++) row[i] = value(dummy::elementHash(recipe.key, base + i));
  }
  if (recipe.bf16) {
    for (size_t i = 0; i < n; i++) {
      const uint32_t b = bitsOf(row[i]);
      row[i] = floatOf(((b + 0x7fffu + ((b >> 16) & 1u)) >> 16) << 16);
    }
  }
}

}  // namespace

void quantizeRows(BlockType type, const float* values, size_t rows, size_t cols, BlockOutput out) {
  const size_t blocksPerRow = (cols + kBlockSize - 1) / kBlockSize;
  for (size_t r = 0; r < rows; r++) quantizeRow(type, values + r * cols, cols, out.codes + r * blocksPerRow * kBlockSize, out.scales + r * blocksPerRow);
}

void dummyRows(BlockType type, const DummyRecipe& recipe, uint64_t firstIndex, size_t rows, size_t cols, BlockOutput out) {
  const size_t blocksPerRow = (cols + kBlockSize - 1) / kBlockSize;
  std::vector<float> row(cols);
  for (size_t r = 0; r < rows; r++) {
    dummyRow(recipe, firstIndex + r * cols, cols, row.data());
    quantizeRow(type, row.data(), cols, out.codes + r * blocksPerRow * kBlockSize, out.scales + r * blocksPerRow);
  }
}

}  // namespace cpu
}  // namespace sluice
