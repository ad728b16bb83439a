// Row-wise and elementwise kernels of the Llama graph: embedding, rmsnorm (plain and fused with
// the residual add), rope, silu-mul, gather of each sequence's last row, and weight generation.
#include <cuda_fp16.h>

#include "check.h"
#include "dummy_hash.h"
#include "kernels.h"

namespace sluice {
namespace {

constexpr int kRowThreads = 256;

__device__ inline float warpSum(float v) {
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(0xffffffffu, v, offset);
  return v;
}

/** Sum over the block (blockDim.x a multiple of 32, at most 1024); every thread gets the result. */
__device__ float blockSum(float v) {
  __shared__ float partial[32];
  __shared__ float total;
  const int lane = threadIdx.x & 31;
  const int warp = threadIdx.x >> 5;
  v = warpSum(v);
  if (lane == 0) partial[warp] = v;
  __syncthreads();
  if (warp == 0) {
    float w = lane < (blockDim.x >> 5) ? partial[lane] : 0.f;
    w = warpSum(w);
    if (lane == 0) total = w;
  }
  __syncthreads();
  const float result = total;
  __syncthreads();
  return result;
}

__device__ inline float load(const float* p, size_t i) { return p[i]; }
__device__ inline float load(const bf16* p, size_t i) { return __bfloat162float(p[i]); }

__global__ void embeddingKernel(const bf16* table, int vocab, int cols, const int* tokenIds, float* out) {
  const int row = blockIdx.x;
  const int id = tokenIds[row];
  float* dst = out + size_t(row) * cols;
  if (id < 0 || id >= vocab) {
    for (int c = threadIdx.x; c < cols; c += blockDim.x) dst[c] = 0.f;
    return;
  }
  const bf16* src = table + size_t(id) * cols;
  for (int c = threadIdx.x; c < cols; c += blockDim.x) dst[c] = __bfloat162float(src[c]);
}

template <typename T>
__global__ void rmsnormKernel(const T* x, const bf16* weight, int cols, float eps, bf16* out) {
  const size_t base = size_t(blockIdx.x) * cols;
  float sum = 0.f;
  for (int c = threadIdx.x; c < cols; c += blockDim.x) {
    const float v = load(x, base + c);
    sum += v * v;
  }
  const float scale = rsqrtf(blockSum(sum) / cols + eps);
  for (int c = threadIdx.x; c < cols; c += blockDim.x) {
    out[base + c] = __float2bfloat16_rn(load(x, base + c) * scale * __bfloat162float(weight[c]));
  }
}

__global__ void addRmsnormKernel(float* x, const bf16* residual, const bf16* weight, int cols, float eps,
                                 bf16* out) {
  const size_t base = size_t(blockIdx.x) * cols;
  float sum = 0.f;
  for (int c = threadIdx.x; c < cols; c += blockDim.x) {
    const float v = x[base + c] + __bfloat162float(residual[base + c]);
    x[base + c] = v;
    sum += v * v;
  }
  const float scale = rsqrtf(blockSum(sum) / cols + eps);
  for (int c = threadIdx.x; c < cols; c += blockDim.x) {
    out[base + c] = __float2bfloat16_rn(x[base + c] * scale * __bfloat162float(weight[c]));
  }
}

__global__ void addKernel(float* x, const bf16* y, size_t n) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x) {
    x[i] += __bfloat162float(y[i]);
  }
}

// Angles in double: positions reach 131072, where an f32 angle would be off by ~1e-2 rad.
__global__ void ropeKernel(bf16* q, int qStride, bf16* k, int kStride, const int* positions, int numHeads,
                           int numKvHeads, int headDim, const double* invFreq, RopeKvWrite kv, bool writeKv) {
  const int row = blockIdx.x;
  const int half = headDim / 2;
  const double position = positions[row];
  const int pairs = (numHeads + numKvHeads) * half;
  const int kvCols = numKvHeads * headDim;
  const int slot = writeKv ? kv.slotMapping[row] : -1;
  for (int p = threadIdx.x; p < pairs; p += blockDim.x) {
    const int head = p / half;
    const int i = p % half;
    const bool isQ = head < numHeads;
    if (!isQ && writeKv && slot < 0) continue;
    const bf16* src = isQ ? q + size_t(row) * qStride + size_t(head) * headDim
                          : k + size_t(row) * kStride + size_t(head - numHeads) * headDim;
    bf16* dst = isQ || !writeKv ? const_cast<bf16*>(src)
                                : kv.kCache + size_t(slot) * kvCols + size_t(head - numHeads) * headDim;
    double s, c;
    sincos(position * invFreq[i], &s, &c);
    const float a = __bfloat162float(src[i]);
    const float b = __bfloat162float(src[i + half]);
    dst[i] = __float2bfloat16_rn(float(a * c - b * s));
    dst[i + half] = __float2bfloat16_rn(float(b * c + a * s));
  }
  if (writeKv && slot >= 0) {
    for (int col = threadIdx.x; col < kvCols; col += blockDim.x)
      kv.vCache[size_t(slot) * kvCols + col] = kv.v[size_t(row) * kv.vStride + col];
  }
}

__global__ void siluMulKernel(const bf16* gate, const bf16* up, int inStride, bf16* out, int cols, size_t n) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x) {
    const size_t row = i / cols;
    const size_t in = row * inStride + (i - row * cols);
    const float g = __bfloat162float(gate[in]);
    out[i] = __float2bfloat16_rn(g / (1.f + __expf(-g)) * __bfloat162float(up[in]));
  }
}

__global__ void gatherLastKernel(const unsigned char* x, size_t rowBytes, const int* queryStart, unsigned char* out) {
  const int s = blockIdx.x;
  const int last = queryStart[s + 1] - 1;
  if (last < 0) return;
  const unsigned char* src = x + size_t(last) * rowBytes;
  unsigned char* dst = out + size_t(s) * rowBytes;
  if (rowBytes % 4 == 0) {
    for (size_t i = threadIdx.x; i < rowBytes / 4; i += blockDim.x) {
      reinterpret_cast<uint32_t*>(dst)[i] = reinterpret_cast<const uint32_t*>(src)[i];
    }
  } else {
    for (size_t i = threadIdx.x; i < rowBytes; i += blockDim.x) dst[i] = src[i];
  }
}

// The generator lives in dummy_hash.h, shared with the host build the tests compare with JS.
__global__ void dummyFillKernel(uint16_t* out, size_t n, uint32_t key, double halfRange, double offset) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x) {
    out[i] = dummy::elementBf16(key, i, halfRange, offset);
  }
}

__global__ void convertKernel(const void* src, int srcType, bf16* out, size_t n) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x) {
    if (srcType == int(DType::F32)) {
      out[i] = __float2bfloat16_rn(static_cast<const float*>(src)[i]);
    } else if (srcType == int(DType::F16)) {
      out[i] = __float2bfloat16_rn(__half2float(static_cast<const __half*>(src)[i]));
    } else {
      out[i] = static_cast<const bf16*>(src)[i];
    }
  }
}

__global__ void bf16ToF32Kernel(const bf16* src, float* out, size_t n) {
  for (size_t i = blockIdx.x * size_t(blockDim.x) + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x) {
    out[i] = __bfloat162float(src[i]);
  }
}

unsigned gridFor(size_t n, int threads) {
  const size_t blocks = (n + threads - 1) / threads;
  return unsigned(blocks < 65535 * 16 ? (blocks == 0 ? 1 : blocks) : 65535 * 16);
}

int rowThreads(int cols) { return cols >= 4096 ? 1024 : kRowThreads; }

}  // namespace

void launchEmbedding(const bf16* table, int vocab, int cols, const int* tokenIds, int rows, float* out,
                     cudaStream_t stream) {
  if (rows == 0) return;
  embeddingKernel<<<rows, kRowThreads, 0, stream>>>(table, vocab, cols, tokenIds, out);
  CUDA_CHECK_LAUNCH("embedding kernel");
}

void launchRmsnorm(const void* x, DType xType, const bf16* weight, int rows, int cols, float eps, bf16* out,
                   cudaStream_t stream) {
  if (rows == 0) return;
  if (xType == DType::F32) {
    rmsnormKernel<float><<<rows, rowThreads(cols), 0, stream>>>(static_cast<const float*>(x), weight, cols, eps, out);
  } else {
    rmsnormKernel<bf16><<<rows, rowThreads(cols), 0, stream>>>(static_cast<const bf16*>(x), weight, cols, eps, out);
  }
  CUDA_CHECK_LAUNCH("rmsnorm kernel");
}

void launchAddRmsnorm(float* x, const bf16* residual, const bf16* weight, int rows, int cols, float eps, bf16* out,
                      cudaStream_t stream) {
  if (rows == 0) return;
  addRmsnormKernel<<<rows, rowThreads(cols), 0, stream>>>(x, residual, weight, cols, eps, out);
  CUDA_CHECK_LAUNCH("add_rmsnorm kernel");
}

void launchAdd(float* x, const bf16* y, size_t n, cudaStream_t stream) {
  if (n == 0) return;
  addKernel<<<gridFor(n, 256), 256, 0, stream>>>(x, y, n);
  CUDA_CHECK_LAUNCH("add kernel");
}

void launchRope(bf16* q, int qStride, bf16* k, int kStride, const int* positions, int rows, int numHeads,
                int numKvHeads, int headDim, const double* invFreq, const RopeKvWrite* kv, cudaStream_t stream) {
  if (rows == 0) return;
  ropeKernel<<<rows, 256, 0, stream>>>(q, qStride, k, kStride, positions, numHeads, numKvHeads, headDim, invFreq,
                                       kv ? *kv : RopeKvWrite{}, kv != nullptr);
  CUDA_CHECK_LAUNCH("rope kernel");
}

void launchSiluMul(const bf16* gate, const bf16* up, int inStride, bf16* out, int rows, int cols, cudaStream_t stream) {
  const size_t n = size_t(rows) * cols;
  if (n == 0) return;
  siluMulKernel<<<gridFor(n, 256), 256, 0, stream>>>(gate, up, inStride, out, cols, n);
  CUDA_CHECK_LAUNCH("silu_mul kernel");
}

void launchGatherLast(const void* x, size_t rowBytes, const int* queryStart, int numSeqs, void* out,
                      cudaStream_t stream) {
  if (numSeqs == 0) return;
  gatherLastKernel<<<numSeqs, 256, 0, stream>>>(static_cast<const unsigned char*>(x), rowBytes, queryStart,
                                                static_cast<unsigned char*>(out));
  CUDA_CHECK_LAUNCH("gather_last kernel");
}

void launchDummyFill(bf16* out, size_t n, uint32_t key, double halfRange, double offset, cudaStream_t stream) {
  if (n == 0) return;
  dummyFillKernel<<<gridFor(n, 256), 256, 0, stream>>>(reinterpret_cast<uint16_t*>(out), n, key, halfRange, offset);
  CUDA_CHECK_LAUNCH("dummy weight kernel");
}

void launchConvertToBf16(const void* src, DType srcType, bf16* out, size_t n, cudaStream_t stream) {
  if (n == 0) return;
  convertKernel<<<gridFor(n, 256), 256, 0, stream>>>(src, int(srcType), out, n);
  CUDA_CHECK_LAUNCH("bf16 conversion kernel");
}

void launchBf16ToF32(const bf16* src, float* out, size_t n, cudaStream_t stream) {
  if (n == 0) return;
  bf16ToF32Kernel<<<gridFor(n, 256), 256, 0, stream>>>(src, out, n);
  CUDA_CHECK_LAUNCH("bf16 to f32 kernel");
}

}  // namespace sluice
