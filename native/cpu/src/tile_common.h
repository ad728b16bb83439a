// What the Q8_0 and Q4_0 tile kernels (q8_tiles.cc, q4_tiles.cc) share: the tile shape, which
// instructions this build and CPU have, the VNNI kernel over rows of unsigned codes, the AMX
// product over tiles of signed codes, and the way a GEMM's tiles are handed out to the thread pool.
#pragma once
#include <cstddef>
#include <cstdint>
#include <functional>
#include <type_traits>

#include "activation_blocks.h"
#include "weight_blocks.h"

#if defined(__AVX512F__)
#include <immintrin.h>
#endif
#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VNNI__) && defined(__F16C__)
#define SLUICE_TILES_VNNI 1
#if defined(__AMX_TILE__) && defined(__AMX_INT8__) && defined(__linux__)
#define SLUICE_TILES_AMX 1
#endif
#endif

namespace sluice {
namespace cpu {

constexpr size_t kTileRows = 16;

/** One tile of signed 8-bit codes, 16 rows by one block: what AMX's B tiles and the Q8_0 kernel read. */
constexpr size_t kTileBytes = kTileRows * kBlockSize;

/** Rows a packed matrix of n rows holds (n rounded up to whole tiles). */
inline size_t packedRows(size_t n) { return (n + kTileRows - 1) / kTileRows * kTileRows; }

/**
 * AMX (where the CPU and the kernel grant it) for more rows than one pass of the VNNI kernels
 * holds: at 8 rows VNNI was 1.1-1.8x faster, at 12 and more AMX 1.4-1.9x (bench:cpu-gemm, Q8_0,
 * 2-core VM, 2026-12-03, in a slow and a fast hour): AMX scales 16 rows of sums per block
 * whatever m is, while VNNI reads each tile once per 8 rows.
 */
constexpr size_t kAmxMinRows = 9;

/** Whether AMX runs here: built with it, on a CPU that has it, and granted by the kernel. */
bool amxAvailable();

/** The kernel the tiled GEMMs run for many rows: "amx", "avx512-vnni" or "scalar". */
const char* tilesKernel();

/** Tiles a run of AMX work covers: the weights of a run fit in L2, so they come from memory once for all rows. */
size_t amxRunTiles(size_t k);

/**
 * work(t0, t1) over every range of a GEMM's tiles: chunks handed out to whichever thread is free,
 * several per thread, so a thread that wakes late costs little; for AMX at most one run of tiles.
 */
void forTileChunks(size_t tiles, size_t k, size_t workers, bool amx, const std::function<void(size_t t0, size_t t1)>& work);

/** pass(std::integral_constant<int, R>, r0) for the rows of x in passes of up to 8 (the VNNI kernels' R). */
template <typename Pass>
void inPassesOfEight(size_t m, const Pass& pass) {
  for (size_t r = 0; r < m; r += 8) {
    switch (m - r < 8 ? m - r : 8) {
      case 8: pass(std::integral_constant<int, 8>{}, r); break;
      case 7: pass(std::integral_constant<int, 7>{}, r); break;
      case 6: pass(std::integral_constant<int, 6>{}, r); break;
      case 5: pass(std::integral_constant<int, 5>{}, r); break;
      case 4: pass(std::integral_constant<int, 4>{}, r); break;
      case 3: pass(std::integral_constant<int, 3>{}, r); break;
      case 2: pass(std::integral_constant<int, 2>{}, r); break;
      default: pass(std::integral_constant<int, 1>{}, r); break;
    }
  }
}

#if SLUICE_TILES_VNNI
/** Output lanes of tile t that exist (n need not be a multiple of 16). */
inline __mmask16 rowsMask(size_t t, size_t n) {
  const size_t left = n - t * kTileRows;
  return left >= kTileRows ? __mmask16(0xffff) : __mmask16((1u << left) - 1u);
}
#endif

#if SLUICE_TILES_VNNI
/** How many tile blocks ahead of the one being multiplied the VNNI kernel prefetches (tuned on the 2-core VMs). */
constexpr size_t kPrefetchBlocks = 8;

/**
 * y's columns of tiles [t0, t1) for R activation rows from r0 by AVX-512 VNNI. `rowsOf(t, b,
 * wRows)` puts block b of tile t into wRows: 8 vectors of unsigned codes, vector kk holding
 * columns 4kk..4kk+3 of the 16 rows (dpbusd multiplies unsigned by signed bytes), prefetching
 * what it reads ahead (the hardware prefetcher stops at each 4 KiB page). Each row's sum starts
 * from its block's offset (minus the weights' zero code times x's block sum, read from memory:
 * subtracting it after the products ran 1.05-1.1x slower), so it comes out exact.
 */
template <int R, typename RowsOf>
void tilesVnni(const ActivationBlocks& q, size_t r0, size_t k, const uint16_t* scales, size_t t0, size_t t1, size_t n, float* y, const RowsOf& rowsOf) {
  const size_t blocks = k / kBlockSize;
  for (size_t t = t0; t < t1; t++) {
    __m512 acc[R];
    for (int r = 0; r < R; r++) acc[r] = _mm512_setzero_ps();
    for (size_t b = 0; b < blocks; b++) {
      __m512i wRows[8];
      rowsOf(t, b, wRows);
      const uint16_t* blockScales = scales + (t * blocks + b) * kTileRows;
      _mm_prefetch(reinterpret_cast<const char*>(blockScales + kPrefetchBlocks * kTileRows), _MM_HINT_T0);
      const __m512 ws = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(blockScales)));
      for (int r = 0; r < R; r++) {
        const size_t block = (r0 + r) * blocks + b;
        const int8_t* xq = q.codes.data() + (r0 + r) * k + b * kBlockSize;
        // Two chains of 4 dot products, not one of 8: the out-of-order window then covers enough
        // rows to keep dpbusd issuing (1.05-1.2x at 8 and 512 rows; four chains lost 3-12%).
        __m512i even = _mm512_set1_epi32(q.offsets[block]);
        __m512i odd = _mm512_setzero_si512();
        for (int kk = 0; kk < 8; kk += 2) {
          int even4, odd4;  // 4 bytes each, so each broadcast comes straight from memory
          __builtin_memcpy(&even4, xq + kk * 4, 4);
          __builtin_memcpy(&odd4, xq + kk * 4 + 4, 4);
          even = _mm512_dpbusd_epi32(even, wRows[kk], _mm512_set1_epi32(even4));
          odd = _mm512_dpbusd_epi32(odd, wRows[kk + 1], _mm512_set1_epi32(odd4));
        }
        acc[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_add_epi32(even, odd)), _mm512_mul_ps(ws, _mm512_set1_ps(q.scales[block])), acc[r]);
      }
    }
    for (int r = 0; r < R; r++) _mm512_mask_storeu_ps(y + (r0 + r) * n + t * kTileRows, rowsMask(t, n), acc[r]);
  }
}

/** Tiles [t0, t1) for all m rows by VNNI, in passes of up to 8 rows (converting a run of tiles once for every pass instead of in each measured the same at 512 rows). */
template <typename RowsOf>
void vnniProducts(const ActivationBlocks& q, size_t m, size_t k, const uint16_t* scales, size_t t0, size_t t1, size_t n, float* y, const RowsOf& rowsOf) {
  inPassesOfEight(m, [&](auto rows, size_t r0) { tilesVnni<decltype(rows)::value>(q, r0, k, scales, t0, t1, n, y, rowsOf); });
}
#endif

#if SLUICE_TILES_AMX
/** The tile registers configured for amxProducts on this thread while it lives. */
class AmxTiles {
 public:
  AmxTiles();
  ~AmxTiles();
  AmxTiles(const AmxTiles&) = delete;
  AmxTiles& operator=(const AmxTiles&) = delete;
};

/**
 * y's columns of tiles [t0, t1) for all m rows, by AMX, inside an AmxTiles' life: `codes` holds
 * those tiles' signed codes in Q8_0's tile layout (tile t0 first, all its blocks, then t0 + 1),
 * `scales` the whole matrix's f16 scales (tile layout).
 */
void amxProducts(const ActivationBlocks& q, size_t m, size_t k, const int8_t* codes, const uint16_t* scales, size_t t0, size_t t1, size_t n, float* y);
#endif

}  // namespace cpu
}  // namespace sluice
