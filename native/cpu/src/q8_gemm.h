// y = x W^T with W in GGML Q8_0 blocks (codes stored as q + 128, one f32 scale per block of 32)
// and x quantized the same way per row and block, as llama.cpp's Q8_0 CPU kernels compute it:
// an int8 dot product per block, scaled by both blocks' scales. A benchmark subject for now
// (`npm run bench:cpu-gemm -- --variants q8,native`): the backend still runs ORT's MatMulNBits.
#pragma once
#include <cstddef>
#include <cstdint>

namespace sluice {
namespace cpu {

/** x: [m, k] f32; codes: [n, k]; scales: [n, k / 32]; y: [m, n]. k must be a multiple of 32. */
void q8Gemm(const float* x, size_t m, size_t k, const uint8_t* codes, const float* scales, size_t n, float* y, int threads);

/** Whether q8Gemm runs the AVX-512 VNNI kernel (else a portable scalar loop). */
bool q8GemmVectorized();

}  // namespace cpu
}  // namespace sluice
