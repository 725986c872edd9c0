// SPDX-License-Identifier: Apache-2.0
#pragma once
/// \file
/// Shared helpers of the kvcompress benchmarks (Google Benchmark 1.7):
///   - a DRAM read-bandwidth baseline: a read-only sweep (AVX-512 or AVX2 loads, summed so the
///     loads cannot be dropped) over >= 1 GiB with 1 and 2 threads, measured ONCE per process by
///     `measure_dram_read_bw()` before the benchmarks run, stored in a global and read with
///     `dram_read_bw(threads)`; it is the denominator of every `bw_fraction` counter;
///   - a cache flusher that streams a buffer larger than L3 (256 MiB, or 2x L3 if that is larger)
///     so that a measurement starts with the data in DRAM, not L3 ("measure cold",
///     performance.md). It runs OUTSIDE the timed region: benchmarks use `UseManualTime()` and
///     time only the measured call with std::chrono (never PauseTiming()/ResumeTiming() inside
///     the loop); `run_cold()` is that loop;
///   - `bench_min_time()`: the --benchmark_min_time value, which benchmarks with a fixed,
///     precomputed iteration count (the flush costs far more wall time than a short measured call,
///     so Google Benchmark's adaptive count would run for minutes) use as their time budget.
/// Environment overrides: KVCOMPRESS_BENCH_SWEEP_MIB (sweep size, default 1024),
/// KVCOMPRESS_BENCH_FLUSH_MIB (flush buffer size).

#include <benchmark/benchmark.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <new>
#include <string>
#include <thread>
#include <vector>

#if defined(__AVX512F__) || defined(__AVX2__)
#include <immintrin.h>
#endif

namespace kvcompress_bench {

using Clock = std::chrono::steady_clock;
inline constexpr std::size_t kMiB = std::size_t{1} << 20;
inline constexpr std::size_t kHugePage = 2 * kMiB;

inline double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

inline std::size_t env_mib(const char* name, std::size_t fallback_mib) {
  const char* s = std::getenv(name);
  if (s == nullptr || *s == '\0') return fallback_mib;
  const long long v = std::atoll(s);
  return v > 0 ? static_cast<std::size_t>(v) : fallback_mib;
}

/// Page-aligned heap buffer, 2 MiB aligned and rounded, transparent huge pages requested
/// (THP is `madvise` on the benchmark machines), every page written once so that reads hit
/// real memory rather than the shared zero page.
class Buffer {
 public:
  explicit Buffer(std::size_t bytes) : bytes_((bytes + kHugePage - 1) / kHugePage * kHugePage) {
    data_ = static_cast<unsigned char*>(std::aligned_alloc(kHugePage, bytes_));
    if (data_ == nullptr) throw std::bad_alloc();
    (void)madvise(data_, bytes_, MADV_HUGEPAGE);
    std::memset(data_, 0x5a, bytes_);
  }
  ~Buffer() { std::free(data_); }
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
  const unsigned char* data() const { return data_; }
  std::size_t size() const { return bytes_; }

 private:
  std::size_t bytes_;
  unsigned char* data_;
};

/// Read-only sweep: loads every byte of [p, p + bytes) once (bytes: a multiple of 512, p 64-byte
/// aligned) with the widest vector loads of this build and returns their 64-bit lane sum.
/// Eight independent accumulators keep enough loads in flight to saturate DRAM.
inline std::uint64_t read_sweep(const unsigned char* p, std::size_t bytes) {
#if defined(__AVX512F__)
  __m512i a0 = _mm512_setzero_si512(), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0;
  for (const unsigned char* end = p + bytes; p < end; p += 512) {
    a0 = _mm512_add_epi64(a0, _mm512_load_si512(p + 0));
    a1 = _mm512_add_epi64(a1, _mm512_load_si512(p + 64));
    a2 = _mm512_add_epi64(a2, _mm512_load_si512(p + 128));
    a3 = _mm512_add_epi64(a3, _mm512_load_si512(p + 192));
    a4 = _mm512_add_epi64(a4, _mm512_load_si512(p + 256));
    a5 = _mm512_add_epi64(a5, _mm512_load_si512(p + 320));
    a6 = _mm512_add_epi64(a6, _mm512_load_si512(p + 384));
    a7 = _mm512_add_epi64(a7, _mm512_load_si512(p + 448));
  }
  const __m512i s = _mm512_add_epi64(_mm512_add_epi64(_mm512_add_epi64(a0, a1), _mm512_add_epi64(a2, a3)),
                                     _mm512_add_epi64(_mm512_add_epi64(a4, a5), _mm512_add_epi64(a6, a7)));
  alignas(64) std::uint64_t lanes[8];  // (_mm512_reduce_add_epi64 trips -Wuninitialized in GCC 12)
  _mm512_store_si512(lanes, s);
  std::uint64_t r = 0;
  for (std::uint64_t x : lanes) r += x;
  return r;
#elif defined(__AVX2__)
  __m256i a[8];
  for (auto& x : a) x = _mm256_setzero_si256();
  for (const unsigned char* end = p + bytes; p < end; p += 256) {
    for (int i = 0; i < 8; ++i)
      a[i] = _mm256_add_epi64(a[i], _mm256_load_si256(reinterpret_cast<const __m256i*>(p + 32 * i)));
  }
  __m256i s = a[0];
  for (int i = 1; i < 8; ++i) s = _mm256_add_epi64(s, a[i]);
  alignas(32) std::uint64_t lanes[4];
  _mm256_store_si256(reinterpret_cast<__m256i*>(lanes), s);
  return lanes[0] + lanes[1] + lanes[2] + lanes[3];
#else
  std::uint64_t a[8] = {};
  for (const unsigned char* end = p + bytes; p < end; p += 64) {
    for (int i = 0; i < 8; ++i) {
      std::uint64_t x;
      std::memcpy(&x, p + 8 * i, 8);
      a[i] += x;
    }
  }
  return a[0] + a[1] + a[2] + a[3] + a[4] + a[5] + a[6] + a[7];
#endif
}

/// Name of the loads read_sweep uses in this build.
inline const char* read_sweep_isa() {
#if defined(__AVX512F__)
  return "AVX-512";
#elif defined(__AVX2__)
  return "AVX2";
#else
  return "scalar";
#endif
}

/// Median over `passes` timed sweeps (after one untimed warm-up sweep) of `threads` threads each
/// reading its own contiguous share of `buf`, in bytes per second.
inline double measure_read_bw(const Buffer& buf, int threads, int passes = 5) {
  const std::size_t share = buf.size() / static_cast<std::size_t>(threads) / 512 * 512;
  std::vector<std::uint64_t> sinks(static_cast<std::size_t>(threads) * 8);  // one line each
  auto sweep_all = [&] {
    std::vector<std::thread> pool;
    for (int t = 1; t < threads; ++t)
      pool.emplace_back([&, t] { sinks[t * 8] += read_sweep(buf.data() + t * share, share); });
    sinks[0] += read_sweep(buf.data(), share);
    for (auto& th : pool) th.join();
  };
  sweep_all();
  std::vector<double> rates;
  for (int i = 0; i < passes; ++i) {
    const auto t0 = Clock::now();
    sweep_all();
    rates.push_back(static_cast<double>(share) * threads / seconds_since(t0));
  }
  benchmark::DoNotOptimize(sinks.data());
  std::sort(rates.begin(), rates.end());
  return rates[rates.size() / 2];
}

/// Process-wide baselines, filled by measure_dram_read_bw().
struct Baselines {
  double dram_read_Bps[3] = {0, 0, 0};  ///< index: thread count (1 or 2)
  std::size_t sweep_bytes = 0;
};
inline Baselines& baselines() {
  static Baselines b;
  return b;
}

/// DRAM read bandwidth (bytes/s) with `threads` threads (clamped to 1..2), as measured once at
/// start-up by measure_dram_read_bw(); 0 if it was not measured.
inline double dram_read_bw(int threads) {
  return baselines().dram_read_Bps[std::clamp(threads, 1, 2)];
}

/// Measures the 1- and 2-thread DRAM read bandwidth once (a >= 1 GiB read-only sweep), stores it in
/// baselines(), prints it and adds it to the benchmark context (console header and JSON).
inline void measure_dram_read_bw() {
  Baselines& b = baselines();
  if (b.sweep_bytes != 0) return;
  const std::size_t bytes = env_mib("KVCOMPRESS_BENCH_SWEEP_MIB", 1024) * kMiB;
  {
    Buffer buf(bytes);
    b.dram_read_Bps[1] = measure_read_bw(buf, 1);
    b.dram_read_Bps[2] = measure_read_bw(buf, 2);
    b.sweep_bytes = buf.size();
  }
  char line[160];
  std::snprintf(line, sizeof line, "%.2f GB/s (1 thread), %.2f GB/s (2 threads); %zu MiB %s read sweep",
                b.dram_read_Bps[1] * 1e-9, b.dram_read_Bps[2] * 1e-9, b.sweep_bytes / kMiB,
                read_sweep_isa());
  std::fprintf(stderr, "kvcompress bench: DRAM read bandwidth %s\n", line);
  benchmark::AddCustomContext("dram_read_bw", line);
  benchmark::AddCustomContext("dram_read_GBps_t1", std::to_string(b.dram_read_Bps[1] * 1e-9));
  benchmark::AddCustomContext("dram_read_GBps_t2", std::to_string(b.dram_read_Bps[2] * 1e-9));
}

/// Evicts the caches by streaming a buffer larger than L3 (read-only: no dirty lines are left to
/// be written back during the next measurement). Call it outside the timed region.
class CacheFlusher {
 public:
  CacheFlusher() : buf_(default_bytes()) {
    flush();  // warm the TLB / page tables once
    const auto t0 = Clock::now();
    flush();
    seconds_ = seconds_since(t0);
  }
  void flush() {
    sink_ += read_sweep(buf_.data(), buf_.size());
    benchmark::DoNotOptimize(sink_);
  }
  /// Wall time of one flush, measured at construction.
  double seconds_per_flush() const { return seconds_; }
  std::size_t bytes() const { return buf_.size(); }

  /// 256 MiB, or twice the L3 size if that is larger (KVCOMPRESS_BENCH_FLUSH_MIB overrides).
  static std::size_t default_bytes() {
    const std::size_t bytes = std::max<std::size_t>(256 * kMiB, 2 * l3_bytes());
    return env_mib("KVCOMPRESS_BENCH_FLUSH_MIB", bytes / kMiB) * kMiB;
  }
  /// L3 size from sysfs (what lscpu shows; sysconf's value is unreliable on AMD guests), or 0.
  static std::size_t l3_bytes() {
    std::FILE* f = std::fopen("/sys/devices/system/cpu/cpu0/cache/index3/size", "r");
    if (f == nullptr) return 0;
    unsigned long long v = 0;
    char unit = 0;
    const int n = std::fscanf(f, "%llu%c", &v, &unit);
    std::fclose(f);
    if (n < 1) return 0;
    if (unit == 'K') v <<= 10;
    if (unit == 'M') v <<= 20;
    if (unit == 'G') v <<= 30;
    return static_cast<std::size_t>(v);
  }

 private:
  Buffer buf_;
  std::uint64_t sink_ = 0;
  double seconds_ = 0;
};

/// The process's flusher (allocated on first use).
inline CacheFlusher& flusher() {
  static CacheFlusher f;
  return f;
}

/// Cold-cache manual-timing loop: for every iteration, flush (untimed), then time `fn()` alone.
/// Returns the per-iteration times in seconds (e.g. for a median).
template <class Fn>
std::vector<double> run_cold(benchmark::State& state, Fn&& fn) {
  std::vector<double> times;
  times.reserve(static_cast<std::size_t>(state.max_iterations));
  CacheFlusher& f = flusher();
  for (auto _ : state) {
    f.flush();
    const auto t0 = Clock::now();
    fn();
    benchmark::ClobberMemory();
    const double dt = seconds_since(t0);
    state.SetIterationTime(dt);
    times.push_back(dt);
  }
  return times;
}

inline double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const std::size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/// The --benchmark_min_time value given on the command line (seconds; Google Benchmark 1.7 takes
/// a plain number, later versions also accept a trailing "s"), or `fallback`. Call before
/// benchmark::Initialize(), which consumes the flag.
inline double bench_min_time(int argc, char** argv, double fallback = 0.5) {
  static const char kFlag[] = "--benchmark_min_time=";
  double v = fallback;
  for (int i = 1; i < argc; ++i)
    if (std::strncmp(argv[i], kFlag, sizeof kFlag - 1) == 0) {
      char* end = nullptr;
      const double x = std::strtod(argv[i] + sizeof kFlag - 1, &end);
      if (end != argv[i] + sizeof kFlag - 1 && x > 0) v = x;
    }
  return v;
}

}  // namespace kvcompress_bench
