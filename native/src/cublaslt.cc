#include "cublaslt.h"

#include <dlfcn.h>
#include <glob.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <library_types.h>
#include <sstream>
#include <vector>

#include "check.h"

namespace sluice {

// The subset of cublasLt.h used here, declared by hand. Only handle-style *Create/*Destroy calls are
// used, never the sizes of opaque structs; the enum values are those of the public header (stable
// since CUDA 11).
namespace lt {
using Status = int;
using Handle = void*;
using MatmulDesc = void*;
using MatrixLayout = void*;
using Preference = void*;
constexpr int kComputeF32 = 68;      // CUBLAS_COMPUTE_32F
constexpr int kDescTransA = 3;       // CUBLASLT_MATMUL_DESC_TRANSA
constexpr int kDescTransB = 4;       // CUBLASLT_MATMUL_DESC_TRANSB
constexpr int kPrefMaxWorkspace = 1; // CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES
constexpr int kOpN = 0;              // CUBLAS_OP_N
constexpr int kOpT = 1;              // CUBLAS_OP_T
struct HeuristicResult {             // cublasLtMatmulHeuristicResult_t (a public, non-opaque struct)
  uint64_t algo[8];
  size_t workspaceSize;
  Status state;
  float wavesCount;
  int reserved[4];
};
static_assert(sizeof(HeuristicResult) == 96, "cublasLtMatmulHeuristicResult_t is 96 bytes");
static_assert(CUDA_R_16BF == 14 && CUDA_R_32F == 0, "cudaDataType values");
}  // namespace lt

struct CublasLt::Api {
  lt::Status (*create)(lt::Handle*);
  lt::Status (*destroy)(lt::Handle);
  lt::Status (*descCreate)(lt::MatmulDesc*, int computeType, cudaDataType_t scaleType);
  lt::Status (*descDestroy)(lt::MatmulDesc);
  lt::Status (*descSetAttribute)(lt::MatmulDesc, int attr, const void* buf, size_t size);
  lt::Status (*layoutCreate)(lt::MatrixLayout*, cudaDataType_t type, uint64_t rows, uint64_t cols, int64_t ld);
  lt::Status (*layoutDestroy)(lt::MatrixLayout);
  lt::Status (*prefCreate)(lt::Preference*);
  lt::Status (*prefDestroy)(lt::Preference);
  lt::Status (*prefSetAttribute)(lt::Preference, int attr, const void* buf, size_t size);
  lt::Status (*heuristic)(lt::Handle, lt::MatmulDesc, lt::MatrixLayout, lt::MatrixLayout, lt::MatrixLayout,
                          lt::MatrixLayout, lt::Preference, int requested, lt::HeuristicResult* results, int* count);
  lt::Status (*matmul)(lt::Handle, lt::MatmulDesc, const void* alpha, const void* a, lt::MatrixLayout,
                       const void* b, lt::MatrixLayout, const void* beta, const void* c, lt::MatrixLayout, void* d,
                       lt::MatrixLayout, const void* algo, void* workspace, size_t workspaceBytes, cudaStream_t);
};

namespace {

std::vector<std::string> candidateFiles() {
  const char* names[] = {"libcublasLt.so.13", "libcublasLt.so.12", "libcublasLt.so"};
  std::vector<std::string> dirs;
  if (const char* explicitFile = std::getenv("SLUICE_CUBLASLT")) return {explicitFile};
  auto addPathList = [&](const char* list) {
    if (!list) return;
    std::stringstream ss(list);
    std::string dir;
    while (std::getline(ss, dir, ':'))
      if (!dir.empty()) dirs.push_back(dir);
  };
  addPathList(std::getenv("LD_LIBRARY_PATH"));
  for (const char* var : {"CUDA_HOME", "CUDA_PATH"}) {
    if (const char* root = std::getenv(var)) {
      dirs.push_back(std::string(root) + "/lib64");
      dirs.push_back(std::string(root) + "/lib");
    }
  }
  const char* patterns[] = {
      "/usr/local/cuda/lib64",
      "/usr/local/cuda-1[0-9]*/lib64",
      "/usr/local/cuda/targets/x86_64-linux/lib",
      "/usr/lib/x86_64-linux-gnu",
      "/usr/local/lib/python3*/dist-packages/nvidia/cu13/lib",
      "/usr/local/lib/python3*/site-packages/nvidia/cu13/lib",
      "/usr/lib/python3*/dist-packages/nvidia/cu13/lib",
      "/usr/lib/python3*/site-packages/nvidia/cu13/lib",
      "/opt/conda/lib/python3*/site-packages/nvidia/cu13/lib",
      "/root/.local/lib/python3*/site-packages/nvidia/cu13/lib",
      "/usr/local/lib/python3*/dist-packages/nvidia/cublas/lib",
      "/usr/local/lib/python3*/site-packages/nvidia/cublas/lib",
      "/opt/conda/lib/python3*/site-packages/nvidia/cublas/lib",
  };
  for (const char* pattern : patterns) {
    glob_t g;
    if (glob(pattern, 0, nullptr, &g) == 0) {
      for (size_t i = 0; i < g.gl_pathc; i++) dirs.push_back(g.gl_pathv[i]);
    }
    globfree(&g);
  }
  if (const char* home = std::getenv("HOME")) {
    glob_t g;
    const std::string pattern = std::string(home) + "/.local/lib/python3*/site-packages/nvidia/cu13/lib";
    if (glob(pattern.c_str(), 0, nullptr, &g) == 0) {
      for (size_t i = 0; i < g.gl_pathc; i++) dirs.push_back(g.gl_pathv[i]);
    }
    globfree(&g);
  }
  std::vector<std::string> files;
  for (const auto& dir : dirs)
    for (const char* name : names) files.push_back(dir + "/" + name);
  for (const char* name : names) files.push_back(name);  // the dynamic loader's own search
  return files;
}

/**
 * The Python packages' library folders as python3 itself reports them (virtual environments,
 * conda, user installs): the last place looked, since starting python3 takes a moment.
 */
std::vector<std::string> pythonPackageFiles() {
  std::vector<std::string> files;
  FILE* pipe = popen(
      "python3 -c 'import site; print(\"\\n\".join(site.getsitepackages() + [site.getusersitepackages()]))' 2>/dev/null",
      "r");
  if (!pipe) return files;
  char line[4096];
  while (fgets(line, sizeof line, pipe)) {
    std::string dir(line);
    while (!dir.empty() && (dir.back() == '\n' || dir.back() == '\r')) dir.pop_back();
    if (dir.empty()) continue;
    for (const char* sub : {"/nvidia/cu13/lib/libcublasLt.so.13", "/nvidia/cublas/lib/libcublasLt.so.13",
                            "/nvidia/cublas/lib/libcublasLt.so.12"})
      files.push_back(dir + sub);
  }
  pclose(pipe);
  return files;
}

template <typename F>
bool bind(void* lib, const char* symbol, F& fn) {
  fn = reinterpret_cast<F>(dlsym(lib, symbol));
  return fn != nullptr;
}

void checkLt(lt::Status status, const char* what) {
  if (status != 0) throw CudaError(std::string("cuBLASLt error ") + std::to_string(status) + " in " + what);
}

}  // namespace

bool CublasLt::open() {
  if (std::getenv("SLUICE_NO_CUBLASLT")) {
    where_ = "disabled by SLUICE_NO_CUBLASLT";
    return false;
  }
  // The first file that exists but cannot be used, with dlerror's text (a missing dependency, a
  // wrong architecture, too old a driver): told apart from "there is no such file anywhere".
  std::string brokenFile;
  std::string brokenWhy;
  int looked = 0;
  auto tryFile = [&](const std::string& file) {
    looked++;
    const bool isPath = file.find('/') != std::string::npos;
    if (isPath && access(file.c_str(), F_OK) != 0) return false;
    void* lib = dlopen(file.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (!lib) {
      const char* err = dlerror();
      const std::string text = err ? err : "dlopen failed";
      // A bare name the loader did not find is "not found"; anything else is a broken file.
      const bool missing = !isPath && text.find("No such file") != std::string::npos;
      if (!missing && brokenFile.empty()) {
        brokenFile = file;
        brokenWhy = text;
      }
      return false;
    }
    auto* api = new Api();
    const bool complete =
        bind(lib, "cublasLtCreate", api->create) && bind(lib, "cublasLtDestroy", api->destroy) &&
        bind(lib, "cublasLtMatmulDescCreate", api->descCreate) &&
        bind(lib, "cublasLtMatmulDescDestroy", api->descDestroy) &&
        bind(lib, "cublasLtMatmulDescSetAttribute", api->descSetAttribute) &&
        bind(lib, "cublasLtMatrixLayoutCreate", api->layoutCreate) &&
        bind(lib, "cublasLtMatrixLayoutDestroy", api->layoutDestroy) &&
        bind(lib, "cublasLtMatmulPreferenceCreate", api->prefCreate) &&
        bind(lib, "cublasLtMatmulPreferenceDestroy", api->prefDestroy) &&
        bind(lib, "cublasLtMatmulPreferenceSetAttribute", api->prefSetAttribute) &&
        bind(lib, "cublasLtMatmulAlgoGetHeuristic", api->heuristic) && bind(lib, "cublasLtMatmul", api->matmul);
    lt::Handle handle = nullptr;
    if (!complete || api->create(&handle) != 0) {
      if (brokenFile.empty()) {
        brokenFile = file;
        brokenWhy = complete ? "cublasLtCreate failed" : "missing cublasLt symbols";
      }
      delete api;
      dlclose(lib);
      return false;
    }
    library_ = lib;
    api_ = api;
    handle_ = handle;
    where_ = file;
    return true;
  };
  for (const auto& file : candidateFiles())
    if (tryFile(file)) return true;
  if (!std::getenv("SLUICE_CUBLASLT")) {
    for (const auto& file : pythonPackageFiles())
      if (tryFile(file)) return true;
  }
  where_ = brokenFile.empty()
               ? "cuBLASLt not found (" + std::to_string(looked) + " places looked at; SLUICE_CUBLASLT names a file)"
               : "cuBLASLt found but failed to load (" + brokenFile + ": " + brokenWhy + ")";
  return false;
}

CublasLt::~CublasLt() {
  if (!api_) return;
  for (auto& [key, p] : plans_) {
    if (p.desc) api_->descDestroy(p.desc);
    if (p.layoutA) api_->layoutDestroy(p.layoutA);
    if (p.layoutB) api_->layoutDestroy(p.layoutB);
    if (p.layoutC) api_->layoutDestroy(p.layoutC);
  }
  if (handle_) api_->destroy(handle_);
  delete api_;
  // The library stays loaded: unloading it while the process exits races its own teardown.
}

// Row-major out[m, n] = x[m, k] w[n, k]^T is, in cuBLAS's column-major terms,
// out^T (n x m) = w^T... i.e. C(n, m) = op(A) B with A = w seen as k x n (transposed), B = x as k x m.
namespace {
/** m itself up to 16 (decode batches), then 4 buckets per doubling: a bounded set of plans. */
int mBucket(int m) {
  if (m <= 16) return m;
  int octave = 16;
  while (octave * 2 < m) octave *= 2;
  const int step = octave / 4;
  return (m + step - 1) / step * step;
}
}  // namespace

std::string CublasLt::failures() const {
  std::string out;
  for (const auto& [shape, why] : failed_) {
    if (!out.empty()) out += ", ";
    out += std::to_string(std::get<0>(shape)) + "x" + std::to_string(std::get<1>(shape)) + "x" +
           std::to_string(std::get<2>(shape)) + " (" + why + ")";
  }
  return out;
}

// The plan's layouts are those of its bucket's largest m (what the heuristic ranked); each call
// makes layouts B and C for its own m, which cuBLASLt reads when the call is made.
CublasLt::Plan& CublasLt::plan(int mActual, int n, int k, DType outType, size_t workspaceBytes) {
  const int m = mBucket(mActual);
  const auto key = std::make_tuple(m, n, k, int(outType));
  auto found = plans_.find(key);
  if (found != plans_.end()) return found->second;
  Plan& p = plans_[key];
  checkLt(api_->descCreate(&p.desc, lt::kComputeF32, CUDA_R_32F), "cublasLtMatmulDescCreate");
  const int transA = lt::kOpT;
  const int transB = lt::kOpN;
  checkLt(api_->descSetAttribute(p.desc, lt::kDescTransA, &transA, sizeof(transA)), "set TRANSA");
  checkLt(api_->descSetAttribute(p.desc, lt::kDescTransB, &transB, sizeof(transB)), "set TRANSB");
  checkLt(api_->layoutCreate(&p.layoutA, CUDA_R_16BF, k, n, k), "layout A");
  checkLt(api_->layoutCreate(&p.layoutB, CUDA_R_16BF, k, m, k), "layout B");
  checkLt(api_->layoutCreate(&p.layoutC, outType == DType::F32 ? CUDA_R_32F : CUDA_R_16BF, n, m, n), "layout C");
  lt::Preference pref = nullptr;
  checkLt(api_->prefCreate(&pref), "cublasLtMatmulPreferenceCreate");
  const uint64_t maxWorkspace = workspaceBytes;
  const lt::Status prefStatus = api_->prefSetAttribute(pref, lt::kPrefMaxWorkspace, &maxWorkspace, sizeof(maxWorkspace));
  if (prefStatus != 0) {
    api_->prefDestroy(pref);
    checkLt(prefStatus, "set MAX_WORKSPACE_BYTES");
  }
  lt::HeuristicResult result{};
  int count = 0;
  const lt::Status status =
      api_->heuristic(handle_, p.desc, p.layoutA, p.layoutB, p.layoutC, p.layoutC, pref, 1, &result, &count);
  api_->prefDestroy(pref);
  if (status == 0 && count > 0 && result.state == 0) {
    for (int i = 0; i < 8; i++) p.algo[i] = result.algo[i];
    p.usable = true;
  }
  return p;
}

bool CublasLt::matmul(const bf16* x, const bf16* w, void* out, DType outType, int m, int n, int k, void* workspace,
                      size_t workspaceBytes, cudaStream_t stream) {
  if (!ready() || m == 0) return m == 0;
  const auto shape = std::make_tuple(m, n, k, int(outType));
  if (failed_.count(shape)) return false;
  Plan* planned = nullptr;
  try {
    planned = &plan(m, n, k, outType, workspaceBytes);
  } catch (const CudaError& e) {
    failed_[shape] = e.what();
    return false;
  }
  Plan& p = *planned;
  if (!p.usable) return false;
  void* layoutB = p.layoutB;
  void* layoutC = p.layoutC;
  const bool ownLayouts = mBucket(m) != m;
  if (ownLayouts) {
    layoutB = layoutC = nullptr;
    if (api_->layoutCreate(&layoutB, CUDA_R_16BF, k, m, k) != 0 ||
        api_->layoutCreate(&layoutC, outType == DType::F32 ? CUDA_R_32F : CUDA_R_16BF, n, m, n) != 0) {
      if (layoutB) api_->layoutDestroy(layoutB);
      if (layoutC) api_->layoutDestroy(layoutC);
      failed_[shape] = "layout";
      return false;
    }
  }
  const float alpha = 1.f;
  const float beta = 0.f;
  const lt::Status status = api_->matmul(handle_, p.desc, &alpha, w, p.layoutA, x, layoutB, &beta, out, layoutC, out,
                                         layoutC, p.algo, workspace, workspaceBytes, stream);
  if (ownLayouts) {
    api_->layoutDestroy(layoutB);
    api_->layoutDestroy(layoutC);
  }
  if (status != 0) {
    // Nothing was enqueued: the caller runs our GEMM for this shape now and from now on.
    failed_[shape] = "status " + std::to_string(status);
    return false;
  }
  return true;
}

}  // namespace sluice
