// GGML Q8_0 / Q4_0 blocks of a weight matrix, computed at load: the same blocks, bit for bit, as
// backends/cpu/ggml-blocks.ts (quantizeRows) and block-worker.ts (dummyRow) compute, which stay
// the reference and the fallback when this addon is not built.
#pragma once
#include <cstddef>
#include <cstdint>

namespace sluice {
namespace cpu {

enum class BlockType { q8_0, q4_0 };

constexpr size_t kBlockSize = 32;

/** f32 to f16 bits, nearest even; the same steps as f32ToF16 in src/model/dtype.ts. */
uint16_t f16Bits(float x);

/** An f16's value as an f32 (exact). */
float f16Value(uint16_t h);

/** Where a matrix's blocks go: row r's codes at codes + r * blocksPerRow * 32, its scales at scales + r * blocksPerRow. */
struct BlockOutput {
  uint8_t* codes;
  float* scales;
};

/** Quantizes `rows` rows of `cols` f32 values (row-major). */
void quantizeRows(BlockType type, const float* values, size_t rows, size_t cols, BlockOutput out);

/** A dummy tensor's generator (src/model/dummy-weights.ts): element i is offset + (2u - 1) * halfRange with u from hash(i, key). */
struct DummyRecipe {
  uint32_t key;
  double halfRange;
  double offset;
  /** Values rounded to bf16 (the tensor's dtype), else kept as f32. */
  bool bf16;
};

/** Blocks of `rows` rows of `cols` dummy values whose first element is element `firstIndex` of the tensor. */
void dummyRows(BlockType type, const DummyRecipe& recipe, uint64_t firstIndex, size_t rows, size_t cols, BlockOutput out);

}  // namespace cpu
}  // namespace sluice
