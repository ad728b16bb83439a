// The element-wise ops of a Llama layer on the host (--cpu-gemm native): norms, residual adds,
// rotary embedding and the MLP activation, over f32 rows, on the shared pool when rows are many.
#pragma once
#include <cstddef>

namespace sluice {
namespace cpu {

/** out[r] = x[r] / rms(x[r]) * weight, over rows of cols values. */
void rmsNorm(const float* x, const float* weight, size_t rows, size_t cols, float eps, float* out, int threads);

/** x += residual, then out = rmsNorm(x) (x keeps the sum: the residual stream). */
void addRmsNorm(float* x, const float* residual, const float* weight, size_t rows, size_t cols, float eps, float* out, int threads);

/** x += y over n values. */
void addInPlace(float* x, const float* y, size_t n);

/** out = silu(gate) * up over n values. */
void siluMul(const float* gate, const float* up, size_t n, float* out, int threads);

/**
 * Rotary embedding in place over rows of heads * headDim: pairs (i, i + headDim / 2) of every
 * head of row t turned by the angle whose cos and sin are cos[t * headDim / 2 + i], sin[...].
 */
void rope(float* x, size_t rows, size_t heads, size_t headDim, const float* cos, const float* sin, int threads);

}  // namespace cpu
}  // namespace sluice
