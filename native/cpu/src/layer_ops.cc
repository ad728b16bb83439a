#include "layer_ops.h"

#include <algorithm>
#include <cmath>

#include "thread_pool.h"
#include "vec_math.h"

namespace sluice {
namespace cpu {
namespace {

/** Rows of work per pool chunk, and the fewest values worth handing to the pool at all. */
constexpr size_t kRowsPerChunk = 8;
constexpr size_t kValuesForThreads = 1 << 15;

/** work(r0, r1) over [0, rows), in chunks on the pool when the rows are many. */
template <typename Work>
void overRows(size_t rows, size_t valuesPerRow, int threads, const Work& work) {
  const size_t chunks = (rows + kRowsPerChunk - 1) / kRowsPerChunk;
  if (threads <= 1 || chunks <= 1 || rows * valuesPerRow < kValuesForThreads) {
    work(size_t(0), rows);
    return;
  }
  sharedPool().run(chunks, std::min<size_t>(threads, chunks), [&](size_t c) { work(c * kRowsPerChunk, std::min(rows, (c + 1) * kRowsPerChunk)); });
}

void normRow(const float* x, const float* weight, size_t cols, float eps, float* out) {
  const float scale = 1.0f / std::sqrt(dot(x, x, cols) / float(cols) + eps);
  for (size_t c = 0; c < cols; c++) out[c] = x[c] * scale * weight[c];
}

}  // namespace

void rmsNorm(const float* x, const float* weight, size_t rows, size_t cols, float eps, float* out, int threads) {
  overRows(rows, cols, threads, [&](size_t r0, size_t r1) {
    for (size_t r = r0; r < r1; r++) normRow(x + r * cols, weight, cols, eps, out + r * cols);
  });
}

void addRmsNorm(float* x, const float* residual, const float* weight, size_t rows, size_t cols, float eps, float* out, int threads) {
  overRows(rows, cols, threads, [&](size_t r0, size_t r1) {
    for (size_t r = r0; r < r1; r++) {
      float* row = x + r * cols;
      addInPlace(row, residual + r * cols, cols);
      normRow(row, weight, cols, eps, out + r * cols);
    }
  });
}

void addInPlace(float* x, const float* y, size_t n) {
  for (size_t i = 0; i < n; i++) x[i] += y[i];
}

void siluMul(const float* gate, const float* up, size_t n, float* out, int threads) {
  constexpr size_t kChunk = 4096;
  overRows((n + kChunk - 1) / kChunk, kChunk, threads, [&](size_t c0, size_t c1) {
    size_t i = c0 * kChunk;
    const size_t end = std::min(n, c1 * kChunk);
#if defined(__AVX512F__)
    const __m512 one = _mm512_set1_ps(1.0f);
    for (; i + 16 <= end; i += 16) {
      const __m512 g = _mm512_loadu_ps(gate + i);
      const __m512 silu = _mm512_div_ps(g, _mm512_add_ps(one, exp16(_mm512_sub_ps(_mm512_setzero_ps(), g))));
      _mm512_storeu_ps(out + i, _mm512_mul_ps(silu, _mm512_loadu_ps(up + i)));
    }
#endif
    for (; i < end; i++) out[i] = gate[i] / (1.0f + std::exp(-gate[i])) * up[i];
  });
}

void rope(float* x, size_t rows, size_t heads, size_t headDim, const float* cos, const float* sin, int threads) {
  const size_t half = headDim / 2;
  overRows(rows, heads * headDim, threads, [&](size_t r0, size_t r1) {
    for (size_t t = r0; t < r1; t++) {
      const float* c = cos + t * half;
      const float* s = sin + t * half;
      for (size_t h = 0; h < heads; h++) {
        float* a = x + (t * heads + h) * headDim;
        float* b = a + half;
        for (size_t i = 0; i < half; i++) {
          const float ai = a[i];
          const float bi = b[i];
          a[i] = ai * c[i] - bi * s[i];
          b[i] = bi * c[i] + ai * s[i];
        }
      }
    }
  });
}

}  // namespace cpu
}  // namespace sluice
