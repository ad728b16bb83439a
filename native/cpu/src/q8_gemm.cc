#include "q8_gemm.h"

#include "thread_pool.h"

#include <algorithm>
#include <cmath>
#include <functional>
#include <vector>

#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VNNI__)
#include <immintrin.h>
#define SLUICE_Q8_VNNI 1
#endif

namespace sluice {
namespace cpu {
namespace {

constexpr size_t kBlock = 32;

/** x's rows in Q8_0 blocks: int8 codes, a scale per block, and 128 * (sum of codes) * scale per block (the codes of W are q + 128). */
struct QuantizedRows {
  std::vector<int8_t> codes;
  std::vector<float> scales;
  std::vector<float> offsets;
};

QuantizedRows quantizeActivations(const float* x, size_t m, size_t k) {
  const size_t blocks = k / kBlock;
  QuantizedRows q{std::vector<int8_t>(m * k), std::vector<float>(m * blocks), std::vector<float>(m * blocks)};
  for (size_t r = 0; r < m; r++) {
    for (size_t b = 0; b < blocks; b++) {
      const float* v = x + r * k + b * kBlock;
      float maxAbs = 0.0f;
      for (size_t i = 0; i < kBlock; i++) maxAbs = std::max(maxAbs, std::fabs(v[i]));
      const float d = maxAbs / 127.0f;
      const float inverse = d == 0.0f ? 0.0f : 1.0f / d;
      int sum = 0;
      for (size_t i = 0; i < kBlock; i++) {
        const int c = int(std::round(v[i] * inverse));
        q.codes[r * k + b * kBlock + i] = int8_t(c);
        sum += c;
      }
      q.scales[r * blocks + b] = d;
      q.offsets[r * blocks + b] = 128.0f * float(sum) * d;
    }
  }
  return q;
}

/** Rows [n0, n1) of every output row, the portable way. */
void gemmRowsScalar(const QuantizedRows& q, size_t m, size_t k, const uint8_t* codes, const float* scales, size_t n0, size_t n1, size_t n, float* y) {
  const size_t blocks = k / kBlock;
  for (size_t r = 0; r < m; r++) {
    for (size_t j = n0; j < n1; j++) {
      float acc = 0.0f;
      for (size_t b = 0; b < blocks; b++) {
        int dot = 0;
        for (size_t i = 0; i < kBlock; i++) dot += int(codes[j * k + b * kBlock + i]) * int(q.codes[r * k + b * kBlock + i]);
        acc += scales[j * blocks + b] * (float(dot) * q.scales[r * blocks + b] - q.offsets[r * blocks + b]);
      }
      y[r * n + j] = acc;
    }
  }
}

#if SLUICE_Q8_VNNI
/** idx[p]: lanes 0-7 pick scale 2p of a vector of 16 blocks' scales, lanes 8-15 scale 2p + 1 (dpbusd's lanes for each 32 bytes). */
struct PairIndex {
  __m512i idx[8];
  PairIndex() {
    for (int p = 0; p < 8; p++) {
      alignas(64) int lanes[16];
      for (int i = 0; i < 16; i++) lanes[i] = 2 * p + (i >= 8 ? 1 : 0);
      idx[p] = _mm512_load_si512(lanes);
    }
  }
};

/** NT weight rows from j by MT activation rows from r, 16 blocks (512 bytes of k) per step. */
template <int NT, int MT>
void tile(const QuantizedRows& q, size_t k, const uint8_t* codes, const float* scales, size_t j, size_t r, size_t n, float* y) {
  static const PairIndex pairs;
  const size_t blocks = k / kBlock;
  __m512 acc[NT][MT];
  for (int a = 0; a < NT; a++)
    for (int c = 0; c < MT; c++) acc[a][c] = _mm512_setzero_ps();
  for (size_t b0 = 0; b0 < blocks; b0 += 16) {
    __m512 wScales[NT];
    __m512 xScales[MT];
    for (int a = 0; a < NT; a++) wScales[a] = _mm512_loadu_ps(scales + (j + a) * blocks + b0);
    for (int c = 0; c < MT; c++) xScales[c] = _mm512_loadu_ps(q.scales.data() + (r + c) * blocks + b0);
    for (int p = 0; p < 8; p++) {
      const size_t at = (b0 + 2 * p) * kBlock;
      __m512i w[NT];
      __m512 ws[NT];
      for (int a = 0; a < NT; a++) {
        w[a] = _mm512_loadu_si512(codes + (j + a) * k + at);
        ws[a] = _mm512_permutexvar_ps(pairs.idx[p], wScales[a]);
      }
      for (int c = 0; c < MT; c++) {
        const __m512i xv = _mm512_loadu_si512(q.codes.data() + (r + c) * k + at);
        const __m512 xs = _mm512_permutexvar_ps(pairs.idx[p], xScales[c]);
        for (int a = 0; a < NT; a++) {
          const __m512i dot = _mm512_dpbusd_epi32(_mm512_setzero_si512(), w[a], xv);
          acc[a][c] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), _mm512_mul_ps(ws[a], xs), acc[a][c]);
        }
      }
    }
  }
  for (int a = 0; a < NT; a++) {
    for (int c = 0; c < MT; c++) {
      // The +128 of W's codes: minus sum over blocks of W's scale times x's 128 * sum * scale.
      __m512 correction = _mm512_setzero_ps();
      const float* ws = scales + (j + a) * blocks;
      const float* xo = q.offsets.data() + (r + c) * blocks;
      for (size_t b = 0; b < blocks; b += 16) correction = _mm512_fmadd_ps(_mm512_loadu_ps(ws + b), _mm512_loadu_ps(xo + b), correction);
      y[(r + c) * n + j + a] = _mm512_reduce_add_ps(acc[a][c]) - _mm512_reduce_add_ps(correction);
    }
  }
}

template <int NT>
void rowsOfTile(const QuantizedRows& q, size_t m, size_t k, const uint8_t* codes, const float* scales, size_t j, size_t n, float* y) {
  size_t r = 0;
  for (; r + 4 <= m; r += 4) tile<NT, 4>(q, k, codes, scales, j, r, n, y);
  for (; r < m; r++) tile<NT, 1>(q, k, codes, scales, j, r, n, y);
}

void gemmRowsVnni(const QuantizedRows& q, size_t m, size_t k, const uint8_t* codes, const float* scales, size_t n0, size_t n1, size_t n, float* y) {
  size_t j = n0;
  for (; j + 4 <= n1; j += 4) rowsOfTile<4>(q, m, k, codes, scales, j, n, y);
  for (; j < n1; j++) rowsOfTile<1>(q, m, k, codes, scales, j, n, y);
}
#endif

}  // namespace

bool q8GemmVectorized() {
#if SLUICE_Q8_VNNI
  return true;
#else
  return false;
#endif
}

void q8Gemm(const float* x, size_t m, size_t k, const uint8_t* codes, const float* scales, size_t n, float* y, int threads) {
  const QuantizedRows q = quantizeActivations(x, m, k);
  // The vector kernel steps through 16 blocks at a time: it needs k % 512 == 0.
  const bool vector = q8GemmVectorized() && k % 512 == 0;
  const size_t parts = size_t(std::max(1, std::min(threads, int(n / 4))));
  const size_t share = ((n + parts - 1) / parts + 3) / 4 * 4;
  const std::function<void(size_t)> work = [&](size_t t) {
    const size_t n0 = std::min(n, t * share);
    const size_t n1 = std::min(n, (t + 1) * share);
#if SLUICE_Q8_VNNI
    if (vector) return gemmRowsVnni(q, m, k, codes, scales, n0, n1, n, y);
#endif
    gemmRowsScalar(q, m, k, codes, scales, n0, n1, n, y);
  };
  if (parts == 1) work(0);
  else sharedPool().run(parts, parts, work);
}

}  // namespace cpu
}  // namespace sluice
