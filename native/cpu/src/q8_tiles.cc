#include "q8_tiles.h"

#include <algorithm>
#include <vector>

namespace sluice {
namespace cpu {
namespace {

/** What the VNNI kernel adds to each signed code to multiply it as unsigned. */
constexpr int32_t kWeightZero = 128;

#if !SLUICE_TILES_VNNI
/** Tiles [t0, t1) of every output row, the portable way. */
void tilesScalar(const ActivationBlocks& q, size_t m, size_t k, const int8_t* codes, const uint16_t* scales, size_t t0, size_t t1, size_t n, float* y) {
  const size_t blocks = k / kBlockSize;
  for (size_t r = 0; r < m; r++) {
    for (size_t t = t0; t < t1; t++) {
      for (size_t j = 0; j < kTileRows && t * kTileRows + j < n; j++) {
        float acc = 0.0f;
        for (size_t b = 0; b < blocks; b++) {
          const int8_t* w = codes + (t * blocks + b) * kTileBytes;
          const int8_t* xq = q.codes.data() + r * k + b * kBlockSize;
          int dot = 0;
          for (size_t kk = 0; kk < kBlockSize / 4; kk++)
            for (size_t i = 0; i < 4; i++) dot += int(w[kk * 64 + j * 4 + i]) * int(xq[kk * 4 + i]);
          acc += float(dot) * (f16Value(scales[(t * blocks + b) * kTileRows + j]) * q.scales[r * blocks + b]);
        }
        y[r * n + t * kTileRows + j] = acc;
      }
    }
  }
}
#endif

#if SLUICE_TILES_VNNI
/**
 * Tiles [t0, t1) for every row by VNNI: W's codes go into dpbusd as w + 128 (the top bit
 * flipped) against x's codes as they are, x's offsets taking 128 times its block sums off.
 * Flipping x instead, and taking 128 times W's sums off, ran 1.3x slower at 512 rows on the
 * 2-core AMD VM (a flip per row, and the sums' dot products).
 */
void tilesVnni(const ActivationBlocks& q, size_t m, size_t k, const int8_t* codes, const uint16_t* scales, size_t t0, size_t t1, size_t n, float* y) {
  const size_t blocks = k / kBlockSize;
  const __m512i topBits = _mm512_set1_epi8(char(0x80));
  const auto flippedRows = [&](size_t t, size_t b, __m512i* wRows) {
    const int8_t* w = codes + (t * blocks + b) * kTileBytes;
    for (int line = 0; line < 8; line++) _mm_prefetch(reinterpret_cast<const char*>(w + kPrefetchBlocks * kTileBytes + line * 64), _MM_HINT_T0);
    for (int kk = 0; kk < 8; kk++) wRows[kk] = _mm512_xor_si512(_mm512_loadu_si512(w + kk * 64), topBits);
  };
  vnniProducts(q, m, k, scales, t0, t1, n, y, flippedRows);
}
#endif

#if SLUICE_TILES_AMX
/** Tiles [t0, t1) for every 16 activation rows, in runs of tiles that fit in L2, each run over all rows, so the weights come from memory once. */
void tilesAmx(const ActivationBlocks& q, size_t m, size_t k, const int8_t* codes, const uint16_t* scales, size_t t0, size_t t1, size_t n, float* y) {
  const AmxTiles tiles;
  const size_t blocks = k / kBlockSize;
  const size_t runTiles = amxRunTiles(k);
  for (size_t run = t0; run < t1; run += runTiles) amxProducts(q, m, k, codes + run * blocks * kTileBytes, scales, run, std::min(t1, run + runTiles), n, y);
}
#endif

}  // namespace

void packQ8Tiles(const uint8_t* codes, const float* scales, size_t n, size_t k, int8_t* packedCodes, uint16_t* packedScales) {
  const size_t blocks = k / kBlockSize;
  const size_t tiles = packedRows(n) / kTileRows;
  for (size_t t = 0; t < tiles; t++) {
    for (size_t b = 0; b < blocks; b++) {
      int8_t* tile = packedCodes + (t * blocks + b) * kTileBytes;
      uint16_t* tileScales = packedScales + (t * blocks + b) * kTileRows;
      for (size_t j = 0; j < kTileRows; j++) {
        const size_t row = t * kTileRows + j;
        const bool real = row < n;
        tileScales[j] = real ? f16Bits(scales[row * blocks + b]) : 0;
        for (size_t kk = 0; kk < kBlockSize / 4; kk++)
          for (size_t i = 0; i < 4; i++) tile[kk * 64 + j * 4 + i] = real ? int8_t(int(codes[row * k + b * kBlockSize + kk * 4 + i]) - 128) : 0;
      }
    }
  }
}

void q8TilesGemm(const float* x, size_t m, size_t k, const int8_t* packedCodes, const uint16_t* packedScales, size_t n, float* y, int threads) {
  const size_t workers = std::max<size_t>(1, size_t(threads));
  const ActivationBlocks q = quantizeActivations(x, m, k, workers, kWeightZero);
  const bool amx = m >= kAmxMinRows && amxAvailable();
  forTileChunks(packedRows(n) / kTileRows, k, workers, amx, [&](size_t t0, size_t t1) {
#if SLUICE_TILES_AMX
    if (amx) return tilesAmx(q, m, k, packedCodes, packedScales, t0, t1, n, y);
#endif
#if SLUICE_TILES_VNNI
    tilesVnni(q, m, k, packedCodes, packedScales, t0, t1, n, y);
#else
    tilesScalar(q, m, k, packedCodes, packedScales, t0, t1, n, y);
#endif
  });
  (void)amx;
}

}  // namespace cpu
}  // namespace sluice
