#include "q4_tiles.h"

#include <algorithm>
#include <vector>

namespace sluice {
namespace cpu {
namespace {

/** The zero value's code: what padding rows hold, and what comes off each code in a product. */
constexpr uint8_t kZeroCode = 8;

#if !SLUICE_TILES_VNNI
/** Tiles [t0, t1) of every output row, the portable way. */
void tilesScalar(const ActivationBlocks& q, size_t m, size_t k, const uint8_t* codes, const uint16_t* scales, size_t t0, size_t t1, size_t n, float* y) {
  const size_t blocks = k / kBlockSize;
  for (size_t r = 0; r < m; r++) {
    for (size_t t = t0; t < t1; t++) {
      for (size_t j = 0; j < kTileRows && t * kTileRows + j < n; j++) {
        float acc = 0.0f;
        for (size_t b = 0; b < blocks; b++) {
          const uint8_t* w = codes + (t * blocks + b) * kQ4TileBytes;
          const int8_t* xq = q.codes.data() + r * k + b * kBlockSize;
          int dot = 0;
          for (size_t p = 0; p < 4; p++) {
            for (size_t i = 0; i < 4; i++) {
              const uint8_t pair = w[p * 64 + j * 4 + i];
              dot += int(pair & 0x0f) * int(xq[p * 4 + i]) + int(pair >> 4) * int(xq[16 + p * 4 + i]);
            }
          }
          dot += q.offsets[r * blocks + b];
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
 * Tiles [t0, t1) for every row by VNNI: the codes are unsigned, so dpbusd takes them as they are
 * against x's signed codes, x's offsets taking 8 times its block sums off.
 */
void tilesVnni(const ActivationBlocks& q, size_t m, size_t k, const uint8_t* codes, const uint16_t* scales, size_t t0, size_t t1, size_t n, float* y) {
  const size_t blocks = k / kBlockSize;
  const __m512i lowNibbles = _mm512_set1_epi8(0x0f);
  const auto nibbleRows = [&](size_t t, size_t b, __m512i* wRows) {
    const uint8_t* w = codes + (t * blocks + b) * kQ4TileBytes;
    for (int line = 0; line < 4; line++) _mm_prefetch(reinterpret_cast<const char*>(w + kPrefetchBlocks * kQ4TileBytes + line * 64), _MM_HINT_T0);
    for (int p = 0; p < 4; p++) {
      const __m512i pairs = _mm512_loadu_si512(w + p * 64);
      wRows[p] = _mm512_and_si512(pairs, lowNibbles);
      wRows[p + 4] = _mm512_and_si512(_mm512_srli_epi16(pairs, 4), lowNibbles);
    }
  };
  vnniProducts(q, m, k, scales, t0, t1, n, y, nibbleRows);
}
#endif

#if SLUICE_TILES_AMX
/** `count` packed tile blocks into Q8_0's tile layout of signed codes q - 8 (what amxProducts multiplies). */
void unpackTiles(const uint8_t* packed, size_t count, int8_t* out) {
  const __m512i lowNibbles = _mm512_set1_epi8(0x0f);
  const __m512i eight = _mm512_set1_epi8(8);
  for (size_t i = 0; i < count; i++) {
    const uint8_t* in = packed + i * kQ4TileBytes;
    int8_t* tile = out + i * kTileBytes;
    for (int p = 0; p < 4; p++) {
      const __m512i pairs = _mm512_loadu_si512(in + p * 64);
      _mm512_store_si512(tile + p * 64, _mm512_sub_epi8(_mm512_and_si512(pairs, lowNibbles), eight));
      _mm512_store_si512(tile + (p + 4) * 64, _mm512_sub_epi8(_mm512_and_si512(_mm512_srli_epi16(pairs, 4), lowNibbles), eight));
    }
  }
}

/** 64-byte aligned bytes for one thread's unpacked run of tiles, kept between calls. */
int8_t* unpackBuffer(size_t bytes) {
  thread_local std::vector<int8_t> buffer;
  if (buffer.size() < bytes + 64) buffer.resize(bytes + 64);
  const uintptr_t at = reinterpret_cast<uintptr_t>(buffer.data());
  return buffer.data() + ((64 - at % 64) % 64);
}

/**
 * Tiles [t0, t1) for every 16 activation rows, in runs of tiles that fit in L2: each run is
 * unpacked to signed 8-bit codes once and then multiplied by AMX for all rows, as Q8_0 tiles.
 */
void tilesAmx(const ActivationBlocks& q, size_t m, size_t k, const uint8_t* codes, const uint16_t* scales, size_t t0, size_t t1, size_t n, float* y) {
  const AmxTiles tiles;
  const size_t blocks = k / kBlockSize;
  const size_t runTiles = amxRunTiles(k);
  int8_t* unpacked = unpackBuffer(runTiles * blocks * kTileBytes);
  for (size_t run = t0; run < t1; run += runTiles) {
    const size_t runEnd = std::min(t1, run + runTiles);
    unpackTiles(codes + run * blocks * kQ4TileBytes, (runEnd - run) * blocks, unpacked);
    amxProducts(q, m, k, unpacked, scales, run, runEnd, n, y);
  }
}
#endif

}  // namespace

void packQ4Tiles(const uint8_t* codes, const float* scales, size_t n, size_t k, uint8_t* packedCodes, uint16_t* packedScales) {
  const size_t blocks = k / kBlockSize;
  const size_t tiles = packedRows(n) / kTileRows;
  for (size_t t = 0; t < tiles; t++) {
    for (size_t b = 0; b < blocks; b++) {
      uint8_t* tile = packedCodes + (t * blocks + b) * kQ4TileBytes;
      uint16_t* tileScales = packedScales + (t * blocks + b) * kTileRows;
      for (size_t j = 0; j < kTileRows; j++) {
        const size_t row = t * kTileRows + j;
        const bool real = row < n;
        const uint8_t* block = codes + row * k + b * kBlockSize;
        tileScales[j] = real ? f16Bits(scales[row * blocks + b]) : 0;
        for (size_t p = 0; p < 4; p++) {
          for (size_t i = 0; i < 4; i++) {
            const uint8_t low = real ? block[p * 4 + i] & 0x0f : kZeroCode;
            const uint8_t high = real ? block[16 + p * 4 + i] & 0x0f : kZeroCode;
            tile[p * 64 + j * 4 + i] = uint8_t(low | high << 4);
          }
        }
      }
    }
  }
}

void q4TilesGemm(const float* x, size_t m, size_t k, const uint8_t* packedCodes, const uint16_t* packedScales, size_t n, float* y, int threads) {
  const size_t workers = std::max<size_t>(1, size_t(threads));
  const ActivationBlocks q = quantizeActivations(x, m, k, workers, kZeroCode);
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
