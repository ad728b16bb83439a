// Our own bf16 GEMM on tensor cores (WMMA, f32 accumulation): out = x @ w^T with w in the
// checkpoint's [out, in] layout. Used when cuBLASLt cannot be loaded or has no algorithm.
#include <mma.h>

#include "check.h"
#include "kernels.h"

namespace sluice {
namespace {

using namespace nvcuda;

constexpr int kTileM = 64;
constexpr int kTileN = 64;
constexpr int kTileK = 32;
constexpr int kPad = 8;  // keeps 16-byte alignment and spreads shared-memory banks
constexpr int kThreads = 128;

template <typename Out>
__device__ inline Out convertOut(float v);
template <>
__device__ inline float convertOut<float>(float v) { return v; }
template <>
__device__ inline bf16 convertOut<bf16>(float v) { return __float2bfloat16_rn(v); }

// Block: a 64x64 tile of out; four warps, each 32x32 (2x2 WMMA 16x16x16 fragments).
template <typename Out>
__global__ void __launch_bounds__(kThreads) gemmKernel(const bf16* __restrict__ x, const bf16* __restrict__ w,
                                                       Out* __restrict__ out, int m, int n, int k) {
  __shared__ __align__(32) bf16 xs[kTileM][kTileK + kPad];
  __shared__ __align__(32) bf16 ws[kTileN][kTileK + kPad];
  __shared__ __align__(32) float cs[kTileM][kTileN + 4];

  const int rowBase = blockIdx.y * kTileM;
  const int colBase = blockIdx.x * kTileN;
  const int warp = threadIdx.x / 32;
  const int warpRow = (warp / 2) * 32;
  const int warpCol = (warp % 2) * 32;

  wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc[2][2];
  for (int i = 0; i < 2; i++)
    for (int j = 0; j < 2; j++) wmma::fill_fragment(acc[i][j], 0.f);

  for (int k0 = 0; k0 < k; k0 += kTileK) {
    // 64 rows x 32 columns of each operand = 256 vectors of 8 bf16; two per thread per operand.
    for (int v = threadIdx.x; v < kTileM * kTileK / 8; v += kThreads) {
      const int r = v / (kTileK / 8);
      const int c = (v % (kTileK / 8)) * 8;
      uint4 xv = make_uint4(0, 0, 0, 0);
      uint4 wv = make_uint4(0, 0, 0, 0);
      if (rowBase + r < m && k0 + c < k) xv = *reinterpret_cast<const uint4*>(x + size_t(rowBase + r) * k + k0 + c);
      if (colBase + r < n && k0 + c < k) wv = *reinterpret_cast<const uint4*>(w + size_t(colBase + r) * k + k0 + c);
      *reinterpret_cast<uint4*>(&xs[r][c]) = xv;
      *reinterpret_cast<uint4*>(&ws[r][c]) = wv;
    }
    __syncthreads();
    for (int kk = 0; kk < kTileK; kk += 16) {
      wmma::fragment<wmma::matrix_a, 16, 16, 16, bf16, wmma::row_major> a[2];
      wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, wmma::col_major> b[2];
      for (int i = 0; i < 2; i++) wmma::load_matrix_sync(a[i], &xs[warpRow + i * 16][kk], kTileK + kPad);
      for (int j = 0; j < 2; j++) wmma::load_matrix_sync(b[j], &ws[warpCol + j * 16][kk], kTileK + kPad);
      for (int i = 0; i < 2; i++)
        for (int j = 0; j < 2; j++) wmma::mma_sync(acc[i][j], a[i], b[j], acc[i][j]);
    }
    __syncthreads();
  }
  for (int i = 0; i < 2; i++)
    for (int j = 0; j < 2; j++)
      wmma::store_matrix_sync(&cs[warpRow + i * 16][warpCol + j * 16], acc[i][j], kTileN + 4, wmma::mem_row_major);
  __syncthreads();
  for (int e = threadIdx.x; e < kTileM * kTileN; e += kThreads) {
    const int r = e / kTileN;
    const int c = e % kTileN;
    if (rowBase + r < m && colBase + c < n) out[size_t(rowBase + r) * n + colBase + c] = convertOut<Out>(cs[r][c]);
  }
}

}  // namespace

void launchGemmFallback(const bf16* x, const bf16* w, void* out, DType outType, int m, int n, int k,
                        cudaStream_t stream) {
  if (m == 0 || n == 0) return;
  if (k % 8 != 0) throw CudaError("fallback GEMM needs the inner dimension to be a multiple of 8, got " + std::to_string(k));
  const dim3 grid((n + kTileN - 1) / kTileN, (m + kTileM - 1) / kTileM);
  if (outType == DType::F32) {
    gemmKernel<float><<<grid, kThreads, 0, stream>>>(x, w, static_cast<float*>(out), m, n, k);
  } else {
    gemmKernel<bf16><<<grid, kThreads, 0, stream>>>(x, w, static_cast<bf16*>(out), m, n, k);
  }
  CUDA_CHECK_LAUNCH("fallback GEMM kernel");
}

}  // namespace sluice
