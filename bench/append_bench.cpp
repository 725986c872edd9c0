// SPDX-License-Identifier: Apache-2.0
// Append (prefill-side compression) throughput: append/<cache>/<context>/t<threads>
//   cache   ∈ kv_setup.hpp's for_each_cache (dense_f16, dense_f32, kivi2, …); context ∈ {1024, 4096, 16384, 65536};
//   threads ∈ {1 (SerialExecutor), 2 (ThreadPoolExecutor(2))}; one layer, 32 query heads,
//   8 KV heads, head_dim 128. Google Benchmark appends "/manual_time" to every name.
//
// Protocol: each iteration appends `context` tokens of fp32 K/V, in chunks of 512 tokens, to an
// empty cache. The cache is built once per run (capacity = context) and filled once untimed, so
// the reserved pages are resident as in a running engine; before every iteration it is emptied
// with clear(), outside the timed region (manual timing with std::chrono around the appends
// only; no PauseTiming()). The inputs are hot (4 distinct chunks cycled), as K/V come straight
// from the projections; no cache flush here.
//
// Counters:
//   bytes_per_second           fp32 input bytes (K + V) appended per second
//   bytes_per_second_per_core  the same divided by the thread count
//   tokens_per_second          tokens appended per second
//
// Examples:
//   append_bench                                         # full run, about 1 minute
//   append_bench --benchmark_filter='append/kivi'        # the KIVI caches only
//   append_bench --benchmark_filter='append/.*/65536/t1'
//   append_bench --benchmark_repetitions=5 --benchmark_report_aggregates_only=true
//   append_bench --benchmark_min_time=0.01               # CI smoke run

#include <cstdint>
#include <exception>
#include <memory>
#include <string>

#include "baselines.hpp"
#include "kv_setup.hpp"

namespace kb = kvcompress_bench;

namespace {

template <class Cache>
void bm_append(benchmark::State& state, int context, int threads) {
  const auto n = static_cast<std::size_t>(context);
  try {
    auto exec = kb::make_executor(threads);
    Cache cache(kb::bench_shape(n), kb::bench_config<Cache>(), exec.get());
    const kb::Inputs& in = kb::inputs();
    in.append_to(cache, n);  // untimed first fill: touches the reserved pages once
    for (auto _ : state) {
      cache.clear();  // untimed
      const auto t0 = kb::Clock::now();
      in.append_to(cache, n);
      benchmark::ClobberMemory();
      state.SetIterationTime(kb::seconds_since(t0));
    }
    if (cache.size(0, 0) != n) {
      state.SkipWithError("the cache does not hold `context` tokens after appending them");
      return;
    }
    const double bytes = kb::f32_kv_bytes(n);
    state.SetBytesProcessed(static_cast<std::int64_t>(bytes * static_cast<double>(state.iterations())));
    state.counters["bytes_per_second_per_core"] =
        benchmark::Counter(bytes / threads, benchmark::Counter::kIsIterationInvariantRate,
                           benchmark::Counter::kIs1024);  // same units as bytes_per_second
    state.counters["tokens_per_second"] =
        benchmark::Counter(static_cast<double>(n), benchmark::Counter::kIsIterationInvariantRate);
  } catch (const std::exception& e) {
    state.SkipWithError(e.what());
  }
}

template <class Cache>
void register_append(const char* cache_name, int context, int threads) {
  const std::string name = std::string("append/") + cache_name + "/" + std::to_string(context) +
                           "/t" + std::to_string(threads);
  benchmark::RegisterBenchmark(name.c_str(),
                               [context, threads](benchmark::State& st) { bm_append<Cache>(st, context, threads); })
      ->UseManualTime()
      ->Unit(benchmark::kMicrosecond);
}

}  // namespace

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;

  for (int context : kb::kContexts)
    for (int threads : kb::kThreadCounts)
      kb::for_each_cache([&](auto tag, const char* name, double) {
        register_append<typename decltype(tag)::type>(name, context, threads);
      });

  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
