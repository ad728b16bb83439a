// The dummy-weight generator of src/model/dummy-weights.ts, compiled for both the host (C++, used
// by test/backends/cuda-dummy-hash.test.ts through native/test/dummy_hash_check.cc) and the device
// (elementwise.cu). One definition keeps the two bit-identical.
//
// Rounding: JS computes offset + (2u - 1) * halfRange as two rounded double operations, rounds the
// double to f32 and the f32 to bf16 (nearest even). nvcc would contract the multiply-add into one
// FMA (one rounding), so the device uses explicit round-to-nearest intrinsics; the host goes
// through a volatile product, which no compiler may fuse.
#pragma once
#include <cstdint>
#include <cstring>

#if defined(__CUDACC__)
#define SLUICE_HOST_DEVICE __host__ __device__ inline
#else
#define SLUICE_HOST_DEVICE inline
#endif

namespace sluice {
namespace dummy {

/** lowbias32 (src/model/hash32.ts). */
SLUICE_HOST_DEVICE uint32_t hash32(uint32_t x) {
  x ^= x >> 16;
  x *= 0x7feb352du;
  x ^= x >> 15;
  x *= 0x846ca68bu;
  x ^= x >> 16;
  return x;
}

/** The index is hashed before the tensor key is mixed in (see dummyValue in dummy-weights.ts). */
SLUICE_HOST_DEVICE uint32_t elementHash(uint32_t key, uint64_t index) {
  const uint32_t lo = uint32_t(index);
  const uint32_t hi = uint32_t(index >> 32);
  return hash32(hash32(hash32(lo) ^ hash32(hi ^ 0x9e3779b9u)) + key);
}

/** offset + (2u - 1) * halfRange with u = (h >> 8) / 2^24, each operation rounded on its own. */
SLUICE_HOST_DEVICE double elementValue(uint32_t key, uint64_t index, double halfRange, double offset) {
  const uint32_t h = elementHash(key, index);
  const double centered = double(h >> 8) * (2.0 / 16777216.0) - 1.0;  // exact: 25 significant bits
#if defined(__CUDA_ARCH__)
  return __dadd_rn(offset, __dmul_rn(centered, halfRange));
#else
  volatile double product = centered * halfRange;
  return offset + product;
#endif
}

SLUICE_HOST_DEVICE uint32_t f32Bits(float f) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(f);
#else
  uint32_t bits;
  std::memcpy(&bits, &f, sizeof bits);
  return bits;
#endif
}

SLUICE_HOST_DEVICE float toF32(double value) {
#if defined(__CUDA_ARCH__)
  return __double2float_rn(value);
#else
  return float(value);
#endif
}

/** f32ToBf16 of src/model/dtype.ts: nearest even, NaN to the canonical quiet NaN. */
SLUICE_HOST_DEVICE uint16_t bf16Bits(float f) {
  const uint32_t bits = f32Bits(f);
  if ((bits & 0x7fffffffu) > 0x7f800000u) return 0x7fc0;
  return uint16_t((bits + 0x7fffu + ((bits >> 16) & 1u)) >> 16);
}

/** Element `index` of a dummy tensor as bf16 bits: what the device stores and the host reads. */
SLUICE_HOST_DEVICE uint16_t elementBf16(uint32_t key, uint64_t index, double halfRange, double offset) {
  return bf16Bits(toF32(elementValue(key, index, halfRange, offset)));
}

}  // namespace dummy
}  // namespace sluice
