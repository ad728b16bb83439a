// Vectorized float math the layer ops share: exp over 16 lanes (AVX-512), a float dot product, a maximum.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstddef>

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

namespace sluice {
namespace cpu {

#if defined(__AVX512F__)
/**
 * e^x for 16 floats, relative error ~1e-7 on [-100, 100] (inputs clamped there): x = n ln2 + r
 * with ln2 split in two (Cody-Waite) so r is exact, e^r by its Taylor series to degree 7
 * (|r| <= ln2 / 2), and 2^n applied by scalef, which needs no exponent-bit arithmetic.
 */
inline __m512 exp16(__m512 x) {
  x = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(-100.0f)), _mm512_set1_ps(100.0f));
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693145751953125f), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(1.4286068202862268e-06f), r);
  __m512 p = _mm512_set1_ps(1.0f / 5040);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 720));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  return _mm512_scalef_ps(p, n);
}
#endif

/** sum a[i] * b[i] over n floats. */
inline float dot(const float* a, const float* b, size_t n) {
  size_t i = 0;
  float sum = 0.0f;
#if defined(__AVX512F__)
  __m512 acc0 = _mm512_setzero_ps();
  __m512 acc1 = _mm512_setzero_ps();
  for (; i + 32 <= n; i += 32) {
    acc0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), acc0);
    acc1 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 16), _mm512_loadu_ps(b + i + 16), acc1);
  }
  for (; i + 16 <= n; i += 16) acc0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), acc0);
  sum = _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1));
#endif
  for (; i < n; i++) sum += a[i] * b[i];
  return sum;
}

/** The largest of n >= 1 floats (vectorized: the scalar loop's chain of compares was an eighth of a prefill's attention). */
inline float maxOf(const float* values, size_t n) {
  size_t i = 0;
  float most = values[0];
#if defined(__AVX512F__)
  if (n >= 16) {
    __m512 acc = _mm512_loadu_ps(values);
    for (i = 16; i + 16 <= n; i += 16) acc = _mm512_max_ps(acc, _mm512_loadu_ps(values + i));
    most = _mm512_reduce_max_ps(acc);
  }
#endif
  for (; i < n; i++) most = std::max(most, values[i]);
  return most;
}

/** values[i] = e^(values[i] - shift) over n floats; returns their sum. */
inline float expShifted(float* values, size_t n, float shift) {
  size_t i = 0;
  float sum = 0.0f;
#if defined(__AVX512F__)
  const __m512 s = _mm512_set1_ps(shift);
  __m512 acc = _mm512_setzero_ps();
  for (; i + 16 <= n; i += 16) {
    const __m512 e = exp16(_mm512_sub_ps(_mm512_loadu_ps(values + i), s));
    _mm512_storeu_ps(values + i, e);
    acc = _mm512_add_ps(acc, e);
  }
  sum = _mm512_reduce_add_ps(acc);
#endif
  for (; i < n; i++) sum += values[i] = std::exp(values[i] - shift);
  return sum;
}

}  // namespace cpu
}  // namespace sluice
