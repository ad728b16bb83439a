#include "activation_blocks.h"

#include <algorithm>
#include <cmath>

#include "thread_pool.h"
#include "tile_common.h"
#include "weight_blocks.h"

namespace sluice {
namespace cpu {
namespace {

/** One block of 32 values: its scale, and its codes into `codes`. */
float quantizeBlock(const float* v, int8_t* codes) {
#if defined(__AVX512F__)
  const __m512 lo = _mm512_loadu_ps(v);
  const __m512 hi = _mm512_loadu_ps(v + 16);
  const float maxAbs = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(lo), _mm512_abs_ps(hi)));
  const float d = maxAbs / 127.0f;
  const __m512 inverse = _mm512_set1_ps(d == 0.0f ? 0.0f : 1.0f / d);
  // Rounded to nearest, ties to even (the default rounding mode), saturated to int8.
  _mm_storeu_si128(reinterpret_cast<__m128i*>(codes), _mm512_cvtsepi32_epi8(_mm512_cvtps_epi32(_mm512_mul_ps(lo, inverse))));
  _mm_storeu_si128(reinterpret_cast<__m128i*>(codes + 16), _mm512_cvtsepi32_epi8(_mm512_cvtps_epi32(_mm512_mul_ps(hi, inverse))));
  return d;
#else
  float maxAbs = 0.0f;
  for (size_t i = 0; i < kBlockSize; i++) maxAbs = std::max(maxAbs, std::fabs(v[i]));
  const float d = maxAbs / 127.0f;
  const float inverse = d == 0.0f ? 0.0f : 1.0f / d;
  for (size_t i = 0; i < kBlockSize; i++) codes[i] = int8_t(std::nearbyint(v[i] * inverse));
  return d;
#endif
}

int32_t sumOfCodes(const int8_t* codes) {
#if defined(__AVX512F__)
  const __m512i lo = _mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(codes)));
  const __m512i hi = _mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(codes + 16)));
  return _mm512_reduce_add_epi32(_mm512_add_epi32(lo, hi));
#else
  int32_t sum = 0;
  for (size_t i = 0; i < kBlockSize; i++) sum += codes[i];
  return sum;
#endif
}

/** Rows [r0, r1) of x into q. */
void quantizeRowsOf(const float* x, size_t r0, size_t r1, size_t k, int32_t weightZero, ActivationBlocks& q) {
  const size_t blocks = k / kBlockSize;
  for (size_t r = r0; r < r1; r++) {
    for (size_t b = 0; b < blocks; b++) {
      int8_t* codes = q.codes.data() + r * k + b * kBlockSize;
      q.scales[r * blocks + b] = quantizeBlock(x + r * k + b * kBlockSize, codes);
      q.offsets[r * blocks + b] = -weightZero * sumOfCodes(codes);
    }
  }
}

}  // namespace

ActivationBlocks quantizeActivations(const float* x, size_t m, size_t k, size_t threads, int32_t weightZero) {
  const size_t rows = packedRows(m);
  const size_t blocks = rows * k / kBlockSize;
  ActivationBlocks q{rows, std::vector<int8_t>(rows * k), std::vector<float>(blocks), std::vector<int32_t>(blocks)};
  constexpr size_t kRowsPerChunk = 16;
  const size_t chunks = (m + kRowsPerChunk - 1) / kRowsPerChunk;
  if (threads <= 1 || chunks <= 1) {
    quantizeRowsOf(x, 0, m, k, weightZero, q);
  } else {
    sharedPool().run(chunks, std::min(threads, chunks), [&](size_t c) { quantizeRowsOf(x, c * kRowsPerChunk, std::min(m, (c + 1) * kRowsPerChunk), k, weightZero, q); });
  }
  return q;
}

}  // namespace cpu
}  // namespace sluice
