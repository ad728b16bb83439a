// The addon's worker threads, kept between calls.
#pragma once
#include <condition_variable>
#include <cstddef>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace sluice {
namespace cpu {

/**
 * Threads kept for the calls (starting a std::thread per call cost ~180 us here, more than a
 * decode GEMV). run(parts, work) calls work(0) on the caller and work(1..parts-1) on the pool.
 */
class ThreadPool {
 public:
  void run(size_t parts, const std::function<void(size_t)>& work) {
    std::unique_lock<std::mutex> lock(mutex_);
    while (threads_.size() + 1 < parts) threads_.emplace_back([this, index = threads_.size() + 1] { serve(index); });
    work_ = &work;
    parts_ = parts;
    pending_ = parts - 1;
    generation_++;
    lock.unlock();
    wake_.notify_all();
    work(0);
    lock.lock();
    done_.wait(lock, [this] { return pending_ == 0; });
    work_ = nullptr;
  }

 private:
  void serve(size_t index) {
    size_t seen = 0;
    std::unique_lock<std::mutex> lock(mutex_);
    for (;;) {
      wake_.wait(lock, [&] { return generation_ != seen; });
      seen = generation_;
      if (index >= parts_) continue;
      const auto* work = work_;
      lock.unlock();
      (*work)(index);
      lock.lock();
      if (--pending_ == 0) done_.notify_one();
    }
  }

  std::mutex mutex_;
  std::condition_variable wake_;
  std::condition_variable done_;
  std::vector<std::thread> threads_;
  const std::function<void(size_t)>* work_ = nullptr;
  size_t parts_ = 0;
  size_t pending_ = 0;
  size_t generation_ = 0;
};

/** The process's pool, shared by every kernel (one call at a time: the backend's steps do not overlap). */
ThreadPool& sharedPool();

}  // namespace cpu
}  // namespace sluice
