// Q8_0 weights packed once at load into the tile layout AMX and VNNI read directly, and
// y = x W^T over them with x quantized per row and block of 32 (llama.cpp's Q8_0 arithmetic:
// an int8 dot product per block, scaled by both blocks' scales).
//
// Layout of a packed [n, k] matrix (k a multiple of 32; n padded up to a multiple of 16 with
// zero rows): tile (t, b) holds rows 16t..16t+15, columns 32b..32b+31, 512 code bytes at
// ((t * k / 32) + b) * 512, byte kk * 64 + j * 4 + i = code of row 16t + j, column 32b + 4kk + i
// (signed: the blocks' q + 128 codes less 128); its 16 scales as f16 at ((t * k / 32) + b) * 16 + j.
// Rows of four columns side by side are what VNNI's dpbusd and AMX's B tiles multiply.
#pragma once
#include <cstddef>
#include <cstdint>

#include "tile_common.h"

namespace sluice {
namespace cpu {

/** codes: [n, k] (q + 128), scales: [n, k / 32] f32 (f16 values) into the tile layout above. */
void packQ8Tiles(const uint8_t* codes, const float* scales, size_t n, size_t k, int8_t* packedCodes, uint16_t* packedScales);

/** x: [m, k] f32, y: [m, n]; the weights packed by packQ8Tiles. */
void q8TilesGemm(const float* x, size_t m, size_t k, const int8_t* packedCodes, const uint16_t* packedScales, size_t n, float* y, int threads);

}  // namespace cpu
}  // namespace sluice
