#include "q8_tiles.h"

#include <algorithm>
#include <vector>

namespace sluice {
namespace cpu {
namespace {

/** How far ahead of the codes being multiplied the dot-product kernel prefetches (tuned on the 2-core VM). */
constexpr size_t kPrefetchBytes = 8 * kTileBytes;

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
 * R activation rows from r0 by tiles [t0, t1): each tile's 8 rows of codes loaded once per block.
 * dpbusd multiplies unsigned by signed bytes, so W's codes go in as w + 128 (a flipped top bit,
 * once per block for all R rows) against x's codes as they are, and each row's sum starts from
 * its block's offset (-128 times the sum of x's codes, read from memory: no vector op for it).
 * Flipping x instead, and taking 128 times W's sums off, ran 1.3x slower at 512 rows on the
 * 2-core AMD VM (a flip per row, and the sums' dot products); subtracting the offset after the
 * products, 1.05-1.1x slower.
 */
template <int R>
void tilesVnni(const ActivationBlocks& q, size_t r0, size_t k, const int8_t* codes, const uint16_t* scales, size_t t0, size_t t1, size_t n, float* y) {
  const size_t blocks = k / kBlockSize;
  const __m512i topBits = _mm512_set1_epi8(char(kWeightZero));
  for (size_t t = t0; t < t1; t++) {
    __m512 acc[R];
    for (int r = 0; r < R; r++) acc[r] = _mm512_setzero_ps();
    for (size_t b = 0; b < blocks; b++) {
      const int8_t* w = codes + (t * blocks + b) * kTileBytes;
      // The hardware prefetcher stops at each 4 KiB page; ask for the tiles ahead ourselves.
      for (int line = 0; line < 8; line++) _mm_prefetch(reinterpret_cast<const char*>(w + kPrefetchBytes + line * 64), _MM_HINT_T0);
      __m512i wRows[8];
      for (int kk = 0; kk < 8; kk++) wRows[kk] = _mm512_xor_si512(_mm512_loadu_si512(w + kk * 64), topBits);
      const __m512 ws = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(scales + (t * blocks + b) * kTileRows)));
      for (int r = 0; r < R; r++) {
        const size_t block = (r0 + r) * blocks + b;
        const int8_t* xq = q.codes.data() + (r0 + r) * k + b * kBlockSize;
        __m512i dot = _mm512_set1_epi32(q.offsets[block]);
        for (int kk = 0; kk < 8; kk++) {
          int quad;
          __builtin_memcpy(&quad, xq + kk * 4, 4);
          dot = _mm512_dpbusd_epi32(dot, wRows[kk], _mm512_set1_epi32(quad));
        }
        const __m512 exact = _mm512_cvtepi32_ps(dot);
        acc[r] = _mm512_fmadd_ps(exact, _mm512_mul_ps(ws, _mm512_set1_ps(q.scales[block])), acc[r]);
      }
    }
    for (int r = 0; r < R; r++) _mm512_mask_storeu_ps(y + (r0 + r) * n + t * kTileRows, rowsMask(t, n), acc[r]);
  }
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
    inPassesOfEight(m, [&](auto rows, size_t r0) { tilesVnni<decltype(rows)::value>(q, r0, k, packedCodes, packedScales, t0, t1, n, y); });
#else
    tilesScalar(q, m, k, packedCodes, packedScales, t0, t1, n, y);
#endif
  });
  (void)amx;
}

}  // namespace cpu
}  // namespace sluice
