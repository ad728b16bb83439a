#include "thread_pool.h"

namespace sluice {
namespace cpu {

ThreadPool& sharedPool() {
  // Never destroyed: its threads wait for work for the life of the process.
  static ThreadPool* threads = new ThreadPool();
  return *threads;
}

}  // namespace cpu
}  // namespace sluice
