// The small-m GEMM (decode batches of at most 16 rows) tuned to memory bandwidth: each warp owns
// kRowsPerWarp output columns (rows of w) and streams them once with 128-bit loads, multiplying
// every one of the m input rows against them (x is small and stays in L1/L2). A step then reads
// each weight once at close to the copy bandwidth, which is what a decode step's time is made of.
#include "check.h"
#include "kernels.h"

namespace sluice {
namespace {

constexpr int kGemvThreads = 256;
constexpr int kRowsPerWarp = 2;
constexpr int kWarpsPerBlock = kGemvThreads / 32;
constexpr int kUnroll = 4;

__device__ inline void accumulate8(const uint4& wv, const uint4& xv, float& acc) {
  const __nv_bfloat162* w2 = reinterpret_cast<const __nv_bfloat162*>(&wv);
  const __nv_bfloat162* x2 = reinterpret_cast<const __nv_bfloat162*>(&xv);
#pragma unroll
  for (int j = 0; j < 4; j++) {
    const float2 wf = __bfloat1622float2(w2[j]);
    const float2 xf = __bfloat1622float2(x2[j]);
    acc = fmaf(wf.x, xf.x, acc);
    acc = fmaf(wf.y, xf.y, acc);
  }
}

template <typename Out>
__device__ inline void store(Out* p, float v);
template <>
__device__ inline void store<float>(float* p, float v) { *p = v; }
template <>
__device__ inline void store<bf16>(bf16* p, float v) { *p = __float2bfloat16_rn(v); }

// MaxM: the largest m this instance takes (acc lives in registers); rows past m are skipped.
template <int MaxM, typename Out>
__global__ void __launch_bounds__(kGemvThreads) gemvKernel(const bf16* __restrict__ x, const bf16* __restrict__ w,
                                                           Out* __restrict__ out, int m, int n, int k) {
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  const int firstRow = (blockIdx.x * kWarpsPerBlock + warp) * kRowsPerWarp;
  if (firstRow >= n) return;
  const int chunks = k / 8;  // 8 bf16 = 16 bytes per load
  float acc[kRowsPerWarp][MaxM];
#pragma unroll
  for (int r = 0; r < kRowsPerWarp; r++)
#pragma unroll
    for (int i = 0; i < MaxM; i++) acc[r][i] = 0.f;
  const uint4* x4 = reinterpret_cast<const uint4*>(x);
  const uint4* w4[kRowsPerWarp];
#pragma unroll
  for (int r = 0; r < kRowsPerWarp; r++) w4[r] = reinterpret_cast<const uint4*>(w + size_t(min(firstRow + r, n - 1)) * k);
  // kUnroll chunks per row are loaded before any is used: with 8 to 16 warps an SM then has
  // 32-64 KB of weight loads in flight, what ~4.4 TB/s at ~1 us of latency asks of each SM.
  for (int c0 = lane; c0 < chunks; c0 += 32 * kUnroll) {
    uint4 wv[kUnroll][kRowsPerWarp];
#pragma unroll
    for (int u = 0; u < kUnroll; u++) {
      const int c = c0 + u * 32;
#pragma unroll
      for (int r = 0; r < kRowsPerWarp; r++) wv[u][r] = c < chunks ? __ldg(w4[r] + c) : make_uint4(0, 0, 0, 0);
    }
#pragma unroll
    for (int u = 0; u < kUnroll; u++) {
      const int c = c0 + u * 32;
      if (c >= chunks) break;
#pragma unroll
      for (int i = 0; i < MaxM; i++) {
        if (i < m) {
          const uint4 xv = x4[size_t(i) * chunks + c];
#pragma unroll
          for (int r = 0; r < kRowsPerWarp; r++) accumulate8(wv[u][r], xv, acc[r][i]);
        }
      }
    }
  }
#pragma unroll
  for (int r = 0; r < kRowsPerWarp; r++) {
#pragma unroll
    for (int i = 0; i < MaxM; i++) {
      float v = acc[r][i];
      for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
      if (lane == 0 && i < m && firstRow + r < n) store<Out>(out + size_t(i) * n + firstRow + r, v);
    }
  }
}

template <int MaxM>
void launchFor(const bf16* x, const bf16* w, void* out, DType outType, int m, int n, int k, cudaStream_t stream) {
  const int rowsPerBlock = kWarpsPerBlock * kRowsPerWarp;
  const unsigned blocks = unsigned((n + rowsPerBlock - 1) / rowsPerBlock);
  if (outType == DType::F32) {
    gemvKernel<MaxM, float><<<blocks, kGemvThreads, 0, stream>>>(x, w, static_cast<float*>(out), m, n, k);
  } else {
    gemvKernel<MaxM, bf16><<<blocks, kGemvThreads, 0, stream>>>(x, w, static_cast<bf16*>(out), m, n, k);
  }
}

}  // namespace

bool gemvSupports(int m, int k) { return m >= 1 && m <= kGemvMaxRows && k % 8 == 0; }

void launchGemv(const bf16* x, const bf16* w, void* out, DType outType, int m, int n, int k, cudaStream_t stream) {
  if (!gemvSupports(m, k)) throw CudaError("GEMV takes 1 to 16 rows and an inner dimension that is a multiple of 8");
  if (m == 1) launchFor<1>(x, w, out, outType, m, n, k, stream);
  else if (m <= 2) launchFor<2>(x, w, out, outType, m, n, k, stream);
  else if (m <= 4) launchFor<4>(x, w, out, outType, m, n, k, stream);
  else if (m <= 8) launchFor<8>(x, w, out, outType, m, n, k, stream);
  else launchFor<16>(x, w, out, outType, m, n, k, stream);
  CUDA_CHECK_LAUNCH("GEMV kernel");
}

}  // namespace sluice
