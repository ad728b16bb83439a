#include "tile_common.h"

#include <algorithm>

#include "thread_pool.h"

#if SLUICE_TILES_AMX
#include <sys/syscall.h>
#include <unistd.h>
#endif

namespace sluice {
namespace cpu {
namespace {

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
 * One output tile (16 activation rows from r0 by weight tile t, whose codes start at `w`) over
 * all blocks. AMX sums each block's int8 products, two blocks at a time (tmm0, tmm3), into a
 * ring of buffers; the f32 scaling of a pair (by both blocks' scales, into sums held in
 * registers) runs `kLag` pairs behind, so the AMX unit and the vector units work side by side:
 * scaling each pair right after its products ran 2x slower here (their latency, and reading
 * back what AMX just stored).
 */
void outputTileAmx(const ActivationBlocks& q, size_t r0, size_t k, const int8_t* w, const uint16_t* scales, size_t t, size_t m, size_t n, float* y) {
  constexpr size_t kLag = 3;
  constexpr size_t kRing = 4;
  alignas(64) int32_t ring[kRing][2][kTileRows * kTileRows];
  const size_t blocks = k / kBlockSize;
  const int8_t* x = q.codes.data() + r0 * k;
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
#endif

}  // namespace

bool amxAvailable() {
#if SLUICE_TILES_AMX
  return amxPermitted();
#else
  return false;
#endif
}

const char* tilesKernel() {
  if (amxAvailable()) return "amx";
#if SLUICE_TILES_VNNI
  return "avx512-vnni";
#else
  return "scalar";
#endif
}

size_t amxRunTiles(size_t k) { return std::max<size_t>(1, (size_t(1) << 20) / (k * kTileRows)); }

void forTileChunks(size_t tiles, size_t k, size_t workers, bool amx, const std::function<void(size_t t0, size_t t1)>& work) {
  const size_t perChunk = std::max<size_t>(1, std::min(amx ? amxRunTiles(k) : tiles, (tiles + 8 * workers - 1) / (8 * workers)));
  const size_t chunks = (tiles + perChunk - 1) / perChunk;
  const std::function<void(size_t)> chunk = [&](size_t c) { work(c * perChunk, std::min(tiles, (c + 1) * perChunk)); };
  if (workers == 1 || chunks == 1) {
    for (size_t c = 0; c < chunks; c++) chunk(c);
  } else {
    sharedPool().run(chunks, std::min(workers, chunks), chunk);
  }
}

#if SLUICE_TILES_AMX
AmxTiles::AmxTiles() {
  static const TileConfig config;
  _tile_loadconfig(&config);
}

AmxTiles::~AmxTiles() { _tile_release(); }

void amxProducts(const ActivationBlocks& q, size_t m, size_t k, const int8_t* codes, const uint16_t* scales, size_t t0, size_t t1, size_t n, float* y) {
  const size_t blocks = k / kBlockSize;
  for (size_t r0 = 0; r0 < m; r0 += kTileRows)
    for (size_t t = t0; t < t1; t++) outputTileAmx(q, r0, k, codes + (t - t0) * blocks * kTileBytes, scales, t, m, n, y);
}
#endif

}  // namespace cpu
}  // namespace sluice
