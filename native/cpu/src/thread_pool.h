// The addon's worker threads, kept between calls.
#pragma once
#include <atomic>
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
 * decode GEMV). run() hands out a job's chunks from a shared counter: the caller starts on them
 * at once and pool threads join as they wake. A sleeping thread can take longer to wake on
 * this VM than a decode GEMV takes, so a job never waits for a thread that has not started:
 * the caller then does the chunks itself (a fixed share per thread ran 3x slower inside decode
 * steps, docs/performance.md).
 */
class ThreadPool {
 public:
  /** work(i) for every i in [0, chunks), on the caller and up to threads - 1 pool threads. */
  void run(size_t chunks, size_t threads, const std::function<void(size_t)>& work) {
    // Callers on other threads (tensor-parallel ranks) wait their turn: one job at a time.
    std::lock_guard<std::mutex> turn(caller_);
    {
      std::lock_guard<std::mutex> lock(mutex_);
      while (threads_.size() + 1 < threads) threads_.emplace_back([this] { serve(); });
      work_ = &work;
      chunks_ = chunks;
      next_.store(0);
      joinable_ = threads - 1;
      generation_++;
    }
    if (threads > 1) wake_.notify_all();
    drain(work, chunks);
    std::unique_lock<std::mutex> lock(mutex_);
    work_ = nullptr;  // late threads find nothing to join
    done_.wait(lock, [this] { return working_ == 0; });
  }

 private:
  void drain(const std::function<void(size_t)>& work, size_t chunks) {
    for (size_t i = next_.fetch_add(1); i < chunks; i = next_.fetch_add(1)) work(i);
  }

  void serve() {
    size_t seen = 0;
    std::unique_lock<std::mutex> lock(mutex_);
    for (;;) {
      wake_.wait(lock, [&] { return generation_ != seen; });
      seen = generation_;
      if (work_ == nullptr || joinable_ == 0) continue;
      joinable_--;
      working_++;
      const auto* work = work_;
      const size_t chunks = chunks_;
      lock.unlock();
      drain(*work, chunks);
      lock.lock();
      if (--working_ == 0) done_.notify_one();
    }
  }

  std::mutex caller_;
  std::mutex mutex_;
  std::condition_variable wake_;
  std::condition_variable done_;
  std::vector<std::thread> threads_;
  const std::function<void(size_t)>* work_ = nullptr;
  size_t chunks_ = 0;
  std::atomic<size_t> next_{0};
  size_t joinable_ = 0;
  size_t working_ = 0;
  size_t generation_ = 0;
};

/** The process's pool, shared by every kernel (one call at a time: the backend's steps do not overlap). */
ThreadPool& sharedPool();

}  // namespace cpu
}  // namespace sluice
