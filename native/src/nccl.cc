#include "nccl.h"

#include <dlfcn.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <stdexcept>
#include <vector>

namespace {

std::vector<std::string> pythonNcclFiles() {
  std::vector<std::string> files;
  FILE* pipe = popen(
      "python3 -c 'import site; print(\"\\n\".join(site.getsitepackages() + [site.getusersitepackages()]))' 2>/dev/null",
      "r");
  if (!pipe) return files;
  char line[4096];
  while (fgets(line, sizeof line, pipe)) {
    std::string dir(line);
    while (!dir.empty() && (dir.back() == '\n' || dir.back() == '\r')) dir.pop_back();
    if (!dir.empty()) files.push_back(dir + "/nvidia/nccl/lib/libnccl.so.2");
  }
  pclose(pipe);
  return files;
}

template <typename F>
bool bind(void* lib, const char* symbol, F& fn) {
  fn = reinterpret_cast<F>(dlsym(lib, symbol));
  return fn != nullptr;
}

}  // namespace

bool NcclLib::open() {
  if (api_) return true;
  std::vector<std::string> candidates;
  if (const char* env = std::getenv("SLUICE_NCCL_LIB")) candidates.push_back(env);
  candidates.push_back("libnccl.so.2");
  for (const auto& f : pythonNcclFiles()) candidates.push_back(f);
  std::string broken;
  for (const auto& file : candidates) {
    const bool isPath = file.find('/') != std::string::npos;
    if (isPath && access(file.c_str(), F_OK) != 0) continue;
    void* lib = dlopen(file.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (!lib) {
      const char* err = dlerror();
      const std::string text = err ? err : "dlopen failed";
      if ((isPath || text.find("No such file") == std::string::npos) && broken.empty()) broken = file + ": " + text;
      continue;
    }
    auto* api = new nccl::Api();
    const bool complete = bind(lib, "ncclGetVersion", api->getVersion) && bind(lib, "ncclGetUniqueId", api->getUniqueId) &&
                          bind(lib, "ncclCommInitRank", api->commInitRank) && bind(lib, "ncclCommInitAll", api->commInitAll) &&
                          bind(lib, "ncclCommDestroy", api->commDestroy) && bind(lib, "ncclAllReduce", api->allReduce) &&
                          bind(lib, "ncclAllGather", api->allGather) && bind(lib, "ncclGetErrorString", api->getErrorString);
    if (!complete) {
      delete api;
      dlclose(lib);
      if (broken.empty()) broken = file + ": lacks an NCCL symbol sluice uses";
      continue;
    }
    bind(lib, "ncclCommAbort", api->commAbort);
    api->getVersion(&version_);
    api_ = api;
    where_ = file;
    return true;
  }
  where_ = broken.empty() ? "libnccl.so.2 not found ($SLUICE_NCCL_LIB, the loader's path, python site-packages nvidia/nccl/lib)"
                          : broken;
  return false;
}

void NcclLib::check(nccl::Result result, const char* what) const {
  if (result == 0) return;
  const char* text = api_ ? api_->getErrorString(result) : "NCCL not loaded";
  throw std::runtime_error(std::string("NCCL error ") + std::to_string(result) + " (" + text + ") in " + what);
}
