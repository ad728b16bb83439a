// The activations of a tiled GEMM in Q8_0 blocks: each row of x quantized per block of 32 the
// way llama.cpp quantizes activations for its Q8_0 and Q4_0 dot products.
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

namespace sluice {
namespace cpu {

/** x's rows in Q8_0 blocks (d = max |x| / 127, codes rounded to nearest, ties to even), rows padded with zeros to whole tiles. */
struct ActivationBlocks {
  size_t rows;
  std::vector<int8_t> codes;
  std::vector<float> scales;
  /** Each block's sum of codes: Q4_0 weights are multiplied as their unsigned codes q, and 8 times this comes off. */
  std::vector<int32_t> sums;
};

/** Rows [0, m) of x ([m, k], k a multiple of 32) quantized, on the shared pool's threads when there are many. */
ActivationBlocks quantizeActivations(const float* x, size_t m, size_t k, size_t threads);

}  // namespace cpu
}  // namespace sluice
