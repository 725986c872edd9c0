// SPDX-License-Identifier: Apache-2.0
// Decode attention over a prefilled cache: decode/<cache>/<context>/t<threads>
//   cache   ∈ kv_setup.hpp's for_each_cache (dense_f16, dense_f32, kivi2, …); context ∈ {1024, 4096, 16384, 65536};
//   threads ∈ {1 (SerialExecutor), 2 (ThreadPoolExecutor(2))}; one layer, 32 query heads,
//   8 KV heads, head_dim 128. Google Benchmark appends
//   "/iterations:<n>/manual_time" to every name.
//
// Protocol: "attend-only decode, cold cache". The cache is prefilled once to `context` tokens
// (chunks of 512 fp32 tokens, outside any timing; repetitions reuse it). Each iteration is ONE
// attend of one query token (n_q = 1, all 32 query heads) over the whole cache, with NO append, so
// the cache size stays exactly `context`. Before every iteration, outside the timed region, a
// 256 MiB read stream evicts the caches (baselines.hpp); only the attend call is timed
// (UseManualTime + std::chrono). Iteration counts are fixed per benchmark: as many flush + attend
// rounds as fit the time budget (--benchmark_min_time, default 0.5 s, here counted in wall time),
// estimated from a 3-attend probe per cache at a 4096 context, rounded down to 3/5/10/20/50/...;
// Google Benchmark's adaptive count would let the untimed flushes run for minutes. The count shows
// in the name: decode/kivi2/16384/t1/iterations:20/manual_time.
//
// Counters:
//   bytes_per_second      KV bytes read per second; bytes read per attend = memory_bytes() of the
//                         cache (one layer: its blocks, windows and slot metadata)
//   bw_fraction           that rate / the DRAM read bandwidth measured at start-up by this process
//                         with the same thread count (a plain ratio, mean over the iterations)
//   speedup_vs_dense_f16  median attend time of dense_f16 at the same context and thread count,
//                         measured in this process (by that benchmark, or lazily if it is filtered
//                         out), / this benchmark's median attend time
//   median_us, kv_MiB, bits_per_value (KV bytes · 8 / (context · 8 heads · 128 · 2))
//
// Examples:
//   decode_bench                                            # full run, about 1 minute
//   decode_bench --benchmark_filter='decode/.*/16384/'      # every cache at 16K context
//   decode_bench --benchmark_filter='decode/(dense_f16|kivi2)/65536/t2'
//   decode_bench --benchmark_filter=kivi --benchmark_repetitions=5
//                --benchmark_report_aggregates_only=true    # (one line) medians over 5 runs
//   decode_bench --benchmark_min_time=0.01                  # CI smoke run (3 iterations each)
//   decode_bench --benchmark_format=json --benchmark_out=decode.json --benchmark_out_format=json

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <exception>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "baselines.hpp"
#include "kv_setup.hpp"

namespace kb = kvcompress_bench;

namespace {

/// Time budget per benchmark (seconds of wall time, flushes included), from --benchmark_min_time.
double g_budget_s = 0.5;

/// Holds the last prefilled cache (and its executor): repetitions of one benchmark reuse it; the
/// next benchmark frees it before building its own, so one large cache lives at a time.
struct Slot {
  std::string key;
  std::unique_ptr<kb::kvc::Executor> exec;
  std::shared_ptr<void> cache;  // released before exec
  void reset() {
    cache.reset();
    exec.reset();
    key.clear();
  }
  ~Slot() { reset(); }
};
Slot& slot() {
  static Slot s;
  return s;
}

template <class Cache>
Cache& prefilled(const std::string& key, int context, int threads) {
  Slot& s = slot();
  if (s.key != key) {
    s.reset();
    s.exec = kb::make_executor(threads);
    auto cache = std::make_shared<Cache>(kb::bench_shape(static_cast<std::size_t>(context)),
                                         kb::bench_config<Cache>(), s.exec.get());
    kb::inputs().append_to(*cache, static_cast<std::size_t>(context));
    s.cache = std::move(cache);
    s.key = key;
  }
  return *static_cast<Cache*>(s.cache.get());
}

std::vector<float> query() {
  std::vector<float> q(static_cast<std::size_t>(kb::kQHeads) * kb::kHeadDim);
  std::mt19937 rng(7);
  std::normal_distribution<float> n01(0.0f, 1.0f);
  for (float& x : q) x = n01(rng);
  return q;
}

/// Seconds per KV byte of one cold attend, per (cache, threads), from a short probe at a 4096
/// context run in main() before registration; used only to plan iteration counts.
std::map<std::pair<std::string, int>, double>& probe_seconds_per_byte() {
  static std::map<std::pair<std::string, int>, double> m;
  return m;
}

template <class Cache>
void probe(const char* cache_name, int threads) {
  constexpr int kProbeContext = 4096;
  double per_byte = 1.0 / 10e9;  // fallback: 10 GB/s
  try {
    auto exec = kb::make_executor(threads);
    Cache cache(kb::bench_shape(kProbeContext), kb::bench_config<Cache>(), exec.get());
    kb::inputs().append_to(cache, kProbeContext);
    const std::vector<float> q = query();
    std::vector<float> out(q.size());
    cache.attend(0, q.data(), 1, out.data());
    std::vector<double> times;
    for (int i = 0; i < 3; ++i) {
      kb::flusher().flush();
      const auto t0 = kb::Clock::now();
      cache.attend(0, q.data(), 1, out.data());
      benchmark::ClobberMemory();
      times.push_back(kb::seconds_since(t0));
    }
    per_byte = kb::median(times) / static_cast<double>(cache.memory_bytes());
  } catch (const std::exception&) {
    // the benchmark itself will report the error
  }
  probe_seconds_per_byte()[{cache_name, threads}] = per_byte;
}

/// Iterations for one benchmark: as many flush + attend rounds as fit the time budget, rounded
/// down to 3, 5, 10, 20, 50, ... 1000 so that names (which carry the count) stay stable.
int planned_iterations(const std::string& cache, int context, int threads) {
  double bits = 16;
  kb::for_each_cache([&](auto, const char* name, double b) {
    if (cache == name) bits = b;
  });
  const double bytes = bits / 8 * context * kb::kKvHeads * kb::kHeadDim * 2;
  const auto it = probe_seconds_per_byte().find({cache, threads});
  const double per_byte = it != probe_seconds_per_byte().end() ? it->second : 1.0 / 10e9;
  const double n = g_budget_s / (kb::flusher().seconds_per_flush() + bytes * per_byte);
  int planned = 3;
  for (int step : {5, 10, 20, 50, 100, 200, 500, 1000})
    if (n >= step) planned = step;
  return planned;
}

/// Median dense_f16 attend time per (context, threads), measured in this process.
std::map<std::pair<int, int>, double>& reference_times() {
  static std::map<std::pair<int, int>, double> m;
  return m;
}

/// The dense_f16 reference time for (context, threads); measured here, with the same protocol,
/// when the dense_f16 benchmark has not run (e.g. filtered out).
double dense_f16_reference(int context, int threads) {
  auto& refs = reference_times();
  const auto it = refs.find({context, threads});
  if (it != refs.end()) return it->second;
  auto exec = kb::make_executor(threads);
  kb::DenseF16 cache(kb::bench_shape(static_cast<std::size_t>(context)), {}, exec.get());
  kb::inputs().append_to(cache, static_cast<std::size_t>(context));
  const std::vector<float> q = query();
  std::vector<float> out(q.size());
  cache.attend(0, q.data(), 1, out.data());
  const int n = std::min(planned_iterations("dense_f16", context, threads), 50);
  std::vector<double> times;
  for (int i = 0; i < n; ++i) {
    kb::flusher().flush();
    const auto t0 = kb::Clock::now();
    cache.attend(0, q.data(), 1, out.data());
    benchmark::ClobberMemory();
    times.push_back(kb::seconds_since(t0));
  }
  return refs[{context, threads}] = kb::median(std::move(times));
}

template <class Cache>
void bm_decode(benchmark::State& state, const std::string& cache_name, int context, int threads) {
  constexpr bool kIsReference = std::is_same_v<Cache, kb::DenseF16>;
  const std::string key = cache_name + "/" + std::to_string(context) + "/t" + std::to_string(threads);
  try {
    if (slot().key != key) slot().reset();  // free the previous cache before building anything
    const double ref = kIsReference ? 0.0 : dense_f16_reference(context, threads);
    Cache& cache = prefilled<Cache>(key, context, threads);
    if (cache.size(0, 0) != static_cast<std::size_t>(context)) {
      state.SkipWithError("prefill did not reach the context length");
      return;
    }
    const std::vector<float> q = query();
    std::vector<float> out(q.size());
    cache.attend(0, q.data(), 1, out.data());  // warm-up: scratch pages, pool threads awake

    const double kv_bytes = static_cast<double>(cache.memory_bytes());
    const std::vector<double> times = kb::run_cold(state, [&] {
      cache.attend(0, q.data(), 1, out.data());
      benchmark::DoNotOptimize(out.data());
    });
    if (cache.size(0, 0) != static_cast<std::size_t>(context)) {
      state.SkipWithError("attend changed the cache size");
      return;
    }
    const double med = kb::median(times);
    if (kIsReference) reference_times().emplace(std::make_pair(context, threads), med);
    const double ref_s = kIsReference ? reference_times()[{context, threads}] : ref;

    state.SetBytesProcessed(static_cast<std::int64_t>(kv_bytes * static_cast<double>(state.iterations())));
    double total_s = 0;
    for (double t : times) total_s += t;
    state.counters["bw_fraction"] = total_s > 0 ? kv_bytes * static_cast<double>(times.size()) / total_s /
                                                      kb::dram_read_bw(threads)
                                                : 0.0;
    state.counters["speedup_vs_dense_f16"] = med > 0 ? ref_s / med : 0.0;
    state.counters["median_us"] = med * 1e6;
    state.counters["kv_MiB"] = kv_bytes / static_cast<double>(kb::kMiB);
    state.counters["bits_per_value"] =
        kv_bytes * 8 / (static_cast<double>(context) * kb::kKvHeads * kb::kHeadDim * 2);
  } catch (const std::exception& e) {
    state.SkipWithError(e.what());
  }
}

template <class Cache>
void register_decode(const char* cache_name, int context, int threads) {
  const std::string name = std::string("decode/") + cache_name + "/" + std::to_string(context) +
                           "/t" + std::to_string(threads);
  benchmark::RegisterBenchmark(name.c_str(),
                               [cache = std::string(cache_name), context, threads](benchmark::State& st) {
                                 bm_decode<Cache>(st, cache, context, threads);
                               })
      ->UseManualTime()
      ->Iterations(planned_iterations(cache_name, context, threads))
      ->Unit(benchmark::kMicrosecond);
}

}  // namespace

int main(int argc, char** argv) {
  g_budget_s = kb::bench_min_time(argc, argv, 0.5);
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;

  kb::measure_dram_read_bw();  // once, before any benchmark
  benchmark::AddCustomContext("flush", std::to_string(kb::flusher().bytes() / kb::kMiB) + " MiB read, " +
                                           std::to_string(kb::flusher().seconds_per_flush() * 1e3) + " ms");

  for (int threads : kb::kThreadCounts)
    kb::for_each_cache([&](auto tag, const char* name, double) { probe<typename decltype(tag)::type>(name, threads); });

  // dense_f16 first at each (context, threads): it sets the speedup reference of the others.
  for (int context : kb::kContexts)
    for (int threads : kb::kThreadCounts)
      kb::for_each_cache([&](auto tag, const char* name, double) {
        register_decode<typename decltype(tag)::type>(name, context, threads);
      });

  benchmark::RunSpecifiedBenchmarks();
  slot().reset();
  benchmark::Shutdown();
  return 0;
}
