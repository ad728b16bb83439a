// Q4_0 weights packed once at load into 16-row tiles of 4-bit codes, and y = x W^T over them with
// x quantized per row and block of 32 (llama.cpp's Q4_0 arithmetic on x86: an integer dot product
// per block of the weights' codes q with x's Q8_0 codes, less 8 times the sum of x's codes, scaled
// by both blocks' scales). Decode reads every weight once a step, so they stay 4-bit in memory.
//
// Layout of a packed [n, k] matrix (k a multiple of 32; n padded up to a multiple of 16 with
// rows of zero code 8 and scale 0): tile (t, b) holds rows 16t..16t+15, columns 32b..32b+31, 256
// bytes at ((t * k / 32) + b) * 256; byte p * 64 + j * 4 + i (p < 4) holds row 16t + j's code of
// column 32b + 4p + i in its low nibble and of column 32b + 16 + 4p + i in its high nibble
// (unsigned, 0..15: value (q - 8) * d). Its 16 scales as f16 at ((t * k / 32) + b) * 16 + j, as
// in q8_tiles.h. Each 64 bytes split into nibbles are two of the rows of four columns that VNNI's
// dpbusd multiplies; for AMX a run of tiles is unpacked into q8_tiles.h's signed layout.
#pragma once
#include <cstddef>
#include <cstdint>

#include "tile_common.h"

namespace sluice {
namespace cpu {

/** Bytes of one packed Q4_0 tile's codes (16 rows by one block, two codes a byte). */
constexpr size_t kQ4TileBytes = kTileBytes / 2;

/** codes: [n, k] (q, 0..15), scales: [n, k / 32] f32 (f16 values) into the tile layout above. */
void packQ4Tiles(const uint8_t* codes, const float* scales, size_t n, size_t k, uint8_t* packedCodes, uint16_t* packedScales);

/** x: [m, k] f32, y: [m, n]; the weights packed by packQ4Tiles. */
void q4TilesGemm(const float* x, size_t m, size_t k, const uint8_t* packedCodes, const uint16_t* packedScales, size_t n, float* y, int threads);

}  // namespace cpu
}  // namespace sluice
