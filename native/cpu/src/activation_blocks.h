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
  /**
   * Each block's sum of codes times -weightZero: a dot product over weight codes held unsigned
   * (q + weightZero, as dpbusd takes them) starts from this and comes out exact.
   */
  std::vector<int32_t> offsets;
};

/** Rows [0, m) of x ([m, k], k a multiple of 32) quantized, on the shared pool's threads when there are many; offsets for weights' codes held as q + weightZero. */
ActivationBlocks quantizeActivations(const float* x, size_t m, size_t k, size_t threads, int32_t weightZero);

}  // namespace cpu
}  // namespace sluice
