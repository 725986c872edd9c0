// SPDX-License-Identifier: Apache-2.0
// Eviction cost and its effect on decode (issue 5, item 7), one layer of the benchmark model
// (32 query heads, 8 KV heads, head_dim 128), budget 20 % of the context:
//   select/<method>/<context>  end_prefill() alone: scoring, budget allocation, selection and
//                              compaction / re-encoding of the kept slots, per layer. Set-up
//                              (untimed, repeated per iteration): append the context in chunks of
//                              512, then observe the last 32 prompt queries (what window scorers
//                              read; accumulating scorers get the window's column sums — a full
//                              prefill attend over 16K rows would dominate the run).
//   decode/<method>/<context>  one cold decode attend after end_prefill, as decode_bench.cpp;
//                              counter time_vs_dense_kept = this time / the time of a dense fp16
//                              cache holding the same number of tokens (measured in this run).
//                              Eviction must not make decode slower than that (goal ≤ 1).
// Methods come from for_each_evict_method below — add a method with one line.
//
//   evict_bench --benchmark_min_time=0.01     # CI smoke run

#include <algorithm>
#include <cstddef>
#include <exception>
#include <memory>
#include <string>
#include <vector>

#include "baselines.hpp"
#include "kv_setup.hpp"

namespace kb = kvcompress_bench;
namespace kvc = kvcompress;

namespace {

constexpr double kBudget = 0.2;
constexpr std::size_t kWindow = 32;
constexpr int kContextsEvict[] = {4096, 16384};

/// Every eviction method benchmarked: f(CacheTag<Cache>{}, name, config for a context).
template <class F>
void for_each_evict_method(F&& f) {
  using H2O = kvc::KVCache<kvc::Policy<kvc::evict::H2O>>;
  f(kb::CacheTag<H2O>{}, "h2o", [](std::size_t n) {
    H2O::Config c;
    c.evict.recent_budget = static_cast<std::size_t>(kBudget * static_cast<double>(n)) / 2;
    c.evict.heavy_budget = static_cast<std::size_t>(kBudget * static_cast<double>(n)) - c.evict.recent_budget;
    return c;
  });
  using InfMLLM = kvc::KVCache<kvc::Policy<kvc::evict::InfMLLM>>;
  f(kb::CacheTag<InfMLLM>{}, "inf_mllm", [](std::size_t n) {
    InfMLLM::Config c;
    c.evict.cache_size = static_cast<std::size_t>(kBudget * static_cast<double>(n));
    c.evict.recent = c.evict.cache_size / 4;
    return c;
  });
  using LookM = kvc::KVCache<kvc::LookMPolicy<>>;
  f(kb::CacheTag<LookM>{}, "look_m", [](std::size_t) {
    LookM::Config c;
    c.evict.recent_ratio = c.evict.important_ratio = kBudget / 2;
    return c;
  });
  using LookMKivi = kvc::KVCache<kvc::LookMPolicy<kvc::quant::Kivi2>>;
  f(kb::CacheTag<LookMKivi>{}, "look_m+kivi2", [](std::size_t) {
    LookMKivi::Config c;
    c.evict.recent_ratio = c.evict.important_ratio = kBudget / 2;
    return c;
  });
  using Meda = kvc::KVCache<kvc::MedaPolicy<>>;
  f(kb::CacheTag<Meda>{}, "meda", [](std::size_t) {
    Meda::Config c;
    c.evict.rho = kBudget;
    c.evict.query_window = kWindow;
    return c;
  });
  using Elastic = kvc::KVCache<kvc::ElasticCachePolicy<>>;
  f(kb::CacheTag<Elastic>{}, "elastic_cache", [](std::size_t) {
    Elastic::Config c;
    c.evict.ratio = kBudget;
    return c;
  });
  using SnapKV = kvc::KVCache<kvc::Policy<kvc::evict::SnapKV>>;
  f(kb::CacheTag<SnapKV>{}, "snapkv", [](std::size_t) {
    SnapKV::Config c;
    c.evict.budget = {kBudget, 0};
    c.evict.window = kWindow;
    return c;
  });
  using SnapKVKivi = kvc::KVCache<kvc::Policy<kvc::evict::SnapKV, kvc::merge::None, kvc::quant::Kivi2>>;
  f(kb::CacheTag<SnapKVKivi>{}, "snapkv+kivi2", [](std::size_t) {
    SnapKVKivi::Config c;
    c.evict.budget = {kBudget, 0};
    c.evict.window = kWindow;
    return c;
  });
  using PyramidKV = kvc::KVCache<kvc::Policy<kvc::evict::PyramidKV>>;
  f(kb::CacheTag<PyramidKV>{}, "pyramidkv", [](std::size_t) {
    PyramidKV::Config c;
    c.evict.budget = {kBudget, 0};
    c.evict.window = kWindow;
    return c;
  });
  using TOVA = kvc::KVCache<kvc::Policy<kvc::evict::TOVA>>;
  f(kb::CacheTag<TOVA>{}, "tova", [](std::size_t n) {
    TOVA::Config c;
    c.evict.cache_size = static_cast<std::size_t>(kBudget * static_cast<double>(n));
    return c;
  });
  using KNorm = kvc::KVCache<kvc::Policy<kvc::evict::KNorm>>;
  f(kb::CacheTag<KNorm>{}, "knorm", [](std::size_t) {
    KNorm::Config c;
    c.evict.budget = {kBudget, 0};
    return c;
  });
  using ExpAttn = kvc::KVCache<kvc::Policy<kvc::evict::ExpectedAttention>>;
  f(kb::CacheTag<ExpAttn>{}, "expected_attention", [](std::size_t) {
    ExpAttn::Config c;
    c.evict.budget = {kBudget, 0};
    c.evict.query_window = kWindow;
    c.evict.rope.head_dim = kb::kHeadDim;
    return c;
  });
  using PrefixKV = kvc::KVCache<kvc::Policy<kvc::evict::PrefixKV>>;
  f(kb::CacheTag<PrefixKV>{}, "prefix_kv", [](std::size_t) {
    PrefixKV::Config c;
    c.evict.ratio = kBudget;
    return c;
  });
  using PrefixKVKivi = kvc::KVCache<kvc::Policy<kvc::evict::PrefixKV, kvc::merge::None, kvc::quant::Kivi2>>;
  f(kb::CacheTag<PrefixKVKivi>{}, "prefix_kv+kivi2", [](std::size_t) {
    PrefixKVKivi::Config c;
    c.evict.ratio = kBudget;
    return c;
  });
  using VLCache = kvc::KVCache<kvc::Policy<kvc::evict::VLCache>>;
  f(kb::CacheTag<VLCache>{}, "vl_cache", [](std::size_t) {
    VLCache::Config c;
    c.evict.alpha = kBudget;
    c.evict.max_post_vision_queries = kWindow;
    return c;
  });
  using CSP = kvc::KVCache<kvc::Policy<kvc::evict::CrossSelfPruning>>;
  f(kb::CacheTag<CSP>{}, "cross_self_pruning", [](std::size_t) {
    CSP::Config c;
    c.evict.hh_ratio = c.evict.recent_ratio = kBudget / 2;
    c.evict.max_window = kWindow;
    return c;
  });
  using AirCache = kvc::KVCache<kvc::Policy<kvc::evict::AirCache>>;
  f(kb::CacheTag<AirCache>{}, "air_cache", [](std::size_t) {
    AirCache::Config c;
    c.evict.ratio = kBudget;
    c.evict.max_window = kWindow;
    return c;
  });
  using ZipVL = kvc::KVCache<kvc::Policy<kvc::evict::ZipVL>>;
  f(kb::CacheTag<ZipVL>{}, "zipvl", [](std::size_t) {
    ZipVL::Config c;
    c.evict.probe_recent = c.evict.probe_random = kWindow / 2;
    c.evict.max_window = kWindow;
    return c;
  });
  using ZipVLMixed = kvc::KVCache<kvc::ZipVLPolicy<>>;  // the paper's form: U at 2 bits, T at 4
  f(kb::CacheTag<ZipVLMixed>{}, "zipvl+mixed4/2", [](std::size_t) {
    ZipVLMixed::Config c;
    c.evict.probe_recent = c.evict.probe_random = kWindow / 2;
    c.evict.max_window = kWindow;
    return c;
  });
  using H2OKivi = kvc::KVCache<kvc::Policy<kvc::evict::H2O, kvc::merge::None, kvc::quant::Kivi<2, 2, 32, 128>>>;
  f(kb::CacheTag<H2OKivi>{}, "h2o+kivi2", [](std::size_t n) {
    H2OKivi::Config c;
    c.evict.recent_budget = static_cast<std::size_t>(kBudget * static_cast<double>(n)) / 2;
    c.evict.heavy_budget = static_cast<std::size_t>(kBudget * static_cast<double>(n)) - c.evict.recent_budget;
    return c;
  });
}

std::vector<float> queries(std::size_t rows) {
  std::vector<float> q(rows * kb::kQHeads * kb::kHeadDim);
  for (std::size_t i = 0; i < q.size(); ++i) q[i] = static_cast<float>((i * 2654435761u) % 1000) / 500.0f - 1.0f;
  return q;
}

/// A cache of `Cache` holding a prompt of n tokens with the last kWindow queries observed.
template <class Cache, class MakeConfig>
std::unique_ptr<Cache> prompt(const MakeConfig& make, std::size_t n) {
  auto c = std::make_unique<Cache>(kb::bench_shape(n), make(n));
  kb::inputs().append_to(*c, n);
  const std::vector<float> q = queries(kWindow);
  c->observe(0, q.data(), kWindow);
  return c;
}

template <class Cache, class MakeConfig>
void bm_select(benchmark::State& state, MakeConfig make, std::size_t n) {
  try {
    std::size_t kept = 0;
    for (auto _ : state) {
      auto c = prompt<Cache>(make, n);  // untimed set-up
      const auto t0 = kb::Clock::now();
      c->end_prefill();
      state.SetIterationTime(kb::seconds_since(t0));
      kept = c->size(0, 0);
    }
    state.counters["kept_tokens"] = static_cast<double>(kept);
    state.counters["tokens_per_second"] =
        benchmark::Counter(static_cast<double>(n), benchmark::Counter::kIsIterationInvariantRate);
  } catch (const std::exception& e) {
    state.SkipWithError(e.what());
  }
}

/// Median cold decode time of a dense fp16 cache with `tokens` tokens.
double dense_time(std::size_t tokens, int iterations) {
  kb::DenseF16 c(kb::bench_shape(tokens));
  kb::inputs().append_to(c, tokens);
  const std::vector<float> q = queries(1);
  std::vector<float> out(q.size());
  std::vector<double> t;
  for (int i = 0; i < iterations; ++i) {
    kb::flusher().flush();
    const auto t0 = kb::Clock::now();
    c.attend(0, q.data(), 1, out.data());
    benchmark::ClobberMemory();
    t.push_back(kb::seconds_since(t0));
  }
  return kb::median(t);
}

template <class Cache, class MakeConfig>
void bm_decode(benchmark::State& state, MakeConfig make, std::size_t n) {
  try {
    auto c = prompt<Cache>(make, n);
    c->end_prefill();
    const std::vector<float> q = queries(1);
    std::vector<float> out(q.size());
    c->attend(0, q.data(), 1, out.data());  // warm-up
    const std::vector<double> times = kb::run_cold(state, [&] { c->attend(0, q.data(), 1, out.data()); });
    const double med = kb::median(times);
    const double ref = dense_time(c->size(0, 0), static_cast<int>(times.size()));
    state.counters["kept_tokens"] = static_cast<double>(c->size(0, 0));
    state.counters["median_us"] = med * 1e6;
    state.counters["time_vs_dense_kept"] = ref > 0 ? med / ref : 0.0;
    state.SetBytesProcessed(static_cast<std::int64_t>(static_cast<double>(c->memory_bytes()) *
                                                      static_cast<double>(state.iterations())));
  } catch (const std::exception& e) {
    state.SkipWithError(e.what());
  }
}

}  // namespace

int main(int argc, char** argv) {
  const double budget_s = kb::bench_min_time(argc, argv, 0.5);
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  const int iterations = budget_s < 0.1 ? 3 : 10;
  for (int context : kContextsEvict)
    for_each_evict_method([&](auto tag, const char* name, auto make) {
      using Cache = typename decltype(tag)::type;
      const std::size_t n = static_cast<std::size_t>(context);
      const std::string suffix = std::string(name) + "/" + std::to_string(context);
      benchmark::RegisterBenchmark(("select/" + suffix).c_str(),
                                   [make, n](benchmark::State& st) { bm_select<Cache>(st, make, n); })
          ->UseManualTime()
          ->Iterations(iterations)
          ->Unit(benchmark::kMicrosecond);
      benchmark::RegisterBenchmark(("decode/" + suffix).c_str(),
                                   [make, n](benchmark::State& st) { bm_decode<Cache>(st, make, n); })
          ->UseManualTime()
          ->Iterations(iterations)
          ->Unit(benchmark::kMicrosecond);
    });
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
