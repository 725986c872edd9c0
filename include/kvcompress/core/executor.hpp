// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// Injectable parallelism for `KVCache::attend` and `append`: the cache splits work over KV heads
/// and hands the tasks to an Executor. Engines pass their own (wrapping their thread pool);
/// SerialExecutor (the default) and ThreadPoolExecutor ship here. Neither allocates per call.

#include <condition_variable>
#include <cstddef>
#include <exception>
#include <mutex>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

#include "kvcompress/core/errors.hpp"

KVCOMPRESS_NAMESPACE_BEGIN

/// Non-owning reference to a callable `void(std::size_t task, int worker)`; never allocates
/// (unlike std::function), valid only while the referenced callable lives.
class TaskRef {
 public:
  template <class F, class = std::enable_if_t<!std::is_same_v<std::decay_t<F>, TaskRef>>>
  TaskRef(F& f)  // NOLINT(google-explicit-constructor): built at call sites from lambdas
      : obj_(static_cast<void*>(&f)), call_([](void* o, std::size_t t, int w) {
          (*static_cast<F*>(o))(t, w);
        }) {}
  void operator()(std::size_t task, int worker) const { call_(obj_, task, worker); }

 private:
  void* obj_;
  void (*call_)(void*, std::size_t, int);
};

/// Runs `n` independent tasks, each exactly once, and returns when all are done. `worker` passed
/// to a task is in [0, num_workers()) and no two tasks run concurrently with the same worker
/// index, so callers can keep per-worker scratch buffers.
class Executor {
 public:
  virtual ~Executor() = default;
  virtual int num_workers() const = 0;
  virtual void run(std::size_t n, TaskRef task) = 0;
};

/// Runs every task on the calling thread (worker 0).
class SerialExecutor final : public Executor {
 public:
  int num_workers() const override { return 1; }
  void run(std::size_t n, TaskRef task) override {
    for (std::size_t i = 0; i < n; ++i) task(i, 0);
  }
};

/// A fixed pool of std::threads; the calling thread works too (as worker 0), so
/// `ThreadPoolExecutor(2)` uses the caller plus one helper thread. Tasks are handed out
/// dynamically from a counter under one mutex (tasks here are coarse: one KV
/// head each). The first exception thrown by a task is rethrown by run() after all tasks end.
/// run() must not be called concurrently from several threads.
class ThreadPoolExecutor final : public Executor {
 public:
  explicit ThreadPoolExecutor(int num_threads) {
    detail::require(num_threads >= 1, "ThreadPoolExecutor", "num_threads", num_threads, ">= 1");
    threads_.reserve(static_cast<std::size_t>(num_threads - 1));
    for (int w = 1; w < num_threads; ++w) threads_.emplace_back([this, w] { worker_loop(w); });
  }
  ThreadPoolExecutor(const ThreadPoolExecutor&) = delete;
  ThreadPoolExecutor& operator=(const ThreadPoolExecutor&) = delete;
  ~ThreadPoolExecutor() override {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    wake_.notify_all();
    for (auto& t : threads_) t.join();
  }

  int num_workers() const override { return static_cast<int>(threads_.size()) + 1; }

  void run(std::size_t n, TaskRef task) override {
    if (n == 0) return;
    {
      std::lock_guard<std::mutex> lock(mu_);
      task_ = &task;
      n_ = n;
      next_ = 0;
      done_ = 0;
      error_ = nullptr;
      ++generation_;
    }
    wake_.notify_all();
    work(0);
    std::unique_lock<std::mutex> lock(mu_);
    finished_.wait(lock, [this] { return done_ == n_; });
    task_ = nullptr;
    if (error_) std::rethrow_exception(std::exchange(error_, nullptr));
  }

 private:
  void work(int worker) {
    for (;;) {
      std::size_t i;
      {
        std::lock_guard<std::mutex> lock(mu_);
        if (task_ == nullptr || next_ >= n_) return;
        i = next_++;
      }
      try {
        (*task_)(i, worker);
      } catch (...) {
        std::lock_guard<std::mutex> lock(mu_);
        if (!error_) error_ = std::current_exception();
      }
      std::lock_guard<std::mutex> lock(mu_);
      if (++done_ == n_) finished_.notify_all();
    }
  }

  void worker_loop(int worker) {
    std::size_t seen = 0;
    for (;;) {
      {
        std::unique_lock<std::mutex> lock(mu_);
        wake_.wait(lock, [&] { return stop_ || generation_ != seen; });
        if (stop_) return;
        seen = generation_;
      }
      work(worker);
    }
  }

  std::vector<std::thread> threads_;
  std::mutex mu_;
  std::condition_variable wake_, finished_;
  const TaskRef* task_ = nullptr;
  std::size_t n_ = 0, next_ = 0, done_ = 0, generation_ = 0;
  std::exception_ptr error_;
  bool stop_ = false;
};

KVCOMPRESS_NAMESPACE_END
