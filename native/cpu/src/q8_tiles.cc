#include "q8_tiles.h"

#include <algorithm>
#include <cmath>
#include <functional>
#include <vector>

#include "thread_pool.h"
#include "weight_blocks.h"

#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VNNI__) && defined(__F16C__)
#include <immintrin.h>
#define SLUICE_TILES_VNNI 1
#if defined(__AMX_TILE__) && defined(__AMX_INT8__) && defined(__linux__)
#include <sys/syscall.h>
#include <unistd.h>
#define SLUICE_TILES_AMX 1
#endif
#endif

namespace sluice {
namespace cpu {
namespace {

constexpr size_t kTileBytes = kTileRows * kBlockSize;
/** How far ahead of the codes being multiplied the dot-product kernel prefetches (tuned on the 2-core VM). */
constexpr size_t kPrefetchBytes = 8 * kTileBytes;

/** x's rows in Q8_0 blocks (d = max |x| / 127, codes rounded to nearest, ties to even), rows padded with zeros to whole tiles. */
struct ActivationBlocks {
  size_t rows;
  std::vector<int8_t> codes;
  std::vector<float> scales;
};

/** One block of 32 values: its scale, and its codes into `codes`. */
float quantizeBlock(const float* v, int8_t* codes) {
#if defined(__AVX512F__)
  const __m512 lo = _mm512_loadu_ps(v);
  const __m512 hi = _mm512_loadu_ps(v + 16);
  const float maxAbs = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(lo), _mm512_abs_ps(hi)));
  const float d = maxAbs / 127.0f;
  const __m512 inverse = _mm512_set1_ps(d == 0.0f ? 0.0f : 1.0f / d);
  // Rounded to nearest, ties to even (the default rounding mode), saturated to int8.
  _mm_storeu_si128(reinterpret_cast<__m128i*>(codes), _mm512_cvtsepi32_epi8(_mm512_cvtps_epi32(_mm512_mul_ps(lo, inverse))));
  _mm_storeu_si128(reinterpret_cast<__m128i*>(codes + 16), _mm512_cvtsepi32_epi8(_mm512_cvtps_epi32(_mm512_mul_ps(hi, inverse))));
  return d;
#else
  float maxAbs = 0.0f;
  for (size_t i = 0; i < kBlockSize; i++) maxAbs = std::max(maxAbs, std::fabs(v[i]));
  const float d = maxAbs / 127.0f;
  const float inverse = d == 0.0f ? 0.0f : 1.0f / d;
  for (size_t i = 0; i < kBlockSize; i++) codes[i] = int8_t(std::nearbyint(v[i] * inverse));
  return d;
#endif
}

/** Rows [r0, r1) of x into q. */
void quantizeRowsOf(const float* x, size_t r0, size_t r1, size_t k, ActivationBlocks& q) {
  const size_t blocks = k / kBlockSize;
  for (size_t r = r0; r < r1; r++)
    for (size_t b = 0; b < blocks; b++) q.scales[r * blocks + b] = quantizeBlock(x + r * k + b * kBlockSize, q.codes.data() + r * k + b * kBlockSize);
}

/** x's rows quantized, on the pool's threads when there are many. */
ActivationBlocks quantizeActivations(const float* x, size_t m, size_t k, size_t threads) {
  const size_t rows = packedRows(m);
  ActivationBlocks q{rows, std::vector<int8_t>(rows * k), std::vector<float>(rows * k / kBlockSize)};
  constexpr size_t kRowsPerChunk = 16;
  const size_t chunks = (m + kRowsPerChunk - 1) / kRowsPerChunk;
  if (threads <= 1 || chunks <= 1) {
    quantizeRowsOf(x, 0, m, k, q);
  } else {
    sharedPool().run(chunks, std::min(threads, chunks), [&](size_t c) { quantizeRowsOf(x, c * kRowsPerChunk, std::min(m, (c + 1) * kRowsPerChunk), k, q); });
  }
  return q;
}

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
/** Output lanes of tile t that exist (n need not be a multiple of 16). */
__mmask16 rowsMask(size_t t, size_t n) {
  const size_t left = n - t * kTileRows;
  return left >= kTileRows ? __mmask16(0xffff) : __mmask16((1u << left) - 1u);
}

/**
 * R activation rows from r0 by tiles [t0, t1): each tile's 8 rows of codes loaded once per block.
 * dpbusd multiplies unsigned by signed bytes, so x's codes go in as x + 128 (a flipped top bit)
 * and 128 times the block's sum of W's codes (dpbusd against ones) comes off.
 */
template <int R>
void tilesVnni(const ActivationBlocks& q, size_t r0, size_t k, const int8_t* codes, const uint16_t* scales, size_t t0, size_t t1, size_t n, float* y) {
  const size_t blocks = k / kBlockSize;
  for (size_t t = t0; t < t1; t++) {
    __m512 acc[R];
    for (int r = 0; r < R; r++) acc[r] = _mm512_setzero_ps();
    for (size_t b = 0; b < blocks; b++) {
      const int8_t* w = codes + (t * blocks + b) * kTileBytes;
      // The hardware prefetcher stops at each 4 KiB page; ask for the tiles ahead ourselves.
      for (int line = 0; line < 8; line++) _mm_prefetch(reinterpret_cast<const char*>(w + kPrefetchBytes + line * 64), _MM_HINT_T0);
      __m512i wRows[8];
      __m512i wSums = _mm512_setzero_si512();
      for (int kk = 0; kk < 8; kk++) {
        wRows[kk] = _mm512_loadu_si512(w + kk * 64);
        wSums = _mm512_dpbusd_epi32(wSums, _mm512_set1_epi8(1), wRows[kk]);
      }
      const __m512i offset = _mm512_slli_epi32(wSums, 7);
      const __m512 ws = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(scales + (t * blocks + b) * kTileRows)));
      for (int r = 0; r < R; r++) {
        const int8_t* xq = q.codes.data() + (r0 + r) * k + b * kBlockSize;
        __m512i dot = _mm512_setzero_si512();
        for (int kk = 0; kk < 8; kk++) {
          int quad;
          __builtin_memcpy(&quad, xq + kk * 4, 4);
          dot = _mm512_dpbusd_epi32(dot, _mm512_set1_epi32(int(uint32_t(quad) ^ 0x80808080u)), wRows[kk]);
        }
        const __m512 exact = _mm512_cvtepi32_ps(_mm512_sub_epi32(dot, offset));
        acc[r] = _mm512_fmadd_ps(exact, _mm512_mul_ps(ws, _mm512_set1_ps(q.scales[(r0 + r) * blocks + b])), acc[r]);
      }
    }
    for (int r = 0; r < R; r++) _mm512_mask_storeu_ps(y + (r0 + r) * n + t * kTileRows, rowsMask(t, n), acc[r]);
  }
}

void rowsVnni(const ActivationBlocks& q, size_t m, size_t k, const int8_t* codes, const uint16_t* scales, size_t t0, size_t t1, size_t n, float* y) {
  // Up to 8 rows a pass: each tile's codes are read once for all of them.
  for (size_t r = 0; r < m; r += 8) {
    switch (std::min<size_t>(8, m - r)) {
      case 8: tilesVnni<8>(q, r, k, codes, scales, t0, t1, n, y); break;
      case 7: tilesVnni<7>(q, r, k, codes, scales, t0, t1, n, y); break;
      case 6: tilesVnni<6>(q, r, k, codes, scales, t0, t1, n, y); break;
      case 5: tilesVnni<5>(q, r, k, codes, scales, t0, t1, n, y); break;
      case 4: tilesVnni<4>(q, r, k, codes, scales, t0, t1, n, y); break;
      case 3: tilesVnni<3>(q, r, k, codes, scales, t0, t1, n, y); break;
      case 2: tilesVnni<2>(q, r, k, codes, scales, t0, t1, n, y); break;
      default: tilesVnni<1>(q, r, k, codes, scales, t0, t1, n, y); break;
    }
  }
}
#endif

#if SLUICE_TILES_AMX
/** Linux hands out AMX's tile registers to a process that asks (arch_prctl, once). */
bool amxPermitted() {
  static const bool permitted = [] {
    constexpr long kRequestPermission = 0x1023;  // ARCH_REQ_XCOMP_PERM
    constexpr long kTileData = 18;               // XFEATURE_XTILEDATA
    return syscall(SYS_arch_prctl, kRequestPermission, kTileData) == 0;
  }();
  return permitted;
}

/** tmm0, tmm3: 16 x 16 int32 sums; tmm1, tmm4: 16 activation rows by one block; tmm2, tmm5: one block of 16 weight rows, four columns a row. */
struct alignas(64) TileConfig {
  uint8_t palette = 1;
  uint8_t startRow = 0;
  uint8_t reserved[14] = {};
  uint16_t bytesPerRow[16] = {64, kBlockSize, 64, 64, kBlockSize, 64};
  uint8_t rows[16] = {16, 16, 8, 16, 16, 8};
};

/**
 * One output tile (16 activation rows from r0 by weight tile t) over all blocks. AMX sums each
 * block's int8 products, two blocks at a time (tmm0, tmm3), into a ring of buffers; the f32
 * scaling of a pair (by both blocks' scales, into sums held in registers) runs `kLag` pairs
 * behind, so the AMX unit and the vector units work side by side: scaling each pair right after
 * its products ran 2x slower here (their latency, and reading back what AMX just stored).
 */
void outputTileAmx(const ActivationBlocks& q, size_t r0, size_t k, const int8_t* codes, const uint16_t* scales, size_t t, size_t m, size_t n, float* y) {
  constexpr size_t kLag = 3;
  constexpr size_t kRing = 4;
  alignas(64) int32_t ring[kRing][2][kTileRows * kTileRows];
  const size_t blocks = k / kBlockSize;
  const int8_t* x = q.codes.data() + r0 * k;
  const int8_t* w = codes + t * blocks * kTileBytes;
  __m512 acc[kTileRows];
  for (size_t r = 0; r < kTileRows; r++) acc[r] = _mm512_setzero_ps();
  const auto multiply = [&](size_t b, int32_t (*sums)[kTileRows * kTileRows]) {
    _tile_zero(0);
    _tile_loadd(1, x + b * kBlockSize, k);
    _tile_loadd(2, w + b * kTileBytes, 64);
    _tile_dpbssd(0, 1, 2);
    if (b + 1 < blocks) {
      _tile_zero(3);
      _tile_loadd(4, x + (b + 1) * kBlockSize, k);
      _tile_loadd(5, w + (b + 1) * kTileBytes, 64);
      _tile_dpbssd(3, 4, 5);
      _tile_stored(3, sums[1], 64);
    }
    _tile_stored(0, sums[0], 64);
  };
  const auto scale = [&](size_t b, int32_t (*sums)[kTileRows * kTileRows]) {
    for (size_t h = 0; h < 2 && b + h < blocks; h++) {
      const __m512 ws = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(scales + (t * blocks + b + h) * kTileRows)));
      const float* xs = q.scales.data() + r0 * blocks + b + h;
      for (size_t r = 0; r < kTileRows; r++) {
        const __m512 products = _mm512_cvtepi32_ps(_mm512_load_si512(sums[h] + r * kTileRows));
        acc[r] = _mm512_fmadd_ps(products, _mm512_mul_ps(ws, _mm512_set1_ps(xs[r * blocks])), acc[r]);
      }
    }
  };
  const size_t pairs = (blocks + 1) / 2;
  for (size_t p = 0; p < pairs + kLag; p++) {
    if (p < pairs) multiply(2 * p, ring[p % kRing]);
    if (p >= kLag) scale(2 * (p - kLag), ring[(p - kLag) % kRing]);
  }
  const __mmask16 mask = rowsMask(t, n);
  for (size_t r = 0; r < kTileRows && r0 + r < m; r++) _mm512_mask_storeu_ps(y + (r0 + r) * n + t * kTileRows, mask, acc[r]);
}

/** Tiles [t0, t1) for every 16 activation rows, in runs of tiles that fit in L2, each run over all rows, so the weights come from memory once. */
void tilesAmx(const ActivationBlocks& q, size_t m, size_t k, const int8_t* codes, const uint16_t* scales, size_t t0, size_t t1, size_t n, float* y) {
  static const TileConfig config;
  _tile_loadconfig(&config);
  const size_t runTiles = std::max<size_t>(1, (size_t(1) << 20) / (k * kTileRows));
  for (size_t run = t0; run < t1; run += runTiles) {
    const size_t runEnd = std::min(t1, run + runTiles);
    for (size_t r0 = 0; r0 < m; r0 += kTileRows)
      for (size_t t = run; t < runEnd; t++) outputTileAmx(q, r0, k, codes, scales, t, m, n, y);
  }
  _tile_release();
}
#endif

/**
 * AMX (where the CPU and the kernel grant it) for more rows than one pass of the VNNI kernel
 * holds: at 8 rows VNNI was 1.1-1.8x faster, at 12 and more AMX 1.4-1.9x (bench:cpu-gemm,
 * 2-core VM, 2026-12-03, in a slow and a fast hour): AMX scales 16 rows of sums per block
 * whatever m is, while VNNI reads each tile once per 8 rows.
 */
constexpr size_t kAmxMinRows = 9;

bool amxAvailable() {
#if SLUICE_TILES_AMX
  return amxPermitted();
#else
  return false;
#endif
}

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

const char* q8TilesKernel() {
  if (amxAvailable()) return "amx";
#if SLUICE_TILES_VNNI
  return "avx512-vnni";
#else
  return "scalar";
#endif
}

void q8TilesGemm(const float* x, size_t m, size_t k, const int8_t* packedCodes, const uint16_t* packedScales, size_t n, float* y, int threads) {
  const size_t workers = std::max<size_t>(1, size_t(threads));
  const ActivationBlocks q = quantizeActivations(x, m, k, workers);
  const size_t tiles = packedRows(n) / kTileRows;
  const bool amx = m >= kAmxMinRows && amxAvailable();
  // Chunks of tiles handed out to whichever thread is free: several per thread, so a thread
  // that wakes late costs little; for AMX at most a run of tiles that fits in L2.
  const size_t l2Tiles = std::max<size_t>(1, (size_t(1) << 20) / (k * kTileRows));
  const size_t perChunk = std::max<size_t>(1, std::min(amx ? l2Tiles : tiles, (tiles + 8 * workers - 1) / (8 * workers)));
  const size_t chunks = (tiles + perChunk - 1) / perChunk;
  const std::function<void(size_t)> work = [&](size_t chunk) {
    const size_t t0 = chunk * perChunk;
    const size_t t1 = std::min(tiles, t0 + perChunk);
#if SLUICE_TILES_AMX
    if (amx) return tilesAmx(q, m, k, packedCodes, packedScales, t0, t1, n, y);
#endif
#if SLUICE_TILES_VNNI
    rowsVnni(q, m, k, packedCodes, packedScales, t0, t1, n, y);
#else
    tilesScalar(q, m, k, packedCodes, packedScales, t0, t1, n, y);
#endif
  };
  (void)amx;
  if (workers == 1 || chunks == 1) {
    for (size_t c = 0; c < chunks; c++) work(c);
  } else {
    sharedPool().run(chunks, std::min(workers, chunks), work);
  }
}

}  // namespace cpu
}  // namespace sluice
